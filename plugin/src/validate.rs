//! `kubectl ferrolb validate -f FILE...`: checks pools, advertisements and Services offline,
//! with the messages the API server and the controller would give.
//!
//! - metallb.io objects against the CRDs ferrolb installs, as kube-apiserver checks them
//!   (schema, CEL rules, unknown fields under kubectl's strict field validation);
//! - pools as the controller reads them (the pool's Valid condition: entries, selectors,
//!   overlaps with the other pools given);
//! - advertisements' selectors as the speakers read them;
//! - LoadBalancer Services' annotations as the controller reads them, then, when pools are
//!   given, the allocation the controller would make for them in file order on an empty
//!   cluster.

use std::collections::BTreeMap;
use std::fmt;

use ferrolb_controller::allocator::Allocator;
use ferrolb_controller::pool::Pool;
use ferrolb_controller::service_request::{ServiceRequest, unknown_annotations};
use ferrolb_crds::crd_manifests::{all_crds, schema_of};
use ferrolb_crds::schema_validation::{CrdSchema, invalid_object_message};
use ferrolb_crds::{IPAddressPool, L2Advertisement, find_overlaps};
use ferrolb_speaker::announce_policy::invalid_selectors;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One thing found about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The object's place among all the documents given: findings are listed in that order.
    pub position: usize,
    /// Where the object came from: file and document number.
    pub source: String,
    /// Kind/name.
    pub object: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "ok",
        };
        write!(
            f,
            "{}: {}: {label}: {}",
            self.source, self.object, self.message
        )
    }
}

/// A document read from a file, with where it came from.
pub struct Document {
    pub source: String,
    pub value: Value,
}

/// Reads every YAML document of `text` (a file's content); `None` documents are skipped.
pub fn documents(file: &str, text: &str) -> Result<Vec<Document>, String> {
    let mut found = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("{file}: document {}: not YAML: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        // A List (kubectl get -o yaml) holds its objects in items.
        if value["kind"] == "List" {
            for item in value["items"].as_array().cloned().unwrap_or_default() {
                found.push(Document {
                    source: format!("{file}#{}", i + 1),
                    value: item,
                });
            }
            continue;
        }
        found.push(Document {
            source: format!("{file}#{}", i + 1),
            value,
        });
    }
    Ok(found)
}

fn object_name(value: &Value) -> String {
    format!(
        "{}/{}",
        value["kind"].as_str().unwrap_or("?"),
        value["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Everything found in `documents`, in order.
pub fn validate(documents: &[Document]) -> Vec<Finding> {
    let crds: BTreeMap<String, CrdSchema> = all_crds()
        .iter()
        .map(|crd| (crd.spec.names.kind.clone(), CrdSchema::new(schema_of(crd))))
        .collect();
    let mut findings = Vec::new();
    let mut pools: Vec<(usize, String, IPAddressPool)> = Vec::new();
    let mut services: Vec<(usize, String, Service)> = Vec::new();
    for (position, document) in documents.iter().enumerate() {
        let value = &document.value;
        let object = object_name(value);
        let mut found = |severity, message: String| {
            findings.push(Finding {
                position,
                source: document.source.clone(),
                object: object.clone(),
                severity,
                message,
            });
        };
        let kind = value["kind"].as_str().unwrap_or_default();
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        if api_version.starts_with("metallb.io/") {
            if api_version != "metallb.io/v1beta1" {
                found(
                    Severity::Error,
                    format!("no such version {api_version:?}: ferrolb serves metallb.io/v1beta1"),
                );
                continue;
            }
            let Some(schema) = crds.get(kind) else {
                found(
                    Severity::Error,
                    format!(
                        "metallb.io/v1beta1 has no kind {kind:?} in ferrolb (it supports layer 2 only: no BGP kinds)"
                    ),
                );
                continue;
            };
            let mut checked = value.clone();
            schema.apply_defaults(&mut checked);
            let unknown = schema.prune(&mut checked);
            for field in unknown {
                found(
                    Severity::Error,
                    format!(
                        "strict decoding error: unknown field {field:?} (kubectl apply refuses it)"
                    ),
                );
            }
            let errors = schema.validate(&checked, None);
            if !errors.is_empty() {
                let name = value["metadata"]["name"].as_str().unwrap_or_default();
                // The API server's own message (kubectl shows it after "Error from server").
                found(
                    Severity::Error,
                    invalid_object_message(&format!("{kind}.metallb.io"), name, &errors),
                );
                continue;
            }
            match kind {
                "IPAddressPool" => match serde_json::from_value::<IPAddressPool>(checked) {
                    Ok(pool) => pools.push((position, document.source.clone(), pool)),
                    Err(e) => found(Severity::Error, format!("cannot be read: {e}")),
                },
                "L2Advertisement" => match serde_json::from_value::<L2Advertisement>(checked) {
                    Ok(advertisement) => {
                        let problems = invalid_selectors(&advertisement);
                        if problems.is_empty() {
                            found(Severity::Info, "admitted; its selectors are valid".into());
                        } else {
                            found(
                                Severity::Warning,
                                format!(
                                    "admitted, but {}: such a selector matches nothing, so the advertisement announces less than it says",
                                    problems.join("; ")
                                ),
                            );
                        }
                    }
                    Err(e) => found(Severity::Error, format!("cannot be read: {e}")),
                },
                _ => found(Severity::Info, "admitted".into()),
            }
            continue;
        }
        if api_version == "v1" && kind == "Service" {
            match serde_json::from_value::<Service>(value.clone()) {
                Ok(service) => {
                    let load_balancer = service.spec.as_ref().and_then(|s| s.type_.as_deref())
                        == Some("LoadBalancer");
                    if load_balancer {
                        services.push((position, document.source.clone(), service));
                    } else {
                        found(
                            Severity::Info,
                            "not of type LoadBalancer: ferrolb leaves it alone".into(),
                        );
                    }
                }
                Err(e) => found(Severity::Error, format!("not a Service: {e}")),
            }
            continue;
        }
        found(
            Severity::Info,
            "not a kind ferrolb reads; not checked".into(),
        );
    }

    // Pools, as the controller reads them, overlaps included.
    let parsed: Vec<(usize, String, Pool)> = pools
        .iter()
        .map(|(position, source, resource)| {
            (*position, source.clone(), Pool::from_resource(resource))
        })
        .collect();
    let overlaps = find_overlaps(
        parsed
            .iter()
            .map(|(_, _, p)| (p.name.as_str(), p.ranges.as_slice())),
    );
    for (position, source, pool) in &parsed {
        let condition = pool.condition(&overlaps);
        let severity = match (condition.valid, condition.reason) {
            (false, _) => Severity::Error,
            (true, "Overlapping") => Severity::Warning,
            _ => Severity::Info,
        };
        findings.push(Finding {
            position: *position,
            source: source.clone(),
            object: format!("IPAddressPool/{}", pool.name),
            severity,
            message: format!(
                "admitted; the controller would report Valid={} ({}): {}",
                if condition.valid { "True" } else { "False" },
                condition.reason,
                condition.message
            ),
        });
    }

    // Services, as the controller reads them, then allocated in file order.
    let mut allocator = Allocator::new();
    allocator.set_pools(parsed.into_iter().map(|(_, _, p)| p).collect());
    for (position, source, service) in &services {
        let object = format!(
            "Service/{}",
            service.metadata.name.clone().unwrap_or_default()
        );
        let mut found = |severity, message: String| {
            findings.push(Finding {
                position: *position,
                source: source.clone(),
                object: object.clone(),
                severity,
                message,
            });
        };
        let annotations = service.metadata.annotations.clone().unwrap_or_default();
        for warning in unknown_annotations(&annotations) {
            found(Severity::Warning, warning.to_string());
        }
        // Namespace labels are not in the files: namespaceSelectors see none.
        match ServiceRequest::from_service(service, BTreeMap::new()) {
            Err(e) => found(
                Severity::Error,
                format!("the controller would refuse it (InvalidRequest): {e}"),
            ),
            Ok((request, warnings)) => {
                for warning in warnings {
                    found(Severity::Warning, warning.to_string());
                }
                if pools.is_empty() {
                    found(
                        Severity::Info,
                        "its annotations are valid (give the pools too to check what it would get)"
                            .into(),
                    );
                    continue;
                }
                match allocator.allocate(&request) {
                    Ok(assignment) => {
                        let ips: Vec<String> =
                            assignment.ips.iter().map(ToString::to_string).collect();
                        found(
                            Severity::Info,
                            format!(
                                "would get {} from pool {} (on a cluster holding only these objects)",
                                ips.join(", "),
                                assignment.origin_pool().unwrap_or("?")
                            ),
                        );
                    }
                    Err(e) => found(
                        Severity::Error,
                        format!(
                            "the controller would refuse it ({}): {e} (on a cluster holding only these objects)",
                            e.reason()
                        ),
                    ),
                }
            }
        }
    }
    // Stable: an object's own findings keep their order.
    findings.sort_by_key(|f| f.position);
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<Finding> {
        validate(&documents("t.yaml", text).unwrap())
    }

    fn errors(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_pool_advertisement_and_service_pass() {
        let findings = check(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: first-pool\n  namespace: metallb-system\nspec:\n  addresses:\n  - 192.0.2.10-192.0.2.11\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: example\n  namespace: metallb-system\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: myapp\n  namespace: default\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n",
        );
        assert!(errors(&findings).is_empty(), "{findings:#?}");
        assert!(
            findings.iter().any(|f| f
                .message
                .contains("would get 192.0.2.10 from pool first-pool")),
            "{findings:#?}"
        );
    }

    #[test]
    fn the_api_servers_and_the_controllers_refusals_are_named() {
        let findings = check(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: backwards\nspec:\n  addresses:\n  - 192.0.2.20-192.0.2.10\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: tiny\nspec:\n  addresses:\n  - 192.0.2.1/32\n  bogus: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: first\nspec:\n  type: LoadBalancer\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: second\nspec:\n  type: LoadBalancer\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: typo\n  annotations:\n    metallb.io/loadBalancerIPs: 192.0.2.300\n    metallb.io/address-pools: tiny\nspec:\n  type: LoadBalancer\n",
        );
        let text = findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains("IPAddressPool/backwards: error: IPAddressPool.metallb.io \"backwards\" is invalid: spec.addresses[0]"),
            "{text}"
        );
        assert!(text.contains("unknown field \"spec.bogus\""), "{text}");
        assert!(
            text.contains("Service/second: error: the controller would refuse it (PoolExhausted)"),
            "{text}"
        );
        assert!(
            text.contains("\"192.0.2.300\" in metallb.io/loadBalancerIPs is not an IP address"),
            "{text}"
        );
        assert!(
            text.contains("did you mean metallb.io/address-pool?"),
            "{text}"
        );
    }

    #[test]
    fn overlapping_pools_and_bad_selectors_are_warned_about() {
        let findings = check(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: a\nspec:\n  addresses:\n  - 192.0.2.0/28\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: b\nspec:\n  addresses:\n  - 192.0.2.8/29\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: odd\nspec:\n  nodeSelectors:\n  - matchExpressions:\n    - key: zone\n      operator: Near\n",
        );
        let warnings: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(ToString::to_string)
            .collect();
        assert!(
            warnings.iter().any(|w| w.contains("a overlaps b")),
            "{warnings:#?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("L2Advertisement/odd") && w.contains("nodeSelectors[0]")),
            "{warnings:#?}"
        );
    }
}
