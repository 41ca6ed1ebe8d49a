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
use ferrolb_ops::Probe;
use ferrolb_speaker::gratuitous::GRATUITOUS_SCHEDULE;
use ferrolb_speaker::health::Health;
use ferrolb_speaker::packet::{self, MacAddr};
use ferrolb_speaker::responder::{Responder, Table, eligible_interfaces};
use ferrolb_speaker::watch_changes::Touched;

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
    start_responder_with(lab, Duration::ZERO)
}

/// A responder on the node that also announces owned addresses every `gratuitous_period`.
fn start_responder_with(lab: &Lab, gratuitous_period: Duration) -> Responder {
    in_netns(lab.segment.host("node").unwrap(), move || {
        let interfaces = eligible_interfaces();
        assert_eq!(
            interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["eth0"],
            "lo is not eligible"
        );
        Responder::start(interfaces, gratuitous_period).unwrap()
    })
}

/// Listens in the client for `seconds` for gratuitous announcements: each announced address
/// and when it was seen. Returns once the client's socket is open.
fn listen_for_announcements(
    lab: &Lab,
    seconds: u64,
) -> (
    mpsc::Receiver<(IpAddr, Instant)>,
    std::thread::JoinHandle<()>,
) {
    let (seen_tx, seen) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let client_name = lab.segment.host("client").unwrap().name.clone();
    let listener = std::thread::spawn(move || {
        enter(&client_name);
        let (_tx, mut rx) = raw_eth0(Duration::from_millis(50));
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if let Ok(frame) = rx.next()
                && let Some((_, ip, true)) = packet::read_announcement(frame)
                && seen_tx.send((ip, Instant::now())).is_err()
            {
                return;
            }
        }
    });
    ready.recv().unwrap();
    (seen, listener)
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

    // MetalLB's per-address counters follow the owned addresses.
    let text = Health::new(&responder.counters).metrics_text();
    for (name, at_least) in [
        (
            "metallb_layer2_requests_received{ip=\"192.168.117.100\"} ",
            2,
        ),
        ("metallb_layer2_responses_sent{ip=\"192.168.117.100\"} ", 2),
        ("metallb_layer2_requests_received{ip=\"2001:db8::100\"} ", 1),
        ("metallb_layer2_gratuitous_sent{ip=\"2001:db8::100\"} ", 1),
    ] {
        let value: u64 = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        assert!(value >= at_least, "{name}{value}");
    }
    assert!(!text.contains("192.168.117.101"), "not owned, not counted");

    responder.set_table(Table::new());
    assert!(
        arping(client, "192.168.117.100").is_empty(),
        "withdrawn: no answer"
    );
    assert_eq!(ndisc6(client, "2001:db8::100"), None);
    let text = Health::new(&responder.counters).metrics_text();
    assert!(
        !text.contains("ip=\"192.168.117.100\""),
        "a withdrawn address's series go: {text}"
    );
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

/// `Responder::update` touches only the addresses it is told about: one gained, one lost and
/// one unchanged among hundreds, across the kernel filter's size limit in both directions.
#[test]
fn an_update_changes_the_addresses_it_names_and_keeps_the_rest() {
    let lab = lab();
    let client = lab.segment.host("client").unwrap();
    let responder = start_responder(&lab);
    let v4 = |last: u8| -> IpAddr { format!("192.168.117.{last}").parse().unwrap() };
    let v6 = |i: u16| -> IpAddr { format!("2001:db8::1:{i:x}").parse().unwrap() };
    let mut answered: BTreeSet<IpAddr> = (20..220).map(v4).collect();
    let eth0 = |set: &BTreeSet<IpAddr>| HashMap::from([("eth0".to_string(), set.clone())]);
    responder.set_table(eth0(&answered));

    answered.remove(&v4(20));
    answered.insert(v4(230));
    responder.update(
        &eth0(&answered),
        &Touched::Some([v4(20), v4(21), v4(230)].into()),
    );
    assert_eq!(arping(client, "192.168.117.230"), [lab.node_mac.as_str()]);
    assert!(
        arping(client, "192.168.117.20").is_empty(),
        "lost: no answer"
    );
    assert_eq!(arping(client, "192.168.117.21"), [lab.node_mac.as_str()]);
    assert_eq!(arping(client, "192.168.117.219"), [lab.node_mac.as_str()]);

    // 500 IPv6 addresses more: past what the kernel filter can list, so every question
    // reaches the responder, and it still answers only for its own.
    let added: BTreeSet<IpAddr> = (0..500).map(v6).collect();
    answered.extend(added.iter().copied());
    responder.update(&eth0(&answered), &Touched::Some(added.clone()));
    assert_eq!(
        ndisc6(client, "2001:db8::1:1f3"),
        Some(lab.node_mac.clone())
    );
    let asked = responder.counters.arp_requests.get();
    assert!(arping(client, "192.168.117.240").is_empty());
    assert!(
        responder.counters.arp_requests.get() > asked,
        "past the filter's limit, other questions reach the responder"
    );

    // Back under the limit: the filter lists the addresses again.
    answered.retain(|ip| ip.is_ipv4());
    responder.update(&eth0(&answered), &Touched::Some(added));
    assert_eq!(ndisc6(client, "2001:db8::1:1f3"), None);
    let asked = responder.counters.arp_requests.get();
    assert!(arping(client, "192.168.117.240").is_empty());
    assert_eq!(
        responder.counters.arp_requests.get(),
        asked,
        "listed again: other questions stay in the kernel"
    );
    assert_eq!(arping(client, "192.168.117.230"), [lab.node_mac.as_str()]);
}

/// A node taking over many addresses at once (its peer died) announces every one in its first
/// round, paced so that the burst does not overflow the receivers (2,000 frames here, twice
/// Linux's default backlog).
#[test]
fn a_takeover_of_many_addresses_announces_each_at_once() {
    let lab = lab();
    let responder = start_responder(&lab);
    let taken: BTreeSet<IpAddr> = (10..250)
        .map(|last| format!("192.168.117.{last}").parse().unwrap())
        .chain((0..1520).map(|i| format!("2001:db8::2:{i:x}").parse().unwrap()))
        .collect();

    let (seen, listener) = listen_for_announcements(&lab, 15);
    responder.set_table(HashMap::from([("eth0".to_string(), taken.clone())]));
    // Before the schedule's second round, which would make up for frames lost in the first.
    let deadline = Instant::now() + GRATUITOUS_SCHEDULE[1];
    let mut announced = BTreeSet::new();
    while announced.len() < taken.len() {
        let (ip, _) = seen
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {} announced ({} frames sent)",
                    announced.len(),
                    taken.len(),
                    responder.counters.gratuitous.get()
                )
            });
        announced.insert(ip);
    }
    assert_eq!(announced, taken);
    drop(seen);
    listener.join().unwrap();
}

/// `--gratuitous-arp-interval`: after the takeover's announcements (0, 0.5, 1 and 2 s), an
/// owned address is announced again every period.
#[test]
fn with_an_interval_owned_addresses_are_announced_again() {
    let lab = lab();
    let responder = start_responder_with(&lab, Duration::from_secs(1));
    let (seen, listener) = listen_for_announcements(&lab, 10);
    let ip: IpAddr = "192.168.117.100".parse().unwrap();
    let started = Instant::now();
    responder.set_table(table(&["192.168.117.100"]));
    let takeover_ends = started + GRATUITOUS_SCHEDULE[GRATUITOUS_SCHEDULE.len() - 1];
    let mut later = 0;
    while later < 2 {
        let (seen_ip, at) = seen
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("{later} periodic announcements"));
        if seen_ip == ip && at > takeover_ends + Duration::from_millis(500) {
            later += 1;
        }
    }
    drop(seen);
    listener.join().unwrap();
}
