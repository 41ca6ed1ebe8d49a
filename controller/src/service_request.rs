//! What a LoadBalancer Service asks of the allocator, read from its spec and MetalLB's
//! annotations (under both `metallb.io/` and the older `metallb.universe.tf/`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ferrolb_crds::IpFamily;
use k8s_openapi::api::core::v1::Service;

pub const ANNOTATION_PREFIX: &str = "metallb.io/";
pub const LEGACY_ANNOTATION_PREFIX: &str = "metallb.universe.tf/";
pub const ADDRESS_POOL: &str = "address-pool";
pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
/// Written by the controller: the pool a Service's addresses came from.
pub const ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// namespace/name of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How many families a Service wants, from `ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// A port a Service exposes, for IP sharing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub protocol: String,
    pub port: i32,
}

/// Everything the allocator needs to know about one Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    pub key: ServiceKey,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    pub policy: FamilyPolicy,
    /// Families in the Service's order of preference (its `ipFamilies`, IPv4 first if unset).
    pub families: Vec<IpFamily>,
    /// Addresses asked for by `loadBalancerIPs` or `spec.loadBalancerIP`.
    pub requested_ips: Vec<IpAddr>,
    /// The pool asked for by `address-pool`.
    pub pool: Option<String>,
    /// The `allow-shared-ip` key.
    pub sharing_key: Option<String>,
    pub ports: Vec<Port>,
    /// `externalTrafficPolicy: Local`: sharing then needs the same selector.
    pub local_traffic: bool,
    pub selector: BTreeMap<String, String>,
}

/// A request the controller refuses instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("spec.loadBalancerIP and the {0} annotation are both set; use only the annotation")]
    BothLoadBalancerIpAndAnnotation(String),
    #[error("annotations {legacy} and {current} disagree ({legacy_value:?} vs {current_value:?})")]
    ConflictingAnnotations {
        legacy: String,
        current: String,
        legacy_value: String,
        current_value: String,
    },
    #[error("{0:?} in {1} is not an IP address")]
    InvalidIp(String, String),
    #[error("{0} asks for {1} addresses of the same family {2}")]
    SameFamilyTwice(String, usize, IpFamily),
    #[error("ipFamilyPolicy {policy:?} does not allow the {count} requested addresses")]
    FamilyCountMismatch { policy: FamilyPolicy, count: usize },
    #[error("{ip} is an {family} address and the Service's ipFamilies do not include {family}")]
    FamilyNotInService { ip: IpAddr, family: IpFamily },
}

/// Something worth telling the user once, without refusing the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestWarning {
    /// An annotation under `metallb.universe.tf/`, which still works.
    LegacyAnnotation(String),
    /// An annotation under one of MetalLB's prefixes that neither MetalLB nor ferrolb reads,
    /// with the known one it most likely meant.
    UnknownAnnotation {
        name: String,
        did_you_mean: Option<String>,
    },
}

impl fmt::Display for RequestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestWarning::LegacyAnnotation(name) => {
                write!(
                    f,
                    "annotation {name} is deprecated; use the {ANNOTATION_PREFIX} prefix"
                )
            }
            RequestWarning::UnknownAnnotation { name, did_you_mean } => {
                write!(
                    f,
                    "annotation {name} is not one MetalLB or ferrolb reads; it is ignored"
                )?;
                match did_you_mean {
                    Some(known) => write!(f, " (did you mean {known}?)"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The Service annotations MetalLB defines, under either prefix.
const KNOWN_ANNOTATIONS: [&str; 4] = [
    ADDRESS_POOL,
    LOAD_BALANCER_IPS,
    ALLOW_SHARED_IP,
    "ip-allocated-from-pool",
];

/// Annotations under `metallb.io/` or `metallb.universe.tf/` that no one reads: a typo there
/// (`loadBalancerIP`, `address-pools`) silently changes what a Service gets, so it is named.
pub fn unknown_annotations(annotations: &BTreeMap<String, String>) -> Vec<RequestWarning> {
    annotations
        .keys()
        .filter_map(|key| {
            let (prefix, name) = [ANNOTATION_PREFIX, LEGACY_ANNOTATION_PREFIX]
                .into_iter()
                .find_map(|prefix| key.strip_prefix(prefix).map(|name| (prefix, name)))?;
            if KNOWN_ANNOTATIONS.contains(&name) {
                return None;
            }
            let did_you_mean = KNOWN_ANNOTATIONS
                .into_iter()
                .map(|known| {
                    (
                        edit_distance(&name.to_lowercase(), &known.to_lowercase()),
                        known,
                    )
                })
                .filter(|(distance, _)| *distance <= 3)
                .min()
                .map(|(_, known)| format!("{prefix}{known}"));
            Some(RequestWarning::UnknownAnnotation {
                name: key.clone(),
                did_you_mean,
            })
        })
        .collect()
}

/// Levenshtein distance: insertions, deletions and substitutions of one character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Reads an annotation under either prefix; both set to different values is an error.
fn annotation(
    annotations: &BTreeMap<String, String>,
    name: &str,
    warnings: &mut Vec<RequestWarning>,
) -> Result<Option<(String, String)>, RequestError> {
    let current_key = format!("{ANNOTATION_PREFIX}{name}");
    let legacy_key = format!("{LEGACY_ANNOTATION_PREFIX}{name}");
    let current = annotations.get(&current_key).map(|v| v.trim().to_string());
    let legacy = annotations.get(&legacy_key).map(|v| v.trim().to_string());
    if legacy.is_some() {
        warnings.push(RequestWarning::LegacyAnnotation(legacy_key.clone()));
    }
    match (current, legacy) {
        (Some(c), Some(l)) if c != l => Err(RequestError::ConflictingAnnotations {
            legacy: legacy_key,
            current: current_key,
            legacy_value: l,
            current_value: c,
        }),
        (Some(c), _) => Ok(Some((current_key, c))),
        (None, Some(l)) => Ok(Some((legacy_key, l))),
        (None, None) => Ok(None),
    }
}

fn family_of(name: &str) -> Option<IpFamily> {
    match name {
        "IPv4" => Some(IpFamily::V4),
        "IPv6" => Some(IpFamily::V6),
        _ => None,
    }
}

impl ServiceRequest {
    /// Reads a Service; `namespace_labels` are the labels of its Namespace.
    pub fn from_service(
        service: &Service,
        namespace_labels: BTreeMap<String, String>,
    ) -> Result<(ServiceRequest, Vec<RequestWarning>), RequestError> {
        let meta = &service.metadata;
        let key = ServiceKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let annotations = meta.annotations.clone().unwrap_or_default();
        let mut warnings = Vec::new();
        let spec = service.spec.clone().unwrap_or_default();

        // An empty value asks for nothing, as with MetalLB.
        let pool = annotation(&annotations, ADDRESS_POOL, &mut warnings)?
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty());
        let sharing_key = annotation(&annotations, ALLOW_SHARED_IP, &mut warnings)?
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty());
        let mut requested_ips = Vec::new();
        if let Some((annotation_key, value)) =
            annotation(&annotations, LOAD_BALANCER_IPS, &mut warnings)?
        {
            if spec
                .load_balancer_ip
                .as_deref()
                .is_some_and(|ip| !ip.is_empty())
            {
                return Err(RequestError::BothLoadBalancerIpAndAnnotation(
                    annotation_key,
                ));
            }
            for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let ip = text.parse().map_err(|_| {
                    RequestError::InvalidIp(text.to_string(), annotation_key.clone())
                })?;
                requested_ips.push(ip);
            }
        } else if let Some(text) = spec.load_balancer_ip.as_deref().filter(|t| !t.is_empty()) {
            let ip = text.parse().map_err(|_| {
                RequestError::InvalidIp(text.to_string(), "spec.loadBalancerIP".into())
            })?;
            requested_ips.push(ip);
        }
        for family in [IpFamily::V4, IpFamily::V6] {
            let count = requested_ips
                .iter()
                .filter(|ip| IpFamily::of(ip) == family)
                .count();
            if count > 1 {
                return Err(RequestError::SameFamilyTwice(
                    key.to_string(),
                    count,
                    family,
                ));
            }
        }

        let policy = match spec.ip_family_policy.as_deref() {
            Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
            Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
            _ => FamilyPolicy::SingleStack,
        };
        let mut families: Vec<IpFamily> = spec
            .ip_families
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|f| family_of(f))
            .collect();
        if families.is_empty() {
            families.push(IpFamily::V4);
        }
        if policy != FamilyPolicy::SingleStack {
            for family in [IpFamily::V4, IpFamily::V6] {
                if !families.contains(&family) {
                    families.push(family);
                }
            }
        } else {
            families.truncate(1);
        }
        if let Some(ip) = requested_ips
            .iter()
            .find(|ip| !families.contains(&IpFamily::of(ip)))
        {
            return Err(RequestError::FamilyNotInService {
                ip: *ip,
                family: IpFamily::of(ip),
            });
        }
        let count = requested_ips.len();
        let fits = match policy {
            FamilyPolicy::SingleStack => count <= 1,
            FamilyPolicy::PreferDualStack => count <= 2,
            FamilyPolicy::RequireDualStack => count == 0 || count == 2,
        };
        if !fits {
            return Err(RequestError::FamilyCountMismatch { policy, count });
        }

        let ports = spec
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|p| Port {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect();
        Ok((
            ServiceRequest {
                key,
                labels: meta.labels.clone().unwrap_or_default(),
                namespace_labels,
                policy,
                families,
                requested_ips,
                pool,
                sharing_key,
                ports,
                local_traffic: spec.external_traffic_policy.as_deref() == Some("Local"),
                selector: spec.selector.clone().unwrap_or_default(),
            },
            warnings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(extra: serde_json::Value) -> Service {
        let mut base = json!({
            "metadata": {"name": "myapp", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    fn read(
        extra: serde_json::Value,
    ) -> Result<(ServiceRequest, Vec<RequestWarning>), RequestError> {
        ServiceRequest::from_service(&service(extra), BTreeMap::new())
    }

    #[test]
    fn both_prefixes_work_and_the_old_one_warns() {
        let (request, warnings) = read(json!({"metadata": {"annotations": {
            "metallb.universe.tf/address-pool": "production",
            "metallb.io/allow-shared-ip": "key-1"
        }}}))
        .unwrap();
        assert_eq!(request.pool.as_deref(), Some("production"));
        assert_eq!(request.sharing_key.as_deref(), Some("key-1"));
        assert_eq!(
            warnings,
            [RequestWarning::LegacyAnnotation(
                "metallb.universe.tf/address-pool".into()
            )]
        );
    }

    #[test]
    fn requested_addresses_from_annotation_or_spec() {
        let (request, _) = read(json!({
            "metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.10, 2001:db8::10"}},
            "spec": {"ipFamilyPolicy": "RequireDualStack"}
        }))
        .unwrap();
        assert_eq!(
            request.requested_ips,
            [
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert_eq!(request.families, [IpFamily::V4, IpFamily::V6]);
        let (request, _) = read(json!({"spec": {"loadBalancerIP": "192.0.2.20"}})).unwrap();
        assert_eq!(
            request.requested_ips,
            ["192.0.2.20".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn conflicting_requests_are_refused() {
        assert!(matches!(
            read(
                json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1"}}, "spec": {"loadBalancerIP": "192.0.2.2"}})
            ),
            Err(RequestError::BothLoadBalancerIpAndAnnotation(_))
        ));
        assert!(matches!(
            read(
                json!({"metadata": {"annotations": {"metallb.io/address-pool": "a", "metallb.universe.tf/address-pool": "b"}}})
            ),
            Err(RequestError::ConflictingAnnotations { .. })
        ));
        assert!(matches!(
            read(json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "not-an-ip"}}})),
            Err(RequestError::InvalidIp(..))
        ));
        assert!(matches!(
            read(
                json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1,192.0.2.2"}}})
            ),
            Err(RequestError::SameFamilyTwice(..))
        ));
        assert!(matches!(
            read(
                json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "192.0.2.1"}}, "spec": {"ipFamilyPolicy": "RequireDualStack"}})
            ),
            Err(RequestError::FamilyCountMismatch { .. })
        ));
        assert!(matches!(
            read(
                json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "2001:db8::5"}}})
            ),
            Err(RequestError::FamilyNotInService { .. })
        ));
    }

    #[test]
    fn families_follow_the_policy() {
        let (single, _) = read(json!({"spec": {"ipFamilies": ["IPv6"]}})).unwrap();
        assert_eq!(single.families, [IpFamily::V6]);
        let (prefer, _) =
            read(json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"]}}))
                .unwrap();
        assert_eq!(prefer.families, [IpFamily::V6, IpFamily::V4]);
        assert_eq!(prefer.policy, FamilyPolicy::PreferDualStack);
    }

    #[test]
    fn unknown_metallb_annotations_are_named_with_a_guess() {
        let annotations: BTreeMap<String, String> = [
            ("metallb.universe.tf/loadBalancerIP", "192.0.2.1"),
            ("metallb.io/address-pools", "a"),
            ("metallb.io/frobnicate", "yes"),
            ("metallb.io/allow-shared-ip", "k"),
            ("metallb.universe.tf/ip-allocated-from-pool", "a"),
            ("example.com/loadBalancerIP", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let texts: Vec<String> = unknown_annotations(&annotations)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            texts,
            [
                "annotation metallb.io/address-pools is not one MetalLB or ferrolb reads; it is \
                 ignored (did you mean metallb.io/address-pool?)",
                "annotation metallb.io/frobnicate is not one MetalLB or ferrolb reads; it is ignored",
                "annotation metallb.universe.tf/loadBalancerIP is not one MetalLB or ferrolb reads; \
                 it is ignored (did you mean metallb.universe.tf/loadBalancerIPs?)",
            ]
        );
        assert_eq!(edit_distance("loadbalancerips", "loadbalancerips"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn an_empty_pool_annotation_asks_for_no_pool() {
        let (request, _) =
            read(json!({"metadata": {"annotations": {"metallb.io/address-pool": " "}}})).unwrap();
        assert_eq!(request.pool, None);
    }
}
