//! kubectl finds the plugin on PATH and runs it as `kubectl ferrolb`; what `migrate` makes of
//! MetalLB's legacy ConfigMap is admitted by the API server, and `validate` agrees with it.
//!
//! Runs on the emulated API server, or on the cluster `FERROLB_KUBECONFIG` names (the
//! migrated objects are deleted afterwards).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferrolb_e2e::{client_from_kubeconfig, create_all, kustomize_resources, repo_root};
use ferrolb_lab::apiserver::ApiServer;
use ferrolb_lab::apiserver::auth::UserInfo;

/// kubectl with the plugin's directory first on PATH.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-ferrolb"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = std::env::join_paths(std::iter::once(plugin_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let mut child = Command::new("kubectl")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Deletes the migrated objects on an existing cluster, also when the test fails.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(kubeconfig) = &self.0 {
            for kind in ["ipaddresspool", "l2advertisement"] {
                let _ = kubectl(
                    kubeconfig,
                    &[
                        "delete",
                        "-n",
                        "metallb-system",
                        kind,
                        "default",
                        "reserved",
                        "--ignore-not-found",
                    ],
                    None,
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_runs_the_plugin_and_the_migrated_metallb_configmap_is_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, kubeconfig, cleanup) = match ferrolb_lab::target_cluster::external_kubeconfig() {
        Some(admin) => (None, admin.clone(), Cleanup(Some(admin))),
        None => {
            let server = ApiServer::new()
                .start_tls("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            server
                .server()
                .identities()
                .enable("admin-token", UserInfo::admin());
            let kubeconfig = dir.path().join("admin");
            server.kubeconfig("admin-token").write(&kubeconfig).unwrap();
            let admin = client_from_kubeconfig(&kubeconfig).await.unwrap();
            create_all(
                &admin,
                kustomize_resources(&repo_root().join("config")).unwrap(),
            )
            .await
            .unwrap();
            (Some(server), kubeconfig, Cleanup(None))
        }
    };
    let example = repo_root().join("plugin/tests/fixtures/metallb-configmap.yaml");
    let example = example.to_str().unwrap();

    let migrated = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        let example = example.to_string();
        move || kubectl(&kubeconfig, &["ferrolb", "migrate", "-f", &example], None)
    })
    .await
    .unwrap();
    let manifests = String::from_utf8(migrated.stdout).unwrap();
    let warnings = String::from_utf8(migrated.stderr).unwrap();
    assert!(migrated.status.success(), "{warnings}");
    assert!(
        warnings.contains("warning: address pool \"bgp-pool\" uses protocol \"bgp\": left out"),
        "{warnings}"
    );

    let checked = {
        let kubeconfig = kubeconfig.clone();
        let manifests = manifests.clone();
        tokio::task::spawn_blocking(move || {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &manifests).unwrap();
            kubectl(
                &kubeconfig,
                &["ferrolb", "validate", "-f", file.path().to_str().unwrap()],
                None,
            )
        })
        .await
        .unwrap()
    };
    let report = String::from_utf8(checked.stdout).unwrap();
    assert!(checked.status.success(), "{report}");
    assert!(
        report.contains(
            "IPAddressPool/reserved: ok: admitted; the controller would report Valid=True (Valid)"
        ),
        "{report}"
    );

    let applied = {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifests))
        })
        .await
        .unwrap()
    };
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let stored = tokio::task::spawn_blocking(move || {
        kubectl(
            &kubeconfig,
            &[
                "get",
                "-n",
                "metallb-system",
                "ipaddresspool",
                "reserved",
                "-o",
                "jsonpath={.spec.autoAssign} {.spec.avoidBuggyIPs} {.spec.addresses[0]}",
            ],
            None,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout),
        "false true 198.51.100.0/24"
    );
    drop(cleanup);
}
