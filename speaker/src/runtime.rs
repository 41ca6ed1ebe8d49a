//! The speaker's reconciler: reads the cluster (Services, EndpointSlices, Nodes, pools,
//! L2Advertisements), keeps the announce plan, elects an owner for each address among the
//! live speakers, and gives the responder the addresses this node owns.
//!
//! Every change recomputes the whole plan, debounced: the speaker's work per Service is a few
//! hashes, and a single pass keeps the result a pure function of the inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::pool_address::parse_pool_address;
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::announce_policy::{NodeInfo, PoolInfo, ServiceInfo, plan};
use crate::election::{Candidate, elect};
use crate::l2_status::{ServiceKey, StatusWriter};
use crate::responder::{Responder, Table};

const ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Changes arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// At start, how long to wait for the peers the Node objects name before announcing without
/// them: announcing before gossip has met them would make several nodes answer at once.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);
/// Without the API server for this long and without any live peer, the speaker stops
/// announcing: it cannot tell whether it is the one cut off.
const FENCE_AFTER: Duration = Duration::from_secs(3);

pub struct Config {
    pub node_name: String,
    pub namespace: String,
    pub lb_class: Option<String>,
    pub gossip_port: u16,
}

/// What one pass decided, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Address → owning node, for every address some node may announce.
    pub owners: BTreeMap<IpAddr, String>,
    /// What this node answers for, per interface.
    pub table: Table,
}

/// The inputs of one pass, read from the caches.
pub struct Snapshot {
    pub services: Vec<ServiceInfo>,
    pub pools: Vec<PoolInfo>,
    pub advertisements: Vec<L2Advertisement>,
    pub nodes: Vec<NodeInfo>,
}

/// The pure core of a pass: owners among the live speakers, and this node's table.
pub fn decide(
    snapshot: &Snapshot,
    me: &str,
    alive: &BTreeSet<String>,
    interfaces: &BTreeSet<String>,
) -> Decision {
    let mut decision = Decision::default();
    for service in &snapshot.services {
        for plan in plan(
            service,
            &snapshot.pools,
            &snapshot.advertisements,
            &snapshot.nodes,
        ) {
            let live = plan
                .candidates
                .iter()
                .filter(|(node, _)| alive.contains(*node))
                .map(|(node, preference)| Candidate {
                    node,
                    preference: *preference,
                });
            let Some(owner) = elect(plan.ip, live) else {
                continue;
            };
            decision.owners.insert(plan.ip, owner.to_string());
            if owner != me {
                continue;
            }
            let on: Vec<String> = match plan.interfaces.get(me) {
                Some(Some(listed)) => listed.intersection(interfaces).cloned().collect(),
                _ => interfaces.iter().cloned().collect(),
            };
            for interface in on {
                decision.table.entry(interface).or_default().insert(plan.ip);
            }
        }
    }
    decision
}

/// The Services this node announces, with the interfaces it answers for them on.
pub fn announced_services(
    snapshot: &Snapshot,
    decision: &Decision,
) -> BTreeMap<ServiceKey, BTreeSet<String>> {
    let mut announced = BTreeMap::new();
    for service in &snapshot.services {
        let interfaces: BTreeSet<String> = decision
            .table
            .iter()
            .filter(|(_, ips)| service.ips.iter().any(|ip| ips.contains(ip)))
            .map(|(interface, _)| interface.clone())
            .collect();
        if !interfaces.is_empty() {
            announced.insert(
                (service.namespace.clone(), service.name.clone()),
                interfaces,
            );
        }
    }
    announced
}

fn handled(service: &Service, lb_class: Option<&str>) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer")
            && spec.load_balancer_class.as_deref() == lb_class
    })
}

fn service_info(service: &Service, slices: &[Arc<EndpointSlice>]) -> ServiceInfo {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let ips = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let local_traffic_policy = service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    let mut endpoint_nodes = BTreeSet::new();
    let mut has_serving_endpoint = false;
    for slice in slices.iter().filter(|s| {
        s.namespace().as_deref() == Some(&namespace)
            && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
    }) {
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // As kube-proxy: `serving` when the slice says, else `ready`; unset means yes.
            let serving = conditions
                .and_then(|c| c.serving.or(c.ready))
                .unwrap_or(true);
            if serving {
                has_serving_endpoint = true;
                if let Some(node) = &endpoint.node_name {
                    endpoint_nodes.insert(node.clone());
                }
            }
        }
    }
    ServiceInfo {
        namespace,
        name,
        labels: service.labels().clone(),
        ips,
        pool: service.annotations().get(ALLOCATED_FROM_POOL).cloned(),
        local_traffic_policy,
        endpoint_nodes,
        has_serving_endpoint,
    }
}

fn node_info(node: &Node) -> NodeInfo {
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        });
    NodeInfo {
        name: node.name_any(),
        labels: node.labels().clone(),
        network_unavailable,
    }
}

fn pool_info(pool: &IPAddressPool) -> Option<PoolInfo> {
    let ranges: Result<Vec<_>, _> = pool
        .spec
        .addresses
        .iter()
        .map(|a| parse_pool_address(a))
        .collect();
    match ranges {
        Ok(ranges) => Some(PoolInfo {
            name: pool.name_any(),
            labels: pool.labels().clone(),
            ranges,
        }),
        Err(e) => {
            warn!(pool = %pool.name_any(), error = %e, "invalid pool, not announced");
            None
        }
    }
}

/// The Node's InternalIP: where its speaker gossips.
fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

fn spawn_reflector<K>(api: Api<K>, changed: Arc<Notify>, api_ok: watch::Sender<bool>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object| object.meta_mut().managed_fields = None),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    api_ok.send_replace(true);
                    changed.notify_one();
                }
                Err(e) => {
                    api_ok.send_replace(false);
                    warn!(error = %e, "watch error");
                }
            }
        }
    });
    reader
}

/// Runs the speaker until the process ends.
pub async fn run(
    client: Client,
    config: Config,
    responder: Responder,
    membership: crate::membership::Membership,
    health: Arc<crate::health::Health>,
) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let (api_ok_tx, mut api_ok) = watch::channel(true);
    let services =
        spawn_reflector::<Service>(Api::all(client.clone()), changed.clone(), api_ok_tx.clone());
    let slices = spawn_reflector::<EndpointSlice>(
        Api::all(client.clone()),
        changed.clone(),
        api_ok_tx.clone(),
    );
    let nodes =
        spawn_reflector::<Node>(Api::all(client.clone()), changed.clone(), api_ok_tx.clone());
    let pools = spawn_reflector::<IPAddressPool>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        api_ok_tx.clone(),
    );
    let advertisements = spawn_reflector::<L2Advertisement>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        api_ok_tx,
    );
    for (what, ready) in [
        ("Services", services.wait_until_ready().await.is_ok()),
        ("EndpointSlices", slices.wait_until_ready().await.is_ok()),
        ("Nodes", nodes.wait_until_ready().await.is_ok()),
        ("IPAddressPools", pools.wait_until_ready().await.is_ok()),
        (
            "L2Advertisements",
            advertisements.wait_until_ready().await.is_ok(),
        ),
    ] {
        if !ready {
            anyhow::bail!("the {what} cache closed before its first list");
        }
    }
    info!(node = %config.node_name, "caches filled");
    let mut status_writer =
        StatusWriter::new(client.clone(), &config.namespace, &config.node_name).await?;
    let mut status_retry = false;

    let interfaces: BTreeSet<String> = responder.interfaces().into_iter().map(|i| i.name).collect();
    let mut alive = membership.alive();
    let mut joined: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut api_down_since: Option<tokio::time::Instant> = None;
    let mut last = Decision::default();
    let started = tokio::time::Instant::now();
    let mut settled = false;
    loop {
        tokio::select! {
            () = changed.notified() => {}
            result = alive.changed() => {
                if result.is_err() {
                    return Ok(());
                }
            }
            result = api_ok.changed() => {
                if result.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(FENCE_AFTER), if api_down_since.is_some() => {}
            () = tokio::time::sleep(Duration::from_secs(1)), if status_retry => {}
            () = tokio::time::sleep_until(started + SETTLE_AT_MOST), if !settled => {}
        }
        tokio::time::sleep(DEBOUNCE).await;

        // Peers are introduced from the Node objects; gossip does the rest.
        for node in nodes.state() {
            if node.name_any() == config.node_name {
                continue;
            }
            if let Some(ip) = internal_ip(&node) {
                let peer = SocketAddr::new(ip, config.gossip_port);
                if joined.insert(peer) {
                    membership.join(peer);
                }
            }
        }

        let api_reachable = *api_ok.borrow_and_update();
        api_down_since = match (api_reachable, api_down_since) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, since) => since,
        };
        let live = alive.borrow_and_update().clone();
        if !settled {
            let expected = nodes
                .state()
                .iter()
                .filter(|n| internal_ip(n).is_some())
                .count();
            settled = live.len() >= expected || started.elapsed() >= SETTLE_AT_MOST;
            if !settled {
                continue;
            }
            info!(peers = live.len(), "membership settled, announcing");
        }
        let other_nodes = nodes
            .state()
            .iter()
            .filter(|n| n.name_any() != config.node_name)
            .count();
        let fenced = api_down_since.is_some_and(|since| since.elapsed() >= FENCE_AFTER)
            && live.len() <= 1
            && other_nodes > 0;

        let snapshot = Snapshot {
            services: {
                let slices = slices.state();
                services
                    .state()
                    .iter()
                    .filter(|s| handled(s, config.lb_class.as_deref()))
                    .map(|s| service_info(s, &slices))
                    .collect()
            },
            pools: pools.state().iter().filter_map(|p| pool_info(p)).collect(),
            advertisements: advertisements
                .state()
                .iter()
                .map(|a| (**a).clone())
                .collect(),
            nodes: nodes.state().iter().map(|n| node_info(n)).collect(),
        };
        let mut decision = decide(&snapshot, &config.node_name, &live, &interfaces);
        health.peers_alive.set(live.len() as i64);
        health.fenced.set(i64::from(fenced));
        if fenced {
            if !last.table.is_empty() {
                warn!("neither peers nor the API server reachable: stopping all announcements");
            }
            decision.table.clear();
        }
        let changed_decision = decision != last;
        if changed_decision {
            for (ip, owner) in &decision.owners {
                if last.owners.get(ip) != Some(owner) {
                    info!(address = %ip, owner = %owner, "owner elected");
                }
            }
            responder.set_table(decision.table.clone());
            let announced: BTreeSet<&IpAddr> = decision.table.values().flatten().collect();
            health.announced.set(announced.len() as i64);
            last = decision;
        }
        health.set_ready();
        if changed_decision || status_retry {
            let announced = announced_services(&snapshot, &last);
            let services: BTreeMap<ServiceKey, Service> = services
                .state()
                .iter()
                .filter(|s| {
                    announced.contains_key(&(s.namespace().unwrap_or_default(), s.name_any()))
                })
                .map(|s| {
                    (
                        (s.namespace().unwrap_or_default(), s.name_any()),
                        (**s).clone(),
                    )
                })
                .collect();
            status_retry = !status_writer.sync(&announced, &services, &live).await;
        }
    }
}
