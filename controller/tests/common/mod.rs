//! Shared by the controller's end-to-end tests: an emulated cluster with `config/` installed,
//! and the controller binary running under its own service account.

// Test code: a panic on unexpected input is the test failing, with its message. Each test
// binary uses a different part of these helpers.
#![allow(clippy::unwrap_used, dead_code)]

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
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;

pub const ADMIN_TOKEN: &str = "admin-token";

/// A cluster with `config/`'s API and RBAC installed, and kubeconfigs for the admin and the
/// controller: the emulated API server, or the existing cluster `FERROLB_KUBECONFIG` names.
pub struct Cluster {
    /// The emulated API server (kept alive for the test); `None` on an existing cluster.
    pub emulated: Option<RunningApiServer>,
    pub dir: tempfile::TempDir,
    pub admin: kube::Client,
    /// On an existing cluster: its admin kubeconfig and the namespaces it had, to remove what
    /// the test added.
    existing: Option<(PathBuf, Vec<String>)>,
}

impl Cluster {
    pub async fn new() -> Self {
        match ferrolb_lab::target_cluster::external_kubeconfig() {
            Some(admin) => Self::existing(&admin).await,
            None => Self::emulated().await,
        }
    }

    async fn emulated() -> Self {
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
            emulated: Some(server),
            dir,
            admin,
            existing: None,
        }
    }

    /// The cluster an admin kubeconfig names: ferrolb's namespace, CRDs and RBAC are installed
    /// (not the Deployment and DaemonSet: the tests run the controller themselves), and the
    /// controller gets a ServiceAccount token from the TokenRequest API. Tests on the same
    /// cluster must run one at a time (`-- --test-threads=1`): they share names.
    pub async fn existing(admin_kubeconfig: &Path) -> Self {
        use ferrolb_lab::target_cluster::{Endpoint, kubectl_with, service_account_token};
        let dir = tempfile::tempdir().unwrap();
        let namespaces = ferrolb_lab::target_cluster::namespaces(admin_kubeconfig);
        let flat = kubectl_with(
            admin_kubeconfig,
            &["config", "view", "--raw", "--minify", "--flatten"],
        )
        .unwrap();
        std::fs::write(dir.path().join("admin"), flat).unwrap();
        let admin = client_from_kubeconfig(&dir.path().join("admin"))
            .await
            .unwrap();
        ferrolb_lab::target_cluster::install_api(admin_kubeconfig, &repo_root()).unwrap();
        let endpoint = Endpoint::of(admin_kubeconfig).unwrap();
        let token = service_account_token(admin_kubeconfig, "metallb-system", "ferrolb-controller")
            .unwrap();
        std::fs::write(
            dir.path().join("controller"),
            endpoint.token_kubeconfig(endpoint.address, &token),
        )
        .unwrap();
        Cluster {
            emulated: None,
            dir,
            admin,
            existing: Some((admin_kubeconfig.to_path_buf(), namespaces)),
        }
    }

    /// The emulated API server, for the tests that inject faults into it; `None` on an
    /// existing cluster, where such a test says so and passes without checking anything.
    pub fn emulator(&self) -> Option<&RunningApiServer> {
        if self.emulated.is_none() {
            eprintln!(
                "skipped on an existing cluster: this test injects faults into the emulated API server"
            );
        }
        self.emulated.as_ref()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn apply_seed(&self) {
        create_all(
            &self.admin,
            folder_documents(&repo_root().join("config/samples")).unwrap(),
        )
        .await
        .unwrap();
    }

    pub async fn create_myapp(&self) {
        let myapp = folder_documents(&repo_root().join("config/examples")).unwrap();
        let myapp = myapp
            .into_iter()
            .find(|o| o["metadata"]["name"] == "myapp")
            .unwrap();
        create_all(&self.admin, vec![myapp]).await.unwrap();
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), "default")
    }
}

impl Drop for Cluster {
    /// On an existing cluster, removes what the test added (`target_cluster::remove_added`).
    fn drop(&mut self) {
        if let Some((admin, namespaces)) = &self.existing {
            ferrolb_lab::target_cluster::remove_added(admin, &repo_root(), namespaces, &[]);
        }
    }
}

/// The controller binary, killed when the test ends; its log lines arrive on a channel, and
/// all of them are printed if the test fails.
pub struct ControllerProcess {
    pub child: Child,
    pub log: mpsc::Receiver<String>,
    history: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ControllerProcess {
    pub fn start(kubeconfig: &Path) -> Self {
        Self::start_named(kubeconfig, "controller-0")
    }

    /// Starts a replica with this name (its identity in the leader Lease).
    pub fn start_named(kubeconfig: &Path, name: &str) -> Self {
        Self::start_with_args(kubeconfig, name, &[])
    }

    /// Starts a replica with extra command-line arguments.
    pub fn start_with_args(kubeconfig: &Path, name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
            .args(args)
            .env("POD_NAME", name)
            .env("KUBECONFIG", kubeconfig)
            .args(["--health-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = history.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        ControllerProcess {
            child,
            log,
            history,
        }
    }

    /// The address of the health and metrics server, from the controller's log.
    pub fn health_address(&self) -> String {
        let line = self.wait_for_log(&["serving health and metrics"]);
        let start = line.find("addr=").expect("the line names the address") + "addr=".len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// Waits for a log line containing all of `needles`.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
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
        if std::thread::panicking() {
            let history = self
                .history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            eprintln!("---- ferrolb-controller log ----\n{}", history.join("\n"));
        }
    }
}

/// A plain HTTP GET: status code and body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn ingress_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default()
}

pub async fn wait_for_ip(services: &Api<Service>, name: &str) -> Service {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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

pub fn pool_api(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metallb.io", "v1beta1", "IPAddressPool"),
        "ipaddresspools",
    );
    Api::namespaced_with(client.clone(), "metallb-system", &resource)
}

pub fn lb_service(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}
    });
    if let (Some(spec), Some(extra)) = (service["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    service
}

/// Every handled Service's address, by name.
pub async fn addresses(services: &Api<Service>) -> std::collections::BTreeMap<String, Vec<String>> {
    services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer"))
        .map(|s| (s.metadata.name.clone().unwrap(), ingress_ips(s)))
        .collect()
}

pub async fn wait_until<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn pool_counts(cluster: &Cluster, pool: &str) -> (Option<i64>, Option<i64>) {
    let pool = pool_api(&cluster.admin).get(pool).await.unwrap();
    (
        pool.data["status"]["assignedIPv4"].as_i64(),
        pool.data["status"]["availableIPv4"].as_i64(),
    )
}

/// Whether an Event with `reason` was recorded about the object `object` in "default".
pub async fn has_event(cluster: &Cluster, object: &str, reason: &str) -> bool {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.admin.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some(reason))
}

/// Replaces a pool's addresses (a JSON merge patch of its spec).
pub async fn set_pool_addresses(cluster: &Cluster, pool: &str, addresses: &[&str]) {
    let patch = json!({"spec": {"addresses": addresses}});
    pool_api(&cluster.admin)
        .patch(pool, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
}
