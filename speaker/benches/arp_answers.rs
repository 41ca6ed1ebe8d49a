//! Benchmark (not a test): how fast the speaker answers ARP, against the Linux kernel
//! answering for its own address in the same namespace setup.
//!
//!   cargo bench -p ferrolb-speaker --bench arp_answers [-- REQUESTS]
//!
//! A "node" namespace holds 192.168.117.11 (the kernel answers) and runs the responder for
//! 192.168.117.100; a "client" namespace on the same bridge sends ARP requests from a raw
//! socket. Latency: one request at a time, time to its reply (REQUESTS samples, default
//! 2,000). Sustained rate: REQUESTS requests paced at 10,000/s and at 50,000/s, replies
//! counted (while pacing, and until 1 s after the last request). Draws
//! docs/charts/arp-answer-latency.png.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

mod chart;

use common::{enter, raw_eth0};
use ferrolb_lab::netns::{Segment, unique_prefix};
use ferrolb_speaker::packet::{self, MacAddr};
use ferrolb_speaker::responder::{Responder, eligible_interfaces};

struct Client {
    tx: Box<dyn pnet_datalink::DataLinkSender>,
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
    mac: MacAddr,
}

impl Client {
    fn open(netns: &str, mac: MacAddr) -> Self {
        enter(netns);
        let (tx, rx) = raw_eth0(Duration::from_millis(1));
        Client { tx, rx, mac }
    }

    fn ask(&mut self, target: Ipv4Addr) {
        let request = packet::arp_request(self.mac, "192.168.117.2".parse().unwrap(), target);
        self.tx.send_to(&request, None);
    }

    /// Waits for a reply for `target` until `deadline`.
    fn reply(&mut self, target: Ipv4Addr, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if let Ok(frame) = self.rx.next()
                && frame.get(6..12) != Some(&self.mac.octets()[..])
                && let Some((_, ip, false)) = packet::read_announcement(frame)
                && ip == IpAddr::V4(target)
            {
                return true;
            }
        }
        false
    }
}

fn latency(client: &mut Client, target: Ipv4Addr, samples: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = Instant::now();
        client.ask(target);
        assert!(
            client.reply(target, sent + Duration::from_secs(1)),
            "no reply for {target}"
        );
        times.push(sent.elapsed());
    }
    times.sort();
    times
}

/// Sends `requests` requests paced at `per_second`, and counts the replies.
/// Returns the replies and the rate the requests actually went out at.
fn rate(client: &mut Client, target: Ipv4Addr, requests: usize, per_second: u32) -> (usize, f64) {
    let spacing = Duration::from_secs(1) / per_second;
    let started = Instant::now();
    let mut replies = 0;
    for i in 0..requests {
        client.ask(target);
        // Replies are drained while pacing, so the client's socket never overflows.
        let next = started + spacing * (i as u32 + 1);
        while Instant::now() < next {
            if let Ok(frame) = client.rx.next()
                && frame.get(6..12) != Some(&client.mac.octets()[..])
                && let Some((_, ip, false)) = packet::read_announcement(frame)
                && ip == IpAddr::V4(target)
            {
                replies += 1;
            }
        }
    }
    let achieved = requests as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(frame) = client.rx.next()
            && frame.get(6..12) != Some(&client.mac.octets()[..])
            && let Some((_, ip, false)) = packet::read_announcement(frame)
            && ip == IpAddr::V4(target)
        {
            replies += 1;
        }
    }
    (replies, achieved)
}

fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut segment = Segment::create(&unique_prefix("fb")).unwrap();
    let node = segment
        .add_host("node", &["192.168.117.11/24"])
        .unwrap()
        .name
        .clone();
    let client = segment.add_host("client", &["192.168.117.2/24"]).unwrap();
    let client_ns = client.name.clone();
    let client_mac: MacAddr = client.mac("eth0").unwrap().parse().unwrap();
    let responder = std::thread::spawn(move || {
        enter(&node);
        let responder = Responder::start(eligible_interfaces(), Duration::ZERO).unwrap();
        let owned: BTreeSet<IpAddr> = BTreeSet::from(["192.168.117.100".parse().unwrap()]);
        responder.set_table(HashMap::from([("eth0".to_string(), owned)]));
        responder
    })
    .join()
    .unwrap();
    let report = std::thread::spawn(move || {
        let mut client = Client::open(&client_ns, client_mac);
        // Let the takeover announcements (0-2 s) pass so they are not counted as replies.
        std::thread::sleep(Duration::from_millis(2500));
        while client.rx.next().is_ok() {}
        let mut lines = Vec::new();
        let mut distributions = Vec::new();
        for (who, target) in [
            ("kernel (own address)", "192.168.117.11"),
            ("ferrolb-speaker", "192.168.117.100"),
        ] {
            let target: Ipv4Addr = target.parse().unwrap();
            latency(&mut client, target, 100); // warm-up
            let times = latency(&mut client, target, requests);
            distributions.push((
                who.to_string(),
                times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<f64>>(),
            ));
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let rates: Vec<String> = [10_000u32, 50_000]
                .iter()
                .map(|per_second| {
                    let (replies, achieved) = rate(&mut client, target, requests, *per_second);
                    format!("{replies}/{requests} answered when sent at {achieved:.0}/s (aimed at {per_second}/s)")
                })
                .collect();
            lines.push(format!(
                "{who}: latency median {:.0} µs, p99 {:.0} µs, worst {:.0} µs ({} requests); {}",
                us(times[times.len() / 2]),
                us(times[times.len() * 99 / 100]),
                us(times[times.len() - 1]),
                times.len(),
                rates.join(", "),
            ));
        }
        chart::cdf(
            "arp-answer-latency",
            "ARP request to reply, one at a time: the kernel and the speaker",
            &distributions,
        );
        lines
    })
    .join()
    .unwrap();
    for line in report {
        println!("{line}");
    }
    drop(responder);
    drop(segment);
}
