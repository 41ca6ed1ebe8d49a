//! `L2Advertisement`: which pools are announced in layer 2 mode, from which nodes and interfaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of an L2Advertisement.
///
/// L2Advertisement makes the speakers answer ARP (IPv4) and NDP (IPv6) for the addresses of the
/// selected pools, so that the layer 2 segment delivers their traffic to one elected node.
// Repeated printcolumn(...) arguments are distinct columns, not duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    root = "L2AdvertisementDefinition",
    plural = "l2advertisements",
    singular = "l2advertisement",
    shortname = "l2adv",
    category = "metallb",
    namespaced,
    status = "L2AdvertisementStatus",
    derive = "PartialEq",
    doc = "L2Advertisement allows to advertise the LoadBalancer IPs provided by the selected pools via L2.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// The names of the IPAddressPools (in this namespace) to announce. When neither this nor
    /// ipAddressPoolSelectors is set, every pool is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_pools: Option<Vec<String>>,

    /// Label selectors for the IPAddressPools to announce; a pool matching any of them is
    /// announced, in addition to those named in ipAddressPools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address_pool_selectors: Option<Vec<LabelSelector>>,

    /// Label selectors for the nodes that may announce the addresses; a node matching any of
    /// them is a candidate. When empty, every node is a candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Vec<LabelSelector>>,

    /// The node interfaces to answer ARP/NDP on. When empty, every interface that is up, can
    /// do ARP, and is neither a loopback nor enslaved to another interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,

    /// Label selectors for the Services whose addresses are announced; a Service matching any
    /// of them is announced. When empty, every Service of the selected pools is announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,

    /// Nodes preferred as announcer: among the candidates, the one with the highest sum of the
    /// weights of the preferences it matches is elected; ties are broken by a hash of the node
    /// name and the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_node_selectors: Option<Vec<PreferredNodeSelector>>,
}

/// A weighted node preference, as in a Pod's preferred node affinity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// Weight added to a node's score when it matches the preference, from 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// The label selector a node must match to get the weight.
    pub preference: LabelSelector,
}

/// L2AdvertisementStatus is kept for compatibility with MetalLB; ferrolb reports announcement
/// state in ServiceL2Status objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct L2AdvertisementStatus {}

crate::optional_spec::object_with_optional_spec! {
    /// L2Advertisement makes the speakers answer ARP (IPv4) and NDP (IPv6) for the addresses of
    /// the selected pools. One without a spec announces every pool from every node.
    L2Advertisement {
        kind: "L2Advertisement",
        plural: "l2advertisements",
        spec: L2AdvertisementSpec = L2AdvertisementSpec {
            ip_address_pools: None,
            ip_address_pool_selectors: None,
            node_selectors: None,
            interfaces: None,
            service_selectors: None,
            preferred_node_selectors: None,
        },
        status: L2AdvertisementStatus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn an_advertisement_without_spec_loads_and_announces_everything() {
        let object = json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "all", "namespace": "metallb-system"}
        });
        let advertisement: L2Advertisement = serde_json::from_value(object.clone()).unwrap();
        assert_eq!(advertisement.spec, None);
        assert_eq!(advertisement.spec(), &L2AdvertisementSpec::default());
        assert_eq!(serde_json::to_value(&advertisement).unwrap(), object);
    }

    #[test]
    fn a_new_advertisement_serializes_with_its_type() {
        let spec = L2AdvertisementSpec {
            ip_address_pools: Some(vec!["first-pool".into()]),
            ..Default::default()
        };
        let value = serde_json::to_value(L2Advertisement::new("example", spec)).unwrap();
        assert_eq!(value["apiVersion"], "metallb.io/v1beta1");
        assert_eq!(value["kind"], "L2Advertisement");
        assert_eq!(value["spec"]["ipAddressPools"][0], "first-pool");
    }

    #[test]
    fn resource_identity_matches_the_crd() {
        assert_eq!(L2Advertisement::api_version(&()), "metallb.io/v1beta1");
        assert_eq!(L2Advertisement::plural(&()), "l2advertisements");
        let crd = crate::crd_manifests::all_crds();
        assert!(
            crd.iter()
                .any(|c| c.spec.names.plural == L2Advertisement::plural(&())
                    && c.spec.names.kind == L2Advertisement::kind(&()))
        );
        assert_eq!(
            crate::ServiceL2Status::plural(&()),
            crate::ServiceL2StatusDefinition::plural(&())
        );
    }
}
