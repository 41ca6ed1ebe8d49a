//! The announce plan of every Service and the owner elected for each of its addresses, kept
//! between passes so that a change costs the work of what it touched.
//!
//! A pass runs after every change the speaker sees. Re-planning every address each time costs
//! about 1 µs per Service on 3 nodes and 4.5 µs on 24 (every address ranks every node), and
//! even walking every Service to find the changed ones cost 10 ms per pass at 10,000. Here the
//! watches name what changed (`watch_changes`): a Service is planned again when its object or
//! one of its EndpointSlices changed, every Service when pools, advertisements or nodes
//! changed; an address's owner is elected again when its plan, its current owner or the
//! election's inputs (live speakers, held nodes, published interfaces) changed. The decision
//! (owners and this node's table) and the Services this node announces are kept too, and
//! corrected address by address. `runtime::decide` stays the definition: a property test
//! holds this cache to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::L2Advertisement;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::announce_policy::{NodeInfo, Plan, PoolInfo, ServiceInfo, plan};
use crate::l2_status::{Announcement, ServiceKey};
use crate::node_interfaces::Interfaces;
use crate::responder::Table;
use crate::runtime::{Decision, announcement_of, answering_on, elect_owner, service_info};
use crate::watch_changes::Touched;

/// What a plan depends on besides the Service and its slices.
#[derive(Debug, Clone, PartialEq, Default)]
struct PlanInputs {
    pools: Vec<PoolInfo>,
    advertisements: Vec<L2Advertisement>,
    nodes: Vec<NodeInfo>,
}

/// What an election depends on besides the plan and the address's current owner.
#[derive(Debug, Clone, PartialEq, Default)]
struct ElectionInputs {
    me: String,
    alive: BTreeSet<String>,
    held: BTreeSet<String>,
    interfaces: BTreeSet<String>,
    known: BTreeMap<String, Interfaces>,
}

/// One address's election, remembered with the current owner it was made against (the owner
/// it chose is in `contributions`).
#[derive(Debug, Clone)]
struct Elected {
    current: Option<String>,
}

/// What one Service's election of one address adds to the decision.
#[derive(Debug, Clone, PartialEq)]
struct Contribution {
    owner: String,
    /// The interfaces this node answers on, if it is the owner.
    on: Vec<String>,
}

struct Entry {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    info: ServiceInfo,
    plans: Vec<Plan>,
    /// Per plan, in the same order; `None` until elected under the present inputs.
    elected: Vec<Option<Elected>>,
    /// The last full update that found the Service in the cache; older entries are deleted.
    seen_in: u64,
}

/// Work done by the last update and decision, for the bench and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub planned: usize,
    pub elected: usize,
}

/// The addresses whose owner, or whose place in this node's table, the last decision changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    pub owners: BTreeSet<IpAddr>,
    pub table: BTreeSet<IpAddr>,
}

/// A Service whose announcement from this node began, changed or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementChange {
    pub service: ServiceKey,
    pub before: Option<Announcement>,
    pub after: Option<Announcement>,
}

/// What this node announces, per Service; shared with the status writer. A persistent map: a
/// snapshot costs nothing and a change copies one path of the tree, not the whole map (with
/// a `BTreeMap` behind an `Arc`, every change while the writer held the last snapshot copied
/// all of it: 3,333 entries per change per node at 10,000 Services on 3 nodes).
pub type Announced = imbl::OrdMap<ServiceKey, Announcement>;
/// The objects of the Services this node announces (the Events name them).
pub type AnnouncedObjects = imbl::OrdMap<ServiceKey, Arc<Service>>;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service's EndpointSlices: nearly always one, so one needs no allocation.
enum OwnSlices<'a> {
    One(&'a Arc<EndpointSlice>),
    Many(Vec<&'a Arc<EndpointSlice>>),
}

/// The EndpointSlices by the Service they belong to (namespace, then Service name), borrowing
/// the cache's strings.
struct SlicesByService<'a>(HashMap<&'a str, HashMap<&'a str, OwnSlices<'a>>>);

impl<'a> SlicesByService<'a> {
    fn index(slices: &'a [Arc<EndpointSlice>]) -> Self {
        let mut by_service: HashMap<&str, HashMap<&str, OwnSlices>> = HashMap::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            let (Some(namespace), Some(service)) = (slice.metadata.namespace.as_deref(), service)
            else {
                continue;
            };
            let in_namespace = by_service.entry(namespace).or_default();
            match in_namespace.remove(service.as_str()) {
                None => in_namespace.insert(service, OwnSlices::One(slice)),
                Some(OwnSlices::One(first)) => {
                    in_namespace.insert(service, OwnSlices::Many(vec![first, slice]))
                }
                Some(OwnSlices::Many(mut all)) => {
                    all.push(slice);
                    in_namespace.insert(service, OwnSlices::Many(all))
                }
            };
        }
        SlicesByService(by_service)
    }

    fn of(&self, namespace: &str, service: &str) -> &[&'a Arc<EndpointSlice>] {
        match self.0.get(namespace).and_then(|s| s.get(service)) {
            Some(OwnSlices::One(slice)) => std::slice::from_ref(slice),
            Some(OwnSlices::Many(all)) => all,
            None => &[],
        }
    }
}

fn same_objects(entry: &Entry, service: &Arc<Service>, slices: &[&Arc<EndpointSlice>]) -> bool {
    Arc::ptr_eq(&entry.service, service)
        && entry.slices.len() == slices.len()
        && entry
            .slices
            .iter()
            .zip(slices)
            .all(|(a, b)| Arc::ptr_eq(a, b))
}

#[derive(Default)]
pub struct PlanCache {
    plan_inputs: PlanInputs,
    election_inputs: ElectionInputs,
    /// By namespace, then name: looked up with the objects' own strings, without allocating.
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The Services holding each address (their `info.ips`).
    services_by_ip: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Per address, what each Service's election of it contributes.
    contributions: BTreeMap<IpAddr, BTreeMap<ServiceKey, Contribution>>,
    decision: Decision,
    /// Services planned since the last decision: their addresses need electing.
    unelected: BTreeSet<ServiceKey>,
    /// Addresses whose contributions changed since the decision was last corrected.
    stale: BTreeSet<IpAddr>,
    /// Services planned or gone since the announcements were last corrected.
    reannounce: BTreeSet<ServiceKey>,
    announced: Announced,
    announced_objects: AnnouncedObjects,
    work: Work,
    pass: u64,
}

impl PlanCache {
    /// Brings the plans up to date with every object the caches hold (at start and after a
    /// relist). Unchanged Services cost a lookup and a few pointer comparisons.
    pub fn update(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        pools: Vec<PoolInfo>,
        advertisements: Vec<L2Advertisement>,
        nodes: Vec<NodeInfo>,
    ) {
        self.begin_update(pools, advertisements, nodes);
        let slices = SlicesByService::index(slices);
        self.pass = self.pass.wrapping_add(1);
        for service in services {
            let (Some(namespace), Some(name)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let own_slices = slices.of(namespace, name);
            let cached = self
                .entries
                .get_mut(namespace)
                .and_then(|in_namespace| in_namespace.get_mut(name));
            if let Some(entry) = cached
                && same_objects(entry, service, own_slices)
            {
                entry.seen_in = self.pass;
                continue;
            }
            let own_slices = own_slices.iter().map(|s| Arc::clone(s)).collect();
            self.plan_entry(namespace, name, service.clone(), own_slices);
        }
        let pass = self.pass;
        let gone: Vec<ServiceKey> = self
            .entries
            .iter()
            .flat_map(|(namespace, in_namespace)| {
                in_namespace
                    .iter()
                    .filter(|(_, entry)| entry.seen_in != pass)
                    .map(|(name, _)| (namespace.clone(), name.clone()))
            })
            .collect();
        for (namespace, name) in gone {
            self.forget(&namespace, &name);
        }
    }

    /// Brings the plans up to date with the Services a watch named: each with its object and
    /// EndpointSlices as the caches hold them now, or `None` if it is gone (or not ours).
    pub fn update_services(
        &mut self,
        changed: impl IntoIterator<Item = (ServiceKey, Option<(Arc<Service>, Vec<Arc<EndpointSlice>>)>)>,
        pools: Vec<PoolInfo>,
        advertisements: Vec<L2Advertisement>,
        nodes: Vec<NodeInfo>,
    ) {
        self.begin_update(pools, advertisements, nodes);
        for ((namespace, name), found) in changed {
            let Some((service, slices)) = found else {
                self.forget(&namespace, &name);
                continue;
            };
            let borrowed: Vec<&Arc<EndpointSlice>> = slices.iter().collect();
            let unchanged = self
                .entries
                .get(&namespace)
                .and_then(|in_namespace| in_namespace.get(&name))
                .is_some_and(|entry| same_objects(entry, &service, &borrowed));
            if !unchanged {
                self.plan_entry(&namespace, &name, service, slices);
            }
        }
    }

    /// Starts an update: the work counted afresh, and the plan inputs brought up to date.
    fn begin_update(
        &mut self,
        pools: Vec<PoolInfo>,
        advertisements: Vec<L2Advertisement>,
        nodes: Vec<NodeInfo>,
    ) {
        self.work = Work::default();
        self.set_plan_inputs(PlanInputs {
            pools,
            advertisements,
            nodes,
        });
    }

    /// New pools, advertisements or nodes: every Service is planned again from the objects
    /// its entry holds.
    fn set_plan_inputs(&mut self, inputs: PlanInputs) {
        if inputs == self.plan_inputs {
            return;
        }
        self.plan_inputs = inputs;
        let all: Vec<(ServiceKey, Arc<Service>, Vec<Arc<EndpointSlice>>)> = self
            .entries
            .iter()
            .flat_map(|(namespace, in_namespace)| {
                in_namespace.iter().map(|(name, entry)| {
                    (
                        (namespace.clone(), name.clone()),
                        entry.service.clone(),
                        entry.slices.clone(),
                    )
                })
            })
            .collect();
        for ((namespace, name), service, slices) in all {
            self.plan_entry(&namespace, &name, service, slices);
        }
    }

    fn plan_entry(
        &mut self,
        namespace: &str,
        name: &str,
        service: Arc<Service>,
        slices: Vec<Arc<EndpointSlice>>,
    ) {
        self.forget(namespace, name);
        let info = service_info(&service, &slices);
        let plans = plan(
            &info,
            &self.plan_inputs.pools,
            &self.plan_inputs.advertisements,
            &self.plan_inputs.nodes,
        );
        self.work.planned += 1;
        let key: ServiceKey = (namespace.to_string(), name.to_string());
        for ip in &info.ips {
            self.services_by_ip
                .entry(*ip)
                .or_default()
                .insert(key.clone());
        }
        self.unelected.insert(key.clone());
        self.reannounce.insert(key);
        let elected = vec![None; plans.len()];
        self.entries
            .entry(namespace.to_string())
            .or_default()
            .insert(
                name.to_string(),
                Entry {
                    service,
                    slices,
                    info,
                    plans,
                    elected,
                    seen_in: self.pass,
                },
            );
    }

    /// Removes a Service and what its elections contributed.
    fn forget(&mut self, namespace: &str, name: &str) {
        let Some(in_namespace) = self.entries.get_mut(namespace) else {
            return;
        };
        let Some(entry) = in_namespace.remove(name) else {
            return;
        };
        if in_namespace.is_empty() {
            self.entries.remove(namespace);
        }
        let key: ServiceKey = (namespace.to_string(), name.to_string());
        for ip in &entry.info.ips {
            if let Some(keys) = self.services_by_ip.get_mut(ip) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.services_by_ip.remove(ip);
                }
            }
        }
        for ip in entry
            .info
            .ips
            .iter()
            .chain(entry.plans.iter().map(|p| &p.ip))
        {
            if let Some(by_service) = self.contributions.get_mut(ip)
                && by_service.remove(&key).is_some()
            {
                self.stale.insert(*ip);
                if by_service.is_empty() {
                    self.contributions.remove(ip);
                }
            }
        }
        self.unelected.remove(&key);
        self.reannounce.insert(key);
    }

    /// Corrects the owners and this node's table (`decision`), as `runtime::decide` makes them
    /// from the same inputs. `current` gives each address's current owner; `recheck` names
    /// the addresses whose current owner may have changed since the last call.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        me: &str,
        alive: &BTreeSet<String>,
        held: &BTreeSet<String>,
        interfaces: &BTreeSet<String>,
        current: impl Fn(&IpAddr) -> Option<String>,
        recheck: &Touched<IpAddr>,
        known: &BTreeMap<String, Interfaces>,
    ) -> Changed {
        let inputs = ElectionInputs {
            me: me.to_string(),
            alive: alive.clone(),
            held: held.clone(),
            interfaces: interfaces.clone(),
            known: known.clone(),
        };
        let mut everything = matches!(recheck, Touched::Everything);
        if inputs != self.election_inputs {
            self.election_inputs = inputs;
            for entry in self.entries.values_mut().flat_map(BTreeMap::values_mut) {
                entry.elected.iter_mut().for_each(|e| *e = None);
            }
            everything = true;
        }
        let mut election = Election {
            me,
            alive,
            held,
            interfaces,
            known,
            current: &current,
            contributions: &mut self.contributions,
            stale: &mut self.stale,
            elected: &mut self.work.elected,
        };
        if everything {
            for (namespace, in_namespace) in &mut self.entries {
                for (name, entry) in in_namespace {
                    election.elect(&(namespace.clone(), name.clone()), entry);
                }
            }
        } else {
            let mut todo = std::mem::take(&mut self.unelected);
            if let Touched::Some(addresses) = recheck {
                for ip in addresses {
                    if let Some(keys) = self.services_by_ip.get(ip) {
                        todo.extend(keys.iter().cloned());
                    }
                }
            }
            for key in &todo {
                if let Some(entry) = self
                    .entries
                    .get_mut(&key.0)
                    .and_then(|in_namespace| in_namespace.get_mut(&key.1))
                {
                    election.elect(key, entry);
                }
            }
        }
        self.unelected.clear();
        self.correct_decision()
    }

    /// Recomputes the decision at the addresses whose contributions changed: the owner from
    /// the last Service (as `runtime::decide`'s order makes it), the table from all.
    fn correct_decision(&mut self) -> Changed {
        let mut changed = Changed::default();
        for ip in std::mem::take(&mut self.stale) {
            let contributions = self.contributions.get(&ip);
            let owner = contributions
                .and_then(|by_service| by_service.values().next_back())
                .map(|c| &c.owner);
            if self.decision.owners.get(&ip) != owner {
                match owner {
                    Some(owner) => self.decision.owners.insert(ip, owner.clone()),
                    None => self.decision.owners.remove(&ip),
                };
                changed.owners.insert(ip);
            }
            let on: BTreeSet<&String> = contributions
                .into_iter()
                .flat_map(|by_service| by_service.values())
                .flat_map(|c| c.on.iter())
                .collect();
            let mut table_changed = false;
            for (interface, addresses) in &mut self.decision.table {
                if !on.contains(interface) && addresses.remove(&ip) {
                    table_changed = true;
                }
            }
            for interface in on {
                if self
                    .decision
                    .table
                    .entry(interface.clone())
                    .or_default()
                    .insert(ip)
                {
                    table_changed = true;
                }
            }
            self.decision
                .table
                .retain(|_, addresses| !addresses.is_empty());
            if table_changed {
                changed.table.insert(ip);
            }
        }
        changed
    }

    /// The owners and this node's table as the last decision left them.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Corrects the Services this node announces (as `runtime::announced_services` finds
    /// them) for `table`, what this node answers now; `changed` names the addresses whose
    /// place in it changed since the last call. Returns what changed.
    pub fn announce(
        &mut self,
        table: &Table,
        changed: &Touched<IpAddr>,
    ) -> Vec<AnnouncementChange> {
        let mut keys = std::mem::take(&mut self.reannounce);
        match changed {
            Touched::Everything => {
                keys.extend(self.announced.keys().cloned());
                for (namespace, in_namespace) in &self.entries {
                    keys.extend(in_namespace.keys().map(|n| (namespace.clone(), n.clone())));
                }
            }
            Touched::Some(addresses) => {
                for ip in addresses {
                    if let Some(holding) = self.services_by_ip.get(ip) {
                        keys.extend(holding.iter().cloned());
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for key in keys {
            let entry = self
                .entries
                .get(&key.0)
                .and_then(|in_namespace| in_namespace.get(&key.1));
            let after = entry.and_then(|e| announcement_of(&e.info.ips, table));
            match (entry, &after) {
                (Some(entry), Some(_)) => {
                    let same = self
                        .announced_objects
                        .get(&key)
                        .is_some_and(|o| Arc::ptr_eq(o, &entry.service));
                    if !same {
                        self.announced_objects
                            .insert(key.clone(), entry.service.clone());
                    }
                }
                _ => {
                    if self.announced_objects.contains_key(&key) {
                        self.announced_objects.remove(&key);
                    }
                }
            }
            let before = self.announced.get(&key).cloned();
            if before == after {
                continue;
            }
            let announced = &mut self.announced;
            match &after {
                Some(a) => announced.insert(key.clone(), a.clone()),
                None => announced.remove(&key),
            };
            changes.push(AnnouncementChange {
                service: key,
                before,
                after,
            });
        }
        changes
    }

    /// The Services this node announces, as the last `announce` left them, with their objects.
    pub fn announced(&self) -> (Announced, AnnouncedObjects) {
        (self.announced.clone(), self.announced_objects.clone())
    }

    /// The Services as the cache holds them (for `runtime::decide` in tests and benches).
    pub fn service_infos(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.entries
            .values()
            .flat_map(BTreeMap::values)
            .map(|e| &e.info)
    }

    /// How many Services the last update planned and the last decision elected for.
    pub fn work(&self) -> Work {
        self.work
    }
}

/// One decision's elections, and where they leave their results.
struct Election<'a, F: Fn(&IpAddr) -> Option<String>> {
    me: &'a str,
    alive: &'a BTreeSet<String>,
    held: &'a BTreeSet<String>,
    interfaces: &'a BTreeSet<String>,
    known: &'a BTreeMap<String, Interfaces>,
    current: &'a F,
    contributions: &'a mut BTreeMap<IpAddr, BTreeMap<ServiceKey, Contribution>>,
    stale: &'a mut BTreeSet<IpAddr>,
    elected: &'a mut usize,
}

impl<F: Fn(&IpAddr) -> Option<String>> Election<'_, F> {
    /// Elects again each of a Service's addresses whose election is not current.
    fn elect(&mut self, key: &ServiceKey, entry: &mut Entry) {
        for (plan, elected) in entry.plans.iter().zip(entry.elected.iter_mut()) {
            let current_owner = (self.current)(&plan.ip);
            if elected.as_ref().is_some_and(|e| e.current == current_owner) {
                continue;
            }
            let owner = elect_owner(
                plan,
                current_owner.as_deref(),
                self.alive,
                self.held,
                self.known,
            )
            .map(str::to_string);
            *self.elected += 1;
            let contribution = owner.as_ref().map(|owner| Contribution {
                owner: owner.clone(),
                on: if owner == self.me {
                    answering_on(plan, self.me, self.interfaces)
                } else {
                    Vec::new()
                },
            });
            *elected = Some(Elected {
                current: current_owner,
            });
            let by_service = self.contributions.entry(plan.ip).or_default();
            if by_service.get(key) != contribution.as_ref() {
                match contribution {
                    Some(c) => by_service.insert(key.clone(), c),
                    None => by_service.remove(key),
                };
                self.stale.insert(plan.ip);
            }
            if by_service.is_empty() {
                self.contributions.remove(&plan.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Snapshot, announced_services, decide, node_info, pool_info};
    use ferrolb_crds::IPAddressPool;
    use k8s_openapi::api::core::v1::Node;
    use proptest::prelude::*;
    use serde_json::json;

    const NODES: [&str; 4] = ["node-0", "node-1", "node-2", "node-3"];
    const ME: &str = "node-1";

    fn service(i: usize, local: bool, version: u32) -> Arc<Service> {
        let policy = if local { "Local" } else { "Cluster" };
        let ingress: Vec<_> = [
            format!("192.0.2.{}", 10 + i),
            format!("2001:db8::{}", 10 + i),
        ]
        .into_iter()
        .map(|ip| json!({ "ip": ip }))
        .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}"), "namespace": "default",
                             "labels": {"tier": if i.is_multiple_of(2) { "web" } else { "db" }},
                             "resourceVersion": version.to_string()},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy},
                "status": {"loadBalancer": {"ingress": ingress}},
            }))
            .unwrap_or_default(),
        )
    }

    fn slice(i: usize, endpoint_nodes: &[usize]) -> Arc<EndpointSlice> {
        let endpoints: Vec<_> = endpoint_nodes
            .iter()
            .map(|n| json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": NODES[*n]}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("svc-{i}-x"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap_or_else(|_| EndpointSlice::default()),
        )
    }

    fn node(i: usize, zone_a: bool, excluded: bool) -> NodeInfo {
        let mut labels = BTreeMap::from([(
            "zone".to_string(),
            if zone_a { "a" } else { "b" }.to_string(),
        )]);
        if excluded {
            labels.insert(
                "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                String::new(),
            );
        }
        node_info(&Node {
            metadata: kube::api::ObjectMeta {
                name: Some(NODES[i].to_string()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn pools(split: bool) -> Vec<PoolInfo> {
        let pool = |name: &str, addresses: &[&str]| -> Option<PoolInfo> {
            let pool: IPAddressPool = serde_json::from_value(json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": name, "namespace": "metallb-system"},
                "spec": {"addresses": addresses},
            }))
            .ok()?;
            pool_info(&pool)
        };
        let listed = if split {
            vec![
                pool("low", &["192.0.2.0/28", "2001:db8::/124"]),
                pool("high", &["192.0.2.16/28"]),
            ]
        } else {
            vec![pool("all", &["192.0.2.0/24", "2001:db8::/64"])]
        };
        listed.into_iter().flatten().collect()
    }

    fn advertisement(kind: u8) -> Vec<L2Advertisement> {
        let spec = match kind % 4 {
            0 => json!({}),
            1 => json!({"nodeSelectors": [{"matchLabels": {"zone": "a"}}]}),
            2 => json!({"ipAddressPools": ["low"], "interfaces": ["eth1"]}),
            _ => json!({"serviceSelectors": [{"matchLabels": {"tier": "web"}}],
                        "nodeSelectors": [{"matchLabels": {"zone": "b"}}]}),
        };
        serde_json::from_value(json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "adv", "namespace": "metallb-system"},
            "spec": spec,
        }))
        .map(|a| vec![a])
        .unwrap_or_default()
    }

    /// A cluster that the steps below change one piece at a time.
    #[derive(Clone)]
    struct World {
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
        split_pools: bool,
        advertisement: u8,
        nodes: Vec<(bool, bool)>,
        alive: BTreeSet<String>,
        held: BTreeSet<String>,
        current: BTreeMap<IpAddr, String>,
        version: u32,
    }

    impl World {
        fn new() -> World {
            World {
                services: (0..6).map(|i| service(i, i % 3 == 0, 1)).collect(),
                slices: (0..6).map(|i| slice(i, &[i % 4, (i + 1) % 4])).collect(),
                split_pools: false,
                advertisement: 0,
                nodes: (0..4).map(|i| (i % 2 == 0, false)).collect(),
                alive: NODES.iter().map(|n| n.to_string()).collect(),
                held: BTreeSet::new(),
                current: BTreeMap::new(),
                version: 1,
            }
        }

        /// Applies a step; returns the Service and the address whose current owner it touched.
        fn apply(&mut self, step: &Step) -> (Option<ServiceKey>, Option<IpAddr>) {
            self.version += 1;
            let key = |i: usize| Some(("default".to_string(), format!("svc-{}", i % 6)));
            match *step {
                Step::Service(i, local) => {
                    self.services[i % 6] = service(i % 6, local, self.version);
                    return (key(i), None);
                }
                Step::Slice(i, a, b) => {
                    self.slices[i % 6] = slice(i % 6, &[a % 4, b % 4]);
                    return (key(i), None);
                }
                Step::Pools => self.split_pools = !self.split_pools,
                Step::Advertisement(kind) => self.advertisement = kind,
                Step::Node(i, zone_a, excluded) => self.nodes[i % 4] = (zone_a, excluded),
                Step::Alive(i) => {
                    let n = NODES[i % 4].to_string();
                    if n != ME && !self.alive.remove(&n) {
                        self.alive.insert(n);
                    }
                }
                Step::Held(i) => {
                    let n = NODES[i % 4].to_string();
                    if !self.held.remove(&n) {
                        self.held.insert(n);
                    }
                }
                Step::Current(i, owner) => {
                    let ip: IpAddr = format!("192.0.2.{}", 10 + i % 6)
                        .parse()
                        .unwrap_or(IpAddr::from([192, 0, 2, 10]));
                    match owner {
                        Some(o) => self.current.insert(ip, NODES[o % 4].to_string()),
                        None => self.current.remove(&ip),
                    };
                    return (None, Some(ip));
                }
                Step::Nothing => self.version -= 1,
            }
            (None, None)
        }

        fn node_infos(&self) -> Vec<NodeInfo> {
            self.nodes
                .iter()
                .enumerate()
                .map(|(i, (a, x))| node(i, *a, *x))
                .collect()
        }

        fn known(&self) -> BTreeMap<String, Interfaces> {
            let networks = vec!["192.0.2.0/24".parse().unwrap_or_else(|_| unreachable!())];
            NODES
                .iter()
                .map(|n| {
                    let interfaces = BTreeMap::from([
                        ("eth0".to_string(), networks.clone()),
                        ("eth1".to_string(), Vec::new()),
                    ]);
                    (n.to_string(), interfaces)
                })
                .collect()
        }

        /// A pass over every object (`touched: None`) or over the Services a watch named.
        fn update(
            &self,
            cache: &mut PlanCache,
            touched: Option<&BTreeSet<ServiceKey>>,
            recheck: &Touched<IpAddr>,
        ) -> Changed {
            match touched {
                None => cache.update(
                    &self.services,
                    &self.slices,
                    pools(self.split_pools),
                    advertisement(self.advertisement),
                    self.node_infos(),
                ),
                Some(keys) => cache.update_services(
                    keys.iter().map(|key| (key.clone(), self.lookup(key))),
                    pools(self.split_pools),
                    advertisement(self.advertisement),
                    self.node_infos(),
                ),
            }
            cache.decide(
                ME,
                &self.alive,
                &self.held,
                &interfaces(),
                |ip| self.current.get(ip).cloned(),
                recheck,
                &self.known(),
            )
        }

        fn lookup(&self, key: &ServiceKey) -> Option<(Arc<Service>, Vec<Arc<EndpointSlice>>)> {
            let service = self
                .services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(key.1.as_str()))?;
            let slices = self
                .slices
                .iter()
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        == Some(&key.1)
                })
                .cloned()
                .collect();
            Some((service.clone(), slices))
        }

        fn full_update(&self, cache: &mut PlanCache) -> Changed {
            self.update(cache, None, &Touched::Everything)
        }

        /// What `runtime::decide` makes of the whole world at once.
        fn decide(&self, infos: Vec<ServiceInfo>) -> Decision {
            let snapshot = Snapshot {
                services: infos,
                pools: pools(self.split_pools),
                advertisements: advertisement(self.advertisement),
                nodes: self.node_infos(),
            };
            decide(
                &snapshot,
                ME,
                &self.alive,
                &self.held,
                &interfaces(),
                &self.current,
                &self.known(),
            )
        }
    }

    fn interfaces() -> BTreeSet<String> {
        BTreeSet::from(["eth0".to_string(), "eth1".to_string()])
    }

    #[derive(Debug, Clone)]
    enum Step {
        Service(usize, bool),
        Slice(usize, usize, usize),
        Pools,
        Advertisement(u8),
        Node(usize, bool, bool),
        Alive(usize),
        Held(usize),
        Current(usize, Option<usize>),
        Nothing,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..6usize, any::<bool>()).prop_map(|(i, l)| Step::Service(i, l)),
            (0..6usize, 0..4usize, 0..4usize).prop_map(|(i, a, b)| Step::Slice(i, a, b)),
            Just(Step::Pools),
            (0..4u8).prop_map(Step::Advertisement),
            (0..4usize, any::<bool>(), any::<bool>()).prop_map(|(i, a, x)| Step::Node(i, a, x)),
            (0..4usize).prop_map(Step::Alive),
            (0..4usize).prop_map(Step::Held),
            (0..6usize, proptest::option::of(0..4usize)).prop_map(|(i, o)| Step::Current(i, o)),
            Just(Step::Nothing),
        ]
    }

    proptest! {
        #[test]
        fn the_cache_decides_and_announces_as_a_full_pass_does(
            steps in proptest::collection::vec((step(), any::<bool>(), any::<bool>()), 1..40)
        ) {
            let mut world = World::new();
            let mut cache = PlanCache::default();
            let mut touched = BTreeSet::new();
            let mut recheck = Touched::default();
            let mut table_changed = Touched::Everything;
            for (step, pass_now, full) in &steps {
                let (service, ip) = world.apply(step);
                touched.extend(service);
                recheck.extend(&Touched::Some(ip.into_iter().collect()));
                if !pass_now {
                    continue;
                }
                let changed = if *full {
                    world.update(&mut cache, None, &recheck)
                } else {
                    world.update(&mut cache, Some(&touched), &recheck)
                };
                touched.clear();
                recheck = Touched::default();
                let infos: Vec<ServiceInfo> = cache.service_infos().cloned().collect();
                let full_decision = world.decide(infos.clone());
                prop_assert_eq!(cache.decision(), &full_decision, "after {:?}", step);
                table_changed.extend(&Touched::Some(changed.table));
                let table = cache.decision().table.clone();
                cache.announce(&table, &table_changed);
                table_changed = Touched::default();
                let snapshot = Snapshot {
                    services: infos,
                    pools: Vec::new(),
                    advertisements: Vec::new(),
                    nodes: Vec::new(),
                };
                prop_assert_eq!(
                    &cache.announced().0,
                    &announced_services(&snapshot, &full_decision).into_iter().collect::<Announced>(),
                    "after {:?}", step
                );
            }
        }
    }

    fn key(i: usize) -> BTreeSet<ServiceKey> {
        BTreeSet::from([("default".to_string(), format!("svc-{i}"))])
    }

    #[test]
    fn a_pass_without_changes_plans_and_elects_nothing() {
        let world = World::new();
        let mut cache = PlanCache::default();
        world.full_update(&mut cache);
        assert_eq!(cache.work().planned, 6);
        assert!(cache.work().elected >= 6);
        world.full_update(&mut cache);
        assert_eq!(cache.work(), Work::default());
        world.update(&mut cache, Some(&BTreeSet::new()), &Touched::default());
        assert_eq!(cache.work(), Work::default());
    }

    #[test]
    fn a_changed_service_or_slice_is_the_only_one_planned_again() {
        let mut world = World::new();
        let mut cache = PlanCache::default();
        world.full_update(&mut cache);
        world.apply(&Step::Service(2, true));
        world.update(&mut cache, Some(&key(2)), &Touched::default());
        assert_eq!(cache.work().planned, 1);
        world.apply(&Step::Slice(4, 0, 3));
        world.update(&mut cache, Some(&key(4)), &Touched::default());
        assert_eq!(cache.work().planned, 1);
        assert!(cache.work().elected <= 2, "one Service's two addresses");
        let (_, ip) = world.apply(&Step::Current(5, Some(2)));
        world.update(
            &mut cache,
            Some(&BTreeSet::new()),
            &Touched::Some(ip.into_iter().collect()),
        );
        assert_eq!(
            cache.work(),
            Work {
                planned: 0,
                elected: 1
            }
        );
    }

    #[test]
    fn the_announcements_say_what_began_and_ended() {
        let world = World::new();
        let mut cache = PlanCache::default();
        let changed = world.full_update(&mut cache);
        let table = cache.decision().table.clone();
        let began = cache.announce(&table, &Touched::Some(changed.table));
        assert!(!began.is_empty(), "{ME} owns some of the addresses");
        assert!(
            began
                .iter()
                .all(|c| c.before.is_none() && c.after.is_some())
        );
        let ended = cache.announce(&Table::new(), &Touched::Everything);
        assert_eq!(ended.len(), began.len());
        assert!(ended.iter().all(|c| c.after.is_none()));
        assert!(cache.announced().0.is_empty());
    }

    #[test]
    fn pools_nodes_and_membership_changes_plan_or_elect_everything_again() {
        let mut world = World::new();
        let mut cache = PlanCache::default();
        world.full_update(&mut cache);
        world.apply(&Step::Node(0, false, false));
        world.update(&mut cache, Some(&BTreeSet::new()), &Touched::default());
        assert_eq!(cache.work().planned, 6);
        world.apply(&Step::Alive(3));
        world.update(&mut cache, Some(&BTreeSet::new()), &Touched::default());
        assert_eq!(cache.work().planned, 0);
        assert!(cache.work().elected >= 6);
    }
}
