//! Request and response bodies in Kubernetes' protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), which `kubectl create <kind>` sends for built-in
//! kinds and asks to get back.
//!
//! The wire types are k8s-pb's (the kube-rs project's generated Kubernetes protobuf types);
//! prost decodes and encodes them. What is written here is only the mapping between those
//! types and the JSON the emulator stores, one table per message, read in both directions.
//! The mapping follows Go's semantics: a zero scalar in a field that is not a pointer in the
//! Go type means "unset" (the Go JSON encoder omits it too), so it is left out of the JSON.
//!
//! Kinds whose Go types are not mapped here (those with a Pod template: Deployment, DaemonSet,
//! Pod, Job) are refused with 415, so nothing a client sends is silently dropped.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::authentication::v1 as authentication;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Every protobuf body starts with these four bytes.
const MAGIC: &[u8] = b"k8s\0";

/// A value that has a JSON form: scalars, byte strings (base64) and mapped messages.
trait JsonValue: Sized {
    fn to_json(&self) -> Value;
    fn from_json(value: &Value) -> Result<Self, String>;
    /// Go's zero value for the type, which a non-pointer field leaves out.
    fn is_zero(&self) -> bool {
        false
    }
}

/// A field: optional, repeated or a string-keyed map of values.
trait JsonField: Sized + Default {
    /// The field's JSON, or `None` when the field is left out.
    fn to_field(&self, pointer: bool) -> Option<Value>;
    fn from_field(value: &Value) -> Result<Self, String>;
}

impl<T: JsonValue> JsonField for Option<T> {
    fn to_field(&self, pointer: bool) -> Option<Value> {
        let value = self.as_ref()?;
        if !pointer && value.is_zero() {
            return None;
        }
        Some(value.to_json()).filter(|v| !v.is_null())
    }

    fn from_field(value: &Value) -> Result<Self, String> {
        T::from_json(value).map(Some)
    }
}

impl<T: JsonValue> JsonField for Vec<T> {
    fn to_field(&self, _: bool) -> Option<Value> {
        (!self.is_empty()).then(|| Value::Array(self.iter().map(T::to_json).collect()))
    }

    fn from_field(value: &Value) -> Result<Self, String> {
        value
            .as_array()
            .ok_or("expected a list")?
            .iter()
            .map(T::from_json)
            .collect()
    }
}

impl<T: JsonValue> JsonField for BTreeMap<String, T> {
    fn to_field(&self, _: bool) -> Option<Value> {
        (!self.is_empty())
            .then(|| Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()))
    }

    fn from_field(value: &Value) -> Result<Self, String> {
        value
            .as_object()
            .ok_or("expected an object")?
            .iter()
            .map(|(k, v)| Ok((k.clone(), T::from_json(v)?)))
            .collect()
    }
}

impl JsonValue for String {
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "expected a string".into())
    }
    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl JsonValue for bool {
    fn to_json(&self) -> Value {
        Value::Bool(*self)
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        value.as_bool().ok_or_else(|| "expected a boolean".into())
    }
    fn is_zero(&self) -> bool {
        !*self
    }
}

impl JsonValue for i64 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        value.as_i64().ok_or_else(|| "expected an integer".into())
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl JsonValue for i32 {
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| "expected a 32-bit integer".into())
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

/// Bytes are base64 in JSON (Secret data, ConfigMap binaryData).
impl JsonValue for Vec<u8> {
    fn to_json(&self) -> Value {
        Value::String(base64::engine::general_purpose::STANDARD.encode(self))
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        let text = value.as_str().ok_or("expected base64 text")?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| e.to_string())
    }
}

/// `metav1.Time`: RFC 3339 in JSON, to the second; the zero time is null.
impl JsonValue for meta::Time {
    fn to_json(&self) -> Value {
        let seconds = self.seconds.unwrap_or(0);
        if seconds == 0 && self.nanos.unwrap_or(0) == 0 {
            return Value::Null;
        }
        jiff::Timestamp::from_second(seconds).map_or(Value::Null, |t| {
            Value::String(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        })
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        let text = value.as_str().ok_or("expected a timestamp")?;
        let time: jiff::Timestamp = text.parse().map_err(|e: jiff::Error| e.to_string())?;
        Ok(meta::Time {
            seconds: Some(time.as_second()),
            nanos: Some(0),
        })
    }
}

/// `intstr.IntOrString`: a JSON number or string.
impl JsonValue for IntOrString {
    fn to_json(&self) -> Value {
        match self.r#type {
            Some(1) => Value::String(self.str_val.clone().unwrap_or_default()),
            _ => Value::from(self.int_val.unwrap_or(0)),
        }
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Ok(IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some(text.clone()),
            }),
            other => Ok(IntOrString {
                r#type: Some(0),
                int_val: Some(i32::from_json(other)?),
                str_val: Some(String::new()),
            }),
        }
    }
}

/// `metav1.FieldsV1`: JSON text in protobuf, a JSON object in JSON.
impl JsonValue for meta::FieldsV1 {
    fn to_json(&self) -> Value {
        self.raw
            .as_deref()
            .and_then(|raw| serde_json::from_slice(raw).ok())
            .unwrap_or(Value::Null)
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        Ok(meta::FieldsV1 {
            raw: Some(value.to_string().into_bytes()),
        })
    }
}

/// One table per message: JSON name, k8s-pb field, and `as pointer` where the Go field is a
/// pointer (its zero value is meaningful and kept).
macro_rules! json_message {
    ($ty:path { $($json:literal => $field:ident $(as $pointer:ident)?),* $(,)? }) => {
        impl JsonValue for $ty {
            fn to_json(&self) -> Value {
                let mut object = Map::new();
                $(
                    let pointer = json_message!(@pointer $($pointer)?);
                    if let Some(value) = JsonField::to_field(&self.$field, pointer) {
                        object.insert($json.to_string(), value);
                    }
                )*
                Value::Object(object)
            }
            fn from_json(value: &Value) -> Result<Self, String> {
                let object = value.as_object().ok_or("expected an object")?;
                let mut message = <$ty>::default();
                $(
                    if let Some(field) = object.get($json).filter(|v| !v.is_null()) {
                        message.$field = JsonField::from_field(field)
                            .map_err(|e| format!("{}: {e}", $json))?;
                    }
                )*
                Ok(message)
            }
            /// An empty message is Go's zero struct, which field managers leave out.
            fn is_zero(&self) -> bool {
                self.to_json().as_object().is_some_and(Map::is_empty)
            }
        }
    };
    (@pointer pointer) => { true };
    (@pointer) => { false };
}

include!("protobuf_messages.rs");

/// A top-level kind: its k8s-pb type, by apiVersion and kind.
macro_rules! kinds {
    ($($api_version:literal $kind:literal => $ty:path),* $(,)?) => {
        fn decode_kind(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, String>> {
            match (api_version, kind) {
                $(($api_version, $kind) => Some(
                    <$ty>::decode(raw).map_err(|e| e.to_string()).map(|m| m.to_json())
                ),)*
                _ => None,
            }
        }
        fn encode_kind(api_version: &str, kind: &str, object: &Value) -> Option<Result<Vec<u8>, String>> {
            match (api_version, kind) {
                $(($api_version, $kind) => Some(
                    <$ty as JsonValue>::from_json(object).map(|m| m.encode_to_vec())
                ),)*
                _ => None,
            }
        }
    };
}

kinds! {
    "v1" "Namespace" => core::Namespace,
    "v1" "Service" => core::Service,
    "v1" "ConfigMap" => core::ConfigMap,
    "v1" "Secret" => core::Secret,
    "v1" "ServiceAccount" => core::ServiceAccount,
    "rbac.authorization.k8s.io/v1" "Role" => rbac::Role,
    "rbac.authorization.k8s.io/v1" "ClusterRole" => rbac::ClusterRole,
    "rbac.authorization.k8s.io/v1" "RoleBinding" => rbac::RoleBinding,
    "rbac.authorization.k8s.io/v1" "ClusterRoleBinding" => rbac::ClusterRoleBinding,
    "authentication.k8s.io/v1" "TokenRequest" => authentication::TokenRequest,
}

/// Why a protobuf body cannot be taken.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Not the `k8s\0` envelope, or not valid protobuf.
    Malformed(String),
    /// A kind whose protobuf form the emulator does not map.
    UnsupportedKind { api_version: String, kind: String },
}

/// The JSON object a protobuf request body carries, with its apiVersion and kind.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| DecodeError::Malformed("missing the k8s protobuf prefix".into()))?;
    let unknown = Unknown::decode(envelope).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut object = match decode_kind(&api_version, &kind, &raw) {
        Some(result) => result.map_err(DecodeError::Malformed)?,
        None => return Err(DecodeError::UnsupportedKind { api_version, kind }),
    };
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(object)
}

/// The protobuf body of a JSON object, if its kind is one the emulator maps.
pub fn encode(object: &Value) -> Option<Vec<u8>> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let raw = encode_kind(api_version, kind, object)?.ok()?;
    let envelope = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(envelope.encode_to_vec());
    Some(body)
}

/// Whether a client asks for protobuf before anything else.
pub fn preferred(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.trim().starts_with(CONTENT_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_round_trips_and_go_zero_values_mean_unset() {
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                     "ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                     "selector": {"app": "web"}},
        });
        let body = encode(&service).unwrap();
        assert!(body.starts_with(MAGIC));
        let decoded = decode(&body).unwrap();
        assert_eq!(decoded, service);
    }

    #[test]
    fn unmapped_kinds_and_garbage_are_refused() {
        let deployment =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        assert_eq!(encode(&deployment), None);
        let envelope = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
            }),
            raw: Some(vec![]),
            content_encoding: None,
            content_type: None,
        };
        let mut body = MAGIC.to_vec();
        body.extend(envelope.encode_to_vec());
        assert!(matches!(
            decode(&body),
            Err(DecodeError::UnsupportedKind { .. })
        ));
        assert!(matches!(
            decode(b"k8s\0\xff\xff"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(decode(b"{}"), Err(DecodeError::Malformed(_))));
    }
}
