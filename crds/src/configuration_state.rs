//! `ConfigurationState`: each component's verdict on the configuration it read (MetalLB 0.15.3+).
//!
//! The controller writes one object named `controller`, each speaker one named `speaker-NODE`,
//! both labelled as MetalLB labels them, so that `kubectl get configurationstates` shows at a
//! glance whether some pool or advertisement is being ignored, and by whom.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label saying which component wrote the object: `controller` or `speaker`.
pub const COMPONENT_LABEL: &str = "metallb.io/component-type";
/// The label naming a speaker's node.
pub const NODE_LABEL: &str = "metallb.io/node-name";

/// ConfigurationState reports whether a MetalLB component could use the configuration it
/// read. It has no spec: components own these objects and users only read them.
// Repeated printcolumn(...) arguments are distinct columns, not duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ConfigurationState",
    root = "ConfigurationStateDefinition",
    plural = "configurationstates",
    singular = "configurationstate",
    category = "metallb",
    namespaced,
    status = "ConfigurationStateStatus",
    derive = "PartialEq",
    doc = "ConfigurationState is a status-only CRD that reports configuration validation results from MetalLB components. Labels: metallb.io/component-type (\"controller\" or \"speaker\") and metallb.io/node-name (speakers only).",
    printcolumn(name = "Result", type_ = "string", json_path = ".status.result"),
    printcolumn(
        name = "ErrorSummary",
        type_ = "string",
        json_path = ".status.errorSummary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ConfigurationStateSpec {}

crate::optional_spec::object_with_optional_spec! {
    /// ConfigurationState reports whether a component could use the configuration it read.
    ConfigurationState {
        kind: "ConfigurationState",
        plural: "configurationstates",
        spec: ConfigurationStateSpec = ConfigurationStateSpec {},
        status: ConfigurationStateStatus,
    }
}

/// The validation result of the configuration, as one component sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigurationResult {
    /// Every configuration object the component reads is in use.
    Valid,
    /// Some object is ignored or only partly used; errorSummary says which and why.
    Invalid,
    /// The component has not reported yet.
    Unknown,
}

/// What a component made of the configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStateStatus {
    /// Whether the component could use the whole configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ConfigurationResult>,

    /// The problems found, joined; empty when the result is Valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,

    /// One condition per reconciler of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}
