//! The randomised fault run: the whole of ferrolb (two controller replicas electing a leader,
//! three speakers, the emulated API server) on the lab's namespaces, driven by a seeded random
//! sequence of user changes interleaved with faults, with ferrolb's invariants checked all
//! along and once everything has settled.
//!
//! - Changes: Services created, updated (sharing key, traffic policy, requested address) and
//!   deleted (IPv4, IPv6, dual-stack), endpoints moved, nodes labelled out of load balancing,
//!   a pool shrunk and grown, a second pool added and removed, an advertisement's node
//!   selector changed.
//! - Faults: controller replicas killed (SIGKILL) or stopped (SIGTERM) and started again,
//!   speakers likewise, node links cut, gossip cut (both ways, in, out), the API server's
//!   watches dropped, bursts of 500 and 429 answers, the API server paused.
//! - Invariants, throughout: no address on two Services that do not share it; no Service's
//!   addresses change unless its own spec was changed; every address is inside a pool or
//!   reported orphaned by the pool that gave it; no component exits or panics.
//! - Invariants, after settling: every announced address has exactly one ARP/NDP answerer, a
//!   node that may announce it; its Services' ServiceL2Status and newest nodeAssigned Event
//!   name that node; unannounced addresses have no answerer.
//!
//! `FERROLB_FAULT_SEED` replays a run (the seed is printed at the start; the same operations
//! and faults in the same order, though their timing against the components' may differ);
//! `FERROLB_FAULT_SECONDS` sets how long the random phase lasts (60 s by default; the long
//! run in docs/reliability.md uses 1,200).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ferrolb_crds::pool_address::parse_pool_address;
use ferrolb_crds::{IPAddressPool, L2Advertisement, ServiceL2Status};
use ferrolb_speaker::announce_policy::plan;
use ferrolb_speaker::runtime::{node_info, pool_info, service_info, slices_by_service};
use k8s_openapi::api::core::v1::{Event, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const FIRST_POOL: &str = "192.168.117.100-192.168.117.110";
const FIRST_POOL_SHRUNK: &str = "192.168.117.100-192.168.117.105";
const EXTRA_POOL: &str = "198.51.100.0/28";
const GOSSIP_PORT: u16 = 7947;
const MAX_SERVICES: usize = 8;

/// Something to do later: end a fault, start a component again.
#[derive(Debug, Clone)]
enum Later {
    RestartSpeaker(&'static str),
    RestartController(usize),
    LinkUp(&'static str),
    GossipHeal(&'static str),
    Resume,
}

/// What the run knows of each Service it made.
#[derive(Debug)]
struct Model {
    /// The run changed the Service since its addresses were last recorded.
    changed: bool,
    /// The resourceVersion the run's last write gave the Service, and when: addresses are
    /// only recorded from a version the controller wrote after it, and not in the first
    /// seconds (a write decided on a cache that had not seen the change yet may land then).
    own_write: (u64, Instant),
    /// The addresses last recorded.
    seen: Option<Vec<IpAddr>>,
}

impl Model {
    fn new(version: u64) -> Self {
        Model {
            changed: true,
            own_write: (version, Instant::now()),
            seen: None,
        }
    }

    fn changed_by_the_run(&mut self, version: u64) {
        self.changed = true;
        self.own_write = (version, Instant::now());
    }
}

/// How long after its own change the run waits before it reads a Service's addresses as the
/// controller's answer to that change.
const REACTION_TIME: Duration = Duration::from_secs(2);
/// Longer than a controller replica takes to come back and act (restarts are 0.2-3 s apart).
const QUIET_ANSWER: Duration = Duration::from_secs(10);

struct Run {
    lab: Lab,
    rng: StdRng,
    controllers: Vec<Option<Controller>>,
    later: Vec<(Instant, Later)>,
    speakers_down: BTreeSet<&'static str>,
    links_down: BTreeSet<&'static str>,
    gossip_cut: BTreeSet<&'static str>,
    paused: bool,
    models: BTreeMap<String, Model>,
    next_service: usize,
    extra_pool: bool,
    shrunk: bool,
    counts: BTreeMap<&'static str, u64>,
    violations: Vec<String>,
    /// Held addresses outside every pool and not reported orphaned, since when.
    outside_since: BTreeMap<IpAddr, Instant>,
    /// The logs of controller replicas stopped so far, printed if the run fails.
    retired_logs: Vec<String>,
}

fn retry<T, E: std::fmt::Display>(what: &str, mut f: impl FnMut() -> Result<T, E>) -> T {
    // The API server may be failing requests on purpose: a bounded retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Run {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn controller_kubeconfig(&self) -> std::path::PathBuf {
        self.lab.dir.path().join("controller")
    }

    fn services_api(&self) -> Api<Service> {
        Api::namespaced(self.lab.admin.clone(), "default")
    }

    /// Server-side applies `object`; returns the resourceVersion it got.
    fn apply(&self, object: Value) -> u64 {
        let api: Api<kube::api::DynamicObject> = {
            let api_version = object["apiVersion"].as_str().unwrap();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk =
                kube::core::GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
            let plural = match gvk.kind.as_str() {
                "IPAddressPool" => "ipaddresspools",
                "L2Advertisement" => "l2advertisements",
                "EndpointSlice" => "endpointslices",
                "Service" => "services",
                other => panic!("{other}"),
            };
            let resource = kube::discovery::ApiResource::from_gvk_with_plural(&gvk, plural);
            let namespace = object["metadata"]["namespace"].as_str().unwrap();
            Api::namespaced_with(self.lab.admin.clone(), namespace, &resource)
        };
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let params = PatchParams::apply("fault-run").force();
        let written = retry("apply", || {
            self.lab
                .block_on(api.patch(&name, &params, &Patch::Apply(&object)))
        });
        resource_version(&written.metadata)
    }

    fn run_due(&mut self, all: bool) {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.later)
            .into_iter()
            .partition(|(at, _)| all || *at <= now);
        self.later = rest;
        for (_, action) in due {
            match action {
                Later::RestartSpeaker(node) => {
                    self.lab.start_speaker(node);
                    self.speakers_down.remove(node);
                }
                Later::RestartController(i) => {
                    let kubeconfig = self.controller_kubeconfig();
                    self.controllers[i] =
                        Some(Controller::start(&kubeconfig, &format!("controller-{i}")));
                }
                Later::LinkUp(node) => {
                    let netns = self.lab.segment.host(node).unwrap();
                    netns.ip(&["link", "set", "eth0", "up"]).unwrap();
                    self.links_down.remove(node);
                }
                Later::GossipHeal(node) => {
                    let netns = self.lab.segment.host(node).unwrap();
                    let _ = netns
                        .command("nft")
                        .args(["delete", "table", "inet", "ferrolb_fault"])
                        .status();
                    self.gossip_cut.remove(node);
                }
                Later::Resume => {
                    self.emulator().faults().resume();
                    self.paused = false;
                }
            }
        }
    }

    fn emulator(&self) -> &ferrolb_lab::apiserver::ApiServer {
        self.lab.server.as_ref().unwrap().server()
    }

    fn after(&mut self, millis: std::ops::Range<u64>, action: Later) {
        let delay = Duration::from_millis(self.rng.random_range(millis));
        self.later.push((Instant::now() + delay, action));
    }

    fn pick_node(&mut self) -> &'static str {
        NODES[self.rng.random_range(0..NODES.len())]
    }

    fn endpoints(&mut self) -> Vec<Value> {
        let nodes: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|_| self.rng.random_bool(0.6))
            .collect();
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"addresses": [format!("10.244.{i}.20")], "nodeName": n,
                       "conditions": {"ready": true, "serving": true}})
            })
            .collect()
    }

    fn service_object(&mut self, name: &str, family: u8) -> Value {
        let (families, policy) = match family {
            0 => (vec!["IPv4"], "SingleStack"),
            1 => (vec!["IPv6"], "SingleStack"),
            _ => (vec!["IPv4", "IPv6"], "PreferDualStack"),
        };
        let mut annotations = serde_json::Map::new();
        if self.rng.random_bool(0.3) {
            annotations.insert(
                "metallb.io/allow-shared-ip".into(),
                json!(["k1", "k2"][self.rng.random_range(0..2)]),
            );
        }
        if self.rng.random_bool(0.3) {
            let wanted = match family {
                1 => format!("2001:db8::{:x}", 0x100 + self.rng.random_range(0..8)),
                _ => format!("192.168.117.{}", 100 + self.rng.random_range(0..11)),
            };
            annotations.insert("metallb.io/loadBalancerIPs".into(), json!(wanted));
        }
        let traffic = if self.rng.random_bool(0.3) {
            "Local"
        } else {
            "Cluster"
        };
        let mut metadata = json!({"name": name, "namespace": "default"});
        // Only when there are some: applying an empty map and keys later is a case the
        // emulated API server gets wrong (see docs/reliability.md).
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": metadata,
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ipFamilies": families, "ipFamilyPolicy": policy,
                     "externalTrafficPolicy": traffic,
                     "ports": [{"port": 80, "protocol": "TCP"}]}})
    }

    fn slice_object(&mut self, name: &str) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": self.endpoints(),
            "ports": [{"port": 80, "protocol": "TCP"}]})
    }

    /// One random step: a change or a fault.
    fn step(&mut self) {
        let choice = self.rng.random_range(0..100u32);
        match choice {
            0..=14 => self.create_service(),
            15..=27 => self.update_service(),
            28..=33 => self.delete_service(),
            34..=40 => self.move_endpoints(),
            41..=44 => self.toggle_exclusion(),
            45..=48 => self.toggle_extra_pool(),
            49..=52 => self.toggle_shrink(),
            53..=55 => self.toggle_advertisement_selector(),
            56..=62 => self.stop_controller(),
            63..=70 => self.stop_speaker(),
            71..=76 => self.cut_link(),
            77..=83 => self.cut_gossip(),
            84..=88 => {
                self.emulator().faults().drop_watches();
                self.count("watches dropped");
            }
            89..=94 => {
                let code = if self.rng.random_bool(0.5) { 500 } else { 429 };
                let count = self.rng.random_range(3..30);
                self.emulator().faults().fail_next(count, code);
                self.count("error bursts");
            }
            _ => {
                if !self.paused {
                    self.emulator().faults().pause();
                    self.paused = true;
                    self.after(100..800, Later::Resume);
                    self.count("API pauses");
                }
            }
        }
    }

    fn create_service(&mut self) {
        if self.models.len() >= MAX_SERVICES {
            return self.delete_service();
        }
        let name = format!("svc-{}", self.next_service);
        self.next_service += 1;
        let family = self.rng.random_range(0..3u8);
        let service = self.service_object(&name, family);
        let slice = self.slice_object(&name);
        self.apply(slice);
        let version = self.apply(service);
        self.models.insert(name, Model::new(version));
        self.count("services created");
    }

    fn existing_service(&mut self) -> Option<String> {
        if self.models.is_empty() {
            return None;
        }
        let index = self.rng.random_range(0..self.models.len());
        self.models.keys().nth(index).cloned()
    }

    fn update_service(&mut self) {
        let Some(name) = self.existing_service() else {
            return self.create_service();
        };
        let current = retry("read service", || {
            self.lab.block_on(self.services_api().get(&name))
        });
        let families = current
            .spec
            .as_ref()
            .and_then(|s| s.ip_families.clone())
            .unwrap_or_default();
        let family = match (families.len(), families.first().map(String::as_str)) {
            (2, _) => 2,
            (_, Some("IPv6")) => 1,
            _ => 0,
        };
        // A fresh random request for the same family: sharing key, traffic policy and
        // requested address may all change.
        let service = self.service_object(&name, family);
        let version = self.apply(service);
        if let Some(model) = self.models.get_mut(&name) {
            model.changed_by_the_run(version);
        }
        self.count("services updated");
    }

    fn delete_service(&mut self) {
        let Some(name) = self.existing_service() else {
            return;
        };
        self.models.remove(&name);
        let slices: Api<EndpointSlice> = Api::namespaced(self.lab.admin.clone(), "default");
        retry("delete service", || {
            match self
                .lab
                .block_on(self.services_api().delete(&name, &DeleteParams::default()))
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        });
        let _ = self
            .lab
            .block_on(slices.delete(&format!("{name}-1"), &DeleteParams::default()));
        self.count("services deleted");
    }

    fn move_endpoints(&mut self) {
        let Some(name) = self.existing_service() else {
            return;
        };
        let slice = self.slice_object(&name);
        self.apply(slice);
        self.count("endpoints moved");
    }

    fn toggle_exclusion(&mut self) {
        let node = self.pick_node();
        let nodes: Api<Node> = Api::all(self.lab.admin.clone());
        let current = retry("read node", || self.lab.block_on(nodes.get(node)));
        let excluded = current
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ferrolb_speaker::announce_policy::EXCLUDE_LABEL));
        let value = if excluded { Value::Null } else { json!("") };
        let patch = json!({"metadata": {"labels": {ferrolb_speaker::announce_policy::EXCLUDE_LABEL: value}}});
        retry("label node", || {
            self.lab
                .block_on(nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)))
        });
        self.count("node exclusions toggled");
    }

    fn toggle_extra_pool(&mut self) {
        let pools: Api<IPAddressPool> = Api::namespaced(self.lab.admin.clone(), "metallb-system");
        if self.extra_pool {
            // Removed only while no Service holds one of its addresses: a pool deleted with
            // addresses in use leaves them with no pool to be reported by.
            let extra = parse_pool_address(EXTRA_POOL).unwrap();
            let in_use = self
                .read_services()
                .iter()
                .flat_map(addresses_of)
                .any(|ip| extra.contains(ip));
            if in_use {
                return;
            }
            retry("delete pool", || {
                match self
                    .lab
                    .block_on(pools.delete("extra", &DeleteParams::default()))
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            });
        } else {
            self.apply(
                json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "extra", "namespace": "metallb-system"},
                "spec": {"addresses": [EXTRA_POOL]}}),
            );
        }
        self.extra_pool = !self.extra_pool;
        self.count("extra pool toggled");
    }

    fn toggle_shrink(&mut self) {
        self.shrunk = !self.shrunk;
        let range = if self.shrunk {
            FIRST_POOL_SHRUNK
        } else {
            FIRST_POOL
        };
        self.apply(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "first-pool", "namespace": "metallb-system"},
            "spec": {"addresses": [range]}}),
        );
        self.count("first pool shrunk or grown");
    }

    fn toggle_advertisement_selector(&mut self) {
        let node = self.pick_node();
        let selectors = if self.rng.random_bool(0.5) {
            json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node]}]}])
        } else {
            json!([])
        };
        self.apply(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "v6", "namespace": "metallb-system"},
            "spec": {"ipAddressPools": ["v6-pool"], "nodeSelectors": selectors}}),
        );
        self.count("advertisement selector changed");
    }

    fn stop_controller(&mut self) {
        let i = self.rng.random_range(0..self.controllers.len());
        let graceful = self.rng.random_bool(0.5);
        let Some(mut controller) = self.controllers[i].take() else {
            return;
        };
        controller.stop(graceful);
        let log = controller.log.lock().unwrap().clone();
        self.check_log(&log, &format!("controller-{i}"));
        self.retired_logs.extend(log);
        self.count(if graceful {
            "controller SIGTERMs"
        } else {
            "controller SIGKILLs"
        });
        self.after(200..3000, Later::RestartController(i));
    }

    fn stop_speaker(&mut self) {
        let node = self.pick_node();
        if !self.speakers_down.is_empty() {
            return;
        }
        let log = if self.rng.random_bool(0.5) {
            self.count("speaker SIGTERMs");
            self.lab.terminate(node)
        } else {
            self.count("speaker SIGKILLs");
            let log = self.lab.speaker_log(node);
            self.lab.kill(node);
            log
        };
        self.check_log(&log, node);
        self.speakers_down.insert(node);
        self.after(200..5000, Later::RestartSpeaker(node));
    }

    fn cut_link(&mut self) {
        let node = self.pick_node();
        if !self.links_down.insert(node) {
            return;
        }
        let netns = self.lab.segment.host(node).unwrap();
        netns.ip(&["link", "set", "eth0", "down"]).unwrap();
        self.after(500..4000, Later::LinkUp(node));
        self.count("link cuts");
    }

    fn cut_gossip(&mut self) {
        let node = self.pick_node();
        if !self.gossip_cut.insert(node) {
            return;
        }
        let rule = |hook: &str| {
            format!(
                "chain {hook} {{ type filter hook {hook} priority 0; udp dport {GOSSIP_PORT} drop; udp sport {GOSSIP_PORT} drop; }}\n"
            )
        };
        let rules = match self.rng.random_range(0..3) {
            0 => rule("input") + &rule("output"),
            1 => rule("input"),
            _ => rule("output"),
        };
        nft_apply(
            self.lab.segment.host(node).unwrap(),
            "ferrolb_fault",
            &rules,
        );
        self.after(1000..6000, Later::GossipHeal(node));
        self.count("gossip cuts");
    }

    fn check_log(&mut self, log: &[String], who: &str) {
        if let Some(line) = log.iter().find(|l| l.contains("panicked")) {
            self.violations.push(format!("{who} panicked: {line}"));
        }
    }

    fn read_services(&self) -> Vec<Service> {
        retry("list services", || {
            self.lab
                .block_on(self.services_api().list(&Default::default()))
        })
        .items
    }

    /// The invariants that hold at every moment.
    fn check_always(&mut self) {
        if self.paused {
            return;
        }
        let services = self.read_services();
        // No address on two Services that do not share it.
        let mut holders: BTreeMap<IpAddr, Vec<(String, Option<String>)>> = BTreeMap::new();
        for service in &services {
            let key = service
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("metallb.io/allow-shared-ip"))
                .cloned();
            for ip in addresses_of(service) {
                holders.entry(ip).or_default().push((
                    service.metadata.name.clone().unwrap_or_default(),
                    key.clone(),
                ));
            }
        }
        for (ip, holders) in &holders {
            let keys: BTreeSet<&Option<String>> = holders.iter().map(|(_, k)| k).collect();
            if holders.len() > 1 && (keys.len() > 1 || keys.contains(&None)) {
                self.violations.push(format!(
                    "{ip} held by Services that do not share it: {holders:?}"
                ));
            }
        }
        // No Service's addresses change unless its own spec was changed.
        for service in &services {
            let name = service.metadata.name.clone().unwrap_or_default();
            let Some(model) = self.models.get_mut(&name) else {
                continue;
            };
            let (own_version, own_at) = model.own_write;
            // The controller answers a change by writing the Service, unless the change asks
            // for nothing new: after QUIET_ANSWER without a write, that is its answer.
            let answered = resource_version(&service.metadata) > own_version
                || own_at.elapsed() >= QUIET_ANSWER;
            if !answered || own_at.elapsed() < REACTION_TIME {
                continue;
            }
            let now = addresses_of(service);
            if !model.changed
                && let Some(before) = &model.seen
                && !before.is_empty()
                && *before != now
            {
                self.violations.push(format!(
                    "{name}'s addresses changed from {before:?} to {now:?} without a change of its own"
                ));
            }
            model.changed = false;
            model.seen = Some(now);
        }
        // Every address inside a pool, or reported orphaned by one.
        let pools: Api<IPAddressPool> = Api::namespaced(self.lab.admin.clone(), "metallb-system");
        let pools = retry("list pools", || {
            self.lab.block_on(pools.list(&Default::default()))
        })
        .items;
        let ranges: Vec<_> = pools
            .iter()
            .flat_map(|p| p.spec.addresses.iter())
            .filter_map(|a| parse_pool_address(a).ok())
            .collect();
        let orphaned: BTreeSet<String> = pools
            .iter()
            .filter_map(|p| p.status.as_ref()?.orphaned_addresses.clone())
            .flatten()
            .map(|o| o.address)
            .collect();
        // The controller reports an orphan once it has seen the pool change (and a replica is
        // acting): an address counts when it stays unreported for QUIET_ANSWER.
        let mut outside = BTreeMap::new();
        for (ip, holders) in &holders {
            if ranges.iter().any(|r| r.contains(*ip)) || orphaned.contains(&ip.to_string()) {
                continue;
            }
            let since = self
                .outside_since
                .get(ip)
                .copied()
                .unwrap_or_else(Instant::now);
            outside.insert(*ip, since);
            if since.elapsed() >= QUIET_ANSWER {
                self.violations.push(format!(
                    "{ip} (held by {holders:?}) is in no pool and no pool reports it orphaned"
                ));
            }
        }
        self.outside_since = outside;
        // No component exited.
        for (i, controller) in self.controllers.iter_mut().enumerate() {
            if let Some(controller) = controller
                && let Ok(Some(status)) = controller.child.try_wait()
            {
                let last = controller.log.lock().unwrap().last().cloned();
                self.violations.push(format!(
                    "controller-{i} exited by itself: {status}; its log ends: {}",
                    last.unwrap_or_default()
                ));
            }
        }
        for node in NODES {
            if self.speakers_down.contains(node) {
                continue;
            }
            let exited = self.lab.speakers[NODES.iter().position(|n| *n == node).unwrap()]
                .as_mut()
                .map(|s| s.child.try_wait().ok().flatten());
            if let Some(Some(status)) = exited {
                // Its last words say why (the process is gone, its log stays with the lab).
                let last = self
                    .lab
                    .speaker_log(node)
                    .last()
                    .cloned()
                    .unwrap_or_default();
                self.violations.push(format!(
                    "the speaker of {node} exited by itself: {status}; its log ends: {last}"
                ));
            }
        }
    }
}

fn resource_version(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn addresses_of(service: &Service) -> Vec<IpAddr> {
    service_info(service, &[]).ips
}

/// The MACs that answer for `ip` from the client, over two requests.
fn answerers(lab: &Lab, ip: IpAddr) -> BTreeSet<String> {
    let out = if ip.is_ipv4() {
        lab.client()
            .command("arping")
            .args(["-c", "2", "-w", "2", "-I", "eth0", &ip.to_string()])
            .output()
            .unwrap()
    } else {
        lab.client()
            .command("ndisc6")
            .args(["-m", "-r", "2", "-w", "400", &ip.to_string(), "eth0"])
            .output()
            .unwrap()
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if ip.is_ipv4() {
        text.lines()
            .filter(|l| l.contains("reply from"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
            .map(str::to_lowercase)
            .collect()
    } else {
        text.lines()
            .filter(|l| l.contains("Target link-layer address"))
            .filter_map(|l| l.split_whitespace().last())
            .map(str::to_lowercase)
            .collect()
    }
}

/// The node the newest nodeAssigned Event of each Service names.
fn newest_assignments(lab: &Lab) -> BTreeMap<String, String> {
    let events: Api<Event> = Api::namespaced(lab.admin.clone(), "default");
    let mut newest: BTreeMap<String, (jiff::Timestamp, String)> = BTreeMap::new();
    for event in lab
        .block_on(events.list(&Default::default()))
        .unwrap()
        .items
    {
        if event.reason.as_deref() != Some("nodeAssigned") {
            continue;
        }
        let Some(service) = event.involved_object.name.clone() else {
            continue;
        };
        let time = [
            event
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .map(|t| t.0),
            event.event_time.as_ref().map(|t| t.0),
            event.last_timestamp.as_ref().map(|t| t.0),
            event.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .max();
        let node = NODES.iter().find(|n| {
            event
                .message
                .as_deref()
                .is_some_and(|m| m.contains(&format!("\"{n}\"")))
        });
        if let (Some(time), Some(node)) = (time, node)
            && newest.get(&service).is_none_or(|(t, _)| time >= *t)
        {
            newest.insert(service, (time, node.to_string()));
        }
    }
    newest.into_iter().map(|(s, (_, n))| (s, n)).collect()
}

/// The settled state's checks: `Ok` with the number of (announced, unannounced) addresses
/// checked when they hold, else what does not (yet).
fn settled_check(lab: &Lab) -> Result<(usize, usize), String> {
    // The run only ever writes valid configuration: every component must say so.
    let states: Api<ferrolb_crds::ConfigurationState> =
        Api::namespaced(lab.admin.clone(), "metallb-system");
    for name in std::iter::once("controller".to_string())
        .chain(NODES.iter().map(|n| format!("speaker-{n}")))
    {
        let state = lab
            .block_on(states.get_opt(&name))
            .map_err(|e| e.to_string())?
            .and_then(|s| s.status);
        let result = state.as_ref().and_then(|s| s.result);
        if result != Some(ferrolb_crds::ConfigurationResult::Valid) {
            return Err(format!("ConfigurationState {name} says {state:?}"));
        }
    }
    let services: Vec<Service> = lab
        .block_on(
            Api::<Service>::namespaced(lab.admin.clone(), "default").list(&Default::default()),
        )
        .map_err(|e| e.to_string())?
        .items;
    let slices: Vec<Arc<EndpointSlice>> = lab
        .block_on(Api::<EndpointSlice>::all(lab.admin.clone()).list(&Default::default()))
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let nodes: Vec<Node> = lab
        .block_on(Api::<Node>::all(lab.admin.clone()).list(&Default::default()))
        .map_err(|e| e.to_string())?
        .items;
    let pools: Vec<IPAddressPool> = lab
        .block_on(
            Api::<IPAddressPool>::namespaced(lab.admin.clone(), "metallb-system")
                .list(&Default::default()),
        )
        .map_err(|e| e.to_string())?
        .items;
    let advertisements: Vec<L2Advertisement> = lab
        .block_on(
            Api::<L2Advertisement>::namespaced(lab.admin.clone(), "metallb-system")
                .list(&Default::default()),
        )
        .map_err(|e| e.to_string())?
        .items;
    let statuses: Vec<ServiceL2Status> = lab
        .block_on(
            Api::<ServiceL2Status>::namespaced(lab.admin.clone(), "metallb-system")
                .list(&Default::default()),
        )
        .map_err(|e| e.to_string())?
        .items;
    let by_service = slices_by_service(slices);
    let pools: Vec<_> = pools.iter().filter_map(pool_info).collect();
    let nodes: Vec<_> = nodes.iter().map(node_info).collect();
    // Per address: the nodes that may announce it, and the Services announced through it.
    let mut candidates: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let mut announced_services: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for service in &services {
        let key = (
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        let info = service_info(
            service,
            by_service.get(&key).map(Vec::as_slice).unwrap_or_default(),
        );
        for ip in &info.ips {
            candidates.entry(*ip).or_default();
        }
        for plan in plan(&info, &pools, &advertisements, &nodes) {
            if !plan.candidates.is_empty() {
                candidates
                    .entry(plan.ip)
                    .or_default()
                    .extend(plan.candidates.keys().cloned());
                announced_services
                    .entry(plan.ip)
                    .or_default()
                    .insert(key.1.clone());
            }
        }
    }
    let mac_node: BTreeMap<String, &str> = NODES
        .iter()
        .map(|n| (lab.mac_of(n).to_lowercase(), *n))
        .collect();
    let newest = newest_assignments(lab);
    let (mut announced, mut silent) = (0, 0);
    for (ip, may) in &candidates {
        let answering = answerers(lab, *ip);
        if may.is_empty() {
            if !answering.is_empty() {
                return Err(format!("{ip} is not announced but {answering:?} answer"));
            }
            silent += 1;
            continue;
        }
        if answering.len() != 1 {
            return Err(format!(
                "{ip}: {} answerers ({answering:?})",
                answering.len()
            ));
        }
        let Some(mac) = answering.iter().next() else {
            return Err(format!("{ip}: no answerer"));
        };
        let Some(node) = mac_node.get(mac) else {
            return Err(format!("{ip} is answered by {mac}, no node's MAC"));
        };
        if !may.contains(*node) {
            return Err(format!(
                "{ip} is answered by {node}, not a candidate ({may:?})"
            ));
        }
        announced += 1;
        for service in announced_services.get(ip).into_iter().flatten() {
            let named: BTreeSet<String> = statuses
                .iter()
                .filter_map(|s| s.status.as_ref())
                .filter(|s| s.service_name.as_deref() == Some(service.as_str()))
                .filter_map(|s| s.node.clone())
                .collect();
            if !named.contains(*node) {
                return Err(format!(
                    "{service}'s ServiceL2Status names {named:?}, but {node} answers {ip}"
                ));
            }
            if newest.get(service).map(String::as_str) != Some(*node) && named.len() == 1 {
                return Err(format!(
                    "{service}'s newest nodeAssigned Event names {:?}, but {node} answers {ip}",
                    newest.get(service)
                ));
            }
        }
    }
    Ok((announced, silent))
}

#[test]
fn a_seeded_random_run_of_changes_and_faults_keeps_every_invariant() {
    if ferrolb_lab::target_cluster::external_kubeconfig().is_some() {
        eprintln!(
            "skipped on an existing cluster: this run injects faults into the emulated API server"
        );
        return;
    }
    let seed: u64 = std::env::var("FERROLB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let seconds: u64 = std::env::var("FERROLB_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("fault run: seed {seed} (FERROLB_FAULT_SEED={seed} replays it), {seconds} s");
    let lab = Lab::start();
    lab.server
        .as_ref()
        .unwrap()
        .service_account_kubeconfig("metallb-system", "ferrolb-controller")
        .write(&lab.dir.path().join("controller"))
        .unwrap();
    // The second pool, when the run adds it, is announced too.
    lab.create(vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "extra", "namespace": "metallb-system"},
        "spec": {"ipAddressPools": ["extra"]}}),
    ]);
    let kubeconfig = lab.dir.path().join("controller");
    let controllers = (0..2)
        .map(|i| Some(Controller::start(&kubeconfig, &format!("controller-{i}"))))
        .collect();
    let mut run = Run {
        lab,
        rng: StdRng::seed_from_u64(seed),
        controllers,
        later: Vec::new(),
        speakers_down: BTreeSet::new(),
        links_down: BTreeSet::new(),
        gossip_cut: BTreeSet::new(),
        paused: false,
        models: BTreeMap::new(),
        next_service: 0,
        extra_pool: false,
        shrunk: false,
        counts: BTreeMap::new(),
        violations: Vec::new(),
        outside_since: BTreeMap::new(),
        retired_logs: Vec::new(),
    };
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut steps = 0u64;
    while Instant::now() < end {
        run.run_due(false);
        if !run.paused {
            run.step();
            steps += 1;
            if !run.paused {
                run.check_always();
            }
        }
        // The run's pace: one change or fault every 50-400 ms.
        let pause = run.rng.random_range(50..400);
        std::thread::sleep(Duration::from_millis(pause));
    }
    // Settle: every fault ends, every component runs again, and the nodes and the IPv6
    // advertisement are open to all again (so that most addresses are announced and checked;
    // the Services stay as the run left them).
    run.run_due(true);
    run.emulator().faults().resume();
    run.emulator().faults().fail_next(0, 500);
    run.paused = false;
    let nodes: Api<Node> = Api::all(run.lab.admin.clone());
    let unlabel =
        json!({"metadata": {"labels": {ferrolb_speaker::announce_policy::EXCLUDE_LABEL: null}}});
    for node in NODES {
        retry("unlabel node", || {
            run.lab
                .block_on(nodes.patch(node, &PatchParams::default(), &Patch::Merge(&unlabel)))
        });
    }
    run.apply(
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "v6", "namespace": "metallb-system"},
        "spec": {"ipAddressPools": ["v6-pool"], "nodeSelectors": []}}),
    );
    let kubeconfig = run.controller_kubeconfig();
    for (i, controller) in run.controllers.iter_mut().enumerate() {
        if controller.is_none() {
            *controller = Some(Controller::start(&kubeconfig, &format!("controller-{i}")));
        }
    }
    run.check_always();
    // Settling takes the components' own time: polled, for up to two minutes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settled = None;
    let mut last = String::new();
    while settled.is_none() && Instant::now() < deadline {
        match settled_check(&run.lab) {
            Ok(checked) => settled = Some(checked),
            Err(problem) => {
                last = problem;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    match settled {
        Some((announced, silent)) => eprintln!(
            "fault run: settled: every ConfigurationState Valid; {announced} announced addresses with one answerer each, named by status and Events; {silent} unannounced addresses silent"
        ),
        None => run.violations.push(format!("after settling: {last}")),
    }
    run.check_always();
    for node in NODES {
        let log = run.lab.speaker_log(node);
        run.check_log(&log, node);
    }
    let logs: Vec<(String, Vec<String>)> = run
        .controllers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            Some((
                format!("controller-{i}"),
                c.as_ref()?.log.lock().unwrap().clone(),
            ))
        })
        .collect();
    for (who, log) in logs {
        run.check_log(&log, &who);
    }
    eprintln!(
        "fault run: seed {seed}, {steps} steps in {seconds} s: {:?}; {} violations",
        run.counts,
        run.violations.len()
    );
    if !run.violations.is_empty() {
        for line in &run.retired_logs {
            eprintln!("{line}");
        }
    }
    assert!(
        run.violations.is_empty(),
        "seed {seed}: {:#?}",
        run.violations
    );
}
