//! The fields kube-apiserver writes out even when nobody set them: its admission defaults for
//! new Nodes, the zero values Go serializes for some built-in types, and the zero objects that
//! carry watch bookmarks.

use serde_json::{Value, json};

use super::resources::ResourceType;

fn fill_missing(target: &mut Value, defaults: &Value) {
    let (Some(target), Some(defaults)) = (target.as_object_mut(), defaults.as_object()) else {
        return;
    };
    for (key, value) in defaults {
        match target.get_mut(key) {
            Some(existing) if existing.is_object() && value.is_object() => {
                fill_missing(existing, value)
            }
            Some(_) => {}
            None => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

fn node_status_zero() -> Value {
    json!({
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
            "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
            "operatingSystem": "", "architecture": ""
        }
    })
}

/// Fills what kube-apiserver adds to a new object of a built-in kind.
pub fn on_create(resource: &ResourceType, object: &mut Value) {
    if resource.custom.is_some() {
        return;
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "nodes") => {
            // The TaintNodesByCondition admission plugin: a new node is not ready until its
            // kubelet says otherwise.
            let not_ready = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            let taints = object["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !taints.iter().any(|t| t["key"] == not_ready["key"]) {
                let mut taints = taints;
                taints.push(not_ready);
                object["spec"]["taints"] = json!(taints);
            }
            if !object["status"].is_object() {
                object["status"] = json!({});
            }
            fill_missing(&mut object["status"], &node_status_zero());
            if let Some(conditions) = object["status"]
                .get_mut("conditions")
                .and_then(Value::as_array_mut)
            {
                for condition in conditions.iter_mut().filter(|c| c.is_object()) {
                    fill_missing(
                        condition,
                        &json!({"lastHeartbeatTime": null, "lastTransitionTime": null}),
                    );
                }
            }
        }
        ("", "namespaces") => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        ("discovery.k8s.io", "endpointslices") => {
            if let Some(ports) = object["ports"].as_array_mut() {
                for port in ports.iter_mut().filter(|p| p.is_object()) {
                    fill_missing(port, &json!({"name": ""}));
                }
            }
        }
        ("", "events") => fill_missing(
            object,
            &json!({
                "firstTimestamp": null, "lastTimestamp": null, "eventTime": null,
                "reportingComponent": "", "reportingInstance": ""
            }),
        ),
        _ => {}
    }
}

/// The object a BOOKMARK event carries: a zero object of the type with only its
/// resourceVersion set, serialized as kube-apiserver serializes zero values.
pub fn bookmark(resource: &ResourceType, resource_version: u64) -> Value {
    let mut object = json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": resource_version.to_string()},
    });
    if resource.custom.is_some() {
        return object;
    }
    object["metadata"]["creationTimestamp"] = Value::Null;
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "services") => {
            object["spec"] = json!({});
            object["status"] = json!({"loadBalancer": {}});
        }
        ("", "nodes") => {
            object["spec"] = json!({});
            object["status"] = node_status_zero();
        }
        ("", "pods") | ("", "namespaces") | ("apps", _) => {
            object["spec"] = json!({});
            object["status"] = json!({});
        }
        _ => {}
    }
    object
}
