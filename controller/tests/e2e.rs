//! The ferrolb-controller binary against the emulated API server, as a cluster runs it: over
//! HTTPS, under its own service account, with `config/`'s RBAC enforced.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ferrolb_e2e::create_all;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;

/// The suite's path to an existing cluster (`FERROLB_KUBECONFIG`): ferrolb's API installed
/// from `config/`, the controller under its ServiceAccount with a TokenRequest token, and
/// everything removed afterwards. An emulated API server stands in for the existing cluster.
#[tokio::test(flavor = "multi_thread")]
async fn the_suite_runs_against_an_existing_cluster() {
    let stand_in = ferrolb_lab::apiserver::ApiServer::new()
        .start_tls("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    stand_in
        .server()
        .identities()
        .enable(ADMIN_TOKEN, ferrolb_lab::apiserver::auth::UserInfo::admin());
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    stand_in.kubeconfig(ADMIN_TOKEN).write(&admin).unwrap();
    let cluster = Cluster::existing(&admin).await;
    assert!(cluster.emulated.is_none());
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let myapp = wait_for_ip(&cluster.services(), "myapp").await;
    assert_eq!(ingress_ips(&myapp), ["192.168.117.100"]);
    drop(cluster);
    let left = Command::new("kubectl")
        .args([
            "get",
            "crd,svc/myapp,namespace/metallb-system",
            "-o",
            "name",
            "--ignore-not-found",
        ])
        .env("KUBECONFIG", &admin)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "nothing is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_example_gets_its_external_ip() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let controller = ControllerProcess::start(&cluster.path("controller"));
    let health = controller.health_address();
    let myapp = wait_for_ip(&cluster.services(), "myapp").await;
    assert_eq!(ingress_ips(&myapp), ["192.168.117.100"]);
    let ingress = &myapp
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0];
    assert_eq!(ingress.ip_mode.as_deref(), Some("VIP"));

    // The annotation, the Event and the pool's counts follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let service = cluster.services().get("myapp").await.unwrap();
        let annotated = service
            .metadata
            .annotations
            .unwrap_or_default()
            .get("metallb.io/ip-allocated-from-pool")
            .cloned();
        let pool = pool_api(&cluster.admin).get("first-pool").await.unwrap();
        let counts = (
            pool.data["status"]["assignedIPv4"].as_i64(),
            pool.data["status"]["availableIPv4"].as_i64(),
        );
        if annotated.as_deref() == Some("first-pool") && counts == (Some(1), Some(10)) {
            assert_eq!(pool.data["status"]["conditions"][0]["type"], "Valid");
            assert_eq!(pool.data["status"]["conditions"][0]["status"], "True");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "annotation {annotated:?}, pool counts {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.admin.clone(), "default");
    wait_until("the IPAllocated Event is recorded", 60, || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=myapp"))
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("IPAllocated")
                    && e.message.as_deref() == Some("Assigned IP [192.168.117.100]")
            })
    })
    .await;

    // Health and metrics.
    let (metrics, ready, alive) = tokio::task::spawn_blocking(move || {
        (
            http_get(&health, "/metrics"),
            http_get(&health, "/readyz"),
            http_get(&health, "/healthz"),
        )
    })
    .await
    .unwrap();
    assert_eq!(ready.0, 200);
    assert_eq!(alive.0, 200);
    assert_eq!(metrics.0, 200);
    for expected in [
        "ferrolb_controller_allocations_total 1",
        "ferrolb_controller_pool_addresses_in_use{pool=\"first-pool\",family=\"IPv4\"} 1",
        "ferrolb_controller_pool_addresses{pool=\"first-pool\",family=\"IPv4\"} 11",
        "ferrolb_controller_reconcile_duration_seconds_count",
        // MetalLB's names, for MetalLB's alerts and dashboards.
        "metallb_allocator_addresses_in_use_total{pool=\"first-pool\"} 1\n",
        "metallb_allocator_addresses_total{pool=\"first-pool\"} 11\n",
        "metallb_k8s_client_config_loaded_bool 1\n",
        "metallb_k8s_client_config_stale_bool 0\n",
    ] {
        assert!(
            metrics.1.contains(expected),
            "{expected} not in:\n{}",
            metrics.1
        );
    }

    // What a user sees: kubectl get svc with the EXTERNAL-IP.
    let admin = cluster.path("admin");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .args(["get", "svc", "myapp"])
            .env("KUBECONFIG", admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["myapp", "LoadBalancer"], "{table}");
    assert_eq!(row[3], "192.168.117.100", "{table}");
}

/// The controller's role without `patch` on services/status: it cannot publish addresses, and
/// says so in its log; the Service stays pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_verb_makes_the_controller_fail_visibly() {
    let cluster = Cluster::new().await;
    let roles_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        "clusterroles",
    );
    let roles: Api<DynamicObject> = Api::all_with(cluster.admin.clone(), &roles_resource);
    let mut role = roles.get("ferrolb:controller").await.unwrap();
    let rules = role.data["rules"].as_array_mut().unwrap();
    rules.retain(|r| r["resources"] != json!(["services/status"]));
    roles
        .replace("ferrolb:controller", &PostParams::default(), &role)
        .await
        .unwrap();
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let controller = ControllerProcess::start(&cluster.path("controller"));
    let line = tokio::task::spawn_blocking(move || {
        controller.wait_for_log(&[
            "reconcile failed",
            "default/myapp",
            "cannot patch resource \\\"services/status\\\"",
        ])
    })
    .await
    .unwrap();
    assert!(line.contains("WARN"), "{line}");
    let myapp = cluster.services().get("myapp").await.unwrap();
    assert!(
        ingress_ips(&myapp).is_empty(),
        "published without the permission to: {myapp:?}"
    );
}

/// Dropped watches, a compaction (410) and failing requests lose no Service.
#[tokio::test(flavor = "multi_thread")]
async fn watch_drops_and_api_errors_lose_nothing() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    create_all(&cluster.admin, vec![lb_service("a", json!({}))])
        .await
        .unwrap();
    wait_for_ip(&api, "a").await;
    let Some(emulator) = cluster.emulator() else {
        return;
    };
    emulator.server().faults().drop_watches();
    create_all(&cluster.admin, vec![lb_service("b", json!({}))])
        .await
        .unwrap();
    wait_for_ip(&api, "b").await;
    emulator.server().store().compact();
    emulator.server().faults().drop_watches();
    create_all(&cluster.admin, vec![lb_service("c", json!({}))])
        .await
        .unwrap();
    wait_for_ip(&api, "c").await;
    // The next requests fail, whoever sends them; the test's own write may be among them.
    emulator.server().faults().fail_next(6, 500);
    loop {
        match create_all(&cluster.admin, vec![lb_service("d", json!({}))]).await {
            Ok(()) => break,
            Err(e) if e.to_string().contains("500") || e.to_string().contains("injected") => {
                continue;
            }
            Err(e) => panic!("{e}"),
        }
    }
    wait_for_ip(&api, "d").await;
    let all = addresses(&api).await;
    let distinct: std::collections::BTreeSet<&Vec<String>> = all.values().collect();
    assert_eq!(distinct.len(), 4, "{all:?}");
}

/// A pool that shrinks or disappears takes no address from its Services.
#[tokio::test(flavor = "multi_thread")]
async fn shrinking_or_deleting_a_pool_keeps_addresses() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let controller = ControllerProcess::start(&cluster.path("controller"));
    let health = controller.health_address();
    let metrics = || {
        let health = health.clone();
        async move {
            tokio::task::spawn_blocking(move || http_get(&health, "/metrics").1)
                .await
                .unwrap()
        }
    };
    let api = cluster.services();
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "myapp").await),
        ["192.168.117.100"]
    );
    // An invalid pool beside it: the configuration is stale until it is fixed or removed.
    create_broken_pool(&cluster).await;
    wait_until(
        "the invalid pool makes the configuration stale",
        60,
        || async {
            metrics()
                .await
                .contains("metallb_k8s_client_config_stale_bool 1\n")
        },
    )
    .await;
    pool_api(&cluster.admin)
        .delete("broken", &Default::default())
        .await
        .unwrap();
    wait_until("the configuration is whole again", 60, || async {
        let text = metrics().await;
        text.contains("metallb_k8s_client_config_stale_bool 0\n")
            && !text.contains("pool=\"broken\"")
    })
    .await;
    let pools = pool_api(&cluster.admin);
    set_pool_addresses(&cluster, "first-pool", &["192.168.117.105-192.168.117.110"]).await;
    // The pool's status catches up: six free addresses, none assigned from it any more.
    wait_until("the pool reports its new size", 60, || async {
        pool_counts(&cluster, "first-pool").await == (Some(0), Some(6))
    })
    .await;
    assert_eq!(
        ingress_ips(&api.get("myapp").await.unwrap()),
        ["192.168.117.100"]
    );
    pools
        .delete("first-pool", &Default::default())
        .await
        .unwrap();
    create_all(&cluster.admin, vec![lb_service("late", json!({}))])
        .await
        .unwrap();
    wait_until("the new Service is refused with an Event", 60, || async {
        has_event(&cluster, "late", "AllocationFailed").await
    })
    .await;
    // A deleted pool's series go away with it.
    wait_until("the deleted pool leaves the metrics", 60, || async {
        !metrics().await.contains("pool=\"first-pool\"")
    })
    .await;
    assert_eq!(
        ingress_ips(&api.get("myapp").await.unwrap()),
        ["192.168.117.100"]
    );
    assert!(ingress_ips(&api.get("late").await.unwrap()).is_empty());
}

/// Deleting a Service or making it a ClusterIP Service frees its address.
#[tokio::test(flavor = "multi_thread")]
async fn addresses_are_released_on_delete_and_type_change() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    create_all(
        &cluster.admin,
        vec![lb_service("one", json!({})), lb_service("two", json!({}))],
    )
    .await
    .unwrap();
    wait_for_ip(&api, "one").await;
    wait_for_ip(&api, "two").await;
    wait_until("two addresses are counted", 60, || async {
        pool_counts(&cluster, "first-pool").await == (Some(2), Some(9))
    })
    .await;
    api.delete("one", &Default::default()).await.unwrap();
    let to_cluster_ip = json!({"spec": {"type": "ClusterIP"}});
    api.patch(
        "two",
        &Default::default(),
        &kube::api::Patch::Merge(&to_cluster_ip),
    )
    .await
    .unwrap();
    wait_until("both addresses are free", 60, || async {
        pool_counts(&cluster, "first-pool").await == (Some(0), Some(11))
    })
    .await;
    wait_until("two's status is cleared", 60, || async {
        ingress_ips(&api.get("two").await.unwrap()).is_empty()
    })
    .await;
    create_all(&cluster.admin, vec![lb_service("three", json!({}))])
        .await
        .unwrap();
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "three").await),
        ["192.168.117.100"]
    );
}

async fn lease_holder_is(cluster: &Cluster, identity: &str) -> bool {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.admin.clone(), "metallb-system");
    let lease = leases.get_opt("ferrolb-controller").await.unwrap();
    lease
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        .as_deref()
        == Some(identity)
}

/// Of two replicas one acts; when it is killed the other takes over and keeps allocating, and a
/// replica that stops gracefully hands over at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_takes_over_from_a_dead_leader() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let first = ControllerProcess::start_named(&cluster.path("controller"), "replica-a");
    let first = tokio::task::spawn_blocking(move || {
        first.wait_for_log(&["became leader"]);
        first
    })
    .await
    .unwrap();
    let second = ControllerProcess::start_named(&cluster.path("controller"), "replica-b");
    create_all(&cluster.admin, vec![lb_service("before", json!({}))])
        .await
        .unwrap();
    assert_eq!(
        ingress_ips(&wait_for_ip(&cluster.services(), "before").await),
        ["192.168.117.100"]
    );
    assert!(lease_holder_is(&cluster, "replica-a").await);

    drop(first); // SIGKILL: no chance to release the Lease.
    let second = tokio::task::spawn_blocking(move || {
        second.wait_for_log(&["became leader"]);
        second
    })
    .await
    .unwrap();
    assert!(lease_holder_is(&cluster, "replica-b").await);
    create_all(&cluster.admin, vec![lb_service("after", json!({}))])
        .await
        .unwrap();
    assert_eq!(
        ingress_ips(&wait_for_ip(&cluster.services(), "after").await),
        ["192.168.117.101"]
    );

    // SIGTERM: the leader releases the Lease on its way out, and a new replica takes it.
    let pid = second.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let released =
        tokio::task::spawn_blocking(move || second.wait_for_log(&["released the leader Lease"]))
            .await
            .unwrap();
    assert!(released.contains("INFO"), "{released}");
    let third = ControllerProcess::start_named(&cluster.path("controller"), "replica-c");
    tokio::task::spawn_blocking(move || third.wait_for_log(&["became leader"]))
        .await
        .unwrap();
    wait_until("replica-c holds the Lease", 60, || {
        lease_holder_is(&cluster, "replica-c")
    })
    .await;
}

async fn configuration_state(
    cluster: &Cluster,
    name: &str,
) -> Option<ferrolb_crds::ConfigurationState> {
    let api: Api<ferrolb_crds::ConfigurationState> =
        Api::namespaced(cluster.admin.clone(), "metallb-system");
    api.get_opt(name).await.unwrap()
}

/// The controller's verdict on the configuration is its `controller` ConfigurationState,
/// labelled as MetalLB labels it: Invalid and naming the pool while one is broken, Valid again
/// once it is gone.
#[tokio::test(flavor = "multi_thread")]
async fn the_controller_reports_its_verdict_as_a_configuration_state() {
    use ferrolb_crds::ConfigurationResult;
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let result_is = |wanted: ConfigurationResult, naming: &'static str| {
        let cluster = &cluster;
        move || async move {
            configuration_state(cluster, "controller")
                .await
                .and_then(|o| o.status)
                .is_some_and(|s| {
                    s.result == Some(wanted) && s.error_summary.unwrap_or_default().contains(naming)
                })
        }
    };
    wait_until(
        "the controller reports Valid",
        60,
        result_is(ConfigurationResult::Valid, ""),
    )
    .await;
    let state = configuration_state(&cluster, "controller").await.unwrap();
    assert_eq!(
        state.metadata.labels.unwrap()["metallb.io/component-type"],
        "controller"
    );

    create_broken_pool(&cluster).await;
    wait_until(
        "the controller reports the broken pool",
        60,
        result_is(ConfigurationResult::Invalid, "pool broken: "),
    )
    .await;
    let status = configuration_state(&cluster, "controller")
        .await
        .unwrap()
        .status
        .unwrap();
    let condition = &status.conditions.unwrap()[0];
    assert_eq!(
        (condition.type_.as_str(), condition.status.as_str()),
        ("poolReconcilerValid", "False")
    );
    pool_api(&cluster.admin)
        .delete("broken", &Default::default())
        .await
        .unwrap();
    wait_until(
        "the controller reports Valid again",
        60,
        result_is(ConfigurationResult::Valid, ""),
    )
    .await;
}

async fn lease_record(cluster: &Cluster) -> (Option<String>, Option<String>) {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.admin.clone(), "metallb-system");
    let spec = leases
        .get_opt("ferrolb-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0.to_string()),
    )
}

fn is_leader_gauge(health: &str) -> Option<String> {
    let metrics = http_get(health, "/metrics").1;
    metrics
        .lines()
        .find(|l| l.starts_with("ferrolb_controller_is_leader "))
        .map(|l| l["ferrolb_controller_is_leader ".len()..].to_string())
}

/// A leader whose renewal hangs (the API server stalls) stops acting at its renew deadline,
/// while the renewal is still unanswered, rather than once an answer comes; afterwards both
/// replicas live on, one leading and the other standing by to take over.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_renewals_stall_stops_acting_and_stands_by() {
    let cluster = Cluster::new().await;
    let Some(emulator) = cluster.emulator() else {
        return;
    };
    cluster.apply_seed().await;
    let first = ControllerProcess::start_named(&cluster.path("controller"), "replica-a");
    let (first, health) = tokio::task::spawn_blocking(move || {
        let health = first.health_address();
        first.wait_for_log(&["became leader"]);
        (first, health)
    })
    .await
    .unwrap();
    let second = ControllerProcess::start_named(&cluster.path("controller"), "replica-b");

    emulator.server().faults().pause();
    let (mut first, stopped) = tokio::task::spawn_blocking(move || {
        let line = first.wait_for_log(&["stopped leading"]);
        (first, line)
    })
    .await
    .unwrap();
    assert!(stopped.contains("renew deadline"), "{stopped}");
    // Still paused: its renewal has had no answer, yet it no longer counts itself leader.
    let probe = health.clone();
    let gauge = tokio::task::spawn_blocking(move || is_leader_gauge(&probe))
        .await
        .unwrap();
    assert_eq!(gauge.as_deref(), Some("0"));
    emulator.server().faults().resume();

    // Whoever wins the race after the stall, the holder renews and neither replica exits.
    // The same holder writing two new renewal times: the race is over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut record = lease_record(&cluster).await;
    let mut renewals = 0;
    while renewals < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Lease is not renewed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = lease_record(&cluster).await;
        if now.1 != record.1 {
            renewals = if now.0 == record.0 { renewals + 1 } else { 0 };
            record = now;
        }
    }
    let holder = record.0.unwrap();
    let mut second = second;
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "replica-a exited"
    );
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "replica-b exited"
    );

    // The standby takes over when the holder dies, so it really stands by.
    let (dead, standby) = if holder == "replica-a" {
        (first, second)
    } else {
        (second, first)
    };
    drop(dead);
    tokio::task::spawn_blocking(move || standby.wait_for_log(&["became leader"]))
        .await
        .unwrap();
}

/// A leader that finds another replica in the Lease stops acting and stands by, and takes over
/// again once that replica is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_finds_the_lease_taken_stands_by() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let first = ControllerProcess::start_named(&cluster.path("controller"), "replica-a");
    let first = tokio::task::spawn_blocking(move || {
        first.wait_for_log(&["became leader"]);
        first
    })
    .await
    .unwrap();
    let second = ControllerProcess::start_named(&cluster.path("controller"), "replica-b");

    // As if replica-b had won a race for the Lease.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.admin.clone(), "metallb-system");
    let mut lease = leases.get("ferrolb-controller").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("replica-b".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("ferrolb-controller", &PostParams::default(), &lease)
        .await
        .unwrap();

    let (mut first, stopped) = tokio::task::spawn_blocking(move || {
        let line = first.wait_for_log(&["stopped leading"]);
        (first, line)
    })
    .await
    .unwrap();
    assert!(stopped.contains("replica-b"), "{stopped}");
    let second = tokio::task::spawn_blocking(move || {
        second.wait_for_log(&["became leader"]);
        second
    })
    .await
    .unwrap();
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "replica-a exited"
    );

    drop(second);
    tokio::task::spawn_blocking(move || first.wait_for_log(&["became leader"]))
        .await
        .unwrap();
    wait_until("replica-a holds the Lease again", 60, || {
        lease_holder_is(&cluster, "replica-a")
    })
    .await;
}

/// A pool named "broken" that the API server admits and the controller cannot use all of: a
/// serviceAllocation selector with an operator that does not exist.
async fn create_broken_pool(cluster: &Cluster) {
    create_all(
        &cluster.admin,
        vec![pool_object(
            "broken",
            json!({"addresses": ["192.0.2.10-192.0.2.20"], "serviceAllocation": {"priority": 1,
                   "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Near"}]}]}}),
        )],
    )
    .await
    .unwrap();
}

fn pool_object(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

/// serviceAllocation picks pools by namespace labels and priority; autoAssign false pools wait
/// for an explicit request.
#[tokio::test(flavor = "multi_thread")]
async fn selectors_priorities_and_explicit_requests() {
    let cluster = Cluster::new().await;
    create_all(&cluster.admin, vec![
        pool_object("general", json!({"addresses": ["192.0.2.0/28"]})),
        pool_object("team-low", json!({"addresses": ["198.51.100.0/28"],
            "serviceAllocation": {"priority": 20, "namespaceSelectors": [{"matchLabels": {"team": "web"}}]}})),
        pool_object("team-high", json!({"addresses": ["198.51.100.16/28"],
            "serviceAllocation": {"priority": 10, "namespaceSelectors": [{"matchLabels": {"team": "web"}}]}})),
        pool_object("manual", json!({"addresses": ["203.0.113.0/28"], "autoAssign": false})),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"team": "web"}}}),
    ]).await.unwrap();
    let mut in_web = lb_service("site", json!({}));
    in_web["metadata"]["namespace"] = json!("web");
    let manual = {
        let mut s = lb_service("manual", json!({}));
        s["metadata"]["annotations"] = json!({"metallb.io/address-pool": "manual"});
        s
    };
    let pinned = {
        let mut s = lb_service("pinned", json!({}));
        s["metadata"]["annotations"] =
            json!({"metallb.universe.tf/loadBalancerIPs": "203.0.113.9"});
        s
    };
    create_all(
        &cluster.admin,
        vec![in_web, lb_service("plain", json!({})), manual, pinned],
    )
    .await
    .unwrap();
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let web: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(cluster.admin.clone(), "web");
    assert_eq!(
        ingress_ips(&wait_for_ip(&web, "site").await),
        ["198.51.100.16"],
        "priority 10 first"
    );
    let api = cluster.services();
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "plain").await),
        ["192.0.2.0"]
    );
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "manual").await),
        ["203.0.113.0"]
    );
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "pinned").await),
        ["203.0.113.9"]
    );
    // The old annotation prefix works and is pointed out once.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.admin.clone(), "default");
    wait_until("a DeprecatedAnnotation warning", 60, || async {
        events
            .list(&ListParams::default().fields("involvedObject.name=pinned"))
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DeprecatedAnnotation")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
}

/// allow-shared-ip: DNS over TCP and UDP on one address; dual-stack Services from one pool.
#[tokio::test(flavor = "multi_thread")]
async fn sharing_and_dual_stack() {
    let cluster = Cluster::new().await;
    create_all(
        &cluster.admin,
        vec![pool_object(
            "dual",
            json!({"addresses": ["192.0.2.10-192.0.2.20", "2001:db8::10-2001:db8::20"]}),
        )],
    )
    .await
    .unwrap();
    let dns = |name: &str, protocol: &str| {
        let mut s = lb_service(name, json!({"ports": [{"port": 53, "protocol": protocol}]}));
        s["metadata"]["annotations"] = json!({"metallb.io/allow-shared-ip": "dns"});
        s
    };
    create_all(
        &cluster.admin,
        vec![
            dns("dns-tcp", "TCP"),
            dns("dns-udp", "UDP"),
            lb_service("both", json!({"ipFamilyPolicy": "RequireDualStack"})),
        ],
    )
    .await
    .unwrap();
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    let tcp = ingress_ips(&wait_for_ip(&api, "dns-tcp").await);
    let udp = ingress_ips(&wait_for_ip(&api, "dns-udp").await);
    assert_eq!(tcp, udp, "TCP/53 and UDP/53 share one address");
    let both = ingress_ips(&wait_for_ip(&api, "both").await);
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(
        both[0].parse::<std::net::Ipv4Addr>().is_ok()
            && both[1].parse::<std::net::Ipv6Addr>().is_ok(),
        "{both:?}"
    );
    assert_ne!(both[0], tcp[0]);
}

/// The `ferrolb.io/AddressAllocated` condition of a Service: (status, reason).
async fn allocation_condition(
    api: &Api<k8s_openapi::api::core::v1::Service>,
    name: &str,
) -> Option<(String, String)> {
    let service = api.get(name).await.unwrap();
    service
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "ferrolb.io/AddressAllocated")
        .map(|c| (c.status, c.reason))
}

/// A refused request and an address left outside its shrunk pool are both visible: on the
/// Service (condition + Event) and, for the orphan, on the pool's status.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_orphans_are_reported() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    wait_for_ip(&api, "myapp").await;
    assert_eq!(
        allocation_condition(&api, "myapp").await,
        Some(("True".into(), "Allocated".into()))
    );

    create_all(
        &cluster.admin,
        vec![lb_service(
            "stray",
            json!({"loadBalancerIP": "203.0.113.9"}),
        )],
    )
    .await
    .unwrap();
    wait_until(
        "the stray request is refused on its condition",
        60,
        || async {
            allocation_condition(&api, "stray").await
                == Some(("False".into(), "NotInAnyPool".into()))
        },
    )
    .await;
    wait_until("the refusal raises an Event", 60, || async {
        has_event(&cluster, "stray", "AllocationFailed").await
    })
    .await;
    assert!(ingress_ips(&api.get("stray").await.unwrap()).is_empty());

    let pools = pool_api(&cluster.admin);
    set_pool_addresses(&cluster, "first-pool", &["192.168.117.105-192.168.117.110"]).await;
    wait_until("the pool reports its orphaned address", 60, || async {
        let pool = pools.get("first-pool").await.unwrap();
        pool.data["status"]["orphanedAddresses"]
            == json!([{"address": "192.168.117.100", "services": ["default/myapp"]}])
    })
    .await;
    wait_until(
        "myapp's condition says its address is outside the pool",
        60,
        || async {
            allocation_condition(&api, "myapp").await == Some(("True".into(), "OutsidePool".into()))
        },
    )
    .await;
    wait_until("the orphaning raises an Event", 60, || async {
        has_event(&cluster, "myapp", "AddressOutsidePool").await
    })
    .await;
    assert_eq!(
        ingress_ips(&api.get("myapp").await.unwrap()),
        ["192.168.117.100"]
    );

    // Giving the address back to the pool ends the report; nothing was renumbered meanwhile.
    set_pool_addresses(&cluster, "first-pool", &["192.168.117.100-192.168.117.110"]).await;
    wait_until("the orphan report is cleared", 60, || async {
        let pool = pools.get("first-pool").await.unwrap();
        pool.data["status"]
            .get("orphanedAddresses")
            .is_none_or(|o| o.is_null())
            && pool_counts(&cluster, "first-pool").await == (Some(1), Some(10))
    })
    .await;
    wait_until("myapp's condition is back to Allocated", 60, || async {
        allocation_condition(&api, "myapp").await == Some(("True".into(), "Allocated".into()))
    })
    .await;
    assert_eq!(
        ingress_ips(&api.get("myapp").await.unwrap()),
        ["192.168.117.100"]
    );
}

/// Without `--lb-class` only classless Services are served; with it, only that class.
#[tokio::test(flavor = "multi_thread")]
async fn load_balancer_class_selects_the_services_served() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    let api = cluster.services();
    create_all(
        &cluster.admin,
        vec![
            lb_service("ours", json!({"loadBalancerClass": "ferrolb.io/l2"})),
            lb_service("theirs", json!({"loadBalancerClass": "example.com/other"})),
            lb_service("classless", json!({})),
        ],
    )
    .await
    .unwrap();

    let classless_only = ControllerProcess::start(&cluster.path("controller"));
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "classless").await),
        ["192.168.117.100"]
    );
    // The pool counts every address handed out: exactly one, so the classed Services were
    // seen and skipped.
    wait_until("one address is counted", 60, || async {
        pool_counts(&cluster, "first-pool").await == (Some(1), Some(10))
    })
    .await;
    assert!(ingress_ips(&api.get("ours").await.unwrap()).is_empty());
    assert!(ingress_ips(&api.get("theirs").await.unwrap()).is_empty());
    assert_eq!(allocation_condition(&api, "ours").await, None);
    drop(classless_only);

    let _classed = ControllerProcess::start_with_args(
        &cluster.path("controller"),
        "controller-1",
        &["--lb-class", "ferrolb.io/l2"],
    );
    let ours = wait_for_ip(&api, "ours").await;
    // The classless Service's address is not this controller's to give or take: it stays in
    // its status and is not handed out again.
    assert_eq!(ingress_ips(&ours), ["192.168.117.101"]);
    assert!(ingress_ips(&api.get("theirs").await.unwrap()).is_empty());
    assert_eq!(
        ingress_ips(&api.get("classless").await.unwrap()),
        ["192.168.117.100"]
    );
}

/// A Service waiting on an exhausted pool gets the address another Service gives up, whether
/// it was deleted or stopped being a LoadBalancer.
#[tokio::test(flavor = "multi_thread")]
async fn a_freed_address_goes_to_a_waiting_service() {
    let cluster = Cluster::new().await;
    let in_tiny = |name: &str| {
        let mut s = lb_service(name, json!({}));
        s["metadata"]["annotations"] = json!({"metallb.io/address-pool": "tiny"});
        s
    };
    create_all(
        &cluster.admin,
        vec![
            pool_object(
                "tiny",
                json!({"addresses": ["198.51.100.7/32"], "autoAssign": false}),
            ),
            in_tiny("first"),
        ],
    )
    .await
    .unwrap();
    let _controller = ControllerProcess::start(&cluster.path("controller"));
    let api = cluster.services();
    assert_eq!(
        ingress_ips(&wait_for_ip(&api, "first").await),
        ["198.51.100.7"]
    );
    create_all(&cluster.admin, vec![in_tiny("second"), in_tiny("third")])
        .await
        .unwrap();
    for name in ["second", "third"] {
        wait_until("the pool is exhausted for the newcomer", 60, || async {
            allocation_condition(&api, name).await == Some(("False".into(), "PoolExhausted".into()))
        })
        .await;
    }

    let to_cluster_ip = json!({"spec": {"type": "ClusterIP"}});
    api.patch(
        "first",
        &Default::default(),
        &kube::api::Patch::Merge(&to_cluster_ip),
    )
    .await
    .unwrap();
    wait_until("second gets the freed address", 60, || async {
        ingress_ips(&api.get("second").await.unwrap()) == ["198.51.100.7"]
    })
    .await;
    assert_eq!(
        allocation_condition(&api, "third").await,
        Some(("False".into(), "PoolExhausted".into()))
    );

    api.delete("second", &Default::default()).await.unwrap();
    wait_until("third gets it after the delete", 60, || async {
        ingress_ips(&api.get("third").await.unwrap()) == ["198.51.100.7"]
    })
    .await;
}

/// EXTERNAL-IP first: on an API server that takes metadata patches slowly (the emulator's
/// cost model at 20/s), every Service gets its address long before the pool annotations are
/// all written, and the annotations follow. When a Service's status waited for its annotation,
/// 200 Services were all addressed only once more than 160 were annotated.
#[tokio::test(flavor = "multi_thread")]
async fn addresses_are_not_held_back_by_the_pool_annotation() {
    const SERVICES: usize = 200;
    let cluster = Cluster::new().await;
    let Some(emulator) = cluster.emulator() else {
        eprintln!("skipped: the write cost model is the emulator's");
        return;
    };
    cluster.apply_seed().await;
    set_pool_addresses(&cluster, "first-pool", &["192.0.2.0/24"]).await;
    let services: Vec<_> = (0..SERVICES)
        .map(|i| lb_service(&format!("svc-{i}"), json!({})))
        .collect();
    create_all(&cluster.admin, services).await.unwrap();
    emulator
        .server()
        .cost_model()
        .set(Some(ferrolb_lab::apiserver::cost_model::WriteRates {
            status_patches: 1e6,
            object_patches: 20.0,
            event_writes: 1e6,
        }));
    let _controller = ControllerProcess::start(&cluster.path("controller"));

    let annotated = |list: &[k8s_openapi::api::core::v1::Service]| {
        list.iter()
            .filter(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("metallb.io/ip-allocated-from-pool"))
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let annotated_when_addressed = loop {
        let list = cluster
            .services()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let addressed = list
            .iter()
            .filter(|s| {
                s.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("svc-"))
            })
            .filter(|s| !ingress_ips(s).is_empty())
            .count();
        if addressed == SERVICES {
            break annotated(&list);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addressed} of {SERVICES} Services addressed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        annotated_when_addressed < SERVICES / 2,
        "{annotated_when_addressed} of {SERVICES} Services were annotated before the last got its address"
    );
    wait_until("every Service carries its pool annotation", 60, || async {
        let list = cluster
            .services()
            .list(&ListParams::default())
            .await
            .unwrap();
        annotated(&list.items) == SERVICES
    })
    .await;
}
