//! Which nodes may announce a Service's address, on which interfaces, and with what
//! preference: MetalLB 0.16's L2 rules, as pure functions of the cluster's objects (already
//! read into the plain types below by the speaker's reconciler).
//!
//! - An address is announced only if an L2Advertisement covers its pool (`ipAddressPools`,
//!   `ipAddressPoolSelectors`; neither: every pool) and the Service (`serviceSelectors`).
//! - Only from nodes one of those advertisements selects (`nodeSelectors`; none: every node),
//!   never from nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers` or
//!   whose NetworkUnavailable condition is True.
//! - Only while the Service has a serving endpoint; with `externalTrafficPolicy: Local`,
//!   only from nodes hosting one.
//! - On the advertisements' `interfaces` (any advertisement without a list: every eligible
//!   interface).
//! - Preference: the summed weights of the `preferredNodeSelectors` terms a node matches.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_crds::L2Advertisement;
use ferrolb_crds::label_selector::{matches, matches_any};
use ferrolb_crds::pool_address::AddressRange;

pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub network_unavailable: bool,
}

impl NodeInfo {
    /// Whether the node may announce anything at all.
    pub fn eligible(&self) -> bool {
        !self.labels.contains_key(EXCLUDE_LABEL) && !self.network_unavailable
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolInfo {
    pub name: String,
    pub labels: Labels,
    pub ranges: Vec<AddressRange>,
}

impl PoolInfo {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Addresses in `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
    /// `metallb.io/ip-allocated-from-pool`, when set.
    pub pool: Option<String>,
    pub local_traffic_policy: bool,
    /// Nodes hosting a serving endpoint.
    pub endpoint_nodes: BTreeSet<String>,
    /// Any serving endpoint at all (some have no node name).
    pub has_serving_endpoint: bool,
}

/// Where an address may be announced from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ip: IpAddr,
    /// Candidate nodes and their preference.
    pub candidates: BTreeMap<String, u32>,
    /// Per candidate: the interfaces to answer on (`None`: every eligible interface).
    pub interfaces: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The pool an address belongs to: the one the controller recorded, if it contains it, else
/// the first by name that does.
pub fn pool_of<'a>(
    ip: IpAddr,
    service: &ServiceInfo,
    pools: &'a [PoolInfo],
) -> Option<&'a PoolInfo> {
    service
        .pool
        .as_ref()
        .and_then(|name| pools.iter().find(|p| &p.name == name && p.contains(ip)))
        .or_else(|| {
            let mut containing: Vec<&PoolInfo> = pools.iter().filter(|p| p.contains(ip)).collect();
            containing.sort_by(|a, b| a.name.cmp(&b.name));
            containing.first().copied()
        })
}

/// Whether an advertisement covers a pool and a Service. An invalid selector matches
/// nothing: announcing too little is safer than announcing from the wrong nodes.
pub fn covers(advertisement: &L2Advertisement, pool: &PoolInfo, service: &ServiceInfo) -> bool {
    let Some(spec) = &advertisement.spec else {
        return true;
    };
    let names = spec.ip_address_pools.as_deref().unwrap_or_default();
    let selectors = spec
        .ip_address_pool_selectors
        .as_deref()
        .unwrap_or_default();
    let pool_covered = (names.is_empty() && selectors.is_empty())
        || names.contains(&pool.name)
        || matches_any(selectors, &pool.labels).unwrap_or(false);
    let services = spec.service_selectors.as_deref().unwrap_or_default();
    let service_covered =
        services.is_empty() || matches_any(services, &service.labels).unwrap_or(false);
    pool_covered && service_covered
}

/// What is wrong with an advertisement's selectors, if anything: an invalid one matches
/// nothing (see [`covers`]), so the advertisement announces less than it says.
pub fn invalid_selectors(advertisement: &L2Advertisement) -> Vec<String> {
    let Some(spec) = &advertisement.spec else {
        return Vec::new();
    };
    let lists = [
        (
            "ipAddressPoolSelectors",
            spec.ip_address_pool_selectors.as_deref(),
        ),
        ("serviceSelectors", spec.service_selectors.as_deref()),
        ("nodeSelectors", spec.node_selectors.as_deref()),
    ];
    let mut problems = Vec::new();
    for (field, selectors) in lists {
        for (i, selector) in selectors.unwrap_or_default().iter().enumerate() {
            if let Err(e) = ferrolb_crds::label_selector::validate(selector) {
                problems.push(format!("spec.{field}[{i}]: {}", e.0));
            }
        }
    }
    for (i, term) in spec
        .preferred_node_selectors
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Err(e) = ferrolb_crds::label_selector::validate(&term.preference) {
            problems.push(format!(
                "spec.preferredNodeSelectors[{i}].preference: {}",
                e.0
            ));
        }
    }
    problems
}

fn selects_node(advertisement: &L2Advertisement, node: &NodeInfo) -> bool {
    let selectors = advertisement
        .spec
        .as_ref()
        .and_then(|s| s.node_selectors.as_deref())
        .unwrap_or_default();
    selectors.is_empty() || matches_any(selectors, &node.labels).unwrap_or(false)
}

fn preference(advertisement: &L2Advertisement, node: &NodeInfo) -> u32 {
    advertisement
        .spec
        .as_ref()
        .and_then(|s| s.preferred_node_selectors.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|term| matches(&term.preference, &node.labels).unwrap_or(false))
        .map(|term| u32::try_from(term.weight).unwrap_or(0))
        .sum()
}

/// Why a node is not a candidate for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeExclusion {
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    ExcludeLabel,
    /// Its NetworkUnavailable condition is True.
    NetworkUnavailable,
    /// `externalTrafficPolicy: Local` and no serving endpoint of the Service on it.
    NoLocalEndpoint,
    /// No L2Advertisement that covers the address's pool and the Service selects it.
    NotSelected,
}

impl std::fmt::Display for NodeExclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeExclusion::ExcludeLabel => {
                "it is labelled node.kubernetes.io/exclude-from-external-load-balancers"
            }
            NodeExclusion::NetworkUnavailable => "its NetworkUnavailable condition is True",
            NodeExclusion::NoLocalEndpoint => {
                "externalTrafficPolicy is Local and no serving endpoint of the Service runs on it"
            }
            NodeExclusion::NotSelected => {
                "no L2Advertisement covering the pool and the Service selects it (nodeSelectors)"
            }
        })
    }
}

/// What a node may do for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    /// A candidate, with its preference and the interfaces to answer on (`None`: every
    /// eligible interface).
    Candidate {
        preference: u32,
        interfaces: Option<BTreeSet<String>>,
    },
    Excluded(NodeExclusion),
}

/// The advertisements that cover an address of `service` from `pool`.
pub fn covering<'a>(
    advertisements: &'a [L2Advertisement],
    pool: &PoolInfo,
    service: &ServiceInfo,
) -> Vec<&'a L2Advertisement> {
    advertisements
        .iter()
        .filter(|a| covers(a, pool, service))
        .collect()
}

/// Whether `node` may announce an address of `service` that `covering` advertise.
pub fn node_verdict(
    service: &ServiceInfo,
    covering: &[&L2Advertisement],
    node: &NodeInfo,
) -> NodeVerdict {
    if node.labels.contains_key(EXCLUDE_LABEL) {
        return NodeVerdict::Excluded(NodeExclusion::ExcludeLabel);
    }
    if node.network_unavailable {
        return NodeVerdict::Excluded(NodeExclusion::NetworkUnavailable);
    }
    if service.local_traffic_policy && !service.endpoint_nodes.contains(&node.name) {
        return NodeVerdict::Excluded(NodeExclusion::NoLocalEndpoint);
    }
    let selecting: Vec<&&L2Advertisement> =
        covering.iter().filter(|a| selects_node(a, node)).collect();
    if selecting.is_empty() {
        return NodeVerdict::Excluded(NodeExclusion::NotSelected);
    }
    let preference = selecting.iter().map(|a| preference(a, node)).sum();
    let mut interfaces = Some(BTreeSet::new());
    for advertisement in &selecting {
        let listed = advertisement
            .spec
            .as_ref()
            .and_then(|s| s.interfaces.as_deref())
            .unwrap_or_default();
        match (&mut interfaces, listed.is_empty()) {
            (_, true) => interfaces = None,
            (Some(set), false) => set.extend(listed.iter().cloned()),
            (None, false) => {}
        }
    }
    NodeVerdict::Candidate {
        preference,
        interfaces,
    }
}

/// Where one address of `service` may be announced from, given the advertisements that
/// `covering` it; each node left out is handed to `excluded` with the rule that leaves it out.
pub fn plan_address(
    ip: IpAddr,
    service: &ServiceInfo,
    covering: &[&L2Advertisement],
    nodes: &[NodeInfo],
    mut excluded: impl FnMut(&NodeInfo, NodeExclusion),
) -> Plan {
    let mut plan = Plan {
        ip,
        candidates: BTreeMap::new(),
        interfaces: BTreeMap::new(),
    };
    for node in nodes {
        match node_verdict(service, covering, node) {
            NodeVerdict::Candidate {
                preference,
                interfaces,
            } => {
                plan.candidates.insert(node.name.clone(), preference);
                plan.interfaces.insert(node.name.clone(), interfaces);
            }
            NodeVerdict::Excluded(why) => excluded(node, why),
        }
    }
    plan
}

/// Where each of a Service's addresses may be announced from; addresses no advertisement
/// covers, or that no node may announce, are left out.
pub fn plan(
    service: &ServiceInfo,
    pools: &[PoolInfo],
    advertisements: &[L2Advertisement],
    nodes: &[NodeInfo],
) -> Vec<Plan> {
    if !service.has_serving_endpoint {
        return Vec::new();
    }
    let mut plans = Vec::new();
    for ip in &service.ips {
        let Some(pool) = pool_of(*ip, service, pools) else {
            continue;
        };
        let covering = covering(advertisements, pool, service);
        let plan = plan_address(*ip, service, &covering, nodes, |_, _| {});
        if !plan.candidates.is_empty() {
            plans.push(plan);
        }
    }
    plans
}
