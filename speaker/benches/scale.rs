//! Benchmark (not a test): the speakers at scale, on the namespace lab.
//!
//!   cargo bench -p ferrolb-speaker --bench scale [-- SERVICES CHANGES]   (default 10000 100)
//!   FERROLB_BENCH_NODES=3,6,12,24   the lab sizes of the gossip part
//!
//! Part 1, three speakers and SERVICES LoadBalancer Services (each with one address from
//! 2001:db8::1:0/112, the addresses the lab's segment may carry, and one EndpointSlice), the
//! controller's part done by hand. Then CHANGES changes, one at a time, half of each kind:
//! - an EndpointSlice change: a Service with `externalTrafficPolicy: Local` has its only
//!   endpoint moved to another node, which must take the address over;
//! - a Service change: a Service's status gets one more address, which its elected node must
//!   start answering.
//!
//! Measured for each, from the write to the API server until the right node's Neighbor
//! Advertisement reaches the client (which sends a solicitation every millisecond): p50, p99,
//! worst. Also the time until every ServiceL2Status is written, each speaker's CPU when
//! nothing changes (over 10 s once they are written), its CPU per change (its CPU over the
//! changes, less the idle rate over as long, divided by the changes) and peak RSS.
//!
//! Part 2, the lab with 3, 6, 12 and 24 speakers and one Service: the gossip traffic each node
//! sends and receives (UDP port 7947, counted by nftables in the node's namespace) over 20 s,
//! and the speakers' RSS.
//!
//! Draws docs/charts/change-to-answer-SERVICES.png.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

mod process_stats;

mod chart;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ferrolb_speaker::packet::{self, MacAddr};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use process_stats::{cpu_time, peak_rss_mib};
use serde_json::json;

const CLIENT_MAC: MacAddr = MacAddr(0x02, 0xbe, 0x0c, 0, 0, 0x03);

fn address(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i as u16)
}

/// An address given to a Service by a "Service change": outside the first part's range.
fn extra_address(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 2, i as u16)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // The lab's thread enters the "api" namespace: not the main thread.
    std::thread::spawn(measure).join().unwrap();
}

fn measure() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let changes = args.get(1).copied().unwrap_or(100);
    many_services(services, changes);
    let sizes: Vec<usize> = std::env::var("FERROLB_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![3, 6, 12, 24]);
    gossip(&sizes);
}

/// Watches the client's wire for Neighbor Advertisements while asking for one address every
/// millisecond; `wait_for` returns when `mac` answers for it.
struct Asker {
    target: Arc<std::sync::Mutex<Option<(Ipv6Addr, String)>>>,
    answered: std::sync::mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Asker {
    fn start(lab: &Lab) -> Asker {
        let target: Arc<std::sync::Mutex<Option<(Ipv6Addr, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (answered_tx, answered) = std::sync::mpsc::channel();
        let client = lab.client().name.clone();
        let mut threads = Vec::new();
        {
            let (target, stop, client) = (target.clone(), stop.clone(), client.clone());
            threads.push(std::thread::spawn(move || {
                enter(&client);
                let (mut tx, _rx) = raw_eth0(Duration::from_millis(1));
                let asker: Ipv6Addr = "2001:db8::2".parse().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let asked = target.lock().unwrap().as_ref().map(|(ip, _)| *ip);
                    if let Some(ip) = asked {
                        tx.send_to(&packet::neighbor_solicitation(CLIENT_MAC, asker, ip), None);
                    }
                    // The pace of the questions, not a synchronisation.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        {
            let (target, stop) = (target.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                enter(&client);
                let (_tx, mut rx) = raw_eth0(Duration::from_millis(50));
                while !stop.load(Ordering::Relaxed) {
                    let Ok(frame) = rx.next() else { continue };
                    let Some(claim) = packet::read(frame).ok().and_then(|h| h.claim) else {
                        continue;
                    };
                    let mut wanted = target.lock().unwrap();
                    let hit = wanted.as_ref().is_some_and(|(ip, mac)| {
                        claim.ip == std::net::IpAddr::V6(*ip)
                            && claim.mac.to_string().eq_ignore_ascii_case(mac)
                    });
                    if hit {
                        *wanted = None;
                        let _ = answered_tx.send(Instant::now());
                    }
                }
            }));
        }
        Asker {
            target,
            answered,
            stop,
            threads,
        }
    }

    /// Asks for `ip` until `mac` answers; the instant its answer arrived.
    fn wait_for(&self, ip: Ipv6Addr, mac: &str) -> Instant {
        while self.answered.try_recv().is_ok() {}
        *self.target.lock().unwrap() = Some((ip, mac.to_string()));
        self.answered
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{mac} did not answer for {ip} within 30 s"))
    }
}

impl Drop for Asker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn many_services(count: usize, changes: usize) {
    let lab = Lab::start();
    lab.create(vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "scale", "namespace": "metallb-system"},
            "spec": {"addresses": ["2001:db8::1:0/112", "2001:db8::2:0/112"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "scale", "namespace": "metallb-system"},
            "spec": {"ipAddressPools": ["scale"]}}),
    ]);
    let moved = changes / 2;
    let started = Instant::now();
    let admin = lab.admin.clone();
    lab.block_on(async {
        let services: Api<Service> = Api::namespaced(admin.clone(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
        stream::iter(0..count)
            .map(|i| {
                let (services, slices) = (services.clone(), slices.clone());
                async move {
                    // The first `moved` are Local, with their endpoint on node-1.
                    let local = i < moved;
                    let name = format!("svc-{i}");
                    let service: Service = serde_json::from_value(json!({
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                                 "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
                                 "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                                 // 10,000 node ports do not exist (30000-32767).
                                 "allocateLoadBalancerNodePorts": false,
                                 "ports": [{"port": 80, "protocol": "TCP"}]}}))
                    .unwrap();
                    services
                        .create(&PostParams::default(), &service)
                        .await
                        .unwrap();
                    let on: Vec<&str> = if local {
                        vec!["node-1"]
                    } else {
                        NODES.to_vec()
                    };
                    let slice: EndpointSlice = serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-1"), "namespace": "default",
                                     "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv6",
                        "endpoints": on.iter().map(|n| json!({
                            "addresses": ["2001:db8:ffff::1"], "nodeName": n,
                            "conditions": {"ready": true, "serving": true}})).collect::<Vec<_>>(),
                        "ports": [{"port": 80, "protocol": "TCP"}]}))
                    .unwrap();
                    slices.create(&PostParams::default(), &slice).await.unwrap();
                    let status = json!({"status": {"loadBalancer": {"ingress": [
                        {"ip": address(i).to_string(), "ipMode": "VIP"}]}}});
                    services
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    });
    let created = started.elapsed();
    // myapp's two addresses count too.
    let expected = (count + 2) as f64;
    poll("every address is announced by some speaker", 600, || {
        let total: f64 = NODES
            .iter()
            .map(|n| speaker_metric(&lab, n, "ferrolb_speaker_announced_addresses"))
            .sum();
        (total >= expected).then_some(())
    });
    let settled = started.elapsed();
    println!(
        "{count} Services: created with their slices and status in {:.1} s; every address announced after {:.1} s",
        created.as_secs_f64(),
        settled.as_secs_f64()
    );
    // The speakers then write a ServiceL2Status object per Service (and a nodeAssigned Event),
    // one write at a time each; every write is a change the others see.
    let statuses: Api<ferrolb_crds::ServiceL2Status> =
        Api::namespaced(lab.admin.clone(), "metallb-system");
    poll("every Service has its ServiceL2Status", 900, || {
        let listed = lab
            .block_on(statuses.list_metadata(&Default::default()))
            .ok()?;
        (listed.items.len() > count).then_some(())
    });
    let status_written = started.elapsed();
    println!(
        "every ServiceL2Status written after {:.1} s",
        status_written.as_secs_f64()
    );
    let pids: Vec<u32> = NODES.iter().map(|n| lab.speaker(n).child.id()).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_time(*p)).collect::<Vec<_>>();
    // What the speakers spend with nothing changing: the once-a-second pass, gossip, timers.
    let quiet = Duration::from_secs(10);
    let quiet_before = cpu(&pids);
    std::thread::sleep(quiet);
    let quiet_after = cpu(&pids);
    if let Some(hold) = std::env::var("FERROLB_BENCH_HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // For profiling the speakers by hand (perf record -p PID).
        println!("holding {hold} s; speaker pids {pids:?}");
        std::thread::sleep(Duration::from_secs(hold));
    }
    let asker = Asker::start(&lab);
    // Warm-up: the client gets an answer for an address before the clock runs.
    asker.wait_for(
        address(moved),
        &lab.mac_of(owner_among(&NODES, &address(moved).to_string())),
    );

    let mut latencies: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let services: Api<Service> = Api::namespaced(lab.admin.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(lab.admin.clone(), "default");
    let changes_started = Instant::now();
    let cpu_before = cpu(&pids);
    for i in 0..changes {
        if i % 2 == 0 {
            // An EndpointSlice change: svc-k's endpoint moves from node-1 to node-2 or node-3.
            let k = i / 2;
            let to = NODES[1 + (k % 2)];
            let name = format!("svc-{k}");
            let patch = json!({"endpoints": [{"addresses": ["2001:db8:ffff::1"], "nodeName": to,
                "conditions": {"ready": true, "serving": true}}]});
            let written = Instant::now();
            lab.block_on(slices.patch(
                &format!("{name}-1"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ))
            .unwrap();
            let answered = asker.wait_for(address(k), &lab.mac_of(to));
            latencies
                .entry("EndpointSlice change")
                .or_default()
                .push(answered - written);
        } else {
            // A Service change: one more address on a Cluster Service.
            let k = moved + i;
            let name = format!("svc-{k}");
            let extra = extra_address(i);
            let status = json!({"status": {"loadBalancer": {"ingress": [
                {"ip": address(k).to_string(), "ipMode": "VIP"},
                {"ip": extra.to_string(), "ipMode": "VIP"}]}}});
            let owner = owner_among(&NODES, &extra.to_string());
            let written = Instant::now();
            lab.block_on(services.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            ))
            .unwrap();
            let answered = asker.wait_for(extra, &lab.mac_of(owner));
            latencies
                .entry("Service change")
                .or_default()
                .push(answered - written);
        }
    }
    let busy = changes_started.elapsed();
    let cpu_after = cpu(&pids);
    drop(asker);

    chart::cdf(
        &format!("change-to-answer-{count}"),
        &format!("Change written to the right node answering, {count} Services on 3 speakers"),
        &latencies
            .iter()
            .map(|(kind, samples)| {
                (
                    kind.to_string(),
                    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
                )
            })
            .collect::<Vec<_>>(),
    );
    println!("| change | samples | p50 | p99 | worst |");
    println!("| --- | --- | --- | --- | --- |");
    for (kind, mut samples) in latencies {
        samples.sort();
        println!(
            "| {kind} | {} | {} | {} | {} |",
            samples.len(),
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
            ms(*samples.last().unwrap())
        );
    }
    for (i, node) in NODES.iter().enumerate() {
        let during = cpu_after[i] - cpu_before[i];
        let idle_share = (quiet_after[i] - quiet_before[i]).as_secs_f64() / quiet.as_secs_f64();
        let idle = Duration::from_secs_f64(idle_share * busy.as_secs_f64());
        let per_change = during.saturating_sub(idle).as_secs_f64() * 1e3 / changes.max(1) as f64;
        println!(
            "{node}: idle {:.1} % of a core; {:.0} ms of CPU over the {changes} changes ({:.1} s), {:.0} ms of it beyond idle: {per_change:.1} ms per change; peak RSS {:.1} MiB",
            idle_share * 100.0,
            during.as_secs_f64() * 1e3,
            busy.as_secs_f64(),
            during.saturating_sub(idle).as_secs_f64() * 1e3,
            peak_rss_mib(pids[i])
        );
    }
}

const GOSSIP_COUNTERS: &str = "
    chain out {
        type filter hook output priority 0;
        udp dport 7947 counter
    }
    chain in {
        type filter hook input priority 0;
        udp dport 7947 counter
    }";

/// Gossip bytes (sent, received) counted in a node's namespace so far.
fn gossip_bytes(netns: &ferrolb_lab::netns::Netns) -> (u64, u64) {
    let listed = netns
        .command("nft")
        .args(["list", "table", "inet", "gossipcount"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    let bytes: Vec<u64> = text
        .split("bytes ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    (
        bytes.first().copied().unwrap_or(0),
        bytes.get(1).copied().unwrap_or(0),
    )
}

fn gossip(sizes: &[usize]) {
    println!(
        "| speakers | sent per node | received per node | datagrams sent per node | speaker peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &size in sizes {
        let lab = Lab::start_with(size);
        for node in &lab.nodes {
            nft_apply(
                lab.segment.host(node).unwrap(),
                "gossipcount",
                GOSSIP_COUNTERS,
            );
        }
        lab.answering_node("192.168.117.100");
        let before: Vec<(u64, u64)> = lab
            .nodes
            .iter()
            .map(|n| gossip_bytes(lab.segment.host(n).unwrap()))
            .collect();
        let packets_before = datagrams_sent(&lab);
        let window = Duration::from_secs(20);
        // The measuring window itself.
        std::thread::sleep(window);
        let after: Vec<(u64, u64)> = lab
            .nodes
            .iter()
            .map(|n| gossip_bytes(lab.segment.host(n).unwrap()))
            .collect();
        let packets = datagrams_sent(&lab) - packets_before;
        let n = size as f64;
        let secs = window.as_secs_f64();
        let sent: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
        let received: u64 = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).sum();
        let rss = lab
            .nodes
            .iter()
            .map(|node| peak_rss_mib(lab.speaker(node).child.id()))
            .fold(0.0, f64::max);
        println!(
            "| {size} | {:.1} KB/s | {:.1} KB/s | {:.0} /s | {rss:.1} MiB (largest) |",
            sent as f64 / n / secs / 1e3,
            received as f64 / n / secs / 1e3,
            packets as f64 / n / secs
        );
    }
}

/// UDP datagrams the nodes' namespaces sent (their own /proc/net/snmp).
fn datagrams_sent(lab: &Lab) -> u64 {
    lab.nodes
        .iter()
        .map(|node| {
            let netns = lab.segment.host(node).unwrap();
            let out = netns.command("cat").arg("/proc/net/snmp").output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
            let (Some(names), Some(values)) = (udp.first(), udp.get(1)) else {
                return 0;
            };
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == "OutDatagrams")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}
