//! Three speakers in "node" network namespaces against the emulated API server: who
//! answers, and what happens when the owner dies.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ferrolb_crds::ConfigurationResult;
use ferrolb_speaker::packet::{self, MacAddr};
use kube::api::Api;

#[test]
fn the_elected_node_answers_and_a_killed_owner_is_replaced() {
    let mut lab = Lab::start();
    let v4_owner = owner_among(&NODES, "192.168.117.100");
    let replies = poll("the elected node answers ARP", 30, || {
        let replies = arping(lab.client(), "192.168.117.100");
        (!replies.is_empty()).then_some(replies)
    });
    assert_eq!(
        replies,
        [lab.mac_of(v4_owner)],
        "exactly one answer, from {v4_owner}"
    );
    let v6_owner = owner_among(&NODES, "2001:db8::100");
    let answer = poll("the elected node answers NDP", 30, || {
        ndisc6(lab.client(), "2001:db8::100")
    });
    assert_eq!(answer, lab.mac_of(v6_owner));
    assert!(
        arping(lab.client(), "192.168.117.101").is_empty(),
        "nobody answers for an unused address"
    );
    let metrics = lab
        .speaker(v4_owner)
        .metrics(lab.segment.host(v4_owner).unwrap());
    assert_eq!(
        metric(&metrics, "ferrolb_speaker_peers_alive"),
        3.0,
        "{metrics}"
    );
    let expected: BTreeSet<String> = [v4_owner, v6_owner].iter().map(|n| n.to_string()).collect();
    poll("ServiceL2Status names the announcing nodes", 30, || {
        (status_nodes(&lab.runtime, &lab.admin) == expected).then_some(())
    });
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(lab.admin.clone(), "default");
    let assigned = lab
        .runtime
        .block_on(events.list(&Default::default()))
        .unwrap()
        .items;
    assert!(
        assigned
            .iter()
            .any(|e| e.reason.as_deref() == Some("nodeAssigned")
                && e.message.as_deref().is_some_and(|m| m.contains(v4_owner))),
        "{assigned:?}"
    );
    assert!(
        metric(&metrics, "ferrolb_speaker_responses_sent_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "ferrolb_speaker_announced_addresses") >= 1.0,
        "{metrics}"
    );
    // MetalLB's names and labels, for MetalLB's alerts and dashboards.
    let announced = format!(
        "metallb_speaker_announced{{service=\"default/myapp\",protocol=\"layer2\",node=\"{v4_owner}\",ip=\"192.168.117.100\"}} 1\n"
    );
    assert!(metrics.contains(&announced), "{announced} not in {metrics}");
    for name in [
        "metallb_layer2_requests_received{ip=\"192.168.117.100\"}",
        "metallb_layer2_responses_sent{ip=\"192.168.117.100\"}",
        "metallb_layer2_gratuitous_sent{ip=\"192.168.117.100\"}",
        "metallb_k8s_client_config_loaded_bool",
    ] {
        assert!(metric(&metrics, name) >= 1.0, "{name}: {metrics}");
    }
    assert_eq!(
        metric(&metrics, "metallb_k8s_client_config_stale_bool"),
        0.0
    );
    assert!(
        metric(&metrics, "ferrolb_speaker_addresses_to_announce") >= 2.0,
        "{metrics}"
    );

    // Each speaker's verdict on the configuration, as its ConfigurationState: Valid, Invalid
    // naming an advertisement whose selector is broken, Valid again once it is gone.
    let states: Api<ferrolb_crds::ConfigurationState> =
        Api::namespaced(lab.admin.clone(), "metallb-system");
    let every_speaker_reports = |what: &str, result: ConfigurationResult, naming: &str| {
        poll(what, 30, || {
            NODES
                .iter()
                .all(|node| {
                    let state = lab
                        .block_on(states.get_opt(&format!("speaker-{node}")))
                        .unwrap();
                    state.is_some_and(|s| {
                        let labels = s.metadata.labels.unwrap_or_default();
                        let status = s.status.unwrap_or_default();
                        labels.get("metallb.io/node-name").map(String::as_str) == Some(*node)
                            && labels.get("metallb.io/component-type").map(String::as_str)
                                == Some("speaker")
                            && status.result == Some(result)
                            && status.error_summary.unwrap_or_default().contains(naming)
                    })
                })
                .then_some(())
        })
    };
    every_speaker_reports(
        "every speaker reports Valid",
        ConfigurationResult::Valid,
        "",
    );
    lab.create(vec![serde_json::json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "broken", "namespace": "metallb-system"},
        "spec": {"nodeSelectors": [{"matchExpressions": [{"key": "zone", "operator": "Near"}]}]}
    })]);
    every_speaker_reports(
        "every speaker reports the broken advertisement",
        ConfigurationResult::Invalid,
        "l2advertisement broken: spec.nodeSelectors[0]",
    );
    let advertisements: Api<ferrolb_crds::L2Advertisement> =
        Api::namespaced(lab.admin.clone(), "metallb-system");
    lab.block_on(advertisements.delete("broken", &Default::default()))
        .unwrap();
    every_speaker_reports(
        "every speaker reports Valid again",
        ConfigurationResult::Valid,
        "",
    );

    // The client listens for announcements, then the owner's speaker is killed.
    let (seen_tx, seen) = mpsc::channel();
    let listener_netns = lab.client().name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_listening = stop.clone();
    let listener = std::thread::spawn(move || {
        enter(&listener_netns);
        let (_, mut rx) = raw_eth0(Duration::from_millis(50));
        while !stop_listening.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(frame) = rx.next()
                && let Some((mac, ip, true)) = packet::read_announcement(frame)
            {
                let _ = seen_tx.send((mac, ip));
            }
        }
    });
    lab.kill(v4_owner);
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != v4_owner).collect();
    let new_owner = owner_among(&survivors, "192.168.117.100");
    let new_mac: MacAddr = lab.mac_of(new_owner).parse().unwrap();
    let announced = poll("the new owner announces 192.168.117.100", 30, || {
        seen.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|(_, ip)| *ip == "192.168.117.100".parse::<IpAddr>().unwrap())
    });
    assert_eq!(announced.0, new_mac, "gratuitous ARP from {new_owner}");
    assert_eq!(
        arping(lab.client(), "192.168.117.100"),
        [lab.mac_of(new_owner)]
    );
    let new_v6_owner = owner_among(&survivors, "2001:db8::100");
    let expected: BTreeSet<String> = [new_owner, new_v6_owner]
        .iter()
        .map(|n| n.to_string())
        .collect();
    poll("ServiceL2Status follows the takeover", 30, || {
        (status_nodes(&lab.runtime, &lab.admin) == expected).then_some(())
    });

    // The same for IPv6: the IPv6 owner among the survivors is killed; the last node sends an
    // unsolicited Neighbor Advertisement and answers ndisc6.
    lab.kill(new_v6_owner);
    let last: Vec<&'static str> = survivors
        .iter()
        .copied()
        .filter(|n| *n != new_v6_owner)
        .collect();
    let last_mac: MacAddr = lab.mac_of(last[0]).parse().unwrap();
    let announced = poll("the last node announces 2001:db8::100", 30, || {
        seen.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|(_, ip)| *ip == "2001:db8::100".parse::<IpAddr>().unwrap())
    });
    assert_eq!(announced.0, last_mac, "unsolicited NA from {}", last[0]);
    assert_eq!(
        ndisc6(lab.client(), "2001:db8::100"),
        Some(lab.mac_of(last[0]))
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
}

/// Ownership does not revert: a killed owner's address moves once, and stays with its new
/// owner when the old owner's speaker starts again.
#[test]
fn a_restarted_owner_does_not_take_its_address_back() {
    let mut lab = Lab::start();
    let ip = "192.168.117.100";
    let owner = owner_among(&NODES, ip);
    lab.wait_for_answer(ip, Some(owner), "the elected node answers");
    lab.kill(owner);
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    let successor = owner_among(&survivors, ip);
    lab.wait_for_answer(ip, Some(successor), "the successor takes over");
    lab.start_speaker(owner);
    poll("the restarted speaker has settled and decided", 30, || {
        lab.speaker_log(owner)
            .iter()
            .any(|l| l.contains("membership settled"))
            .then_some(())
    });
    for _ in 0..5 {
        let answers = lab.arp_answers(ip);
        assert!(
            !answers.is_empty() && answers.iter().all(|mac| *mac == lab.mac_of(successor)),
            "only {successor} answers: {answers:?}"
        );
    }
    assert_eq!(
        speaker_metric(&lab, owner, "ferrolb_speaker_announced_addresses"),
        0.0
    );
}
