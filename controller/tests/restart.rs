//! Restarting the controller with 1,000 Services: every address is kept. In a test binary of
//! its own, so that its load does not slow the other end-to-end tests running beside it.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrolb_e2e::create_all;
use serde_json::json;

/// A restarted controller rebuilds every allocation from the Services' status before it
/// allocates anything: 1,000 Services keep their addresses, and a new one gets a free address.
#[tokio::test(flavor = "multi_thread")]
async fn restart_with_a_thousand_services_keeps_every_address() {
    let cluster = Cluster::new().await;
    let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "big", "namespace": "metallb-system"},
        "spec": {"addresses": ["2001:db8:100::/118"]}});
    create_all(&cluster.admin, vec![pool]).await.unwrap();
    let services: Vec<serde_json::Value> = (0..1000)
        .map(|i| lb_service(&format!("svc-{i:04}"), json!({"ipFamilies": ["IPv6"]})))
        .collect();
    create_all(&cluster.admin, services).await.unwrap();
    let first = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    wait_until("1,000 Services have an address", 120, || async {
        addresses(&api).await.values().all(|ips| ips.len() == 1)
    })
    .await;
    let before = addresses(&api).await;
    let distinct: std::collections::BTreeSet<&Vec<String>> = before.values().collect();
    assert_eq!(distinct.len(), 1000, "every Service has its own address");
    drop(first);

    let second = ControllerProcess::start(&cluster.path("controller"));
    let restored = tokio::task::spawn_blocking(move || {
        let line = second.wait_for_log(&["restored the addresses Services hold"]);
        (line, second)
    })
    .await
    .unwrap();
    assert!(restored.0.contains("restored=1000"), "{}", restored.0);
    create_all(
        &cluster.admin,
        vec![lb_service("newcomer", json!({"ipFamilies": ["IPv6"]}))],
    )
    .await
    .unwrap();
    let newcomer = wait_for_ip(&api, "newcomer").await;
    let after = addresses(&api).await;
    for (name, ips) in &before {
        assert_eq!(after.get(name), Some(ips), "{name} was renumbered");
    }
    assert!(
        !distinct.contains(&ingress_ips(&newcomer)),
        "the newcomer got a held address"
    );
}
