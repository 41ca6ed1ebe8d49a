//! Benchmark (not a test): false failovers under stress, and what answering costs each
//! speaker. The three-node namespace lab runs for a while with both cores saturated (one
//! busy thread per core) while the client floods ARP requests for the owner's address as fast
//! as one raw socket sends them. Nothing fails, so any "peer down" a speaker logs, and any
//! change of the address's answering node, is a false failover.
//!
//!   cargo bench -p ferrolb-speaker --bench failover_stress [-- SECONDS]   (default 60)
//!   FERROLB_PROBE_PERIOD_MS, FERROLB_PROBE_TIMEOUT_MS, FERROLB_SUSPECT_TIMEOUT_MS
//!                                  the speakers' failure-detection timing
//!
//! The flood alternates requests for the owner's LoadBalancer address (the speaker answers)
//! and for the owner node's own address (the Linux kernel answers), so both answerers face the
//! same load in the same run.
//!
//! Reported: requests sent per second for each address, the replies per second the client
//! received from each (and the owner speaker's own count), each speaker's CPU (user + system,
//! from /proc) over the run, and the false failovers. Every 2 s the client also asks with
//! arping who answers; a check that gets no reply (its request lost among the flood's) is
//! counted apart from one answered by another node.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

mod process_stats;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferrolb_speaker::packet::{self, MacAddr};
use process_stats::cpu_time;

const IP: &str = "192.168.117.100";

fn main() {
    // The lab's thread enters the "api" namespace: not the main thread, whose namespace
    // stands for the whole process.
    std::thread::spawn(measure).join().unwrap();
}

fn measure() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    let lab = Lab::start();
    let owner = lab.answering_node(IP);
    let logged_before: Vec<usize> = NODES.iter().map(|n| lab.speaker_log(n).len()).collect();
    let responses_before =
        speaker_metric_total(&lab, owner, "ferrolb_speaker_responses_sent_total");
    let cpu_before: Vec<Duration> = NODES
        .iter()
        .map(|n| cpu_time(lab.speaker(n).child.id()))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let owner_index = NODES.iter().position(|n| *n == owner).unwrap();
    let kernel_ip: Ipv4Addr = format!("192.168.117.{}", 11 + owner_index).parse().unwrap();
    let vip: Ipv4Addr = IP.parse().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, client) = (stop.clone(), sent.clone(), lab.client().name.clone());
        std::thread::spawn(move || {
            enter(&client);
            let (mut tx, _rx) = raw_eth0(Duration::from_millis(1));
            let mac = MacAddr(0x02, 0xbe, 0x0c, 0, 0, 0x02);
            let asker: Ipv4Addr = "192.168.117.2".parse().unwrap();
            let requests = [
                packet::arp_request(mac, asker, vip),
                packet::arp_request(mac, asker, kernel_ip),
            ];
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..500 {
                    for request in &requests {
                        if let Some(Ok(())) = tx.send_to(request, None) {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    // Replies reach the client as unicast to the flood's MAC; counted by who they answer for.
    let replies = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let counter = {
        let (stop, replies, client) = (stop.clone(), replies.clone(), lab.client().name.clone());
        std::thread::spawn(move || {
            enter(&client);
            let (_tx, mut rx) = raw_eth0(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                let Ok(frame) = rx.next() else { continue };
                // An ARP reply (ethertype 0x0806, operation 2): its sender address at 28..32.
                if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2] {
                    let from = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
                    if from == vip {
                        replies[0].fetch_add(1, Ordering::Relaxed);
                    } else if from == kernel_ip {
                        replies[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let mut owner_changes = 0;
    let mut unanswered = 0;
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(2));
        // Who answers, seen from the client (arping, between the flood's frames).
        let answers = lab.arp_answers(IP);
        samples += 1;
        if answers.is_empty() {
            // The owner's receive queue overflows under the flood: a lost request, not a
            // failover.
            unanswered += 1;
        } else if answers != [lab.mac_of(owner)] {
            owner_changes += 1;
            eprintln!(
                "at {:.1} s: answered by {answers:?}",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    counter.join().unwrap();
    for burner in burners {
        burner.join().unwrap();
    }
    let responses = speaker_metric_total(&lab, owner, "ferrolb_speaker_responses_sent_total")
        - responses_before;
    let mut false_downs = 0;
    for (i, node) in NODES.iter().enumerate() {
        for line in &lab.speaker_log(node)[logged_before[i]..] {
            if line.contains("peer down") || line.contains("owner elected") {
                false_downs += usize::from(line.contains("peer down"));
                eprintln!("[{node}] {line}");
            }
        }
    }
    let secs = elapsed.as_secs_f64();
    let per_address = sent.load(Ordering::Relaxed) as f64 / 2.0 / secs;
    println!(
        "{:.0} s, both cores busy, ARP flood at {owner}: {:.0} requests/s sent, half for {IP} (its speaker answers), half for {kernel_ip} (its kernel answers)",
        secs,
        2.0 * per_address,
    );
    println!(
        "speaker for {IP}: {:.0} replies/s received by the client ({:.0} /s sent by the speaker), {:.1} % of its requests",
        replies[0].load(Ordering::Relaxed) as f64 / secs,
        responses / secs,
        replies[0].load(Ordering::Relaxed) as f64 / secs * 100.0 / per_address,
    );
    println!(
        "kernel for {kernel_ip}: {:.0} replies/s received by the client, {:.1} % of its requests",
        replies[1].load(Ordering::Relaxed) as f64 / secs,
        replies[1].load(Ordering::Relaxed) as f64 / secs * 100.0 / per_address,
    );
    for (i, node) in NODES.iter().enumerate() {
        let cpu = cpu_time(lab.speaker(node).child.id()) - cpu_before[i];
        println!(
            "{node}{}: CPU {:.1} % of a core",
            if *node == owner { " (owner)" } else { "" },
            cpu.as_secs_f64() * 100.0 / secs
        );
    }
    println!(
        "false failovers: {false_downs} peers declared down, {owner_changes} of {samples} checks found another answerer ({unanswered} found none: the request was lost in the flood)"
    );
}
