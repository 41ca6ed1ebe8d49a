//! Three speakers, each in its own "node" network namespace on one bridge, against the
//! emulated API server (in an "api" namespace on the same segment, as a control plane
//! node would be), under `config/`'s RBAC; a "client" namespace asks with arping/ndisc6.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrolb_e2e::{
    client_from_kubeconfig, create_all, folder_documents, kustomize_resources, repo_root,
};
use ferrolb_lab::apiserver::ApiServer;
use ferrolb_lab::apiserver::auth::UserInfo;
use ferrolb_lab::netns::{Netns, Segment, unique_prefix};
use ferrolb_speaker::election::{Candidate, elect};
use ferrolb_speaker::packet::{self, MacAddr};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use nix::sched::CloneFlags;
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token";
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

fn enter(netns: &Netns) {
    let file = std::fs::File::open(format!("/var/run/netns/{}", netns.name)).unwrap();
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).unwrap();
}

/// A speaker process inside a node's namespace; killed on drop. Its log is printed if the
/// test fails.
struct Speaker {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Speaker {
    fn start(netns: &Netns, node: &str, kubeconfig: &std::path::Path) -> Self {
        let mut child = netns
            .command(env!("CARGO_BIN_EXE_ferrolb-speaker"))
            .args(["--node-name", node, "--health-addr", "127.0.0.1:0"])
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
    fn metrics(&self, netns: &Netns) -> String {
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn arping(client: &Netns, ip: &str) -> Vec<String> {
    let out = client
        .command("arping")
        .args(["-c", "1", "-w", "1", "-I", "eth0", ip])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l[l.find('[')? + 1..l.find(']')?].to_lowercase()))
        .collect()
}

fn ndisc6(client: &Netns, ip: &str) -> Option<String> {
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

fn poll<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Option<T>) -> T {
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
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The nodes the ServiceL2Status objects of myapp name.
fn status_nodes(runtime: &tokio::runtime::Runtime, admin: &kube::Client) -> BTreeSet<String> {
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

fn node_object(name: &str, ip: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

#[test]
fn the_elected_node_answers_and_a_killed_owner_is_replaced() {
    let mut segment = Segment::create(&unique_prefix("fe")).unwrap();
    segment.add_host("api", &["192.168.117.250/24"]).unwrap();
    for (i, node) in NODES.iter().enumerate() {
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
    let macs: Vec<String> = NODES
        .iter()
        .map(|n| segment.host(n).unwrap().mac("eth0").unwrap())
        .collect();
    let mac_of = |node: &str| macs[NODES.iter().position(|n| *n == node).unwrap()].clone();
    let dir = tempfile::tempdir().unwrap();

    // The control plane lives in the "api" namespace: this thread's runtime, and so the API
    // server's sockets and the test's clients, are created there.
    enter(segment.host("api").unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(async {
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
    });
    let admin = runtime
        .block_on(client_from_kubeconfig(&dir.path().join("admin")))
        .unwrap();
    runtime.block_on(async {
        create_all(&admin, kustomize_resources(&repo_root().join("config")).unwrap()).await.unwrap();
        create_all(&admin, folder_documents(&repo_root().join("config/samples")).unwrap()).await.unwrap();
        let mut objects: Vec<serde_json::Value> = NODES
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
            "endpoints": NODES.iter().enumerate().map(|(i, n)| json!({
                "addresses": [format!("10.244.{i}.10")], "nodeName": n,
                "conditions": {"ready": true, "serving": true}})).collect::<Vec<_>>(),
            "ports": [{"port": 80, "protocol": "TCP"}]}));
        create_all(&admin, objects).await.unwrap();
        // Status is not taken on create (a subresource), as with kube-apiserver.
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
        for (i, node) in NODES.iter().enumerate() {
            let status = json!({"status": node_object(node, &format!("192.168.117.{}", 11 + i))["status"]});
            nodes.patch_status(node, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        }
        // The controller's part, done by hand: this test is about the speakers.
        let services: Api<Service> = Api::namespaced(admin.clone(), "default");
        let status = json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "192.168.117.100", "ipMode": "VIP"}, {"ip": "2001:db8::100", "ipMode": "VIP"}]}}});
        services.patch_status("myapp", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    });

    let mut speakers: Vec<Speaker> = NODES
        .iter()
        .map(|n| Speaker::start(segment.host(n).unwrap(), n, &dir.path().join("speaker")))
        .collect();
    let client = segment.host("client").unwrap();
    let owner_among = |alive: &[&'static str], ip: &str| -> &'static str {
        let ip: IpAddr = ip.parse().unwrap();
        elect(
            ip,
            alive.iter().map(|node| Candidate {
                node,
                preference: 0,
            }),
        )
        .unwrap()
    };
    let v4_owner = owner_among(&NODES, "192.168.117.100");
    let replies = poll("the elected node answers ARP", 30, || {
        let replies = arping(client, "192.168.117.100");
        (!replies.is_empty()).then_some(replies)
    });
    assert_eq!(
        replies,
        [mac_of(v4_owner)],
        "exactly one answer, from {v4_owner}"
    );
    let v6_owner = owner_among(&NODES, "2001:db8::100");
    let answer = poll("the elected node answers NDP", 30, || {
        ndisc6(client, "2001:db8::100")
    });
    assert_eq!(answer, mac_of(v6_owner));
    assert!(
        arping(client, "192.168.117.101").is_empty(),
        "nobody answers for an unused address"
    );
    let owner_index = NODES.iter().position(|n| *n == v4_owner).unwrap();
    let metrics = speakers[owner_index].metrics(segment.host(v4_owner).unwrap());
    assert_eq!(
        metric(&metrics, "ferrolb_speaker_peers_alive"),
        3.0,
        "{metrics}"
    );
    let expected: BTreeSet<String> = [v4_owner, v6_owner].iter().map(|n| n.to_string()).collect();
    poll("ServiceL2Status names the announcing nodes", 30, || {
        (status_nodes(&runtime, &admin) == expected).then_some(())
    });
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), "default");
    let assigned = runtime
        .block_on(events.list(&Default::default()))
        .unwrap()
        .items;
    assert!(
        assigned
            .iter()
            .any(|e| e.reason.as_deref() == Some("nodeAssigned")
                && e.message.as_deref().is_some_and(|m| m.contains(v4_owner))),
        "{assigned:?}"
    );
    assert!(
        metric(&metrics, "ferrolb_speaker_responses_sent_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "ferrolb_speaker_announced_addresses") >= 1.0,
        "{metrics}"
    );

    // The client listens for announcements, then the owner's speaker is killed.
    let (seen_tx, seen) = mpsc::channel();
    let listener_netns = client.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_listening = stop.clone();
    let listener = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{listener_netns}")).unwrap();
        nix::sched::setns(file, CloneFlags::CLONE_NEWNET).unwrap();
        let interface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == "eth0")
            .unwrap();
        let config = pnet_datalink::Config {
            read_timeout: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let Ok(pnet_datalink::Channel::Ethernet(_, mut rx)) =
            pnet_datalink::channel(&interface, config)
        else {
            panic!("no raw socket in the client");
        };
        while !stop_listening.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(frame) = rx.next()
                && let Some((mac, ip, true)) = packet::read_announcement(frame)
            {
                let _ = seen_tx.send((mac, ip));
            }
        }
    });
    let killed = NODES.iter().position(|n| *n == v4_owner).unwrap();
    speakers[killed].kill();
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != v4_owner).collect();
    let new_owner = owner_among(&survivors, "192.168.117.100");
    let new_mac: MacAddr = mac_of(new_owner).parse().unwrap();
    let announced = poll("the new owner announces 192.168.117.100", 30, || {
        seen.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|(_, ip)| *ip == "192.168.117.100".parse::<IpAddr>().unwrap())
    });
    assert_eq!(announced.0, new_mac, "gratuitous ARP from {new_owner}");
    assert_eq!(arping(client, "192.168.117.100"), [mac_of(new_owner)]);
    let new_v6_owner = owner_among(&survivors, "2001:db8::100");
    let expected: BTreeSet<String> = [new_owner, new_v6_owner]
        .iter()
        .map(|n| n.to_string())
        .collect();
    poll("ServiceL2Status follows the takeover", 30, || {
        (status_nodes(&runtime, &admin) == expected).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
    drop(speakers);
    drop(server);
    drop(runtime);
}
