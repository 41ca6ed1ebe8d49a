//! Network namespaces for the lab and the tests: "nodes" and a "client" on one layer 2
//! segment, built with iproute2 and torn down by `Drop`, also when a test fails.
//!
//! The segment's bridge lives in a namespace of its own, and every link is created inside
//! the lab's namespaces (`ip -n`): nothing is added to, or changed on, the host's interfaces.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// Runs `ip` with these arguments, failing with its message.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (install iproute2)")?;
    checked(output, &format!("ip {}", args.join(" ")))
}

fn checked(output: Output, what: &str) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "`{what}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace that is deleted when dropped (with every process still in it killed,
/// and its links).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// Whether dropping this handle deletes the namespace.
    owned: bool,
}

impl Netns {
    /// Creates `name`; fails if it exists (a leftover from an earlier run is reported, not
    /// reused).
    pub fn create(name: &str) -> anyhow::Result<Self> {
        ip(&["netns", "add", name]).with_context(|| {
            format!("creating network namespace {name} (a leftover? `ip netns del {name}`)")
        })?;
        let netns = Netns {
            name: name.to_string(),
            owned: true,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        // Addresses are usable at once: no duplicate address detection delay.
        netns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        netns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(netns)
    }

    /// A handle on a namespace that exists already; dropping it leaves the namespace.
    pub fn existing(name: &str) -> Self {
        Netns {
            name: name.to_string(),
            owned: false,
        }
    }

    /// Kills what runs in a namespace and deletes it.
    pub fn remove(name: &str) {
        drop(Netns {
            name: name.to_string(),
            owned: true,
        });
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs a command inside the namespace, failing with its message.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        checked(output, &format!("{program} {}", args.join(" ")))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, interface: &str) -> anyhow::Result<String> {
        let out = self.ip(&["-o", "link", "show", "dev", interface])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC on {interface} in {}", self.name))
    }

    /// PIDs of processes running in this namespace.
    pub fn pids(&self) -> Vec<u32> {
        ip(&["netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // A process whose main thread stands in the namespace (a test harness) is not ours
        // to kill.
        for pid in self.pids().into_iter().filter(|p| *p != std::process::id()) {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A unique prefix for one run's namespaces: tests run in parallel.
pub fn unique_prefix(base: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{base}{}-{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One layer 2 segment: a bridge in its own namespace, and hosts plugged into it, each with
/// `eth0` and the addresses given.
pub struct Segment {
    /// Hosts by name, in creation order. Dropped before the switch (field order).
    pub hosts: Vec<(String, Netns)>,
    pub switch: Netns,
    prefix: String,
}

impl Segment {
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Segment {
            switch,
            hosts: Vec::new(),
            prefix: prefix.to_string(),
        })
    }

    /// Adds a host `name` with `eth0` on the segment, holding `addresses` (CIDR notation).
    pub fn add_host(&mut self, name: &str, addresses: &[&str]) -> anyhow::Result<&Netns> {
        let netns = Netns::create(&format!("{}-{name}", self.prefix))?;
        let index = self.hosts.len();
        // Interface names are limited to 15 bytes: the switch side is named by index.
        let port = format!("p{index}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ])?;
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        for address in addresses {
            netns.ip(&["addr", "add", address, "dev", "eth0"])?;
        }
        netns.ip(&["link", "set", "eth0", "up"])?;
        self.hosts.push((name.to_string(), netns));
        Ok(&self.hosts[index].1)
    }

    /// Leaves the namespaces in place when this handle goes (`ferrolb-lab up`).
    pub fn keep(mut self) {
        self.switch.owned = false;
        for (_, host) in &mut self.hosts {
            host.owned = false;
        }
    }

    pub fn host(&self, name: &str) -> Option<&Netns> {
        self.hosts.iter().find(|(n, _)| n == name).map(|(_, ns)| ns)
    }
}
