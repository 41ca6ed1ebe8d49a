//! Interface-aware election, on the lab: a node that could not announce an address (it lacks
//! the interface the L2Advertisement names, or has no interface in the address's subnet while
//! others do) is never elected for it, whatever the hash says.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Mutex;

use common::*;
use serde_json::json;

static ONE_LAB: Mutex<()> = Mutex::new(());

/// The first address of `prefix`.10 to .99 that the hash gives to `node` among all nodes.
fn address_hashed_to(prefix: &str, node: &str) -> String {
    (10..100)
        .map(|i| format!("{prefix}.{i}"))
        .find(|ip| owner_among(&NODES, ip) == node)
        .unwrap()
}

/// The ServiceL2Status of `service`: (node, interfaces).
fn status_of(lab: &Lab, service: &str) -> Vec<(String, Vec<String>)> {
    let api: kube::Api<ferrolb_crds::ServiceL2Status> =
        kube::Api::namespaced(lab.admin.clone(), "metallb-system");
    lab.block_on(api.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.status)
        .filter(|s| s.service_name.as_deref() == Some(service))
        .map(|s| {
            (
                s.node.unwrap_or_default(),
                s.interfaces
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.name)
                    .collect(),
            )
        })
        .collect()
}

/// Gives `node` a second link of its own, eth1 (a veth pair inside its namespace).
fn add_eth1(lab: &Lab, node: &str) {
    let netns = lab.segment.host(node).unwrap();
    netns
        .ip(&[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth1-peer",
        ])
        .unwrap();
    for link in ["eth1", "eth1-peer"] {
        netns.ip(&["link", "set", link, "up"]).unwrap();
    }
}

/// Restarts `node`'s speaker with a metallb-excludel2 file listing `patterns` (a YAML list);
/// the file lives as long as the returned directory.
fn restart_excluding(lab: &mut Lab, node: &str, patterns: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let excludel2 = dir.path().join("excludel2.yaml");
    std::fs::write(
        &excludel2,
        format!("announcedInterfacesToExclude: {patterns}\n"),
    )
    .unwrap();
    lab.kill(node);
    lab.start_speaker_with(node, &["--exclude-l2-config", excludel2.to_str().unwrap()]);
    dir
}

/// Waits until `node`'s speaker logs a line holding every one of `needles`.
fn wait_for_speaker_line(lab: &Lab, node: &str, what: &str, needles: &[&str]) {
    poll(what, 30, || {
        lab.speaker_log(node)
            .iter()
            .any(|l| needles.iter().all(|n| l.contains(n)))
            .then_some(())
    });
}

fn assert_speaker_runs(lab: &mut Lab, node: &str) {
    let index = lab.nodes.iter().position(|n| *n == node).unwrap();
    let exited = lab.speakers[index]
        .as_mut()
        .unwrap()
        .child
        .try_wait()
        .unwrap();
    assert!(exited.is_none(), "the speaker exited: {exited:?}");
}

/// A pool of `addresses` and an L2Advertisement of it (with `more` in its spec), both named
/// `name`.
fn add_announced_pool(lab: &Lab, name: &str, addresses: &str, more: serde_json::Value) {
    let mut advertisement = json!({"ipAddressPools": [name]});
    if let (Some(spec), Some(more)) = (advertisement.as_object_mut(), more.as_object()) {
        spec.extend(more.clone());
    }
    lab.create(vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": [addresses]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": advertisement}),
    ]);
}

#[test]
fn a_node_without_the_advertised_interface_is_never_elected() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    // The hash would pick node-1; only node-3 has eth1.
    let ip = address_hashed_to("203.0.113", "node-1");
    add_eth1(&lab, "node-3");
    // The speaker opens its interfaces when it starts.
    lab.kill("node-3");
    lab.start_speaker("node-3");
    add_announced_pool(
        &lab,
        "wired",
        "203.0.113.0/24",
        json!({"interfaces": ["eth1"]}),
    );
    lab.add_service("wired-app", &[&ip]);
    poll("node-3 announces the address on eth1", 30, || {
        (status_of(&lab, "wired-app") == [("node-3".to_string(), vec!["eth1".to_string()])])
            .then_some(())
    });
    for node in ["node-1", "node-2"] {
        assert!(
            lab.speaker_log(node)
                .iter()
                .any(|l| l.contains(&format!("owner elected address={ip} owner=node-3"))),
            "{node} agrees that node-3 owns {ip}"
        );
    }
}

#[test]
fn a_node_outside_the_addresss_subnet_is_never_elected_when_others_are_in_it() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start();
    // The hash would pick node-3, which is not on 198.51.100.0/24.
    let ip = address_hashed_to("198.51.100", "node-3");
    for (node, address) in [
        ("node-1", "198.51.100.11/24"),
        ("node-2", "198.51.100.12/24"),
    ] {
        lab.segment
            .host(node)
            .unwrap()
            .ip(&["addr", "add", address, "dev", "eth0"])
            .unwrap();
    }
    add_announced_pool(&lab, "segment-b", "198.51.100.0/24", json!({}));
    lab.add_service("segment-b-app", &[&ip]);
    // The speakers publish their interfaces with each heartbeat renewal (every 5 s).
    let expected = owner_among(&["node-1", "node-2"], &ip);
    lab.wait_for_answer(&ip, Some(expected), "a node in the subnet answers");
    for _ in 0..3 {
        assert_eq!(lab.arp_answers(&ip), [lab.mac_of(expected)]);
    }
    poll("the status names the node in the subnet", 30, || {
        (status_of(&lab, "segment-b-app") == [(expected.to_string(), vec!["eth0".to_string()])])
            .then_some(())
    });
}

/// MetalLB's `metallb-excludel2` ConfigMap: node-1's speaker excludes eth0, its only link to
/// the segment, so an address the hash gives node-1 is answered by another node, and node-1
/// never answers on eth0.
#[test]
fn an_interface_excluded_by_metallb_excludel2_carries_no_announcement() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    let ip = address_hashed_to("192.168.117", "node-1");
    // A second link, so that node-1 keeps an interface to run on.
    add_eth1(&lab, "node-1");
    let _excludel2 = restart_excluding(&mut lab, "node-1", r#"["^docker.*", "^eth0$"]"#);
    wait_for_speaker_line(
        &lab,
        "node-1",
        "node-1 says it excludes eth0",
        &["interfaces excluded from announcements", "eth0"],
    );
    add_announced_pool(&lab, "excluded", &format!("{ip}/32"), json!({}));
    lab.add_service("excluded-app", &[&ip]);
    let expected = owner_among(&["node-2", "node-3"], &ip);
    lab.wait_for_answer(&ip, Some(expected), "a node that may use eth0 answers");
    for _ in 0..3 {
        assert_eq!(lab.arp_answers(&ip), [lab.mac_of(expected)]);
    }
    poll("the status names that node", 30, || {
        (status_of(&lab, "excluded-app") == [(expected.to_string(), vec!["eth0".to_string()])])
            .then_some(())
    });
}

/// A speaker started while every interface it may use is down (its node's link cut for a
/// moment) waits for one to come up instead of exiting into a crash loop, then announces on it.
#[test]
fn a_speaker_started_while_its_link_is_down_waits_for_it() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    // node-1 reaches the API server over eth0 but may only announce on its second link (a
    // veth pair, both ends in the node), which is down.
    add_eth1(&lab, "node-1");
    let link = |lab: &Lab, state: &str| {
        let netns = lab.segment.host("node-1").unwrap();
        for end in ["eth1", "eth1-peer"] {
            netns.ip(&["link", "set", end, state]).unwrap();
        }
    };
    link(&lab, "down");
    let _excludel2 = restart_excluding(&mut lab, "node-1", r#"["^eth0$"]"#);
    wait_for_speaker_line(
        &lab,
        "node-1",
        "node-1 waits for an interface",
        &["no interface that may carry ARP is up yet", "eth1"],
    );
    assert_speaker_runs(&mut lab, "node-1");

    link(&lab, "up");
    wait_for_speaker_line(
        &lab,
        "node-1",
        "node-1's speaker answers on the link once it is up",
        &["answering ARP/NDP", "interface=eth1 "],
    );
    wait_for_speaker_line(&lab, "node-1", "node-1's speaker runs", &["caches filled"]);
    assert_speaker_runs(&mut lab, "node-1");
}
