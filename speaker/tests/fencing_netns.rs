//! Self-fencing for real: a node cut off from both its peers and the API server stops
//! announcing, the others take over, and when its link comes back it rejoins without taking
//! the address back.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

const IP: &str = "192.168.117.100";

#[test]
fn a_node_cut_off_from_everything_stops_announcing_and_comes_back() {
    let lab = Lab::start();
    let owner = owner_among(&NODES, IP);
    lab.wait_for_answer(IP, Some(owner), "the elected node answers");
    assert_eq!(speaker_metric(&lab, owner, "ferrolb_speaker_fenced"), 0.0);

    let cut = lab.segment.host(owner).unwrap();
    cut.ip(&["link", "set", "eth0", "down"]).unwrap();
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    let successor = owner_among(&survivors, IP);
    lab.wait_for_answer(IP, Some(successor), "the others take over");
    poll("the cut-off node fences itself", 30, || {
        (speaker_metric(&lab, owner, "ferrolb_speaker_fenced") == 1.0
            && speaker_metric(&lab, owner, "ferrolb_speaker_announced_addresses") == 0.0)
            .then_some(())
    });
    // Losing one peer is not a reason to stop for those who still see the others.
    assert_eq!(
        speaker_metric(&lab, successor, "ferrolb_speaker_fenced"),
        0.0
    );

    cut.ip(&["link", "set", "eth0", "up"]).unwrap();
    poll(
        "the node unfences once it sees the others again",
        30,
        || (speaker_metric(&lab, owner, "ferrolb_speaker_fenced") == 0.0).then_some(()),
    );
    // Ownership does not revert: the node that took over keeps the address.
    lab.wait_for_answer(IP, Some(successor), "the successor still answers");
    // The cut-off node declared both peers down while alone; its return must not pass those
    // verdicts on, or the survivors drop each other (and their ServiceL2Status) for a moment.
    for (node, other) in [(survivors[0], survivors[1]), (survivors[1], survivors[0])] {
        let spurious: Vec<String> = lab
            .speaker_log(node)
            .into_iter()
            .filter(|l| l.contains("peer down") && l.contains(&format!("node={other} ")))
            .collect();
        assert!(spurious.is_empty(), "{node} saw {other} down: {spurious:?}");
    }
    assert!(
        lab.speaker_log(owner)
            .iter()
            .any(|l| l.contains("no live peer: starting the membership over")),
        "the cut-off node started its membership over"
    );
}
