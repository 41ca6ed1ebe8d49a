//! The announce plan of every Service and the owner elected for each of its addresses, kept
//! between passes so that a change re-plans only what it touched.
//!
//! A pass runs after every change the speaker sees. Re-planning every address each time costs
//! about 1 µs per Service on 3 nodes and 4.5 µs on 24 (every address ranks every node), so a
//! change in a cluster of 10,000 Services cost 10-45 ms of CPU. Here a Service is planned again
//! only when its object or one of its EndpointSlices is a different object than last time (the
//! caches hand out a new `Arc` for every update), or when pools, advertisements or nodes
//! changed; an address's owner is elected again only when its plan, its current owner or the
//! election's inputs (live speakers, held nodes, published interfaces) changed. What is left per
//! pass is a walk over the Services comparing pointers. `runtime::decide` stays the definition:
//! a property test holds this cache to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::L2Advertisement;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::announce_policy::{NodeInfo, Plan, PoolInfo, ServiceInfo, plan};
use crate::l2_status::{Announcement, ServiceKey};
use crate::node_interfaces::Interfaces;
use crate::runtime::{Decision, announcement_of, elect_owner, record_owner, service_info};

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

/// One address's election, remembered with the current owner it was made against.
#[derive(Debug, Clone)]
struct Elected {
    current: Option<String>,
    owner: Option<String>,
}

struct Entry {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    info: ServiceInfo,
    plans: Vec<Plan>,
    /// Per plan, in the same order; `None` until elected under the present inputs.
    elected: Vec<Option<Elected>>,
    /// The last update that found the Service in the cache; older entries are deleted ones.
    seen_in: u64,
}

/// Work done by the last update, for the bench and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub planned: usize,
    pub elected: usize,
}

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

#[derive(Default)]
pub struct PlanCache {
    plan_inputs: PlanInputs,
    election_inputs: ElectionInputs,
    /// By namespace, then name: looked up with the objects' own strings, without allocating.
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
    work: Work,
    pass: u64,
}

impl PlanCache {
    /// Brings the plans up to date with the caches' objects. Unchanged Services cost a
    /// lookup and a few pointer comparisons: nothing is allocated for them.
    pub fn update(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        pools: Vec<PoolInfo>,
        advertisements: Vec<L2Advertisement>,
        nodes: Vec<NodeInfo>,
    ) {
        self.work = Work::default();
        let inputs = PlanInputs {
            pools,
            advertisements,
            nodes,
        };
        if inputs != self.plan_inputs {
            self.plan_inputs = inputs;
            self.entries.clear();
        }
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
            if let Some(entry) = cached {
                let unchanged = Arc::ptr_eq(&entry.service, service)
                    && entry.slices.len() == own_slices.len()
                    && entry
                        .slices
                        .iter()
                        .zip(own_slices)
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                if unchanged {
                    entry.seen_in = self.pass;
                    continue;
                }
            }
            let own_slices: Vec<Arc<EndpointSlice>> =
                own_slices.iter().map(|s| Arc::clone(s)).collect();
            let info = service_info(service, &own_slices);
            let plans = plan(
                &info,
                &self.plan_inputs.pools,
                &self.plan_inputs.advertisements,
                &self.plan_inputs.nodes,
            );
            self.work.planned += 1;
            let elected = vec![None; plans.len()];
            self.entries
                .entry(namespace.to_string())
                .or_default()
                .insert(
                    name.to_string(),
                    Entry {
                        service: service.clone(),
                        slices: own_slices,
                        info,
                        plans,
                        elected,
                        seen_in: self.pass,
                    },
                );
        }
        let pass = self.pass;
        for in_namespace in self.entries.values_mut() {
            in_namespace.retain(|_, entry| entry.seen_in == pass);
        }
        self.entries
            .retain(|_, in_namespace| !in_namespace.is_empty());
    }

    /// The owners and this node's table, as `runtime::decide` makes them from the same inputs.
    pub fn decide(
        &mut self,
        me: &str,
        alive: &BTreeSet<String>,
        held: &BTreeSet<String>,
        interfaces: &BTreeSet<String>,
        current: &BTreeMap<IpAddr, String>,
        known: &BTreeMap<String, Interfaces>,
    ) -> Decision {
        let inputs = ElectionInputs {
            me: me.to_string(),
            alive: alive.clone(),
            held: held.clone(),
            interfaces: interfaces.clone(),
            known: known.clone(),
        };
        if inputs != self.election_inputs {
            self.election_inputs = inputs;
            for entry in self.entries.values_mut().flat_map(BTreeMap::values_mut) {
                entry.elected.iter_mut().for_each(|e| *e = None);
            }
        }
        let mut decision = Decision::default();
        for entry in self.entries.values_mut().flat_map(BTreeMap::values_mut) {
            for (plan, elected) in entry.plans.iter().zip(entry.elected.iter_mut()) {
                let current_owner = current.get(&plan.ip);
                let still = elected
                    .as_ref()
                    .is_some_and(|e| e.current.as_ref() == current_owner);
                if !still {
                    let owner =
                        elect_owner(plan, current_owner.map(String::as_str), alive, held, known);
                    self.work.elected += 1;
                    *elected = Some(Elected {
                        current: current_owner.cloned(),
                        owner: owner.map(str::to_string),
                    });
                }
                let Some(owner) = elected.as_ref().and_then(|e| e.owner.as_ref()) else {
                    continue;
                };
                record_owner(&mut decision, plan, owner, me, interfaces);
            }
        }
        decision
    }

    /// The Services this node announces (as `runtime::announced_services`), with their objects.
    pub fn announced(
        &self,
        decision: &Decision,
    ) -> (
        BTreeMap<ServiceKey, Announcement>,
        BTreeMap<ServiceKey, Arc<Service>>,
    ) {
        let mut announced = BTreeMap::new();
        let mut objects = BTreeMap::new();
        if decision.table.is_empty() {
            return (announced, objects);
        }
        let all = self.entries.iter().flat_map(|(namespace, in_namespace)| {
            in_namespace
                .iter()
                .map(move |(name, entry)| (namespace, name, entry))
        });
        for (namespace, name, entry) in all {
            if let Some(found) = announcement_of(&entry.info.ips, &decision.table) {
                let key = (namespace.clone(), name.clone());
                objects.insert(key.clone(), entry.service.clone());
                announced.insert(key, found);
            }
        }
        (announced, objects)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Snapshot, decide, node_info, pool_info};
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

        fn apply(&mut self, step: &Step) {
            self.version += 1;
            match *step {
                Step::Service(i, local) => {
                    self.services[i % 6] = service(i % 6, local, self.version)
                }
                Step::Slice(i, a, b) => self.slices[i % 6] = slice(i % 6, &[a % 4, b % 4]),
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
                }
                Step::Nothing => self.version -= 1,
            }
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

        fn update(&self, cache: &mut PlanCache) -> Decision {
            cache.update(
                &self.services,
                &self.slices,
                pools(self.split_pools),
                advertisement(self.advertisement),
                self.node_infos(),
            );
            cache.decide(
                ME,
                &self.alive,
                &self.held,
                &interfaces(),
                &self.current,
                &self.known(),
            )
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
        fn the_cache_decides_as_a_full_pass_does(steps in proptest::collection::vec(step(), 1..40)) {
            let mut world = World::new();
            let mut cache = PlanCache::default();
            for step in &steps {
                world.apply(step);
                let cached = world.update(&mut cache);
                let full = world.decide(cache.service_infos().cloned().collect());
                prop_assert_eq!(cached, full, "after {:?}", step);
            }
        }
    }

    #[test]
    fn a_pass_without_changes_plans_and_elects_nothing() {
        let world = World::new();
        let mut cache = PlanCache::default();
        world.update(&mut cache);
        assert_eq!(cache.work().planned, 6);
        assert!(cache.work().elected >= 6);
        world.update(&mut cache);
        assert_eq!(cache.work(), Work::default());
    }

    #[test]
    fn a_changed_service_or_slice_is_the_only_one_planned_again() {
        let mut world = World::new();
        let mut cache = PlanCache::default();
        world.update(&mut cache);
        world.apply(&Step::Service(2, true));
        world.update(&mut cache);
        assert_eq!(cache.work().planned, 1);
        world.apply(&Step::Slice(4, 0, 3));
        world.update(&mut cache);
        assert_eq!(cache.work().planned, 1);
        assert!(cache.work().elected <= 2, "one Service's two addresses");
        world.apply(&Step::Current(5, Some(2)));
        world.update(&mut cache);
        assert_eq!(
            cache.work(),
            Work {
                planned: 0,
                elected: 1
            }
        );
    }

    #[test]
    fn pools_nodes_and_membership_changes_plan_or_elect_everything_again() {
        let mut world = World::new();
        let mut cache = PlanCache::default();
        world.update(&mut cache);
        world.apply(&Step::Node(0, false, false));
        world.update(&mut cache);
        assert_eq!(cache.work().planned, 6);
        world.apply(&Step::Alive(3));
        world.update(&mut cache);
        assert_eq!(cache.work().planned, 0);
        assert!(cache.work().elected >= 6);
    }
}
