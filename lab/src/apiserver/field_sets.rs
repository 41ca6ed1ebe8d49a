//! Field sets (the `FieldsV1` format of `managedFields`) and the shape knowledge they need: which
//! objects are structs, granular maps or atomic, and which lists are associative (by which
//! keys), sets, or atomic. Built-in kinds follow the Kubernetes API types; custom resources their
//! CRD schema (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// `f:name`: a field of a struct or a key of a map.
    Field(String),
    /// `k:{...}`: an item of an associative list, by its key fields (JSON text, keys sorted).
    Key(String),
    /// `v:...`: an item of a set list, by its value (JSON text).
    Value(String),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (prefix, rest) = text.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => Some(PathElement::Key(rest.to_string())),
            "v:" => Some(PathElement::Value(rest.to_string())),
            _ => None,
        }
    }

    /// How kube-apiserver prints the element in conflict messages.
    fn display(&self) -> String {
        match self {
            PathElement::Field(f) => format!(".{f}"),
            PathElement::Key(k) => format!("[{}]", key_display(k)),
            PathElement::Value(v) => format!("[={v}]"),
        }
    }
}

fn key_display(key_json: &str) -> String {
    serde_json::from_str::<Map<String, Value>>(key_json)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|_| key_json.to_string())
}

/// A set of field paths, as a tree. `member` says the node's own path is in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    fn child(&mut self, element: PathElement) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.child(first.clone()).insert(rest),
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, child) in &other.children {
            self.child(element.clone()).union(child);
        }
    }

    pub fn difference(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (element, child) in &other.children {
            if let Some(mine) = self.children.get_mut(element) {
                mine.difference(child);
            }
        }
        self.prune();
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut result = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    result.children.insert(element.clone(), both);
                }
            }
        }
        result
    }

    fn prune(&mut self) {
        self.children.retain(|_, c| {
            c.prune();
            !c.is_empty()
        });
    }

    /// Every member path, for conflict messages.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                map.insert(element.encode(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Reads `fieldsV1` JSON; a leaf `{}` is a member.
    pub fn from_fields_v1(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let Some(map) = value.as_object() else {
            return set;
        };
        if map.is_empty() {
            set.member = true;
        }
        for (key, child) in map {
            if key == "." {
                set.member = true;
            } else if let Some(element) = PathElement::decode(key) {
                set.children
                    .insert(element, FieldSet::from_fields_v1(child));
            }
        }
        set
    }
}

/// Prints a path as kube-apiserver does in conflicts: `.spec.type`, `.spec.ports[port=80,protocol="TCP"]`.
pub fn display_path(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// The shape of one node of an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Fields are tracked one by one; the node itself is not.
    Struct,
    /// Like a struct, but the node itself is tracked too (granular maps, custom resource objects).
    Map,
    /// Tracked as a whole.
    Atomic,
    /// Items tracked by these key fields.
    AssociativeList(Vec<String>),
    /// Scalar items tracked by value.
    SetList,
}

/// Where shape knowledge comes from: a built-in kind, or a CRD schema.
pub enum Shapes<'a> {
    Builtin(&'a str),
    Custom(&'a Value),
}

fn keys(names: &[&str]) -> Shape {
    Shape::AssociativeList(names.iter().map(ToString::to_string).collect())
}

impl Shapes<'_> {
    /// The shape of the node at `path` (field names only), holding `value`.
    pub fn shape(&self, path: &[String], value: &Value) -> Shape {
        let joined = path.join(".");
        match joined.as_str() {
            "metadata" => return Shape::Struct,
            "metadata.labels" | "metadata.annotations" => return Shape::Map,
            "metadata.finalizers" => return Shape::SetList,
            "metadata.ownerReferences" => return keys(&["uid"]),
            _ => {}
        }
        if joined.starts_with("metadata.") {
            return match value {
                Value::Object(_) => Shape::Struct,
                _ => Shape::Atomic,
            };
        }
        match self {
            Shapes::Builtin(kind) => builtin_shape(kind, &joined, value),
            Shapes::Custom(schema) => custom_shape(schema, path, value),
        }
    }
}

const POD_SPEC_SHAPES: &[(&str, &[&str])] = &[
    ("containers", &["name"]),
    ("initContainers", &["name"]),
    ("ephemeralContainers", &["name"]),
    ("containers.ports", &["containerPort", "protocol"]),
    ("initContainers.ports", &["containerPort", "protocol"]),
    ("containers.env", &["name"]),
    ("initContainers.env", &["name"]),
    ("containers.volumeMounts", &["mountPath"]),
    ("initContainers.volumeMounts", &["mountPath"]),
    ("volumes", &["name"]),
    ("imagePullSecrets", &["name"]),
];

fn builtin_shape(kind: &str, path: &str, value: &Value) -> Shape {
    if path == "status.conditions" {
        return keys(&["type"]);
    }
    let pod_prefix = match kind {
        "Pod" => Some("spec."),
        "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet" => Some("spec.template.spec."),
        _ => None,
    };
    if let Some(rest) = pod_prefix.and_then(|p| path.strip_prefix(p)) {
        if let Some((_, k)) = POD_SPEC_SHAPES.iter().find(|(p, _)| *p == rest) {
            return keys(k);
        }
        if rest == "nodeSelector"
            || rest.ends_with("resources.requests")
            || rest.ends_with("resources.limits")
        {
            return Shape::Map;
        }
    }
    if kind == "Deployment" || kind == "DaemonSet" {
        match path {
            "spec.selector" => return Shape::Atomic,
            "spec.template.metadata.labels" | "spec.template.metadata.annotations" => {
                return Shape::Map;
            }
            _ => {}
        }
    }
    match (kind, path) {
        ("Service", "spec.ports") => return keys(&["port", "protocol"]),
        ("Service", "spec.selector") => return Shape::Atomic,
        ("ConfigMap" | "Secret", "data" | "binaryData" | "stringData") => return Shape::Map,
        ("Node", "status.capacity" | "status.allocatable") => return Shape::Map,
        ("Node", "metadata.labels") => return Shape::Map,
        ("Event", "involvedObject" | "regarding" | "related") => return Shape::Atomic,
        _ => {}
    }
    match value {
        Value::Object(_) => Shape::Struct,
        _ => Shape::Atomic,
    }
}

fn custom_shape(schema: &Value, path: &[String], value: &Value) -> Shape {
    let mut node = schema;
    for name in path {
        // Field paths skip list items: step into the item schema of a list first.
        if node.get("type").and_then(Value::as_str) == Some("array") {
            node = node.get("items").unwrap_or(&Value::Null);
        }
        node = node
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .unwrap_or(&Value::Null);
    }
    match value {
        Value::Object(_) => match node.get("x-kubernetes-map-type").and_then(Value::as_str) {
            Some("atomic") => Shape::Atomic,
            _ => Shape::Map,
        },
        Value::Array(_) => match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Shape::AssociativeList(
                node.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| {
                        k.iter()
                            .filter_map(Value::as_str)
                            .map(ToString::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some("set") => Shape::SetList,
            _ => Shape::Atomic,
        },
        _ => Shape::Atomic,
    }
}

/// The key element of an associative list item.
pub fn item_key(item: &Value, key_fields: &[String]) -> PathElement {
    let mut key = serde_json::Map::new();
    let mut names: Vec<&String> = key_fields.iter().collect();
    names.sort();
    for name in names {
        if let Some(v) = item.get(name.as_str()) {
            key.insert(name.clone(), v.clone());
        }
    }
    PathElement::Key(Value::Object(key).to_string())
}

/// Which parts of an object a write concerns: the main resource excludes status, the status
/// subresource only has status; server-managed metadata is never tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
}

const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

fn tracked_top_level(key: &str, scope: Scope, has_status: bool) -> bool {
    match (scope, key) {
        (_, "apiVersion" | "kind") => false,
        (Scope::Status, k) => k == "status",
        (Scope::Main, "status") => !has_status,
        _ => true,
    }
}

/// Whether a field set describes what a write changed (Update: composite nodes the write created
/// are members too) or an applied configuration (Apply: only leaves, list items and atomic
/// nodes), as kube-apiserver's structured-merge-diff computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Update,
    Apply,
}

/// Every field of `object` in `scope`, in Update mode.
pub fn fields_of(shapes: &Shapes<'_>, object: &Value, scope: Scope, has_status: bool) -> FieldSet {
    fields_in_mode(shapes, object, scope, has_status, Mode::Update)
}

/// Every field of `object` in `scope`.
pub fn fields_in_mode(
    shapes: &Shapes<'_>,
    object: &Value,
    scope: Scope,
    has_status: bool,
    mode: Mode,
) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            if !tracked_top_level(key, scope, has_status) {
                continue;
            }
            let mut path = vec![key.clone()];
            let child = set.child(PathElement::Field(key.clone()));
            collect_fields(shapes, value, &mut path, child, mode);
        }
    }
    set.prune();
    set
}

fn collect_fields(
    shapes: &Shapes<'_>,
    value: &Value,
    path: &mut Vec<String>,
    set: &mut FieldSet,
    mode: Mode,
) {
    let shape = shapes.shape(path, value);
    let composite_member = mode == Mode::Update;
    match (&shape, value) {
        (Shape::Struct | Shape::Map, Value::Object(map)) => {
            if (shape == Shape::Map && composite_member) || map.is_empty() {
                set.member = true;
            }
            for (key, child) in map {
                if path.len() == 1
                    && path[0] == "metadata"
                    && UNTRACKED_METADATA.contains(&key.as_str())
                {
                    continue;
                }
                path.push(key.clone());
                collect_fields(
                    shapes,
                    child,
                    path,
                    set.child(PathElement::Field(key.clone())),
                    mode,
                );
                path.pop();
            }
        }
        (Shape::AssociativeList(key_fields), Value::Array(items)) => {
            set.member = composite_member || items.is_empty();
            for item in items {
                let element = item_key(item, key_fields);
                let child = set.child(element);
                child.member = true;
                if let Some(fields) = item.as_object() {
                    for (key, field_value) in fields {
                        path.push(key.clone());
                        collect_fields(
                            shapes,
                            field_value,
                            path,
                            child.child(PathElement::Field(key.clone())),
                            mode,
                        );
                        path.pop();
                    }
                }
            }
        }
        (Shape::SetList, Value::Array(items)) => {
            set.member = composite_member || items.is_empty();
            for item in items {
                set.child(PathElement::Value(item.to_string())).member = true;
            }
        }
        _ => set.member = true,
    }
}

/// The value at a field path, if present.
pub fn value_at<'a>(
    shapes: &Shapes<'_>,
    object: &'a Value,
    path: &[PathElement],
) -> Option<&'a Value> {
    let mut current = object;
    let mut names: Vec<String> = Vec::new();
    for element in path {
        current = match element {
            PathElement::Field(name) => {
                names.push(name.clone());
                current.get(name)?
            }
            PathElement::Key(_) => {
                let Shape::AssociativeList(key_fields) = shapes.shape(&names, current) else {
                    return None;
                };
                current
                    .as_array()?
                    .iter()
                    .find(|item| item_key(item, &key_fields) == *element)?
            }
            PathElement::Value(text) => {
                let target: Value = serde_json::from_str(text).ok()?;
                current.as_array()?.iter().find(|item| **item == target)?
            }
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_service_has_kube_apiservers_field_set() {
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "myapp", "namespace": "default", "labels": {"app": "myapp"}},
            "spec": {"type": "LoadBalancer", "selector": {"app": "myapp"},
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                     "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
                     "internalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true},
            "status": {"loadBalancer": {}}
        });
        let set = fields_of(&Shapes::Builtin("Service"), &service, Scope::Main, true);
        // Recorded from kube-apiserver 1.32 (k8s-golden/10).
        let expected = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:allocateLoadBalancerNodePorts": {}, "f:externalTrafficPolicy": {},
                "f:internalTrafficPolicy": {},
                "f:ports": {".": {}, "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}
            }
        });
        assert_eq!(set.to_fields_v1(), expected);
        assert_eq!(FieldSet::from_fields_v1(&expected), set);
    }

    #[test]
    fn status_scope_tracks_only_status() {
        let service = json!({"metadata": {"labels": {"a": "b"}}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        let set = fields_of(&Shapes::Builtin("Service"), &service, Scope::Status, true);
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}})
        );
    }

    #[test]
    fn set_operations_and_display() {
        let mut a = FieldSet::default();
        a.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("type".into()),
        ]);
        a.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("selector".into()),
        ]);
        let mut b = FieldSet::default();
        b.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("type".into()),
        ]);
        let both = a.intersection(&b);
        assert_eq!(display_path(&both.paths()[0]), ".spec.type");
        a.difference(&b);
        assert!(!a.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("type".into())
        ]));
        assert!(a.contains(&[
            PathElement::Field("spec".into()),
            PathElement::Field("selector".into())
        ]));
    }
}
