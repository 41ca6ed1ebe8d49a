//! What the speaker's caches keep of each Service and EndpointSlice: only what it reads.
//!
//! At 10,000 Services a speaker held 152 MiB, most of it the whole objects kube's reflectors
//! cache (ports, selectors, cluster IPs, every endpoint's addresses and references). The
//! speaker reads a Service's type, class, traffic policy, labels, MetalLB's annotations,
//! its ingress addresses and its identity (for Events); and an EndpointSlice's owning Service
//! and its endpoints' node and conditions. The rest is dropped as the objects arrive, in the
//! watch (`ferrolb_ops::lean_watch`). A test holds what the speaker computes from a trimmed
//! object to what it computes from the whole one.

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const METALLB_ANNOTATIONS: &str = "metallb.io/";

/// Keeps a Service's type, class, traffic policy, MetalLB annotations, labels, status and
/// identity.
pub fn trim_service(service: &mut Service) {
    if let Some(annotations) = service.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(METALLB_ANNOTATIONS));
    }
    service.metadata.owner_references = None;
    service.metadata.finalizers = None;
    if let Some(spec) = service.spec.take() {
        service.spec = Some(ServiceSpec {
            type_: spec.type_,
            load_balancer_class: spec.load_balancer_class,
            external_traffic_policy: spec.external_traffic_policy,
            ..Default::default()
        });
    }
}

/// Keeps which Service an EndpointSlice belongs to and, per endpoint, its node and conditions.
pub fn trim_endpoint_slice(slice: &mut EndpointSlice) {
    if let Some(labels) = slice.metadata.labels.as_mut() {
        labels.retain(|key, _| key == SERVICE_NAME_LABEL);
    }
    slice.metadata.annotations = None;
    slice.metadata.owner_references = None;
    slice.ports = None;
    for endpoint in &mut slice.endpoints {
        *endpoint = Endpoint {
            node_name: endpoint.node_name.take(),
            conditions: endpoint.conditions.take(),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2_status::service_reference;
    use crate::runtime::service_info;
    use serde_json::json;
    use std::sync::Arc;

    fn service(policy: &str, class: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"metallb.io/ip-allocated-from-pool": "blue",
                                "metallb.io/allow-shared-ip": "k",
                                "kubectl.kubernetes.io/restartedAt": "now"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": class,
                     "externalTrafficPolicy": policy, "selector": {"app": "web"},
                     "clusterIP": "10.0.0.5", "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}]}},
        }))
        .unwrap_or_default()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "x"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"port": 8080}],
        }))
        .unwrap_or_default()
    }

    #[test]
    fn the_speaker_reads_the_same_from_trimmed_objects() {
        let slices = [
            slice(json!([
                {"addresses": ["10.1.0.1"], "nodeName": "node-1", "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1"}, "zone": "a"},
                {"addresses": ["10.1.0.2"], "nodeName": "node-2", "conditions": {"ready": false, "serving": true}},
                {"addresses": ["10.1.0.3"], "nodeName": "node-3", "conditions": {"serving": false}},
                {"addresses": ["10.1.0.4"]},
            ])),
            slice(json!([])),
        ];
        for (policy, class) in [("Local", None), ("Cluster", Some("other"))] {
            let whole = service(policy, class);
            let mut trimmed = whole.clone();
            trim_service(&mut trimmed);
            let whole_slices: Vec<Arc<EndpointSlice>> =
                slices.iter().cloned().map(Arc::new).collect();
            let trimmed_slices: Vec<Arc<EndpointSlice>> = slices
                .iter()
                .cloned()
                .map(|mut s| {
                    trim_endpoint_slice(&mut s);
                    Arc::new(s)
                })
                .collect();
            assert_eq!(
                service_info(&whole, &whole_slices),
                service_info(&trimmed, &trimmed_slices)
            );
            assert_eq!(service_reference(&whole), service_reference(&trimmed));
            assert_eq!(
                whole
                    .spec
                    .as_ref()
                    .map(|s| (&s.type_, &s.load_balancer_class)),
                trimmed
                    .spec
                    .as_ref()
                    .map(|s| (&s.type_, &s.load_balancer_class))
            );
            assert_eq!(whole.status, trimmed.status);
        }
    }

    #[test]
    fn what_is_dropped_is_gone() {
        let mut trimmed = service("Cluster", None);
        trim_service(&mut trimmed);
        let spec = trimmed.spec.unwrap_or_default();
        assert!(spec.ports.is_none() && spec.selector.is_none() && spec.cluster_ip.is_none());
        let annotations = trimmed.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key("kubectl.kubernetes.io/restartedAt"));
        let mut s = slice(json!([{"addresses": ["10.1.0.1"], "nodeName": "node-1"}]));
        trim_endpoint_slice(&mut s);
        assert!(s.ports.is_none());
        assert!(s.endpoints.iter().all(|e| e.addresses.is_empty()));
    }
}
