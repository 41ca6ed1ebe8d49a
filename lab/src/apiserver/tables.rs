//! Server-side tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which is what
//! `kubectl get` prints: Services, Events, Namespaces, Nodes, EndpointSlices and Leases with
//! kube-apiserver's columns, custom resources with their CRD's printer columns, every other kind
//! with NAME and AGE.

use super::strings;
use serde_json::{Map, Value, json};

use super::resources::ResourceType;

/// Whether the client asked for a table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn column(name: &str, kind: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": kind, "format": format, "priority": priority})
}

/// Column definitions, and a function computing one object's cells.
fn columns(resource: &ResourceType) -> Vec<Value> {
    if let Some(custom) = &resource.custom {
        let mut columns = vec![column("Name", "string", "name", 0)];
        if custom.printer_columns.is_empty() {
            columns.push(column("Age", "date", "", 0));
        }
        for c in &custom.printer_columns {
            columns.push(column(
                c["name"].as_str().unwrap_or(""),
                c["type"].as_str().unwrap_or("string"),
                c["format"].as_str().unwrap_or(""),
                c["priority"].as_i64().unwrap_or(0),
            ));
        }
        return columns;
    }
    if resource.group.is_empty() && resource.plural == "services" {
        return vec![
            column("Name", "string", "name", 0),
            column("Type", "string", "", 0),
            column("Cluster-IP", "string", "", 0),
            column("External-IP", "string", "", 0),
            column("Port(s)", "string", "", 0),
            column("Age", "string", "", 0),
            column("Selector", "string", "", 1),
        ];
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("" | "events.k8s.io", "events") => vec![
            column("Last Seen", "string", "", 0),
            column("Type", "string", "", 0),
            column("Reason", "string", "", 0),
            column("Object", "string", "", 0),
            column("Subobject", "string", "", 1),
            column("Source", "string", "", 1),
            column("Message", "string", "", 0),
            column("First Seen", "string", "", 1),
            column("Count", "string", "", 1),
            column("Name", "string", "name", 1),
        ],
        ("", "nodes") => vec![
            column("Name", "string", "name", 0),
            column("Status", "string", "", 0),
            column("Roles", "string", "", 0),
            column("Age", "string", "", 0),
            column("Version", "string", "", 0),
            column("Internal-IP", "string", "", 1),
            column("External-IP", "string", "", 1),
            column("OS-Image", "string", "", 1),
            column("Kernel-Version", "string", "", 1),
            column("Container-Runtime", "string", "", 1),
        ],
        ("", "namespaces") => vec![
            column("Name", "string", "name", 0),
            column("Status", "string", "", 0),
            column("Age", "string", "", 0),
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            column("Name", "string", "name", 0),
            column("AddressType", "string", "", 0),
            column("Ports", "string", "", 0),
            column("Endpoints", "string", "", 0),
            column("Age", "string", "", 0),
        ],
        ("coordination.k8s.io", "leases") => vec![
            column("Name", "string", "name", 0),
            column("Holder", "string", "", 0),
            column("Age", "string", "", 0),
        ],
        _ => vec![
            column("Name", "string", "name", 0),
            column("Age", "string", "", 0),
        ],
    }
}

fn cells(resource: &ResourceType, object: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = object["metadata"]["name"].clone();
    let age = json!(age(object, now));
    if let Some(custom) = &resource.custom {
        let mut cells = vec![name];
        if custom.printer_columns.is_empty() {
            cells.push(object["metadata"]["creationTimestamp"].clone());
        }
        for c in &custom.printer_columns {
            let value = json_path(object, c["jsonPath"].as_str().unwrap_or(""));
            cells.push(printer_cell(
                value,
                c["type"].as_str().unwrap_or("string"),
                now,
            ));
        }
        return cells;
    }
    if resource.group.is_empty() && resource.plural == "services" {
        let spec = &object["spec"];
        return vec![
            name,
            spec["type"].clone(),
            json!(text_or(spec["clusterIP"].as_str(), "<none>")),
            json!(service_external_ip(object)),
            json!(service_ports(spec)),
            age,
            json!(format_labels(spec["selector"].as_object())),
        ];
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("" | "events.k8s.io", "events") => event_cells(object, now),
        ("", "nodes") => node_cells(object, age),
        ("", "namespaces") => vec![name, object["status"]["phase"].clone(), age],
        ("discovery.k8s.io", "endpointslices") => vec![
            name,
            object["addressType"].clone(),
            json!(endpoint_slice_ports(object)),
            json!(endpoint_slice_addresses(object)),
            age,
        ],
        ("coordination.k8s.io", "leases") => vec![
            name,
            json!(object["spec"]["holderIdentity"].as_str().unwrap_or("")),
            age,
        ],
        _ => vec![name, age],
    }
}

/// How long ago a timestamp was, as kube-apiserver's printers say it ("<unknown>" if unset).
fn since(timestamp: &Value, now: jiff::Timestamp) -> Option<String> {
    let time = timestamp.as_str()?.parse::<jiff::Timestamp>().ok()?;
    Some(human_duration(now.duration_since(time).as_secs()))
}

/// An Event's row, whichever API (core/v1 or events.k8s.io/v1) it is read through.
fn event_cells(event: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let either = |core: &str, events: &str| {
        let value = &event[core];
        if value.is_null() {
            event[events].clone()
        } else {
            value.clone()
        }
    };
    let first_seen = since(&either("firstTimestamp", "deprecatedFirstTimestamp"), now)
        .or_else(|| since(&event["eventTime"], now))
        .unwrap_or_else(|| "<unknown>".into());
    let mut last_seen = since(&either("lastTimestamp", "deprecatedLastTimestamp"), now)
        .unwrap_or_else(|| first_seen.clone());
    let mut count = either("count", "deprecatedCount").as_i64().unwrap_or(0);
    if event["series"].is_object() {
        last_seen =
            since(&event["series"]["lastObservedTime"], now).unwrap_or_else(|| "<unknown>".into());
        count = event["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the events.k8s.io API have no count.
        count = 1;
    }
    let involved = either("involvedObject", "regarding");
    let kind = involved["kind"].as_str().unwrap_or("").to_ascii_lowercase();
    let target = match involved["name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    let source = either("source", "deprecatedSource");
    let first_non_empty = |a: &Value, b: &Value| {
        a.as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| b.as_str())
            .unwrap_or("")
            .to_string()
    };
    let component = first_non_empty(&source["component"], &event["reportingController"]);
    let component = if component.is_empty() {
        first_non_empty(&source["component"], &event["reportingComponent"])
    } else {
        component
    };
    let instance = first_non_empty(&source["host"], &event["reportingInstance"]);
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    let message = either("message", "note");
    vec![
        json!(last_seen),
        event["type"].clone(),
        event["reason"].clone(),
        json!(target),
        json!(involved["fieldPath"].as_str().unwrap_or("")),
        json!(source),
        json!(message.as_str().unwrap_or("").trim()),
        json!(first_seen),
        json!(count),
        event["metadata"]["name"].clone(),
    ]
}

fn node_cells(node: &Value, age: Value) -> Vec<Value> {
    let conditions = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut status: Vec<String> = conditions
        .iter()
        .filter(|c| c["type"] == "Ready")
        .take(1)
        .map(|c| {
            if c["status"] == "True" {
                "Ready".into()
            } else {
                "NotReady".into()
            }
        })
        .collect();
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if node["spec"]["unschedulable"] == Value::Bool(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = node["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then(|| role.to_string())
                    } else if key == "kubernetes.io/role" {
                        value
                            .as_str()
                            .filter(|v| !v.is_empty())
                            .map(ToString::to_string)
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        node["status"]["addresses"]
            .as_array()
            .and_then(|addresses| addresses.iter().find(|a| a["type"] == kind))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = &node["status"]["nodeInfo"];
    let or_unknown = |v: &Value| json!(text_or(v.as_str(), "<unknown>"));
    vec![
        node["metadata"]["name"].clone(),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age,
        json!(info["kubeletVersion"].as_str().unwrap_or("")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        or_unknown(&info["osImage"]),
        or_unknown(&info["kernelVersion"]),
        or_unknown(&info["containerRuntimeVersion"]),
    ]
}

/// kube-apiserver's "first three, then + N more..." lists.
fn first_three(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let shown = items.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if items.len() > 3 {
        format!("{shown} + {} more...", items.len() - 3)
    } else if shown.is_empty() {
        "<unset>".into()
    } else {
        shown
    }
}

fn endpoint_slice_ports(slice: &Value) -> String {
    let ports = slice["ports"].as_array().cloned().unwrap_or_default();
    first_three(
        ports
            .iter()
            .map(|p| match (p["port"].as_i64(), p["name"].as_str()) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".into(),
            }),
    )
}

fn endpoint_slice_addresses(slice: &Value) -> String {
    let endpoints = slice["endpoints"].as_array().cloned().unwrap_or_default();
    first_three(
        endpoints
            .iter()
            .flat_map(|e| strings(&e["addresses"]).into_iter()),
    )
}

fn text_or<'a>(text: Option<&'a str>, fallback: &'a str) -> &'a str {
    text.filter(|t| !t.is_empty()).unwrap_or(fallback)
}

/// The EXTERNAL-IP column, as kubectl's service printer computes it.
fn service_external_ip(service: &Value) -> String {
    let spec = &service["spec"];
    let external_ips = strings(&spec["externalIPs"]);
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".into()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut addresses: Vec<String> = service["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|ingress| {
                    ingress
                        .iter()
                        .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                        .filter(|a| !a.is_empty())
                        .map(ToString::to_string)
                        .collect()
                })
                .unwrap_or_default();
            addresses.extend(external_ips);
            if addresses.is_empty() {
                "<pending>".into()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").into(),
        _ => "<unknown>".into(),
    }
}

fn service_ports(spec: &Value) -> String {
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let port = p["port"].as_i64().unwrap_or(0);
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64().filter(|n| *n != 0) {
                        Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                        None => format!("{port}/{protocol}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

/// `a=b,c=d` with keys sorted, or `<none>`.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

fn age(object: &Value, now: jiff::Timestamp) -> String {
    object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or_else(
            || "<unknown>".into(),
            |created| human_duration(now.duration_since(created).as_secs()),
        )
}

/// Go's `duration.HumanDuration`, which kube-apiserver prints ages with.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Evaluates a printer column's simple JSONPath (`.spec.addresses`, `.status.conditions[0].type`).
fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for segment in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        if let Some(i) = index {
            current = current.get(i)?;
        }
    }
    Some(current)
}

/// A printer column cell: scalars as they are, lists and objects as their JSON text, dates as
/// ages.
fn printer_cell(value: Option<&Value>, kind: &str, now: jiff::Timestamp) -> Value {
    match (value, kind) {
        (None, _) | (Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => s.parse::<jiff::Timestamp>().map_or_else(
            |_| json!(s),
            |t| json!(human_duration(now.duration_since(t).as_secs())),
        ),
        (Some(v @ (Value::Array(_) | Value::Object(_))), _) => json!(v.to_string()),
        (Some(v), _) => v.clone(),
    }
}

/// The table of `objects`, each row with its object's metadata, as `includeObject=Metadata`.
pub fn table(resource: &ResourceType, objects: &[Value], list_metadata: Value) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "cells": cells(resource, object, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"],
                }
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": columns(resource),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_as_go_does() {
        for (seconds, text) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn service_cells_match_kube_apiserver() {
        let service = json!({
            "metadata": {"name": "myapp", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.104.130.236", "selector": {"app": "myapp"},
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30644}]},
            "status": {"loadBalancer": {}}
        });
        assert_eq!(service_external_ip(&service), "<pending>");
        assert_eq!(service_ports(&service["spec"]), "80:30644/TCP");
        let mut with_ip = service.clone();
        with_ip["status"]["loadBalancer"]["ingress"] =
            json!([{"ip": "192.168.117.100", "ipMode": "VIP"}]);
        assert_eq!(service_external_ip(&with_ip), "192.168.117.100");
        assert_eq!(
            format_labels(service["spec"]["selector"].as_object()),
            "app=myapp"
        );
    }

    #[test]
    fn printer_cells_render_lists_as_json() {
        let pool =
            json!({"spec": {"addresses": ["192.168.117.100-192.168.117.110"], "autoAssign": true}});
        let now = jiff::Timestamp::now();
        assert_eq!(
            printer_cell(json_path(&pool, ".spec.addresses"), "string", now),
            json!("[\"192.168.117.100-192.168.117.110\"]")
        );
        assert_eq!(
            printer_cell(json_path(&pool, ".spec.autoAssign"), "boolean", now),
            json!(true)
        );
        assert_eq!(
            printer_cell(json_path(&pool, ".status.assignedIPv4"), "integer", now),
            Value::Null
        );
    }
}
