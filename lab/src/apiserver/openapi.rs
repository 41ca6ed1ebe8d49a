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

/// The group as kube-apiserver's operation ids and tags spell it: `core`, `discovery` (for
/// `discovery.k8s.io`), `rbacAuthorization`, `metallbIo`.
fn group_identifier(group: &str) -> String {
    if group.is_empty() {
        return "core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    let mut out = String::new();
    for (i, part) in trimmed.split(['.', '-']).enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            out.push_str(&upper_first(part));
        }
    }
    out
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn parameter(name: &str, location: &str, kind: &str) -> Value {
    let mut p =
        json!({"name": name, "in": location, "schema": {"type": kind, "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query_parameters(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|name| {
            let kind = match *name {
                "allowWatchBookmarks"
                | "sendInitialEvents"
                | "watch"
                | "force"
                | "orphanDependents"
                | "ignoreStoreReadErrorWithClusterBreakingPotential" => "boolean",
                "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
                _ => "string",
            };
            parameter(name, "query", kind)
        })
        .collect()
}

const LIST_PARAMETERS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];

fn content(reference: &str) -> Value {
    let schema = json!({"$ref": format!("#/components/schemas/{reference}")});
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

/// Builds the operations of one resource type's paths.
struct Operations<'a> {
    t: &'a ResourceType,
    tag: String,
    group_id: String,
    kind_ref: String,
    list_ref: String,
}

impl Operations<'_> {
    fn operation(
        &self,
        action: &str,
        id: String,
        parameters: &[&str],
        body: Option<Value>,
        responses: Value,
    ) -> Value {
        let mut op = json!({
            "tags": [self.tag],
            "operationId": id,
            "responses": responses,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": self.t.group, "version": self.t.version, "kind": self.t.kind},
        });
        if !parameters.is_empty() {
            op["parameters"] = json!(query_parameters(parameters));
        }
        if let Some(body) = body {
            op["requestBody"] = json!({"content": body, "required": true});
        }
        op
    }

    fn id(&self, verb: &str, middle: &str, suffix: &str) -> String {
        format!(
            "{verb}{}{}{middle}{}{suffix}",
            upper_first(&self.group_id),
            upper_first(&self.t.version),
            self.t.kind
        )
    }

    fn ok(&self, reference: &str, extra: &[&str]) -> Value {
        let mut responses = json!({"200": {"content": content(reference)}, "401": {}});
        for code in extra {
            responses[*code] = json!({"content": content(reference)});
        }
        responses
    }

    fn patch_content(&self) -> Value {
        let patch = json!({"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}});
        let mut body = json!({
            "application/apply-patch+yaml": patch,
            "application/json-patch+json": patch,
            "application/merge-patch+json": patch,
        });
        if self.t.custom.is_none() {
            body["application/strategic-merge-patch+json"] = patch;
        }
        body
    }

    fn add_paths(&self, prefix: &str, paths: &mut Map<String, Value>) {
        let t = self.t;
        let scope = if t.namespaced { "Namespaced" } else { "" };
        let base = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        let mut scope_parameters = Vec::new();
        if t.namespaced {
            scope_parameters.push(parameter("namespace", "path", "string"));
        }
        if t.namespaced {
            let mut all = json!({
                "get": self.operation("list", self.id("list", "", "ForAllNamespaces"), &[], None, self.ok(&self.list_ref, &[])),
            });
            let mut params = query_parameters(LIST_PARAMETERS);
            params.insert(5, parameter("pretty", "query", "string"));
            all["parameters"] = json!(params);
            paths.insert(format!("{prefix}/{}", t.plural), all);
        }
        let mut collection = json!({
            "get": self.operation("list", self.id("list", scope, ""), LIST_PARAMETERS, None, self.ok(&self.list_ref, &[])),
            "post": self.operation("post", self.id("create", scope, ""), &["dryRun", "fieldManager", "fieldValidation"], Some(content(&self.kind_ref)), self.ok(&self.kind_ref, &["201", "202"])),
            "delete": self.operation("deletecollection", self.id("delete", &format!("Collection{scope}"), ""), LIST_PARAMETERS, None, self.ok("io.k8s.apimachinery.pkg.apis.meta.v1.Status", &[])),
        });
        let mut params = scope_parameters.clone();
        params.push(parameter("pretty", "query", "string"));
        collection["parameters"] = json!(params);
        paths.insert(base.clone(), collection);

        let mut item_parameters = vec![parameter("name", "path", "string")];
        item_parameters.extend(scope_parameters.iter().cloned());
        item_parameters.push(parameter("pretty", "query", "string"));
        let mut item = json!({
            "get": self.operation("get", self.id("read", scope, ""), &["resourceVersion"], None, self.ok(&self.kind_ref, &[])),
            "put": self.operation("put", self.id("replace", scope, ""), &["dryRun", "fieldManager", "fieldValidation"], Some(content(&self.kind_ref)), self.ok(&self.kind_ref, &["201"])),
            "delete": self.operation("delete", self.id("delete", scope, ""), &["dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential", "orphanDependents", "propagationPolicy"], Some(content("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")), self.ok(&self.kind_ref, &["202"])),
            "patch": self.operation("patch", self.id("patch", scope, ""), &["dryRun", "fieldManager", "fieldValidation", "force"], Some(self.patch_content()), self.ok(&self.kind_ref, &[])),
        });
        item["parameters"] = json!(item_parameters.clone());
        paths.insert(format!("{base}/{{name}}"), item);

        if t.has_status() {
            let mut status = json!({
                "get": self.operation("get", self.id("read", scope, "Status"), &["resourceVersion"], None, self.ok(&self.kind_ref, &[])),
                "put": self.operation("put", self.id("replace", scope, "Status"), &["dryRun", "fieldManager", "fieldValidation"], Some(content(&self.kind_ref)), self.ok(&self.kind_ref, &["201"])),
                "patch": self.operation("patch", self.id("patch", scope, "Status"), &["dryRun", "fieldManager", "fieldValidation", "force"], Some(self.patch_content()), self.ok(&self.kind_ref, &[])),
            });
            status["parameters"] = json!(item_parameters);
            paths.insert(format!("{base}/{{name}}/status"), status);
        }
    }
}

/// The component name of a built-in kind, as kube-apiserver names it.
fn builtin_component_name(t: &ResourceType) -> String {
    let package = match t.group.as_str() {
        "" => "core".to_string(),
        "apiextensions.k8s.io" => {
            return format!(
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}.{}",
                t.version, t.kind
            );
        }
        group => group
            .strip_suffix(".k8s.io")
            .unwrap_or(group)
            .split('.')
            .next()
            .unwrap_or(group)
            .to_string(),
    };
    format!("io.k8s.api.{package}.{}.{}", t.version, t.kind)
}

/// The document of one group version, or `None` if it is not served.
///
/// Paths carry kube-apiserver's operations and parameters: kubectl checks that the PATCH
/// operation of a kind accepts `fieldValidation` before it relies on server-side validation.
/// Only custom resources get component schemas (their CRD schema, for `kubectl explain`); for
/// built-in kinds kubectl then uses the types compiled into it for strategic merge patches.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let group_id = group_identifier(group);
    for t in &types {
        let kind_ref = match &t.custom {
            Some(_) => component_name(t),
            None => builtin_component_name(t),
        };
        if let Some(custom) = &t.custom {
            let gvk = json!([{"group": t.group, "kind": t.kind, "version": t.version}]);
            let mut schema = custom.schema.schema().clone();
            if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                properties.insert("metadata".into(), object_meta_ref());
            }
            schema["x-kubernetes-group-version-kind"] = gvk.clone();
            schemas.insert(kind_ref.clone(), schema);
            schemas.insert(
                format!("{kind_ref}List"),
                json!({
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{kind_ref}")}},
                        "kind": {"type": "string"},
                        "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]}
                    },
                    "x-kubernetes-group-version-kind": [{"group": t.group, "kind": format!("{}List", t.kind), "version": t.version}]
                }),
            );
        }
        let operations = Operations {
            t,
            tag: format!("{group_id}_{version}"),
            group_id: group_id.clone(),
            list_ref: format!("{kind_ref}List"),
            kind_ref,
        };
        operations.add_paths(&format!("/{}", path_of(&t.group, &t.version)), &mut paths);
    }
    if !schemas.is_empty() {
        for meta in ["ObjectMeta", "ListMeta", "Patch", "Status", "DeleteOptions"] {
            schemas.insert(
                format!("io.k8s.apimachinery.pkg.apis.meta.v1.{meta}"),
                json!({"type": "object"}),
            );
        }
    }
    let title = if types.iter().any(|t| t.custom.is_some()) {
        "Kubernetes CRD Swagger"
    } else {
        "Kubernetes"
    };
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": title, "version": "v0.1.0"},
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
