//! `metadata.managedFields`: who owns which fields, updated on every write, and server-side
//! apply (`application/apply-patch+yaml`) with its conflicts, as kube-apiserver's field manager
//! does it.

use serde_json::{Map, Value, json};

use super::field_sets::{
    FieldSet, Mode, PathElement, Scope, Shape, Shapes, display_path, fields_in_mode, fields_of,
    item_key, value_at,
};
use super::status::ApiError;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        entry["fieldsType"] = json!("FieldsV1");
        entry["fieldsV1"] = self.fields.to_fields_v1();
        if !self.subresource.is_empty() {
            entry["subresource"] = json!(self.subresource);
        }
        entry
    }

    fn from_json(value: &Value) -> Option<Entry> {
        Some(Entry {
            manager: value.get("manager")?.as_str()?.to_string(),
            operation: value.get("operation")?.as_str()?.to_string(),
            api_version: value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: value
                .get("time")
                .and_then(Value::as_str)
                .map(ToString::to_string),
            subresource: value
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            fields: FieldSet::from_fields_v1(value.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }
}

/// The entries of an object.
pub fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(Entry::from_json).collect())
        .unwrap_or_default()
}

/// Writes entries back, without empty ones, in kube-apiserver's order: Apply before Update,
/// then by time, manager and subresource.
pub fn store_entries(object: &mut Value, mut list: Vec<Entry>) {
    list.retain(|e| !e.fields.is_empty());
    list.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| {
                a.time
                    .clone()
                    .unwrap_or_default()
                    .cmp(&b.time.clone().unwrap_or_default())
            })
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if list.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert(
            "managedFields".into(),
            Value::Array(list.iter().map(Entry::to_json).collect()),
        );
    }
}

/// Who is writing, and to what.
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: String,
    pub scope: Scope,
    pub has_status: bool,
    pub now: &'a str,
}

impl Writer<'_> {
    fn subresource(&self) -> &'static str {
        match self.scope {
            Scope::Main => "",
            Scope::Status => "status",
        }
    }
}

/// The fields of `new` that an update changed from `old`: leaves whose value differs, and
/// composite nodes that did not exist before.
fn changed_fields(
    shapes: &Shapes<'_>,
    old: Option<&Value>,
    new: &Value,
    new_set: &FieldSet,
) -> FieldSet {
    let mut changed = FieldSet::default();
    for path in new_set.paths() {
        let new_value = value_at(shapes, new, &path);
        let old_value = old.and_then(|o| value_at(shapes, o, &path));
        let composite = new_set_has_children(new_set, &path);
        let differs = if composite {
            old_value.is_none()
        } else {
            new_value != old_value
        };
        if differs {
            changed.insert(&path);
        }
    }
    changed
}

fn new_set_has_children(set: &FieldSet, path: &[PathElement]) -> bool {
    let mut node = set;
    for element in path {
        match node.children.get(element) {
            Some(child) => node = child,
            None => return false,
        }
    }
    !node.children.is_empty()
}

/// Records an Update by `writer` that turned `old` into `new`.
pub fn record_update(
    shapes: &Shapes<'_>,
    writer: &Writer<'_>,
    old: Option<&Value>,
    new: &mut Value,
) {
    let new_set = fields_of(shapes, new, writer.scope, writer.has_status);
    let old_set = old
        .map(|o| fields_of(shapes, o, writer.scope, writer.has_status))
        .unwrap_or_default();
    let changed = changed_fields(shapes, old, new, &new_set);
    let mut removed = old_set.clone();
    removed.difference(&new_set);
    let mut list = old.map(entries).unwrap_or_default();
    for entry in &mut list {
        entry.fields.difference(&removed);
        if entry.subresource == writer.subresource() {
            entry.fields.difference(&changed);
        }
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == writer.manager
                && e.operation == "Update"
                && e.subresource == writer.subresource()
        }) {
            Some(entry) => {
                entry.fields.union(&changed);
                entry.time = Some(writer.now.to_string());
                entry.api_version = writer.api_version.to_string();
            }
            None => list.push(Entry {
                manager: writer.manager.to_string(),
                operation: "Update".into(),
                api_version: writer.api_version.to_string(),
                time: Some(writer.now.to_string()),
                subresource: writer.subresource().into(),
                fields: changed,
            }),
        }
    }
    store_entries(new, list);
}

/// Server-side apply of `applied` onto `live` (an empty object when creating). Returns the
/// merged object with its managedFields, or a 409 listing the conflicts unless `force`.
pub fn apply(
    shapes: &Shapes<'_>,
    writer: &Writer<'_>,
    live: &Value,
    applied: &Value,
    force: bool,
) -> Result<Value, ApiError> {
    let applied_set = fields_in_mode(
        shapes,
        applied,
        writer.scope,
        writer.has_status,
        Mode::Apply,
    );
    let mut list = entries(live);
    let subresource = writer.subresource();
    let mut conflicts: Vec<(String, String, Vec<PathElement>)> = Vec::new();
    for entry in list
        .iter()
        .filter(|e| e.manager != writer.manager || e.operation != "Apply")
    {
        if entry.subresource != subresource {
            continue;
        }
        for path in applied_set.intersection(&entry.fields).paths() {
            if new_set_has_children(&applied_set, &path) {
                continue;
            }
            if value_at(shapes, applied, &path) != value_at(shapes, live, &path) {
                conflicts.push((entry.manager.clone(), entry.api_version.clone(), path));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    if force {
        for (manager, _, path) in &conflicts {
            let mut taken = FieldSet::default();
            taken.insert(path);
            for entry in list.iter_mut().filter(|e| e.manager == *manager) {
                entry.fields.difference(&taken);
            }
        }
    }
    let mut merged = live.clone();
    merge_applied(shapes, &mut merged, applied, &mut Vec::new());
    // Fields this manager applied before and no longer does, and nobody else owns, go away.
    let previous = list
        .iter()
        .find(|e| {
            e.manager == writer.manager && e.operation == "Apply" && e.subresource == subresource
        })
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut dropped = previous;
    dropped.difference(&applied_set);
    for entry in list.iter().filter(|e| {
        !(e.manager == writer.manager && e.operation == "Apply" && e.subresource == subresource)
    }) {
        dropped.difference(&entry.fields);
    }
    // Removing a node removes what is under it; removing its key fields first would make a list
    // item unfindable, so only the outermost dropped paths are removed.
    let dropped_paths = dropped.paths();
    for path in &dropped_paths {
        let covered = (0..path.len()).any(|n| dropped.contains(&path[..n]));
        if !covered {
            remove_path(shapes, &mut merged, path);
        }
    }
    list.retain(|e| {
        !(e.manager == writer.manager && e.operation == "Apply" && e.subresource == subresource)
    });
    list.push(Entry {
        manager: writer.manager.to_string(),
        operation: "Apply".into(),
        api_version: writer.api_version.to_string(),
        time: None,
        subresource: subresource.into(),
        fields: applied_set,
    });
    store_entries(&mut merged, list);
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, String, Vec<PathElement>)]) -> ApiError {
    let count = conflicts.len();
    let text = if count == 1 {
        let (manager, version, path) = &conflicts[0];
        format!(
            "conflict with \"{manager}\" using {version}: {}",
            display_path(path)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _, _)| m).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            let version = conflicts
                .iter()
                .find(|(m, _, _)| m == manager)
                .map_or("", |(_, v, _)| v.as_str());
            lines.push(format!("conflicts with \"{manager}\" using {version}:"));
            for (_, _, path) in conflicts.iter().filter(|(m, _, _)| m == manager) {
                lines.push(format!("- {}", display_path(path)));
            }
        }
        lines.join("\n")
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, version, path)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {version}"),
                "field": display_path(path),
            })
        })
        .collect();
    let mut error = ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {count} conflict{}: {text}",
            if count == 1 { "" } else { "s" }
        ),
    );
    error.details = Some(json!({"causes": causes}));
    error
}

/// Merges an applied configuration into the live object: maps and structs field by field,
/// associative lists item by item (by key), sets by value, everything else replaced.
fn merge_applied(shapes: &Shapes<'_>, live: &mut Value, applied: &Value, path: &mut Vec<String>) {
    let Some(applied_map) = applied.as_object() else {
        *live = applied.clone();
        return;
    };
    if !live.is_object() {
        *live = Value::Object(Map::new());
    }
    for (key, value) in applied_map {
        path.push(key.clone());
        let shape = shapes.shape(path, value);
        let target = &mut live[key.as_str()];
        match (&shape, value) {
            (Shape::Struct | Shape::Map, Value::Object(_)) => {
                merge_applied(shapes, target, value, path)
            }
            (Shape::AssociativeList(keys), Value::Array(items)) => {
                let mut merged: Vec<Value> = target.as_array().cloned().unwrap_or_default();
                for item in items {
                    let key = item_key(item, keys);
                    match merged.iter_mut().find(|m| item_key(m, keys) == key) {
                        Some(existing) => merge_applied(shapes, existing, item, path),
                        None => merged.push(item.clone()),
                    }
                }
                *target = Value::Array(merged);
            }
            (Shape::SetList, Value::Array(items)) => {
                let mut merged: Vec<Value> = target.as_array().cloned().unwrap_or_default();
                for item in items {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                *target = Value::Array(merged);
            }
            _ => *target = value.clone(),
        }
        path.pop();
    }
}

/// Removes the field at `path` from `object`.
fn remove_path(shapes: &Shapes<'_>, object: &mut Value, path: &[PathElement]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut names: Vec<String> = Vec::new();
    let mut current = object;
    for element in parents {
        current = match element {
            PathElement::Field(name) => {
                names.push(name.clone());
                match current.get_mut(name) {
                    Some(child) => child,
                    None => return,
                }
            }
            PathElement::Key(_) => {
                let Shape::AssociativeList(keys) = shapes.shape(&names, current) else {
                    return;
                };
                let Some(item) = current
                    .as_array_mut()
                    .and_then(|items| items.iter_mut().find(|i| item_key(i, &keys) == *element))
                else {
                    return;
                };
                item
            }
            PathElement::Value(_) => return,
        };
    }
    match last {
        PathElement::Field(name) => {
            if let Some(map) = current.as_object_mut() {
                map.remove(name);
            }
        }
        PathElement::Key(_) => {
            if let Shape::AssociativeList(keys) = shapes.shape(&names, current)
                && let Some(items) = current.as_array_mut()
            {
                items.retain(|i| item_key(i, &keys) != *last);
            }
        }
        PathElement::Value(text) => {
            let target: Option<Value> = serde_json::from_str(text).ok();
            if let Some(items) = current.as_array_mut() {
                items.retain(|i| Some(i) != target.as_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1".into(),
            scope: Scope::Main,
            has_status: true,
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn service(kind: &str, port: i64) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "myapp"},
               "spec": {"type": kind, "selector": {"app": "myapp"}, "ports": [{"port": port, "protocol": "TCP"}]}})
    }

    #[test]
    fn an_update_owns_what_it_changed() {
        let shapes = Shapes::Builtin("Service");
        let mut created = service("LoadBalancer", 80);
        record_update(
            &shapes,
            &writer("kubectl-client-side-apply"),
            None,
            &mut created,
        );
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"tier": "web"});
        record_update(
            &shapes,
            &writer("python-requests"),
            Some(&created),
            &mut labelled,
        );
        let list = entries(&labelled);
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].manager, "python-requests");
        assert_eq!(
            list[1].fields.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
        );
    }

    #[test]
    fn apply_conflicts_with_another_owner_unless_forced() {
        let shapes = Shapes::Builtin("Service");
        let mut live = service("LoadBalancer", 80);
        record_update(
            &shapes,
            &writer("kubectl-client-side-apply"),
            None,
            &mut live,
        );
        let applied = service("NodePort", 80);
        let error = apply(&shapes, &writer("other"), &live, &applied, false).unwrap_err();
        // As kube-apiserver 1.32 answered (k8s-golden/23).
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .spec.type"
        );
        let merged = apply(&shapes, &writer("other"), &live, &applied, true).unwrap();
        assert_eq!(merged["spec"]["type"], "NodePort");
        let list = entries(&merged);
        assert_eq!(list[0].operation, "Apply");
        assert!(list[0].time.is_none());
        assert!(!list[1].fields.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("type".into())
        ]));
    }

    #[test]
    fn apply_merges_associative_lists_and_drops_what_it_no_longer_applies() {
        let shapes = Shapes::Builtin("Service");
        let first = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "1", "b": "2"}},
                           "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]}});
        let live = apply(&shapes, &writer("me"), &json!({}), &first, false).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "1"}},
                            "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}, {"port": 443, "protocol": "TCP", "name": "https"}]}});
        let merged = apply(&shapes, &writer("me"), &live, &second, false).unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(merged["spec"]["ports"].as_array().unwrap().len(), 2);
        // An item no longer applied goes away whole, also when the server added fields to it.
        let mut with_node_port = merged.clone();
        with_node_port["spec"]["ports"][0]["nodePort"] = json!(30080);
        let third = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                           "spec": {"ports": [{"port": 443, "protocol": "TCP", "name": "https"}]}});
        let merged = apply(&shapes, &writer("me"), &with_node_port, &third, false).unwrap();
        assert_eq!(
            merged["spec"]["ports"],
            json!([{"port": 443, "protocol": "TCP", "name": "https"}])
        );
    }
}
