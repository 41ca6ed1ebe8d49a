//! The kubeconfig that points kubectl and kube-rs at the emulated API server.

use serde_json::json;

/// A kubeconfig for one server and one bearer token.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub server: String,
    pub token: String,
    /// The CA that signed an HTTPS server's certificate, in PEM.
    pub ca_pem: Option<String>,
}

impl Kubeconfig {
    pub fn new(server: &str, token: &str) -> Self {
        Kubeconfig {
            server: server.to_string(),
            token: token.to_string(),
            ca_pem: None,
        }
    }

    /// Trusts `ca_pem` for an HTTPS server.
    pub fn with_ca(mut self, ca_pem: &str) -> Self {
        self.ca_pem = Some(ca_pem.to_string());
        self
    }

    /// The kubeconfig YAML, with one cluster, user and current context named `ferrolb-lab`.
    pub fn to_yaml(&self) -> String {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "ferrolb-lab", "cluster": self.cluster()}],
            "users": [{"name": "ferrolb-lab", "user": {"token": self.token}}],
            "contexts": [{"name": "ferrolb-lab", "context": {"cluster": "ferrolb-lab", "user": "ferrolb-lab", "namespace": "default"}}],
            "current-context": "ferrolb-lab",
            "preferences": {}
        });
        serde_yaml::to_string(&config).unwrap_or_default()
    }

    fn cluster(&self) -> serde_json::Value {
        use base64::Engine;
        let mut cluster = json!({"server": self.server});
        if let Some(ca) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        cluster
    }

    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, self.to_yaml())
    }
}
