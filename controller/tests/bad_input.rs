//! The catalogue of bad input (docs/reliability.md, "Bad input"): nonsense annotations,
//! conflicting requests, invalid pools and objects with unknown fields, applied with kubectl
//! as a user would. Each gets its clear answer (refused at admission, a condition, an Event)
//! and none of them disturbs anything else: the Services that had addresses keep them, the
//! controller keeps running, and a new Service still gets an address.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use ferrolb_e2e::create_all;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

/// What the user is told about one bad Service.
enum Told {
    /// Condition `ferrolb.io/AddressAllocated` False with this reason, an `AllocationFailed`
    /// Event, and no address.
    Refused(&'static str),
    /// The Service gets an address; a Warning Event with this reason says what was ignored.
    AddressedWithWarning(&'static str),
    /// The Service gets an address, nothing to say (empty values mean "not set").
    Addressed,
}

struct BadService {
    name: &'static str,
    annotations: Value,
    spec: Value,
    told: Told,
}

fn catalogue() -> Vec<BadService> {
    use Told::*;
    let case = |name, annotations, spec, told| BadService {
        name,
        annotations,
        spec,
        told,
    };
    vec![
        case(
            "not-an-ip",
            json!({"metallb.io/loadBalancerIPs": "192.168.117.300"}),
            json!({}),
            Refused("InvalidRequest"),
        ),
        case(
            "two-of-one-family",
            json!({"metallb.io/loadBalancerIPs": "192.168.117.105,192.168.117.106"}),
            json!({}),
            Refused("InvalidRequest"),
        ),
        case(
            "field-and-annotation",
            json!({"metallb.io/loadBalancerIPs": "192.168.117.105"}),
            json!({"loadBalancerIP": "192.168.117.106"}),
            Refused("InvalidRequest"),
        ),
        case(
            "prefixes-disagree",
            json!({"metallb.io/address-pool": "first-pool",
                   "metallb.universe.tf/address-pool": "second-pool"}),
            json!({}),
            Refused("InvalidRequest"),
        ),
        case(
            "v6-address-on-a-v4-service",
            json!({"metallb.io/loadBalancerIPs": "2001:db8::5"}),
            json!({}),
            Refused("InvalidRequest"),
        ),
        case(
            "no-such-pool",
            json!({"metallb.io/address-pool": "no-such-pool"}),
            json!({}),
            Refused("PoolNotFound"),
        ),
        case(
            "not-in-the-named-pool",
            json!({"metallb.io/address-pool": "second-pool",
                   "metallb.io/loadBalancerIPs": "192.168.117.107"}),
            json!({}),
            Refused("NotInRequestedPool"),
        ),
        case(
            "outside-every-pool",
            json!({"metallb.io/loadBalancerIPs": "203.0.113.9"}),
            json!({}),
            Refused("NotInAnyPool"),
        ),
        case(
            "wants-myapps-address",
            json!({"metallb.io/loadBalancerIPs": "192.168.117.100"}),
            json!({}),
            Refused("SharingConflict"),
        ),
        case(
            "same-key-same-port",
            json!({"metallb.io/allow-shared-ip": "web",
                   "metallb.io/loadBalancerIPs": "192.168.117.110"}),
            json!({}),
            Refused("SharingConflict"),
        ),
        case(
            "singular-typo",
            json!({"metallb.universe.tf/loadBalancerIP": "192.168.117.108"}),
            json!({}),
            AddressedWithWarning("UnknownAnnotation"),
        ),
        case(
            "empty-values",
            json!({"metallb.io/address-pool": "", "metallb.io/allow-shared-ip": ""}),
            json!({}),
            Addressed,
        ),
    ]
}

fn bad_service_object(case: &BadService) -> Value {
    let mut object = lb_service(case.name, case.spec.clone());
    object["metadata"]["annotations"] = case.annotations.clone();
    object
}

/// `kubectl apply -f -` of these objects: whether it succeeded, and what it printed.
fn kubectl_apply(kubeconfig: &Path, objects: &[Value], extra: &[&str]) -> (bool, String) {
    // Documents of a YAML stream, as a user's manifest file holds them. Each is JSON (which is
    // YAML) after a comment, so that kubectl reads the stream as YAML rather than one JSON.
    let stream: Vec<String> = objects
        .iter()
        .map(|o| format!("# {}\n{o}", o["metadata"]["name"]))
        .collect();
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.join("\n---\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
           "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

/// The reasons of the Events about an object.
async fn event_reasons(cluster: &Cluster, namespace: &str, object: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), namespace);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn event_note(cluster: &Cluster, namespace: &str, object: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), namespace);
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reason))
        .and_then(|e| e.message)
        .unwrap_or_default()
}

/// A pool's Valid condition: (status, reason, message).
async fn pool_validity(cluster: &Cluster, name: &str) -> Option<(String, String, String)> {
    let pool = pool_api(&cluster.admin).get(name).await.ok()?;
    let condition = pool.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Valid")?
        .clone();
    let text = |field: &str| condition[field].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_is_told_and_disturbs_nothing() {
    let cluster = Cluster::new().await;
    let admin = cluster.path("admin");
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    create_all(
        &cluster.admin,
        vec![pool(
            "second-pool",
            json!({"addresses": ["198.51.100.0/28"]}),
        )],
    )
    .await
    .unwrap();
    let mut controller = ControllerProcess::start(&cluster.path("controller"));
    let health = controller.health_address();
    let api = cluster.services();
    wait_for_ip(&api, "myapp").await;
    // The holder of a shared address, addressed before the Service that clashes with it.
    let (ok, out) = kubectl_apply(
        &admin,
        &[{
            let mut holder = lb_service("shared-web", json!({}));
            holder["metadata"]["annotations"] = json!({"metallb.io/allow-shared-ip": "web",
                "metallb.io/loadBalancerIPs": "192.168.117.110"});
            holder
        }],
        &[],
    );
    assert!(ok, "{out}");
    wait_until("shared-web holds its requested address", 60, || async {
        ingress_ips(&api.get("shared-web").await.unwrap()) == ["192.168.117.110"]
    })
    .await;
    wait_until("first-pool counts myapp and shared-web", 60, || async {
        pool_counts(&cluster, "first-pool").await.0 == Some(2)
    })
    .await;
    let before = addresses(&api).await;

    // Services: all applied at once, as a user's manifest would be.
    let cases = catalogue();
    let objects: Vec<Value> = cases.iter().map(bad_service_object).collect();
    let (ok, out) = kubectl_apply(&admin, &objects, &[]);
    assert!(ok, "{out}");
    for case in &cases {
        match case.told {
            Told::Refused(reason) => {
                wait_until(
                    &format!("{} is refused with {reason}", case.name),
                    60,
                    || async {
                        allocation_condition(&api, case.name).await
                            == Some(("False".into(), reason.into()))
                    },
                )
                .await;
                wait_until(
                    &format!("{}'s refusal raises an Event", case.name),
                    60,
                    || async {
                        event_reasons(&cluster, "default", case.name)
                            .await
                            .contains(&"AllocationFailed".to_string())
                    },
                )
                .await;
                assert!(
                    ingress_ips(&api.get(case.name).await.unwrap()).is_empty(),
                    "{} got an address",
                    case.name
                );
            }
            Told::AddressedWithWarning(reason) => {
                wait_for_ip(&api, case.name).await;
                wait_until(
                    &format!("{} gets a {reason} Event", case.name),
                    60,
                    || async {
                        event_reasons(&cluster, "default", case.name)
                            .await
                            .contains(&reason.to_string())
                    },
                )
                .await;
            }
            Told::Addressed => {
                wait_for_ip(&api, case.name).await;
            }
        }
    }
    let typo = event_note(&cluster, "default", "singular-typo", "UnknownAnnotation").await;
    assert!(
        typo.contains("did you mean metallb.universe.tf/loadBalancerIPs?"),
        "{typo}"
    );

    // Objects with unknown fields: kubectl's default (strict) validation is refused by the API
    // server naming the field; without validation the field is dropped and the rest works.
    let unknown = pool(
        "with-unknown-field",
        json!({"addresses": ["198.51.100.16/28"], "frobnicate": true}),
    );
    let (ok, out) = kubectl_apply(&admin, std::slice::from_ref(&unknown), &[]);
    assert!(
        !ok && out.contains("unknown field \"spec.frobnicate\""),
        "{out}"
    );
    let unknown_service = lb_service("unknown-field", json!({"frobnicate": true}));
    let (ok, out) = kubectl_apply(&admin, std::slice::from_ref(&unknown_service), &[]);
    assert!(
        !ok && out.contains("unknown field \"spec.frobnicate\""),
        "{out}"
    );
    let (ok, out) = kubectl_apply(&admin, &[unknown], &["--validate=false"]);
    assert!(ok, "{out}");
    let stored = pool_api(&cluster.admin)
        .get("with-unknown-field")
        .await
        .unwrap();
    assert!(stored.data["spec"].get("frobnicate").is_none());
    wait_until("the pruned pool is valid", 60, || async {
        pool_validity(&cluster, "with-unknown-field")
            .await
            .is_some_and(|(status, reason, _)| status == "True" && reason == "Valid")
    })
    .await;

    // Pools: a malformed address is refused at admission, naming the entry; an invalid
    // selector and an overlap are admitted (no webhook) and reported on the pool.
    let (ok, out) = kubectl_apply(
        &admin,
        &[pool(
            "malformed",
            json!({"addresses": ["198.51.100.32/33"]}),
        )],
        &[],
    );
    assert!(!ok && out.contains("spec.addresses[0]"), "{out}");
    let (ok, out) = kubectl_apply(
        &admin,
        &[
            pool(
                "broken-selector",
                json!({"addresses": ["198.51.100.48/28"], "serviceAllocation": {"priority": 1,
                       "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Near"}]}]}}),
            ),
            pool(
                "overlapping",
                json!({"addresses": ["192.168.117.110-192.168.117.112"], "autoAssign": false}),
            ),
        ],
        &[],
    );
    assert!(ok, "{out}");
    for (name, status, reason, fragment) in [
        (
            "broken-selector",
            "False",
            "InvalidSelector",
            "spec.serviceAllocation.serviceSelectors[0]: invalid label selector: app: unknown operator \"Near\"",
        ),
        (
            "overlapping",
            "True",
            "Overlapping",
            "first-pool overlaps overlapping on 192.168.117.110",
        ),
    ] {
        wait_until(&format!("{name} reports {reason}"), 60, || async {
            pool_validity(&cluster, name)
                .await
                .is_some_and(|(s, r, m)| s == status && r == reason && m.contains(fragment))
        })
        .await;
        wait_until(&format!("{name} has a {reason} Event"), 60, || async {
            event_reasons(&cluster, "metallb-system", name)
                .await
                .contains(&reason.to_string())
        })
        .await;
    }

    // Nothing else moved, the controller lives, and allocation still works for everyone.
    let after = addresses(&api).await;
    for (name, ips) in &before {
        assert_eq!(after.get(name), Some(ips), "{name}'s addresses changed");
    }
    wait_until(
        "first-pool also counts singular-typo and empty-values, and nothing else",
        60,
        || async { pool_counts(&cluster, "first-pool").await.0 == Some(4) },
    )
    .await;
    create_all(&cluster.admin, vec![lb_service("after-all", json!({}))])
        .await
        .unwrap();
    wait_for_ip(&api, "after-all").await;
    assert!(
        controller.child.try_wait().unwrap().is_none(),
        "the controller exited"
    );
    assert_eq!(http_get(&health, "/readyz").0, 200);
}

/// The `ferrolb.io/AddressAllocated` condition of a Service: (status, reason).
async fn allocation_condition(
    api: &Api<k8s_openapi::api::core::v1::Service>,
    name: &str,
) -> Option<(String, String)> {
    let service = api.get(name).await.ok()?;
    service
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "ferrolb.io/AddressAllocated")
        .map(|c| (c.status, c.reason))
}
