//! Benchmark (not a test): failover time, from SIGKILL of the owner's speaker to the
//! client's neighbour entry for the address showing the new owner's MAC, over 20 runs in
//! the three-node namespace lab; and the speakers' memory.
//!
//!   cargo bench -p ferrolb-speaker --bench failover [-- RUNS]
//!
//! Each run: the client resolves 192.168.117.100 (a TCP connection attempt, so its kernel
//! holds a neighbour entry, as a real client talking to the Service would), the owner's speaker is killed,
//! and `ip neigh` is read every 2 ms until the entry names the new owner. The killed
//! speaker is then restarted and, once it owns the address again, the next run starts.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

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

fn measure() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let mut lab = Lab::start();
    let owner = owner_among(&NODES, IP);
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    let successor = owner_among(&survivors, IP);
    let mut times = Vec::new();
    let mut peak_kib = 0;
    for run in 0..runs {
        lab.wait_for_answer(IP, Some(owner), "the owner answers");
        // A neighbour entry on the client, learned from the owner, older than the kernel's
        // locktime (1 s), as for a client already talking to the Service.
        let _ = lab.client().run(
            "curl",
            &["-s", "--max-time", "0.3", &format!("http://{IP}/")],
        );
        assert_eq!(
            neighbour_mac(&lab).as_deref(),
            Some(lab.mac_of(owner).as_str())
        );
        std::thread::sleep(Duration::from_millis(1100));
        for node in NODES {
            peak_kib = peak_kib.max(kib(lab.speaker(node).child.id(), "VmHWM:").unwrap_or(0));
        }
        let killed = Instant::now();
        lab.kill(owner);
        let new_mac = lab.mac_of(successor);
        loop {
            if neighbour_mac(&lab).as_deref() == Some(new_mac.as_str()) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "run {run}: no failover after 30 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = killed.elapsed();
        eprintln!("run {run}: {:.0} ms", took.as_secs_f64() * 1000.0);
        times.push(took);
        lab.start_speaker(owner);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("failover runs: {}", times.len());
    println!(
        "SIGKILL to the client's neighbour entry showing the new MAC: median {:.0} ms, worst {:.0} ms, best {:.0} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        ms(times[0])
    );
    println!(
        "speaker peak RSS (VmHWM, highest of the three, sampled before each kill): {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
}
