//! Strategic merge patch (`application/strategic-merge-patch+json`), which kubectl sends for
//! built-in kinds: maps merge, lists merge by their merge key or are replaced, as each field's
//! patch strategy says, with the `$patch`, `$retainKeys`, `$setElementOrder/` and
//! `$deleteFromPrimitiveList/` directives.

use serde_json::{Map, Value};

use super::status::ApiError;

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the stored one (no patch strategy).
    Replace,
    /// Items are merged by this key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (e.g. finalizers).
    MergePrimitives,
}

/// Pod template paths, shared by Pods, Deployments and DaemonSets.
const POD_SPEC_LISTS: &[(&str, ListStrategy)] = &[
    ("containers", ListStrategy::MergeByKey("name")),
    ("initContainers", ListStrategy::MergeByKey("name")),
    ("ephemeralContainers", ListStrategy::MergeByKey("name")),
    (
        "containers.ports",
        ListStrategy::MergeByKey("containerPort"),
    ),
    (
        "initContainers.ports",
        ListStrategy::MergeByKey("containerPort"),
    ),
    ("containers.env", ListStrategy::MergeByKey("name")),
    ("initContainers.env", ListStrategy::MergeByKey("name")),
    (
        "containers.volumeMounts",
        ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "initContainers.volumeMounts",
        ListStrategy::MergeByKey("mountPath"),
    ),
    (
        "containers.volumeDevices",
        ListStrategy::MergeByKey("devicePath"),
    ),
    ("volumes", ListStrategy::MergeByKey("name")),
    ("imagePullSecrets", ListStrategy::MergeByKey("name")),
    ("hostAliases", ListStrategy::MergeByKey("ip")),
    (
        "topologySpreadConstraints",
        ListStrategy::MergeByKey("topologySpreadConstraintsKey"),
    ),
];

/// The patch strategy of the list at `path` (field names from the object root, no indexes) in
/// an object of `kind`, as the Kubernetes API types declare it.
pub fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    let joined = path.join(".");
    match joined.as_str() {
        "metadata.finalizers" => return ListStrategy::MergePrimitives,
        "metadata.ownerReferences" => return ListStrategy::MergeByKey("uid"),
        "status.conditions" => return ListStrategy::MergeByKey("type"),
        _ => {}
    }
    let pod_spec_prefix = match kind {
        "Pod" => Some("spec."),
        "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet" => Some("spec.template.spec."),
        _ => None,
    };
    if let Some(rest) = pod_spec_prefix.and_then(|p| joined.strip_prefix(p))
        && let Some((_, strategy)) = POD_SPEC_LISTS.iter().find(|(p, _)| *p == rest)
    {
        return *strategy;
    }
    match (kind, joined.as_str()) {
        ("Service", "spec.ports") => ListStrategy::MergeByKey("port"),
        ("Node", "status.addresses") => ListStrategy::MergeByKey("type"),
        ("Pod", "status.containerStatuses") => ListStrategy::Replace,
        ("Endpoints", "subsets") => ListStrategy::Replace,
        _ => ListStrategy::Replace,
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

/// Applies a strategic merge patch to an object of `kind`.
pub fn apply(kind: &str, original: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut path = Vec::new();
    merge_value(kind, original, patch, &mut path)?
        .ok_or_else(|| invalid("the patch deletes the whole object"))
}

fn merge_value(
    kind: &str,
    original: &Value,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => merge_map(kind, o, p, path),
        (_, Value::Object(p)) => merge_map(kind, &Map::new(), p, path),
        (_, other) => Ok(Some(other.clone())),
    }
}

fn merge_map(
    kind: &str,
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut replaced = patch.clone();
            strip_directives(&mut replaced);
            return Ok(Some(Value::Object(replaced)));
        }
        Some("merge") | None => {}
        Some(other) => return Err(invalid(format!("unknown patch type: {other}"))),
    }
    let mut result = original.clone();
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        path.push(key.clone());
        if value.is_null() {
            result.remove(key);
        } else if let Value::Array(items) = value {
            let current = original.get(key).and_then(Value::as_array);
            let merged = merge_list(kind, current.map(Vec::as_slice).unwrap_or(&[]), items, path)?;
            result.insert(key.clone(), Value::Array(merged));
        } else {
            let current = original.get(key).unwrap_or(&Value::Null);
            match merge_value(kind, current, value, path)? {
                Some(merged) => {
                    result.insert(key.clone(), merged);
                }
                None => {
                    result.remove(key);
                }
            }
        }
        path.pop();
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) =
                (result.get_mut(field), value.as_array())
        {
            list.retain(|item| !remove.contains(item));
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) =
                (result.get_mut(field), value.as_array())
        {
            path.push(field.to_string());
            let strategy = list_strategy(kind, path);
            path.pop();
            reorder(list, order, strategy);
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(Value::Object(result)))
}

fn strip_directives(map: &mut Map<String, Value>) {
    map.retain(|k, _| !k.starts_with('$'));
}

fn merge_list(
    kind: &str,
    original: &[Value],
    patch: &[Value],
    path: &mut Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let replace_directive = patch
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    let strategy = list_strategy(kind, path);
    if replace_directive {
        return Ok(patch
            .iter()
            .filter(|item| item.get("$patch").is_none())
            .cloned()
            .collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.to_vec()),
        ListStrategy::MergePrimitives => {
            let mut merged = original.to_vec();
            for item in patch {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(merged)
        }
        ListStrategy::MergeByKey(key) => {
            let mut merged: Vec<Value> = original.to_vec();
            for item in patch {
                let Some(item_key) = item.get(key) else {
                    return Err(invalid(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                };
                let position = merged.iter().position(|m| m.get(key) == Some(item_key));
                let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, deleting) {
                    (Some(i), true) => {
                        merged.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Some(m) = merge_value(kind, &merged[i], item, path)? {
                            merged[i] = m;
                        }
                    }
                    (None, false) => {
                        let mut new_item = item.clone();
                        if let Some(map) = new_item.as_object_mut() {
                            strip_directives(map);
                        }
                        merged.push(new_item);
                    }
                }
            }
            Ok(merged)
        }
    }
}

/// Orders `list` as `$setElementOrder` says; items it does not name keep their relative order
/// after those it names.
fn reorder(list: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let key_of = |item: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(key) => item.get(key).cloned().unwrap_or(Value::Null),
            _ => item.clone(),
        }
    };
    let order_keys: Vec<Value> = order.iter().map(&key_of).collect();
    let rank = |item: &Value| {
        order_keys
            .iter()
            .position(|k| *k == key_of(item))
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(|item| rank(item));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_merge_by_port() {
        let service =
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let patch =
            json!({"spec": {"ports": [{"port": 8080, "protocol": "TCP", "targetPort": 8080}]}});
        let patched = apply("Service", &service, &patch).unwrap();
        assert_eq!(patched["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(patched["spec"]["ports"][0]["nodePort"], 30001);
    }

    #[test]
    fn kubectl_apply_style_patch_with_directives() {
        let service = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patch = json!({
            "metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"]},
            "spec": {
                "$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                "ports": [{"port": 80, "$patch": "delete"}, {"port": 443, "targetPort": 8443}]
            }
        });
        let patched = apply("Service", &service, &patch).unwrap();
        assert_eq!(patched["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(patched["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 443, "name": "https", "targetPort": 8443}])
        );
    }

    #[test]
    fn replace_directives_and_unknown_lists() {
        let object = json!({"spec": {"selector": {"a": "1"}, "externalIPs": ["192.0.2.1"]}});
        let patch = json!({"spec": {"selector": {"$patch": "replace", "b": "2"}, "externalIPs": ["192.0.2.2"]}});
        let patched = apply("Service", &object, &patch).unwrap();
        assert_eq!(patched["spec"]["selector"], json!({"b": "2"}));
        assert_eq!(patched["spec"]["externalIPs"], json!(["192.0.2.2"]));
        let removal = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        let held = json!({"metadata": {"finalizers": ["x", "y"]}});
        assert_eq!(
            apply("Service", &held, &removal).unwrap()["metadata"]["finalizers"],
            json!(["y"])
        );
    }

    #[test]
    fn pod_template_containers_merge_by_name() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}}});
        let patched = apply("Deployment", &deployment, &patch).unwrap();
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["image"],
            "x:1"
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][1]["image"],
            "y:2"
        );
    }

    #[test]
    fn merge_key_missing_is_an_error() {
        let patch = json!({"spec": {"ports": [{"name": "no-port"}]}});
        assert!(apply("Service", &json!({"spec": {}}), &patch).is_err());
    }
}
