//! The allocator's rules, one test each, and properties over random sequences of Services.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_controller::allocator::{AllocationError, Allocator, Assignment};
use ferrolb_controller::pool::Pool;
use ferrolb_controller::service_request::ServiceRequest;
use ferrolb_controller::sharing::{Sharer, can_share};
use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use proptest::prelude::*;
use serde_json::{Value, json};

fn pool(name: &str, spec: Value) -> Pool {
    let resource: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"},
        "spec": spec
    }))
    .unwrap();
    let pool = Pool::from_resource(&resource);
    assert!(pool.rejected.is_empty(), "{:?}", pool.rejected);
    pool
}

fn request(namespace: &str, name: &str, extra: Value) -> ServiceRequest {
    request_with_ns_labels(namespace, name, extra, BTreeMap::new())
}

fn request_with_ns_labels(
    namespace: &str,
    name: &str,
    extra: Value,
    ns_labels: BTreeMap<String, String>,
) -> ServiceRequest {
    let mut service = json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
    });
    merge(&mut service, extra);
    let service: Service = serde_json::from_value(service).unwrap();
    ServiceRequest::from_service(&service, ns_labels).unwrap().0
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn ips(assignment: &Assignment) -> Vec<String> {
    assignment.ips.iter().map(ToString::to_string).collect()
}

fn seeded() -> Allocator {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool(
        "first-pool",
        json!({"addresses": ["192.168.117.100-192.168.117.110"]}),
    )]);
    allocator
}

fn annotated(name: &str, annotations: Value) -> ServiceRequest {
    request(
        "default",
        name,
        json!({"metadata": {"annotations": annotations}}),
    )
}

#[test]
fn the_seed_example_gets_192_168_117_100() {
    let mut allocator = seeded();
    let myapp = allocator
        .allocate(&request("default", "myapp", json!({})))
        .unwrap();
    assert_eq!(ips(&myapp), ["192.168.117.100"]);
    assert_eq!(myapp.pool.as_deref(), Some("first-pool"));
    let other = allocator
        .allocate(&request("default", "other", json!({})))
        .unwrap();
    assert_eq!(ips(&other), ["192.168.117.101"]);
    // Asking again changes nothing.
    assert_eq!(
        allocator
            .allocate(&request("default", "myapp", json!({})))
            .unwrap(),
        myapp
    );
    let stats = allocator.stats("first-pool");
    assert_eq!((stats.assigned_ipv4, stats.available_ipv4), (2, 9));
}

#[test]
fn an_entry_that_does_not_parse_is_left_out_alone() {
    let resource: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "mixed", "namespace": "metallb-system"},
        "spec": {"addresses": ["2001:db8::ff-2001:db8::1", "192.0.2.30-192.0.2.31"]}
    }))
    .unwrap();
    let mixed = Pool::from_resource(&resource);
    assert_eq!(mixed.rejected.len(), 1);
    assert_eq!(mixed.rejected[0].index, 0);
    assert!(
        mixed.rejected[0]
            .to_string()
            .starts_with("spec.addresses[0]: invalid IP range"),
        "{}",
        mixed.rejected[0]
    );
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        mixed,
        pool("other", json!({"addresses": ["192.0.2.40/32"]})),
    ]);
    let first = allocator
        .allocate(&request(
            "default",
            "a",
            json!({"metadata": {"annotations": {"metallb.io/address-pool": "mixed"}}}),
        ))
        .unwrap();
    assert_eq!(ips(&first), ["192.0.2.30"]);
    let other = allocator
        .allocate(&request(
            "default",
            "b",
            json!({"metadata": {"annotations": {"metallb.io/address-pool": "other"}}}),
        ))
        .unwrap();
    assert_eq!(ips(&other), ["192.0.2.40"]);
}

#[test]
fn release_frees_the_address() {
    let mut allocator = seeded();
    let myapp = request("default", "myapp", json!({}));
    allocator.allocate(&myapp).unwrap();
    allocator.release(&myapp.key);
    assert_eq!(allocator.stats("first-pool").available_ipv4, 11);
    let next = allocator
        .allocate(&request("default", "next", json!({})))
        .unwrap();
    assert_eq!(ips(&next), ["192.168.117.100"]);
}

#[test]
fn pools_without_auto_assign_only_serve_explicit_requests() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool(
        "expensive",
        json!({"addresses": ["203.0.113.64/30"], "autoAssign": false}),
    )]);
    assert_eq!(
        allocator.allocate(&request("default", "a", json!({}))),
        Err(AllocationError::NoPool)
    );
    let named = allocator
        .allocate(&annotated(
            "b",
            json!({"metallb.io/address-pool": "expensive"}),
        ))
        .unwrap();
    assert_eq!(ips(&named), ["203.0.113.64"]);
    let asked = allocator
        .allocate(&annotated(
            "c",
            json!({"metallb.io/loadBalancerIPs": "203.0.113.66"}),
        ))
        .unwrap();
    assert_eq!(ips(&asked), ["203.0.113.66"]);
}

/// A pool is held as free intervals, so an IPv6 /32 (2^96 addresses) or the largest IPv4
/// range the benchmark block gives costs what a /30 does: memory follows the Services, not the
/// pool. Holes left by deleted Services are the only thing that splits the free set.
#[test]
fn huge_pools_cost_what_their_holes_cost() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        pool("v6-32", json!({"addresses": ["2001:db8::/32"]})),
        pool(
            "v4-15",
            json!({"addresses": ["198.18.0.0/15"], "avoidBuggyIPs": true}),
        ),
    ]);
    assert_eq!(allocator.free_interval_count("v6-32"), 1);
    let v6 = |i: usize| {
        request(
            "default",
            &format!("v6-{i}"),
            json!({"metadata": {"annotations": {"metallb.io/address-pool": "v6-32"}},
                   "spec": {"ipFamilies": ["IPv6"]}}),
        )
    };
    let v4 = |i: usize| {
        request(
            "default",
            &format!("v4-{i}"),
            json!({"metadata": {"annotations": {"metallb.io/address-pool": "v4-15"}}}),
        )
    };
    for i in 0..2_000 {
        allocator.allocate(&v6(i)).unwrap();
        allocator.allocate(&v4(i)).unwrap();
    }
    assert_eq!(allocator.free_interval_count("v6-32"), 1);
    // The skipped .0 and .255 stay free: the first .0, one .255-.0 pair per /24 boundary the
    // 2,000 allocations crossed (7), and the rest of the pool.
    assert_eq!(allocator.free_interval_count("v4-15"), 1 + 2_000 / 254 + 1);
    let stats = allocator.stats("v6-32");
    assert_eq!(
        (stats.assigned_ipv6, stats.available_ipv6),
        (2_000, i64::MAX)
    );
    let stats = allocator.stats("v4-15");
    // 131,072 addresses in 512 /24s, each with a .0 and a .255 never handed out.
    assert_eq!(
        (stats.assigned_ipv4, stats.available_ipv4),
        (2_000, 128_048)
    );

    // Every other Service goes: each hole is one more interval, and no more.
    for i in (0..2_000).step_by(2) {
        allocator.release(&v6(i).key).unwrap();
    }
    assert_eq!(allocator.free_interval_count("v6-32"), 1_001);
    for i in (0..2_000).step_by(2) {
        allocator.allocate(&v6(i)).unwrap();
    }
    assert_eq!(allocator.free_interval_count("v6-32"), 1);
}

/// An invalid serviceAllocation selector used to refuse every Service that was not pinned to a
/// pool; now the pool selects nobody and the others serve as before.
#[test]
fn a_pool_with_an_invalid_selector_disturbs_no_other_pool() {
    let mut allocator = seeded();
    let broken = pool(
        "broken",
        json!({"addresses": ["198.51.100.0/28"], "serviceAllocation": {"priority": 1,
               "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Near"}]}]}}),
    );
    assert_eq!(broken.invalid_selectors.len(), 1);
    assert!(
        broken.invalid_selectors[0].starts_with("spec.serviceAllocation.serviceSelectors[0]: "),
        "{:?}",
        broken.invalid_selectors
    );
    let mut pools = vec![broken];
    pools.push(pool(
        "first-pool",
        json!({"addresses": ["192.168.117.100-192.168.117.110"]}),
    ));
    allocator.set_pools(pools);
    let labelled = request(
        "default",
        "web",
        json!({"metadata": {"labels": {"app": "web"}}}),
    );
    assert_eq!(
        ips(&allocator.allocate(&labelled).unwrap()),
        ["192.168.117.100"]
    );
    // Naming the pool still works: only its selection is off.
    let named = annotated("named", json!({"metallb.io/address-pool": "broken"}));
    assert_eq!(ips(&allocator.allocate(&named).unwrap()), ["198.51.100.0"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_0_and_dot_255() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool(
        "p",
        json!({"addresses": ["192.0.2.254-192.0.3.2"], "avoidBuggyIPs": true}),
    )]);
    let got: Vec<String> = (0..3)
        .map(|i| {
            let a = allocator.allocate(&request("default", &format!("s{i}"), json!({})));
            ips(&a.unwrap())[0].clone()
        })
        .collect();
    assert_eq!(got, ["192.0.2.254", "192.0.3.1", "192.0.3.2"]);
    let asked = allocator.allocate(&annotated(
        "x",
        json!({"metallb.io/loadBalancerIPs": "192.0.3.0"}),
    ));
    assert!(matches!(asked, Err(AllocationError::Avoided { .. })));
    assert_eq!(allocator.stats("p").available_ipv4, 0);
}

#[test]
fn service_allocation_priority_then_plain_pools_by_name() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        pool("b-plain", json!({"addresses": ["198.51.100.0/31"]})),
        pool("a-plain", json!({"addresses": ["198.51.100.10/32"]})),
        pool("low", json!({"addresses": ["192.0.2.1/32"], "serviceAllocation": {"priority": 5, "namespaces": ["team"]}})),
        pool("high", json!({"addresses": ["192.0.2.2/32"], "serviceAllocation": {"priority": 10, "namespaces": ["team"]}})),
        pool("unset", json!({"addresses": ["192.0.2.3/32"], "serviceAllocation": {"namespaces": ["team"]}})),
        pool("everyone", json!({"addresses": ["192.0.2.4/32"], "serviceAllocation": {}})),
    ]);
    let mut order = Vec::new();
    for i in 0..7 {
        let got = allocator.allocate(&request("team", &format!("s{i}"), json!({})));
        order.push(
            got.map(|a| a.pool.unwrap())
                .unwrap_or_else(|_| "none".into()),
        );
    }
    // Priority 5, then 10, then the unset ones by name (everyone, unset), then plain pools.
    assert_eq!(
        order,
        [
            "low", "high", "everyone", "unset", "a-plain", "b-plain", "b-plain"
        ]
    );
    // Another namespace only gets what is not reserved for "team"; all of it is used now.
    assert!(matches!(
        allocator.allocate(&request("other", "x", json!({}))),
        Err(AllocationError::Exhausted { .. })
    ));
}

#[test]
fn namespace_and_service_selectors() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool(
        "reserved",
        json!({
            "addresses": ["192.0.2.0/28"],
            "serviceAllocation": {
                "namespaceSelectors": [{"matchLabels": {"team": "web"}}],
                "serviceSelectors": [{"matchExpressions": [{"key": "expose", "operator": "In", "values": ["public"]}]}]
            }
        }),
    )]);
    let web: BTreeMap<String, String> = [("team".to_string(), "web".to_string())].into();
    let public = json!({"metadata": {"labels": {"expose": "public"}}});
    assert!(
        allocator
            .allocate(&request_with_ns_labels(
                "a",
                "s",
                public.clone(),
                web.clone()
            ))
            .is_ok()
    );
    assert_eq!(
        allocator.allocate(&request_with_ns_labels("a", "t", json!({}), web)),
        Err(AllocationError::NoPool)
    );
    assert_eq!(
        allocator.allocate(&request("b", "u", public)),
        Err(AllocationError::NoPool)
    );
}

#[test]
fn requested_addresses_are_checked_never_guessed() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        pool("a", json!({"addresses": ["192.0.2.0/28"]})),
        pool("b", json!({"addresses": ["198.51.100.0/28"]})),
    ]);
    let outside = annotated("x", json!({"metallb.io/loadBalancerIPs": "203.0.113.1"}));
    assert_eq!(
        allocator.allocate(&outside),
        Err(AllocationError::NotInAnyPool(
            "203.0.113.1".parse().unwrap()
        ))
    );
    let wrong_pool = annotated(
        "y",
        json!({"metallb.io/loadBalancerIPs": "192.0.2.5", "metallb.io/address-pool": "b"}),
    );
    assert!(matches!(
        allocator.allocate(&wrong_pool),
        Err(AllocationError::NotInRequestedPool { .. })
    ));
    allocator
        .allocate(&annotated(
            "first",
            json!({"metallb.io/loadBalancerIPs": "192.0.2.5"}),
        ))
        .unwrap();
    let taken = annotated("second", json!({"metallb.io/loadBalancerIPs": "192.0.2.5"}));
    assert!(matches!(
        allocator.allocate(&taken),
        Err(AllocationError::Sharing { .. })
    ));
    // Automatic allocation steps around the requested address.
    for i in 0..6 {
        let a = allocator
            .allocate(&request("default", &format!("auto{i}"), json!({})))
            .unwrap();
        assert_ne!(ips(&a), ["192.0.2.5"]);
    }
}

#[test]
fn sharing_by_key_ports_and_policy() {
    let mut allocator = seeded();
    let shared = |name: &str, protocol: &str, port: i32, key: &str| {
        request(
            "default",
            name,
            json!({
                "metadata": {"annotations": {"metallb.io/allow-shared-ip": key}},
                "spec": {"ports": [{"port": port, "protocol": protocol}]}
            }),
        )
    };
    let udp = allocator
        .allocate(&shared("dns-udp", "UDP", 53, "dns"))
        .unwrap();
    let tcp = allocator
        .allocate(&shared("dns-tcp", "TCP", 53, "dns"))
        .unwrap();
    assert_eq!(udp.ips, tcp.ips, "TCP/53 and UDP/53 share");
    let clash = allocator
        .allocate(&shared("dns-tcp-2", "TCP", 53, "dns"))
        .unwrap();
    assert_ne!(clash.ips, tcp.ips, "the same port cannot share");
    let other_key = allocator
        .allocate(&shared("web", "TCP", 80, "web"))
        .unwrap();
    assert_ne!(other_key.ips, tcp.ips);
    // Releasing one sharer keeps the address for the other.
    allocator.release(&shared("dns-udp", "UDP", 53, "dns").key);
    assert_eq!(allocator.holders(tcp.ips[0]).len(), 1);
    assert_eq!(allocator.stats("first-pool").assigned_ipv4, 3);
}

#[test]
fn dual_stack_from_one_pool() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        pool("a-v4-only", json!({"addresses": ["192.0.2.0/30"]})),
        pool(
            "b-dual",
            json!({"addresses": ["198.51.100.0/30", "2001:db8::/126"]}),
        ),
    ]);
    let require = allocator
        .allocate(&request(
            "default",
            "r",
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}),
        ))
        .unwrap();
    assert_eq!(ips(&require), ["198.51.100.0", "2001:db8::"]);
    assert_eq!(require.pool.as_deref(), Some("b-dual"));
    let prefer = allocator
        .allocate(&request(
            "default",
            "p",
            json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}}),
        ))
        .unwrap();
    assert_eq!(ips(&prefer), ["2001:db8::1", "198.51.100.1"]);
    let single_v6 = allocator
        .allocate(&request(
            "default",
            "s",
            json!({"spec": {"ipFamilies": ["IPv6"]}}),
        ))
        .unwrap();
    assert_eq!(ips(&single_v6), ["2001:db8::2"]);
    let v4 = allocator
        .allocate(&request("default", "v4", json!({})))
        .unwrap();
    assert_eq!(v4.pool.as_deref(), Some("a-v4-only"));
}

#[test]
fn changing_to_dual_stack_keeps_the_first_address() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![pool(
        "dual",
        json!({"addresses": ["198.51.100.0/30", "2001:db8::/126"]}),
    )]);
    let single = allocator
        .allocate(&request("default", "s", json!({})))
        .unwrap();
    let dual = allocator
        .allocate(&request(
            "default",
            "s",
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}),
        ))
        .unwrap();
    assert_eq!(dual.ips[0], single.ips[0]);
    assert_eq!(dual.ips.len(), 2);
    let back = allocator
        .allocate(&request("default", "s", json!({})))
        .unwrap();
    assert_eq!(back.ips, single.ips);
    assert_eq!(allocator.stats("dual").assigned_ipv6, 0);
}

#[test]
fn held_addresses_survive_pool_shrink_and_deletion() {
    let mut allocator = seeded();
    let myapp = request("default", "myapp", json!({}));
    let first = allocator.allocate(&myapp).unwrap();
    allocator.set_pools(vec![pool(
        "first-pool",
        json!({"addresses": ["192.168.117.105-192.168.117.110"]}),
    )]);
    let kept = allocator.allocate(&myapp).unwrap();
    assert_eq!(kept.ips, first.ips, "never renumbered implicitly");
    assert_eq!(kept.pool, None);
    assert_eq!(kept.former_pool.as_deref(), Some("first-pool"));
    assert_eq!(
        allocator.orphaned(),
        vec![(first.ips[0], vec![myapp.key.clone()])]
    );
    assert_eq!(
        allocator.orphaned_by_pool(),
        BTreeMap::from([(
            "first-pool".to_string(),
            vec![(first.ips[0], myapp.key.clone())]
        )])
    );
    allocator.set_pools(vec![]);
    assert_eq!(allocator.allocate(&myapp).unwrap().ips, first.ips);
    // A new pool with a higher priority does not move it either.
    allocator.set_pools(vec![pool(
        "better",
        json!({"addresses": ["192.0.2.0/28"], "serviceAllocation": {"priority": 1}}),
    )]);
    assert_eq!(allocator.allocate(&myapp).unwrap().ips, first.ips);
}

#[test]
fn restore_rebuilds_without_moving_anything() {
    let mut before = seeded();
    let names = ["a", "b", "c", "d"];
    let assigned: Vec<Assignment> = names
        .iter()
        .map(|n| before.allocate(&request("default", n, json!({}))).unwrap())
        .collect();
    before.release(&request("default", "b", json!({})).key);
    let mut after = seeded();
    // Restored in another order, as events may arrive.
    for (i, name) in names.iter().enumerate().rev().filter(|(_, n)| **n != "b") {
        let restored = after
            .restore(
                &request("default", name, json!({})),
                &assigned[i].ips,
                Some("first-pool"),
            )
            .unwrap();
        assert_eq!(restored, assigned[i]);
    }
    for (i, name) in names.iter().enumerate().filter(|(_, n)| **n != "b") {
        assert_eq!(
            after
                .allocate(&request("default", name, json!({})))
                .unwrap(),
            assigned[i]
        );
    }
    // The freed address is the next one handed out, with no collision.
    let new = after
        .allocate(&request("default", "new", json!({})))
        .unwrap();
    assert_eq!(new.ips, assigned[1].ips);
}

#[test]
fn explicit_changes_move_the_address() {
    let mut allocator = Allocator::new();
    allocator.set_pools(vec![
        pool("a", json!({"addresses": ["192.0.2.0/28"]})),
        pool("b", json!({"addresses": ["198.51.100.0/28"]})),
    ]);
    let first = allocator
        .allocate(&request("default", "s", json!({})))
        .unwrap();
    assert_eq!(first.pool.as_deref(), Some("a"));
    let moved = allocator
        .allocate(&annotated("s", json!({"metallb.io/address-pool": "b"})))
        .unwrap();
    assert_eq!(moved.pool.as_deref(), Some("b"));
    assert_eq!(allocator.stats("a").assigned_ipv4, 0);
    let asked = allocator
        .allocate(&annotated(
            "s",
            json!({"metallb.io/loadBalancerIPs": "192.0.2.9"}),
        ))
        .unwrap();
    assert_eq!(ips(&asked), ["192.0.2.9"]);
    assert_eq!(allocator.stats("b").assigned_ipv4, 0);
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: u8,
        sharing: Option<u8>,
        port: i32,
        udp: bool,
        local: bool,
        dual: bool,
        requested: Option<u8>,
    },
    Delete {
        name: u8,
    },
    Shrink {
        keep: u8,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0u8..12,
            prop::option::of(0u8..2),
            50i32..54,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(0u8..8),
        )
            .prop_map(|(name, sharing, port, udp, local, dual, requested)| Op::Create {
                name,
                sharing,
                port,
                udp,
                local,
                dual,
                requested,
            }),
        3 => (0u8..12).prop_map(|name| Op::Delete { name }),
        1 => (2u8..8).prop_map(|keep| Op::Shrink { keep }),
    ]
}

fn pools_keeping(keep: u8) -> Vec<Pool> {
    vec![
        pool(
            "dual",
            json!({"addresses": [format!("192.0.2.0-192.0.2.{}", keep - 1), "2001:db8::/125"]}),
        ),
        pool(
            "small",
            json!({"addresses": ["198.51.100.0/30"], "avoidBuggyIPs": true}),
        ),
    ]
}

fn op_request(op: &Op) -> Option<ServiceRequest> {
    let Op::Create {
        name,
        sharing,
        port,
        udp,
        local,
        dual,
        requested,
    } = op
    else {
        return None;
    };
    let mut annotations = serde_json::Map::new();
    if let Some(key) = sharing {
        annotations.insert(
            "metallb.io/allow-shared-ip".into(),
            json!(format!("k{key}")),
        );
    }
    if let Some(last) = requested {
        annotations.insert(
            "metallb.io/loadBalancerIPs".into(),
            json!(format!("192.0.2.{last}")),
        );
    }
    let protocol = if *udp { "UDP" } else { "TCP" };
    let mut spec =
        json!({"ports": [{"port": port, "protocol": protocol}], "selector": {"app": "a"}});
    if *local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    if *dual && requested.is_none() {
        spec["ipFamilyPolicy"] = json!("PreferDualStack");
    }
    let extra = json!({"metadata": {"annotations": annotations}, "spec": spec});
    Some(request("default", &format!("svc{name}"), extra))
}

/// The Services alive after `ops`, by name.
fn alive(ops: &[Op]) -> BTreeMap<String, ServiceRequest> {
    let mut requests = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create { .. } => {
                let r = op_request(op).unwrap();
                requests.insert(r.key.name.clone(), r);
            }
            Op::Delete { name } => {
                requests.remove(&format!("svc{name}"));
            }
            Op::Shrink { .. } => {}
        }
    }
    requests
}

/// Runs `ops`; every assignment after each step, checking the invariants on the way.
fn run(ops: &[Op]) -> Result<Vec<BTreeMap<String, Assignment>>, TestCaseError> {
    let mut allocator = Allocator::new();
    allocator.set_pools(pools_keeping(8));
    let mut history = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Create { .. } => {
                let _ = allocator.allocate(&op_request(op).unwrap());
            }
            Op::Delete { name } => {
                if let Some(request) = alive(&ops[..step]).get(&format!("svc{name}")) {
                    allocator.release(&request.key);
                }
            }
            Op::Shrink { keep } => allocator.set_pools(pools_keeping(*keep)),
        }
        let requests = alive(&ops[..=step]);
        let mut now = BTreeMap::new();
        let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceRequest>> = BTreeMap::new();
        for (name, request) in &requests {
            if let Some(assignment) = allocator.assignment(&request.key) {
                now.insert(name.clone(), assignment.clone());
                for ip in &assignment.ips {
                    by_ip.entry(*ip).or_default().push(request);
                    // Never an address outside the pool it is said to come from.
                    if let Some(pool) = &assignment.pool {
                        prop_assert!(
                            allocator.pool(pool).unwrap().contains(*ip),
                            "{ip} not in {pool}"
                        );
                    }
                }
            }
        }
        // Never two incompatible Services on one address.
        for (ip, holders) in &by_ip {
            for (i, a) in holders.iter().enumerate() {
                let others: Vec<Sharer> = holders[i + 1..].iter().map(|r| Sharer::of(r)).collect();
                prop_assert!(
                    can_share(&Sharer::of(a), &others).is_ok(),
                    "{ip} held by incompatible services"
                );
            }
        }
        history.push(now);
    }
    Ok(history)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold_and_results_are_deterministic(ops in prop::collection::vec(arb_op(), 1..40)) {
        let first = run(&ops)?;
        let second = run(&ops)?;
        prop_assert_eq!(first, second);
    }

    /// An address, once held, stays with its Service until that Service is deleted or asks for
    /// something else, whatever happens to the pools and to other Services.
    #[test]
    fn held_addresses_never_move(ops in prop::collection::vec(arb_op(), 1..40)) {
        let history = run(&ops)?;
        for (step, op) in ops.iter().enumerate().skip(1) {
            for (name, before) in &history[step - 1] {
                let touched = match op {
                    Op::Create { name: n, .. } | Op::Delete { name: n } => format!("svc{n}") == *name,
                    Op::Shrink { .. } => false,
                };
                if touched {
                    continue;
                }
                let after = history[step].get(name).map(|a| &a.ips);
                prop_assert_eq!(after, Some(&before.ips), "{} moved at step {}", name, step);
            }
        }
    }

    /// Restoring every assignment into a fresh allocator gives the same assignments, and what
    /// it allocates next collides with nothing.
    #[test]
    fn restore_reproduces_state(ops in prop::collection::vec(arb_op(), 1..40)) {
        let history = run(&ops)?;
        let last = history.last().cloned().unwrap_or_default();
        let keep = ops
            .iter()
            .rev()
            .find_map(|op| match op {
                Op::Shrink { keep } => Some(*keep),
                _ => None,
            })
            .unwrap_or(8);
        let mut fresh = Allocator::new();
        fresh.set_pools(pools_keeping(keep));
        let requests = alive(&ops);
        for (name, assignment) in last.iter().rev() {
            let restored = fresh.restore(&requests[name], &assignment.ips, assignment.pool.as_deref()).unwrap();
            prop_assert_eq!(&restored.ips, &assignment.ips);
        }
        if let Ok(assignment) = fresh.allocate(&request("default", "newcomer", json!({}))) {
            for ip in &assignment.ips {
                prop_assert_eq!(fresh.holders(*ip).len(), 1, "{} was already held", ip);
            }
        }
    }
}

#[test]
fn a_service_that_stops_sharing_moves_and_the_other_stays() {
    let mut allocator = seeded();
    let sharing = |name: &str, port: i32, key: Option<&str>| {
        let annotations = match key {
            Some(k) => json!({"metallb.io/allow-shared-ip": k}),
            None => json!({}),
        };
        request(
            "default",
            name,
            json!({"metadata": {"annotations": annotations}, "spec": {"ports": [{"port": port, "protocol": "TCP"}]}}),
        )
    };
    let a = allocator.allocate(&sharing("a", 50, Some("k"))).unwrap();
    let b = allocator.allocate(&sharing("b", 51, Some("k"))).unwrap();
    assert_eq!(a.ips, b.ips);
    let b_alone = allocator.allocate(&sharing("b", 51, None)).unwrap();
    assert_ne!(b_alone.ips, a.ips);
    assert_eq!(
        allocator
            .assignment(&sharing("a", 50, Some("k")).key)
            .unwrap()
            .ips,
        a.ips
    );
    assert_eq!(allocator.holders(a.ips[0]).len(), 1);
}

#[test]
fn a_service_naming_a_shrunk_pool_keeps_its_address() {
    let mut allocator = seeded();
    let pinned = annotated("pinned", json!({"metallb.io/address-pool": "first-pool"}));
    let first = allocator.allocate(&pinned).unwrap();
    allocator.set_pools(vec![pool(
        "first-pool",
        json!({"addresses": ["192.168.117.105-192.168.117.110"]}),
    )]);
    let kept = allocator.allocate(&pinned).unwrap();
    assert_eq!(
        kept.ips, first.ips,
        "the named pool shrank: the address stays"
    );
    assert_eq!(kept.origin_pool(), Some("first-pool"));
    // The address comes back into the pool: it is the pool's again, no longer orphaned.
    allocator.set_pools(vec![pool(
        "first-pool",
        json!({"addresses": ["192.168.117.100-192.168.117.110"]}),
    )]);
    let home = allocator.allocate(&pinned).unwrap();
    assert_eq!(home.pool.as_deref(), Some("first-pool"));
    assert_eq!(home.former_pool, None);
    assert!(allocator.orphaned_by_pool().is_empty());
}

#[test]
fn a_restored_address_outside_its_recorded_pool_is_reported_on_that_pool() {
    let mut allocator = seeded();
    let myapp = request("default", "myapp", json!({}));
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    let restored = allocator
        .restore(&myapp, &[ip], Some("first-pool"))
        .unwrap();
    assert_eq!(restored.pool, None);
    assert_eq!(restored.former_pool.as_deref(), Some("first-pool"));
    assert_eq!(
        allocator.orphaned_by_pool().get("first-pool"),
        Some(&vec![(ip, myapp.key.clone())])
    );
}

#[test]
fn addresses_shown_by_services_of_another_class_are_never_handed_out() {
    let mut allocator = seeded();
    let foreign = request("default", "theirs", json!({})).key;
    let held: Vec<IpAddr> = vec!["192.168.117.100".parse().unwrap()];
    assert!(allocator.set_foreign(&foreign, &held));
    assert!(
        !allocator.set_foreign(&foreign, &held),
        "no change the second time"
    );
    assert_eq!(allocator.stats("first-pool").available_ipv4, 10);
    let ours = allocator
        .allocate(&request("default", "ours", json!({})))
        .unwrap();
    assert_eq!(ips(&ours), ["192.168.117.101"]);
    // Asking for it explicitly is refused, not shared, whatever the sharing key says.
    let err = allocator
        .allocate(&request(
            "default",
            "explicit",
            json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.168.117.100",
                "metallb.io/allow-shared-ip": "k"}}}),
        ))
        .unwrap_err();
    assert!(
        matches!(err, AllocationError::HeldByForeignService { ref holder, .. } if *holder == foreign),
        "{err:?}"
    );
    assert_eq!(err.reason(), "AddressInUse");
    // Pools reloading does not lose the reservation.
    allocator.set_pools(vec![pool(
        "first-pool",
        json!({"addresses": ["192.168.117.100-192.168.117.110"]}),
    )]);
    assert_eq!(allocator.stats("first-pool").available_ipv4, 9);
    // Once the other Service lets go, the address is free again.
    assert!(allocator.set_foreign(&foreign, &[]));
    assert_eq!(allocator.stats("first-pool").available_ipv4, 10);
    let next = allocator
        .allocate(&request("default", "next", json!({})))
        .unwrap();
    assert_eq!(ips(&next), ["192.168.117.100"]);
}
