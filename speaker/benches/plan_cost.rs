//! Benchmark (not a test): what one pass of the speaker's reconciler costs in CPU, as the
//! number of Services and nodes grows. A pass runs after every change the speaker sees
//! (debounced by 10 ms) and once a second: it rebuilds the snapshot of Services, their
//! EndpointSlices, pools and nodes from the caches and re-plans every address (`decide`).
//! Its cost is the speaker's CPU per change.
//!
//!   cargo bench -p ferrolb-speaker --bench plan_cost
//!
//! Pure: no network, no API server. The objects are those of a cluster where each Service has
//! one address from 198.18.0.0/15 (the benchmark range), every tenth has
//! externalTrafficPolicy Local, and each has one EndpointSlice with endpoints on two nodes.

// A benchmark: a panic is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::ip_address_pool::IPAddressPool;
use ferrolb_crds::l2_advertisement::L2Advertisement;
use ferrolb_speaker::runtime::{
    Snapshot, decide, node_info, pool_info, service_info, slices_by_service,
};
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

/// One pass as the speaker's reconciler makes it: the snapshot from the caches, then the plan.
fn pass(cluster: &Cluster, alive: &BTreeSet<String>) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let slices = slices_by_service(cluster.slices.clone());
    let snapshot = Snapshot {
        services: cluster
            .services
            .iter()
            .map(|s| {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                service_info(s, slices.get(&key).map(Vec::as_slice).unwrap_or_default())
            })
            .collect(),
        pools: cluster.pools.iter().filter_map(|p| pool_info(p)).collect(),
        advertisements: cluster
            .advertisements
            .iter()
            .map(|a| (**a).clone())
            .collect(),
        nodes: cluster.nodes.iter().map(|n| node_info(n)).collect(),
    };
    let snapshot_took = started.elapsed();
    let started = Instant::now();
    let interfaces: BTreeSet<String> = ["eth0".to_string()].into();
    let current: BTreeMap<IpAddr, String> = BTreeMap::new();
    let decision = decide(
        &snapshot,
        "node-0",
        alive,
        &BTreeSet::new(),
        &interfaces,
        &current,
        &BTreeMap::new(),
    );
    (snapshot_took, started.elapsed(), decision.owners.len())
}

fn main() {
    println!(
        "| Services | nodes | addresses planned | snapshot (median) | plan (median) | whole pass per Service |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for nodes in [3, 24] {
        for services in [100, 1_000, 10_000] {
            let cluster = cluster(services, nodes);
            let alive: BTreeSet<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
            let runs = if services >= 10_000 { 21 } else { 101 };
            let mut snapshots = Vec::new();
            let mut plans = Vec::new();
            let mut planned = 0;
            for _ in 0..runs {
                let (snapshot, plan, owners) = pass(&cluster, &alive);
                snapshots.push(snapshot);
                plans.push(plan);
                planned = owners;
            }
            snapshots.sort();
            plans.sort();
            let (snapshot, plan) = (snapshots[runs / 2], plans[runs / 2]);
            println!(
                "| {services} | {nodes} | {planned} | {:.2} ms | {:.2} ms | {:.1} µs |",
                snapshot.as_secs_f64() * 1e3,
                plan.as_secs_f64() * 1e3,
                (snapshot + plan).as_secs_f64() * 1e6 / services as f64
            );
        }
    }
}
