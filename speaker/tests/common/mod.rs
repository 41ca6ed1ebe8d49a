//! A three-node L2 lab in network namespaces for the speaker's end-to-end tests and its
//! failover benchmark: the emulated API server in an "api" namespace on the bridge (as a
//! control plane node would be), three "node" namespaces each running a speaker under
//! `config/`'s RBAC, and a "client" namespace that asks with arping/ndisc6.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrolb_e2e::{
    client_from_kubeconfig, create_all, folder_documents, kustomize_resources, repo_root,
};
use ferrolb_lab::apiserver::ApiServer;
use ferrolb_lab::apiserver::auth::UserInfo;
use ferrolb_lab::netns::{Netns, Segment, unique_prefix};
use ferrolb_speaker::election::{Candidate, elect};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use nix::sched::CloneFlags;
use serde_json::json;

pub const ADMIN_TOKEN: &str = "admin-token";
pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// Moves this thread into the network namespace `name` (threads it spawns stay there too).
pub fn enter(name: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).unwrap();
}

/// Runs `f` on a thread standing in `netns`.
pub fn in_netns<T: Send + 'static>(netns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = netns.name.clone();
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
    .join()
    .unwrap()
}

/// A raw socket on `eth0` of the namespace this thread stands in.
pub fn raw_eth0(
    read_timeout: Duration,
) -> (
    Box<dyn pnet_datalink::DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
) {
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == "eth0")
        .unwrap();
    let config = pnet_datalink::Config {
        read_timeout: Some(read_timeout),
        ..Default::default()
    };
    let Ok(pnet_datalink::Channel::Ethernet(tx, rx)) = pnet_datalink::channel(&interface, config)
    else {
        panic!("no raw socket on eth0");
    };
    (tx, rx)
}

/// A speaker process inside a node's namespace; killed on drop. Its log is printed if the
/// test fails.
pub struct Speaker {
    pub child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Speaker {
    pub fn start(netns: &Netns, node: &str, kubeconfig: &std::path::Path) -> Self {
        Speaker::start_with(netns, node, kubeconfig, &[])
    }

    /// Starts a speaker with more command-line arguments.
    pub fn start_with(
        netns: &Netns,
        node: &str,
        kubeconfig: &std::path::Path,
        extra_args: &[&str],
    ) -> Self {
        let mut child = netns
            .command(env!("CARGO_BIN_EXE_ferrolb-speaker"))
            .args(["--node-name", node, "--health-addr", "127.0.0.1:0"])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        let node = node.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(format!("[{node}] {line}"));
            }
        });
        Speaker { child, log }
    }

    /// `/metrics` of this speaker, fetched from inside its namespace.
    pub fn metrics(&self, netns: &Netns) -> String {
        let addr = poll("the speaker serves metrics", 30, || {
            let log = self.log.lock().unwrap();
            log.iter()
                .find(|l| l.contains("serving health and metrics"))
                .and_then(|l| l.split("addr=").nth(1))
                .map(|a| a.trim().to_string())
        });
        netns
            .run("curl", &["-sf", &format!("http://{addr}/metrics")])
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as a rolling update or `kubectl delete pod` sends it; waits for the exit.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        poll("the speaker exits after SIGTERM", 30, || {
            self.child.try_wait().unwrap().map(|_| ())
        });
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            for line in self.log.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// Applies an nftables table of `rules` inside `netns` (a table of the test's own).
pub fn nft_apply(netns: &Netns, table: &str, rules: &str) {
    use std::io::Write;
    let ruleset = format!("table inet {table} {{\n{rules}\n}}\n");
    let mut child = netns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f:\n{ruleset}");
}

/// arping from the client, one request: the MACs that answered.
pub fn arping(client: &Netns, ip: &str) -> Vec<String> {
    arping_n(client, ip, 1)
}

/// arping from the client, `count` requests: the MACs that answered, one per reply.
pub fn arping_n(client: &Netns, ip: &str, count: u32) -> Vec<String> {
    let count = count.to_string();
    let out = client
        .command("arping")
        .args(["-c", &count, "-w", &count, "-I", "eth0", ip])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l[l.find('[')? + 1..l.find(']')?].to_lowercase()))
        .collect()
}

/// ndisc6 from the client: the target link-layer address, if anyone answered.
pub fn ndisc6(client: &Netns, ip: &str) -> Option<String> {
    let out = client
        .command("ndisc6")
        .args(["-1", "-r", "1", "-w", "500", ip, "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("Target link-layer address"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_lowercase)
}

pub fn poll<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The sum of a metric over all its label sets (0 when it has none yet).
pub fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once(' ')?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.parse::<f64>().ok()
        })
        .sum()
}

/// The sum over all label sets of a metric of a node's speaker.
pub fn speaker_metric_total(lab: &Lab, node: &str, name: &str) -> f64 {
    metric_total(
        &lab.speaker(node).metrics(lab.segment.host(node).unwrap()),
        name,
    )
}

/// The value of an unlabelled metric of a node's speaker, read from inside its namespace.
pub fn speaker_metric(lab: &Lab, node: &str, name: &str) -> f64 {
    metric(
        &lab.speaker(node).metrics(lab.segment.host(node).unwrap()),
        name,
    )
}

/// The nodes the ServiceL2Status objects of myapp name.
pub fn status_nodes(runtime: &tokio::runtime::Runtime, admin: &kube::Client) -> BTreeSet<String> {
    let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(admin.clone(), "metallb-system");
    runtime
        .block_on(api.list(&Default::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|o| o.status.as_ref().and_then(|s| s.service_name.as_deref()) == Some("myapp"))
        .filter_map(|o| o.status?.node)
        .collect()
}

pub fn node_object(name: &str, ip: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

pub struct Lab {
    // Field order is drop order: processes and the API server go before the namespaces.
    pub speakers: Vec<Option<Speaker>>,
    /// The emulated API server; `None` when the lab runs against the existing cluster
    /// `FERROLB_KUBECONFIG` names (whose API server the namespaces reach through a forwarder).
    pub server: Option<ferrolb_lab::apiserver::RunningApiServer>,
    /// On an existing cluster: its admin kubeconfig, the namespaces it had, and the host's
    /// network namespace (where its API server is reachable from).
    existing: Option<(std::path::PathBuf, Vec<String>, std::fs::File)>,
    pub admin: kube::Client,
    pub runtime: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub macs: Vec<String>,
    /// The lab's nodes: `NODES`, or as many as `start_nodes` was given.
    pub nodes: Vec<&'static str>,
    pub segment: Segment,
}

impl Lab {
    /// Builds the lab with the seed pool and advertisement, a v6 pool and advertisement, and
    /// `myapp` holding 192.168.117.100 and 2001:db8::100 with an endpoint on every node.
    /// Must run on a thread of its own: the thread enters the "api" namespace.
    pub fn start() -> Self {
        Lab::start_nodes(&NODES)
    }

    /// `node-1` … `node-{count}`: the lab of `start` with more (or fewer) nodes.
    pub fn start_with(count: usize) -> Self {
        let nodes: Vec<&'static str> = (1..=count)
            .map(|i| &*Box::leak(format!("node-{i}").into_boxed_str()))
            .collect();
        Lab::start_nodes(&nodes)
    }

    fn start_nodes(nodes: &[&'static str]) -> Self {
        let mut segment = Segment::create(&unique_prefix("fe")).unwrap();
        segment.add_host("api", &["192.168.117.250/24"]).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            segment
                .add_host(
                    node,
                    &[
                        &format!("192.168.117.{}/24", 11 + i),
                        &format!("2001:db8::{}/64", 11 + i),
                    ],
                )
                .unwrap();
        }
        segment
            .add_host("client", &["192.168.117.2/24", "2001:db8::2/64"])
            .unwrap();
        let macs: Vec<String> = nodes
            .iter()
            .map(|n| segment.host(n).unwrap().mac("eth0").unwrap())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let api_netns = segment.host("api").unwrap().name.clone();
        let existing = ferrolb_lab::target_cluster::external_kubeconfig().map(|admin| {
            use ferrolb_lab::target_cluster::{Endpoint, install_api, namespaces};
            let before = namespaces(&admin);
            install_api(&admin, &repo_root()).unwrap();
            // The namespaces reach the cluster's API server through a forwarder listening in
            // "api" at the address the emulator would have; started from the host's namespace,
            // which is where its connections go out from.
            let endpoint = Endpoint::of(&admin).unwrap();
            let reach: std::net::SocketAddr = "192.168.117.250:6443".parse().unwrap();
            let (netns, to) = (api_netns.clone(), endpoint.address);
            std::thread::spawn(move || {
                let _ = ferrolb_lab::helpers::forward(reach, Some(&netns), to, None);
            });
            std::fs::write(
                dir.path().join("admin"),
                endpoint.reach_kubeconfig(&admin, reach).unwrap(),
            )
            .unwrap();
            let token = ferrolb_lab::target_cluster::service_account_token(
                &admin,
                "metallb-system",
                "ferrolb-speaker",
            )
            .unwrap();
            std::fs::write(
                dir.path().join("speaker"),
                endpoint.token_kubeconfig(reach, &token),
            )
            .unwrap();
            let host_netns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            (admin, before, host_netns)
        });

        // The control plane lives in the "api" namespace: this thread's runtime, and so the API
        // server's sockets and the test's clients, are created there.
        enter(&api_netns);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = existing.is_none().then(|| {
            runtime.block_on(async {
                let server = ApiServer::new()
                    .start_tls("192.168.117.250:0".parse().unwrap())
                    .await
                    .unwrap();
                server
                    .server()
                    .identities()
                    .enable(ADMIN_TOKEN, UserInfo::admin());
                server
                    .kubeconfig(ADMIN_TOKEN)
                    .write(&dir.path().join("admin"))
                    .unwrap();
                server
                    .service_account_kubeconfig("metallb-system", "ferrolb-speaker")
                    .write(&dir.path().join("speaker"))
                    .unwrap();
                server
            })
        });
        let admin = poll("the API server answers", 30, || {
            runtime.block_on(async {
                let client = client_from_kubeconfig(&dir.path().join("admin"))
                    .await
                    .ok()?;
                client.apiserver_version().await.ok()?;
                Some(client)
            })
        });
        runtime.block_on(async {
        if existing.is_none() {
            create_all(&admin, kustomize_resources(&repo_root().join("config")).unwrap()).await.unwrap();
        }
        create_all(&admin, folder_documents(&repo_root().join("config/samples")).unwrap()).await.unwrap();
        let mut objects: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| node_object(n, &format!("192.168.117.{}", 11 + i)))
            .collect();
        objects.push(json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "v6-pool", "namespace": "metallb-system"},
            "spec": {"addresses": ["2001:db8::100-2001:db8::110"]}}));
        objects.push(json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "v6", "namespace": "metallb-system"},
            "spec": {"ipAddressPools": ["v6-pool"]}}));
        objects.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "myapp", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "myapp"},
                     "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "ports": [{"port": 80, "protocol": "TCP"}]}}));
        objects.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "myapp-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "myapp"}},
            "addressType": "IPv4",
            "endpoints": nodes.iter().enumerate().map(|(i, n)| json!({
                "addresses": [format!("10.244.{i}.10")], "nodeName": n,
                "conditions": {"ready": true, "serving": true}})).collect::<Vec<_>>(),
            "ports": [{"port": 80, "protocol": "TCP"}]}));
        create_all(&admin, objects).await.unwrap();
        // Status is not taken on create (a subresource), as with kube-apiserver.
        let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
        for (i, node) in nodes.iter().enumerate() {
            let status = json!({"status": node_object(node, &format!("192.168.117.{}", 11 + i))["status"]});
            node_api.patch_status(node, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        }
        // The controller's part, done by hand: this test is about the speakers.
        let services: Api<Service> = Api::namespaced(admin.clone(), "default");
        let status = json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "192.168.117.100", "ipMode": "VIP"}, {"ip": "2001:db8::100", "ipMode": "VIP"}]}}});
        services.patch_status("myapp", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    });
        let speakers = nodes
            .iter()
            .map(|n| {
                Some(Speaker::start(
                    segment.host(n).unwrap(),
                    n,
                    &dir.path().join("speaker"),
                ))
            })
            .collect();
        Lab {
            speakers,
            server,
            existing,
            admin,
            runtime,
            dir,
            macs,
            nodes: nodes.to_vec(),
            segment,
        }
    }

    fn index_of(&self, node: &str) -> usize {
        self.nodes.iter().position(|n| *n == node).unwrap()
    }

    pub fn client(&self) -> &Netns {
        self.segment.host("client").unwrap()
    }

    pub fn mac_of(&self, node: &str) -> String {
        self.macs[self.index_of(node)].clone()
    }

    pub fn kill(&mut self, node: &str) {
        let index = self.index_of(node);
        if let Some(mut speaker) = self.speakers[index].take() {
            speaker.kill();
        }
    }

    /// Stops the speaker of `node` with SIGTERM; returns its log.
    pub fn terminate(&mut self, node: &str) -> Vec<String> {
        let index = self.index_of(node);
        let Some(mut speaker) = self.speakers[index].take() else {
            return Vec::new();
        };
        speaker.terminate();
        speaker
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds a LoadBalancer Service holding `ips` (the controller's part done by hand), with a
    /// serving endpoint on every node.
    pub fn add_service(&self, name: &str, ips: &[&str]) {
        self.create(vec![
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"port": 80, "protocol": "TCP"}]}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-1"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "endpoints": self.nodes.iter().enumerate().map(|(i, n)| json!({
                    "addresses": [format!("10.244.{i}.10")], "nodeName": n,
                    "conditions": {"ready": true, "serving": true}})).collect::<Vec<_>>(),
                "ports": [{"port": 80, "protocol": "TCP"}]}),
        ]);
        let ingress: Vec<serde_json::Value> = ips
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        self.patch(
            Api::<Service>::namespaced(self.admin.clone(), "default"),
            name,
            json!({"status": {"loadBalancer": {"ingress": ingress}}}),
            true,
        );
    }

    /// Starts (again) the speaker of `node`.
    pub fn start_speaker(&mut self, node: &str) {
        self.start_speaker_with(node, &[]);
    }

    /// Starts (again) the speaker of `node` with more command-line arguments.
    pub fn start_speaker_with(&mut self, node: &str, extra_args: &[&str]) {
        let index = self.index_of(node);
        let netns = self.segment.host(node).unwrap();
        self.speakers[index] = Some(Speaker::start_with(
            netns,
            node,
            &self.dir.path().join("speaker"),
            extra_args,
        ));
    }

    /// The log lines the speaker of `node` wrote so far.
    pub fn speaker_log(&self, node: &str) -> Vec<String> {
        self.speaker(node)
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn speaker(&self, node: &str) -> &Speaker {
        self.speakers[self.index_of(node)].as_ref().unwrap()
    }

    /// Runs a future against the API server (its sockets live in the "api" namespace).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Creates objects as the administrator.
    pub fn create(&self, objects: Vec<serde_json::Value>) {
        self.block_on(create_all(&self.admin, objects)).unwrap();
    }

    /// JSON-merge-patches an object through `api` (`status: true`: the status subresource).
    pub fn patch<K>(&self, api: Api<K>, name: &str, patch: serde_json::Value, status: bool)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let params = PatchParams::default();
        let patched = if status {
            self.block_on(api.patch_status(name, &params, &Patch::Merge(&patch)))
        } else {
            self.block_on(api.patch(name, &params, &Patch::Merge(&patch)))
        };
        patched.unwrap();
    }

    /// What answers ARP for `ip` from the client: the MACs of the replies.
    pub fn arp_answers(&self, ip: &str) -> Vec<String> {
        arping(self.client(), ip)
    }

    /// Waits until exactly one node answers ARP for `ip`, and names it.
    pub fn answering_node(&self, ip: &str) -> &'static str {
        poll("exactly one node answers", 30, || {
            let answers = self.arp_answers(ip);
            let [mac] = answers.as_slice() else {
                return None;
            };
            self.nodes.iter().copied().find(|n| self.mac_of(n) == *mac)
        })
    }

    /// Waits until exactly `node` (or nobody, with `None`) answers ARP for `ip`.
    pub fn wait_for_answer(&self, ip: &str, node: Option<&str>, what: &str) {
        let expected: Vec<String> = node.map(|n| self.mac_of(n)).into_iter().collect();
        poll(what, 30, || {
            (self.arp_answers(ip) == expected).then_some(())
        });
    }
}

/// The node elected for `ip` among `alive`, as every speaker computes it.
pub fn owner_among(alive: &[&'static str], ip: &str) -> &'static str {
    let ip: IpAddr = ip.parse().unwrap();
    elect(
        ip,
        alive.iter().map(|node| Candidate {
            node,
            preference: 0,
        }),
    )
    .unwrap()
}

impl Drop for Lab {
    /// On an existing cluster, removes what the lab added (its Nodes, myapp's EndpointSlice,
    /// ferrolb's API), after the speakers are stopped.
    fn drop(&mut self) {
        for speaker in self.speakers.iter_mut().flatten() {
            speaker.kill();
        }
        if let Some((admin, namespaces, host_netns)) = self.existing.take() {
            let nodes = self.nodes.clone();
            // Dropped on a thread standing in "api": kubectl runs from the host's namespace.
            std::thread::spawn(move || {
                nix::sched::setns(host_netns, CloneFlags::CLONE_NEWNET).unwrap();
                let objects: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("node/{n}"))
                    .chain(["endpointslice/myapp-1".to_string()])
                    .collect();
                let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
                ferrolb_lab::target_cluster::remove_added(
                    &admin,
                    &repo_root(),
                    &namespaces,
                    &objects,
                );
            })
            .join()
            .unwrap();
        }
    }
}

/// Another binary of the workspace, beside the speaker's (`cargo test --workspace` builds
/// them all); built with `cargo build -p PACKAGE` when it is missing.
pub fn workspace_binary(name: &str, package: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_ferrolb-speaker")).with_file_name(name);
    if !path.exists() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "-p", package])
            .status()
            .unwrap();
        assert!(built.success(), "building {package}");
    }
    path
}

/// A controller replica, started from this thread (so in the "api" namespace when the lab's
/// thread runs it); killed on drop, and its last 200 log lines printed if the test fails.
pub struct Controller {
    pub child: Child,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Controller {
    pub fn start(kubeconfig: &std::path::Path, name: &str) -> Self {
        let mut child = Command::new(workspace_binary("ferrolb-controller", "ferrolb-controller"))
            .args(["--health-addr", "127.0.0.1:0"])
            .env("POD_NAME", name)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(format!("[{name}] {line}"));
            }
        });
        Controller { child, log }
    }

    /// Stops it: SIGTERM and waits for it to exit (`graceful`), or SIGKILL.
    pub fn stop(&mut self, graceful: bool) {
        if graceful {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            poll("the controller exits after SIGTERM", 30, || {
                self.child.try_wait().unwrap().map(|_| ())
            });
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            for line in self.log.lock().unwrap().iter().rev().take(200).rev() {
                eprintln!("{line}");
            }
        }
    }
}
