//! Benchmark (not a test): failover time, from the owner going away (its speaker SIGKILLed,
//! or its node's link cut) to the client's neighbour entry for the address showing the new
//! owner's MAC, over 20 runs each in the three-node namespace lab; and the speakers' memory.
//!
//!   cargo bench -p ferrolb-speaker --bench failover [-- RUNS]
//!   FERROLB_BENCH_FAULT=kill|cut   only one kind of fault
//!   FERROLB_PROBE_PERIOD_MS, FERROLB_PROBE_TIMEOUT_MS, FERROLB_SUSPECT_TIMEOUT_MS
//!                                  the speakers' failure-detection timing
//!   FERROLB_BENCH_CSV=FILE         every run's time, as CSV
//!
//! Draws docs/charts/failover-PERIOD-TIMEOUT-SUSPECT.png (the distribution of both faults).
//!
//! Each run: the client resolves 192.168.117.100 (a TCP connection attempt, so its kernel
//! holds a neighbour entry, as a real client talking to the Service would), the owner goes
//! away, and `ip neigh` is read every 2 ms until the entry names the new owner. The owner
//! then comes back (ownership is sticky: it stays with the new owner) and, once the three
//! are members again, the next run takes away whoever answers.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

mod chart;

use std::time::{Duration, Instant};

use common::*;

const IP: &str = "192.168.117.100";

fn neighbour_mac(lab: &Lab) -> Option<String> {
    let out = lab
        .client()
        .ip(&["neigh", "show", IP, "dev", "eth0"])
        .ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase)
}

fn kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    // The lab's thread enters the "api" namespace: not the main thread, whose namespace
    // stands for the whole process.
    std::thread::spawn(measure).join().unwrap();
}

/// How the owner goes away.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Its speaker gets SIGKILL (restarted afterwards).
    Kill,
    /// Its node's link goes down (up again afterwards).
    Cut,
}

fn measure() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let faults = match std::env::var("FERROLB_BENCH_FAULT").as_deref() {
        Ok("kill") => vec![Fault::Kill],
        Ok("cut") => vec![Fault::Cut],
        _ => vec![Fault::Kill, Fault::Cut],
    };
    let mut lab = Lab::start();
    let mut peak_kib = 0;
    let mut report = Vec::new();
    for fault in faults {
        let mut times = Vec::new();
        for run in 0..runs {
            // Ownership is sticky: whoever answers now is the owner to take away, once the
            // client's neighbour entry names it too (after a cut, the returning node may win
            // the address back by the lower-MAC rule, and the client follows its
            // announcements once the kernel's 1 s locktime allows).
            let owner = poll(
                "one node answers and the client's entry names it",
                30,
                || {
                    let owner = lab.answering_node(IP);
                    let _ = lab.client().run(
                        "curl",
                        &["-s", "--max-time", "0.3", &format!("http://{IP}/")],
                    );
                    (neighbour_mac(&lab).as_deref() == Some(lab.mac_of(owner).as_str()))
                        .then_some(owner)
                },
            );
            let survivors: Vec<&'static str> =
                NODES.iter().copied().filter(|n| *n != owner).collect();
            let successor = owner_among(&survivors, IP);
            // The entry older than the kernel's locktime (1 s), as for a client already
            // talking to the Service.
            std::thread::sleep(Duration::from_millis(1100));
            for node in NODES {
                peak_kib = peak_kib.max(kib(lab.speaker(node).child.id(), "VmHWM:").unwrap_or(0));
            }
            let started = Instant::now();
            match fault {
                Fault::Kill => lab.kill(owner),
                Fault::Cut => {
                    let netns = lab.segment.host(owner).unwrap();
                    netns.ip(&["link", "set", "eth0", "down"]).unwrap();
                }
            }
            let new_mac = lab.mac_of(successor);
            loop {
                if neighbour_mac(&lab).as_deref() == Some(new_mac.as_str()) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "run {run}: no failover after 30 s"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            let took = started.elapsed();
            eprintln!(
                "{} run {run}: {:.0} ms",
                if fault == Fault::Kill { "kill" } else { "cut" },
                took.as_secs_f64() * 1000.0
            );
            times.push(took);
            if took > Duration::from_secs(1) && std::env::var_os("FERROLB_BENCH_VERBOSE").is_some()
            {
                for node in NODES {
                    let log = lab.speaker_log(node);
                    for line in &log[log.len().saturating_sub(25)..] {
                        eprintln!("  [{node}] {line}");
                    }
                }
            }
            match fault {
                Fault::Kill => lab.start_speaker(owner),
                Fault::Cut => {
                    let netns = lab.segment.host(owner).unwrap();
                    netns.ip(&["link", "set", "eth0", "up"]).unwrap();
                }
            }
            // The owner is back among its peers before the next run takes one away.
            poll("the returning node is a member again", 30, || {
                let metrics = lab
                    .speaker(successor)
                    .metrics(lab.segment.host(successor).unwrap());
                (metric(&metrics, "ferrolb_speaker_peers_alive") == 3.0).then_some(())
            });
        }
        times.sort();
        report.push((fault, times));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (fault, times) in &report {
        println!(
            "{} to the client's neighbour entry showing the new MAC ({} runs): median {:.0} ms, worst {:.0} ms, best {:.0} ms",
            if *fault == Fault::Kill {
                "owner's speaker SIGKILL"
            } else {
                "owner's link cut"
            },
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
            ms(times[0])
        );
    }
    println!(
        "speaker peak RSS (VmHWM, highest of the three, sampled before each fault): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    let defaults = ferrolb_speaker::membership::Timing::default();
    let timing: Vec<String> = [
        ("FERROLB_PROBE_PERIOD_MS", defaults.probe_period),
        ("FERROLB_PROBE_TIMEOUT_MS", defaults.probe_rtt),
        ("FERROLB_SUSPECT_TIMEOUT_MS", defaults.suspect_to_down),
    ]
    .iter()
    .map(|(var, default)| std::env::var(var).unwrap_or_else(|_| default.as_millis().to_string()))
    .collect();
    chart::cdf(
        &format!("failover-{}", timing.join("-")),
        &format!(
            "Failover to the client's neighbour entry (probe {} ms, timeout {} ms, suspect {} ms)",
            timing[0], timing[1], timing[2]
        ),
        &report
            .iter()
            .map(|(fault, times)| {
                let name = if *fault == Fault::Kill {
                    "owner's speaker SIGKILL"
                } else {
                    "owner's link cut"
                };
                (name.to_string(), times.iter().map(|t| ms(*t)).collect())
            })
            .collect::<Vec<_>>(),
    );
    if let Ok(path) = std::env::var("FERROLB_BENCH_CSV") {
        let mut csv = String::from("fault,run,milliseconds\n");
        for (fault, times) in &report {
            for (i, t) in times.iter().enumerate() {
                let name = if *fault == Fault::Kill { "kill" } else { "cut" };
                csv.push_str(&format!("{name},{i},{:.1}\n", ms(*t)));
            }
        }
        std::fs::write(path, csv).unwrap();
    }
}
