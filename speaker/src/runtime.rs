//! The speaker's reconciler: reads the cluster (Services, EndpointSlices, Nodes, pools,
//! L2Advertisements), keeps the announce plan, elects an owner for each address among the
//! live speakers, and gives the responder the addresses this node owns.
//!
//! Every change starts a pass, debounced. The pass keeps the result a pure function of the
//! inputs (`decide` is that function), while its cost follows what changed: the watches name
//! the Services and ServiceL2Status objects they touched (`watch_changes`), `plan_cache` plans
//! and elects again only those and the addresses whose current owner moved (`owner_claims`),
//! and the status writer looks only at the Services whose objects or announcement changed.
//! Pools, advertisements, nodes and membership changes, relists and a periodic resync still
//! look at everything.

use ferrolb_ops::configuration_state::{Component, ConfigurationStateReporter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::pool_address::parse_pool_address;
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::announce_policy::{self, NodeInfo, Plan, PoolInfo, ServiceInfo, plan};
use crate::cache_trim;
use crate::conflict::{Conflict, Conflicts, Handling, Resolution, YIELD_FOR};
use crate::election::{Candidate, keep_or_elect};
use crate::heartbeat::{self, Heartbeats};
use crate::l2_status::{Announcement, ServiceKey, StatusWriter, service_reference};
use crate::node_interfaces::{Interfaces, able_to_announce};
use crate::owner_claims::OwnerClaims;
use crate::plan_cache::{Announced, AnnouncedObjects, PlanCache};
use crate::quorum::{Standing, standing};
use crate::responder::{Responder, Table};
use crate::watch_changes::{Touched, WatchChanges};

const ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Changes arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// At start, how long to wait for the peers the Node objects name before announcing without
/// them: announcing before gossip has met them would make several nodes answer at once.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);
/// After a step-down, how long the direct read of the ServiceL2Status objects complements the
/// cache, which catches up once its watch has reconnected.
const REJOIN_WINDOW: Duration = Duration::from_secs(10);

/// How long a node back from a step-down waits for a fresh read of the owners before it
/// decides on its cache alone (the API server may really be gone).
const REJOIN_READ_AT_MOST: Duration = Duration::from_secs(10);

/// The ServiceL2Status objects as the API server has them now, read past the cache; `None`
/// if the read fails.
async fn fresh_statuses(
    client: &Client,
    namespace: &str,
) -> Option<Vec<Arc<ferrolb_crds::ServiceL2Status>>> {
    let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(client.clone(), namespace);
    match tokio::time::timeout(Duration::from_secs(2), api.list(&Default::default())).await {
        Ok(Ok(list)) => Some(list.items.into_iter().map(Arc::new).collect()),
        _ => None,
    }
}

/// The ServiceL2Status objects the election reads its current owners from: the cache's, and
/// after a step-down a fresh read's; of an object in both, the newer version.
fn newest_objects(
    cached: &[Arc<ferrolb_crds::ServiceL2Status>],
    fresh: &[Arc<ferrolb_crds::ServiceL2Status>],
) -> Vec<Arc<ferrolb_crds::ServiceL2Status>> {
    // resourceVersions are opaque to clients, but both copies come from one API server; an
    // unreadable one loses.
    let version = |o: &ferrolb_crds::ServiceL2Status| {
        o.metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut objects: BTreeMap<String, Arc<ferrolb_crds::ServiceL2Status>> = BTreeMap::new();
    for object in fresh.iter().chain(cached) {
        match objects.get(&object.name_any()) {
            Some(kept) if version(kept) >= version(object) => {}
            _ => {
                objects.insert(object.name_any(), object.clone());
            }
        }
    }
    objects.into_values().collect()
}

/// Whether a node's claim on an address counts for the election: this node's own objects
/// count only for the addresses it answers now (a node back from a crash or a cut holds
/// nothing by its old objects), unless it is `resuming` after a restart its peers held its
/// addresses for, when it takes them back by its objects.
fn claim_counts(node: &str, me: &str, resuming: bool, answering: bool) -> bool {
    node != me || resuming || answering
}

/// How often the status writer reconciles everything even when nothing it watches changed: a
/// write the API server acknowledged and then lost shows in no watch.
const STATUS_RESYNC_EVERY: Duration = Duration::from_secs(5);

/// How often a peer that gossip does not count alive is introduced again.
const REINTRODUCE_EVERY: Duration = Duration::from_secs(2);

/// How often the standing is re-evaluated when nothing else happens: heartbeats expire on
/// their own.
const STANDING_TICK: Duration = Duration::from_secs(1);

pub struct Config {
    pub node_name: String,
    pub namespace: String,
    pub lb_class: Option<String>,
    pub gossip_port: u16,
    /// How long the peers hold this node's addresses while its speaker restarts.
    pub restart_grace: Duration,
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

/// The pure core of a pass: owners among the live speakers that can announce each address
/// (`known` holds the nodes' published interfaces: `node_interfaces::able_to_announce`), and
/// this node's table.
/// `current` holds each address's current owner as the ServiceL2Status objects say: it keeps
/// the address while it is a live candidate (`election::keep_or_elect`), or while its speaker
/// restarts within its grace (`held`): nobody answers for it then, as nobody moves it.
pub fn decide(
    snapshot: &Snapshot,
    me: &str,
    alive: &BTreeSet<String>,
    held: &BTreeSet<String>,
    interfaces: &BTreeSet<String>,
    current: &BTreeMap<IpAddr, String>,
    known: &BTreeMap<String, Interfaces>,
) -> Decision {
    let mut decision = Decision::default();
    for service in &snapshot.services {
        for plan in plan(
            service,
            &snapshot.pools,
            &snapshot.advertisements,
            &snapshot.nodes,
        ) {
            let current_owner = current.get(&plan.ip).map(String::as_str);
            let Some(owner) = elect_owner(&plan, current_owner, alive, held, known) else {
                continue;
            };
            record_owner(&mut decision, &plan, owner, me, interfaces);
        }
    }
    decision
}

/// Records `owner` for a planned address and, when it is this node, the interfaces it answers
/// on.
pub fn record_owner(
    decision: &mut Decision,
    plan: &Plan,
    owner: &str,
    me: &str,
    interfaces: &BTreeSet<String>,
) {
    decision.owners.insert(plan.ip, owner.to_string());
    if owner != me {
        return;
    }
    for interface in answering_on(plan, me, interfaces) {
        decision.table.entry(interface).or_default().insert(plan.ip);
    }
}

/// The interfaces this node answers on for a planned address it owns: those the plan lists
/// for it that it has, or all it has.
pub fn answering_on(plan: &Plan, me: &str, interfaces: &BTreeSet<String>) -> Vec<String> {
    match plan.interfaces.get(me) {
        Some(Some(listed)) => listed.intersection(interfaces).cloned().collect(),
        _ => interfaces.iter().cloned().collect(),
    }
}

/// What this node announces of a Service holding `ips`: `None` if nothing.
pub fn announcement_of(ips: &[IpAddr], table: &Table) -> Option<Announcement> {
    let mut found = Announcement::default();
    for (interface, answered) in table {
        let mut here = ips.iter().filter(|ip| answered.contains(ip)).peekable();
        if here.peek().is_some() {
            found.interfaces.insert(interface.clone());
            found.addresses.extend(here);
        }
    }
    (!found.interfaces.is_empty()).then_some(found)
}

/// The owner of one planned address among the live candidates able to announce it (see
/// `decide`).
pub fn elect_owner<'a>(
    plan: &'a Plan,
    current_owner: Option<&str>,
    alive: &BTreeSet<String>,
    held: &BTreeSet<String>,
    known: &BTreeMap<String, Interfaces>,
) -> Option<&'a str> {
    let able = able_to_announce(plan.ip, &plan.candidates, &plan.interfaces, known);
    let live = able
        .iter()
        .filter(|(node, _)| {
            alive.contains(*node) || (held.contains(*node) && Some(node.as_str()) == current_owner)
        })
        .map(|(node, preference)| Candidate {
            node,
            preference: *preference,
        });
    let owner = keep_or_elect(plan.ip, current_owner, live)?;
    // The name lives in the plan too; hand out the plan's copy.
    plan.candidates
        .get_key_value(owner)
        .map(|(n, _)| n.as_str())
}

/// The Services this node announces: the interfaces it answers on and their addresses it
/// answers for.
pub fn announced_services(
    snapshot: &Snapshot,
    decision: &Decision,
) -> BTreeMap<ServiceKey, Announcement> {
    let mut announced = BTreeMap::new();
    for service in &snapshot.services {
        if let Some(found) = announcement_of(&service.ips, &decision.table) {
            announced.insert((service.namespace.clone(), service.name.clone()), found);
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

/// EndpointSlices by the Service they belong to, so that each Service finds its own without
/// scanning every slice.
pub fn slices_by_service(
    slices: Vec<Arc<EndpointSlice>>,
) -> HashMap<ServiceKey, Vec<Arc<EndpointSlice>>> {
    let mut by_service: HashMap<ServiceKey, Vec<Arc<EndpointSlice>>> = HashMap::new();
    for slice in slices {
        if let (Some(namespace), Some(service)) = (
            slice.namespace(),
            slice.labels().get(SERVICE_NAME_LABEL).cloned(),
        ) {
            by_service
                .entry((namespace, service))
                .or_default()
                .push(slice);
        }
    }
    by_service
}

/// A Service as the announce policy reads it; `slices` are its own EndpointSlices.
pub fn service_info(service: &Service, slices: &[Arc<EndpointSlice>]) -> ServiceInfo {
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
    for slice in slices {
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

pub fn node_info(node: &Node) -> NodeInfo {
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

/// What this speaker cannot use of the configuration, one line per object, for its
/// ConfigurationState and the stale-configuration gauge. `usable` are the pools `pool_info`
/// read: only the others are parsed again, for their error, so a pass over a valid
/// configuration parses nothing twice.
fn configuration_problems(
    pools: &[Arc<IPAddressPool>],
    usable: &[PoolInfo],
    invalid_advertisements: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if usable.len() < pools.len() {
        problems.extend(
            pools
                .iter()
                .filter(|pool| !usable.iter().any(|u| u.name == pool.name_any()))
                .filter_map(|pool| {
                    let error = pool
                        .spec
                        .addresses
                        .iter()
                        .find_map(|a| parse_pool_address(a).err())?;
                    Some(format!(
                        "pool {}: {error}; it is not announced",
                        pool.name_any()
                    ))
                }),
        );
    }
    problems.extend(invalid_advertisements.iter().map(|(name, selectors)| {
        format!(
            "l2advertisement {name}: {}; it matches nothing there",
            selectors.join("; ")
        )
    }));
    problems
}

pub fn pool_info(pool: &IPAddressPool) -> Option<PoolInfo> {
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

/// Locks notes shared between tasks. Nothing panics while holding them, and a poisoned lock
/// still holds sound notes.
fn lock<T>(shared: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A reflector's `follow` that notes its events in `watched`.
fn follow<K: 'static>(
    watched: &Arc<std::sync::Mutex<WatchChanges>>,
    record: fn(&mut WatchChanges, &watcher::Event<K>),
) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    let watched = watched.clone();
    move |event| record(&mut lock(&watched), event)
}

/// Keeps a cache of `K`; `follow` sees every event after the cache has taken it in.
fn spawn_reflector<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    trim: fn(&mut K),
    mut follow: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K>
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
    let stream = reflector::reflector(writer, ferrolb_ops::lean_watch(api, trim));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    follow(&event);
                    changed.notify_one();
                }
                Err(e) => warn!(error = %e, "watch error"),
            }
        }
    });
    reader
}

/// How often, and how patiently, the API server is asked whether it is there. Watches alone
/// cannot tell: a watch over a dead link just stays silent.
const API_PROBE_EVERY: Duration = Duration::from_secs(1);

fn spawn_api_probe(client: Client) -> watch::Receiver<bool> {
    let (reachable_tx, reachable) = watch::channel(true);
    tokio::spawn(async move {
        loop {
            let answered = tokio::time::timeout(API_PROBE_EVERY, client.apiserver_version())
                .await
                .is_ok_and(|r| r.is_ok());
            reachable_tx.send_if_modified(|before| {
                let changed = *before != answered;
                if changed && answered {
                    info!("API server reachable again");
                } else if changed {
                    warn!("API server unreachable");
                }
                *before = answered;
                changed
            });
            if reachable_tx.is_closed() {
                return;
            }
            tokio::time::sleep(API_PROBE_EVERY).await;
        }
    });
    reachable
}

/// What the status writer should make the cluster show.
#[derive(Clone)]
struct StatusWork {
    announced: Announced,
    services: AnnouncedObjects,
    alive: BTreeSet<String>,
    /// Per announced Service, a number that grows each time this node starts answering
    /// addresses of it it did not answer the pass before (see `l2_status`).
    generations: imbl::OrdMap<ServiceKey, u64>,
}

/// Where the status writer reads what the cluster shows now, and which Services to look at.
struct StatusSources {
    objects: Store<ferrolb_crds::ServiceL2Status>,
    namespace: String,
    watched: Arc<std::sync::Mutex<WatchChanges>>,
    /// The Services whose objects or announcement changed since the writer last looked.
    to_sync: Arc<std::sync::Mutex<Touched<ServiceKey>>>,
}

impl StatusSources {
    /// Takes the Services to look at and their objects as the cache holds them now.
    fn take(&self) -> (Touched<ServiceKey>, Vec<Arc<ferrolb_crds::ServiceL2Status>>) {
        let scope = std::mem::take(&mut *lock(&self.to_sync));
        let objects = match &scope {
            Touched::Everything => self.objects.state(),
            Touched::Some(keys) => {
                let watched = lock(&self.watched);
                keys.iter()
                    .flat_map(|key| watched.status_objects.objects_of(key))
                    .filter_map(|name| {
                        self.objects
                            .get(&ObjectRef::new(name).within(&self.namespace))
                    })
                    .collect()
            }
        };
        (scope, objects)
    }
}

/// A write that does not finish within this is abandoned and retried: a request on a
/// connection over a dead link would otherwise wait for TCP to give up.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes ServiceL2Status objects and Events in a task of their own, so that the API
/// server's latency never delays answering ARP; only the latest wish is kept.
fn spawn_status_writer(
    mut writer: StatusWriter,
    sources: StatusSources,
) -> watch::Sender<Option<StatusWork>> {
    let (wishes, mut wish) = watch::channel::<Option<StatusWork>>(None);
    let latest = wishes.subscribe();
    tokio::spawn(async move {
        // Whether the newest wish, possibly newer than the one being written, still has this
        // node answer a Service: an Event for an announcement that has already ended would
        // be newer than the Event of the node that answers now.
        let still_announced = move |key: &ServiceKey| {
            latest
                .borrow()
                .as_ref()
                .is_some_and(|work| work.announced.contains_key(key))
        };
        let mut retry = false;
        loop {
            // Services noted after the wish last read was taken wait for no further wish.
            let pending = wish.borrow().is_some() && !lock(&sources.to_sync).is_empty();
            if !retry && !pending && wish.changed().await.is_err() {
                return;
            }
            // The Services to look at first, then the wish: the runtime notes Services before
            // it sends the wish that announces them, so the wish read is at least as new as
            // every Service taken.
            let (scope, objects) = sources.take();
            let Some(work) = wish.borrow_and_update().clone() else {
                lock(&sources.to_sync).extend(&scope);
                continue;
            };
            let sync = writer.sync(
                &work.announced,
                &work.services,
                &work.alive,
                &objects,
                &scope,
                &work.generations,
                &still_announced,
            );
            let done = tokio::time::timeout(STATUS_WRITE_TIMEOUT, sync).await;
            retry = !matches!(done, Ok(true));
            if retry {
                // What failed is not known in detail: everything is looked at again.
                *lock(&sources.to_sync) = Touched::Everything;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    wishes
}

/// Says what happened in a conflict: a log line and a Warning Event on each Service using
/// the address (in a task of its own: the API server's latency never delays answering).
fn report_conflict(
    recorder: &Recorder,
    node: &str,
    conflict: &Conflict,
    handling: Handling,
    services: &[Arc<Service>],
) {
    let outcome = match handling.resolution {
        Resolution::Keep => {
            "this node has the lower MAC: it keeps the address and announces it again".to_string()
        }
        Resolution::Yield => format!(
            "the lower MAC keeps the address: this node stops answering for it for {}s",
            YIELD_FOR.as_secs()
        ),
    };
    warn!(
        address = %conflict.ip,
        interface = %conflict.interface,
        other_mac = %conflict.theirs,
        our_mac = %conflict.ours,
        kind = conflict.kind.label(),
        "another MAC claims an address this node answers for; {outcome}"
    );
    let note = format!(
        "{} is also claimed by {} ({}) on node \"{node}\" interface {} (this node's MAC {}); {outcome}",
        conflict.ip,
        conflict.theirs,
        conflict.kind.label(),
        conflict.interface,
        conflict.ours,
    );
    for service in services.iter().filter(|s| {
        s.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|ingress| {
                ingress
                    .iter()
                    .any(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()) == Some(conflict.ip))
            })
    }) {
        let reference = service_reference(service);
        let event = Event {
            type_: EventType::Warning,
            reason: "AddressConflict".into(),
            note: Some(note.clone()),
            action: "ResolveConflict".into(),
            secondary: None,
        };
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let published =
                tokio::time::timeout(STATUS_WRITE_TIMEOUT, recorder.publish(&event, &reference))
                    .await;
            if !matches!(published, Ok(Ok(()))) {
                warn!("could not record the AddressConflict Event");
            }
        });
    }
}

/// What this node answers for, by interface, and on how many addresses.
#[derive(Debug, Default)]
struct Answering {
    table: Table,
    addresses: usize,
}

/// Brings what this node answers for in line with the decision's table (`raw`) less what
/// fencing and yielded addresses take, at the addresses `changed` names (or all).
/// Returns the addresses whose place in the table really changed.
fn correct_answering(
    answering: &mut Answering,
    raw: &Table,
    changed: Touched<IpAddr>,
    fenced: bool,
    yielding: &BTreeSet<IpAddr>,
) -> Touched<IpAddr> {
    let table = &mut answering.table;
    let mut addresses = match changed {
        Touched::Everything => {
            let before = std::mem::take(table);
            if !fenced {
                *table = raw.clone();
                for addresses in table.values_mut() {
                    addresses.retain(|ip| !yielding.contains(ip));
                }
                table.retain(|_, addresses| !addresses.is_empty());
            }
            answering.addresses = table.values().flatten().collect::<BTreeSet<_>>().len();
            if before == *table {
                return Touched::default();
            }
            return Touched::Everything;
        }
        Touched::Some(addresses) => addresses,
    };
    let on = |table: &Table, ip: &IpAddr| -> BTreeSet<String> {
        table
            .iter()
            .filter(|(_, answered)| answered.contains(ip))
            .map(|(interface, _)| interface.clone())
            .collect()
    };
    addresses.retain(|ip| {
        let was = on(table, ip);
        let now = if fenced || yielding.contains(ip) {
            BTreeSet::new()
        } else {
            on(raw, ip)
        };
        for interface in was.difference(&now) {
            if let Some(answered) = table.get_mut(interface) {
                answered.remove(ip);
            }
        }
        for interface in now.difference(&was) {
            table.entry(interface.clone()).or_default().insert(*ip);
        }
        match (was.is_empty(), now.is_empty()) {
            (true, false) => answering.addresses += 1,
            (false, true) => answering.addresses = answering.addresses.saturating_sub(1),
            _ => {}
        }
        was != now
    });
    table.retain(|_, answered| !answered.is_empty());
    Touched::Some(addresses)
}

/// Keeps MetalLB's `metallb_speaker_announced` (1 per Service and address announced from
/// this node) in step with one Service's change.
fn report_announced(
    health: &crate::health::Health,
    node: &str,
    change: &crate::plan_cache::AnnouncementChange,
) {
    let labels = |ip: &IpAddr| ferrolb_ops::metallb_metrics::AnnouncedLabels {
        service: format!("{}/{}", change.service.0, change.service.1),
        protocol: "layer2".to_string(),
        node: node.to_string(),
        ip: ip.to_string(),
    };
    let empty = BTreeSet::new();
    let before = change.before.as_ref().map_or(&empty, |a| &a.addresses);
    let after = change.after.as_ref().map_or(&empty, |a| &a.addresses);
    for ip in before.difference(after) {
        health.announced_services.remove(&labels(ip));
    }
    for ip in after.difference(before) {
        health.announced_services.get_or_create(&labels(ip)).set(1);
    }
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
    let mut api_ok = spawn_api_probe(client.clone());
    let watched = Arc::new(std::sync::Mutex::new(WatchChanges::default()));
    let services = spawn_reflector::<Service>(
        Api::all(client.clone()),
        changed.clone(),
        cache_trim::trim_service,
        follow(&watched, WatchChanges::follow_service),
    );
    let slices = spawn_reflector::<EndpointSlice>(
        Api::all(client.clone()),
        changed.clone(),
        cache_trim::trim_endpoint_slice,
        follow(&watched, WatchChanges::follow_slice),
    );
    let nodes = spawn_reflector::<Node>(Api::all(client.clone()), changed.clone(), |_| {}, |_| {});
    let pools = spawn_reflector::<IPAddressPool>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        |_| {},
        |_| {},
    );
    let advertisements = spawn_reflector::<L2Advertisement>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        |_| {},
        |_| {},
    );
    let statuses = spawn_reflector::<ferrolb_crds::ServiceL2Status>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        |_| {},
        follow(&watched, WatchChanges::follow_status),
    );
    let leases = spawn_reflector::<Lease>(
        Api::namespaced(client.clone(), &config.namespace),
        changed.clone(),
        |_| {},
        |_| {},
    );
    let interfaces: BTreeSet<String> = responder.interfaces().into_iter().map(|i| i.name).collect();
    // Read before the renewer clears the mark the previous speaker left.
    let mut resuming = !config.restart_grace.is_zero()
        && heartbeat::restarted_within_grace(client.clone(), &config.namespace, &config.node_name)
            .await;
    // Back from a restart, the heartbeat keeps its restart mark (and the peers keep holding
    // this node's addresses) until this speaker announces again.
    let mut renewing = false;
    let published_standing = tokio::sync::watch::Sender::new(Standing::Announce);
    if resuming {
        info!("back from a restart within its grace: taking back this node's addresses");
    } else {
        heartbeat::spawn_renewer(
            client.clone(),
            &config.namespace,
            &config.node_name,
            interfaces.clone(),
            published_standing.subscribe(),
        );
        renewing = true;
    }
    for (what, ready) in [
        ("Services", services.wait_until_ready().await.is_ok()),
        ("EndpointSlices", slices.wait_until_ready().await.is_ok()),
        ("Nodes", nodes.wait_until_ready().await.is_ok()),
        ("IPAddressPools", pools.wait_until_ready().await.is_ok()),
        (
            "L2Advertisements",
            advertisements.wait_until_ready().await.is_ok(),
        ),
        ("Leases", leases.wait_until_ready().await.is_ok()),
        (
            "ServiceL2Statuses",
            statuses.wait_until_ready().await.is_ok(),
        ),
    ] {
        if !ready {
            anyhow::bail!("the {what} cache closed before its first list");
        }
    }
    info!(node = %config.node_name, "caches filled");
    let status_writer = StatusWriter::new(client.clone(), &config.namespace, &config.node_name);
    let to_sync = Arc::new(std::sync::Mutex::new(Touched::Everything));
    let status = spawn_status_writer(
        status_writer,
        StatusSources {
            objects: statuses.clone(),
            namespace: config.namespace.clone(),
            watched: watched.clone(),
            to_sync: to_sync.clone(),
        },
    );

    let mut heard_conflicts = responder.take_conflicts();
    let mut conflicts = Conflicts::default();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(config.node_name.clone()),
        },
    );
    let mut alive = membership.alive();
    let mut previous_live = alive.borrow().clone();
    let mut introduced: BTreeMap<SocketAddr, tokio::time::Instant> = BTreeMap::new();
    let mut heartbeats = Heartbeats::default();
    let mut last_standing = Standing::Announce;
    let mut rejoin_read: Vec<Arc<ferrolb_crds::ServiceL2Status>> = Vec::new();
    let mut rejoined_at: Option<tokio::time::Instant> = None;
    let mut rejoining: Option<tokio::time::Instant> = None;
    // What this node answers for: the decision's table less what fencing and conflicts take.
    let mut answering = Answering::default();
    let mut plans = PlanCache::default();
    let mut claims = OwnerClaims::default();
    // The claims came from a fresh read too (after a step-down): rebuilt from the cache alone
    // once that read is dropped.
    let mut claims_read_fresh = false;
    let mut first_pass = true;
    let mut last_resuming = resuming;
    let mut last_fenced = false;
    let mut last_yielding: BTreeSet<IpAddr> = BTreeSet::new();
    // Addresses whose place in the table changed: whether this node's own claim on them
    // counts changed with it.
    let mut recheck_next: Touched<IpAddr> = Touched::Everything;
    let mut last_alive: BTreeSet<String> = BTreeSet::new();
    let mut last_invalid_advertisements: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let configuration_state = ConfigurationStateReporter::spawn(
        client.clone(),
        &config.namespace,
        Component::Speaker {
            node: config.node_name.clone(),
        },
    );
    let mut last_status_sync = tokio::time::Instant::now();
    // Persistent, as the wish's maps: each pass hands the writer a snapshot without a copy.
    let mut generations: imbl::OrdMap<ServiceKey, u64> = imbl::OrdMap::new();
    let mut next_generation: u64 = 0;
    let started = tokio::time::Instant::now();
    let mut settled = false;
    loop {
        // A peer that went away is acted on at once: waiting for more changes would only add
        // to the failover time.
        let mut membership_changed = false;
        tokio::select! {
            () = changed.notified() => {}
            result = alive.changed() => {
                if result.is_err() {
                    return Ok(());
                }
                membership_changed = true;
            }
            result = api_ok.changed() => {
                if result.is_err() {
                    return Ok(());
                }
            }
            Some(conflict) = async {
                match heard_conflicts.as_mut() {
                    Some(heard) => heard.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let handling = conflicts.observe(&conflict, std::time::Instant::now());
                if handling.reassert {
                    responder.reassert(conflict.ip);
                }
                if handling.report {
                    report_conflict(&recorder, &config.node_name, &conflict, handling, &services.state());
                }
                // Keeping changes nothing in the table; yielding does, at once.
                if handling.resolution == Resolution::Keep {
                    continue;
                }
            }
            () = tokio::time::sleep(STANDING_TICK) => {}
            () = tokio::time::sleep_until(started + SETTLE_AT_MOST), if !settled => {}
        }
        if !membership_changed {
            tokio::time::sleep(DEBOUNCE).await;
        }

        let node_objects = nodes.state();

        let api_reachable = *api_ok.borrow_and_update();
        let live = alive.borrow_and_update().clone();
        // A peer declared down may be the other claimant of an address this node yielded.
        if previous_live.iter().any(|node| !live.contains(node)) {
            conflicts.end_yields();
        }
        previous_live.clone_from(&live);
        // Peers are introduced from the Node objects; gossip does the rest. A peer gossip does
        // not count alive is introduced again now and then: once every member has declared
        // every other down and forgotten it (a long cut), nothing else would bring them back.
        for node in &node_objects {
            let name = node.name_any();
            if name == config.node_name || live.contains(&name) {
                continue;
            }
            if let Some(ip) = internal_ip(node) {
                let peer = SocketAddr::new(ip, config.gossip_port);
                let due = introduced
                    .get(&peer)
                    .is_none_or(|at: &tokio::time::Instant| at.elapsed() >= REINTRODUCE_EVERY);
                if due {
                    introduced.insert(peer, tokio::time::Instant::now());
                    membership.join(peer);
                }
            }
        }
        if !settled {
            let expected = node_objects
                .iter()
                .filter(|n| internal_ip(n).is_some())
                .count();
            settled = live.len() >= expected || started.elapsed() >= SETTLE_AT_MOST;
            if !settled {
                continue;
            }
            info!(peers = live.len(), "membership settled, announcing");
        }
        let now = tokio::time::Instant::now();
        heartbeats.observe(&leases.state(), now);
        let running = heartbeats.running(now, api_reachable);
        let standing = standing(&config.node_name, &live, &running, api_reachable);
        if standing != last_standing {
            match &standing {
                Standing::Announce => info!(
                    heard = live.len(),
                    running = running.len(),
                    "a majority of the speakers heard: announcing"
                ),
                Standing::Isolated { unheard } => warn!(
                    ?unheard,
                    "these speakers run but gossip cannot reach them: this node is the one cut off, stepping down"
                ),
                Standing::Fenced => warn!(
                    heard = live.len(),
                    "a minority of the speakers heard and no API server: stepping down"
                ),
            }
            if standing == Standing::Announce && last_standing != Standing::Announce {
                rejoining = Some(now);
            }
            last_standing = standing.clone();
            published_standing.send_replace(standing.clone());
        }
        // Back from a step-down, a node hears its peers one by one and its caches may still
        // show the cluster as it was before the cut (a watch reconnects with some delay). It
        // stays silent until it hears every running speaker (or `SETTLE_AT_MOST`), then reads
        // who owns what afresh: deciding on half a view would claim, and even clean up, the
        // addresses of peers it has not heard again yet.
        let mut holding = false;
        if let Some(since) = rejoining {
            let hears_all = running.iter().all(|n| live.contains(n));
            if standing != Standing::Announce {
                rejoining = None;
            } else if hears_all || since.elapsed() >= SETTLE_AT_MOST {
                match fresh_statuses(&client, &config.namespace).await {
                    Some(read) => {
                        rejoin_read = read;
                        rejoined_at = Some(tokio::time::Instant::now());
                        rejoining = None;
                        info!(
                            heard = live.len(),
                            "rejoined: deciding with a fresh view of the owners"
                        );
                    }
                    None if since.elapsed() >= REJOIN_READ_AT_MOST => {
                        rejoining = None;
                        warn!(
                            "rejoined without a fresh view of the owners: the API server does not answer"
                        );
                    }
                    None => holding = true,
                }
            } else {
                holding = true;
            }
        }
        if rejoined_at.is_some_and(|at| at.elapsed() > REJOIN_WINDOW) {
            rejoin_read.clear();
            rejoined_at = None;
        }
        health.speakers_running.set(running.len() as i64);
        health
            .isolated
            .set(i64::from(matches!(standing, Standing::Isolated { .. })));
        let fenced = standing != Standing::Announce || holding;

        let taken = lock(&watched).take();
        let (touched_services, touched_statuses) = (&taken.services, &taken.statuses);
        let pool_objects = pools.state();
        let pool_infos: Vec<PoolInfo> = pool_objects.iter().filter_map(|p| pool_info(p)).collect();
        let advertisement_objects: Vec<L2Advertisement> = advertisements
            .state()
            .iter()
            .map(|a| (**a).clone())
            .collect();
        let invalid_advertisements: BTreeMap<String, Vec<String>> = advertisement_objects
            .iter()
            .map(|a| (a.name_any(), announce_policy::invalid_selectors(a)))
            .filter(|(_, problems)| !problems.is_empty())
            .collect();
        if invalid_advertisements != last_invalid_advertisements {
            for (name, problems) in &invalid_advertisements {
                warn!(advertisement = %name, problems = %problems.join("; "), "invalid selector: it matches nothing, so the advertisement announces less than it says");
            }
            last_invalid_advertisements = invalid_advertisements;
        }
        let problems =
            configuration_problems(&pool_objects, &pool_infos, &last_invalid_advertisements);
        health.config.set(problems.len());
        configuration_state.report(problems);
        let plan_inputs = (
            pool_infos,
            advertisement_objects,
            node_objects.iter().map(|n| node_info(n)).collect(),
        );
        let lb_class = config.lb_class.as_deref();
        match touched_services {
            Touched::Some(keys) if !first_pass => {
                let found: Vec<_> = {
                    let watched = lock(&watched);
                    keys.iter()
                        .map(|key| {
                            let service = services
                                .get(&ObjectRef::new(&key.1).within(&key.0))
                                .filter(|s| handled(s, lb_class));
                            let own_slices = || {
                                watched
                                    .slices
                                    .objects_of(key)
                                    .filter_map(|name| {
                                        slices.get(&ObjectRef::new(name).within(&key.0))
                                    })
                                    .collect()
                            };
                            (key.clone(), service.map(|s| (s, own_slices())))
                        })
                        .collect()
                };
                plans.update_services(found, plan_inputs.0, plan_inputs.1, plan_inputs.2);
            }
            _ => {
                let service_objects: Vec<Arc<Service>> = services
                    .state()
                    .into_iter()
                    .filter(|s| handled(s, lb_class))
                    .collect();
                plans.update(
                    &service_objects,
                    &slices.state(),
                    plan_inputs.0,
                    plan_inputs.1,
                    plan_inputs.2,
                );
            }
        }
        // The current owners, from the ServiceL2Status objects the watch named (all of them
        // after a relist, and while a fresh read complements the cache).
        let mut recheck = std::mem::take(&mut recheck_next);
        let fresh_read = !rejoin_read.is_empty();
        if matches!(touched_statuses, Touched::Everything)
            || first_pass
            || fresh_read
            || claims_read_fresh
        {
            let objects = newest_objects(&statuses.state(), &rejoin_read);
            claims.rebuild(objects.iter().map(|o| &**o));
            claims_read_fresh = fresh_read;
            recheck = Touched::Everything;
        } else if let Touched::Some(names) = touched_statuses {
            for name in names {
                let object = statuses.get(&ObjectRef::new(name).within(&config.namespace));
                for ip in claims.apply(name, object.as_deref()) {
                    recheck.insert(ip);
                }
            }
        }
        if resuming != last_resuming {
            recheck = Touched::Everything;
            last_resuming = resuming;
        }
        let held: BTreeSet<String> = heartbeats
            .restarting(now)
            .into_iter()
            .filter(|n| !live.contains(n))
            .collect();
        let changed = {
            let me = config.node_name.as_str();
            let table = &answering.table;
            let claims = &claims;
            plans.decide(
                me,
                &live,
                &held,
                &interfaces,
                |ip| {
                    let answering = table.values().any(|a| a.contains(ip));
                    claims
                        .owner(ip, |node| claim_counts(node, me, resuming, answering))
                        .map(str::to_string)
                },
                &recheck,
                heartbeats.interfaces(),
            )
        };
        // Taken back once: from now on this node's table says what it answers.
        resuming &= fenced;
        health.peers_alive.set(live.len() as i64);
        health.fenced.set(i64::from(standing == Standing::Fenced));
        for ip in &changed.owners {
            if let Some(owner) = plans.decision().owners.get(ip) {
                info!(address = %ip, owner = %owner, "owner elected");
            }
        }
        // Addresses left to a lower MAC that claims them stay out of the table; the responder
        // keeps listening for claims on them.
        let raw = &plans.decision().table;
        let yielded = conflicts.yielded(std::time::Instant::now());
        let yielding: BTreeSet<IpAddr> = if fenced {
            BTreeSet::new()
        } else {
            yielded
                .iter()
                .filter(|ip| raw.values().any(|a| a.contains(ip)))
                .copied()
                .collect()
        };
        let table_changed: Touched<IpAddr> = if fenced != last_fenced || first_pass {
            Touched::Everything
        } else {
            Touched::Some(
                changed
                    .table
                    .iter()
                    .chain(yielding.symmetric_difference(&last_yielding))
                    .copied()
                    .collect(),
            )
        };
        let table_changed =
            correct_answering(&mut answering, raw, table_changed, fenced, &yielding);
        last_fenced = fenced;
        last_yielding.clone_from(&yielding);
        responder.set_yielded(yielding);
        if !table_changed.is_empty() {
            responder.update(&answering.table, &table_changed);
            health.announced.set(answering.addresses as i64);
        }
        recheck_next = table_changed.clone();
        if !renewing && !resuming {
            heartbeat::spawn_renewer(
                client.clone(),
                &config.namespace,
                &config.node_name,
                interfaces.clone(),
                published_standing.subscribe(),
            );
            renewing = true;
        }
        health.set_ready();
        // The writer reconciles what the API server holds with what this node announces; it
        // is woken when either changed, and now and then in case a write was lost.
        let changes = plans.announce(&answering.table, &table_changed);
        health
            .addresses_to_announce
            .set(plans.decision().owners.len() as i64);
        for change in &changes {
            report_announced(&health, &config.node_name, change);
        }
        for change in &changes {
            match &change.after {
                None => {
                    generations.remove(&change.service);
                }
                // Transitions after the first pass (the first one's Events come from the
                // objects this node has or lacks): a Service whose addresses this node starts
                // answering.
                Some(after) if !first_pass => {
                    let gained = change
                        .before
                        .as_ref()
                        .is_none_or(|b| !after.addresses.is_subset(&b.addresses));
                    if gained {
                        next_generation += 1;
                        generations.insert(change.service.clone(), next_generation);
                    }
                }
                Some(_) => {}
            }
        }
        let alive_or_held: BTreeSet<String> = live.union(&held).cloned().collect();
        let mut scope: Touched<ServiceKey> = taken.status_services;
        for change in &changes {
            scope.insert(change.service.clone());
        }
        // A node found gone may leave objects behind on any Service; and now and then
        // everything is looked at in case a write was lost.
        if first_pass
            || alive_or_held != last_alive
            || last_status_sync.elapsed() >= STATUS_RESYNC_EVERY
        {
            scope = Touched::Everything;
        }
        first_pass = false;
        if !scope.is_empty() {
            if matches!(scope, Touched::Everything) {
                last_status_sync = tokio::time::Instant::now();
            }
            lock(&to_sync).extend(&scope);
            let (announced, services) = plans.announced();
            last_alive.clone_from(&alive_or_held);
            status.send_replace(Some(StatusWork {
                announced,
                services,
                // A restarting node's objects stay: they say who holds its addresses.
                alive: alive_or_held,
                generations: generations.clone(),
            }));
        }
    }
}
