//! `L2Advertisement`: which pools are announced in layer 2 mode, from which nodes and interfaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// L2Advertisement makes the speakers answer ARP (IPv4) and NDP (IPv6) for the addresses of the
/// selected pools, so that the layer 2 segment delivers their traffic to one elected node.
// Repeated printcolumn(...) arguments are distinct columns, not duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
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
