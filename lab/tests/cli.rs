//! `ferrolb-lab apiserver` as a user runs it: in the foreground, writing a kubeconfig, serving
//! until killed.

// Test code: a panic on unexpected input is the test failing, with its message.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the server when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn apiserver_command_serves_until_killed() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nested/kubeconfig");
    let speaker_kubeconfig = dir.path().join("speaker.kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"))
        .args(["apiserver", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--service-account-kubeconfig")
        .arg(format!(
            "metallb-system/ferrolb-speaker={}",
            speaker_kubeconfig.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("serving the Kubernetes API on http://127.0.0.1:"),
        "{first}"
    );
    let second = lines.next().unwrap().unwrap();
    assert_eq!(
        second,
        format!("export KUBECONFIG={}", kubeconfig.display())
    );
    let output = Command::new("kubectl")
        .args(["get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names = String::from_utf8_lossy(&output.stdout);
    for ns in [
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-public",
        "namespace/kube-node-lease",
    ] {
        assert!(names.contains(ns), "{names}");
    }
    // The service account has no RoleBinding yet: RBAC refuses it, as kube-apiserver would.
    let output = Command::new("kubectl")
        .args(["get", "nodes"])
        .env("KUBECONFIG", &speaker_kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("Error from server (Forbidden): nodes is forbidden: User \"system:serviceaccount:metallb-system:ferrolb-speaker\" cannot list resource \"nodes\""),
        "{stderr}"
    );
    running.0.kill().unwrap();
    let status = running.0.wait().unwrap();
    assert!(!status.success(), "killed, not exited on its own");
}
