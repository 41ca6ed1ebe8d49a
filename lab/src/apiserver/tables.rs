//! Server-side tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which is what
//! `kubectl get` prints: Services with kube-apiserver's columns, custom resources with their
//! CRD's printer columns, every other kind with NAME and AGE.

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
    vec![
        column("Name", "string", "name", 0),
        column("Age", "string", "", 0),
    ]
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
    vec![name, age]
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
