//! The fields of built-in kinds, from the OpenAPI v3 documents recorded from a real
//! kube-apiserver (`lab/tests/golden/openapi-v3-*.stripped.json`). kube-apiserver decodes a
//! built-in object into its Go type: a field the type lacks is refused under
//! `fieldValidation=Strict` (kubectl's default) and silently dropped otherwise. The emulator
//! does the same for every kind a recorded document describes; kinds of other group versions
//! are stored as sent (a difference, listed in docs/reliability.md).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::resources::ResourceType;
use super::status::ApiError;

/// The recorded documents, by group and version.
const DOCUMENTS: [(&str, &str, &str); 3] = [
    (
        "",
        "v1",
        include_str!("../../tests/golden/openapi-v3-api_v1.stripped.json"),
    ),
    (
        "coordination.k8s.io",
        "v1",
        include_str!("../../tests/golden/openapi-v3-apis_coordination.k8s.io_v1.stripped.json"),
    ),
    (
        "discovery.k8s.io",
        "v1",
        include_str!("../../tests/golden/openapi-v3-apis_discovery.k8s.io_v1.stripped.json"),
    ),
];

struct Schemas {
    /// Component schemas of every document, by name.
    components: HashMap<String, Value>,
    /// The component of each kind: (group, version, kind) -> component name.
    kinds: HashMap<(String, String, String), String>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut components = HashMap::new();
        let mut kinds = HashMap::new();
        for (group, version, text) in DOCUMENTS {
            // The documents are part of the source: one that does not parse is a build defect
            // that every test would show, so it yields no schemas rather than a panic.
            let Ok(document) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let Some(map) = document["components"]["schemas"].as_object() else {
                continue;
            };
            for (name, schema) in map {
                for gvk in schema["x-kubernetes-group-version-kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if gvk["group"] == group && gvk["version"] == version {
                        let kind = gvk["kind"].as_str().unwrap_or_default().to_string();
                        kinds.insert((group.into(), version.into(), kind), name.clone());
                    }
                }
                components.insert(name.clone(), schema.clone());
            }
        }
        Schemas { components, kinds }
    })
}

impl Schemas {
    /// A schema with its `$ref` (or single-element `allOf` of a `$ref`) followed.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..8 {
            let reference = current["$ref"].as_str().or_else(|| {
                current["allOf"]
                    .as_array()
                    .filter(|all| all.len() == 1)
                    .and_then(|all| all[0]["$ref"].as_str())
            });
            let Some(target) = reference
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| self.components.get(name))
            else {
                return current;
            };
            current = target;
        }
        current
    }

    /// Removes the fields of `value` that `schema` does not define, appending their paths.
    fn prune(&self, schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if schema["x-kubernetes-preserve-unknown-fields"] == true {
            return;
        }
        match value {
            Value::Object(fields) => {
                if let Some(properties) = schema["properties"].as_object() {
                    fields.retain(|name, field| {
                        let field_path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        match properties.get(name) {
                            Some(property) => {
                                self.prune(property, field, &field_path, unknown);
                                true
                            }
                            None => {
                                unknown.push(field_path);
                                false
                            }
                        }
                    });
                } else if let Some(values) = schema.get("additionalProperties") {
                    for (name, field) in fields.iter_mut() {
                        self.prune(values, field, &format!("{path}.{name}"), unknown);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (index, item) in items.iter_mut().enumerate() {
                        self.prune(item_schema, item, &format!("{path}[{index}]"), unknown);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Drops the fields of `object` its kind does not define and returns them as kube-apiserver
/// names them (`spec.ports[0].bogus`); `None` when no recorded document describes the kind.
pub fn prune_unknown_fields(resource: &ResourceType, object: &mut Value) -> Option<Vec<String>> {
    let schemas = schemas();
    let key = (
        resource.group.clone(),
        resource.version.clone(),
        resource.kind.clone(),
    );
    let schema = schemas.components.get(schemas.kinds.get(&key)?)?;
    let mut unknown = Vec::new();
    schemas.prune(schema, object, "", &mut unknown);
    Some(unknown)
}

/// Refuses (strict) or drops (otherwise) the fields a built-in object's kind does not define.
pub fn admit(resource: &ResourceType, object: &mut Value, strict: bool) -> Result<(), ApiError> {
    let Some(unknown) = prune_unknown_fields(resource, object) else {
        return Ok(());
    };
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
    Ok(())
}
