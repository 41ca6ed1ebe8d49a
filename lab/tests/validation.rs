//! CRD schemas enforced on writes, through kubectl and kube-rs alike: every invalid object of
//! the workspace issue gets kube-apiserver's 422, valid ones get their defaults, transition
//! rules compare with the stored object, unknown fields are refused under Strict.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Api, Client, Config};
use serde_json::{Value, json};

/// (kind, plural, spec, the field error kube-apiserver reports)
fn invalid_objects() -> Vec<(&'static str, &'static str, Value, String)> {
    vec![
        (
            "IPAddressPool",
            "ipaddresspools",
            json!({"addresses": ["192.0.2.20-192.0.2.10"]}),
            "spec.addresses[0]: Invalid value: \"string\": the start of a range must not be after its end".to_string(),
        ),
        (
            "IPAddressPool",
            "ipaddresspools",
            json!({"addresses": ["192.0.2.1-2001:db8::1"]}),
            "spec.addresses[0]: Invalid value: \"string\": both ends of a range must be of the same IP family".to_string(),
        ),
        (
            "IPAddressPool",
            "ipaddresspools",
            json!({"addresses": ["192.0.2.0/33"]}),
            format!(
                "spec.addresses[0]: Invalid value: \"string\": {}",
                ferrolb_crds::cel_rules::ADDRESS_SYNTAX_MESSAGE
            ),
        ),
        (
            "L2Advertisement",
            "l2advertisements",
            json!({"preferredNodeSelectors": [{"weight": 1000, "preference": {"matchLabels": {"a": "b"}}}]}),
            "spec.preferredNodeSelectors[0].weight: Invalid value: 1000: spec.preferredNodeSelectors[0].weight in body should be less than or equal to 100".to_string(),
        ),
    ]
}

async fn cluster() -> (RunningApiServer, Client) {
    let server = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in ferrolb_crds::crd_manifests::all_crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "metallb-system"}})).unwrap(),
        )
        .await
        .unwrap();
    (server, client)
}

fn api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metallb.io", "v1beta1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), "metallb-system", &resource)
}

fn object(kind: &str, name: &str, spec: &Value) -> Value {
    json!({"apiVersion": "metallb.io/v1beta1", "kind": kind, "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

#[tokio::test]
async fn invalid_objects_get_422_through_kube_rs() {
    let (_server, client) = cluster().await;
    for (i, (kind, plural, spec, field_error)) in invalid_objects().into_iter().enumerate() {
        let name = format!("bad-{i}");
        let object: DynamicObject = serde_json::from_value(object(kind, &name, &spec)).unwrap();
        match api(&client, kind, plural)
            .create(&PostParams::default(), &object)
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
                assert_eq!(
                    status.message,
                    format!("{kind}.metallb.io \"{name}\" is invalid: {field_error}")
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_get_422_through_kubectl() {
    let (server, _client) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.kubeconfig("unused").write(&kubeconfig).unwrap();
    let mut files = Vec::new();
    for (i, (kind, _, spec, field_error)) in invalid_objects().into_iter().enumerate() {
        let name = format!("bad-{i}");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            serde_yaml::to_string(&object(kind, &name, &spec)).unwrap(),
        )
        .unwrap();
        files.push((
            path,
            format!("The {kind} \"{name}\" is invalid: {field_error}"),
        ));
    }
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        serde_yaml::to_string(&object(
            "IPAddressPool",
            "unknown",
            &json!({"addresses": ["192.0.2.0/28"], "bogus": 1}),
        ))
        .unwrap(),
    )
    .unwrap();
    let seed = ferrolb_e2e::repo_root().join("config/samples/seed.yaml");
    let outputs = tokio::task::spawn_blocking(move || {
        let invalid: Vec<(std::process::Output, String)> = files
            .iter()
            .map(|(path, expected)| {
                (
                    kubectl(&kubeconfig, &["apply", "-f", path.to_str().unwrap()]),
                    expected.clone(),
                )
            })
            .collect();
        let unknown = kubectl(&kubeconfig, &["apply", "-f", unknown.to_str().unwrap()]);
        let seed = kubectl(&kubeconfig, &["apply", "-f", seed.to_str().unwrap()]);
        let defaults = kubectl(
            &kubeconfig,
            &[
                "get",
                "ipaddresspool",
                "first-pool",
                "-n",
                "metallb-system",
                "-o",
                "jsonpath={.spec.autoAssign} {.spec.avoidBuggyIPs}",
            ],
        );
        (invalid, unknown, seed, defaults)
    })
    .await
    .unwrap();
    let (invalid, unknown, seed, defaults) = outputs;
    for (output, expected) in invalid {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("strict decoding error: unknown field \"spec.bogus\""),
        "{stderr}"
    );
    assert!(
        seed.status.success(),
        "{}",
        String::from_utf8_lossy(&seed.stderr)
    );
    // The seed leaves autoAssign and avoidBuggyIPs out; the schema's defaults fill them in.
    assert_eq!(String::from_utf8_lossy(&defaults.stdout), "true false");
}

#[tokio::test]
async fn transition_rules_compare_with_the_stored_object() {
    let (_server, client) = cluster().await;
    let statuses = api(&client, "ServiceL2Status", "servicel2statuses");
    let created: DynamicObject =
        serde_json::from_value(object("ServiceL2Status", "l2-myapp", &json!({}))).unwrap();
    statuses
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    let first = json!({"status": {"node": "node-1", "serviceName": "myapp", "serviceNamespace": "default"}});
    statuses
        .patch_status("l2-myapp", &PatchParams::default(), &Patch::Merge(&first))
        .await
        .unwrap();
    let moved = json!({"status": {"node": "node-2"}});
    match statuses
        .patch_status("l2-myapp", &PatchParams::default(), &Patch::Merge(&moved))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert_eq!(
                status.message,
                "ServiceL2Status.metallb.io \"l2-myapp\" is invalid: status.node: Invalid value: \"string\": Value is immutable"
            );
        }
        other => panic!("{other:?}"),
    }
    // The same value again is fine.
    statuses
        .patch_status("l2-myapp", &PatchParams::default(), &Patch::Merge(&first))
        .await
        .unwrap();
}

/// Built-in kinds: kube-apiserver decodes them into their Go types, so a field the type lacks is
/// refused under Strict (kubectl's default) and dropped otherwise, at any depth. The emulator
/// takes the fields from the OpenAPI documents recorded from a real kube-apiserver.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_of_built_in_kinds_are_refused_or_dropped() {
    let (server, client) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.kubeconfig("unused").write(&kubeconfig).unwrap();
    let manifest = dir.path().join("svc.yaml");
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"any.example/key": "kept"}},
        "spec": {"type": "LoadBalancer", "frobnicate": true, "selector": {"app": "web"},
                 "ports": [{"port": 80, "protocol": "TCP", "bogus": 1}]}});
    std::fs::write(&manifest, serde_yaml::to_string(&service).unwrap()).unwrap();
    let path = manifest.to_str().unwrap().to_string();
    let (strict, lenient) = tokio::task::spawn_blocking(move || {
        (
            kubectl(&kubeconfig, &["apply", "-f", &path]),
            kubectl(&kubeconfig, &["apply", "--validate=false", "-f", &path]),
        )
    })
    .await
    .unwrap();
    assert!(!strict.status.success());
    assert_eq!(
        String::from_utf8_lossy(&strict.stderr).trim(),
        "Error from server (BadRequest): error when creating \"".to_string()
            + manifest.to_str().unwrap()
            + "\": Service in version \"v1\" cannot be handled as a Service: strict decoding error: \
               unknown field \"spec.frobnicate\", unknown field \"spec.ports[0].bogus\""
    );
    assert!(
        lenient.status.success(),
        "{}",
        String::from_utf8_lossy(&lenient.stderr)
    );
    // Read untyped: a typed read would drop unknown fields on the client side.
    let services: Api<DynamicObject> = Api::namespaced_with(
        client,
        "default",
        &ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
    );
    let raw = serde_json::to_value(services.get("web").await.unwrap()).unwrap();
    assert!(raw["spec"].get("frobnicate").is_none());
    assert!(raw["spec"]["ports"][0].get("bogus").is_none());
    assert_eq!(raw["metadata"]["annotations"]["any.example/key"], "kept");
}
