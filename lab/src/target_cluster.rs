//! Which API server the lab and the end-to-end suites run against: the emulated one (the
//! default), or an existing cluster whose admin kubeconfig `FERROLB_KUBECONFIG` names (a kind
//! cluster in a user's CI, or a real kube-apiserver).
//!
//! Against an existing cluster the components run as on a real one: `config/`'s
//! ServiceAccounts, with tokens from the TokenRequest API (`kubectl create token`), so the
//! shipped RBAC is what is tested. Processes in the lab's network namespaces cannot reach the
//! host's addresses; a forwarder listening inside the namespaces carries their connections out
//! to the API server, and their kubeconfigs keep verifying its certificate under its own name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_yaml::Value;

/// The environment variable naming an existing cluster's admin kubeconfig.
pub const KUBECONFIG_ENV: &str = "FERROLB_KUBECONFIG";

/// The admin kubeconfig of the existing cluster to run against, if one is named.
pub fn external_kubeconfig() -> Option<PathBuf> {
    std::env::var_os(KUBECONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Runs kubectl with `kubeconfig`; its standard output, or its error.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .context("running kubectl")?;
    if !output.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cluster entry of a kubeconfig's current context, self-contained (`--flatten`), and
/// where its API server listens.
pub struct Endpoint {
    /// The `clusters[].cluster` entry: server, certificate authority, TLS settings.
    cluster: Value,
    /// The API server's host name as the certificate names it.
    pub host: String,
    /// Its address, resolved from the host.
    pub address: SocketAddr,
}

impl Endpoint {
    pub fn of(admin_kubeconfig: &Path) -> anyhow::Result<Endpoint> {
        let flat = kubectl_with(
            admin_kubeconfig,
            &["config", "view", "--raw", "--minify", "--flatten"],
        )?;
        let config: Value = serde_yaml::from_str(&flat).context("reading the kubeconfig")?;
        let cluster = config["clusters"][0]["cluster"].clone();
        let server = cluster["server"]
            .as_str()
            .context("the kubeconfig's cluster has no server")?;
        let authority = server
            .strip_prefix("https://")
            .context("the API server must be served over https")?
            .trim_end_matches('/');
        let (host, port) = split_host_port(authority)?;
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Endpoint {
            cluster,
            host,
            address,
        })
    }

    /// The admin kubeconfig's cluster entry pointed at `reach` (a forwarder), whatever its
    /// credentials are, still verifying the server under its own name.
    pub fn reach_kubeconfig(
        &self,
        admin_kubeconfig: &Path,
        reach: SocketAddr,
    ) -> anyhow::Result<String> {
        let flat = kubectl_with(
            admin_kubeconfig,
            &["config", "view", "--raw", "--minify", "--flatten"],
        )?;
        let mut config: Value = serde_yaml::from_str(&flat)?;
        let cluster = &mut config["clusters"][0]["cluster"];
        cluster["server"] = Value::from(format!("https://{reach}"));
        if cluster["tls-server-name"].is_null() {
            cluster["tls-server-name"] = Value::from(self.host.clone());
        }
        Ok(serde_yaml::to_string(&config)?)
    }

    /// A kubeconfig for `token` that reaches the API server at `reach` (a forwarder) while
    /// verifying its certificate under the name it was issued for.
    pub fn token_kubeconfig(&self, reach: SocketAddr, token: &str) -> String {
        let mut cluster = self.cluster.clone();
        cluster["server"] = Value::from(format!("https://{reach}"));
        if cluster["tls-server-name"].is_null() {
            cluster["tls-server-name"] = Value::from(self.host.clone());
        }
        let config = serde_yaml::to_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "target", "cluster": serde_json::to_value(&cluster).unwrap_or_default()}],
            "users": [{"name": "component", "user": {"token": token}}],
            "contexts": [{"name": "target", "context": {"cluster": "target", "user": "component"}}],
            "current-context": "target",
        }))
        .unwrap_or_default();
        serde_yaml::to_string(&config).unwrap_or_default()
    }
}

/// `host:port`, `[v6]:port` or a bare host (port 443).
fn split_host_port(authority: &str) -> anyhow::Result<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .context("unclosed [ in the server address")?;
        let port = after.strip_prefix(':').map_or(Ok(443), str::parse)?;
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), port.parse()?)),
        None => Ok((authority.to_string(), 443)),
    }
}

/// A token for the ServiceAccount `namespace/name`, from the TokenRequest API.
pub fn service_account_token(
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let token = kubectl_with(
        admin_kubeconfig,
        &["create", "token", name, "-n", namespace, "--duration=24h"],
    )?;
    Ok(token.trim().to_string())
}

/// The namespaces a cluster has now, as `namespace/NAME`.
pub fn namespaces(admin_kubeconfig: &Path) -> Vec<String> {
    kubectl_with(admin_kubeconfig, &["get", "namespaces", "-o", "name"])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Installs ferrolb's namespace, CRDs and RBAC from `repo`'s `config/` (not its Deployment and
/// DaemonSet: the suites run the components themselves) and waits until the CRDs are served.
/// Refuses a cluster that already serves metallb.io: a run would replace and then remove that
/// API, so it wants a scratch cluster.
pub fn install_api(admin_kubeconfig: &Path, repo: &Path) -> anyhow::Result<()> {
    let existing = kubectl_with(
        admin_kubeconfig,
        &[
            "get",
            "crd",
            "ipaddresspools.metallb.io",
            "-o",
            "name",
            "--ignore-not-found",
        ],
    )?;
    if !existing.trim().is_empty() {
        bail!(
            "the cluster already serves metallb.io (MetalLB or ferrolb is installed): a run installs ferrolb's API and removes it afterwards, so give it a scratch cluster (kind create cluster)"
        );
    }
    let config = repo.join("config");
    kubectl_with(
        admin_kubeconfig,
        &[
            "apply",
            "-f",
            &config.join("namespace.yaml").to_string_lossy(),
        ],
    )?;
    kubectl_with(
        admin_kubeconfig,
        &["apply", "-k", &config.join("crd").to_string_lossy()],
    )?;
    kubectl_with(
        admin_kubeconfig,
        &["apply", "-k", &config.join("rbac").to_string_lossy()],
    )?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while kubectl_with(
        admin_kubeconfig,
        &[
            "get",
            "ipaddresspools,l2advertisements,servicel2statuses,configurationstates",
            "-A",
        ],
    )
    .is_err()
    {
        if std::time::Instant::now() > deadline {
            bail!("ferrolb's CRDs are not served a minute after they were created");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// Removes what a test run added to a (scratch) cluster: Services in `default` (all but
/// `kubernetes`), the objects it names (`node/node-1`, `endpointslice/myapp-1`: cluster-scoped
/// or in `default`), the namespaces that were not in `namespaces_before`, then ferrolb's API,
/// RBAC and namespace; and waits (two minutes at most) until they are gone, so that the next
/// run starts from the same cluster.
pub fn remove_added(admin: &Path, repo: &Path, namespaces_before: &[String], objects: &[&str]) {
    let delete = |args: &[&str]| {
        let mut all = vec!["delete", "--ignore-not-found", "--wait=false"];
        all.extend(args);
        let _ = kubectl_with(admin, &all);
    };
    delete(&[
        "svc",
        "-n",
        "default",
        "--field-selector",
        "metadata.name!=kubernetes",
    ]);
    for object in objects {
        delete(&["-n", "default", object]);
    }
    for added in namespaces(admin)
        .iter()
        .filter(|n| !namespaces_before.contains(n))
    {
        delete(&[added]);
    }
    let config = repo.join("config");
    for part in ["rbac", "crd"] {
        delete(&["-k", &config.join(part).to_string_lossy()]);
    }
    delete(&["-f", &config.join("namespace.yaml").to_string_lossy()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let now = namespaces(admin);
        let crd_gone = kubectl_with(
            admin,
            &[
                "get",
                "crd",
                "ipaddresspools.metallb.io",
                "-o",
                "name",
                "--ignore-not-found",
            ],
        )
        .is_ok_and(|out| out.trim().is_empty());
        if crd_gone && now.iter().all(|n| namespaces_before.contains(n)) {
            return;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("the cluster still has {now:?} two minutes after the run");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_kubeconfigs_reach_the_forwarder_and_verify_the_original_name() {
        let endpoint = Endpoint {
            cluster: serde_yaml::from_str(
                "server: https://kind-control-plane:6443\ncertificate-authority-data: Q0E=\n",
            )
            .unwrap_or_default(),
            host: "kind-control-plane".into(),
            address: "127.0.0.1:6443"
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 6443))),
        };
        let text = endpoint.token_kubeconfig(
            "192.168.117.250:6443".parse().unwrap_or(endpoint.address),
            "t0k",
        );
        let config: Value = serde_yaml::from_str(&text).unwrap_or_default();
        let cluster = &config["clusters"][0]["cluster"];
        assert_eq!(
            cluster["server"].as_str(),
            Some("https://192.168.117.250:6443")
        );
        assert_eq!(
            cluster["tls-server-name"].as_str(),
            Some("kind-control-plane")
        );
        assert_eq!(cluster["certificate-authority-data"].as_str(), Some("Q0E="));
        assert_eq!(config["users"][0]["user"]["token"].as_str(), Some("t0k"));
    }
}
