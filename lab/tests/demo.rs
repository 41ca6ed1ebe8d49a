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

fn lab_processes() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| {
            c.contains("ferrolb-speaker")
                || c.contains("ferrolb-controller")
                || c.contains("ferrolb-lab apiserver")
                || c.contains("serve-text")
                || c.contains(" forward --listen")
        })
        .collect()
}

#[test]
fn the_demo_shows_the_whole_mission_and_cleans_up() {
    let links_before = host_links();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"))
        .arg("demo")
        .current_dir(repo)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");

    let svc = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("myapp"))
        .unwrap_or("");
    assert!(
        svc.contains("LoadBalancer") && svc.contains("192.168.117.100") && svc.contains("80:"),
        "kubectl get svc shows the EXTERNAL-IP:\n{stdout}"
    );
    let arping: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("arping: Unicast reply from 192.168.117.100"))
        .collect();
    assert_eq!(
        arping.len(),
        2,
        "an ARP answer before and after the failover:\n{stdout}"
    );
    let first_owner = arping[0]
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .trim()
        .to_string();
    assert!(first_owner.starts_with("node-"), "{stdout}");
    assert!(
        stdout.contains(&format!("curl:   hello from {first_owner}")),
        "{stdout}"
    );
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
        .unwrap()
        .to_string();
    assert_ne!(new_owner, first_owner);
    assert!(failover.contains("ms after the kill"), "{stdout}");
    assert!(
        stdout.contains(&format!("curl:   hello from {new_owner}")),
        "{stdout}"
    );

    // Nothing left behind.
    assert!(ferrolb_lab::demo::existing_namespaces().is_empty());
    assert!(lab_processes().is_empty(), "{:?}", lab_processes());
    assert!(!ferrolb_lab::demo::state_dir().exists());
    assert_eq!(host_links(), links_before, "the host's links are unchanged");
}
