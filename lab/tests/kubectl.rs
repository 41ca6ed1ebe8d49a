//! The stock kubectl, with its default flags, against the emulated API server: install the CRDs
//! and the seed, create a LoadBalancer Service, see EXTERNAL-IP go from <pending> to the IP,
//! print the pool's printer columns, update by applying a changed manifest, delete.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrolb_lab::apiserver::{ApiServer, RunningApiServer};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs kubectl against the emulator; returns stdout, or panics with stderr.
struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| {
                panic!("kubectl is needed for this test (it is on these machines): {e}")
            });
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }

    /// Runs each command in turn; their outputs, in order.
    fn run_all(&self, commands: &[&[&str]]) -> Vec<String> {
        commands.iter().map(|args| self.run(args)).collect()
    }
}

async fn start(dir: &Path) -> (RunningApiServer, Kubectl) {
    let server = ApiServer::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    server
        .kubeconfig("ferrolb-lab-admin")
        .write(&kubeconfig)
        .unwrap();
    (server, Kubectl { kubeconfig })
}

/// The columns of a `kubectl get` table row whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_drives_the_seed_example() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubectl) = start(dir.path()).await;
    let kubectl = std::sync::Arc::new(kubectl);
    let k = kubectl.clone();
    // kubectl blocks; run it off the runtime's worker that serves the API.
    let output = tokio::task::spawn_blocking(move || {
        k.run_all(&[
            &["apply", "-f", "config/crd/"][..],
            &["apply", "-f", "config/namespace.yaml"][..],
            &["apply", "-f", "config/samples/"][..],
            &["apply", "-f", "config/examples/myapp-service.yaml"][..],
            &["get", "svc"][..],
        ])
    })
    .await
    .unwrap();
    assert!(
        output[0].contains(
            "customresourcedefinition.apiextensions.k8s.io/ipaddresspools.metallb.io created"
        ),
        "{}",
        output[0]
    );
    assert!(
        output[2].contains("ipaddresspool.metallb.io/first-pool created"),
        "{}",
        output[2]
    );
    assert!(
        output[2].contains("l2advertisement.metallb.io/example created"),
        "{}",
        output[2]
    );
    assert!(output[3].contains("service/myapp created"), "{}", output[3]);
    let pending = &output[4];
    assert!(pending.starts_with("NAME "), "{pending}");
    let myapp = row(pending, "myapp");
    assert_eq!(myapp[1], "LoadBalancer");
    assert_eq!(myapp[3], "<pending>");
    assert!(
        myapp[4].starts_with("80:") && myapp[4].ends_with("/TCP"),
        "{pending}"
    );

    let k = kubectl.clone();
    let output = tokio::task::spawn_blocking(move || {
        k.run_all(&[
            &[
            "patch",
            "svc",
            "myapp",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.168.117.100","ipMode":"VIP"}]}}}"#,
        ][..],
            &["get", "svc"][..],
            &["get", "ipaddresspools", "-n", "metallb-system"][..],
            &["get", "metallb", "-A"][..],
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        row(&output[1], "myapp")[3],
        "192.168.117.100",
        "{}",
        output[1]
    );
    let pools = &output[2];
    let header: Vec<&str> = pools
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AUTO ASSIGN",
            "AVOID BUGGY IPS",
            "ADDRESSES",
            "ASSIGNED IPV4",
            "AVAILABLE IPV4",
            "ASSIGNED IPV6",
            "AVAILABLE IPV6"
        ]
    );
    assert_eq!(
        row(pools, "first-pool")[1..4],
        ["true", "false", r#"["192.168.117.100-192.168.117.110"]"#]
    );
    assert!(
        output[3].contains("ipaddresspool.metallb.io/first-pool")
            && output[3].contains("l2advertisement.metallb.io/example"),
        "{}",
        output[3]
    );

    // kubectl apply of a changed manifest updates the Service, then kubectl delete -f removes it.
    let changed = dir.path().join("myapp-8080.yaml");
    let manifest =
        std::fs::read_to_string(repo().join("config/examples/myapp-service.yaml")).unwrap();
    std::fs::write(
        &changed,
        manifest
            .replace("port: 80\n", "port: 8080\n")
            .replace("app: myapp\n  ports", "app: myapp\n    tier: web\n  ports"),
    )
    .unwrap();
    let k = kubectl.clone();
    let changed_path = changed.to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || {
        k.run_all(&[
            &["apply", "-f", &changed_path][..],
            &["get", "svc", "myapp", "-o", "wide"][..],
            &["delete", "-f", &changed_path][..],
            &["get", "svc"][..],
        ])
    })
    .await
    .unwrap();
    assert!(
        output[0].contains("service/myapp configured"),
        "{}",
        output[0]
    );
    let wide = row(&output[1], "myapp");
    assert!(wide[4].starts_with("8080:"), "{}", output[1]);
    assert!(
        output[2].contains("service \"myapp\" deleted"),
        "{}",
        output[2]
    );
    assert!(!output[3].contains("myapp"), "{}", output[3]);
    assert!(server.server().store().resource_version() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_installs_config_and_applies_server_side() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, kubectl) = start(dir.path()).await;
    let output = tokio::task::spawn_blocking(move || {
        kubectl.run_all(&[
            &["apply", "-k", "config/"][..],
            &[
                "apply",
                "--server-side",
                "-f",
                "config/examples/myapp-service.yaml",
            ][..],
            &[
                "apply",
                "--server-side",
                "-f",
                "config/examples/myapp-service.yaml",
            ][..],
            &["get", "deploy,ds,sa", "-n", "metallb-system"][..],
            &["explain", "ipaddresspool.spec.addresses"][..],
            &["describe", "svc", "myapp"][..],
        ])
    })
    .await
    .unwrap();
    for expected in [
        "namespace/metallb-system created",
        "deployment.apps/ferrolb-controller created",
        "daemonset.apps/ferrolb-speaker created",
        "clusterrole.rbac.authorization.k8s.io/ferrolb:controller created",
    ] {
        assert!(output[0].contains(expected), "{expected}:\n{}", output[0]);
    }
    assert!(
        output[1].contains("service/myapp serverside-applied"),
        "{}",
        output[1]
    );
    assert!(
        output[2].contains("service/myapp serverside-applied"),
        "{}",
        output[2]
    );
    assert!(
        output[3].contains("ferrolb-controller") && output[3].contains("ferrolb-speaker"),
        "{}",
        output[3]
    );
    assert!(output[4].contains("CIDR prefix"), "{}", output[4]);
    assert!(
        output[5].contains("LoadBalancer") && output[5].contains("Name:"),
        "{}",
        output[5]
    );
}

/// What a newcomer types first: `kubectl create` sends protobuf bodies, and `kubectl get events`
/// prints kube-apiserver's event columns.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_and_get_events_work_as_on_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubectl) = start(dir.path()).await;
    let events: &[u8] = br#"{"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "eventTime": "2026-12-02T12:00:00.000000Z", "action": "Allocate",
        "reportingController": "metallb.io/ferrolb-controller", "reportingInstance": "ferrolb-controller-0",
        "reason": "IPAllocated", "type": "Normal", "note": "Assigned IP [\"192.168.117.100\"]",
        "regarding": {"kind": "Service", "namespace": "default", "name": "web", "apiVersion": "v1"}}"#;
    let event_file = dir.path().join("event.json");
    std::fs::write(&event_file, events).unwrap();
    let event_file = event_file.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        kubectl.run_all(&[
            &["create", "namespace", "team-a"][..],
            &["create", "service", "loadbalancer", "web", "--tcp=80:8080"][..],
            &["create", "configmap", "settings", "--from-literal=a=b"][..],
            &["get", "namespace", "team-a"][..],
            &["get", "svc", "web"][..],
            &["get", "configmap", "settings", "-o", "jsonpath={.data.a}"][..],
            &["create", "-f", &event_file][..],
            &["get", "events"][..],
        ])
    })
    .await
    .unwrap();
    assert!(
        output[0].contains("namespace/team-a created"),
        "{}",
        output[0]
    );
    assert!(output[1].contains("service/web created"), "{}", output[1]);
    assert!(
        output[2].contains("configmap/settings created"),
        "{}",
        output[2]
    );
    assert_eq!(row(&output[3], "team-a")[1], "Active", "{}", output[3]);
    let web = row(&output[4], "web");
    assert_eq!(web[1], "LoadBalancer", "{}", output[4]);
    assert_eq!(web[3], "<pending>", "{}", output[4]);
    assert!(web[4].starts_with("80:"), "{}", output[4]);
    assert_eq!(output[5], "b");
    let header: Vec<&str> = output[7]
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{}",
        output[7]
    );
    assert!(
        output[7]
            .contains("Normal   IPAllocated   service/web   Assigned IP [\"192.168.117.100\"]"),
        "{}",
        output[7]
    );
    drop(server);
}
