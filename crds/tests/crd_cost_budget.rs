//! The CEL cost check agrees with every verdict recorded from a real kube-apiserver, and every
//! CRD ferrolb ships passes it.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferrolb_crds::crd_validation::validate_crd_rules;
use serde_json::Value;

fn golden(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lab/tests/golden")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn the_crd_kube_apiserver_refused_is_refused_with_its_causes() {
    let exchange = golden("46-create-crd-cel-cost-over-budget");
    let errors = validate_crd_rules(&exchange["request"]["body"]);
    let causes: Vec<(String, String)> =
        errors.iter().map(|e| (e.field.clone(), e.body())).collect();
    let recorded: Vec<(String, String)> = exchange["response"]["body"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(causes, recorded);
}

#[test]
fn the_crd_kube_apiserver_admitted_is_admitted() {
    let exchange = golden("47-create-crd-cel-within-budget");
    let errors = validate_crd_rules(&exchange["request"]["body"]);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn every_shipped_crd_fits_the_budgets() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/crd");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors = validate_crd_rules(&crd);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 4, "the four CRDs of config/crd");
}
