//! `ferrolb-lab demo | up | down | status`: the whole mission on one machine, for real on the
//! network. Namespaces stand for the machines: `ferrolb-api` (the control plane: API server
//! and controller), `ferrolb-node-1..3` (each with a speaker and an HTTP endpoint),
//! `ferrolb-client`, all on the bridge of `ferrolb-sw`. kubectl on the host reaches the API
//! server through a forwarder on 127.0.0.1:6443.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::machine;
use crate::netns::{Netns, Segment, ip};
use crate::target_cluster::{self, Endpoint, KUBECONFIG_ENV};

pub const PREFIX: &str = "ferrolb";
pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const API_ADDRESS: &str = "192.168.117.250";
const API_PORT: u16 = 6443;
/// The address the status command checks.
const VIP: &str = "192.168.117.100";

/// Which addresses the demo's Service gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    Ipv4,
    Ipv6,
    DualStack,
}

impl Family {
    /// myapp's addresses; the first is the one the demo fails over.
    pub fn vips(self) -> &'static [&'static str] {
        match self {
            Family::Ipv4 => &["192.168.117.100"],
            Family::Ipv6 => &["2001:db8::100"],
            Family::DualStack => &["192.168.117.120", "2001:db8::100"],
        }
    }

    /// The pool and advertisement added to the seed for this family, and myapp's spec.
    fn extra_manifests(self) -> Option<(String, String)> {
        let (pool, addresses, families) = match self {
            Family::Ipv4 => return None,
            Family::Ipv6 => (
                "lab-v6",
                "[\"2001:db8::100-2001:db8::110\"]",
                "ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]",
            ),
            Family::DualStack => (
                "lab-dual",
                "[\"192.168.117.120-192.168.117.130\", \"2001:db8::100-2001:db8::110\"]",
                "ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]",
            ),
        };
        let pool = format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {pool}\n  namespace: metallb-system\nspec:\n  addresses: {addresses}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: {pool}\n  namespace: metallb-system\nspec:\n  ipAddressPools: [{pool}]\n"
        );
        let service = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: default\n  labels:\n    app: myapp\nspec:\n  type: LoadBalancer\n  {families}\n  selector:\n    app: myapp\n  ports:\n  - port: 80\n    protocol: TCP\n    targetPort: 80\n"
        );
        Some((pool, service))
    }
}
/// The seed pool: every node accepts these addresses locally, as kube-proxy sets them up.
const POOL_FIRST: u8 = 100;
/// The seed's pool ends at .110; the dual-stack variant's pool takes .120-.130.
const POOL_LAST: u8 = 130;

/// Marks a failure before the lab touched anything.
#[derive(Debug)]
struct NothingDone;

impl std::fmt::Display for NothingDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the machine is not ready for the lab")
    }
}

pub fn state_dir() -> PathBuf {
    PathBuf::from("/run/ferrolb-lab")
}

/// The lab's namespaces that exist now.
pub fn existing_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")))
        .map(str::to_string)
        .collect()
}

struct Progress {
    step: usize,
    total: usize,
}

impl Progress {
    fn run<T>(&mut self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.step += 1;
        let started = Instant::now();
        println!("==> [{}/{}] {what}", self.step, self.total);
        let result = f();
        match &result {
            Ok(_) => println!("    done in {} ms", started.elapsed().as_millis()),
            Err(e) => println!(
                "    FAILED after {} ms: {e:#}",
                started.elapsed().as_millis()
            ),
        }
        result
    }
}

/// What the demo needs from the machine: root and kubectl, and the Debian packages of the
/// tools it runs, which it installs when they are missing. Whatever is still missing is
/// reported with how to get it, before anything is touched.
pub fn preflight(family: Family) -> anyhow::Result<()> {
    let needs = machine::Needs::Demo {
        ipv6: family != Family::Ipv4,
    };
    let mut missing = Vec::new();
    if !machine::is_root() {
        missing.push("root: network namespaces need it (run with sudo)".to_string());
    } else if let Err(e) = machine::install_missing(needs) {
        println!("    {e:#}");
    }
    missing.extend(machine::missing_tools(needs));
    if !machine::has_kubectl() {
        missing.push(machine::KUBECTL_MISSING.into());
    }
    if !missing.is_empty() {
        bail!("missing:\n  - {}", missing.join("\n  - "));
    }
    if let Some(admin) = target_cluster::external_kubeconfig()
        && target_cluster::kubectl_with(&admin, &["get", "crd", "ipaddresspools.metallb.io"])
            .is_ok()
    {
        bail!(
            "the cluster {KUBECONFIG_ENV} names already serves metallb.io (MetalLB or ferrolb is installed): the lab installs ferrolb's API there and removes it afterwards, so give it a scratch cluster (kind create cluster)"
        );
    }
    let leftovers = existing_namespaces();
    if !leftovers.is_empty() {
        bail!(
            "namespaces of an earlier run exist ({}): `ferrolb-lab down` removes them",
            leftovers.join(", ")
        );
    }
    Ok(())
}

/// The controller and speaker binaries, next to this one; built if missing.
fn component_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .context("no directory for this binary")?
        .to_path_buf();
    let controller = dir.join("ferrolb-controller");
    let speaker = dir.join("ferrolb-speaker");
    if !controller.exists() || !speaker.exists() {
        let release = dir.ends_with("release");
        println!(
            "    building ferrolb-controller and ferrolb-speaker next to {}",
            me.display()
        );
        let mut cargo = Command::new("cargo");
        cargo.args(["build", "-p", "ferrolb-controller", "-p", "ferrolb-speaker"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo
            .status()
            .context("running cargo (is Rust installed?)")?;
        if !status.success() {
            bail!("cargo build of the components failed");
        }
    }
    Ok((controller, speaker))
}

/// Starts a long-running process inside a namespace, detached (its own process group) so
/// that it outlives `up`; its output goes to the state directory.
fn spawn_in(
    netns: &str,
    log: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> anyhow::Result<u32> {
    let log_file = std::fs::File::create(state_dir().join(log))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(program)
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    use std::os::unix::process::CommandExt;
    let child = command
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} in {netns}", program.display()))?;
    Ok(child.id())
}

/// kubectl as the lab's administrator (the kubeconfig in the state directory).
fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    target_cluster::kubectl_with(&state_dir().join("kubeconfig"), args)
}

fn kubectl_apply(yaml: &str) -> anyhow::Result<()> {
    let path = state_dir().join("apply.yaml");
    std::fs::write(&path, yaml)?;
    kubectl(&["apply", "-f", &path.to_string_lossy()]).map(|_| ())
}

fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting until {what}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn netns(name: &str) -> String {
    format!("{PREFIX}-{name}")
}

fn node_mac(node: &str) -> anyhow::Result<String> {
    Netns::existing(&netns(node)).mac("eth0")
}

/// Who answers address resolution for `ip` from the client (arping for IPv4, ndisc6 for
/// IPv6): the MAC, and the tool's line saying so.
fn l2_answer(ip: &str) -> Option<(String, String)> {
    let client = netns("client");
    let v6 = ip.contains(':');
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &client]);
    if v6 {
        command.args(["ndisc6", "-1", "-r", "1", "-w", "500", ip, "eth0"]);
    } else {
        command.args(["arping", "-c", "1", "-w", "1", "-I", "eth0", ip]);
    }
    let output = command.output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if v6 {
        let line = text
            .lines()
            .find(|l| l.contains("Target link-layer address"))?
            .trim()
            .to_string();
        let mac = line.split_whitespace().last()?.to_lowercase();
        Some((mac, format!("ndisc6 {ip}: {line}")))
    } else {
        let line = text.lines().find(|l| l.contains("reply from"))?.to_string();
        let mac = line[line.find('[')? + 1..line.find(']')?].to_lowercase();
        Some((mac, format!("arping: {line}")))
    }
}

fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]/")
    } else {
        format!("http://{ip}/")
    }
}

fn curl(ip: &str) -> Option<String> {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns("client"),
            "curl",
            "-g",
            "-s",
            "--max-time",
            "0.2",
            &url(ip),
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Builds the lab and starts everything: the first steps of the demo.
pub fn up(progress_total: usize, family: Family) -> anyhow::Result<()> {
    let mut progress = Progress {
        step: 0,
        total: progress_total,
    };
    progress
        .run(
            "checking the machine (root, ip, arping, curl, kubectl, no leftovers)",
            || preflight(family),
        )
        .map_err(|e| e.context(NothingDone))?;
    let (controller, speaker) = progress.run(
        "finding ferrolb-controller and ferrolb-speaker",
        component_binaries,
    )?;
    std::fs::create_dir_all(state_dir())?;
    let lab = std::env::current_exe()?;

    progress.run("creating namespaces: api, node-1..3, client on one bridge; nodes set up as kube-proxy with strictARP leaves them", || {
        let mut segment = Segment::create(PREFIX)?;
        segment.add_host("api", &[&format!("{API_ADDRESS}/24")])?;
        for (i, node) in NODES.iter().enumerate() {
            let host = segment.add_host(
                node,
                &[&format!("192.168.117.{}/24", 11 + i), &format!("2001:db8::{}/64", 11 + i)],
            )?;
            // The pool's addresses are local to every node, as kube-proxy's IPVS mode puts
            // them on kube-ipvs0 (here on lo: containers often lack the dummy driver)...
            for last in POOL_FIRST..=POOL_LAST {
                host.ip(&["addr", "add", &format!("192.168.117.{last}/32"), "dev", "lo"])?;
            }
            // (Linux answers Neighbor Solicitations only for the asked interface's own
            // addresses, so IPv6 needs no switch.)
            for last in 0x100..=0x110 {
                host.ip(&["addr", "add", &format!("2001:db8::{last:x}/128"), "dev", "lo"])?;
            }
            // ...but the kernel answers ARP only for addresses of the interface asked on, and
            // never announces them (strictARP): only ferrolb's speaker answers for them.
            host.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            host.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        }
        segment.add_host("client", &["192.168.117.2/24", "2001:db8::2/64"])?;
        // The namespaces outlive this process; `down` removes them.
        segment.keep();
        Ok(())
    })?;

    let external = target_cluster::external_kubeconfig();
    if let Some(admin) = &external {
        progress.run(&format!("using the cluster {KUBECONFIG_ENV} names; a forwarder in ferrolb-api on {API_ADDRESS}:{API_PORT} carries the namespaces' connections to its API server"), || {
            let dir = state_dir();
            let endpoint = Endpoint::of(admin)?;
            let flat = target_cluster::kubectl_with(admin, &["config", "view", "--raw", "--minify", "--flatten"])?;
            std::fs::write(dir.join("kubeconfig"), flat)?;
            // `down` removes what the lab installs on this cluster.
            std::fs::write(dir.join("external-cluster"), admin.display().to_string())?;
            use std::os::unix::process::CommandExt;
            let forwarder = Command::new(&lab)
                .args(["forward", "--listen", &format!("{API_ADDRESS}:{API_PORT}"), "--listen-netns", &netns("api"),
                       "--to", &endpoint.address.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("forward.log"))?)
                .process_group(0)
                .spawn()
                .context("starting the forwarder")?;
            std::fs::write(dir.join("forward.pid"), forwarder.id().to_string())?;
            let server = kubectl(&["version"])?;
            println!("    {}", server.lines().last().unwrap_or("").trim());
            println!("    export KUBECONFIG={}", dir.join("kubeconfig").display());
            Ok(())
        })?;
    } else {
        progress.run("starting the emulated API server in ferrolb-api, and a forwarder on 127.0.0.1:6443 for kubectl", || {
        let dir = state_dir();
        let listen = format!("{API_ADDRESS}:{API_PORT}");
        let admin = dir.join("admin-in-lab.kubeconfig");
        let controller_config = format!("metallb-system/ferrolb-controller={}", dir.join("controller.kubeconfig").display());
        let speaker_config = format!("metallb-system/ferrolb-speaker={}", dir.join("speaker.kubeconfig").display());
        let pid = spawn_in(&netns("api"), "apiserver.log", &lab, &[
            "apiserver", "--listen", &listen, "--kubeconfig", &admin.to_string_lossy(),
            "--service-account-kubeconfig", &controller_config,
            "--service-account-kubeconfig", &speaker_config,
        ], &[])?;
        std::fs::write(dir.join("apiserver.pid"), pid.to_string())?;
        poll("the API server wrote its kubeconfigs", Duration::from_secs(20), || {
            (admin.exists() && dir.join("speaker.kubeconfig").exists()).then_some(())
        })?;
        let host_config = std::fs::read_to_string(&admin)?.replace(&listen, &format!("127.0.0.1:{API_PORT}"));
        std::fs::write(dir.join("kubeconfig"), host_config)?;
        use std::os::unix::process::CommandExt;
        let forwarder = Command::new(&lab)
            .args(["forward", "--listen", &format!("127.0.0.1:{API_PORT}"), "--netns", &netns("api"), "--to", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("forward.log"))?)
            .process_group(0)
            .spawn()
            .context("starting the forwarder (is 127.0.0.1:6443 free?)")?;
        std::fs::write(dir.join("forward.pid"), forwarder.id().to_string())?;
        poll("kubectl reaches the API server", Duration::from_secs(20), || kubectl(&["version"]).ok())?;
        println!("    export KUBECONFIG={}", dir.join("kubeconfig").display());
        Ok(())
    })?;
    }

    progress.run("kubectl apply -k config/ (CRDs, RBAC) and -f config/samples/ (pool first-pool, L2Advertisement example); Node objects", || {
        let root = repo_root()?;
        match &external {
            None => {
                kubectl(&["apply", "-k", &root.join("config").to_string_lossy()])?;
            }
            Some(admin) => {
                // The lab runs the controller and speakers itself: on an existing cluster
                // config/'s Deployment and DaemonSet would start real ones beside them.
                kubectl(&["apply", "-f", &root.join("config/namespace.yaml").to_string_lossy()])?;
                kubectl(&["apply", "-k", &root.join("config/crd").to_string_lossy()])?;
                // A new CRD is served once kube-apiserver has established it.
                poll("the metallb.io kinds are served", Duration::from_secs(60), || {
                    kubectl(&["get", "ipaddresspools,l2advertisements,servicel2statuses", "-A"]).ok()
                })?;
                kubectl(&["apply", "-k", &root.join("config/rbac").to_string_lossy()])?;
                let endpoint = Endpoint::of(admin)?;
                let reach: std::net::SocketAddr = format!("{API_ADDRESS}:{API_PORT}").parse()?;
                for (account, file) in [("ferrolb-controller", "controller.kubeconfig"), ("ferrolb-speaker", "speaker.kubeconfig")] {
                    let token = target_cluster::service_account_token(admin, "metallb-system", account)?;
                    std::fs::write(state_dir().join(file), endpoint.token_kubeconfig(reach, &token))?;
                }
            }
        }
        kubectl(&["apply", "-f", &root.join("config/samples").to_string_lossy()])?;
        for (i, node) in NODES.iter().enumerate() {
            kubectl_apply(&format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    kubernetes.io/hostname: {node}\n"))?;
            kubectl(&["patch", "node", node, "--subresource=status", "--type=merge", "-p",
                &format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"192.168.117.{}"}}]}}}}"#, 11 + i)])?;
        }
        Ok(())
    })?;

    progress.run("starting the controller (in ferrolb-api) and one speaker per node, under config/'s RBAC; an HTTP page on each node", || {
        let dir = state_dir();
        let pid = spawn_in(&netns("api"), "controller.log", &controller, &["--health-addr", "127.0.0.1:7472"],
            &[("KUBECONFIG", &dir.join("controller.kubeconfig"))])?;
        std::fs::write(dir.join("controller.pid"), pid.to_string())?;
        for node in NODES {
            let pid = spawn_in(&netns(node), &format!("speaker-{node}.log"), &speaker,
                &["--node-name", node, "--health-addr", "127.0.0.1:7473"],
                &[("KUBECONFIG", &dir.join("speaker.kubeconfig"))])?;
            std::fs::write(dir.join(format!("speaker-{node}.pid")), pid.to_string())?;
            let text = format!("hello from {node}");
            spawn_in(&netns(node), &format!("http-{node}.log"), &lab, &["serve-text", "--listen", "[::]:80", "--text", &text], &[])?;
        }
        Ok(())
    })?;

    progress.run("creating the seed's myapp Service (LoadBalancer, port 80) with endpoints on every node", || {
        let root = repo_root()?;
        match family.extra_manifests() {
            None => {
                kubectl(&["apply", "-f", &root.join("config/examples/myapp-service.yaml").to_string_lossy()])?;
            }
            Some((pool, service)) => {
                kubectl_apply(&pool)?;
                kubectl_apply(&service)?;
            }
        }
        let endpoints: String = NODES.iter().enumerate().map(|(i, node)| format!(
            "- addresses: [\"10.244.{i}.10\"]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true}}\n")).collect();
        kubectl_apply(&format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: myapp-1\n  namespace: default\n  labels:\n    kubernetes.io/service-name: myapp\naddressType: IPv4\nports:\n- port: 80\n  protocol: TCP\nendpoints:\n{endpoints}"))?;
        poll("myapp has its EXTERNAL-IP", Duration::from_secs(30), || {
            kubectl(&["get", "svc", "myapp", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
                .ok()
                .filter(|ips| ips.split_whitespace().collect::<Vec<_>>() == family.vips())
        })?;
        Ok(())
    })?;
    Ok(())
}

/// The node whose eth0 has this MAC.
fn node_with_mac(mac: &str) -> Option<&'static str> {
    NODES
        .iter()
        .copied()
        .find(|n| node_mac(n).ok().as_deref() == Some(mac))
}

pub fn demo(keep: bool, family: Family) -> anyhow::Result<()> {
    let total = 11;
    let vips = family.vips();
    let result = (|| -> anyhow::Result<()> {
        up(total, family)?;
        let mut progress = Progress { step: 7, total };
        progress.run("kubectl get svc", || {
            print!("{}", indent(&kubectl(&["get", "svc", "myapp"])?));
            Ok(())
        })?;
        let owner = progress.run(
            &format!(
                "from the client: who answers for {}, and curl",
                vips.join(" and ")
            ),
            || {
                let mut owners = Vec::new();
                for ip in vips {
                    let (mac, line) =
                        poll("a node answers", Duration::from_secs(30), || l2_answer(ip))?;
                    let owner = node_with_mac(&mac).context("the answer came from no lab node")?;
                    println!("    {line}   ({owner})");
                    let page = poll("the page answers", Duration::from_secs(10), || curl(ip))?;
                    println!("    curl {}: {page}", url(ip));
                    owners.push(owner);
                }
                Ok(owners[0])
            },
        )?;
        let ip = vips[0];
        progress.run(
            &format!("killing the speaker of {owner}, owner of {ip} (SIGKILL): failover"),
            || {
                let pid: i32 =
                    std::fs::read_to_string(state_dir().join(format!("speaker-{owner}.pid")))?
                        .trim()
                        .parse()?;
                let killed = Instant::now();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )?;
                // What a client sees: its next request answered by another node.
                let (new_owner, page) =
                    poll("another node answers HTTP", Duration::from_secs(30), || {
                        let page = curl(ip)?;
                        let node = NODES.iter().copied().find(|n| page.contains(n))?;
                        (node != owner).then_some((node, page))
                    })?;
                println!(
                    "    new owner: {new_owner}; the client's HTTP requests reached it {} ms after the kill",
                    killed.elapsed().as_millis()
                );
                let (_, line) = l2_answer(ip).context("no answer after the failover")?;
                println!("    {line}");
                println!("    curl {}: {page}", url(ip));
                Ok(())
            },
        )
    })();
    if let Err(e) = &result {
        println!(
            "\nThe demo failed: {e:#}\nLogs: {}/*.log",
            state_dir().display()
        );
    }
    // A machine that failed the checks had nothing built on it, and a leftover lab found
    // there is the user's: both are left as they are.
    if let Err(e) = &result
        && e.downcast_ref::<NothingDone>().is_some()
    {
        return result;
    }
    if keep && result.is_ok() {
        println!("\nThe lab keeps running. Explore it with:");
        println!(
            "  export KUBECONFIG={}",
            state_dir().join("kubeconfig").display()
        );
        println!(
            "  kubectl get svc,ipaddresspools,l2advertisements,servicel2statuses,configurationstates -A"
        );
        println!(
            "  kubectl ferrolb explain service default/myapp    (cargo install --path plugin first)"
        );
        for ip in vips {
            let ask = if ip.contains(':') {
                format!("ndisc6 {ip} eth0")
            } else {
                format!("arping -c 1 -I eth0 {ip}")
            };
            println!("  ip netns exec {} {ask}", netns("client"));
            println!("  ip netns exec {} curl -g {}", netns("client"), url(ip));
        }
        println!("  ferrolb-lab status    ferrolb-lab down");
    } else {
        println!("==> [{total}/{total}] cleaning up");
        down()?;
    }
    result
}

/// Stops every lab process and removes the namespaces and the state directory.
pub fn down() -> anyhow::Result<()> {
    let dir = state_dir();
    if let Ok(admin) = std::fs::read_to_string(dir.join("external-cluster")) {
        remove_from_cluster(Path::new(admin.trim()));
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pid")
                && let Ok(pid) = std::fs::read_to_string(entry.path())
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    for name in existing_namespaces() {
        Netns::remove(&name);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let left = existing_namespaces();
    if !left.is_empty() {
        bail!("could not remove {}", left.join(", "));
    }
    println!(
        "    the lab is gone (namespaces, processes, {})",
        dir.display()
    );
    Ok(())
}

/// Removes what the lab put on an existing cluster: its Service, EndpointSlice and Nodes,
/// then ferrolb's API (which takes the pools, advertisements and statuses with it). Best
/// effort: `down` must go on even when the cluster is unreachable.
fn remove_from_cluster(admin: &Path) {
    let delete = |args: &[&str]| {
        let mut all = vec!["delete", "--ignore-not-found", "--wait=false"];
        all.extend(args);
        if let Err(e) = target_cluster::kubectl_with(admin, &all) {
            println!("    {e:#}");
        }
    };
    delete(&["service", "myapp", "-n", "default"]);
    delete(&["endpointslice", "myapp-1", "-n", "default"]);
    let nodes: Vec<String> = NODES.iter().map(|n| format!("node/{n}")).collect();
    delete(&nodes.iter().map(String::as_str).collect::<Vec<_>>());
    if let Ok(root) = repo_root() {
        for part in ["config/rbac", "config/crd"] {
            delete(&["-k", &root.join(part).to_string_lossy()]);
        }
        delete(&["-f", &root.join("config/namespace.yaml").to_string_lossy()]);
    }
    println!(
        "    removed the lab's objects and ferrolb's API from the cluster at {}",
        admin.display()
    );
}

pub fn status() -> anyhow::Result<()> {
    let namespaces = existing_namespaces();
    if namespaces.is_empty() {
        println!("no lab is running (`ferrolb-lab up` or `ferrolb-lab demo --keep` starts one)");
        return Ok(());
    }
    println!("namespaces: {}", namespaces.join(" "));
    println!(
        "export KUBECONFIG={}",
        state_dir().join("kubeconfig").display()
    );
    match kubectl(&["get", "svc", "-A"]) {
        Ok(services) => print!("{services}"),
        Err(e) => println!("the API server does not answer: {e:#}"),
    }
    if let Some((mac, _)) = l2_answer(VIP) {
        println!(
            "{VIP} is answered by {} ({mac})",
            node_with_mac(&mac).unwrap_or("?")
        );
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The repository (config/ lives there): found from the working directory upwards.
fn repo_root() -> anyhow::Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        if dir.join("config/kustomization.yaml").exists() {
            return Ok(dir);
        }
        if !dir.pop() {
            bail!(
                "run the lab from the ferrolb repository (config/ not found above the current directory)"
            );
        }
    }
}
