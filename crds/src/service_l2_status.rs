//! `ServiceL2Status`: which node announces a Service's addresses, written by the speakers.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ServiceL2Status reports the node that announces a Service's LoadBalancer addresses in layer 2
/// mode and the interfaces it answers on. Speakers own these objects; users only read them.
// Repeated printcolumn(...) arguments are distinct columns, not duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    root = "ServiceL2StatusDefinition",
    plural = "servicel2statuses",
    singular = "servicel2status",
    shortname = "sl2s",
    category = "metallb",
    namespaced,
    status = "ServiceL2StatusStatus",
    derive = "PartialEq",
    doc = "ServiceL2Status reveals the actual traffic status of loadbalancer services in layer2 mode.",
    printcolumn(name = "Allocated Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    )
)]
pub struct ServiceL2StatusSpec {}

crate::optional_spec::object_with_optional_spec! {
    /// ServiceL2Status reports the node that announces a Service's addresses in layer 2 mode.
    ServiceL2Status {
        kind: "ServiceL2Status",
        plural: "servicel2statuses",
        spec: ServiceL2StatusSpec = ServiceL2StatusSpec {},
        status: ServiceL2StatusStatus,
    }
}

/// Where a Service is announced from. The node and the Service it describes never change for
/// one object: a move to another node is a new object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    /// The node whose speaker answers ARP/NDP for the Service's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub node: Option<String>,

    /// The name of the announced Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub service_name: Option<String>,

    /// The namespace of the announced Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "Value is immutable"}]))]
    pub service_namespace: Option<String>,

    /// The interfaces of the node on which the speaker answers for the Service's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfaceInfo>>,
}

/// A network interface of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfaceInfo {
    /// The interface's name, such as eth0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
