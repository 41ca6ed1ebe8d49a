//! `kubectl ferrolb migrate -f metallb-configmap.yaml`: MetalLB's configuration from before
//! its CRDs (0.12 and older: the `config` key of the `config` ConfigMap) as IPAddressPool and
//! L2Advertisement manifests, with a warning for each thing that does not carry over.
//!
//! Each layer 2 pool becomes an IPAddressPool of the same name (`addresses`, `auto-assign` as
//! `autoAssign`, `avoid-buggy-ips` as `avoidBuggyIPs`) and an L2Advertisement of the same name
//! that announces exactly that pool, so that pools added later are not announced by accident.
//! BGP pools, peers and communities have no layer 2 meaning and are left out, each with a
//! warning.

use serde::Deserialize;
use serde_json::{Value, json};

/// One pool of the legacy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPool {
    name: String,
    protocol: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    auto_assign: Option<bool>,
    avoid_buggy_ips: Option<bool>,
    bgp_advertisements: Option<Value>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyConfig {
    #[serde(default)]
    address_pools: Vec<LegacyPool>,
    peers: Option<Value>,
    bgp_communities: Option<Value>,
    #[serde(flatten)]
    other: serde_json::Map<String, Value>,
}

/// The manifests and what could not be carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub objects: Vec<Value>,
    pub warnings: Vec<String>,
}

impl Migration {
    /// The objects as one YAML stream, ready for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> Result<String, String> {
        let mut out = String::new();
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(object).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }
}

/// Converts `text`: a ConfigMap manifest holding the `config` key, or that key's content.
pub fn migrate(text: &str) -> Result<Migration, String> {
    let document: Value =
        serde_yaml::from_str(text).map_err(|e| format!("not a YAML document: {e}"))?;
    let (namespace, config_text) = if document["kind"] == "ConfigMap" {
        let namespace = document["metadata"]["namespace"]
            .as_str()
            .unwrap_or(ferrolb_crds::DEFAULT_NAMESPACE)
            .to_string();
        let Some(config) = document["data"]["config"].as_str() else {
            return Err(
                "the ConfigMap has no data.config key: it is not MetalLB's legacy configuration"
                    .into(),
            );
        };
        (namespace, config.to_string())
    } else {
        (
            ferrolb_crds::DEFAULT_NAMESPACE.to_string(),
            text.to_string(),
        )
    };
    let config: LegacyConfig = serde_yaml::from_str(&config_text)
        .map_err(|e| format!("the config key is not MetalLB's configuration: {e}"))?;
    let mut warnings = Vec::new();
    if config.peers.is_some() {
        warnings.push("peers: BGP peers are left out; ferrolb announces in layer 2 only".into());
    }
    if config.bgp_communities.is_some() {
        warnings.push("bgp-communities: left out; ferrolb announces in layer 2 only".into());
    }
    for key in config.other.keys() {
        warnings.push(format!(
            "{key}: not a key MetalLB's configuration has; left out"
        ));
    }
    let mut objects = Vec::new();
    for pool in &config.address_pools {
        let protocol = pool.protocol.as_deref().unwrap_or("");
        if protocol != "layer2" {
            warnings.push(format!(
                "address pool {:?} uses protocol {protocol:?}: left out, as ferrolb announces in layer 2 only (keep it on MetalLB, or change it to layer2 to migrate it)",
                pool.name
            ));
            continue;
        }
        if pool.bgp_advertisements.is_some() {
            warnings.push(format!(
                "address pool {:?}: bgp-advertisements mean nothing in layer 2; left out",
                pool.name
            ));
        }
        for key in pool.other.keys() {
            warnings.push(format!(
                "address pool {:?}: {key} is not a key MetalLB's pools have; left out",
                pool.name
            ));
        }
        let mut spec = json!({"addresses": pool.addresses});
        if pool.auto_assign == Some(false) {
            spec["autoAssign"] = json!(false);
        }
        if pool.avoid_buggy_ips == Some(true) {
            spec["avoidBuggyIPs"] = json!(true);
        }
        objects.push(json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": pool.name, "namespace": namespace},
            "spec": spec,
        }));
        objects.push(json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": pool.name, "namespace": namespace},
            "spec": {"ipAddressPools": [pool.name]},
        }));
    }
    if objects.is_empty() {
        warnings.push("no layer 2 address pool to migrate".into());
    }
    Ok(Migration { objects, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer2_pool_becomes_a_pool_and_its_advertisement() {
        let migration = migrate(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: metallb-system\n  name: config\ndata:\n  config: |\n    address-pools:\n    - name: default\n      protocol: layer2\n      addresses:\n      - 192.0.2.240-192.0.2.250\n      auto-assign: false\n      avoid-buggy-ips: true\n",
        )
        .unwrap();
        assert_eq!(migration.warnings, Vec::<String>::new());
        assert_eq!(
            migration.objects[0],
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "default", "namespace": "metallb-system"},
                "spec": {"addresses": ["192.0.2.240-192.0.2.250"], "autoAssign": false, "avoidBuggyIPs": true}})
        );
        assert_eq!(
            migration.objects[1]["spec"],
            json!({"ipAddressPools": ["default"]})
        );
    }

    #[test]
    fn bgp_is_left_out_with_a_warning() {
        let migration = migrate(
            "peers:\n- peer-address: 198.51.100.1\n  peer-asn: 64501\n  my-asn: 64500\naddress-pools:\n- name: bgp\n  protocol: bgp\n  addresses:\n  - 198.51.100.0/24\n",
        )
        .unwrap();
        assert!(migration.objects.is_empty());
        assert!(migration.warnings.iter().any(|w| w.starts_with("peers:")));
        assert!(
            migration
                .warnings
                .iter()
                .any(|w| w.contains("\"bgp\" uses protocol \"bgp\""))
        );
    }

    #[test]
    fn a_configmap_without_the_config_key_is_refused() {
        let refused =
            migrate("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  x: y\n");
        assert!(refused.unwrap_err().contains("no data.config key"));
    }
}
