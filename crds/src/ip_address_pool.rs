//! `IPAddressPool`: the addresses ferrolb may hand out to LoadBalancer Services.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel_rules;

/// An IPAddressPool is a set of IP addresses that ferrolb (like MetalLB) allocates to Services of
/// type LoadBalancer. The addresses are announced on the nodes' layer 2 segment when an
/// L2Advertisement selects the pool.
// Repeated printcolumn(...) arguments are distinct columns, not duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    singular = "ipaddresspool",
    shortname = "ipp",
    category = "metallb",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    doc = "IPAddressPool represents a pool of IP addresses that can be allocated to LoadBalancer services.",
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(
        name = "Avoid Buggy IPs",
        type_ = "boolean",
        json_path = ".spec.avoidBuggyIPs"
    ),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(
        name = "Assigned IPv4",
        type_ = "integer",
        json_path = ".status.assignedIPv4"
    ),
    printcolumn(
        name = "Available IPv4",
        type_ = "integer",
        json_path = ".status.availableIPv4"
    ),
    printcolumn(
        name = "Assigned IPv6",
        type_ = "integer",
        json_path = ".status.assignedIPv6"
    ),
    printcolumn(
        name = "Available IPv6",
        type_ = "integer",
        json_path = ".status.availableIPv6"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// A list of IP address ranges over which ferrolb has authority. Each entry is either a CIDR
    /// prefix (192.0.2.0/24, 2001:db8::/120) or an explicit inclusive start-end range of one
    /// family (192.0.2.10-192.0.2.20). All entries share the pool's settings.
    #[schemars(schema_with = "cel_rules::pool_addresses_schema")]
    pub addresses: Vec<String>,

    /// AutoAssign lets ferrolb hand out addresses of this pool to Services that do not ask for a
    /// pool or an address. When false, the pool only serves Services that name it (annotation
    /// metallb.io/address-pool) or ask for one of its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub auto_assign: Option<bool>,

    /// AvoidBuggyIPs prevents addresses ending with .0 and .255 from being allocated, for
    /// clients whose network stacks mistake them for network or broadcast addresses.
    #[serde(
        default,
        rename = "avoidBuggyIPs",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("default" = false))]
    pub avoid_buggy_ips: Option<bool>,

    /// ServiceAllocation restricts the pool to the namespaces and Services it selects and sets
    /// its priority among several matching pools. Without it the pool serves any Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

impl IPAddressPoolSpec {
    /// `autoAssign` with its default applied.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign.unwrap_or(true)
    }

    /// `avoidBuggyIPs` with its default applied.
    pub fn avoid_buggy_ips(&self) -> bool {
        self.avoid_buggy_ips.unwrap_or(false)
    }
}

/// ServiceAllocation selects which Services a pool serves, and how strongly it is preferred.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Priority among the pools that match a Service: the pool with the lowest value is used
    /// first; pools without a priority are used only when those with one cannot serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services this pool serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,

    /// Label selectors for the namespaces whose Services this pool serves; a namespace matching
    /// any of them is selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selectors: Option<Vec<LabelSelector>>,

    /// Label selectors for the Services this pool serves; a Service matching any of them is
    /// selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,
}

/// IPAddressPoolStatus reports how much of the pool is in use, and whether the pool is usable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// Number of IPv4 addresses of this pool held by Services.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,

    /// Number of IPv6 addresses of this pool held by Services.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,

    /// Number of IPv4 addresses of this pool still free to allocate.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,

    /// Number of IPv6 addresses of this pool still free to allocate (saturates at the largest
    /// int64 for very large IPv6 pools).
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,

    /// Addresses that Services got from this pool and still hold although the pool no longer
    /// contains them (it shrank). ferrolb never renumbers a Service implicitly: each address
    /// stays with its Services until they are changed or deleted.
    #[serde(
        rename = "orphanedAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub orphaned_addresses: Option<Vec<OrphanedAddress>>,

    /// Conditions of the pool. Valid: its addresses parse (status False when they do not, and
    /// the pool is not used); reason Overlapping when they overlap another pool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

/// An address held by Services outside the pool it came from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct OrphanedAddress {
    /// The address.
    pub address: String,

    /// The Services holding it, as namespace/name.
    pub services: Vec<String>,
}
