//! Kinds served in two API groups from one storage, as kube-apiserver does: Events are stored in
//! their `core/v1` form and served as `events.k8s.io/v1` too, so an event recorded through one
//! API (kube-rs records through `events.k8s.io`) shows in the other (`kubectl describe`).

use serde_json::{Map, Value};

use super::resources::ResourceType;

/// `events.k8s.io/v1` field and the `core/v1` field it is stored as.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_api(resource: &ResourceType) -> bool {
    resource.group == "events.k8s.io" && resource.plural == "events"
}

/// Whether objects of this type are stored in another type's form.
pub fn converts(resource: &ResourceType) -> bool {
    is_events_api(resource)
}

fn rename(
    object: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
    api_version: &str,
    kind: &str,
) -> Value {
    let Some(source) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind.into()));
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    if let Some(metadata) = source.get("metadata") {
        out.insert("metadata".into(), metadata.clone());
    }
    for (from, to) in pairs {
        if let Some(value) = source.get(from) {
            out.insert(to.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// The stored form of an object written through `resource`.
pub fn to_storage(resource: &ResourceType, object: Value) -> Value {
    if !is_events_api(resource) {
        return object;
    }
    rename(&object, EVENT_FIELDS.iter().copied(), "v1", "Event")
}

/// The form `resource` serves a stored object in.
pub fn from_storage(resource: &ResourceType, object: Value) -> Value {
    if !is_events_api(resource) {
        return object;
    }
    let mut converted = rename(
        &object,
        EVENT_FIELDS.iter().map(|(events, core)| (*core, *events)),
        "events.k8s.io/v1",
        "Event",
    );
    if let Some(map) = converted.as_object_mut() {
        // core/v1's zero values that events.k8s.io/v1 omits (omitempty strings and pointers)...
        map.retain(|key, v| {
            let always = matches!(
                key.as_str(),
                "eventTime" | "deprecatedFirstTimestamp" | "deprecatedLastTimestamp"
            );
            always || !(v.is_null() || v.as_str() == Some("") || v.as_i64() == Some(0))
        });
        // ...and the struct-typed fields it always writes, as Go serializes zero structs.
        for (key, zero) in [
            ("deprecatedSource", Value::Object(Map::new())),
            ("deprecatedFirstTimestamp", Value::Null),
            ("deprecatedLastTimestamp", Value::Null),
            ("eventTime", Value::Null),
        ] {
            map.entry(key).or_insert(zero);
        }
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::Registry;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_the_two_apis() {
        let registry = Registry::new();
        let events = registry.find("events.k8s.io", "v1", "events").unwrap();
        let written = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "myapp.1", "namespace": "default"},
            "regarding": {"kind": "Service", "name": "myapp", "namespace": "default"},
            "note": "Assigned IP [192.168.117.100]", "reason": "IPAllocated", "type": "Normal",
            "action": "Allocate", "reportingController": "ferrolb.io/controller",
            "reportingInstance": "controller-0", "eventTime": "2026-01-01T00:00:00.000000Z"
        });
        let stored = to_storage(&events, written.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "myapp");
        assert_eq!(stored["message"], "Assigned IP [192.168.117.100]");
        assert_eq!(stored["reportingComponent"], "ferrolb.io/controller");
        // Read back, it carries the zero structs kube-apiserver writes (recorded exchange 49).
        let mut read_back = written;
        read_back["deprecatedSource"] = json!({});
        read_back["deprecatedFirstTimestamp"] = Value::Null;
        read_back["deprecatedLastTimestamp"] = Value::Null;
        assert_eq!(from_storage(&events, stored), read_back);
    }
}
