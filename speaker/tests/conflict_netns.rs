//! Conflicts heard on the wire, with the speakers for real: a host on the segment claims an
//! address a speaker answers for (as a second speaker in a split brain would, or a host given
//! the address by hand). The speaker counts it, logs it, records a Warning Event on the
//! Service, and the lower MAC keeps the address.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use ferrolb_speaker::packet::{self, MacAddr};

const V4: &str = "192.168.117.100";
const V6: &str = "2001:db8::100";
/// The documentation unicast range of RFC 7042 (00-00-5E-00-53-00 to -FF): below any MAC the
/// lab's interfaces get, so a host using one wins every conflict.
const LOW_MAC: MacAddr = MacAddr(0x00, 0x00, 0x5e, 0x00, 0x53, 0x01);
/// Locally administered and above any MAC the lab's interfaces get.
const HIGH_MAC: MacAddr = MacAddr(0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe);

static ONE_LAB: Mutex<()> = Mutex::new(());

/// A host on the client's port that keeps claiming addresses (a gratuitous ARP and an
/// unsolicited Neighbor Advertisement every 300 ms) until dropped.
struct Claimant {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Claimant {
    fn start(lab: &Lab, mac: MacAddr, v4: Ipv4Addr, v6: Option<Ipv6Addr>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let name = lab.client().name.clone();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&name);
            let (mut tx, _rx) = raw_eth0(Duration::from_millis(50));
            while !stopping.load(Ordering::Relaxed) {
                let mut frames: Vec<Vec<u8>> = packet::gratuitous_arp(mac, v4).into();
                frames.extend(v6.map(|v6| packet::unsolicited_advertisement(mac, v6)));
                for frame in frames {
                    tx.send_to(&frame, None);
                }
                // The claimant's pace, not a synchronisation: the test polls for outcomes.
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Claimant {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Claimant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The AddressConflict Warning Events on myapp: their messages.
fn conflict_events(lab: &Lab) -> Vec<String> {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(lab.admin.clone(), "default");
    lab.block_on(events.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("AddressConflict"))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.involved_object.name.as_deref() == Some("myapp"))
        .filter_map(|e| e.message)
        .collect()
}

fn started_lab() -> (std::sync::MutexGuard<'static, ()>, Lab, &'static str) {
    let one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::start();
    let owner = owner_among(&NODES, V4);
    lab.wait_for_answer(V4, Some(owner), "the elected node answers");
    (one, lab, owner)
}

#[test]
fn a_lower_mac_claiming_an_owned_address_makes_the_owner_yield_until_it_stops() {
    let (_one, lab, v4_owner) = started_lab();
    let v6_owner = owner_among(&NODES, V6);
    poll("the v6 owner answers", 30, || {
        (ndisc6(lab.client(), V6) == Some(lab.mac_of(v6_owner).to_lowercase())).then_some(())
    });
    let claimant = Claimant::start(
        &lab,
        LOW_MAC,
        V4.parse().unwrap(),
        Some(V6.parse().unwrap()),
    );
    poll("both owners count the conflict", 30, || {
        (speaker_metric_total(&lab, v4_owner, "ferrolb_speaker_address_conflicts_total") > 0.0
            && speaker_metric_total(&lab, v6_owner, "ferrolb_speaker_address_conflicts_total")
                > 0.0)
            .then_some(())
    });
    // The lower MAC keeps the addresses: while it claims them, no speaker answers.
    poll("the owners fall silent", 30, || {
        (lab.arp_answers(V4).is_empty() && ndisc6(lab.client(), V6).is_none()).then_some(())
    });
    for _ in 0..3 {
        assert!(lab.arp_answers(V4).is_empty(), "the owner yielded {V4}");
        assert_eq!(ndisc6(lab.client(), V6), None, "the owner yielded {V6}");
    }
    let events = poll("a Warning Event on myapp names the conflict", 30, || {
        let events = conflict_events(&lab);
        (events.len() >= 2).then_some(events)
    });
    let low = LOW_MAC.to_string();
    assert!(
        events.iter().any(|e| e.contains(V4)
            && e.contains(&low)
            && e.contains(v4_owner)
            && e.contains("stops answering")),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.contains(V6) && e.contains(&low)),
        "{events:#?}"
    );
    assert!(
        lab.speaker_log(v4_owner)
            .iter()
            .any(|l| l.contains("another MAC claims an address")),
        "the owner logs the conflict"
    );
    // The claimant goes away: the elected owners answer again.
    drop(claimant);
    lab.wait_for_answer(V4, Some(v4_owner), "the v4 owner answers again");
    poll("the v6 owner answers again", 30, || {
        (ndisc6(lab.client(), V6) == Some(lab.mac_of(v6_owner).to_lowercase())).then_some(())
    });
}

#[test]
fn a_higher_mac_claiming_an_owned_address_loses_to_the_owner() {
    let (_one, lab, owner) = started_lab();
    let announced_before = speaker_metric(&lab, owner, "ferrolb_speaker_gratuitous_sent_total");
    let _claimant = Claimant::start(&lab, HIGH_MAC, V4.parse().unwrap(), None);
    poll("the owner counts the conflict", 30, || {
        (speaker_metric_total(&lab, owner, "ferrolb_speaker_address_conflicts_total") > 0.0)
            .then_some(())
    });
    poll("the owner announces the address again", 30, || {
        (speaker_metric(&lab, owner, "ferrolb_speaker_gratuitous_sent_total") > announced_before)
            .then_some(())
    });
    for _ in 0..3 {
        assert_eq!(
            lab.arp_answers(V4),
            [lab.mac_of(owner)],
            "the owner keeps answering"
        );
    }
    let events = poll("a Warning Event on myapp names the conflict", 30, || {
        let events = conflict_events(&lab);
        (!events.is_empty()).then_some(events)
    });
    assert!(
        events
            .iter()
            .any(|e| e.contains(&HIGH_MAC.to_string()) && e.contains("keeps the address")),
        "{events:#?}"
    );
    let others = NODES.iter().filter(|n| **n != owner);
    for node in others {
        assert_eq!(
            speaker_metric_total(&lab, node, "ferrolb_speaker_address_conflicts_total"),
            0.0,
            "{node} does not answer for {V4}: no conflict of its own"
        );
    }
}
