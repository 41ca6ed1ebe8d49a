//! Any values in the annotations and fields a LoadBalancer Service asks with
//! (`loadBalancerIPs`, `allow-shared-ip`, `address-pool`, under both prefixes,
//! `spec.loadBalancerIP`, the families): the controller reads a request or refuses it with
//! an error, never panics.
#![no_main]

use std::collections::BTreeMap;

use ferrolb_controller::service_request::ServiceRequest;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 6] = [
    "metallb.io/loadBalancerIPs",
    "metallb.io/allow-shared-ip",
    "metallb.io/address-pool",
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.universe.tf/allow-shared-ip",
    "metallb.universe.tf/address-pool",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // One value per line: the annotations in KEYS' order, then spec.loadBalancerIP, the
    // families (comma-separated) and the family policy; a missing line leaves it unset.
    let mut lines = text.split('\n');
    let mut annotations = BTreeMap::new();
    for key in KEYS {
        match lines.next() {
            Some(value) if !value.is_empty() => {
                annotations.insert(key.to_string(), value.to_string());
            }
            _ => {}
        }
    }
    let load_balancer_ip = lines.next().filter(|v| !v.is_empty()).map(String::from);
    let families = lines
        .next()
        .map(|v| v.split(',').map(String::from).collect::<Vec<_>>());
    let policy = lines.next().map(String::from);
    let service = Service {
        metadata: ObjectMeta {
            name: Some("fuzzed".into()),
            namespace: Some("default".into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_ip: load_balancer_ip,
            ip_families: families,
            ip_family_policy: policy,
            ..Default::default()
        }),
        status: None,
    };
    let _ = ServiceRequest::from_service(&service, BTreeMap::new());
});
