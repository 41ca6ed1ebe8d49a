//! API discovery: `/version`, `/api`, `/apis` in their legacy and aggregated (apidiscovery v2)
//! forms, and the resource list of each group version.

use serde_json::{Value, json};

use super::resources::{Registry, ResourceType};

/// The content type of aggregated discovery answers.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The Kubernetes version the emulator presents.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.13",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.11",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// Whether the client asked for aggregated discovery (kubectl 1.30+ does).
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"))
}

pub fn legacy_api(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// `/apis` in legacy form: every group with its versions.
pub fn legacy_groups(registry: &Registry) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (group, version) in registry.group_versions() {
        if group.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => groups.push((group, vec![version])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let gvs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources of one group version.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in &types {
        let mut entry = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            entry["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            entry["categories"] = json!(t.categories);
        }
        resources.push(entry);
        for sub in &t.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", t.plural),
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": subresource_verbs(sub),
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources
    }))
}

fn subresource_verbs(subresource: &str) -> Vec<&'static str> {
    match subresource {
        "finalize" => vec!["update"],
        _ => vec!["get", "patch", "update"],
    }
}

/// Aggregated discovery for the core group (`core == true`) or every other group.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut items = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for (group, _) in registry.group_versions() {
        if group.is_empty() == core && !groups.contains(&group) {
            groups.push(group);
        }
    }
    for group in groups {
        let versions: Vec<Value> = registry
            .group_versions()
            .into_iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, version)| {
                let resources: Vec<Value> = registry
                    .in_group_version(&group, &version)
                    .iter()
                    .map(|t| aggregated_resource(t))
                    .collect();
                json!({"version": version, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let mut metadata = json!({"creationTimestamp": null});
        if !core {
            metadata["name"] = json!(group);
        }
        items.push(json!({"metadata": metadata, "versions": versions}));
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items
    })
}

fn aggregated_resource(t: &ResourceType) -> Value {
    // kube-apiserver leaves group and version empty in built-in response kinds.
    let (group, version) = if t.custom.is_some() {
        (t.group.as_str(), t.version.as_str())
    } else {
        ("", "")
    };
    let mut entry = json!({
        "resource": t.plural,
        "responseKind": {"group": group, "version": version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs,
    });
    if !t.short_names.is_empty() {
        entry["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        entry["categories"] = json!(t.categories);
    }
    if !t.subresources.is_empty() {
        entry["subresources"] = t
            .subresources
            .iter()
            .map(|sub| {
                json!({
                    "subresource": sub,
                    "responseKind": {"group": group, "version": version, "kind": t.kind},
                    "verbs": subresource_verbs(sub),
                })
            })
            .collect();
    }
    entry
}
