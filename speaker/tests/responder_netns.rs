//! The responder for real, in network namespaces: a "node" answering for addresses it was
//! given, and a "client" asking with the stock arping and ndisc6 on the same segment.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{arping, arping_n, enter, in_netns, ndisc6, raw_eth0};
use ferrolb_lab::netns::{Segment, unique_prefix};
use ferrolb_speaker::packet::{self, MacAddr};
use ferrolb_speaker::responder::{Responder, Table, eligible_interfaces};

fn table(addresses: &[&str]) -> Table {
    let set: BTreeSet<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
    HashMap::from([("eth0".to_string(), set)])
}

struct Lab {
    segment: Segment,
    node_mac: String,
}

fn lab() -> Lab {
    let mut segment = Segment::create(&unique_prefix("fr")).unwrap();
    segment
        .add_host("node", &["192.168.117.11/24", "2001:db8::11/64"])
        .unwrap();
    segment
        .add_host("client", &["192.168.117.2/24", "2001:db8::2/64"])
        .unwrap();
    let node_mac = segment.host("node").unwrap().mac("eth0").unwrap();
    Lab { segment, node_mac }
}

fn start_responder(lab: &Lab) -> Responder {
    in_netns(lab.segment.host("node").unwrap(), || {
        let interfaces = eligible_interfaces();
        assert_eq!(
            interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["eth0"],
            "lo is not eligible"
        );
        Responder::start(interfaces).unwrap()
    })
}

#[test]
fn answers_arp_and_ndp_only_for_what_it_announces() {
    let lab = lab();
    let client = lab.segment.host("client").unwrap();
    let responder = start_responder(&lab);
    responder.set_table(table(&["192.168.117.100", "2001:db8::100"]));

    let replies = arping_n(client, "192.168.117.100", 2);
    assert_eq!(
        replies,
        [lab.node_mac.clone(), lab.node_mac.clone()],
        "one reply per request"
    );
    let answer = ndisc6(client, "2001:db8::100");
    assert_eq!(answer, Some(lab.node_mac.clone()));
    let (arp_before, ndp_before) = (
        responder.counters.arp_requests.get(),
        responder.counters.ndp_solicitations.get(),
    );
    assert!(arp_before >= 2 && ndp_before >= 1);
    assert!(
        arping(client, "192.168.117.101").is_empty(),
        "not announced: no answer"
    );
    assert_eq!(ndisc6(client, "2001:db8::101"), None);
    // The kernel filter keeps questions about other addresses away from the responder.
    assert_eq!(responder.counters.arp_requests.get(), arp_before);
    assert_eq!(responder.counters.ndp_solicitations.get(), ndp_before);

    responder.set_table(Table::new());
    assert!(
        arping(client, "192.168.117.100").is_empty(),
        "withdrawn: no answer"
    );
    assert_eq!(ndisc6(client, "2001:db8::100"), None);
}

#[test]
fn takeovers_are_announced_and_bad_frames_counted() {
    let lab = lab();
    let client = lab.segment.host("client").unwrap();
    let responder = start_responder(&lab);
    let node_mac: MacAddr = lab.node_mac.parse().unwrap();

    // The client listens on a raw socket for what the node announces.
    let (seen_tx, seen) = mpsc::channel();
    let (bad_tx, bad_rx) = mpsc::channel::<Vec<u8>>();
    let client_name = client.name.clone();
    let listener = std::thread::spawn(move || {
        enter(&client_name);
        let (mut tx, mut rx) = raw_eth0(Duration::from_millis(50));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(frame) = bad_rx.try_recv() {
                tx.send_to(&frame, None);
            }
            if let Ok(frame) = rx.next()
                && let Some(seen) = packet::read_announcement(frame)
                && seen.2
                && seen_tx.send(seen).is_err()
            {
                return;
            }
        }
    });

    responder.set_table(table(&["192.168.117.100", "2001:db8::100"]));
    let mut announced = BTreeSet::new();
    while announced.len() < 2 {
        let (mac, ip, _) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(mac, node_mac);
        announced.insert(ip);
    }
    assert_eq!(
        announced,
        BTreeSet::from([
            "192.168.117.100".parse().unwrap(),
            "2001:db8::100".parse().unwrap()
        ])
    );

    // A solicitation with a broken checksum is dropped and counted, not answered.
    let mut bad = packet::neighbor_solicitation(
        MacAddr::new(2, 0, 0, 0, 0, 2),
        "2001:db8::2".parse().unwrap(),
        "2001:db8::100".parse().unwrap(),
    );
    bad[56] ^= 0xff;
    bad_tx.send(bad).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while responder.counters.dropped_count("invalid_solicitation") != 1 {
        assert!(Instant::now() < deadline, "the bad frame was not counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(seen);
    listener.join().unwrap();
}
