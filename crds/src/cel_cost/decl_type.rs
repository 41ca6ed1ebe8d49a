//! The CEL declaration type of a schema node, as kube-apiserver derives it from a structural
//! schema: the type CEL rules see, and the bounds its cost estimate uses (the most elements a
//! string, list or map can hold, and the fewest bytes a value takes in a JSON request).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// kube-apiserver's request size limit; unbounded strings and lists are bounded by it.
pub const MAX_REQUEST_SIZE_BYTES: i64 = 3 * 1024 * 1024;

// Smallest JSON encodings, as kube-apiserver counts them (quotes included).
const MIN_STRING_SIZE: i64 = 2;
const MIN_BOOL_SIZE: i64 = 4;
const MIN_NUMBER_SIZE: i64 = 1;
const MIN_DURATION_SIZE: i64 = 3;
const JSON_DATE_SIZE: i64 = 12;
const MIN_DATETIME_SIZE: i64 = 21;
const MAX_DURATION_SIZE: i64 = 32;
const MAX_DATETIME_SIZE: i64 = 32;

/// What a schema node is in CEL.
#[derive(Debug, Clone, PartialEq)]
pub enum DeclKind {
    /// An object with declared properties (CEL field names, escaped).
    Object(BTreeMap<String, Arc<DeclType>>),
    List(Arc<DeclType>),
    /// An object with `additionalProperties`: string keys.
    Map(Arc<DeclType>),
    String,
    Bytes,
    Bool,
    Int,
    Double,
    Duration,
    Timestamp,
    /// `x-kubernetes-int-or-string`.
    Dyn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeclType {
    pub kind: DeclKind,
    /// Most characters (strings, counted as bytes: 4 per code point), items or entries.
    pub max_elements: i64,
    /// Fewest bytes a value of this type takes in a JSON request.
    pub min_serialized_size: i64,
}

impl DeclType {
    fn simple(kind: DeclKind, min_serialized_size: i64) -> Self {
        DeclType {
            kind,
            max_elements: 0,
            min_serialized_size,
        }
    }

    /// The element type of a list, or the value type of a map.
    pub fn elem(&self) -> Option<&Arc<DeclType>> {
        match &self.kind {
            DeclKind::List(elem) | DeclKind::Map(elem) => Some(elem),
            _ => None,
        }
    }

    pub fn field(&self, name: &str) -> Option<&Arc<DeclType>> {
        match &self.kind {
            DeclKind::Object(fields) => fields.get(name),
            _ => None,
        }
    }

    /// The declaration type of a schema node; `None` where CEL cannot see it (no type, or
    /// a list or map of such). `resource_root` adds apiVersion, kind and metadata.name /
    /// generateName, which rules at the root of a resource can always read.
    pub fn of_schema(schema: &Value, resource_root: bool) -> Option<DeclType> {
        if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
            let max_elements = match schema["maxLength"].as_i64() {
                Some(max) => max.max(0) * 4,
                None => MAX_REQUEST_SIZE_BYTES - 2,
            };
            return Some(DeclType {
                kind: DeclKind::Dyn,
                max_elements,
                min_serialized_size: 1,
            });
        }
        let mut schema = schema.clone();
        if resource_root {
            with_type_and_object_meta(&mut schema);
        }
        match schema["type"].as_str()? {
            "array" => {
                let items = schema.get("items")?;
                let item_type = Self::of_schema(items, embedded(items))?;
                let max_items = match schema["maxItems"].as_i64() {
                    Some(max) => max.max(0),
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (item_type.min_serialized_size + 1),
                };
                Some(DeclType {
                    kind: DeclKind::List(Arc::new(item_type)),
                    max_elements: max_items,
                    min_serialized_size: 2,
                })
            }
            "object" => {
                if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                    let value_type = Self::of_schema(values, embedded(values))?;
                    let max_properties = match schema["maxProperties"].as_i64() {
                        Some(max) => max.max(0),
                        None => (MAX_REQUEST_SIZE_BYTES - 2) / (value_type.min_serialized_size + 6),
                    };
                    return Some(DeclType {
                        kind: DeclKind::Map(Arc::new(value_type)),
                        max_elements: max_properties,
                        min_serialized_size: 2,
                    });
                }
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut fields = BTreeMap::new();
                // "{}" plus each required property that has no default: "name":value,
                let mut min_serialized_size = 2;
                if let Some(properties) = schema["properties"].as_object() {
                    for (name, property) in properties {
                        let Some(field_type) = Self::of_schema(property, embedded(property)) else {
                            continue;
                        };
                        if required.contains(&name.as_str()) && property.get("default").is_none() {
                            let name_len = i64::try_from(name.len()).unwrap_or(i64::MAX);
                            min_serialized_size += name_len + field_type.min_serialized_size + 4;
                        }
                        if let Some(escaped) = escape_property_name(name) {
                            fields.insert(escaped, Arc::new(field_type));
                        }
                    }
                }
                Some(DeclType {
                    kind: DeclKind::Object(fields),
                    max_elements: 0,
                    min_serialized_size,
                })
            }
            "string" => Some(string_type(&schema)),
            "boolean" => Some(Self::simple(DeclKind::Bool, MIN_BOOL_SIZE)),
            "number" => Some(Self::simple(DeclKind::Double, MIN_NUMBER_SIZE)),
            "integer" => Some(Self::simple(DeclKind::Int, MIN_NUMBER_SIZE)),
            _ => None,
        }
    }
}

fn embedded(schema: &Value) -> bool {
    schema["x-kubernetes-embedded-resource"] == Value::Bool(true)
}

fn string_type(schema: &Value) -> DeclType {
    let format = schema["format"].as_str().unwrap_or("");
    let max_length = schema["maxLength"].as_i64();
    match format {
        "byte" => DeclType {
            kind: DeclKind::Bytes,
            max_elements: max_length.map_or(MAX_REQUEST_SIZE_BYTES - 2, |m| m.max(0)),
            min_serialized_size: MIN_STRING_SIZE,
        },
        "duration" => DeclType {
            kind: DeclKind::Duration,
            max_elements: MAX_DURATION_SIZE,
            min_serialized_size: MIN_DURATION_SIZE,
        },
        "date" => DeclType {
            kind: DeclKind::Timestamp,
            max_elements: JSON_DATE_SIZE,
            min_serialized_size: JSON_DATE_SIZE,
        },
        "date-time" => DeclType {
            kind: DeclKind::Timestamp,
            max_elements: MAX_DATETIME_SIZE,
            min_serialized_size: MIN_DATETIME_SIZE,
        },
        _ => {
            let max_elements = if let Some(max) = max_length {
                // maxLength counts code points; sizes are reasoned about in bytes.
                max.max(0) * 4
            } else if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| i64::try_from(v.len()).unwrap_or(i64::MAX))
                    .max()
                    .unwrap_or(0)
            } else {
                MAX_REQUEST_SIZE_BYTES - 2
            };
            DeclType {
                kind: DeclKind::String,
                max_elements,
                min_serialized_size: MIN_STRING_SIZE,
            }
        }
    }
}

/// Adds `kind`, `apiVersion` and `metadata.{name,generateName}` unless all are declared.
fn with_type_and_object_meta(schema: &mut Value) {
    let declared = |v: &Value, t: &str| v["type"].as_str() == Some(t);
    let complete = declared(&schema["properties"]["kind"], "string")
        && declared(&schema["properties"]["apiVersion"], "string")
        && declared(&schema["properties"]["metadata"], "object")
        && declared(
            &schema["properties"]["metadata"]["properties"]["name"],
            "string",
        )
        && declared(
            &schema["properties"]["metadata"]["properties"]["generateName"],
            "string",
        );
    if complete {
        return;
    }
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(properties) = properties.as_object_mut() {
        let string = serde_json::json!({"type": "string"});
        properties.insert("kind".into(), string.clone());
        properties.insert("apiVersion".into(), string.clone());
        properties.insert(
            "metadata".into(),
            serde_json::json!({"type": "object", "properties": {"name": string, "generateName": string}}),
        );
    }
}

const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property name as CEL rules name it (kube-apiserver's escaping); `None` when it cannot be
/// named in CEL, in which case the property is not visible to rules.
pub fn escape_property_name(name: &str) -> Option<String> {
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let mut escaped = String::with_capacity(name.len());
    let mut rest = name;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("__") {
            escaped.push_str("__underscores__");
            rest = after;
            continue;
        }
        let c = rest.chars().next()?;
        match c {
            '.' => escaped.push_str("__dot__"),
            '-' => escaped.push_str("__dash__"),
            '/' => escaped.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => escaped.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_strings_count_four_bytes_per_character() {
        let decl = DeclType::of_schema(&json!({"type": "string", "maxLength": 100}), false);
        assert_eq!(decl.map(|d| d.max_elements), Some(400));
    }

    #[test]
    fn unbounded_lists_are_bounded_by_the_request_size() {
        let decl = DeclType::of_schema(
            &json!({"type": "array", "items": {"type": "string"}}),
            false,
        );
        assert_eq!(
            decl.map(|d| d.max_elements),
            Some((MAX_REQUEST_SIZE_BYTES - 2) / 3)
        );
    }

    #[test]
    fn required_properties_without_defaults_count_towards_the_minimum_size() {
        let decl = DeclType::of_schema(
            &json!({"type": "object", "required": ["ab", "c"], "properties": {
                "ab": {"type": "string"}, "c": {"type": "integer", "default": 1}}}),
            false,
        );
        assert_eq!(decl.map(|d| d.min_serialized_size), Some(2 + 2 + 2 + 4));
    }

    #[test]
    fn names_are_escaped_as_kube_apiserver_does() {
        assert_eq!(
            escape_property_name("a-b.c"),
            Some("a__dash__b__dot__c".into())
        );
        assert_eq!(escape_property_name("if"), Some("__if__".into()));
        assert_eq!(escape_property_name("1x"), None);
    }
}
