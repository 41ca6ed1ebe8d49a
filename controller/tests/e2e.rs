//! The ferrolb-controller binary against the emulated API server, as a cluster runs it: over
//! HTTPS, under its own service account, with `config/`'s RBAC enforced.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferrolb_e2e::{
    client_from_kubeconfig, create_all, folder_documents, kustomize_resources, repo_root,
};
use ferrolb_lab::apiserver::auth::UserInfo;
use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token";

/// An emulated cluster with `config/` installed, and kubeconfigs for the admin and controller.
struct Cluster {
    // Kept alive for the test: dropping it stops the server.
    _server: RunningApiServer,
    dir: tempfile::TempDir,
    admin: kube::Client,
}

impl Cluster {
    async fn new() -> Self {
        let server = ApiServer::new()
            .start_tls("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        server
            .server()
            .identities()
            .enable(ADMIN_TOKEN, UserInfo::admin());
        let dir = tempfile::tempdir().unwrap();
        server
            .kubeconfig(ADMIN_TOKEN)
            .write(&dir.path().join("admin"))
            .unwrap();
        server
            .service_account_kubeconfig("metallb-system", "ferrolb-controller")
            .write(&dir.path().join("controller"))
            .unwrap();
        let admin = client_from_kubeconfig(&dir.path().join("admin"))
            .await
            .unwrap();
        create_all(
            &admin,
            kustomize_resources(&repo_root().join("config")).unwrap(),
        )
        .await
        .unwrap();
        Cluster {
            _server: server,
            dir,
            admin,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn apply_seed(&self) {
        create_all(
            &self.admin,
            folder_documents(&repo_root().join("config/samples")).unwrap(),
        )
        .await
        .unwrap();
    }

    async fn create_myapp(&self) {
        let myapp = folder_documents(&repo_root().join("config/examples")).unwrap();
        let myapp = myapp
            .into_iter()
            .find(|o| o["metadata"]["name"] == "myapp")
            .unwrap();
        create_all(&self.admin, vec![myapp]).await.unwrap();
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), "default")
    }
}

/// The controller binary, killed when the test ends; its log lines arrive on a channel.
struct ControllerProcess {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl ControllerProcess {
    fn start(kubeconfig: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ControllerProcess { child, log }
    }

    /// Waits for a log line containing all of `needles`.
    fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                    seen.push(line);
                }
                Err(_) => panic!(
                    "no log line with {needles:?}; the controller said:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingress_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

async fn wait_for_ip(services: &Api<Service>, name: &str) -> Service {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let service = services.get(name).await.unwrap();
        if !ingress_ips(&service).is_empty() {
            return service;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never got an address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pool_api(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"),
        "ipaddresspools",
    );
    Api::namespaced_with(client.clone(), "metallb-system", &resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_example_gets_its_external_ip() {
    let cluster = Cluster::new().await;
    cluster.apply_seed().await;
    cluster.create_myapp().await;
    let _controller = ControllerProcess::start(&cluster.path("controller"));
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
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
    let recorded = events
        .list(&ListParams::default().fields("involvedObject.name=myapp"))
        .await
        .unwrap();
    assert!(
        recorded
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("IPAllocated")
                && e.message.as_deref() == Some("Assigned IP [192.168.117.100]")),
        "{:?}",
        recorded.items
    );

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
