//! The controllers a cluster runs next to kube-apiserver that ferrolb's tests rely on: the
//! namespace controller (a deleted namespace's content is deleted, then the namespace) and the
//! garbage collector (dependents follow their owners, by background, foreground or orphan
//! propagation).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use super::handler::{
    FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Propagation, delete_internal, update_internal,
};
use super::resources::ResourceType;
use super::store::EventType;
use super::{ApiServer, Inner};

/// How often pending work is looked at again when no change wakes the controllers (an object's
/// own finalizer may go away without anything else changing).
const RESYNC: Duration = Duration::from_millis(200);

/// Runs the controllers until the server is gone.
pub(super) async fn run(inner: Weak<Inner>) {
    let mut changes = match inner.upgrade() {
        Some(inner) => inner.store.subscribe(),
        None => return,
    };
    let mut pending = true;
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let server = ApiServer { inner };
        if pending {
            pending = collect_garbage(&server) | finish_namespaces(&server);
        }
        drop(server);
        tokio::select! {
            received = changes.recv() => match received {
                Ok(change) => {
                    pending |= change.event_type == EventType::Deleted
                        || change.object["metadata"].get("deletionTimestamp").is_some();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => pending = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(RESYNC), if pending => {}
        }
    }
}

/// Every resource type with its own storage.
fn storages(server: &ApiServer) -> Vec<Arc<ResourceType>> {
    let mut seen = HashSet::new();
    server
        .registry()
        .all()
        .iter()
        .filter(|t| seen.insert(t.storage_key()))
        .cloned()
        .collect()
}

fn name_of(object: &Value) -> (String, String) {
    let text = |k: &str| object["metadata"][k].as_str().unwrap_or("").to_string();
    (text("namespace"), text("name"))
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

fn remove_finalizer(object: &mut Value, finalizer: &str) {
    if let Some(list) = object["metadata"]["finalizers"].as_array_mut() {
        list.retain(|f| f != finalizer);
    }
}

fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str())
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// One pass of the garbage collector; true while work is left.
fn collect_garbage(server: &ApiServer) -> bool {
    let types = storages(server);
    let mut everything: Vec<(Arc<ResourceType>, Value)> = Vec::new();
    for resource in &types {
        for object in server.store().list(&resource.storage_key(), None).0 {
            everything.push((resource.clone(), object));
        }
    }
    let live: HashMap<String, &Value> = everything
        .iter()
        .filter_map(|(_, o)| {
            o["metadata"]["uid"]
                .as_str()
                .map(|uid| (uid.to_string(), o))
        })
        .collect();
    let mut dependents_of: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, (_, object)) in everything.iter().enumerate() {
        for uid in owner_uids(object) {
            dependents_of.entry(uid).or_default().push(index);
        }
    }
    let mut pending = false;
    // Dependents whose owners are all gone, or being deleted in the foreground, go too.
    for (resource, object) in &everything {
        let owners = owner_uids(object);
        if owners.is_empty() || object["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let deleted_with = |uid: &String| {
            live.get(uid)
                .is_none_or(|owner| has_finalizer(owner, FOREGROUND_FINALIZER))
        };
        let (namespace, name) = name_of(object);
        if owners.iter().all(deleted_with) {
            let propagation = if owners.iter().any(|u| live.contains_key(u)) {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            let _ = delete_internal(server, resource.clone(), &namespace, &name, propagation);
            pending = true;
        } else if owners.iter().any(|uid| !live.contains_key(uid)) {
            // Some owners remain: only the references to the vanished ones are dropped.
            let _ = update_internal(server, resource.clone(), &namespace, &name, |o| {
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str().is_some_and(|u| live.contains_key(u)));
                }
            });
            pending = true;
        }
    }
    // Owners held by the collector's finalizers.
    for (resource, owner) in &everything {
        let uid = owner["metadata"]["uid"].as_str().unwrap_or("");
        let dependents = dependents_of.get(uid).cloned().unwrap_or_default();
        let (namespace, name) = name_of(owner);
        if has_finalizer(owner, ORPHAN_FINALIZER) {
            for index in &dependents {
                let (dependent_type, dependent) = &everything[*index];
                let (ns, n) = name_of(dependent);
                let _ = update_internal(server, dependent_type.clone(), &ns, &n, |o| {
                    if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != json!(uid));
                    }
                    let none_left = o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(Vec::is_empty);
                    if none_left && let Some(meta) = o["metadata"].as_object_mut() {
                        meta.remove("ownerReferences");
                    }
                });
            }
            let _ = update_internal(server, resource.clone(), &namespace, &name, |o| {
                remove_finalizer(o, ORPHAN_FINALIZER);
            });
            pending = true;
        } else if has_finalizer(owner, FOREGROUND_FINALIZER) {
            // The owner waits for the dependents that block it.
            let blocking = dependents.iter().any(|index| {
                let dependent = &everything[*index].1;
                dependent["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r["uid"] == json!(uid) && r["blockOwnerDeletion"] == json!(true)
                        })
                    })
            });
            if blocking {
                pending = true;
            } else {
                let _ = update_internal(server, resource.clone(), &namespace, &name, |o| {
                    remove_finalizer(o, FOREGROUND_FINALIZER);
                });
                pending = true;
            }
        }
    }
    pending
}

/// One pass of the namespace controller; true while a namespace is still terminating.
fn finish_namespaces(server: &ApiServer) -> bool {
    let Some(namespaces) = server.registry().find("", "v1", "namespaces") else {
        return false;
    };
    let terminating: Vec<String> = server
        .store()
        .list(&namespaces.storage_key(), None)
        .0
        .iter()
        .filter(|ns| ns["metadata"].get("deletionTimestamp").is_some())
        .map(|ns| name_of(ns).1)
        .collect();
    let types: Vec<Arc<ResourceType>> = storages(server)
        .into_iter()
        .filter(|t| t.namespaced)
        .collect();
    for namespace in &terminating {
        let mut left = 0;
        for resource in &types {
            for object in server
                .store()
                .list(&resource.storage_key(), Some(namespace))
                .0
            {
                left += 1;
                if object["metadata"].get("deletionTimestamp").is_none() {
                    let (_, name) = name_of(&object);
                    let _ = delete_internal(
                        server,
                        resource.clone(),
                        namespace,
                        &name,
                        Propagation::Background,
                    );
                }
            }
        }
        if left == 0 {
            let _ = update_internal(server, namespaces.clone(), "", namespace, |ns| {
                ns["spec"]["finalizers"] = json!([]);
            });
        }
    }
    !terminating.is_empty()
}
