//! ferrolb's API: the MetalLB-compatible `metallb.io/v1beta1` custom resources, the CRDs
//! generated from them, the parser for pool addresses, and the validation kube-apiserver
//! applies to those resources.

pub mod cel_cost;
pub mod cel_rules;
pub mod configuration_state;
pub mod crd_manifests;
pub mod crd_validation;
pub mod ip_address_pool;
pub mod l2_advertisement;
pub mod label_selector;
mod optional_spec;
pub mod pool_address;
pub mod schema_validation;
pub mod service_l2_status;

pub use configuration_state::{
    ConfigurationResult, ConfigurationState, ConfigurationStateDefinition, ConfigurationStateStatus,
};
pub use ip_address_pool::{
    IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, OrphanedAddress, ServiceAllocation,
};
pub use l2_advertisement::{
    L2Advertisement, L2AdvertisementDefinition, L2AdvertisementSpec, L2AdvertisementStatus,
    PreferredNodeSelector,
};
pub use pool_address::{
    AddressError, AddressRange, IpFamily, Overlap, find_overlaps, parse_pool_address,
};
pub use service_l2_status::{
    InterfaceInfo, ServiceL2Status, ServiceL2StatusDefinition, ServiceL2StatusSpec,
    ServiceL2StatusStatus,
};

/// The API group, shared with MetalLB so that existing manifests apply unchanged.
pub const API_GROUP: &str = "metallb.io";
/// The served and stored version.
pub const API_VERSION: &str = "v1beta1";
/// Where pools and advertisements live unless the components are told otherwise.
pub const DEFAULT_NAMESPACE: &str = "metallb-system";
