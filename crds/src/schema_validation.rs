//! Validation of an object against a CRD version's `openAPIV3Schema`, as kube-apiserver does it:
//! null pruning, defaulting, unknown-field pruning, structural checks (types, required, enums,
//! bounds, lengths, patterns) and the CEL `x-kubernetes-validations` rules.
//!
//! Errors carry the field path and wording of kube-apiserver's `field.Error`, so that a
//! `Status` built from them reads like the real one
//! (`spec.addresses[0]: Invalid value: "string": the start of a range must not be after its end`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use kube_cel::{CompiledSchema, Validator, compile_schema};
use regex::Regex;
use serde_json::{Map, Value};

/// The kinds of field error kube-apiserver reports, with their wording and cause reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    TooLong,
    TooMany,
    Forbidden,
    Duplicate,
}

impl ErrorType {
    /// How kube-apiserver words the error type.
    pub fn wording(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::Duplicate => "Duplicate value",
        }
    }

    /// The `reason` of the matching `StatusCause`.
    pub fn cause_reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::Duplicate => "FieldValueDuplicate",
        }
    }

    /// Error types whose message does not repeat the offending value.
    fn omits_value(self) -> bool {
        matches!(
            self,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong
        )
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Path of the field, such as `spec.addresses[0]`.
    pub field: String,
    pub error_type: ErrorType,
    /// The offending value, as kube-apiserver prints it after the error type.
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: &str, error_type: ErrorType, value: Option<Value>, detail: String) -> Self {
        FieldError {
            field: field.to_string(),
            error_type,
            value,
            detail,
        }
    }

    /// The message without the field path, as in a `StatusCause`.
    pub fn body(&self) -> String {
        let mut body = self.error_type.wording().to_string();
        if !self.error_type.omits_value() {
            body.push_str(": ");
            body.push_str(&format_value(self.value.as_ref().unwrap_or(&Value::Null)));
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// kube-apiserver's message for an object it refuses with these errors, as kubectl prints it
/// after "The ": `IPAddressPool.metallb.io "x" is invalid: spec.addresses[0]: ...` (several
/// errors are bracketed).
pub fn invalid_object_message(qualified_kind: &str, name: &str, errors: &[FieldError]) -> String {
    let joined: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let summary = if joined.len() == 1 {
        joined[0].clone()
    } else {
        format!("[{}]", joined.join(", "))
    };
    format!("{qualified_kind} \"{name}\" is invalid: {summary}")
}

/// Prints a value as Go's `field.Error` does: strings quoted, scalars bare.
fn format_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// A CRD version's schema, with its CEL rules compiled once.
pub struct CrdSchema {
    schema: Value,
    compiled: CompiledSchema,
    patterns: Mutex<HashMap<String, Option<Regex>>>,
}

impl fmt::Debug for CrdSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrdSchema").finish_non_exhaustive()
    }
}

impl CrdSchema {
    pub fn new(schema: Value) -> Self {
        let compiled = compile_schema(&schema);
        CrdSchema {
            schema,
            compiled,
            patterns: Mutex::new(HashMap::new()),
        }
    }

    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Drops `null` values of non-nullable fields and fills in defaults, as kube-apiserver does
    /// before validating a create or an update.
    pub fn apply_defaults(&self, object: &mut Value) {
        drop_nulls(&self.schema, object);
        *object = kube_cel::apply_defaults(&self.schema, object);
    }

    /// Removes fields the schema does not know (unless it preserves unknown fields) and returns
    /// their paths, for `fieldValidation=Strict` to refuse and `Warn` to report.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        prune_value(&self.schema, object, "", &mut unknown, true);
        unknown
    }

    /// Every structural and CEL error of `object` (already defaulted and pruned); `old` is the
    /// stored object on update, for transition rules.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check(&self.schema, object, "", &mut errors);
        // CEL rules are only evaluated on structurally valid objects, as kube-apiserver does,
        // so that a rule never sees a value of the wrong type.
        if errors.is_empty()
            && let Err(cel_errors) = Validator::new().validate_compiled(&self.compiled, object, old)
        {
            for e in cel_errors.into_vec() {
                let schema_type = schema_at(&self.schema, &e.field_path)
                    .and_then(|s| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("object")
                    .to_string();
                let detail = match e.kind {
                    kube_cel::ErrorKind::ValidationFailure => e.message,
                    _ => format!("rule {:?} could not be evaluated: {}", e.rule, e.message),
                };
                errors.push(FieldError::new(
                    &e.field_path,
                    ErrorType::Invalid,
                    Some(Value::String(schema_type)),
                    detail,
                ));
            }
        }
        errors
    }

    fn pattern(&self, pattern: &str) -> Option<Regex> {
        let mut cache = self
            .patterns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .clone()
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
        let Some(schema) = schema.as_object() else {
            return;
        };
        let shown_path = if path.is_empty() { "<root>" } else { path };
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true)) && schema.contains_key("type") {
                let expected = schema.get("type").and_then(Value::as_str).unwrap_or("");
                errors.push(FieldError::new(
                    path,
                    ErrorType::Invalid,
                    Some(Value::String("null".into())),
                    format!("{shown_path} in body must be of type {expected}: \"null\""),
                ));
            }
            return;
        }
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let actual = json_type(value);
            let matches = actual == expected
                || (expected == "number" && actual == "integer")
                || (int_or_string && (actual == "integer" || actual == "string"));
            if !matches {
                errors.push(FieldError::new(
                    path,
                    ErrorType::TypeInvalid,
                    Some(Value::String(actual.into())),
                    format!("{shown_path} in body must be of type {expected}: \"{actual}\""),
                ));
                return;
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed.iter().map(format_value).collect();
            errors.push(FieldError::new(
                path,
                ErrorType::NotSupported,
                Some(value.clone()),
                format!("supported values: {}", supported.join(", ")),
            ));
        }
        match value {
            Value::Object(fields) => self.check_object(schema, fields, path, errors),
            Value::Array(items) => self.check_array(schema, items, path, errors),
            Value::String(s) => self.check_string(schema, s, path, shown_path, errors),
            Value::Number(n) => check_number(schema, n, path, shown_path, errors),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_object(
        &self,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    errors.push(FieldError::new(
                        &join(path, name),
                        ErrorType::Required,
                        None,
                        String::new(),
                    ));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, child) in fields {
            let child_path = join(path, name);
            if let Some(child_schema) = properties.and_then(|p| p.get(name)) {
                self.check(child_schema, child, &child_path, errors);
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                self.check(additional, child, &child_path, errors);
            }
        }
        check_count(
            schema,
            fields.len(),
            ("maxProperties", "minProperties"),
            "properties",
            path,
            errors,
        );
    }

    fn check_array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        if check_count(
            schema,
            items.len(),
            ("maxItems", "minItems"),
            "items",
            path,
            errors,
        ) == Count::TooMany
        {
            // kube-apiserver does not look inside a list that is too long.
            return;
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
        let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
        if list_type == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(FieldError::new(
                        &format!("{path}[{i}]"),
                        ErrorType::Duplicate,
                        Some(item.clone()),
                        String::new(),
                    ));
                }
            }
        }
        if list_type == Some("map")
            && let Some(Value::Array(keys)) = schema.get("x-kubernetes-list-map-keys")
        {
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .filter_map(Value::as_str)
                    .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                    errors.push(FieldError::new(
                        &format!("{path}[{i}]"),
                        ErrorType::Duplicate,
                        Some(Value::Array(key)),
                        String::new(),
                    ));
                }
            }
        }
    }

    fn check_string(
        &self,
        schema: &Map<String, Value>,
        s: &str,
        path: &str,
        shown_path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            errors.push(FieldError::new(
                path,
                ErrorType::TooLong,
                Some(Value::String(s.into())),
                format!("may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                Some(Value::String(s.into())),
                format!("{shown_path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && !format_matches(format, s)
        {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                Some(Value::String(s.into())),
                format!(
                    "{shown_path} in body must be of type {format}: {}",
                    format_value(&Value::String(s.into()))
                ),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match self.pattern(pattern) {
                Some(re) if re.is_match(s) => {}
                _ => errors.push(FieldError::new(
                    path,
                    ErrorType::Invalid,
                    Some(Value::String(s.into())),
                    format!("{shown_path} in body should match '{pattern}'"),
                )),
            }
        }
    }
}

#[derive(PartialEq)]
enum Count {
    Fits,
    TooMany,
    TooFew,
}

/// Checks the number of items or properties against the schema's `(max, min)` keywords.
fn check_count(
    schema: &Map<String, Value>,
    count: usize,
    (max_key, min_key): (&str, &str),
    noun: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Count {
    let count = count as u64;
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64)
        && count > max
    {
        errors.push(FieldError::new(
            path,
            ErrorType::TooMany,
            Some(Value::from(count)),
            format!("must have at most {max} items"),
        ));
        return Count::TooMany;
    }
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64)
        && count < min
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            Some(Value::from(count)),
            format!("{path} in body should have at least {min} {noun}"),
        ));
        return Count::TooFew;
    }
    Count::Fits
}

/// The string formats kube-apiserver checks in CRD schemas (others are accepted as they are).
fn format_matches(format: &str, s: &str) -> bool {
    use std::net::IpAddr;
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s
            .split_once('/')
            .is_some_and(|(ip, len)| ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok()),
        "uuid" => {
            let hex: String = s.chars().filter(|c| *c != '-').collect();
            s.len() == 36 && hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        }
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
        _ => true,
    }
}

fn check_number(
    schema: &Map<String, Value>,
    n: &serde_json::Number,
    path: &str,
    shown_path: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(x) = n.as_f64() else {
        return;
    };
    let exclusive = |key| schema.get(key) == Some(&Value::Bool(true));
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let (bad, words) = if exclusive("exclusiveMaximum") {
            (x >= max, "less than")
        } else {
            (x > max, "less than or equal to")
        };
        if bad {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                Some(Value::Number(n.clone())),
                format!("{shown_path} in body should be {words} {}", bound(max)),
            ));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let (bad, words) = if exclusive("exclusiveMinimum") {
            (x <= min, "greater than")
        } else {
            (x < min, "greater than or equal to")
        };
        if bad {
            errors.push(FieldError::new(
                path,
                ErrorType::Invalid,
                Some(Value::Number(n.clone())),
                format!("{shown_path} in body should be {words} {}", bound(min)),
            ));
        }
    }
    if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64)
        && factor > 0.0
        && (x / factor).fract() != 0.0
    {
        errors.push(FieldError::new(
            path,
            ErrorType::Invalid,
            Some(Value::Number(n.clone())),
            format!(
                "{shown_path} in body should be a multiple of {}",
                bound(factor)
            ),
        ));
    }
}

/// Prints a schema bound as Go does: whole numbers without a fraction.
fn bound(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The subschema at a kube-cel field path such as `spec.addresses[0]`.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = schema;
    if path.is_empty() {
        return Some(current);
    }
    for segment in path.split('.') {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], segment[i..].matches('[').count()),
            None => (segment, 0),
        };
        current = current
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| current.get("additionalProperties"))?;
        for _ in 0..indexes {
            current = current.get("items")?;
        }
    }
    Some(current)
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

fn drop_nulls(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            fields.retain(|name, child| {
                let child_schema = properties.and_then(|p| p.get(name)).or(additional);
                let nullable = child_schema
                    .and_then(|s| s.get("nullable"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                !(child.is_null() && child_schema.is_some() && !nullable)
            });
            for (name, child) in fields.iter_mut() {
                if let Some(child_schema) = properties.and_then(|p| p.get(name)).or(additional) {
                    drop_nulls(child_schema, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items.iter_mut().for_each(|i| drop_nulls(item_schema, i));
            }
        }
        _ => {}
    }
}

/// Removes unknown fields. `metadata`, `apiVersion` and `kind` at the root are the API server's
/// business, not the schema's.
fn prune_value(
    schema: &Value,
    value: &mut Value,
    path: &str,
    unknown: &mut Vec<String>,
    root: bool,
) {
    match value {
        Value::Object(fields) => {
            if preserves_unknown(schema) && schema.get("properties").is_none() {
                return;
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown = preserves_unknown(schema);
            let mut removed = Vec::new();
            for (name, child) in fields.iter_mut() {
                let child_path = join(path, name);
                if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(child_schema) = properties.and_then(|p| p.get(name)).or(additional) {
                    prune_value(child_schema, child, &child_path, unknown, false);
                } else if additional.is_none()
                    && schema.get("additionalProperties") != Some(&Value::Bool(true))
                    && !keep_unknown
                {
                    removed.push(name.clone());
                    unknown.push(child_path);
                }
            }
            for name in removed {
                fields.remove(&name);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item_schema, item, &format!("{path}[{i}]"), unknown, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> CrdSchema {
        CrdSchema::new(json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "count": {"type": "integer", "minimum": 1, "maximum": 10},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    },
                    "x-kubernetes-validations": [
                        {"rule": "!has(self.count) || self.count != 7", "message": "seven is unlucky"}
                    ]
                }
            }
        }))
    }

    fn messages(s: &CrdSchema, mut object: Value) -> Vec<String> {
        s.apply_defaults(&mut object);
        s.prune(&mut object);
        s.validate(&object, None)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn structural_errors_read_like_kube_apiserver() {
        let s = schema();
        assert_eq!(messages(&s, json!({})), vec!["spec: Required value"]);
        assert_eq!(
            messages(&s, json!({"spec": {"name": "abc", "count": 1000}})),
            vec![
                "spec.count: Invalid value: 1000: spec.count in body should be less than or equal to 10"
            ]
        );
        assert_eq!(
            messages(&s, json!({"spec": {"name": "abcdefg"}})),
            vec!["spec.name: Too long: may not be more than 5 bytes"]
        );
        assert_eq!(
            messages(&s, json!({"spec": {"name": "ABC"}})),
            vec!["spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'"]
        );
        assert_eq!(
            messages(&s, json!({"spec": {"name": "a", "mode": "c"}})),
            vec!["spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\""]
        );
        assert_eq!(
            messages(&s, json!({"spec": {"name": "a", "tags": ["x", "y", "z"]}})),
            vec!["spec.tags: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(&s, json!({"spec": {"name": 3}})),
            vec![
                "spec.name: Invalid value: \"integer\": spec.name in body must be of type string: \"integer\""
            ]
        );
    }

    #[test]
    fn string_formats_are_checked() {
        let s = CrdSchema::new(json!({"type": "object", "properties": {
            "when": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "free": {"type": "string", "format": "something-unknown"}
        }}));
        assert!(
            messages(
                &s,
                json!({"when": "2026-01-01T00:00:00Z", "ip": "192.0.2.1", "free": "x"})
            )
            .is_empty()
        );
        assert_eq!(
            messages(&s, json!({"when": "yesterday", "ip": "192.0.2.300"})),
            vec![
                "ip: Invalid value: \"192.0.2.300\": ip in body must be of type ipv4: \"192.0.2.300\"",
                "when: Invalid value: \"yesterday\": when in body must be of type date-time: \"yesterday\"",
            ]
        );
    }

    #[test]
    fn cel_rules_run_after_structural_checks_pass() {
        let s = schema();
        assert_eq!(
            messages(&s, json!({"spec": {"name": "a", "count": 7}})),
            vec!["spec: Invalid value: \"object\": seven is unlucky"]
        );
    }

    #[test]
    fn defaults_fill_and_unknown_fields_are_pruned_and_reported() {
        let s = schema();
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"},
            "spec": {"name": "a", "bogus": 1, "count": null, "free": {"anything": {"goes": 1}}}
        });
        s.apply_defaults(&mut object);
        let unknown = s.prune(&mut object);
        assert_eq!(unknown, vec!["spec.bogus"]);
        assert_eq!(
            object,
            json!({
                "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"},
                "spec": {"name": "a", "mode": "a", "free": {"anything": {"goes": 1}}}
            })
        );
        assert!(s.validate(&object, None).is_empty());
    }
}
