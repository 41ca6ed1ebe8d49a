//! The generated CRDs: checked in unchanged, and their rules refuse what they should.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrolb_crds::cel_rules;
use ferrolb_crds::crd_manifests::{all_crds, file_name, schema_of, to_yaml};
use ferrolb_crds::schema_validation::{CrdSchema, FieldError};
use ferrolb_crds::{IPAddressPool, L2AdvertisementDefinition, parse_pool_address};
use kube::CustomResourceExt;
use proptest::prelude::*;
use serde_json::{Value, json};

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd")
}

#[test]
fn checked_in_crd_yaml_matches_the_types() {
    for crd in all_crds() {
        let path = crd_dir().join(file_name(&crd));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -p ferrolb-crds --bin crdgen`",
                path.display()
            )
        });
        assert!(
            on_disk == to_yaml(&crd).unwrap(),
            "{} differs from the types; run `cargo run -p ferrolb-crds --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn kustomization_lists_every_crd() {
    let kustomization = std::fs::read_to_string(crd_dir().join("Kustomization")).unwrap();
    for crd in all_crds() {
        assert!(
            kustomization.contains(&file_name(&crd)),
            "{} missing",
            file_name(&crd)
        );
    }
}

fn schema_for(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> CrdSchema {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == crd.spec.names.kind)
        .expect("every derived CRD is in all_crds()");
    CrdSchema::new(schema_of(&crd))
}

fn errors_for(schema: &CrdSchema, mut object: Value) -> Vec<FieldError> {
    schema.apply_defaults(&mut object);
    schema.prune(&mut object);
    schema.validate(&object, None)
}

fn pool(addresses: &[&str]) -> Value {
    json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p", "namespace": "metallb-system"},
        "spec": {"addresses": addresses}
    })
}

fn pool_errors(addresses: &[&str]) -> Vec<String> {
    errors_for(&schema_for(&IPAddressPool::crd()), pool(addresses))
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn valid_pools_pass_and_get_their_defaults() {
    let schema = schema_for(&IPAddressPool::crd());
    let mut object = pool(&[
        "192.168.117.100-192.168.117.110",
        "192.0.2.0/24",
        "198.51.100.7/32",
        "2001:db8::/120",
        "2001:db8:1::10 - 2001:db8:1::1f",
        "203.0.113.5-203.0.113.5",
    ]);
    schema.apply_defaults(&mut object);
    assert!(schema.validate(&object, None).is_empty());
    assert_eq!(object["spec"]["autoAssign"], json!(true));
    assert_eq!(object["spec"]["avoidBuggyIPs"], json!(false));
}

#[test]
fn reversed_range_is_refused() {
    assert_eq!(
        pool_errors(&["192.0.2.0/24", "192.0.2.20-192.0.2.10"]),
        vec![format!(
            "spec.addresses[1]: Invalid value: \"string\": {}",
            cel_rules::ADDRESS_ORDER_MESSAGE
        )]
    );
    assert_eq!(pool_errors(&["2001:db8::ff-2001:db8::1"]).len(), 1);
    // Differing only in the last bit, and in the first.
    assert_eq!(pool_errors(&["192.0.2.1-192.0.2.0"]).len(), 1);
    assert_eq!(pool_errors(&["128.0.0.0-127.255.255.255"]).len(), 1);
}

#[test]
fn mixed_family_range_is_refused() {
    assert_eq!(
        pool_errors(&["192.0.2.1-2001:db8::1"]),
        vec![format!(
            "spec.addresses[0]: Invalid value: \"string\": {}",
            cel_rules::ADDRESS_FAMILY_MESSAGE
        )]
    );
}

#[test]
fn malformed_entries_are_refused() {
    for bad in [
        "192.0.2.0/33",
        "192.0.2/24",
        "not-an-ip",
        "192.0.2.1",
        "2001:db8::/129",
        "1-2-3",
    ] {
        assert_eq!(
            pool_errors(&[bad]),
            vec![format!(
                "spec.addresses[0]: Invalid value: \"string\": {}",
                cel_rules::ADDRESS_SYNTAX_MESSAGE
            )],
            "{bad}"
        );
    }
}

#[test]
fn pool_needs_addresses() {
    let schema = schema_for(&IPAddressPool::crd());
    let missing = errors_for(&schema, json!({"spec": {}}));
    assert_eq!(missing[0].to_string(), "spec.addresses: Required value");
    assert_eq!(
        pool_errors(&[]),
        vec![
            "spec.addresses: Invalid value: 0: spec.addresses in body should have at least 1 items"
        ]
    );
}

#[test]
fn weight_out_of_bounds_is_refused() {
    let schema = schema_for(&L2AdvertisementDefinition::crd());
    let advertisement = |weight: i64| {
        json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "bad", "namespace": "metallb-system"},
            "spec": {"preferredNodeSelectors": [{"weight": weight, "preference": {"matchLabels": {"a": "b"}}}]}
        })
    };
    // The exact message kube-apiserver 1.32 gave (lab/tests/golden/26-*).
    assert_eq!(
        errors_for(&schema, advertisement(1000))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "spec.preferredNodeSelectors[0].weight: Invalid value: 1000: spec.preferredNodeSelectors[0].weight in body should be less than or equal to 100"
        ]
    );
    assert_eq!(
        errors_for(&schema, advertisement(0))[0].to_string(),
        "spec.preferredNodeSelectors[0].weight: Invalid value: 0: spec.preferredNodeSelectors[0].weight in body should be greater than or equal to 1"
    );
    assert!(errors_for(&schema, advertisement(1)).is_empty());
    assert!(errors_for(&schema, advertisement(100)).is_empty());
}

#[test]
fn service_l2_status_node_is_immutable() {
    let crd = ferrolb_crds::ServiceL2StatusDefinition::crd();
    let schema = schema_for(&crd);
    let status = |node: &str| json!({"spec": {}, "status": {"node": node, "serviceName": "s", "serviceNamespace": "d"}});
    assert!(schema.validate(&status("a"), Some(&status("a"))).is_empty());
    let errors = schema.validate(&status("b"), Some(&status("a")));
    assert_eq!(
        errors[0].to_string(),
        "status.node: Invalid value: \"string\": Value is immutable"
    );
}

/// Every rule of every generated CRD stays within kube-apiserver's cost budgets, as
/// kube-apiserver estimates them (`crd_cost_budget.rs` checks the estimate against real
/// verdicts and the checked-in YAML).
#[test]
fn rules_fit_the_cost_budget() {
    for crd in all_crds() {
        let crd = serde_json::to_value(&crd).unwrap();
        let errors = ferrolb_crds::crd_validation::validate_crd_rules(&crd);
        assert!(
            errors.is_empty(),
            "{}: {errors:#?}",
            crd["metadata"]["name"]
        );
    }
}

/// Entries built from random addresses, so that both valid and invalid ones are common.
fn arb_entry() -> impl Strategy<Value = String> {
    let v4 = any::<u32>().prop_map(|x| std::net::Ipv4Addr::from(x).to_string());
    let v6 = any::<u128>().prop_map(|x| std::net::Ipv6Addr::from(x).to_string());
    // Few random values share a prefix; these make ranges whose ends differ only late.
    let near_v4 = (any::<u32>(), 0u32..4).prop_map(|(x, d)| {
        format!(
            "{}-{}",
            std::net::Ipv4Addr::from(x),
            std::net::Ipv4Addr::from(x.wrapping_add(d).wrapping_sub(1))
        )
    });
    let near_v6 = (any::<u128>(), 0u128..4).prop_map(|(x, d)| {
        format!(
            "{}-{}",
            std::net::Ipv6Addr::from(x),
            std::net::Ipv6Addr::from(x.wrapping_add(d).wrapping_sub(1))
        )
    });
    let ip = prop_oneof![v4.clone(), v6.clone()];
    prop_oneof![
        (ip.clone(), ip.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        (v4.clone(), v4).prop_map(|(a, b)| format!("{a} - {b}")),
        (v6.clone(), v6).prop_map(|(a, b)| format!("{a}-{b}")),
        near_v4,
        near_v6,
        (ip.clone(), 0u8..140).prop_map(|(a, p)| format!("{a}/{p}")),
        ip,
        "[0-9a-f.:/ -]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The CRD's CEL rules and the Rust parser the controller uses agree on every entry, so
    /// nothing the API server admits can fail in the controller, and nothing it refuses would
    /// have worked.
    #[test]
    fn cel_rules_and_parser_agree(entry in arb_entry()) {
        let admitted = pool_errors(&[&entry]).is_empty();
        let parsed = parse_pool_address(&entry);
        prop_assert_eq!(admitted, parsed.is_ok(), "{:?}: parser says {:?}", entry, parsed);
    }
}

/// `kubectl explain` shows these: every property of every CRD has a description.
#[test]
fn every_field_is_described() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, child) in properties {
                let child_path = format!("{path}.{name}");
                let described = child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(child_path.clone());
                }
                walk(child, &child_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for crd in all_crds() {
        walk(&schema_of(&crd), &crd.spec.names.kind, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}
