//! The controller's I/O: watches Services, IPAddressPools and Namespaces, feeds the allocator,
//! and writes the outcome back (Service status and annotation, pool status, Events).
//!
//! Order matters and is explicit: every watch lists first, then every address Services already
//! hold (their status) is restored into the allocator, and only then is anything allocated.
//! Changes then go through one queue: a Service change is reconciled alone, a pool change
//! re-reconciles only the Services still waiting for an address.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use ferrolb_crds::IPAddressPool;
use ferrolb_crds::pool_address::find_overlaps;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::allocator::{Allocator, Assignment};
use crate::health::{Health, PoolLabels, ReasonLabels};
use crate::pool::Pool;
use crate::service_request::{ALLOCATED_FROM_POOL, RequestWarning, ServiceKey, ServiceRequest};

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
    /// A complete list replaced the store (`InitDone`). Objects of a list are not in the store
    /// before that, so they are not reported one by one.
    Relisted,
}

/// What a Service was last told, so that Events are sent on transitions only.
#[derive(Debug, Clone, PartialEq)]
enum Reported {
    Allocated(Vec<IpAddr>),
    Failed(String),
}

struct Controller {
    health: std::sync::Arc<Health>,
    client: Client,
    config: Config,
    allocator: Allocator,
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
    recorder: Recorder,
    reported: HashMap<ServiceKey, Reported>,
    warned_legacy: BTreeSet<(ServiceKey, String)>,
    pool_reports: HashMap<String, String>,
}

fn key_of(service: &Service) -> ServiceKey {
    ServiceKey {
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
    }
}

/// Whether ferrolb handles this Service: type LoadBalancer, and our class (or none).
pub fn handled(service: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == lb_class
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

/// Runs the controller until its watches end.
pub async fn run(
    client: Client,
    config: Config,
    health: std::sync::Arc<Health>,
) -> anyhow::Result<()> {
    let (changes_tx, mut changes) = mpsc::unbounded_channel::<Change>();
    let services = spawn_reflector::<Service>(
        Api::all(client.clone()),
        changes_tx.clone(),
        |seen| match seen {
            Seen::Applied(key) => Change::Service(key),
            Seen::Deleted(key) => Change::ServiceGone(key),
            Seen::Relisted => Change::ServicesRelisted,
        },
    );
    let pools = spawn_reflector::<IPAddressPool>(
        Api::namespaced(client.clone(), &config.namespace),
        changes_tx.clone(),
        |_| Change::Pools,
    );
    let namespaces = spawn_reflector::<Namespace>(
        Api::all(client.clone()),
        changes_tx.clone(),
        |seen| match seen {
            Seen::Applied(key) | Seen::Deleted(key) => Change::Namespace(key.name),
            // Any namespace may have new labels: Services waiting anywhere are looked at again.
            Seen::Relisted => Change::Pools,
        },
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
    let mut controller = Controller {
        health: health.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        allocator: Allocator::new(),
        services,
        pools,
        namespaces,
        reported: HashMap::new(),
        warned_legacy: BTreeSet::new(),
        pool_reports: HashMap::new(),
    };
    controller.start().await;
    health.set_ready();
    let mut queue: VecDeque<ServiceKey> = VecDeque::new();
    let mut queued: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut retry: BTreeMap<ServiceKey, u32> = BTreeMap::new();
    // Pool status is written at most every POOL_REPORT_INTERVAL: counts change with every
    // Service, and recounting after each one would cost O(Services) per Service.
    let mut pool_report_due: Option<tokio::time::Instant> = None;
    loop {
        // Take every change that is waiting, then work through the queue.
        let mut pools_changed = false;
        let first = if queue.is_empty() {
            let received = match pool_report_due {
                Some(due) => match tokio::time::timeout_at(due, changes.recv()).await {
                    Ok(received) => received.map(Some),
                    Err(_) => Some(None),
                },
                None => changes.recv().await.map(Some),
            };
            match received {
                Some(change) => change,
                None => return Ok(()),
            }
        } else {
            None
        };
        let mut batch: Vec<Change> = first.into_iter().collect();
        while let Ok(change) = changes.try_recv() {
            batch.push(change);
        }
        for change in batch {
            match change {
                Change::Service(key) => {
                    if queued.insert(key.clone()) {
                        queue.push_back(key);
                    }
                }
                Change::ServiceGone(key) => {
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
                        if queued.insert(key.clone()) {
                            queue.push_back(key);
                        }
                    }
                }
                Change::Pools => pools_changed = true,
                Change::Namespace(namespace) => {
                    for key in controller.waiting_in(Some(&namespace)) {
                        if queued.insert(key.clone()) {
                            queue.push_back(key);
                        }
                    }
                }
            }
        }
        if pools_changed {
            controller.load_pools().await;
            for key in controller.waiting_in(None) {
                if queued.insert(key.clone()) {
                    queue.push_back(key);
                }
            }
        }
        let mut touched_pools = pools_changed;
        while let Some(key) = queue.pop_front() {
            queued.remove(&key);
            let started = std::time::Instant::now();
            let result = controller.reconcile(&key).await;
            health
                .metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(changed) => {
                    touched_pools |= changed;
                    retry.remove(&key);
                }
                Err(e) => {
                    let attempt = retry.entry(key.clone()).or_insert(0);
                    *attempt += 1;
                    warn!(service = %key, error = %e, attempt = *attempt, "reconcile failed, will retry");
                    let delay = Duration::from_millis(100 * 2u64.pow((*attempt).min(6)));
                    let tx = changes_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Change::Service(key));
                    });
                }
            }
        }
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
    api: Api<K>,
    changes: mpsc::UnboundedSender<Change>,
    to_change: impl Fn(Seen) -> Change + Send + 'static,
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
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
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
            let seen = match &event {
                watcher::Event::Apply(o) => Seen::Applied(key(o)),
                watcher::Event::Delete(o) => Seen::Deleted(key(o)),
                watcher::Event::InitDone => Seen::Relisted,
                watcher::Event::Init | watcher::Event::InitApply(_) => continue,
            };
            if changes.send(to_change(seen)).is_err() {
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

    /// Loads pools, restores every held address, then queues nothing: the initial list events
    /// already queued every Service.
    async fn start(&mut self) {
        self.load_pools().await;
        let mut restored = 0;
        for service in self.services.state() {
            if !handled(&service, self.config.lb_class.as_deref()) {
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
                Ok(_) => {
                    restored += 1;
                    self.reported.insert(key, Reported::Allocated(ips));
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
    fn waiting_in(&self, namespace: Option<&str>) -> Vec<ServiceKey> {
        self.services
            .state()
            .iter()
            .filter(|s| handled(s, self.config.lb_class.as_deref()))
            .map(|s| key_of(s))
            .filter(|k| namespace.is_none_or(|n| n == k.namespace))
            .filter(|k| self.allocator.assignment(k).is_none())
            .collect()
    }

    /// Reads every pool; valid ones go to the allocator, invalid ones are reported.
    async fn load_pools(&mut self) {
        let mut valid = Vec::new();
        for resource in self.pools.state() {
            match Pool::from_resource(&resource) {
                Ok(pool) => valid.push(pool),
                Err(e) => warn!(pool = %resource.name_any(), error = %e, "invalid pool, not used"),
            }
        }
        self.allocator.set_pools(valid);
    }

    /// Brings one Service in line; true when pool counts may have changed.
    async fn reconcile(&mut self, key: &ServiceKey) -> Result<bool, kube::Error> {
        let reference = ObjectRef::new(&key.name).within(&key.namespace);
        let Some(service) = self.services.get(&reference).map(|s| (*s).clone()) else {
            return Ok(self.allocator.release(key).is_some());
        };
        if !handled(&service, self.config.lb_class.as_deref()) {
            let released = self.allocator.release(key).is_some();
            if released {
                self.reported.remove(key);
                // The addresses are no longer ours to announce: take them out of status.
                if !status_ips(&service).is_empty() {
                    self.write_ingress(&service, &[]).await?;
                }
            }
            return Ok(released);
        }
        let request = ServiceRequest::from_service(&service, self.namespace_labels(&key.namespace));
        let outcome = match request {
            Ok((request, warnings)) => {
                for RequestWarning::LegacyAnnotation(name) in warnings {
                    if self.warned_legacy.insert((key.clone(), name.clone())) {
                        let note =
                            format!("annotation {name} is deprecated; use the metallb.io/ prefix");
                        self.event(&service, EventType::Warning, "DeprecatedAnnotation", note)
                            .await;
                    }
                }
                self.allocator
                    .allocate(&request)
                    .map_err(|e| (e.reason(), e.to_string()))
            }
            Err(e) => Err(("InvalidRequest", e.to_string())),
        };
        match outcome {
            Ok(assignment) => {
                self.apply_assignment(&service, &assignment).await?;
                Ok(true)
            }
            Err((reason, message)) => {
                if self.allocator.assignment(key).is_none() && !status_ips(&service).is_empty() {
                    self.write_ingress(&service, &[]).await?;
                }
                if self.reported.get(key) != Some(&Reported::Failed(message.clone())) {
                    warn!(service = %key, reason, error = %message, "allocation failed");
                    self.health
                        .metrics
                        .allocation_failures
                        .get_or_create(&ReasonLabels {
                            reason: reason.into(),
                        })
                        .inc();
                    self.event(
                        &service,
                        EventType::Warning,
                        "AllocationFailed",
                        message.clone(),
                    )
                    .await;
                    self.reported.insert(key.clone(), Reported::Failed(message));
                }
                Ok(true)
            }
        }
    }

    async fn apply_assignment(
        &mut self,
        service: &Service,
        assignment: &Assignment,
    ) -> Result<(), kube::Error> {
        let key = key_of(service);
        // Status and annotation are independent writes: send them together.
        let status = async {
            if status_ips(service) != assignment.ips {
                self.write_ingress(service, &assignment.ips).await?;
            }
            Ok::<(), kube::Error>(())
        };
        let annotation = async {
            let recorded = service.annotations().get(ALLOCATED_FROM_POOL).cloned();
            if recorded != assignment.pool {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
                let patch =
                    json!({"metadata": {"annotations": {ALLOCATED_FROM_POOL: assignment.pool}}});
                api.patch(&key.name, &self.patch_params(), &Patch::Merge(&patch))
                    .await?;
            }
            Ok::<(), kube::Error>(())
        };
        let (status, annotation) = tokio::join!(status, annotation);
        status?;
        annotation?;
        if self.reported.get(&key) != Some(&Reported::Allocated(assignment.ips.clone())) {
            let ips: Vec<String> = assignment.ips.iter().map(ToString::to_string).collect();
            info!(service = %key, ips = ?ips, pool = ?assignment.pool, "allocated");
            self.health.metrics.allocations.inc();
            let note = format!("Assigned IP [{}]", ips.join(", "));
            self.event(service, EventType::Normal, "IPAllocated", note)
                .await;
            self.reported
                .insert(key, Reported::Allocated(assignment.ips.clone()));
        }
        Ok(())
    }

    async fn write_ingress(&self, service: &Service, ips: &[IpAddr]) -> Result<(), kube::Error> {
        let key = key_of(service);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let ingress: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(&key.name, &self.patch_params(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Records an Event in the background: an Event that cannot be written is logged, and must
    /// not hold up the addresses of the next Services.
    async fn event(&self, service: &Service, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Allocate".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let reference = service.object_ref(&());
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, reason, "could not record an Event");
            }
        });
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
                .filter_map(|(_, pool)| pool.as_ref().ok())
                .map(|p| (p.name.as_str(), p.ranges.as_slice())),
        );
        let orphaned = self.allocator.orphaned();
        let all_stats = self.allocator.all_stats();
        for (resource, pool) in &parsed {
            let name = resource.name_any();
            let (valid, reason, message) = match pool {
                Err(e) => ("False", "InvalidAddresses", e.to_string()),
                Ok(_) => {
                    let mine: Vec<String> = overlaps
                        .iter()
                        .filter(|o| o.first_pool == name || o.second_pool == name)
                        .map(|o| {
                            format!(
                                "{} overlaps {} on {}",
                                o.first_pool, o.second_pool, o.shared
                            )
                        })
                        .collect();
                    if mine.is_empty() {
                        (
                            "True",
                            "Valid",
                            "addresses parse and overlap no other pool".to_string(),
                        )
                    } else {
                        ("True", "Overlapping", mine.join("; "))
                    }
                }
            };
            let stats = all_stats.get(&name).copied().unwrap_or_default();
            for (family, assigned, available) in [
                ("IPv4", stats.assigned_ipv4, stats.available_ipv4),
                ("IPv6", stats.assigned_ipv6, stats.available_ipv6),
            ] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.into(),
                };
                self.health
                    .metrics
                    .addresses_in_use
                    .get_or_create(&labels)
                    .set(assigned);
                self.health
                    .metrics
                    .addresses_total
                    .get_or_create(&labels)
                    .set(assigned.saturating_add(available));
            }
            let report = format!("{valid}/{reason}/{message}/{stats:?}/{}", orphaned.len());
            if self.pool_reports.get(&name) == Some(&report) {
                continue;
            }
            let generation = resource.meta().generation;
            let status = json!({"status": {
                "assignedIPv4": stats.assigned_ipv4,
                "assignedIPv6": stats.assigned_ipv6,
                "availableIPv4": stats.available_ipv4,
                "availableIPv6": stats.available_ipv6,
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
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
