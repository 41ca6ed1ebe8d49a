//! Benchmark (not a test): what one pass of the speaker's reconciler costs in CPU, as the
//! number of Services and nodes grows. A pass runs after every change the speaker sees
//! (debounced by 10 ms) and once a second. The watches name the Services a change touched
//! (`watch_changes`); `plan_cache` plans and elects again only those and corrects the owners,
//! this node's table and what it announces address by address. After a relist the watches
//! name nothing, and a pass walks every Service comparing pointers to find what changed.
//!
//!   cargo bench -p ferrolb-speaker --bench plan_cost
//!
//! Columns: a full pass (the first, or after pools, advertisements or nodes changed), a pass
//! after a watch named one changed Service, a pass with nothing changed, a pass that finds one
//! changed Service by walking them all (after a relist), and a pass without the cache
//! (`runtime::decide` over a fresh snapshot, as every pass was before the cache).
//!
//! Pure: no network, no API server. The objects are those of a cluster where each Service has
//! one address from 198.18.0.0/15 (the benchmark range), every tenth has
//! externalTrafficPolicy Local, and each has one EndpointSlice with endpoints on two nodes.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::ip_address_pool::IPAddressPool;
use ferrolb_crds::l2_advertisement::L2Advertisement;
use ferrolb_speaker::announce_policy::{NodeInfo, PoolInfo};
use ferrolb_speaker::l2_status::ServiceKey;
use ferrolb_speaker::plan_cache::{PlanCache, Work};
use ferrolb_speaker::runtime::{
    Snapshot, announced_services, decide, node_info, pool_info, service_info, slices_by_service,
};
use ferrolb_speaker::watch_changes::Touched;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use serde_json::json;

fn address(i: usize) -> Ipv4Addr {
    let n = u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32;
    Ipv4Addr::from(n)
}

struct Cluster {
    services: Vec<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    nodes: Vec<Arc<Node>>,
    pools: Vec<Arc<IPAddressPool>>,
    advertisements: Vec<Arc<L2Advertisement>>,
}

fn cluster(services: usize, nodes: usize) -> Cluster {
    let node_name = |i: usize| format!("node-{}", i % nodes);
    Cluster {
        services: (0..services)
            .map(|i| {
                let policy = if i % 10 == 0 { "Local" } else { "Cluster" };
                Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"name": format!("svc-{i}"), "namespace": "default", "uid": format!("uid-{i}")},
                        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                                 "ports": [{"port": 80, "protocol": "TCP"}]},
                        "status": {"loadBalancer": {"ingress": [{"ip": address(i).to_string()}]}},
                    }))
                    .unwrap(),
                )
            })
            .collect(),
        slices: (0..services)
            .map(|i| {
                Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"name": format!("svc-{i}-abc"), "namespace": "default",
                                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                        "addressType": "IPv4",
                        "endpoints": [
                            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": node_name(i)},
                            {"addresses": ["10.0.0.2"], "conditions": {"ready": true}, "nodeName": node_name(i + 1)},
                        ],
                    }))
                    .unwrap(),
                )
            })
            .collect(),
        nodes: (0..nodes)
            .map(|i| {
                Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"name": node_name(i), "labels": {"kubernetes.io/hostname": node_name(i)}},
                        "status": {"addresses": [{"type": "InternalIP", "address": format!("198.51.100.{}", i + 1)}]},
                    }))
                    .unwrap(),
                )
            })
            .collect(),
        pools: vec![Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "bench", "namespace": "metallb-system"},
                "spec": {"addresses": ["198.18.0.0/15"]},
            }))
            .unwrap(),
        )],
        advertisements: vec![Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "all", "namespace": "metallb-system"},
                "spec": {},
            }))
            .unwrap(),
        )],
    }
}

impl Cluster {
    /// The pools, advertisements and nodes as a pass reads them.
    fn inputs(&self) -> (Vec<PoolInfo>, Vec<L2Advertisement>, Vec<NodeInfo>) {
        (
            self.pools.iter().filter_map(|p| pool_info(p)).collect(),
            self.advertisements.iter().map(|a| (**a).clone()).collect(),
            self.nodes.iter().map(|n| node_info(n)).collect(),
        )
    }
}

/// Brings the cache up to date: with every object (`touched: None`, as after a relist), or
/// with the Services a watch named.
fn update(cache: &mut PlanCache, cluster: &Cluster, touched: Option<&BTreeSet<ServiceKey>>) {
    let (pools, advertisements, nodes) = cluster.inputs();
    match touched {
        None => cache.update(
            &cluster.services,
            &cluster.slices,
            pools,
            advertisements,
            nodes,
        ),
        Some(keys) => cache.update_services(
            keys.iter().map(|key| {
                // The bench's Service svc-N has the one slice at index N.
                let i: usize = key.1.trim_start_matches("svc-").parse().unwrap();
                let found = (cluster.services[i].clone(), vec![cluster.slices[i].clone()]);
                (key.clone(), Some(found))
            }),
            pools,
            advertisements,
            nodes,
        ),
    }
}

/// One pass as the speaker's reconciler makes it: the cache brought up to date, the owners
/// decided, the Services this node announces corrected. Returns its duration and the work
/// done.
fn pass(
    cache: &mut PlanCache,
    cluster: &Cluster,
    alive: &BTreeSet<String>,
    touched: Option<&BTreeSet<ServiceKey>>,
) -> (Duration, Work) {
    let started = Instant::now();
    update(cache, cluster, touched);
    let interfaces: BTreeSet<String> = ["eth0".to_string()].into();
    let changed = cache.decide(
        "node-0",
        alive,
        &BTreeSet::new(),
        &interfaces,
        |_| None,
        &Touched::default(),
        &BTreeMap::new(),
    );
    let table = cache.decision().table.clone();
    let announced = cache.announce(&table, &Touched::Some(changed.table));
    std::hint::black_box(announced);
    (started.elapsed(), cache.work())
}

/// A pass as it was before the cache: a fresh snapshot, every address planned and elected.
fn uncached_pass(cluster: &Cluster, alive: &BTreeSet<String>) -> Duration {
    let started = Instant::now();
    let slices = slices_by_service(cluster.slices.clone());
    let (pools, advertisements, nodes) = cluster.inputs();
    let snapshot = Snapshot {
        services: cluster
            .services
            .iter()
            .map(|s| {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                service_info(s, slices.get(&key).map(Vec::as_slice).unwrap_or_default())
            })
            .collect(),
        pools,
        advertisements,
        nodes,
    };
    let interfaces: BTreeSet<String> = ["eth0".to_string()].into();
    let decision = decide(
        &snapshot,
        "node-0",
        alive,
        &BTreeSet::new(),
        &interfaces,
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    std::hint::black_box(announced_services(&snapshot, &decision));
    started.elapsed()
}

/// One Service's object replaced, as a watch event does; returns its key.
fn touch(cluster: &mut Cluster, i: usize) -> BTreeSet<ServiceKey> {
    let i = i % cluster.services.len();
    let mut service = (*cluster.services[i]).clone();
    service.metadata.resource_version = Some(format!("{i}-touched"));
    cluster.services[i] = Arc::new(service);
    BTreeSet::from([("default".to_string(), format!("svc-{i}"))])
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    println!(
        "| Services | nodes | full pass (first, or pools/nodes changed) | pass after a watch named one changed Service | pass with nothing changed | one change found by walking every Service (after a relist) | without the cache | Services planned / addresses elected per change |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let nothing = BTreeSet::new();
    for nodes in [3, 24] {
        for services in [100, 1_000, 10_000] {
            let mut cluster = cluster(services, nodes);
            let alive: BTreeSet<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
            let runs = if services >= 10_000 { 21 } else { 101 };
            let (mut full, mut changed, mut idle, mut walked, mut uncached) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut work = Work::default();
            for run in 0..runs {
                let mut cache = PlanCache::default();
                full.push(pass(&mut cache, &cluster, &alive, None).0);
                // The first changes after a full pass also pay for the allocator sorting out
                // that pass's garbage (~0.5 ms at 10,000); a running speaker sees the steady
                // state, measured from the third change on.
                for change in 0..12 {
                    let touched = touch(&mut cluster, run * 7919 + change * 13);
                    let (took, did) = pass(&mut cache, &cluster, &alive, Some(&touched));
                    if change >= 2 {
                        changed.push(took);
                        work = did;
                    }
                }
                idle.push(pass(&mut cache, &cluster, &alive, Some(&nothing)).0);
                touch(&mut cluster, run * 7919 + 1);
                walked.push(pass(&mut cache, &cluster, &alive, None).0);
                uncached.push(uncached_pass(&cluster, &alive));
            }
            println!(
                "| {services} | {nodes} | {} | {} | {} | {} | {} | {} / {} |",
                ms(median(full)),
                ms(median(changed)),
                ms(median(idle)),
                ms(median(walked)),
                ms(median(uncached)),
                work.planned,
                work.elected
            );
        }
    }
}
