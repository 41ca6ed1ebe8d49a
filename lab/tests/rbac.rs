//! RBAC in the emulated API server, with the identities and RBAC manifests of `config/`: what
//! each component's service account may and may not do, and kube-apiserver's 401/403 answers.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use ferrolb_lab::apiserver::auth::UserInfo;
use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client, Config};
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token";

async fn client(server: &RunningApiServer, token: &str) -> Client {
    let mut config = Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some(token.to_string().into());
    Client::try_from(config).unwrap()
}

/// A server enforcing RBAC, with everything `config/` installs applied by the administrator.
async fn cluster_with_config() -> RunningApiServer {
    let server = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server
        .server()
        .identities()
        .enable(ADMIN_TOKEN, UserInfo::admin());
    let admin = client(&server, ADMIN_TOKEN).await;
    let objects =
        ferrolb_e2e::kustomize_resources(&ferrolb_e2e::repo_root().join("config")).unwrap();
    ferrolb_e2e::create_all(&admin, objects).await.unwrap();
    server
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (403, "Forbidden"),
                "{}",
                status.message
            );
            status.message
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_or_missing_tokens_are_unauthorized() {
    let server = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server
        .server()
        .identities()
        .enable(ADMIN_TOKEN, UserInfo::admin());
    for token in [None, Some("wrong")] {
        let mut config = Config::new(server.url().parse().unwrap());
        config.auth_info.token = token.map(|t| t.to_string().into());
        let anonymous = Client::try_from(config).unwrap();
        let services: Api<Service> = Api::all(anonymous);
        match services.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"))
            }
            other => panic!("{other:?}"),
        }
    }
    let admin: Api<Service> = Api::all(client(&server, ADMIN_TOKEN).await);
    assert_eq!(
        admin
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn controller_account_has_what_it_needs_and_no_more() {
    let server = cluster_with_config().await;
    let kubeconfig = server.service_account_kubeconfig("metallb-system", "ferrolb-controller");
    let controller = client(&server, &kubeconfig.token).await;
    let admin = client(&server, ADMIN_TOKEN).await;
    let services_admin: Api<Service> = Api::namespaced(admin.clone(), "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "myapp"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap();
    services_admin
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let services: Api<Service> = Api::all(controller.clone());
    services.list(&ListParams::default()).await.unwrap();
    let in_default: Api<Service> = Api::namespaced(controller.clone(), "default");
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.168.117.100"}]}}});
    in_default
        .patch_status("myapp", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    let annotation =
        json!({"metadata": {"annotations": {"metallb.io/ip-allocated-from-pool": "first-pool"}}});
    in_default
        .patch("myapp", &PatchParams::default(), &Patch::Merge(&annotation))
        .await
        .unwrap();
    let pools_resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"),
        "ipaddresspools",
    );
    let pools: Api<DynamicObject> =
        Api::namespaced_with(controller.clone(), "metallb-system", &pools_resource);
    pools.list(&ListParams::default()).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(controller.clone(), "metallb-system");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "ferrolb-controller"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    leases.get("ferrolb-controller").await.unwrap();
    let events: Api<Event> = Api::namespaced(controller.clone(), "default");
    let event: Event = serde_json::from_value(json!({"metadata": {"name": "myapp.1"}, "involvedObject": {"kind": "Service", "name": "myapp", "namespace": "default"}, "reason": "IPAllocated", "message": "m"})).unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();

    // Not granted: deleting Services, reading nodes, other leases, writing pools.
    let message = forbidden(in_default.delete("myapp", &Default::default()).await);
    assert_eq!(
        message,
        "services \"myapp\" is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-controller\" cannot delete resource \"services\" in API group \"\" in the namespace \"default\""
    );
    forbidden(
        Api::<Node>::all(controller.clone())
            .list(&ListParams::default())
            .await,
    );
    forbidden(leases.get("someone-elses-lease").await);
    let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/28"]}});
    forbidden(
        pools
            .create(
                &PostParams::default(),
                &serde_json::from_value(pool).unwrap(),
            )
            .await,
    );
    forbidden(
        Api::<ConfigMap>::namespaced(controller, "default")
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn speaker_account_has_what_it_needs_and_no_more() {
    let server = cluster_with_config().await;
    let kubeconfig = server.service_account_kubeconfig("metallb-system", "ferrolb-speaker");
    let speaker = client(&server, &kubeconfig.token).await;
    Api::<Service>::all(speaker.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Node>::all(speaker.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<EndpointSlice>::all(speaker.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let statuses_resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("metallb.io", "v1beta1", "ServiceL2Status"),
        "servicel2statuses",
    );
    let statuses: Api<DynamicObject> =
        Api::namespaced_with(speaker.clone(), "metallb-system", &statuses_resource);
    let status = json!({"apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status", "metadata": {"name": "l2-myapp"}, "spec": {}});
    statuses
        .create(
            &PostParams::default(),
            &serde_json::from_value(status).unwrap(),
        )
        .await
        .unwrap();
    let report = json!({"status": {"node": "node-1", "serviceName": "myapp", "serviceNamespace": "default"}});
    statuses
        .patch_status("l2-myapp", &PatchParams::default(), &Patch::Merge(&report))
        .await
        .unwrap();
    statuses
        .delete("l2-myapp", &Default::default())
        .await
        .unwrap();
    // Its heartbeat, by server-side apply, and the others'.
    let leases: Api<Lease> = Api::namespaced(speaker.clone(), "metallb-system");
    let heartbeat: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ferrolb-speaker-node-1"}, "spec": {"holderIdentity": "node-1"}}))
    .unwrap();
    leases
        .patch(
            "ferrolb-speaker-node-1",
            &PatchParams::apply("ferrolb-speaker").force(),
            &Patch::Apply(&heartbeat),
        )
        .await
        .unwrap();
    leases.list(&ListParams::default()).await.unwrap();

    // A speaker never writes Service status, nor pools.
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    let admin = client(&server, ADMIN_TOKEN).await;
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "myapp"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})).unwrap();
    Api::<Service>::namespaced(admin, "default")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let message = forbidden(
        Api::<Service>::namespaced(speaker.clone(), "default")
            .patch_status("myapp", &PatchParams::default(), &Patch::Merge(&ingress))
            .await,
    );
    assert!(
        message.contains("cannot patch resource \"services/status\""),
        "{message}"
    );
    forbidden(
        Api::<ConfigMap>::namespaced(speaker, "metallb-system")
            .list(&ListParams::default())
            .await,
    );
}

/// A Role that lacks one verb makes exactly that request fail, visibly.
#[tokio::test]
async fn a_missing_verb_is_forbidden() {
    let server = cluster_with_config().await;
    let admin = client(&server, ADMIN_TOKEN).await;
    let roles_resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        "clusterroles",
    );
    let roles: Api<DynamicObject> = Api::all_with(admin, &roles_resource);
    // Take "watch" on services away from the speaker.
    let mut role = roles.get("ferrolb:speaker").await.unwrap();
    let rules = role.data["rules"].as_array_mut().unwrap();
    rules[0]["verbs"] = json!(["get", "list"]);
    roles
        .replace("ferrolb:speaker", &PostParams::default(), &role)
        .await
        .unwrap();
    let kubeconfig = server.service_account_kubeconfig("metallb-system", "ferrolb-speaker");
    let speaker = client(&server, &kubeconfig.token).await;
    let services: Api<Service> = Api::all(speaker);
    services.list(&ListParams::default()).await.unwrap();
    let message = forbidden(
        services
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .map(|_| ()),
    );
    assert!(
        message.contains("cannot watch resource \"services\""),
        "{message}"
    );
}

/// Over HTTPS (what kubectl needs to send credentials), kubectl as the administrator installs
/// config/, and kubectl as the speaker's service account is held to config/'s RBAC.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_over_https_follows_rbac() {
    let server = ApiServer::new()
        .start_tls("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    server
        .server()
        .identities()
        .enable(ADMIN_TOKEN, UserInfo::admin());
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    let speaker = dir.path().join("speaker");
    server.kubeconfig(ADMIN_TOKEN).write(&admin).unwrap();
    server
        .service_account_kubeconfig("metallb-system", "ferrolb-speaker")
        .write(&speaker)
        .unwrap();
    assert!(server.url().starts_with("https://"));
    let root = ferrolb_e2e::repo_root();
    let results = tokio::task::spawn_blocking(move || {
        let kubectl = |kubeconfig: &std::path::Path, args: &[&str]| {
            std::process::Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", kubeconfig)
                .current_dir(&root)
                .output()
                .unwrap()
        };
        vec![
            kubectl(&admin, &["apply", "-k", "config/"]),
            kubectl(&speaker, &["get", "nodes"]),
            kubectl(&speaker, &["get", "ipaddresspools", "-n", "metallb-system"]),
            kubectl(&speaker, &["get", "secrets", "-n", "metallb-system"]),
        ]
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(results[0].status.success(), "{}", text(&results[0]));
    assert!(results[1].status.success(), "{}", text(&results[1]));
    assert!(results[2].status.success(), "{}", text(&results[2]));
    assert!(!results[3].status.success());
    assert!(
        text(&results[3]).contains("secrets is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot list resource \"secrets\" in API group \"\" in the namespace \"metallb-system\""),
        "{}",
        text(&results[3])
    );
}
