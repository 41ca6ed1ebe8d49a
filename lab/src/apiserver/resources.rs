//! The resource types the emulated API server serves: the built-in ones ferrolb, kubectl and the
//! install manifests touch, and those that CustomResourceDefinitions add at run time.

use std::sync::Arc;

use ferrolb_crds::schema_validation::CrdSchema;
use serde_json::Value;

/// Verbs of a regular collection resource, in the order kube-apiserver lists them.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What a CRD adds to a resource type: its schema and printer columns.
#[derive(Debug, Clone)]
pub struct CustomResourceInfo {
    pub schema: Arc<CrdSchema>,
    pub printer_columns: Vec<Value>,
    /// The CRD's name, `<plural>.<group>`.
    pub crd_name: String,
}

/// One served resource type in one group version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    /// Subresources served, such as `status`.
    pub subresources: Vec<String>,
    /// Whether `metadata.generation` is kept (bumped on spec changes).
    pub has_generation: bool,
    pub custom: Option<CustomResourceInfo>,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Where objects of this type are kept: one storage per group and resource, whatever the
    /// version it is served in.
    pub fn storage_key(&self) -> StorageKey {
        // events.k8s.io Events live in core's storage (see `conversion`).
        let group = if self.group == "events.k8s.io" && self.plural == "events" {
            String::new()
        } else {
            self.group.clone()
        };
        StorageKey {
            group,
            resource: self.plural.clone(),
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// The name kube-apiserver uses in messages: `services`, or `ipaddresspools.metallb.io`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind as kube-apiserver names it in validation messages: `Service`, or
    /// `L2Advertisement.metallb.io`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Identifies the storage of one resource, across versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey {
    pub group: String,
    pub resource: String,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    has_generation: bool,
}

const fn builtin(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        has_generation: false,
    }
}

impl Builtin {
    const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }
    const fn categories(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }
    const fn status(mut self) -> Self {
        self.subresources = &["status"];
        self
    }
    /// ServiceAccounts' TokenRequest subresource.
    const fn token(mut self) -> Self {
        self.subresources = &["token"];
        self
    }
    const fn generation(mut self) -> Self {
        self.has_generation = true;
        self
    }
}

/// The built-in resources served, as kube-apiserver 1.32 describes them in discovery.
const BUILTINS: &[Builtin] = &[
    builtin("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
    builtin("", "v1", "Endpoints", "endpoints", true).short(&["ep"]),
    builtin("", "v1", "Event", "events", true).short(&["ev"]),
    builtin("", "v1", "Namespace", "namespaces", false)
        .short(&["ns"])
        .status(),
    builtin("", "v1", "Node", "nodes", false)
        .short(&["no"])
        .status(),
    builtin("", "v1", "Pod", "pods", true)
        .short(&["po"])
        .categories(&["all"])
        .status(),
    builtin("", "v1", "Secret", "secrets", true),
    builtin("", "v1", "ServiceAccount", "serviceaccounts", true)
        .short(&["sa"])
        .token(),
    builtin("", "v1", "Service", "services", true)
        .short(&["svc"])
        .categories(&["all"])
        .status(),
    builtin("apps", "v1", "DaemonSet", "daemonsets", true)
        .short(&["ds"])
        .categories(&["all"])
        .status()
        .generation(),
    builtin("apps", "v1", "Deployment", "deployments", true)
        .short(&["deploy"])
        .categories(&["all"])
        .status()
        .generation(),
    builtin("events.k8s.io", "v1", "Event", "events", true).short(&["ev"]),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    builtin(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    )
    .short(&["crd", "crds"])
    .categories(&["api-extensions"])
    .status()
    .generation(),
    builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
    builtin(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    )
    .generation(),
];

/// Every served resource type; CRDs add and remove theirs.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let types = BUILTINS
            .iter()
            .map(|b| {
                let verbs: Vec<String> = STANDARD_VERBS
                    .iter()
                    // kube-apiserver does not offer deletecollection on namespaces.
                    .filter(|v| !(b.plural == "namespaces" && **v == "deletecollection"))
                    .map(ToString::to_string)
                    .collect();
                Arc::new(ResourceType {
                    group: b.group.into(),
                    version: b.version.into(),
                    kind: b.kind.into(),
                    plural: b.plural.into(),
                    singular: b.kind.to_ascii_lowercase(),
                    namespaced: b.namespaced,
                    short_names: b.short_names.iter().map(ToString::to_string).collect(),
                    categories: b.categories.iter().map(ToString::to_string).collect(),
                    verbs,
                    subresources: b.subresources.iter().map(ToString::to_string).collect(),
                    has_generation: b.has_generation,
                    custom: None,
                })
            })
            .collect();
        Registry { types }
    }

    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Served group versions, core first, then groups in the order they were added.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for t in &self.types {
            let gv = (t.group.clone(), t.version.clone());
            if !seen.contains(&gv) {
                seen.push(gv);
            }
        }
        seen
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        let mut types: Vec<_> = self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect();
        types.sort_by(|a, b| a.plural.cmp(&b.plural));
        types
    }

    /// Replaces the types a CRD serves (all its versions) with `served`.
    pub fn set_custom(&mut self, crd_name: &str, served: Vec<ResourceType>) {
        self.remove_custom(crd_name);
        self.types.extend(served.into_iter().map(Arc::new));
    }

    pub fn remove_custom(&mut self, crd_name: &str) {
        self.types
            .retain(|t| t.custom.as_ref().is_none_or(|c| c.crd_name != crd_name));
    }
}
