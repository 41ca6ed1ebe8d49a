//! The manifests users apply: samples and MetalLB-style examples load into ferrolb's types
//! without loss and pass the CRDs' validation; `config/` installs what it should, with least
//! privilege.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ferrolb_crds::crd_manifests::{all_crds, schema_of};
use ferrolb_crds::schema_validation::CrdSchema;
use ferrolb_crds::{IPAddressPool, L2Advertisement, ServiceL2Status};
use ferrolb_e2e::{folder_documents, kustomize_resources, repo_root};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserializes into `T`, serializes back, and requires the very same JSON.
fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> T {
    let typed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("does not deserialize: {e}\n{object:#}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(&back, object, "lost or changed something");
    typed
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn user_manifests() -> Vec<Value> {
    let mut all = folder_documents(&repo_root().join("config/samples")).unwrap();
    all.extend(folder_documents(&repo_root().join("config/examples")).unwrap());
    all
}

#[test]
fn seed_sample_is_the_metallb_seed_verbatim() {
    let seed = folder_documents(&repo_root().join("config/samples")).unwrap();
    assert_eq!(seed.len(), 2);
    let pool: IPAddressPool = round_trip(&seed[0]);
    assert_eq!(pool.metadata.name.as_deref(), Some("first-pool"));
    assert_eq!(pool.metadata.namespace.as_deref(), Some("metallb-system"));
    assert_eq!(pool.spec.addresses, vec!["192.168.117.100-192.168.117.110"]);
    assert!(pool.spec.auto_assign());
    let advertisement: L2Advertisement = round_trip(&seed[1]);
    assert_eq!(advertisement.metadata.name.as_deref(), Some("example"));
    assert_eq!(
        advertisement.metadata.namespace.as_deref(),
        Some("metallb-system")
    );
    assert_eq!(
        advertisement.spec().ip_address_pools,
        Some(vec!["first-pool".to_string()])
    );
}

#[test]
fn every_user_manifest_round_trips_through_the_types() {
    let mut seen = BTreeSet::new();
    for object in user_manifests() {
        match kind(&object) {
            "IPAddressPool" => {
                round_trip::<IPAddressPool>(&object);
            }
            "L2Advertisement" => {
                round_trip::<L2Advertisement>(&object);
            }
            "ServiceL2Status" => {
                round_trip::<ServiceL2Status>(&object);
            }
            "Service" => {
                round_trip::<Service>(&object);
            }
            other => panic!("unexpected kind {other} in {}", name(&object)),
        }
        seen.insert(kind(&object).to_string());
    }
    // The examples exercise every field users write.
    let examples = user_manifests();
    let text = serde_json::to_string(&examples).unwrap();
    for field in [
        "addresses",
        "autoAssign",
        "avoidBuggyIPs",
        "serviceAllocation",
        "priority",
        "namespaces",
        "namespaceSelectors",
        "serviceSelectors",
        "ipAddressPools",
        "ipAddressPoolSelectors",
        "nodeSelectors",
        "interfaces",
        "preferredNodeSelectors",
        "metallb.io/address-pool",
        "metallb.universe.tf/loadBalancerIPs",
        "allow-shared-ip",
    ] {
        assert!(
            text.contains(&format!("\"{field}\"")) || text.contains(field),
            "no example uses {field}"
        );
    }
    assert!(seen.contains("IPAddressPool") && seen.contains("L2Advertisement"));
}

#[test]
fn a_typed_pool_parses_its_addresses() {
    for object in user_manifests()
        .iter()
        .filter(|o| kind(o) == "IPAddressPool")
    {
        let pool: IPAddressPool = round_trip(object);
        ferrolb_crds::pool_address::parse_pool_addresses(&pool.spec.addresses)
            .unwrap_or_else(|e| panic!("{}: {e:?}", name(object)));
    }
}

#[test]
fn every_user_manifest_passes_the_crd_schemas() {
    let schemas: Vec<(String, CrdSchema)> = all_crds()
        .iter()
        .map(|crd| (crd.spec.names.kind.clone(), CrdSchema::new(schema_of(crd))))
        .collect();
    for mut object in user_manifests() {
        let Some((_, schema)) = schemas.iter().find(|(k, _)| k == kind(&object)) else {
            continue;
        };
        schema.apply_defaults(&mut object);
        let unknown = schema.prune(&mut object);
        assert!(
            unknown.is_empty(),
            "{}: unknown fields {unknown:?}",
            name(&object)
        );
        let errors = schema.validate(&object, None);
        assert!(errors.is_empty(), "{}: {errors:?}", name(&object));
    }
}

fn installed() -> Vec<Value> {
    kustomize_resources(&repo_root().join("config")).unwrap()
}

fn find<T: DeserializeOwned>(objects: &[Value], kind_name: &str, object_name: &str) -> T {
    let object = objects
        .iter()
        .find(|o| kind(o) == kind_name && name(o) == object_name)
        .unwrap_or_else(|| panic!("config/ has no {kind_name} {object_name}"));
    serde_json::from_value(object.clone()).unwrap()
}

#[test]
fn config_installs_namespace_crds_rbac_and_workloads() {
    let objects = installed();
    let kinds: BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| (kind(o).to_string(), name(o).to_string()))
        .collect();
    for (k, n) in [
        ("Namespace", "metallb-system"),
        ("CustomResourceDefinition", "ipaddresspools.metallb.io"),
        ("CustomResourceDefinition", "l2advertisements.metallb.io"),
        ("CustomResourceDefinition", "servicel2statuses.metallb.io"),
        ("CustomResourceDefinition", "configurationstates.metallb.io"),
        ("ServiceAccount", "ferrolb-controller"),
        ("ServiceAccount", "ferrolb-speaker"),
        ("Deployment", "ferrolb-controller"),
        ("DaemonSet", "ferrolb-speaker"),
    ] {
        assert!(
            kinds.contains(&(k.to_string(), n.to_string())),
            "missing {k} {n}"
        );
    }
    for object in &objects {
        let namespaced = !matches!(
            kind(object),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if namespaced {
            assert_eq!(
                object["metadata"]["namespace"],
                "metallb-system",
                "{}",
                name(object)
            );
        }
    }
}

fn assert_hardened(container: &Container) {
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(
        security.read_only_root_filesystem,
        Some(true),
        "{}",
        container.name
    );
    assert_eq!(
        security.allow_privilege_escalation,
        Some(false),
        "{}",
        container.name
    );
    let caps = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop,
        Some(vec!["ALL".to_string()]),
        "{}",
        container.name
    );
    assert!(
        container.liveness_probe.is_some(),
        "{} liveness",
        container.name
    );
    assert!(
        container.readiness_probe.is_some(),
        "{} readiness",
        container.name
    );
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    assert!(requests.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")));
}

#[test]
fn controller_runs_unprivileged() {
    let deployment: Deployment = find(&installed(), "Deployment", "ferrolb-controller");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("ferrolb-controller")
    );
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let container = &pod.containers[0];
    assert_hardened(container);
    assert_eq!(
        container
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap()
            .add,
        None
    );
}

#[test]
fn speaker_runs_on_the_host_network_with_net_raw_only() {
    let daemonset: DaemonSet = find(&installed(), "DaemonSet", "ferrolb-speaker");
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("ferrolb-speaker"));
    let container = &pod.containers[0];
    assert_hardened(container);
    let caps = container
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add, Some(vec!["NET_RAW".to_string()]));
    let node_name = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .unwrap();
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
}

/// (apiGroup, resource, resourceName or "*", verb) for every rule of the named roles.
fn permissions(objects: &[Value], role_kind: &str, role_name: &str) -> BTreeSet<String> {
    let rules = match role_kind {
        "ClusterRole" => find::<ClusterRole>(objects, role_kind, role_name).rules,
        _ => find::<Role>(objects, role_kind, role_name).rules,
    };
    let mut granted = BTreeSet::new();
    for rule in rules.unwrap_or_default() {
        let names = rule
            .resource_names
            .clone()
            .unwrap_or_else(|| vec!["*".into()]);
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    for resource_name in &names {
                        assert!(!group.contains('*') && !resource.contains('*') && verb != "*");
                        granted.insert(format!("{group}/{resource}/{resource_name}:{verb}"));
                    }
                }
            }
        }
    }
    granted
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Pins exactly what each component may do, so that any widening is a deliberate change here.
#[test]
fn rbac_grants_exactly_what_each_component_needs() {
    let objects = installed();
    assert_eq!(
        permissions(&objects, "ClusterRole", "ferrolb:controller"),
        set(&[
            "/services/*:get",
            "/services/*:list",
            "/services/*:watch",
            "/services/*:patch",
            "/services/status/*:patch",
            "/namespaces/*:get",
            "/namespaces/*:list",
            "/namespaces/*:watch",
            "/events/*:create",
            "/events/*:patch",
            "events.k8s.io/events/*:create",
            "events.k8s.io/events/*:patch",
        ])
    );
    assert_eq!(
        permissions(&objects, "Role", "ferrolb-controller"),
        set(&[
            "metallb.io/ipaddresspools/*:get",
            "metallb.io/ipaddresspools/*:list",
            "metallb.io/ipaddresspools/*:watch",
            "metallb.io/ipaddresspools/status/*:patch",
            "metallb.io/configurationstates/*:create",
            "metallb.io/configurationstates/controller:get",
            "metallb.io/configurationstates/controller:patch",
            "metallb.io/configurationstates/status/controller:get",
            "metallb.io/configurationstates/status/controller:patch",
            "coordination.k8s.io/leases/*:create",
            "coordination.k8s.io/leases/ferrolb-controller:get",
            "coordination.k8s.io/leases/ferrolb-controller:update",
        ])
    );
    assert_eq!(
        permissions(&objects, "ClusterRole", "ferrolb:speaker"),
        set(&[
            "/services/*:get",
            "/services/*:list",
            "/services/*:watch",
            "/nodes/*:get",
            "/nodes/*:list",
            "/nodes/*:watch",
            "discovery.k8s.io/endpointslices/*:get",
            "discovery.k8s.io/endpointslices/*:list",
            "discovery.k8s.io/endpointslices/*:watch",
            "/events/*:create",
            "/events/*:patch",
            "events.k8s.io/events/*:create",
            "events.k8s.io/events/*:patch",
        ])
    );
    assert_eq!(
        permissions(&objects, "Role", "ferrolb-speaker"),
        set(&[
            "metallb.io/ipaddresspools/*:get",
            "metallb.io/ipaddresspools/*:list",
            "metallb.io/ipaddresspools/*:watch",
            "metallb.io/l2advertisements/*:get",
            "metallb.io/l2advertisements/*:list",
            "metallb.io/l2advertisements/*:watch",
            "metallb.io/servicel2statuses/*:get",
            "metallb.io/servicel2statuses/*:list",
            "metallb.io/servicel2statuses/*:watch",
            "metallb.io/servicel2statuses/*:create",
            "metallb.io/servicel2statuses/*:delete",
            "metallb.io/servicel2statuses/*:patch",
            "metallb.io/servicel2statuses/status/*:patch",
            "metallb.io/configurationstates/*:get",
            "metallb.io/configurationstates/*:create",
            "metallb.io/configurationstates/status/*:patch",
            "coordination.k8s.io/leases/*:get",
            "coordination.k8s.io/leases/*:list",
            "coordination.k8s.io/leases/*:watch",
            "coordination.k8s.io/leases/*:create",
            "coordination.k8s.io/leases/*:patch",
        ])
    );
}

#[test]
fn bindings_give_each_role_to_its_own_service_account() {
    let objects = installed();
    for binding in objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
    {
        let role = binding["roleRef"]["name"].as_str().unwrap();
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1);
        let account = subjects[0]["name"].as_str().unwrap();
        let component = if role.contains("controller") {
            "ferrolb-controller"
        } else {
            "ferrolb-speaker"
        };
        assert_eq!(account, component, "{}", name(binding));
        assert_eq!(subjects[0]["namespace"], "metallb-system");
        assert!(
            objects
                .iter()
                .any(|o| name(o) == role && kind(o) == binding["roleRef"]["kind"]),
            "{} refers to a missing role {role}",
            name(binding)
        );
    }
}

/// `kubectl apply -k overlays/with-monitoring`: the whole install plus the monitoring
/// component, its dashboard ConfigMap holding `config/monitoring`'s dashboard unchanged.
#[test]
fn the_monitoring_overlay_adds_the_component_to_the_install() {
    let overlay = repo_root().join("overlays/with-monitoring");
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = ferrolb_e2e::yaml_documents(&String::from_utf8_lossy(&output.stdout)).unwrap();
    let count = |wanted: &str| objects.iter().filter(|o| kind(o) == wanted).count();
    assert_eq!(count("PodMonitor"), 2);
    assert_eq!(count("PrometheusRule"), 1);
    assert_eq!(count("Deployment"), 1);
    assert_eq!(count("DaemonSet"), 1);
    assert_eq!(count("CustomResourceDefinition"), all_crds().len());
    for object in objects
        .iter()
        .filter(|o| ["PodMonitor", "PrometheusRule", "ConfigMap"].contains(&kind(o)))
    {
        assert_eq!(
            object["metadata"]["namespace"], "metallb-system",
            "{object:#}"
        );
    }
    let dashboard = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == "ferrolb-grafana-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("config/monitoring/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let in_configmap: Value =
        serde_json::from_str(dashboard["data"]["ferrolb.json"].as_str().unwrap()).unwrap();
    assert_eq!(in_configmap, shipped);
}
