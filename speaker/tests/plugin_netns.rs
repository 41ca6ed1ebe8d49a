//! `kubectl ferrolb` (the plugin in `plugin/`) against the lab: three speakers in network
//! namespaces and a controller, on the emulated API server. It lives here because the lab's
//! harness does; the plugin's pure parts are tested in its own crate.
//!
//! The plugin binary is built by `cargo test --workspace`; run alone, this test builds it
//! when it is missing (rebuild it yourself after changing the plugin).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use serde_json::json;

const V4: &str = "192.168.117.100";

/// Runs `kubectl-ferrolb` as the administrator: exit code and standard output.
fn plugin(lab: &Lab, args: &[&str]) -> (i32, String) {
    let Output { status, stdout, .. } =
        Command::new(workspace_binary("kubectl-ferrolb", "kubectl-ferrolb"))
            .arg("--kubeconfig")
            .arg(lab.dir.path().join("admin"))
            .args(args)
            .output()
            .unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
    )
}

/// Polls the plugin until `check` accepts what it printed and its exit code.
fn poll_plugin(lab: &Lab, what: &str, args: &[&str], check: impl Fn(i32, &str) -> bool) -> String {
    let last = std::cell::RefCell::new(String::new());
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll(what, 60, || {
            let (code, out) = plugin(lab, args);
            let accepted = check(code, &out);
            *last.borrow_mut() = format!("exit {code}:\n{out}");
            accepted.then_some(out)
        })
    }));
    match found {
        Ok(out) => out,
        Err(_) => panic!("{what}: the plugin last printed {}", last.into_inner()),
    }
}

#[test]
fn kubectl_ferrolb_explains_owners_and_refusals_and_reports_fenced_speakers() {
    let mut lab = Lab::start();
    lab.server
        .as_ref()
        .unwrap()
        .service_account_kubeconfig("metallb-system", "ferrolb-controller")
        .write(&lab.dir.path().join("controller"))
        .unwrap();
    let _controller = Controller::start(&lab.dir.path().join("controller"), "controller-0");
    let owner = owner_among(&NODES, V4);
    lab.wait_for_answer(V4, Some(owner), "the elected node answers");

    // All well: every speaker announces, every verdict is Valid, no Service waits.
    let all_well = poll_plugin(&lab, "status reports all well", &["status"], |code, _| {
        code == 0
    });
    assert!(all_well.contains("All well."), "{all_well}");
    assert!(all_well.contains("first-pool"), "{all_well}");

    // explain names the owner and the node that would take over from it.
    let survivors: Vec<&'static str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    let next = owner_among(&survivors, V4);
    let explained = poll_plugin(
        &lab,
        "explain names the owner",
        &["explain", "service", "default/myapp"],
        |code, out| code == 0 && out.contains(&format!("answered by     {owner}\n")),
    );
    eprintln!("kubectl ferrolb explain service default/myapp:\n{explained}");
    assert!(
        explained.contains(&format!("next owner      {next}, if the owner went away")),
        "{explained}"
    );
    assert!(
        explained.contains("pool            first-pool"),
        "{explained}"
    );
    assert!(explained.contains(&format!("1. {owner}")), "{explained}");
    assert!(explained.contains(&format!("2. {next}")), "{explained}");
    // The prediction holds.
    lab.kill(owner);
    lab.wait_for_answer(V4, Some(next), "the predicted next owner takes over");
    lab.start_speaker(owner);
    poll_plugin(&lab, "status is all well again", &["status"], |code, _| {
        code == 0
    });

    // A speaker cut off from its peers' gossip steps down: status exits 1 and says so.
    let cut_node = NODES[0];
    let gossip = "chain input { type filter hook input priority 0; udp dport 7947 drop; udp sport 7947 drop; }\nchain output { type filter hook output priority 0; udp dport 7947 drop; udp sport 7947 drop; }";
    nft_apply(lab.segment.host(cut_node).unwrap(), "ferrolb_cut", gossip);
    let fenced = poll_plugin(
        &lab,
        "status reports the fenced speaker",
        &["status"],
        |code, out| code == 1 && out.contains(&format!("speaker on {cut_node}: fenced")),
    );
    assert!(fenced.contains("Needs attention:"), "{fenced}");
    let healed = lab
        .segment
        .host(cut_node)
        .unwrap()
        .command("nft")
        .args(["delete", "table", "inet", "ferrolb_cut"])
        .status()
        .unwrap();
    assert!(healed.success());
    // Healed, it announces again. A step-down and its end may leave two answerers for a
    // moment, which the wire resolves (README, "conflicts"); status then keeps naming the
    // AddressConflict Events for its window, so only conflicts may still need attention.
    let healed = poll_plugin(
        &lab,
        "status shows the speaker announcing again",
        &["status"],
        |_, out| {
            out.contains(&format!("  {cut_node:<24} heartbeat"))
                && !out.contains(&format!("speaker on {cut_node}"))
        },
    );
    let attention: Vec<&str> = healed
        .lines()
        .skip_while(|l| *l != "Needs attention:")
        .skip(1)
        .collect();
    assert!(
        attention.iter().all(|l| l.contains("address conflict")),
        "{healed}"
    );

    // A Service refused by an exhausted pool: explain says so, with the annotation involved.
    lab.create(vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "tiny", "namespace": "metallb-system"},
        "spec": {"addresses": ["198.51.100.1/32"], "autoAssign": false}}),
    ]);
    for name in ["big-1", "big-2"] {
        lab.create(vec![json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {"metallb.io/address-pool": "tiny"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}})]);
    }
    let services: Api<Service> = Api::namespaced(lab.admin.clone(), "default");
    let refused = poll("one of the two gets the address", 60, || {
        let held: Vec<(String, bool)> = ["big-1", "big-2"]
            .iter()
            .map(|name| {
                let service = lab.block_on(services.get(name)).unwrap();
                let has = service
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .is_some_and(|i| !i.is_empty());
                (name.to_string(), has)
            })
            .collect();
        match held.as_slice() {
            [(_, true), (other, false)] | [(other, false), (_, true)] => Some(other.clone()),
            _ => None,
        }
    });
    let explained = poll_plugin(
        &lab,
        "explain says the pool is exhausted",
        &["explain", "service", &format!("default/{refused}")],
        |code, out| code == 0 && out.contains("No address."),
    );
    eprintln!("kubectl ferrolb explain service default/{refused}:\n{explained}");
    assert!(
        explained.contains(
            "the pools offered to it are exhausted (annotation metallb.io/address-pool: tiny)"
        ),
        "{explained}"
    );
    assert!(
        explained.contains("The controller says (PoolExhausted)"),
        "{explained}"
    );
    let waiting = plugin(&lab, &["status"]);
    assert_eq!(waiting.0, 1, "{}", waiting.1);
    assert!(
        waiting
            .1
            .contains(&format!("default/{refused}: PoolExhausted")),
        "{}",
        waiting.1
    );
}
