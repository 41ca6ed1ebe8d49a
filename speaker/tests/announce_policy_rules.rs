//! MetalLB's rules for which nodes announce an address, one test each.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::L2Advertisement;
use ferrolb_crds::pool_address::parse_pool_address;
use ferrolb_speaker::announce_policy::{
    self, EXCLUDE_LABEL, NodeInfo, PoolInfo, ServiceInfo, plan,
};
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn node(name: &str, pairs: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: labels(pairs),
        network_unavailable: false,
    }
}

fn nodes() -> Vec<NodeInfo> {
    vec![
        node("node-a", &[("zone", "a")]),
        node("node-b", &[("zone", "b")]),
        node("node-c", &[("zone", "c")]),
    ]
}

fn pools() -> Vec<PoolInfo> {
    vec![
        PoolInfo {
            name: "first-pool".into(),
            labels: labels(&[("tier", "web")]),
            ranges: vec![parse_pool_address("192.168.117.100-192.168.117.110").unwrap()],
        },
        PoolInfo {
            name: "other".into(),
            labels: BTreeMap::new(),
            ranges: vec![parse_pool_address("198.51.100.0/24").unwrap()],
        },
    ]
}

fn advertisement(spec: serde_json::Value) -> L2Advertisement {
    serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "ad", "namespace": "metallb-system"}, "spec": spec
    }))
    .unwrap()
}

fn service(ip: &str) -> ServiceInfo {
    ServiceInfo {
        namespace: "default".into(),
        name: "myapp".into(),
        labels: labels(&[("app", "myapp")]),
        ips: vec![ip.parse().unwrap()],
        pool: None,
        local_traffic_policy: false,
        endpoint_nodes: BTreeSet::from(["node-b".to_string()]),
        has_serving_endpoint: true,
    }
}

fn candidates(service: &ServiceInfo, ads: &[L2Advertisement], nodes: &[NodeInfo]) -> Vec<String> {
    plan(service, &pools(), ads, nodes)
        .first()
        .map(|p| p.candidates.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_seed_advertisement_lets_every_node_announce_its_pool_only() {
    let seed = advertisement(json!({"ipAddressPools": ["first-pool"]}));
    let all = ["node-a", "node-b", "node-c"];
    assert_eq!(
        candidates(
            &service("192.168.117.100"),
            std::slice::from_ref(&seed),
            &nodes()
        ),
        all
    );
    assert!(candidates(&service("198.51.100.7"), &[seed], &nodes()).is_empty());
    let everything = advertisement(json!({}));
    assert_eq!(
        candidates(&service("198.51.100.7"), &[everything], &nodes()),
        all
    );
    assert!(
        candidates(&service("192.168.117.100"), &[], &nodes()).is_empty(),
        "no advertisement"
    );
    assert!(
        candidates(
            &service("203.0.113.1"),
            &[advertisement(json!({}))],
            &nodes()
        )
        .is_empty(),
        "in no pool"
    );
}

#[test]
fn pool_and_service_selectors() {
    let by_label =
        advertisement(json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "web"}}]}));
    assert_eq!(
        candidates(
            &service("192.168.117.100"),
            std::slice::from_ref(&by_label),
            &nodes()
        )
        .len(),
        3
    );
    assert!(candidates(&service("198.51.100.7"), &[by_label], &nodes()).is_empty());
    let for_other_apps =
        advertisement(json!({"serviceSelectors": [{"matchLabels": {"app": "other"}}]}));
    assert!(candidates(&service("192.168.117.100"), &[for_other_apps], &nodes()).is_empty());
    let for_myapp = advertisement(
        json!({"serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["myapp"]}]}]}),
    );
    assert_eq!(
        candidates(&service("192.168.117.100"), &[for_myapp], &nodes()).len(),
        3
    );
}

#[test]
fn node_selectors_exclude_label_and_network_unavailable() {
    let zone_a_b = advertisement(
        json!({"nodeSelectors": [{"matchLabels": {"zone": "a"}}, {"matchLabels": {"zone": "b"}}]}),
    );
    assert_eq!(
        candidates(
            &service("192.168.117.100"),
            std::slice::from_ref(&zone_a_b),
            &nodes()
        ),
        ["node-a", "node-b"]
    );
    let mut cluster = nodes();
    cluster[0]
        .labels
        .insert(EXCLUDE_LABEL.into(), String::new());
    cluster[1].network_unavailable = true;
    assert!(candidates(&service("192.168.117.100"), &[zone_a_b], &cluster).is_empty());
    assert_eq!(
        candidates(
            &service("192.168.117.100"),
            &[advertisement(json!({}))],
            &cluster
        ),
        ["node-c"]
    );
}

#[test]
fn endpoints_gate_announcing() {
    let everything = [advertisement(json!({}))];
    let mut local = service("192.168.117.100");
    local.local_traffic_policy = true;
    assert_eq!(
        candidates(&local, &everything, &nodes()),
        ["node-b"],
        "only where an endpoint runs"
    );
    let mut idle = service("192.168.117.100");
    idle.has_serving_endpoint = false;
    idle.endpoint_nodes.clear();
    assert!(
        candidates(&idle, &everything, &nodes()).is_empty(),
        "no serving endpoint: silence"
    );
}

#[test]
fn interfaces_and_preferences_add_up_over_advertisements() {
    let on_eth1 = advertisement(json!({"interfaces": ["eth1"],
        "preferredNodeSelectors": [{"weight": 30, "preference": {"matchLabels": {"zone": "c"}}}]}));
    let on_eth2 = advertisement(
        json!({"interfaces": ["eth2"], "nodeSelectors": [{"matchLabels": {"zone": "a"}}],
        "preferredNodeSelectors": [{"weight": 50, "preference": {"matchLabels": {"zone": "a"}}}]}),
    );
    let plans = plan(
        &service("192.168.117.100"),
        &pools(),
        &[on_eth1.clone(), on_eth2],
        &nodes(),
    );
    let plan = &plans[0];
    assert_eq!(
        plan.candidates,
        BTreeMap::from([
            ("node-a".into(), 50),
            ("node-b".into(), 0),
            ("node-c".into(), 30)
        ])
    );
    assert_eq!(
        plan.interfaces["node-a"],
        Some(BTreeSet::from(["eth1".into(), "eth2".into()]))
    );
    assert_eq!(
        plan.interfaces["node-b"],
        Some(BTreeSet::from(["eth1".into()]))
    );
    let anywhere = advertisement(json!({}));
    let plans = ferrolb_speaker::announce_policy::plan(
        &service("192.168.117.100"),
        &pools(),
        &[on_eth1, anywhere],
        &nodes(),
    );
    assert_eq!(
        plans[0].interfaces["node-b"], None,
        "an advertisement without interfaces: all of them"
    );
}

#[test]
fn the_recorded_pool_wins_among_overlapping_pools() {
    let mut overlapping = pools();
    overlapping.push(PoolInfo {
        name: "aaa-overlap".into(),
        labels: BTreeMap::new(),
        ranges: vec![parse_pool_address("192.168.117.0/24").unwrap()],
    });
    let seed = [advertisement(json!({"ipAddressPools": ["first-pool"]}))];
    let mut recorded = service("192.168.117.100");
    assert!(
        plan(&recorded, &overlapping, &seed, &nodes()).is_empty(),
        "by name, aaa-overlap comes first"
    );
    recorded.pool = Some("first-pool".into());
    assert_eq!(plan(&recorded, &overlapping, &seed, &nodes()).len(), 1);
}

#[test]
fn invalid_selectors_are_named_with_their_field() {
    let ok = advertisement(json!({"nodeSelectors": [{"matchLabels": {"a": "b"}}]}));
    assert!(announce_policy::invalid_selectors(&ok).is_empty());
    let bad = advertisement(json!({
        "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Near"}]}],
        "preferredNodeSelectors": [{"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "In"}]}}],
    }));
    let problems = announce_policy::invalid_selectors(&bad);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("spec.serviceSelectors[0]: "),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("spec.preferredNodeSelectors[0].preference: "),
        "{problems:?}"
    );
}

#[test]
fn each_node_left_out_is_left_out_for_a_named_reason() {
    use announce_policy::{NodeExclusion, NodeVerdict, covering, node_verdict};
    let mut local = service("192.168.117.100");
    local.local_traffic_policy = true;
    let pools = pools();
    let ads = [advertisement(
        json!({"nodeSelectors": [{"matchLabels": {"zone": "b"}}, {"matchLabels": {"zone": "c"}}]}),
    )];
    let covering = covering(&ads, &pools[0], &local);
    let mut excluded = node("node-x", &[("zone", "b"), (EXCLUDE_LABEL, "")]);
    let mut unavailable = node("node-y", &[("zone", "b")]);
    unavailable.network_unavailable = true;
    let verdict = |n: &NodeInfo| node_verdict(&local, &covering, n);
    assert_eq!(
        verdict(&excluded),
        NodeVerdict::Excluded(NodeExclusion::ExcludeLabel)
    );
    assert_eq!(
        verdict(&unavailable),
        NodeVerdict::Excluded(NodeExclusion::NetworkUnavailable)
    );
    // node-c is selected but hosts no endpoint; node-a hosts none and is not selected either:
    // the endpoint rule is named first, as it is the one a user changes most often.
    assert_eq!(
        verdict(&node("node-c", &[("zone", "c")])),
        NodeVerdict::Excluded(NodeExclusion::NoLocalEndpoint)
    );
    local.endpoint_nodes.insert("node-a".into());
    let verdict = |n: &NodeInfo| node_verdict(&local, &covering, n);
    assert_eq!(
        verdict(&node("node-a", &[("zone", "a")])),
        NodeVerdict::Excluded(NodeExclusion::NotSelected)
    );
    assert_eq!(
        verdict(&node("node-b", &[("zone", "b")])),
        NodeVerdict::Candidate {
            preference: 0,
            interfaces: None
        }
    );
    // The verdicts and the plan agree on who is a candidate.
    excluded.labels.remove(EXCLUDE_LABEL);
    local.endpoint_nodes.insert("node-x".into());
    let all = [excluded, node("node-a", &[("zone", "a")])];
    let planned = candidates(&local, &ads, &all);
    assert_eq!(planned, ["node-x"]);
}
