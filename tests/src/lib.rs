//! Helpers shared by ferrolb's cross-crate tests.

pub mod monitoring;

use std::path::PathBuf;

/// The repository root, found from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Splits a multi-document YAML file into its non-empty documents as JSON values.
pub fn yaml_documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Every object a kustomization installs, following its `resources` into files and folders.
pub fn kustomize_resources(dir: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    // kustomize accepts either name; config/crd uses the one `kubectl apply -f` skips.
    let file = ["kustomization.yaml", "Kustomization"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .ok_or_else(|| anyhow::anyhow!("{}: no kustomization", dir.display()))?;
    let kustomization = std::fs::read_to_string(file)?;
    let kustomization: serde_json::Value = serde_yaml::from_str(&kustomization)?;
    let mut objects = Vec::new();
    let resources = kustomization["resources"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{}: no resources", dir.display()))?;
    for resource in resources {
        let name = resource
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{}: resource is not a path", dir.display()))?;
        let path = dir.join(name);
        if path.is_dir() {
            objects.extend(kustomize_resources(&path)?);
        } else {
            objects.extend(yaml_documents(&std::fs::read_to_string(&path)?)?);
        }
    }
    Ok(objects)
}

/// Every document of every `.yaml` file directly in a folder, as `kubectl apply -f DIR` reads it.
pub fn folder_documents(dir: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    let mut objects = Vec::new();
    for path in paths {
        objects.extend(yaml_documents(&std::fs::read_to_string(&path)?)?);
    }
    Ok(objects)
}

/// Creates objects (as JSON) through a kube client, finding each kind by discovery: what
/// `kubectl create -f` does. CRDs first, then the rest, so that custom kinds resolve.
pub async fn create_all(
    client: &kube::Client,
    objects: Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    use kube::api::{DynamicObject, PostParams};
    let (crds, others): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    for batch in [crds, others] {
        let discovery = kube::Discovery::new(client.clone()).run().await?;
        for object in batch {
            let object: DynamicObject = serde_json::from_value(object)?;
            let types = object
                .types
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("object without apiVersion/kind"))?;
            let gvk = kube::core::GroupVersionKind::try_from(types)?;
            let (resource, capabilities) = discovery
                .resolve_gvk(&gvk)
                .ok_or_else(|| anyhow::anyhow!("{gvk:?} is not served"))?;
            let api: kube::Api<DynamicObject> =
                match (capabilities.scope, object.metadata.namespace.as_deref()) {
                    (kube::discovery::Scope::Namespaced, Some(ns)) => {
                        kube::Api::namespaced_with(client.clone(), ns, &resource)
                    }
                    (kube::discovery::Scope::Namespaced, None) => {
                        kube::Api::default_namespaced_with(client.clone(), &resource)
                    }
                    _ => kube::Api::all_with(client.clone(), &resource),
                };
            api.create(&PostParams::default(), &object).await?;
        }
    }
    Ok(())
}

/// A kube client from a kubeconfig file, as a Pod or a user would build it.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}
