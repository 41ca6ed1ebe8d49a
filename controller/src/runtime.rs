//! The controller's I/O: watches Services, IPAddressPools and Namespaces, feeds the allocator,
//! and writes the outcome back (Service status, condition and annotation, pool status, Events).
//!
//! Order matters and is explicit: every watch lists first, then every address Services already
//! hold (their status) is restored into the allocator, and only then is anything allocated.
//! Changes then go through one queue: a Service change is reconciled alone, a pool change
//! re-reconciles only the Services still waiting for an address.
//!
//! Deciding is synchronous and one Service at a time (the allocator is the single source of
//! truth); the API writes that carry a decision out run concurrently, at most one per Service.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolb_crds::IPAddressPool;
use ferrolb_crds::pool_address::find_overlaps;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use ferrolb_ops::configuration_state::{Component, ConfigurationStateReporter};
use tracing::{info, warn};

use crate::allocator::{Allocator, Assignment};
use crate::annotation_lane::{self, AnnotationLane, PoolAnnotation};
use crate::event_sink::{EventSink, PendingEvent, Reporter};
use crate::health::{Health, ReasonLabels};
use crate::pool::{Pool, PoolCondition};
use crate::service_condition::{self, ADDRESS_ALLOCATED, AllocationState, Reported};
use crate::service_request::{
    ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, LEGACY_ANNOTATION_PREFIX, RequestWarning, ServiceKey,
    ServiceRequest, unknown_annotations,
};

/// Services whose writes may be in flight at once.
const WRITES_IN_FLIGHT: usize = 32;

/// What the controller serves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where IPAddressPools live.
    pub namespace: String,
    /// Services of this `loadBalancerClass` are handled; without it, only classless ones.
    pub lb_class: Option<String>,
    /// The field manager of every write.
    pub field_manager: String,
}

/// Something that changed, for the work queue.
#[derive(Debug)]
enum Change {
    Service(ServiceKey),
    ServiceGone(ServiceKey),
    /// The Service watch listed everything again (start, or after a 410): its store now holds
    /// the new list, which may lack Services deleted while no watch was open.
    ServicesRelisted,
    Pools,
    Namespace(String),
}

/// What a reflector saw, once its store reflects it.
enum Seen {
    Applied(ServiceKey),
    Deleted(ServiceKey),
    /// One object of a (re)list; `Relisted` follows the last one.
    Listed(ServiceKey),
    /// A complete list replaced the store (`InitDone`). Objects of a list are not in the store
    /// before that, so they are not reported one by one.
    Relisted,
}

/// The API writes that carry out one decision about a Service, and what follows once they
/// succeed.
struct ServiceWrite {
    key: ServiceKey,
    /// Strategic merge patch of the status (ingress and/or ferrolb's condition).
    status: Option<Value>,
    /// What the pool annotation should say, when it says something else now.
    pool_annotation: Option<PoolAnnotation>,
    after: AfterWrite,
}

/// What the controller records once a Service's writes succeeded.
struct AfterWrite {
    /// The state the Service now shows (`None`: it is no longer ours).
    state: Option<AllocationState>,
    /// The Event announcing the new state, when it is a transition.
    announce: Option<(ObjectReference, AllocationState)>,
    /// Whether pool counts may have changed.
    pools_touched: bool,
}

/// A write that is running.
struct InFlight {
    started: Instant,
    after: AfterWrite,
    /// The Service changed again meanwhile: decide again once this write is done.
    changed_since: bool,
}

struct Controller {
    health: Arc<Health>,
    client: Client,
    config: Config,
    allocator: Allocator,
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
    events: EventSink,
    /// What each Service was last told (its condition), so that Events go out on transitions
    /// only.
    reported: HashMap<ServiceKey, Reported>,
    /// Annotations already warned about, by Service.
    warned_annotations: HashMap<ServiceKey, BTreeSet<String>>,
    /// Each pool's last Valid condition (reason, message), for an Event when it changes.
    pool_conditions: HashMap<String, (String, String)>,
    pool_reports: HashMap<String, String>,
    /// A decision freed addresses: Services waiting for one get another look.
    addresses_freed: bool,
    /// The `controller` ConfigurationState: which pools are ignored or partly used.
    configuration_state: ConfigurationStateReporter,
}

fn key_of(service: &Service) -> ServiceKey {
    ServiceKey {
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
    }
}

/// Counts a failed attempt for `key` and sends its Service to be decided again after an
/// exponential backoff (0.2 s doubling up to 6.4 s); returns the attempt's number.
fn decide_again_later(
    attempts: &mut HashMap<ServiceKey, u32>,
    key: ServiceKey,
    changes: &mpsc::UnboundedSender<Change>,
) -> u32 {
    let attempt = attempts.entry(key.clone()).or_insert(0);
    *attempt += 1;
    let delay = Duration::from_millis(100 * 2u64.pow((*attempt).min(6)));
    let changes = changes.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = changes.send(Change::Service(key));
    });
    *attempt
}

/// Whether ferrolb handles this Service: type LoadBalancer, and our class (or none).
pub fn handled(service: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == lb_class
}

/// What the controller never reads of a Service: with 10,000 cached, every field counts.
fn trim_service(service: &mut Service) {
    service.metadata.resource_version = None;
    service.metadata.owner_references = None;
    service.metadata.finalizers = None;
    // Only MetalLB's annotations are read. A map costs a node of about 500 bytes even for one
    // entry, so an empty one is dropped too.
    if let Some(annotations) = service.metadata.annotations.as_mut() {
        annotations.retain(|name, _| {
            name.starts_with(ANNOTATION_PREFIX) || name.starts_with(LEGACY_ANNOTATION_PREFIX)
        });
    }
    service.metadata.annotations.take_if(|a| a.is_empty());
    service.metadata.labels.take_if(|l| l.is_empty());
    if let Some(spec) = service.spec.as_mut() {
        // The pod selector matters only for sharing an address between Services with
        // externalTrafficPolicy Local (they must select the same pods).
        if spec.external_traffic_policy.as_deref() != Some("Local") {
            spec.selector = None;
        }
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        spec.session_affinity = None;
        spec.session_affinity_config = None;
        spec.internal_traffic_policy = None;
        spec.health_check_node_port = None;
        spec.allocate_load_balancer_node_ports = None;
        for port in spec.ports.iter_mut().flatten() {
            port.node_port = None;
            port.target_port = None;
            port.app_protocol = None;
        }
    }
}

/// A Namespace matters to the controller by its labels only.
fn trim_namespace(namespace: &mut Namespace) {
    namespace.metadata.resource_version = None;
    namespace.spec = None;
    namespace.status = None;
}

/// The addresses a LoadBalancer Service that ferrolb does not handle shows in its status.
fn foreign_ips(service: &Service) -> Vec<IpAddr> {
    let is_load_balancer = service
        .spec
        .as_ref()
        .is_some_and(|spec| spec.type_.as_deref() == Some("LoadBalancer"));
    if is_load_balancer {
        status_ips(service)
    } else {
        Vec::new()
    }
}

/// The addresses a Service's status shows.
pub fn status_ips(service: &Service) -> Vec<IpAddr> {
    service
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
        .unwrap_or_default()
}

fn ingress(ips: &[IpAddr]) -> Value {
    ips.iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect()
}

/// Runs the controller until its watches end.
pub async fn run(client: Client, config: Config, health: Arc<Health>) -> anyhow::Result<()> {
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<Change>();
    // The watches end with `run`: a replica that stops leading must stop reading too.
    let mut watches = JoinSet::new();
    let services = spawn_reflector::<Service>(
        &mut watches,
        Api::all(client.clone()),
        changes_tx.clone(),
        |seen, _| match seen {
            Seen::Applied(key) => Some(Change::Service(key)),
            Seen::Deleted(key) => Some(Change::ServiceGone(key)),
            Seen::Listed(_) => None,
            Seen::Relisted => Some(Change::ServicesRelisted),
        },
        trim_service,
    );
    // Pool status is the controller's own output: a write of it comes back as a watch event,
    // which must not start another pass over every pool and waiting Service.
    let mut pool_generations: HashMap<ServiceKey, Option<i64>> = HashMap::new();
    let pools = spawn_reflector::<IPAddressPool>(
        &mut watches,
        Api::namespaced(client.clone(), &config.namespace),
        changes_tx.clone(),
        move |seen, pool| match (seen, pool) {
            (Seen::Applied(key), Some(pool)) => {
                let generation = pool.metadata.generation;
                let before = pool_generations.insert(key, generation);
                (generation.is_none() || before != Some(generation)).then_some(Change::Pools)
            }
            (Seen::Listed(key), Some(pool)) => {
                pool_generations.insert(key, pool.metadata.generation);
                None
            }
            (Seen::Deleted(key), _) => {
                pool_generations.remove(&key);
                Some(Change::Pools)
            }
            _ => Some(Change::Pools),
        },
        |_| {},
    );
    let namespaces = spawn_reflector::<Namespace>(
        &mut watches,
        Api::all(client.clone()),
        changes_tx.clone(),
        |seen, _| {
            match seen {
                Seen::Applied(key) | Seen::Deleted(key) => Some(Change::Namespace(key.name)),
                Seen::Listed(_) => None,
                // Any namespace may have new labels: Services waiting anywhere are looked at again.
                Seen::Relisted => Some(Change::Pools),
            }
        },
        trim_namespace,
    );
    for store in [
        services.clone().wait_until_ready().await.is_ok(),
        pools.clone().wait_until_ready().await.is_ok(),
        namespaces.clone().wait_until_ready().await.is_ok(),
    ] {
        if !store {
            anyhow::bail!("a watch ended before its initial list");
        }
    }
    let reporter = Reporter {
        controller: "ferrolb-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let configuration_state =
        ConfigurationStateReporter::spawn(client.clone(), &config.namespace, Component::Controller);
    let mut controller = Controller {
        health: health.clone(),
        events: EventSink::spawn(
            client.clone(),
            reporter,
            health.metrics.events_dropped.clone(),
        ),
        client,
        config,
        allocator: Allocator::new(),
        services,
        pools,
        namespaces,
        reported: HashMap::new(),
        warned_annotations: HashMap::new(),
        pool_conditions: HashMap::new(),
        addresses_freed: false,
        pool_reports: HashMap::new(),
        configuration_state,
    };
    controller.start();
    health.set_ready();
    let mut queue: VecDeque<ServiceKey> = VecDeque::new();
    let mut queued: HashSet<ServiceKey> = HashSet::new();
    let mut retry: HashMap<ServiceKey, u32> = HashMap::new();
    let mut in_flight: HashMap<ServiceKey, InFlight> = HashMap::new();
    let mut writes: JoinSet<(ServiceKey, Result<(), kube::Error>)> = JoinSet::new();
    let mut annotations = AnnotationLane::new(controller.client.clone(), controller.patch_params());
    let mut annotation_retry: HashMap<ServiceKey, u32> = HashMap::new();
    // Pool status is written at most every POOL_REPORT_INTERVAL: counts change with every
    // Service, and recounting after each one would cost O(Services) per Service.
    let mut pool_report_due: Option<tokio::time::Instant> = None;
    loop {
        let mut received = Vec::new();
        let mut finished = Vec::new();
        let mut annotated = Vec::new();
        let annotation_width = annotation_lane::width(!queue.is_empty());
        let can_start = (!queue.is_empty() && writes.len() < WRITES_IN_FLIGHT)
            || controller.addresses_freed
            || annotations.can_start(annotation_width);
        if !can_start {
            let report_due = async {
                match pool_report_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = writes.join_next(), if !writes.is_empty() => finished.push(done),
                Some(done) = annotations.next_done(), if annotations.is_running() => {
                    annotated.push(done);
                }
                change = changes.recv() => match change {
                    Some(change) => received.push(change),
                    None => return Ok(()),
                },
                () = report_due => {}
            }
        }
        while let Some(done) = writes.try_join_next() {
            finished.push(done);
        }
        while let Ok(change) = changes.try_recv() {
            received.push(change);
        }
        annotated.extend(annotations.try_done());
        for (key, result) in annotated {
            match result {
                Ok(()) => {
                    annotation_retry.remove(&key);
                }
                Err(e) => {
                    // Decided again after a backoff, the Service asks for its annotation anew.
                    let attempt =
                        decide_again_later(&mut annotation_retry, key.clone(), &changes_tx);
                    warn!(service = %key, error = %e, attempt, "writing the pool annotation failed, will retry");
                }
            }
        }
        let mut touched_pools = false;
        let mut enqueue = |key: ServiceKey, queue: &mut VecDeque<ServiceKey>| {
            if queued.insert(key.clone()) {
                queue.push_back(key);
            }
        };
        for done in finished {
            let (key, result) = match done {
                Ok(done) => done,
                Err(e) => {
                    // A write task cannot panic by design; if it did, its Service is decided
                    // again on its next change or resync.
                    warn!(error = %e, "a write task failed");
                    continue;
                }
            };
            let Some(flight) = in_flight.remove(&key) else {
                continue;
            };
            health
                .metrics
                .reconcile_seconds
                .observe(flight.started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    retry.remove(&key);
                    touched_pools |= flight.after.pools_touched;
                    controller.record(&key, flight.after);
                    if flight.changed_since {
                        enqueue(key, &mut queue);
                    }
                }
                Err(e) => {
                    let attempt = decide_again_later(&mut retry, key.clone(), &changes_tx);
                    warn!(service = %key, error = %e, attempt, "reconcile failed, will retry");
                }
            }
        }
        let mut pools_changed = false;
        for change in received {
            match change {
                Change::Service(key) => enqueue(key, &mut queue),
                Change::ServiceGone(key) => {
                    annotations.forget(&key);
                    annotation_retry.remove(&key);
                    if controller.allocator.release(&key).is_some() {
                        info!(service = %key, "released");
                    }
                    controller.reported.remove(&key);
                    pools_changed = true;
                }
                Change::ServicesRelisted => {
                    let present: BTreeSet<ServiceKey> = controller
                        .services
                        .state()
                        .iter()
                        .map(|s| key_of(s))
                        .collect();
                    for gone in controller
                        .allocator
                        .services()
                        .into_iter()
                        .filter(|k| !present.contains(k))
                    {
                        controller.allocator.release(&gone);
                        controller.reported.remove(&gone);
                        info!(service = %gone, "released (deleted while the watch was down)");
                        pools_changed = true;
                    }
                    for key in present {
                        enqueue(key, &mut queue);
                    }
                }
                Change::Pools => pools_changed = true,
                Change::Namespace(namespace) => {
                    for key in controller.waiting_in(Some(&namespace)) {
                        enqueue(key, &mut queue);
                    }
                }
            }
        }
        if pools_changed {
            controller.load_pools();
            touched_pools = true;
            // Services waiting for an address may now get one; Services holding addresses
            // may now be inside or outside a pool, which their condition says.
            for key in controller.waiting_in(None) {
                enqueue(key, &mut queue);
            }
            for key in controller.allocator.services() {
                let home_changed = controller.allocator.assignment(&key).is_some_and(|a| {
                    controller.reported.get(&key) != Some(&AllocationState::allocated(a).reported())
                });
                if home_changed {
                    enqueue(key, &mut queue);
                }
            }
        }
        if std::mem::take(&mut controller.addresses_freed) {
            for key in controller.waiting_in(None) {
                enqueue(key, &mut queue);
            }
        }
        while writes.len() < WRITES_IN_FLIGHT {
            let Some(key) = queue.pop_front() else {
                break;
            };
            queued.remove(&key);
            if let Some(flight) = in_flight.get_mut(&key) {
                flight.changed_since = true;
                continue;
            }
            let started = Instant::now();
            let Some(write) = controller.decide(&key) else {
                continue;
            };
            if let Some(pool) = write.pool_annotation.clone() {
                annotations.push(key.clone(), pool);
            }
            if write.status.is_none() {
                touched_pools |= write.after.pools_touched;
                controller.record(&key, write.after);
                health
                    .metrics
                    .reconcile_seconds
                    .observe(started.elapsed().as_secs_f64());
                continue;
            }
            let ServiceWrite {
                key,
                status,
                pool_annotation: _,
                after,
            } = write;
            in_flight.insert(
                key.clone(),
                InFlight {
                    started,
                    after,
                    changed_since: false,
                },
            );
            let api: Api<Service> = Api::namespaced(controller.client.clone(), &key.namespace);
            let params = controller.patch_params();
            writes.spawn(async move {
                let result = match &status {
                    Some(patch) => api
                        .patch_status(&key.name, &params, &Patch::Strategic(patch))
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                };
                (key, result)
            });
        }
        annotations.start(annotation_lane::width(!queue.is_empty()));
        if touched_pools && pool_report_due.is_none() {
            pool_report_due = Some(tokio::time::Instant::now() + POOL_REPORT_INTERVAL);
        }
        if pool_report_due.is_some_and(|due| due <= tokio::time::Instant::now()) {
            controller.report_pools().await;
            pool_report_due = None;
        }
    }
}

/// How often pool status is written at most.
const POOL_REPORT_INTERVAL: Duration = Duration::from_millis(200);

/// Runs a reflector in the background, turning its events into queue changes.
fn spawn_reflector<K>(
    watches: &mut JoinSet<()>,
    api: Api<K>,
    changes: mpsc::UnboundedSender<Change>,
    // What a watch event means to the reconciler; `None`: nothing.
    mut to_change: impl FnMut(Seen, Option<&K>) -> Option<Change> + Send + 'static,
    // Drops what the controller never reads from each cached object.
    trim: fn(&mut K),
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
    watches.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    warn!(error = %e, "watch error");
                    continue;
                }
            };
            let key = |o: &K| ServiceKey {
                namespace: o.meta().namespace.clone().unwrap_or_default(),
                name: o.meta().name.clone().unwrap_or_default(),
            };
            let change = match &event {
                watcher::Event::Apply(o) => to_change(Seen::Applied(key(o)), Some(o)),
                watcher::Event::Delete(o) => to_change(Seen::Deleted(key(o)), Some(o)),
                watcher::Event::InitDone => to_change(Seen::Relisted, None),
                watcher::Event::InitApply(o) => to_change(Seen::Listed(key(o)), Some(o)),
                watcher::Event::Init => continue,
            };
            let Some(change) = change else {
                continue;
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    });
    reader
}

impl Controller {
    fn patch_params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        }
    }

    /// Loads pools and restores every held address. Nothing is queued here: the initial list
    /// already queued every Service.
    fn start(&mut self) {
        self.load_pools();
        let mut restored = 0;
        for service in self.services.state() {
            if !handled(&service, self.config.lb_class.as_deref()) {
                self.allocator
                    .set_foreign(&key_of(&service), &foreign_ips(&service));
                continue;
            }
            let ips = status_ips(&service);
            if ips.is_empty() {
                continue;
            }
            let key = key_of(&service);
            let Ok((request, _)) =
                ServiceRequest::from_service(&service, self.namespace_labels(&key.namespace))
            else {
                continue;
            };
            let recorded = service.annotations().get(ALLOCATED_FROM_POOL).cloned();
            match self.allocator.restore(&request, &ips, recorded.as_deref()) {
                Ok(assignment) => {
                    restored += 1;
                    // What the Service was told before the restart: no Event again for it.
                    let state = service_condition::current(&service)
                        .filter(|c| c.status == "True")
                        .map(|_| AllocationState::allocated(&assignment));
                    if let Some(state) = state {
                        self.reported.insert(key, state.reported());
                    }
                }
                Err(e) => warn!(service = %key, error = %e, "could not restore its addresses"),
            }
        }
        info!(restored, "restored the addresses Services hold");
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.labels().clone())
            .unwrap_or_default()
    }

    /// Handled Services without an address (in one namespace, or all).
    /// Oldest first, so that when addresses are scarce the Service that waited longest gets
    /// the next one, whatever order the cache lists them in.
    fn waiting_in(&self, namespace: Option<&str>) -> Vec<ServiceKey> {
        let mut waiting: Vec<_> = self
            .services
            .state()
            .iter()
            .filter(|s| handled(s, self.config.lb_class.as_deref()))
            .map(|s| (s.metadata.creation_timestamp.clone(), key_of(s)))
            .filter(|(_, k)| namespace.is_none_or(|n| n == k.namespace))
            .filter(|(_, k)| self.allocator.assignment(k).is_none())
            .collect();
        waiting.sort_by(|(a_time, a_key), (b_time, b_key)| {
            a_time
                .as_ref()
                .map(|t| t.0)
                .cmp(&b_time.as_ref().map(|t| t.0))
                .then_with(|| a_key.cmp(b_key))
        });
        waiting.into_iter().map(|(_, key)| key).collect()
    }

    /// Reads every pool into the allocator; entries that do not parse are left out, each on
    /// its own, and reported.
    fn load_pools(&mut self) {
        let mut pools = Vec::new();
        for resource in self.pools.state() {
            let pool = Pool::from_resource(&resource);
            for entry in &pool.rejected {
                warn!(pool = %pool.name, entry = %entry, "address entry not used");
            }
            pools.push(pool);
        }
        self.allocator.set_pools(pools);
    }

    /// Decides what one Service should hold and show, updating the allocator; returns the
    /// writes that make the Service show it (`None`: nothing to do).
    fn decide(&mut self, key: &ServiceKey) -> Option<ServiceWrite> {
        let reference = ObjectRef::new(&key.name).within(&key.namespace);
        let Some(service) = self.services.get(&reference) else {
            let released = self.allocator.release(key).is_some();
            self.allocator.set_foreign(key, &[]);
            self.reported.remove(key);
            self.warned_annotations.remove(key);
            return released.then(|| ServiceWrite {
                key: key.clone(),
                status: None,
                pool_annotation: None,
                after: AfterWrite {
                    state: None,
                    announce: None,
                    pools_touched: true,
                },
            });
        };
        if !handled(&service, self.config.lb_class.as_deref()) {
            return self.let_go(key, &service);
        }
        let request = ServiceRequest::from_service(&service, self.namespace_labels(&key.namespace));
        // Told even when the request is refused: a misspelt annotation is often why.
        for warning in unknown_annotations(service.annotations()) {
            self.warn_once(key, &service, warning);
        }
        let outcome = match request {
            Ok((request, warnings)) => {
                for warning in warnings {
                    self.warn_once(key, &service, warning);
                }
                self.allocator
                    .allocate(&request)
                    .map_err(|e| (e.reason(), e.to_string()))
            }
            Err(e) => Err(("InvalidRequest", e.to_string())),
        };
        let (state, ips, pool_annotation) = match &outcome {
            Ok(assignment) => (
                AllocationState::allocated(assignment),
                assignment.ips.clone(),
                Some(assignment.origin_pool().map(str::to_string)),
            ),
            Err((reason, message)) => {
                // A refused change leaves what the Service held, if anything, in place.
                let held = self
                    .allocator
                    .assignment(key)
                    .map(|a: &Assignment| a.ips.clone())
                    .unwrap_or_default();
                (
                    AllocationState::refused(reason, message.clone()),
                    held,
                    None,
                )
            }
        };
        let mut status = serde_json::Map::new();
        if status_ips(&service) != ips {
            status.insert("loadBalancer".into(), json!({"ingress": ingress(&ips)}));
        }
        let shown = service_condition::current(&service);
        if !shown.is_some_and(|c| state.is_shown_by(c)) {
            let condition = state.condition(
                service.metadata.generation,
                shown,
                Time(k8s_openapi::jiff::Timestamp::now()),
            );
            status.insert("conditions".into(), json!([condition]));
        }
        let pool_annotation = pool_annotation
            .filter(|pool| service.annotations().get(ALLOCATED_FROM_POOL) != pool.as_ref());
        let announce = (self.reported.get(key) != Some(&state.reported()))
            .then(|| (service.object_ref(&()), state.clone()));
        Some(ServiceWrite {
            key: key.clone(),
            status: (!status.is_empty()).then(|| json!({"status": status})),
            pool_annotation,
            after: AfterWrite {
                state: Some(state),
                announce,
                pools_touched: true,
            },
        })
    }

    /// An Event for an annotation worth a word, once per Service and annotation.
    fn warn_once(&mut self, key: &ServiceKey, service: &Service, warning: RequestWarning) {
        let (name, reason) = match &warning {
            RequestWarning::LegacyAnnotation(name) => (name, "DeprecatedAnnotation"),
            RequestWarning::UnknownAnnotation { name, .. } => (name, "UnknownAnnotation"),
        };
        if !self
            .warned_annotations
            .entry(key.clone())
            .or_default()
            .insert(name.clone())
        {
            return;
        }
        if reason == "UnknownAnnotation" {
            warn!(service = %key, annotation = %name, "{warning}");
        }
        self.events.record(PendingEvent {
            regarding: service.object_ref(&()),
            warning: true,
            reason: reason.into(),
            note: warning.to_string(),
            action: "Allocate".into(),
        });
    }

    /// A Service ferrolb no longer handles (another type or class): its addresses go back, and
    /// ferrolb's traces leave its status.
    fn let_go(&mut self, key: &ServiceKey, service: &Service) -> Option<ServiceWrite> {
        let released = self.allocator.release(key).is_some();
        // What it shows once ferrolb's addresses are out is another implementation's: those
        // addresses are not handed out while it holds them.
        let foreign = if released {
            Vec::new()
        } else {
            foreign_ips(service)
        };
        let foreign_changed = self.allocator.set_foreign(key, &foreign);
        self.addresses_freed |= released || foreign_changed;
        let mut status = serde_json::Map::new();
        // Only addresses ferrolb gave are taken out: another implementation may own the rest.
        if released && !status_ips(service).is_empty() {
            status.insert("loadBalancer".into(), json!({"ingress": []}));
        }
        if service_condition::current(service).is_some() {
            status.insert(
                "conditions".into(),
                json!([{"type": ADDRESS_ALLOCATED, "$patch": "delete"}]),
            );
        }
        if !released && status.is_empty() {
            return foreign_changed.then(|| ServiceWrite {
                key: key.clone(),
                status: None,
                pool_annotation: None,
                after: AfterWrite {
                    state: None,
                    announce: None,
                    pools_touched: true,
                },
            });
        }
        Some(ServiceWrite {
            key: key.clone(),
            status: (!status.is_empty()).then(|| json!({"status": status})),
            pool_annotation: None,
            after: AfterWrite {
                state: None,
                announce: None,
                pools_touched: released,
            },
        })
    }

    /// Records what a Service now shows, and announces transitions.
    fn record(&mut self, key: &ServiceKey, after: AfterWrite) {
        if let Some((regarding, state)) = after.announce {
            let event = state.announcement();
            if state.allocated {
                info!(service = %key, reason = %state.reason, message = %state.message, "allocated");
                if !self.reported.get(key).is_some_and(|s| s.allocated) {
                    self.health.metrics.allocations.inc();
                }
            } else {
                warn!(service = %key, reason = %state.reason, error = %state.message, "allocation failed");
                self.health
                    .metrics
                    .allocation_failures
                    .get_or_create(&ReasonLabels {
                        reason: state.reason.clone(),
                    })
                    .inc();
            }
            self.events.record(PendingEvent {
                regarding,
                warning: event.warning,
                reason: event.reason.into(),
                note: event.note,
                action: "Allocate".into(),
            });
        }
        match after.state {
            Some(state) => {
                self.reported.insert(key.clone(), state.reported());
            }
            None => {
                self.reported.remove(key);
            }
        }
    }

    /// Pool status: counts, and whether the pool is valid, on change only.
    async fn report_pools(&mut self) {
        let parsed: Vec<_> = self
            .pools
            .state()
            .into_iter()
            .map(|resource| {
                let pool = Pool::from_resource(&resource);
                (resource, pool)
            })
            .collect();
        let overlaps = find_overlaps(
            parsed
                .iter()
                .map(|(_, p)| (p.name.as_str(), p.ranges.as_slice())),
        );
        self.health
            .keep_pools(&parsed.iter().map(|(r, _)| r.name_any()).collect());
        self.pool_conditions
            .retain(|name, _| parsed.iter().any(|(r, _)| &r.name_any() == name));
        self.pool_reports
            .retain(|name, _| parsed.iter().any(|(r, _)| &r.name_any() == name));
        let orphaned = self.allocator.orphaned_by_pool();
        let all_stats = self.allocator.all_stats();
        let mut problems = Vec::new();
        for (resource, pool) in &parsed {
            let name = resource.name_any();
            let PoolCondition {
                valid,
                reason,
                message,
            } = pool.condition(&overlaps);
            let valid = if valid { "True" } else { "False" };
            self.tell_pool_condition(resource, reason, &message);
            if valid == "False" {
                problems.push(format!("pool {name}: {message}"));
            }
            let stats = all_stats.get(&name).copied().unwrap_or_default();
            self.health.report_pool(&name, &stats);
            let orphans: Vec<Value> = orphaned
                .get(&name)
                .map(|held| {
                    let mut by_address: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
                    for (ip, service) in held {
                        by_address.entry(*ip).or_default().push(service.to_string());
                    }
                    by_address
                        .into_iter()
                        .map(|(ip, services)| json!({"address": ip.to_string(), "services": services}))
                        .collect()
                })
                .unwrap_or_default();
            let report = format!("{valid}/{reason}/{message}/{stats:?}/{orphans:?}");
            if self.pool_reports.get(&name) == Some(&report) {
                continue;
            }
            let generation = resource.meta().generation;
            let status = json!({"status": {
                "assignedIPv4": stats.assigned_ipv4,
                "assignedIPv6": stats.assigned_ipv6,
                "availableIPv4": stats.available_ipv4,
                "availableIPv6": stats.available_ipv6,
                "orphanedAddresses": if orphans.is_empty() { Value::Null } else { Value::Array(orphans) },
                "conditions": [{
                    "type": "Valid", "status": valid, "reason": reason, "message": message,
                    "observedGeneration": generation,
                    "lastTransitionTime": jiff_now(),
                }]
            }});
            let api: Api<IPAddressPool> =
                Api::namespaced(self.client.clone(), &self.config.namespace);
            match api
                .patch_status(&name, &self.patch_params(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => {
                    self.pool_reports.insert(name, report);
                }
                Err(e) => warn!(pool = %name, error = %e, "could not write pool status"),
            }
        }
        // One problem per pool whose Valid condition is False.
        self.health.metrics.config.set(problems.len());
        self.configuration_state.report(problems);
    }
}

impl Controller {
    /// An Event on the pool, and a log line, when its Valid condition changes: the condition
    /// says what is wrong now, the Events say when it went wrong (`kubectl describe`).
    fn tell_pool_condition(&mut self, resource: &IPAddressPool, reason: &str, message: &str) {
        let name = resource.name_any();
        let current = (reason.to_string(), message.to_string());
        let previous = self.pool_conditions.insert(name.clone(), current.clone());
        if previous.as_ref() == Some(&current) {
            return;
        }
        let first_seen_valid = previous.is_none() && reason == "Valid";
        if first_seen_valid {
            return;
        }
        let warning = reason != "Valid";
        if warning {
            warn!(pool = %name, reason, "{message}");
        } else {
            info!(pool = %name, "pool is valid again");
        }
        self.events.record(PendingEvent {
            regarding: resource.object_ref(&()),
            warning,
            reason: reason.into(),
            note: message.into(),
            action: "Validate".into(),
        });
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(traffic_policy: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u-1",
                "labels": {"app": "web"},
                "annotations": {
                    "metallb.io/address-pool": "first-pool",
                    "metallb.universe.tf/allow-shared-ip": "k",
                    "metallb.io/loadBalancerIP": "typo kept, so that it is warned about",
                    "prometheus.io/scrape": "true",
                },
                "finalizers": ["example.com/x"],
            },
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": traffic_policy,
                     "selector": {"app": "web"}, "clusterIP": "10.0.0.1",
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn the_cache_keeps_what_allocation_reads() {
        let mut local = service("Local");
        trim_service(&mut local);
        let annotations = local.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            [
                "metallb.io/address-pool",
                "metallb.io/loadBalancerIP",
                "metallb.universe.tf/allow-shared-ip"
            ]
        );
        assert_eq!(local.labels().get("app").map(String::as_str), Some("web"));
        assert_eq!(local.metadata.uid.as_deref(), Some("u-1"));
        let spec = local.spec.clone().unwrap_or_default();
        assert!(spec.selector.is_some(), "Local Services share by selector");
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(local.metadata.finalizers, None);

        let mut cluster = service("Cluster");
        cluster.metadata.annotations = Some(
            [("kubectl.example/other".to_string(), String::new())]
                .into_iter()
                .collect(),
        );
        trim_service(&mut cluster);
        assert_eq!(cluster.metadata.annotations, None);
        assert_eq!(cluster.spec.unwrap_or_default().selector, None);
    }
}
