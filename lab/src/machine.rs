//! What the lab and the tests need from the machine, and installing it: the Debian packages
//! behind the tools they run (ip, iputils' arping, ndisc6, nft for the partition tests, curl). kubectl has no current
//! Debian package, so it is checked and explained, never installed.

use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A tool the lab runs, how to ask its version, what the answer must show, and its package.
struct Tool {
    program: &'static str,
    version_args: &'static [&'static str],
    /// Text the version output must contain (iputils' arping, not Debian's other arping).
    must_show: &'static str,
    package: &'static str,
    /// Only IPv6 runs need it.
    ipv6_only: bool,
    /// Only the tests need it (nft for the partition tests), not the demo.
    tests_only: bool,
}

const TOOLS: &[Tool] = &[
    Tool {
        program: "ip",
        version_args: &["-V"],
        must_show: "",
        package: "iproute2",
        ipv6_only: false,
        tests_only: false,
    },
    Tool {
        program: "arping",
        version_args: &["-V"],
        must_show: "iputils",
        package: "iputils-arping",
        ipv6_only: false,
        tests_only: false,
    },
    Tool {
        program: "ndisc6",
        version_args: &["-V"],
        must_show: "",
        package: "ndisc6",
        ipv6_only: true,
        tests_only: false,
    },
    Tool {
        program: "nft",
        version_args: &["--version"],
        must_show: "",
        package: "nftables",
        ipv6_only: false,
        tests_only: true,
    },
    Tool {
        program: "curl",
        version_args: &["--version"],
        must_show: "",
        package: "curl",
        ipv6_only: false,
        tests_only: false,
    },
];

fn version_output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        })
}

fn present(tool: &Tool) -> bool {
    version_output(tool.program, tool.version_args).is_some_and(|v| v.contains(tool.must_show))
}

/// Who needs the tools: the demo (IPv4 only, or with IPv6) or the tests (everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Demo { ipv6: bool },
    Tests,
}

impl Needs {
    fn wants(self, tool: &Tool) -> bool {
        match self {
            Needs::Tests => true,
            Needs::Demo { ipv6 } => !tool.tests_only && (ipv6 || !tool.ipv6_only),
        }
    }
}

/// The tools that are missing, as "tool: apt-get install package" lines.
pub fn missing_tools(needs: Needs) -> Vec<String> {
    TOOLS
        .iter()
        .filter(|t| needs.wants(t))
        .filter(|t| !present(t))
        .map(|t| {
            let name = if t.must_show.is_empty() {
                t.program.to_string()
            } else {
                format!("{} ({})", t.program, t.must_show)
            };
            format!("{name}: apt-get install {}", t.package)
        })
        .collect()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn has_kubectl() -> bool {
    version_output("kubectl", &["version", "--client"]).is_some()
}

pub const KUBECTL_MISSING: &str = "kubectl: see https://kubernetes.io/docs/tasks/tools/ (the lab and the tests drive the API server with the stock kubectl)";

/// Installs the Debian packages of the missing tools, saying what it installs and why. Does
/// nothing when nothing is missing; fails (having changed nothing else) without root or apt.
pub fn install_missing(needs: Needs) -> anyhow::Result<()> {
    let packages: Vec<&str> = TOOLS
        .iter()
        .filter(|t| needs.wants(t))
        .filter(|t| !present(t))
        .map(|t| t.package)
        .collect();
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "installing {} needs root (run with sudo)",
            packages.join(" ")
        );
    }
    println!(
        "    installing the Debian packages the lab needs: {} (apt-get)",
        packages.join(" ")
    );
    let mut arguments: Vec<&str> = vec!["install", "-y", "-qq"];
    arguments.extend(&packages);
    if packages.contains(&"iputils-arping") {
        // Debian's other arping conflicts with iputils' one, whose output the lab reads.
        arguments.push("arping-");
    }
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get (is this a Debian machine?)")?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let install = Command::new("apt-get")
        .args(&arguments)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !install.success() {
        bail!("apt-get install {} failed ({install})", packages.join(" "));
    }
    Ok(())
}

/// `ferrolb-lab prepare`: everything the tests need, installed where it can be.
pub fn prepare() -> anyhow::Result<()> {
    install_missing(Needs::Tests)?;
    let mut missing = missing_tools(Needs::Tests);
    if !has_kubectl() {
        missing.push(KUBECTL_MISSING.into());
    }
    if !missing.is_empty() {
        bail!("still missing:\n  - {}", missing.join("\n  - "));
    }
    println!(
        "the machine has what ferrolb's tests need (ip, iputils arping, ndisc6, nft, curl, kubectl)"
    );
    Ok(())
}
