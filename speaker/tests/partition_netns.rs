//! Exactly one node answers for an address under any single partition: gossip cut both ways
//! and one way, the API server cut, a peer cut off. nftables rules inside a node's namespace
//! make the cut; nothing outside the lab's namespaces is touched.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use ferrolb_lab::netns::Netns;

const V4: &str = "192.168.117.100";
const V6: &str = "2001:db8::100";
const GOSSIP_PORT: u16 = 7947;

/// One lab at a time: failure detection runs on tight timers, and parallel labs on two cores
/// would test the machine's load rather than the speakers.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// Applies an nftables ruleset inside `netns` (a table of the lab's own).
fn cut(netns: &Netns, rules: &str) {
    nft_apply(netns, "ferrolb_cut", rules);
}

fn heal(netns: &Netns) {
    let status = netns
        .command("nft")
        .args(["delete", "table", "inet", "ferrolb_cut"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn gossip_rules(inbound: bool, outbound: bool) -> String {
    let mut rules = String::new();
    if inbound {
        rules.push_str(&format!(
            "chain input {{ type filter hook input priority 0; udp dport {GOSSIP_PORT} drop; udp sport {GOSSIP_PORT} drop; }}\n"
        ));
    }
    if outbound {
        rules.push_str(&format!(
            "chain output {{ type filter hook output priority 0; udp dport {GOSSIP_PORT} drop; udp sport {GOSSIP_PORT} drop; }}\n"
        ));
    }
    rules
}

/// The API server, as the nodes reach it.
const API_RULES: &str = "chain output { type filter hook output priority 0; ip daddr 192.168.117.250 meta l4proto tcp drop; }";

/// The distinct MACs (lower case) that answer ARP for `ip`: two requests, a second apart
/// (iputils' arping takes whole seconds).
fn arp_macs(lab: &Lab, ip: &str) -> BTreeSet<String> {
    let out = lab
        .client()
        .command("arping")
        .args(["-c", "2", "-w", "2", "-I", "eth0", ip])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .map(str::to_lowercase)
        .collect()
}

/// The distinct MACs that answer a Neighbor Solicitation for `ip` (every answer, not only
/// the first).
fn ndp_macs(lab: &Lab, ip: &str) -> BTreeSet<String> {
    let out = lab
        .client()
        .command("ndisc6")
        .args(["-m", "-r", "1", "-w", "300", ip, "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("Target link-layer address"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_lowercase)
        .collect()
}

/// Whether any round of the running test saw two MACs answer one address.
static SAW_TWO_ANSWERERS: AtomicBool = AtomicBool::new(false);

fn answers(lab: &Lab, ip: &str) -> BTreeSet<String> {
    let macs = if ip.contains(':') {
        ndp_macs(lab, ip)
    } else {
        arp_macs(lab, ip)
    };
    if macs.len() > 1 {
        SAW_TWO_ANSWERERS.store(true, Ordering::SeqCst);
    }
    macs
}

/// A transient duplicate answerer, if the test saw one, was heard on the wire: the node that
/// answered first hears the other's takeover announcement (or the other way round), and
/// counts it.
fn duplicates_were_counted(lab: &Lab) {
    let counted: f64 = NODES
        .iter()
        .map(|n| speaker_metric_total(lab, n, "ferrolb_speaker_address_conflicts_total"))
        .sum();
    if SAW_TWO_ANSWERERS.load(Ordering::SeqCst) {
        assert!(
            counted > 0.0,
            "two nodes answered at once, and no speaker counted a conflict"
        );
    }
    eprintln!(
        "two answerers seen: {}; conflicts counted: {}",
        SAW_TWO_ANSWERERS.load(Ordering::SeqCst),
        counted as u64
    );
}

/// Waits until exactly the given nodes answer (the v4 owner ARP, the v6 owner NDP), then
/// checks that it holds over further rounds.
fn only_answerers(lab: &Lab, v4_owner: &str, v6_owner: &str, what: &str) {
    let expected = |node: &str| BTreeSet::from([lab.mac_of(node).to_lowercase()]);
    let (v4, v6) = (expected(v4_owner), expected(v6_owner));
    poll(what, 30, || {
        (answers(lab, V4) == v4 && answers(lab, V6) == v6).then_some(())
    });
    for _ in 0..3 {
        assert_eq!(answers(lab, V4), v4, "{what}: ARP for {V4}");
        assert_eq!(answers(lab, V6), v6, "{what}: NDP for {V6}");
    }
}

/// Waits until each address has one answerer, whichever node it is, for three rounds in a
/// row; returns the answering nodes (v4, v6).
fn settled_single_answerers(lab: &Lab, what: &str) -> (String, String) {
    let node_of = |mac: &String| {
        NODES
            .iter()
            .find(|n| lab.mac_of(n).to_lowercase() == *mac)
            .map(|n| n.to_string())
    };
    let mut stable = 0;
    let mut last: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
    poll(what, 30, || {
        let now = (answers(lab, V4), answers(lab, V6));
        let single = now.0.len() == 1 && now.1.len() == 1;
        stable = if single && last.as_ref() == Some(&now) {
            stable + 1
        } else {
            usize::from(single)
        };
        last = Some(now);
        (stable >= 3).then_some(())
    });
    let (v4, v6) = last.unwrap();
    (
        node_of(v4.iter().next().unwrap()).unwrap(),
        node_of(v6.iter().next().unwrap()).unwrap(),
    )
}

fn survivors(without: &str) -> Vec<&'static str> {
    NODES.iter().copied().filter(|n| *n != without).collect()
}

/// A fresh lab (one at a time), once the elected nodes answer: the guard, the lab, and the
/// v4 and v6 owners.
fn lab_with_elected_owners() -> (
    std::sync::MutexGuard<'static, ()>,
    Lab,
    &'static str,
    &'static str,
) {
    let one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    SAW_TWO_ANSWERERS.store(false, Ordering::SeqCst);
    let lab = Lab::start();
    let (v4, v6) = (owner_among(&NODES, V4), owner_among(&NODES, V6));
    only_answerers(&lab, v4, v6, "the elected nodes answer");
    (one, lab, v4, v6)
}

/// Cuts the v4 owner's gossip as `rules` say; the others take over, the owner falls silent.
fn owner_gossip_cut(inbound: bool, outbound: bool) {
    let (_one, lab, owner, _) = lab_with_elected_owners();
    cut(
        lab.segment.host(owner).unwrap(),
        &gossip_rules(inbound, outbound),
    );
    let rest = survivors(owner);
    only_answerers(
        &lab,
        owner_among(&rest, V4),
        owner_among(&rest, V6),
        "after the gossip cut, only the majority side answers",
    );
    poll("the cut-off node knows it is the isolated one", 30, || {
        (speaker_metric(&lab, owner, "ferrolb_speaker_isolated") == 1.0
            && speaker_metric(&lab, owner, "ferrolb_speaker_announced_addresses") == 0.0)
            .then_some(())
    });
    if !inbound && outbound {
        stays_silent_while_only_hearing_the_others(&lab, owner);
    }
    heal(lab.segment.host(owner).unwrap());
    poll("the healed node is heard again", 30, || {
        (speaker_metric(&lab, owner, "ferrolb_speaker_isolated") == 0.0).then_some(())
    });
    settled_single_answerers(&lab, "after healing, one answerer each");
    duplicates_were_counted(&lab);
}

/// A node whose sends are dropped still receives the others' announcements to the members
/// they consider down. Those prove nothing about being heard: over several of its membership
/// restarts it must not count a majority and announce again.
fn stays_silent_while_only_hearing_the_others(lab: &Lab, owner: &str) {
    const RESTART: &str = "no live peer: starting the membership over";
    const ANNOUNCING: &str = "a majority of the speakers heard: announcing";
    let isolated_at = lab.speaker_log(owner).len();
    poll(
        "the cut-off node starts its membership over three times",
        30,
        || {
            let since = lab.speaker_log(owner).split_off(isolated_at);
            (since.iter().filter(|l| l.contains(RESTART)).count() >= 3).then_some(())
        },
    );
    let since = lab.speaker_log(owner).split_off(isolated_at);
    let announced: Vec<&String> = since.iter().filter(|l| l.contains(ANNOUNCING)).collect();
    assert!(
        announced.is_empty(),
        "the node that cannot be heard announced again: {announced:?}"
    );
}

#[test]
fn gossip_cut_both_ways_on_the_owner() {
    owner_gossip_cut(true, true);
}

#[test]
fn gossip_cut_inbound_only_on_the_owner() {
    owner_gossip_cut(true, false);
}

#[test]
fn gossip_cut_outbound_only_on_the_owner() {
    owner_gossip_cut(false, true);
}

#[test]
fn api_server_cut_on_the_owner_changes_nothing() {
    let (_one, lab, v4, v6) = lab_with_elected_owners();
    cut(lab.segment.host(v4).unwrap(), API_RULES);
    // Its peers still hear it: it stays the owner, and nobody else answers, also once its
    // own API probe has noticed (it probes every second, with a one-second timeout).
    poll("the owner's API probe notices", 30, || {
        let log = lab.speaker_log(v4);
        log.iter()
            .any(|l| l.contains("API server unreachable"))
            .then_some(())
    });
    only_answerers(&lab, v4, v6, "with the owner's API server cut");
    assert_eq!(speaker_metric(&lab, v4, "ferrolb_speaker_fenced"), 0.0);
    assert_eq!(speaker_metric(&lab, v4, "ferrolb_speaker_isolated"), 0.0);
    duplicates_were_counted(&lab);
}

#[test]
fn a_peer_cut_off_from_everything_changes_nothing_for_the_others() {
    let (_one, lab, v4, v6) = lab_with_elected_owners();
    // A node that owns neither address, if there is one; else the v6 owner's addresses move.
    let peer = NODES
        .iter()
        .copied()
        .find(|n| *n != v4 && *n != v6)
        .unwrap_or(v6);
    let rules = format!("{}{API_RULES}", gossip_rules(true, false)).replace(
        "chain output { type filter hook output priority 0; ip daddr",
        "chain output { type filter hook output priority 0; udp dport 7947 drop; udp sport 7947 drop; ip daddr",
    );
    cut(lab.segment.host(peer).unwrap(), &rules);
    let rest = survivors(peer);
    only_answerers(
        &lab,
        owner_among(&rest, V4),
        owner_among(&rest, V6),
        "with a peer cut off",
    );
    poll("the cut-off peer fences itself", 30, || {
        (speaker_metric(&lab, peer, "ferrolb_speaker_announced_addresses") == 0.0).then_some(())
    });
    duplicates_were_counted(&lab);
}

/// The nodes the nodeAssigned Events on myapp name, newest last.
fn assigned_nodes_by_time(lab: &Lab) -> Vec<String> {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(lab.admin.clone(), "default");
    let mut assigned: Vec<(_, String)> = lab
        .block_on(events.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("nodeAssigned"))
        .filter(|e| e.involved_object.name.as_deref() == Some("myapp"))
        .filter_map(|e| {
            // A repeated Event is folded into a series: its latest observation dates it.
            let time = [
                e.series
                    .as_ref()
                    .and_then(|s| s.last_observed_time.as_ref())
                    .map(|t| t.0),
                e.event_time.as_ref().map(|t| t.0),
                e.last_timestamp.as_ref().map(|t| t.0),
                e.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            .max()?;
            let node = NODES.iter().find(|n| {
                e.message
                    .as_deref()
                    .is_some_and(|m| m.contains(&format!("\"{n}\"")))
            })?;
            Some((time, node.to_string()))
        })
        .collect();
    assigned.sort();
    assigned.into_iter().map(|(_, node)| node).collect()
}

/// The owner's link is cut for three seconds and comes back: afterwards one node answers
/// each address, a ServiceL2Status names exactly the answering nodes, the newest
/// nodeAssigned Event names an answering node, and no Event of a node that no longer answers
/// is newer than the answering nodes' latest.
#[test]
fn after_a_partition_heals_status_and_events_name_the_answering_nodes() {
    let (_one, lab, owner, _) = lab_with_elected_owners();
    let cut_node = lab.segment.host(owner).unwrap();
    cut_node.ip(&["link", "set", "eth0", "down"]).unwrap();
    let rest = survivors(owner);
    only_answerers(
        &lab,
        owner_among(&rest, V4),
        owner_among(&rest, V6),
        "the others take over",
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    cut_node.ip(&["link", "set", "eth0", "up"]).unwrap();
    let (v4, v6) = settled_single_answerers(&lab, "after the link is back, one answerer each");
    let answering: BTreeSet<String> = [v4, v6].into_iter().collect();
    poll(
        "ServiceL2Status names exactly the answering nodes",
        30,
        || (status_nodes(&lab.runtime, &lab.admin) == answering).then_some(()),
    );
    poll(
        "the newest nodeAssigned Events name the answering nodes",
        30,
        || {
            let by_time = assigned_nodes_by_time(&lab);
            let newest_of = |node: &String| by_time.iter().rposition(|n| n == node);
            let last_answering = answering.iter().filter_map(newest_of).max()?;
            let stale = by_time
                .iter()
                .enumerate()
                .any(|(i, n)| !answering.contains(n) && i > last_answering);
            (!stale && by_time.last().is_some_and(|n| answering.contains(n))).then_some(())
        },
    );
    duplicates_were_counted(&lab);
}

/// A ServiceL2Status removed behind the owner's back (another node's clean-up while this one
/// was cut off, a lost write, a user) is written again: the status is reconciled, not written
/// once on a transition.
#[test]
fn a_status_object_removed_behind_the_owners_back_is_written_again() {
    let (_one, lab, v4, v6) = lab_with_elected_owners();
    let answering: BTreeSet<String> = [v4, v6].iter().map(|n| n.to_string()).collect();
    poll("ServiceL2Status names the answering nodes", 30, || {
        (status_nodes(&lab.runtime, &lab.admin) == answering).then_some(())
    });
    let api: kube::Api<ferrolb_crds::ServiceL2Status> =
        kube::Api::namespaced(lab.admin.clone(), "metallb-system");
    let name =
        ferrolb_speaker::l2_status::object_name(&("default".to_string(), "myapp".to_string()), v4);
    lab.block_on(api.delete(&name, &Default::default()))
        .unwrap();
    poll("the owner writes its ServiceL2Status again", 30, || {
        (status_nodes(&lab.runtime, &lab.admin) == answering).then_some(())
    });
}

/// Every speaker cut off from every other (a switch dropping the gossip port, say) until each
/// hears only itself: once the cut heals they find each other again, and one node answers
/// each address. (Found by the fault run: gossip gives up on a cluster it has lost entirely,
/// so the speakers introduce unheard peers again.)
#[test]
fn speakers_that_lost_every_peer_find_each_other_again() {
    let (_one, lab, _, _) = lab_with_elected_owners();
    for node in NODES {
        cut(lab.segment.host(node).unwrap(), &gossip_rules(true, true));
    }
    poll("every speaker hears only itself", 30, || {
        NODES
            .iter()
            .all(|n| speaker_metric(&lab, n, "ferrolb_speaker_peers_alive") == 1.0)
            .then_some(())
    });
    for node in NODES {
        heal(lab.segment.host(node).unwrap());
    }
    poll("every speaker hears the other two again", 30, || {
        NODES
            .iter()
            .all(|n| speaker_metric(&lab, n, "ferrolb_speaker_peers_alive") == 3.0)
            .then_some(())
    });
    settled_single_answerers(&lab, "after the cut heals, one answerer each");
    duplicates_were_counted(&lab);
}
