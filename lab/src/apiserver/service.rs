//! Services as kube-apiserver treats them: defaulting, clusterIP and nodePort allocation (kept
//! across updates, released on deletion or type change), and validation of spec and
//! `status.loadBalancer.ingress`.
//!
//! The emulated cluster is dual-stack, IPv4 first: service CIDRs 10.96.0.0/12 and
//! fd00:10:96::/112 (addresses only ever stored, never configured anywhere), NodePort range
//! 30000-32767.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use super::strings;
use ferrolb_crds::schema_validation::{ErrorType, FieldError};
use serde_json::{Value, json};

const IPV4_SERVICE_BASE: u32 = 0x0A60_0000; // 10.96.0.0/12
const IPV4_SERVICE_SIZE: u32 = 1 << 20;
const IPV6_SERVICE_BASE: u128 = 0xfd00_0010_0096_0000_0000_0000_0000_0000; // fd00:10:96::/112
const IPV6_SERVICE_SIZE: u128 = 1 << 16;
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;
/// The `kubernetes` Service's address, the first of the IPv4 range.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// Cluster IPs and node ports in use.
#[derive(Default)]
pub struct ServiceAllocations {
    state: Mutex<AllocationState>,
}

#[derive(Default, Clone)]
struct AllocationState {
    cluster_ips: HashSet<IpAddr>,
    node_ports: HashSet<u16>,
    random: u64,
}

impl AllocationState {
    fn next_random(&mut self) -> u64 {
        if self.random == 0 {
            let seed = uuid::Uuid::new_v4().as_u128();
            self.random = (seed as u64) | 1;
        }
        // xorshift64: spreads allocations over the range as kube-apiserver's random allocator
        // does, so tests cannot come to rely on sequential addresses.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    fn allocate_ip(&mut self, family: &str) -> Option<IpAddr> {
        for _ in 0..1_000_000 {
            let r = self.next_random();
            let ip = if family == "IPv6" {
                let offset = u128::from(r) % (IPV6_SERVICE_SIZE - 2) + 1;
                IpAddr::V6(Ipv6Addr::from(IPV6_SERVICE_BASE + offset))
            } else {
                // .0 is the network address, .1 the kubernetes Service.
                let offset = (r % u64::from(IPV4_SERVICE_SIZE - 3)) as u32 + 2;
                IpAddr::V4(Ipv4Addr::from(IPV4_SERVICE_BASE + offset))
            };
            if self.cluster_ips.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    fn allocate_node_port(&mut self) -> Option<u16> {
        let size = u64::from(NODE_PORT_RANGE.end() - NODE_PORT_RANGE.start()) + 1;
        for _ in 0..100_000 {
            let port = NODE_PORT_RANGE.start() + (self.next_random() % size) as u16;
            if self.node_ports.insert(port) {
                return Some(port);
            }
        }
        None
    }
}

impl ServiceAllocations {
    fn state(&self) -> std::sync::MutexGuard<'_, AllocationState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy to allocate from without effect, for `dryRun` requests.
    pub fn scratch(&self) -> ServiceAllocations {
        ServiceAllocations {
            state: Mutex::new(self.state().clone()),
        }
    }

    /// Releases what a Service held (on deletion, or when a create failed).
    pub fn release(&self, service: &Value) {
        let mut state = self.state();
        for ip in strings(&service["spec"]["clusterIPs"]) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                state.cluster_ips.remove(&ip);
            }
        }
        for port in node_ports(service) {
            state.node_ports.remove(&port);
        }
    }

    /// Marks a Service's addresses and ports as taken without checks (for seeded objects).
    pub fn reserve(&self, service: &Value) {
        let mut state = self.state();
        for ip in strings(&service["spec"]["clusterIPs"]) {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                state.cluster_ips.insert(ip);
            }
        }
        for port in node_ports(service) {
            state.node_ports.insert(port);
        }
    }
}

fn node_ports(service: &Value) -> Vec<u16> {
    service["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p["nodePort"].as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn service_type(service: &Value) -> &str {
    service["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

fn needs_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => service["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

/// The defaults kube-apiserver fills in (`SetDefaults_Service`).
fn apply_defaults(service: &mut Value) {
    if !service["spec"].is_object() {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    if spec.get("type").is_none_or(Value::is_null) {
        spec["type"] = json!("ClusterIP");
    }
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if port.get("protocol").is_none_or(Value::is_null) {
                port["protocol"] = json!("TCP");
            }
            if port.get("targetPort").is_none_or(Value::is_null) {
                port["targetPort"] = port["port"].clone();
            }
        }
    }
    if spec.get("sessionAffinity").is_none_or(Value::is_null) {
        spec["sessionAffinity"] = json!("None");
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer")
        && spec.get("externalTrafficPolicy").is_none_or(Value::is_null)
    {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if kind != "ExternalName" && spec.get("internalTrafficPolicy").is_none_or(Value::is_null) {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if kind == "LoadBalancer"
        && spec
            .get("allocateLoadBalancerNodePorts")
            .is_none_or(Value::is_null)
    {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
}

fn error(field: &str, error_type: ErrorType, value: Option<Value>, detail: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        error_type,
        value,
        detail: detail.to_string(),
    }
}

/// Spec validation: the rules ferrolb's tests and kubectl run into.
fn validate_spec(service: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = &service["spec"];
    let kind = service_type(service);
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errors.push(error(
            "spec.type",
            ErrorType::NotSupported,
            Some(json!(kind)),
            "supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ));
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && spec["clusterIP"].as_str() != Some("None") {
        errors.push(error("spec.ports", ErrorType::Required, None, ""));
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errors.push(error(
                &format!("spec.ports[{i}].name"),
                ErrorType::Required,
                None,
                "",
            ));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            errors.push(error(
                &format!("spec.ports[{i}].name"),
                ErrorType::Duplicate,
                Some(json!(name)),
                "",
            ));
        }
        let number = port["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&number) {
            errors.push(error(
                &format!("spec.ports[{i}].port"),
                ErrorType::Invalid,
                Some(json!(number)),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = port["protocol"].as_str().unwrap_or("");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            errors.push(error(
                &format!("spec.ports[{i}].protocol"),
                ErrorType::NotSupported,
                Some(json!(protocol)),
                "supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ));
        }
    }
    for (i, port) in ports.iter().enumerate() {
        let duplicate = ports[..i]
            .iter()
            .any(|p| p["port"] == port["port"] && p["protocol"] == port["protocol"]);
        if duplicate {
            errors.push(error(
                &format!("spec.ports[{i}]"),
                ErrorType::Duplicate,
                Some(json!({"port": port["port"], "protocol": port["protocol"]})),
                "",
            ));
        }
    }
    errors
}

/// `status.loadBalancer.ingress` validation (`ValidateLoadBalancerStatus`).
fn validate_status(service: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(ingress) = service["status"]["loadBalancer"]["ingress"].as_array() else {
        return errors;
    };
    for (i, entry) in ingress.iter().enumerate() {
        let path = format!("status.loadBalancer.ingress[{i}]");
        let ip = entry["ip"].as_str().filter(|ip| !ip.is_empty());
        if let Some(ip) = ip
            && ip.parse::<IpAddr>().is_err()
        {
            errors.push(error(
                &format!("{path}.ip"),
                ErrorType::Invalid,
                Some(json!(ip)),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        if let Some(mode) = entry["ipMode"].as_str() {
            if ip.is_none() {
                errors.push(error(
                    &format!("{path}.ipMode"),
                    ErrorType::Forbidden,
                    None,
                    "may not be specified when `ip` is not set",
                ));
            } else if !matches!(mode, "VIP" | "Proxy") {
                errors.push(error(
                    &format!("{path}.ipMode"),
                    ErrorType::NotSupported,
                    Some(json!(mode)),
                    "supported values: \"Proxy\", \"VIP\"",
                ));
            }
        }
        if let Some(hostname) = entry["hostname"].as_str().filter(|h| !h.is_empty())
            && hostname.parse::<IpAddr>().is_ok()
        {
            errors.push(error(
                &format!("{path}.hostname"),
                ErrorType::Invalid,
                Some(json!(hostname)),
                "must be a DNS name, not an IP address",
            ));
        }
    }
    errors
}

/// The families the Service gets, from `ipFamilyPolicy` and `ipFamilies`.
fn families(service: &Value) -> Result<(String, Vec<String>), Vec<FieldError>> {
    let spec = &service["spec"];
    let requested = strings(&spec["ipFamilies"]);
    for (i, family) in requested.iter().enumerate() {
        if family != "IPv4" && family != "IPv6" {
            return Err(vec![error(
                &format!("spec.ipFamilies[{i}]"),
                ErrorType::NotSupported,
                Some(json!(family)),
                "supported values: \"IPv4\", \"IPv6\"",
            )]);
        }
    }
    let policy = spec["ipFamilyPolicy"].as_str().map(ToString::to_string);
    let policy = match policy {
        Some(p) => p,
        None if requested.len() > 1 => {
            return Err(vec![error(
                "spec.ipFamilyPolicy",
                ErrorType::Invalid,
                Some(json!("SingleStack")),
                "must be RequireDualStack or PreferDualStack when multiple 'ipFamilies' are specified",
            )]);
        }
        None => "SingleStack".into(),
    };
    let first = requested.first().cloned().unwrap_or_else(|| "IPv4".into());
    let other = if first == "IPv4" { "IPv6" } else { "IPv4" };
    let families = match policy.as_str() {
        "SingleStack" => vec![first],
        "PreferDualStack" | "RequireDualStack" => vec![first, other.to_string()],
        other => {
            return Err(vec![error(
                "spec.ipFamilyPolicy",
                ErrorType::NotSupported,
                Some(json!(other)),
                "supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
            )]);
        }
    };
    Ok((policy, families))
}

/// Prepares a new Service: defaults and validation. Allocation comes after the field manager
/// has recorded who set what, as in kube-apiserver, so allocated values belong to nobody.
pub fn default_and_validate(service: &mut Value) -> Result<(), Vec<FieldError>> {
    apply_defaults(service);
    if let Some(map) = service.as_object_mut() {
        map.insert("status".into(), json!({"loadBalancer": {}}));
    }
    let errors = validate_spec(service);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Allocates a new Service's cluster IPs and node ports.
pub fn allocate_new(
    allocations: &ServiceAllocations,
    service: &mut Value,
) -> Result<(), Vec<FieldError>> {
    allocate(allocations, service, None)
}

/// Defaults, validates and allocates a new Service.
pub fn prepare_create(
    allocations: &ServiceAllocations,
    service: &mut Value,
) -> Result<(), Vec<FieldError>> {
    default_and_validate(service)?;
    allocate_new(allocations, service)
}

/// Allocates what the Service lacks; `old` is the stored Service on update, whose allocations
/// are kept where the new one leaves them unset.
fn allocate(
    allocations: &ServiceAllocations,
    service: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let kind = service_type(service).to_string();
    let mut state = allocations.state();
    if kind == "ExternalName" {
        if let Some(spec) = service["spec"].as_object_mut() {
            for field in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "internalTrafficPolicy",
            ] {
                spec.remove(field);
            }
        }
    } else {
        let old_ips = old
            .map(|o| strings(&o["spec"]["clusterIPs"]))
            .unwrap_or_default();
        let requested = service["spec"]["clusterIP"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if requested == "None" {
            service["spec"]["clusterIPs"] = json!(["None"]);
        } else {
            let (policy, families) = families(service)?;
            let mut ips = if old_ips.is_empty() {
                Vec::new()
            } else {
                old_ips.clone()
            };
            if ips.is_empty() && !requested.is_empty() {
                let ip: IpAddr = requested.parse().map_err(|_| {
                    vec![error(
                        "spec.clusterIPs[0]",
                        ErrorType::Invalid,
                        Some(json!(requested)),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )]
                })?;
                if !state.cluster_ips.insert(ip) {
                    return Err(vec![error(
                        "spec.clusterIPs",
                        ErrorType::Invalid,
                        Some(json!([requested])),
                        &format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    )]);
                }
                ips.push(requested.clone());
            }
            for family in families.iter().skip(ips.len()) {
                let ip = state.allocate_ip(family).ok_or_else(|| {
                    vec![error(
                        "spec.clusterIPs",
                        ErrorType::Invalid,
                        None,
                        "range is full",
                    )]
                })?;
                ips.push(ip.to_string());
            }
            let families: Vec<String> = ips
                .iter()
                .map(|ip| {
                    if ip.contains(':') {
                        "IPv6".into()
                    } else {
                        "IPv4".into()
                    }
                })
                .collect();
            service["spec"]["clusterIP"] = json!(ips[0]);
            service["spec"]["clusterIPs"] = json!(ips);
            service["spec"]["ipFamilies"] = json!(families);
            service["spec"]["ipFamilyPolicy"] = json!(policy);
        }
    }
    let keep_node_ports = needs_node_ports(service);
    let old_ports = old.map(node_ports).unwrap_or_default();
    if let Some(ports) = service["spec"]["ports"].as_array_mut() {
        for (i, port) in ports.iter_mut().enumerate() {
            if !keep_node_ports {
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
                continue;
            }
            match port["nodePort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            {
                Some(p) if old_ports.contains(&p) => {}
                Some(p) => {
                    if !NODE_PORT_RANGE.contains(&p) || !state.node_ports.insert(p) {
                        return Err(vec![error(
                            &format!("spec.ports[{i}].nodePort"),
                            ErrorType::Invalid,
                            Some(json!(p)),
                            "provided port is already allocated",
                        )]);
                    }
                }
                None => {
                    let p = state.allocate_node_port().ok_or_else(|| {
                        vec![error(
                            "spec.ports",
                            ErrorType::Invalid,
                            None,
                            "node port range is full",
                        )]
                    })?;
                    port["nodePort"] = json!(p);
                }
            }
        }
    }
    // Node ports the old Service had and the new one does not are free again.
    let kept = node_ports(service);
    for p in old_ports.iter().filter(|p| !kept.contains(p)) {
        state.node_ports.remove(p);
    }
    Ok(())
}

/// Prepares an update of a Service's main resource: allocated values the client left out are
/// kept, then defaults, validation and allocation of what is new.
pub fn prepare_update(
    allocations: &ServiceAllocations,
    old: &Value,
    service: &mut Value,
) -> Result<(), Vec<FieldError>> {
    apply_defaults(service);
    let kind = service_type(service).to_string();
    if kind != "ExternalName" {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if service["spec"].get(field).is_none_or(Value::is_null)
                && let Some(old_value) = old["spec"].get(field)
            {
                service["spec"][field] = old_value.clone();
            }
        }
        // Node ports stay with the ports they were given to.
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = service["spec"]["ports"].as_array_mut() {
            for port in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
                if let Some(previous) = old_ports
                    .iter()
                    .find(|o| o["port"] == port["port"] && o["protocol"] == port["protocol"])
                    .and_then(|o| o.get("nodePort"))
                {
                    port["nodePort"] = previous.clone();
                }
            }
        }
    }
    let errors = validate_spec(service);
    if !errors.is_empty() {
        return Err(errors);
    }
    if service["spec"]["clusterIP"] != old["spec"]["clusterIP"]
        && old["spec"]["clusterIP"].is_string()
        && kind != "ExternalName"
    {
        return Err(vec![error(
            "spec.clusterIPs[0]",
            ErrorType::Invalid,
            Some(service["spec"]["clusterIP"].clone()),
            "may not change once set",
        )]);
    }
    allocate(allocations, service, Some(old))?;
    if kind == "ExternalName" {
        let released = json!({"spec": {"clusterIPs": old["spec"]["clusterIPs"]}});
        allocations.release(&released);
    }
    Ok(())
}

/// Prepares a status update: `ipMode` defaults to VIP for an ingress with an IP, then the
/// status is validated.
pub fn prepare_status_update(service: &mut Value) -> Result<(), Vec<FieldError>> {
    if let Some(ingress) = service["status"]["loadBalancer"]["ingress"].as_array_mut() {
        for entry in ingress {
            let has_ip = entry["ip"].as_str().is_some_and(|ip| !ip.is_empty());
            if has_ip && entry.get("ipMode").is_none_or(Value::is_null) {
                entry["ipMode"] = json!("VIP");
            }
        }
    }
    let errors = validate_status(service);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The `kubernetes` Service every cluster has in `default`.
pub fn kubernetes_service() -> Value {
    json!({
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}
        },
        "spec": {
            "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}],
            "clusterIP": KUBERNETES_SERVICE_IP,
            "clusterIPs": [KUBERNETES_SERVICE_IP],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(extra: Value) -> Value {
        let mut service = json!({
            "metadata": {"name": "myapp", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "myapp"}, "ports": [{"port": 80}]}
        });
        json_patch::merge(&mut service, &extra);
        service
    }

    #[test]
    fn create_defaults_like_kube_apiserver() {
        let allocations = ServiceAllocations::default();
        let mut service = lb(json!({}));
        prepare_create(&allocations, &mut service).unwrap();
        let spec = &service["spec"];
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        let port = spec["ports"][0]["nodePort"].as_u64().unwrap();
        assert!(NODE_PORT_RANGE.contains(&(port as u16)));
        let ip: Ipv4Addr = spec["clusterIP"].as_str().unwrap().parse().unwrap();
        assert_eq!(u32::from(ip) >> 20, IPV4_SERVICE_BASE >> 20);
        assert_eq!(service["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn dual_stack_and_no_node_ports() {
        let allocations = ServiceAllocations::default();
        let mut service = lb(
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "allocateLoadBalancerNodePorts": false}}),
        );
        prepare_create(&allocations, &mut service).unwrap();
        assert_eq!(service["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(service["spec"]["clusterIPs"].as_array().unwrap().len(), 2);
        assert!(service["spec"]["ports"][0].get("nodePort").is_none());
        let mut v6 = lb(json!({"spec": {"ipFamilies": ["IPv6"]}}));
        prepare_create(&allocations, &mut v6).unwrap();
        assert!(
            v6["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("fd00:10:96::")
        );
    }

    #[test]
    fn updates_keep_allocations_and_type_change_releases_node_ports() {
        let allocations = ServiceAllocations::default();
        let mut created = lb(json!({}));
        prepare_create(&allocations, &mut created).unwrap();
        let mut update = lb(json!({"metadata": {"labels": {"a": "b"}}}));
        prepare_update(&allocations, &created, &mut update).unwrap();
        assert_eq!(update["spec"]["clusterIP"], created["spec"]["clusterIP"]);
        assert_eq!(
            update["spec"]["ports"][0]["nodePort"],
            created["spec"]["ports"][0]["nodePort"]
        );
        let mut to_cluster_ip = lb(json!({"spec": {"type": "ClusterIP"}}));
        prepare_update(&allocations, &update, &mut to_cluster_ip).unwrap();
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        let freed = created["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
        assert!(!allocations.state().node_ports.contains(&freed));
    }

    #[test]
    fn multiple_ports_need_names() {
        let allocations = ServiceAllocations::default();
        let mut service = lb(json!({"spec": {"ports": [{"port": 80}, {"port": 8080}]}}));
        let errors = prepare_create(&allocations, &mut service).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].name: Required value"
            ]
        );
    }

    #[test]
    fn ingress_validation_matches_kube_apiserver() {
        let mut bad_ip = json!({"status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}});
        assert_eq!(
            prepare_status_update(&mut bad_ip).unwrap_err()[0].to_string(),
            "status.loadBalancer.ingress[0].ip: Invalid value: \"not-an-ip\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        let mut mode_without_ip = json!({"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example", "ipMode": "VIP"}]}}});
        assert_eq!(
            prepare_status_update(&mut mode_without_ip).unwrap_err()[0].to_string(),
            "status.loadBalancer.ingress[0].ipMode: Forbidden: may not be specified when `ip` is not set"
        );
        let mut ok = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        prepare_status_update(&mut ok).unwrap();
        assert_eq!(ok["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    }
}
