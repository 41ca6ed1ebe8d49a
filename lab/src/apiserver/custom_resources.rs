//! CustomResourceDefinitions: serving the resources a CRD defines, and admitting custom
//! resources through the CRD's schema (defaults, pruning, structural checks, CEL rules).

use std::sync::Arc;

use ferrolb_crds::schema_validation::CrdSchema;
use serde_json::Value;

use super::resources::{CustomResourceInfo, ResourceType};
use super::status::ApiError;
use super::{ApiServer, strings};

/// Defaults, prunes and validates a custom resource; `old` is the stored object on update.
/// With `strict` (`fieldValidation=Strict`), unknown fields are refused instead of dropped.
pub fn admit(
    resource: &ResourceType,
    object: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<(), ApiError> {
    let Some(custom) = &resource.custom else {
        return Ok(());
    };
    custom.schema.apply_defaults(object);
    let unknown = custom.schema.prune(object);
    if strict && !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = resource.kind,
            version = resource.version,
        )));
    }
    let errors = custom.schema.validate(object, old);
    if errors.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid(resource, name, &errors))
}

/// Refuses a CustomResourceDefinition that kube-apiserver would refuse for its CEL rules: one
/// that does not compile, or whose estimated cost is over the per-rule or per-CRD budget.
/// Also applies kube-apiserver's defaults for the definition (listKind, singular, conversion).
pub fn validate_definition(resource: &ResourceType, crd: &mut Value) -> Result<(), ApiError> {
    if !is_crd_resource(resource) {
        return Ok(());
    }
    let kind = crd["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(names) = crd["spec"]["names"].as_object_mut() {
        names
            .entry("listKind")
            .or_insert_with(|| Value::String(format!("{kind}List")));
        names
            .entry("singular")
            .or_insert_with(|| Value::String(kind.to_ascii_lowercase()));
    }
    if let Some(spec) = crd["spec"].as_object_mut() {
        spec.entry("conversion")
            .or_insert_with(|| serde_json::json!({"strategy": "None"}));
    }
    let errors = ferrolb_crds::crd_validation::validate_crd_rules(crd);
    if errors.is_empty() {
        return Ok(());
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid(resource, name, &errors))
}

fn is_crd_resource(resource: &ResourceType) -> bool {
    resource.group == "apiextensions.k8s.io" && resource.plural == "customresourcedefinitions"
}

/// After a write to any resource: keeps the served CRD resources in step with the stored CRDs.
/// `removed` says the write took `object` out of storage.
pub fn after_write(server: &ApiServer, resource: &ResourceType, object: &Value, removed: bool) {
    if !is_crd_resource(resource) {
        return;
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if removed || object["metadata"].get("deletionTimestamp").is_some() {
        forget(server, &name);
        return;
    }
    server
        .registry_mut()
        .set_custom(&name, served_types(object));
}

/// Stops serving a CRD's resources.
pub fn forget(server: &ApiServer, crd_name: &str) {
    server.registry_mut().remove_custom(crd_name);
}

/// The resource types a CRD object serves, one per served version.
pub fn served_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let crd_name = text(&crd["metadata"]["name"]);
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .map(|v| {
            let schema = v["schema"]["openAPIV3Schema"].clone();
            let mut subresources = Vec::new();
            if v["subresources"].get("status").is_some() {
                subresources.push("status".to_string());
            }
            if v["subresources"].get("scale").is_some() {
                subresources.push("scale".to_string());
            }
            let plural = text(&names["plural"]);
            let kind = text(&names["kind"]);
            ResourceType {
                group: text(&spec["group"]),
                version: text(&v["name"]),
                singular: names["singular"]
                    .as_str()
                    .map_or_else(|| kind.to_ascii_lowercase(), ToString::to_string),
                kind,
                plural,
                namespaced: spec["scope"].as_str() == Some("Namespaced"),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                // The order kube-apiserver lists a CRD's verbs in.
                verbs: [
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "create",
                    "update",
                    "watch",
                ]
                .iter()
                .map(ToString::to_string)
                .collect(),
                subresources,
                has_generation: true,
                custom: Some(CustomResourceInfo {
                    schema: Arc::new(CrdSchema::new(schema)),
                    printer_columns: v["additionalPrinterColumns"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                    crd_name: crd_name.clone(),
                }),
            }
        })
        .collect()
}
