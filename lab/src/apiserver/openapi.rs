//! OpenAPI v3 documents, which kubectl downloads before every `apply` and `explain`.
//!
//! Custom resources get a document built from their CRD's schema, as kube-apiserver builds it
//! ("Kubernetes CRD Swagger"): one component schema per kind, with its group-version-kind.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::{Registry, ResourceType};

fn path_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `x-kubernetes-group-version-kind` component name kube-apiserver uses:
/// `io.metallb.v1beta1.IPAddressPool` for group `metallb.io`.
fn component_name(t: &ResourceType) -> String {
    let reversed: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), t.version, t.kind)
}

fn object_meta_ref() -> Value {
    json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]})
}

/// The document of one group version, or `None` if it is not served.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for t in &types {
        let gvk = json!([{"group": t.group, "kind": t.kind, "version": t.version}]);
        let schema = match &t.custom {
            Some(custom) => {
                let mut schema = custom.schema.schema().clone();
                if let Some(properties) =
                    schema.get_mut("properties").and_then(Value::as_object_mut)
                {
                    properties.insert("metadata".into(), object_meta_ref());
                }
                schema
            }
            // Built-in kinds: kubectl knows their structure and patch strategies itself, and
            // only needs to find the kind.
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        let mut schema = schema;
        schema["x-kubernetes-group-version-kind"] = gvk;
        schemas.insert(component_name(t), schema);
        let prefix = format!("/{}", path_of(&t.group, &t.version));
        let collection = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(collection.clone(), json!({}));
        paths.insert(format!("{collection}/{{name}}"), json!({}));
    }
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}

fn hash_of(value: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// `/openapi/v3`: where each group version's document is, with a hash that changes with it.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in registry.group_versions() {
        if let Some(doc) = document(registry, &group, &version) {
            let path = path_of(&group, &version);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::custom_resources::served_types;
    use ferrolb_crds::crd_manifests::all_crds;

    fn registry_with_crds() -> Registry {
        let mut registry = Registry::new();
        for crd in all_crds() {
            let crd = serde_json::to_value(&crd).unwrap();
            let name = crd["metadata"]["name"].as_str().unwrap().to_string();
            registry.set_custom(&name, served_types(&crd));
        }
        registry
    }

    #[test]
    fn crd_documents_carry_the_schema_and_kind() {
        let registry = registry_with_crds();
        let doc = document(&registry, "metallb.io", "v1beta1").unwrap();
        let pool = &doc["components"]["schemas"]["io.metallb.v1beta1.IPAddressPool"];
        assert_eq!(
            pool["x-kubernetes-group-version-kind"],
            json!([{"group": "metallb.io", "kind": "IPAddressPool", "version": "v1beta1"}])
        );
        assert_eq!(pool["properties"]["spec"]["required"], json!(["addresses"]));
        assert!(
            doc["paths"]
                .get("/apis/metallb.io/v1beta1/namespaces/{namespace}/ipaddresspools")
                .is_some()
        );
        assert!(document(&registry, "metallb.io", "v9").is_none());
    }

    #[test]
    fn index_points_at_every_group_version_with_a_hash() {
        let registry = registry_with_crds();
        let index = index(&registry);
        let url = index["paths"]["apis/metallb.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/metallb.io/v1beta1?hash="));
        assert!(index["paths"].get("api/v1").is_some());
    }
}
