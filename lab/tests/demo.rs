//! README's first command, end to end: `ferrolb-lab demo` runs non-interactively, shows each
//! fact it promises, and leaves nothing behind.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn host_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    names.sort();
    names.join(" ")
}

/// The lab's processes still running: its binaries by executable name (not any command line
/// that mentions them, such as a cargo build running beside the test).
fn lab_processes() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| {
            c.split(|b| *b == 0)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<String>>()
        })
        .filter(|argv| {
            let program = argv
                .first()
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("");
            let lab_command = argv.get(1).map(String::as_str);
            match program {
                "ferrolb-speaker" | "ferrolb-controller" => true,
                // The stand-in for an existing cluster listens on the host's loopback; the
                // lab's own API server never does.
                "ferrolb-lab" => {
                    matches!(lab_command, Some("apiserver" | "serve-text" | "forward"))
                        && !argv.iter().any(|a| a == "127.0.0.1:0")
                }
                _ => false,
            }
        })
        .map(|argv| argv.join(" "))
        .collect()
}

/// Runs the demo with `flags` (against `cluster`'s API server when given) and checks what it
/// shows about `vips` (the first one fails over).
fn check_demo(flags: &[&str], vips: &[&str], cluster: Option<&std::path::Path>) {
    let links_before = host_links();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"));
    demo.arg("demo")
        .args(flags)
        .current_dir(repo)
        .env("RUST_BACKTRACE", "0");
    if let Some(admin) = cluster {
        demo.env("FERROLB_KUBECONFIG", admin);
    }
    let out = demo.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo {flags:?} failed:\n{stdout}\n{stderr}"
    );

    let svc = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("myapp"))
        .unwrap_or("");
    assert!(
        svc.contains("LoadBalancer") && svc.contains(vips[0]) && svc.contains("80:"),
        "kubectl get svc shows the EXTERNAL-IP:\n{stdout}"
    );
    for ip in vips {
        let answer = if ip.contains(':') {
            format!("ndisc6 {ip}: Target link-layer address")
        } else {
            format!("arping: Unicast reply from {ip}")
        };
        let answered: Vec<&str> = stdout.lines().filter(|l| l.contains(&answer)).collect();
        assert!(!answered.is_empty(), "{ip} is answered:\n{stdout}");
        let owner = answered[0]
            .rsplit('(')
            .next()
            .unwrap()
            .trim_end_matches(')')
            .trim();
        assert!(owner.starts_with("node-"), "{stdout}");
        let url = if ip.contains(':') {
            format!("http://[{ip}]/")
        } else {
            format!("http://{ip}/")
        };
        assert!(
            stdout.contains(&format!("curl {url}: hello from {owner}")),
            "{stdout}"
        );
    }
    let ip = vips[0];
    let first = stdout
        .lines()
        .find(|l| l.contains(&format!("owner of {ip}")))
        .unwrap_or_else(|| panic!("{stdout}"));
    let first_owner = first
        .split("speaker of ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let failover = stdout
        .lines()
        .find(|l| l.contains("new owner: "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let new_owner = failover
        .split("new owner: ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_ne!(new_owner, first_owner);
    assert!(failover.contains("ms after the kill"), "{stdout}");
    let url = if ip.contains(':') {
        format!("http://[{ip}]/")
    } else {
        format!("http://{ip}/")
    };
    assert!(
        stdout.contains(&format!("curl {url}: hello from {new_owner}")),
        "{stdout}"
    );

    // Nothing left behind.
    assert!(ferrolb_lab::demo::existing_namespaces().is_empty());
    assert!(lab_processes().is_empty(), "{:?}", lab_processes());
    assert!(!ferrolb_lab::demo::state_dir().exists());
    assert_eq!(host_links(), links_before, "the host's links are unchanged");
}

// One test: the lab's names are fixed (a user finds them by name), so its runs cannot overlap.
#[test]
fn the_demo_shows_the_whole_mission_and_cleans_up() {
    check_demo(&[], &["192.168.117.100"], None);
    check_demo(&["--ipv6"], &["2001:db8::100"], None);
    check_demo(
        &["--dual-stack"],
        &["192.168.117.120", "2001:db8::100"],
        None,
    );
    the_demo_runs_against_an_existing_cluster();
    a_missing_tool_or_a_leftover_is_reported_and_left_alone();
}

/// `FERROLB_KUBECONFIG` names an existing cluster's admin kubeconfig: the demo installs
/// ferrolb's API there, runs its components with ServiceAccount tokens from TokenRequest,
/// reaches the API server from the namespaces through a forwarder, and removes what it put
/// there. An emulated API server on the host's loopback stands in for that cluster (a kind
/// cluster's API server is reachable the same way).
fn the_demo_runs_against_an_existing_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    let cluster = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"))
        .args(["apiserver", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&admin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !admin.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in cluster did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cluster_guard = Kill(cluster);
    check_demo(&[], &["192.168.117.100"], Some(&admin));
    let left = Command::new("kubectl")
        .args(["get", "crd,nodes,namespace/metallb-system", "-o", "name"])
        .env("KUBECONFIG", &admin)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "the demo removed what it put on the cluster"
    );
    drop(cluster_guard);
}

fn demo_output(path: Option<&std::path::Path>) -> (bool, String) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"));
    command
        .arg("demo")
        .current_dir(repo)
        .env("RUST_BACKTRACE", "0");
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn a_missing_tool_or_a_leftover_is_reported_and_left_alone() {
    // A PATH with everything but arping, and an apt-get that records what it is asked and
    // fails to install, as on a machine whose package mirror lacks the package.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["ip", "curl", "kubectl", "sh"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let target = String::from_utf8_lossy(&found.stdout).trim().to_string();
        std::os::unix::fs::symlink(&target, bin.path().join(tool)).unwrap();
    }
    let asked = bin.path().join("apt-get.asked");
    let apt_get = bin.path().join("apt-get");
    std::fs::write(
        &apt_get,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n[ \"$1\" = update ] && exit 0\nexit 100\n",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &apt_get,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (ok, output) = demo_output(Some(bin.path()));
    assert!(!ok, "{output}");
    assert!(
        output.contains("installing the Debian packages the lab needs: iputils-arping (apt-get)"),
        "the demo says what it installs:\n{output}"
    );
    let asked = std::fs::read_to_string(&asked).unwrap_or_default();
    assert!(asked.contains("update"), "{asked}");
    assert!(
        asked.contains("install -y -qq iputils-arping arping-"),
        "the demo installs the missing package:\n{asked}"
    );
    assert!(
        output.contains("arping (iputils): apt-get install iputils-arping"),
        "what is still missing is reported with how to get it:\n{output}"
    );
    assert!(
        ferrolb_lab::demo::existing_namespaces().is_empty(),
        "nothing was built"
    );

    // A namespace of an earlier run is reported, with the way out, and not touched.
    let leftover = ferrolb_lab::netns::Netns::create("ferrolb-client").unwrap();
    let (ok, output) = demo_output(None);
    assert!(!ok, "{output}");
    assert!(
        output.contains(
            "namespaces of an earlier run exist (ferrolb-client): `ferrolb-lab down` removes them"
        ),
        "{output}"
    );
    assert_eq!(ferrolb_lab::demo::existing_namespaces(), ["ferrolb-client"]);
    let down = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"))
        .arg("down")
        .output()
        .unwrap();
    assert!(down.status.success());
    assert!(ferrolb_lab::demo::existing_namespaces().is_empty());
    drop(leftover);
}
