//! What the speaker tells the cluster: one `ServiceL2Status` per Service this node announces
//! (node, Service, interfaces, and in an annotation the addresses it answers for, which the
//! speakers read as the current owners), kept in the pools' namespace as MetalLB does, and an
//! Event on the Service when this node starts announcing it.
//!
//! Each sync reconciles what the API server holds (a cache of the objects) with what this node
//! announces: a missing object is created (with its `nodeAssigned` Event), a wrong one
//! rewritten, a stale one deleted. Nothing is remembered about earlier writes, so a write that
//! was lost, or undone by another node while this one was cut off, is repaired on the next
//! sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::ServiceL2Status;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::watch_changes::Touched;

pub const NODE_LABEL: &str = "metallb.io/node";
pub const SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";
const FIELD_MANAGER: &str = "ferrolb-speaker";

/// The addresses a node answers for, on its ServiceL2Status objects: what every speaker reads
/// as the current owners (the election keeps them).
pub const ADDRESSES_ANNOTATION: &str = "ferrolb.io/addresses";

/// A Service by namespace and name.
pub type ServiceKey = (String, String);

/// What this node announces for one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    pub interfaces: BTreeSet<String>,
    pub addresses: BTreeSet<IpAddr>,
}

fn addresses_text(addresses: &BTreeSet<IpAddr>) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The current owner of each address, from the ServiceL2Status objects' address annotations.
/// When two objects claim one address (a handoff not yet cleaned up), the newer object wins,
/// then the lower node name: every speaker reads the same objects and agrees.
/// `counts` says whether a node's claim on an address counts at all.
pub fn current_owners(
    objects: &[std::sync::Arc<ServiceL2Status>],
    counts: impl Fn(&IpAddr, &str) -> bool,
) -> BTreeMap<IpAddr, String> {
    let mut claims: BTreeMap<IpAddr, (Option<String>, std::cmp::Reverse<String>)> = BTreeMap::new();
    for object in objects {
        let Some(node) = object.labels().get(NODE_LABEL) else {
            continue;
        };
        let created = object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string());
        let Some(addresses) = object.annotations().get(ADDRESSES_ANNOTATION) else {
            continue;
        };
        for ip in addresses
            .split(',')
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .filter(|ip| counts(ip, node))
        {
            let claim = (created.clone(), std::cmp::Reverse(node.clone()));
            match claims.get(&ip) {
                Some(existing) if *existing >= claim => {}
                _ => {
                    claims.insert(ip, claim);
                }
            }
        }
    }
    claims
        .into_iter()
        .map(|(ip, (_, std::cmp::Reverse(node)))| (ip, node))
        .collect()
}

/// The name of the status object for a Service announced from a node. Deterministic, so a
/// restarted speaker finds its own objects; names, namespaces and node names are all DNS
/// subdomains, so joining them with dots is one too.
pub fn object_name(service: &ServiceKey, node: &str) -> String {
    let name = format!("l2-{}.{}.{}", service.0, service.1, node);
    if name.len() <= 253 {
        return name;
    }
    let hash = crate::election::score(&name, std::net::IpAddr::from([0u8; 4]));
    format!("l2-{hash:016x}")
}

/// The reference an Event about `service` names it by.
pub fn service_reference(service: &Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: service.metadata.name.clone(),
        namespace: service.metadata.namespace.clone(),
        uid: service.metadata.uid.clone(),
        ..Default::default()
    }
}

pub struct StatusWriter {
    client: Client,
    namespace: String,
    node: String,
    recorder: Recorder,
    /// Per Service, the announce generation its last nodeAssigned Event told.
    events: BTreeMap<ServiceKey, u64>,
}

/// The Service an object reports on, from its labels.
fn service_of(object: &ServiceL2Status) -> Option<ServiceKey> {
    let labels = object.labels();
    Some((
        labels.get(SERVICE_NAMESPACE_LABEL)?.clone(),
        labels.get(SERVICE_NAME_LABEL)?.clone(),
    ))
}

fn interfaces_of(object: &ServiceL2Status) -> BTreeSet<String> {
    object
        .status
        .as_ref()
        .and_then(|s| s.interfaces.as_ref())
        .map(|list| list.iter().filter_map(|i| i.name.clone()).collect())
        .unwrap_or_default()
}

/// Whether an object's status says what this node announces for its Service.
fn reports(
    object: &ServiceL2Status,
    node: &str,
    key: &ServiceKey,
    interfaces: &BTreeSet<String>,
) -> bool {
    object.status.as_ref().is_some_and(|s| {
        s.node.as_deref() == Some(node)
            && s.service_namespace.as_deref() == Some(key.0.as_str())
            && s.service_name.as_deref() == Some(key.1.as_str())
    }) && interfaces_of(object) == *interfaces
}

/// Whether an object records exactly these addresses (its Event was recorded for them).
fn records_addresses(object: &ServiceL2Status, addresses: &BTreeSet<IpAddr>) -> bool {
    object.annotations().get(ADDRESSES_ANNOTATION) == Some(&addresses_text(addresses))
}

impl StatusWriter {
    pub fn new(client: Client, namespace: &str, node: &str) -> Self {
        let reporter = Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(node.to_string()),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            events: BTreeMap::new(),
            client,
            namespace: namespace.to_string(),
            node: node.to_string(),
        }
    }

    /// Brings the objects in `current` (from the cache of every ServiceL2Status) in line with
    /// what this node announces, and removes the objects of nodes gossip finds dead for the
    /// Services it announces (a dead node cannot remove its own). `scope` names the Services
    /// to look at (`current` holds at least all their objects), or all. Returns false if a
    /// write failed; the next sync retries it.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &mut self,
        announced: &imbl::OrdMap<ServiceKey, Announcement>,
        services: &imbl::OrdMap<ServiceKey, Arc<Service>>,
        alive: &BTreeSet<String>,
        current: &[std::sync::Arc<ServiceL2Status>],
        scope: &Touched<ServiceKey>,
        generations: &imbl::OrdMap<ServiceKey, u64>,
        still_announced: &(dyn Fn(&ServiceKey) -> bool + Send + Sync),
    ) -> bool {
        let api: Api<ServiceL2Status> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut all_ok = true;
        let mut mine: BTreeMap<ServiceKey, &ServiceL2Status> = BTreeMap::new();
        for object in current {
            let node = object.labels().get(NODE_LABEL).cloned().unwrap_or_default();
            let Some(key) = service_of(object).filter(|key| scope.contains(key)) else {
                continue;
            };
            if node == self.node {
                mine.insert(key, object);
            } else if announced.contains_key(&key) && !alive.contains(&node) {
                info!(object = %object.name_any(), %node, "removing the status of a node that is gone");
                all_ok &= self.delete(&api, &object.name_any()).await;
            }
        }
        for (key, object) in &mine {
            if !announced.contains_key(key) {
                info!(service = %format!("{}/{}", key.0, key.1), "no longer announced from this node");
                all_ok &= self.delete(&api, &object.name_any()).await;
            }
        }
        let to_look_at: Vec<(&ServiceKey, &Announcement)> = match scope {
            Touched::Everything => announced.iter().collect(),
            Touched::Some(keys) => keys
                .iter()
                .filter_map(|key| announced.get_key_value(key))
                .collect(),
        };
        for (key, announcement) in to_look_at {
            let interfaces = &announcement.interfaces;
            let existing = mine.get(key);
            let recorded = existing.is_some_and(|o| records_addresses(o, &announcement.addresses));
            // This node started answering the Service again since its last nodeAssigned
            // Event (another node may have announced it in between): the Event is due even
            // when the object never changed.
            let generation = generations.get(key).copied();
            let event_due = generation.is_some() && self.events.get(key) != generation.as_ref();
            if recorded
                && !event_due
                && existing.is_some_and(|o| reports(o, &self.node, key, interfaces))
            {
                continue;
            }
            let name = object_name(key, &self.node);
            // The cache may lag behind a creation of this node's own: only an object this
            // call created gets the nodeAssigned Event.
            let created = if existing.is_none() {
                match self.create(&api, &name, key, &announcement.addresses).await {
                    Some(created) => created,
                    None => {
                        all_ok = false;
                        continue;
                    }
                }
            } else {
                false
            };
            // Addresses this node answers now and its object did not record: it took them
            // over, which the nodeAssigned Event tells too.
            let gained = existing.is_some_and(|o| {
                let before: BTreeSet<IpAddr> = o
                    .annotations()
                    .get(ADDRESSES_ANNOTATION)
                    .map(|list| list.split(',').filter_map(|a| a.parse().ok()).collect())
                    .unwrap_or_default();
                !announcement.addresses.is_subset(&before)
            });
            if existing.is_some() && !recorded {
                let annotation = json!({"metadata": {"annotations": {
                    ADDRESSES_ANNOTATION: addresses_text(&announcement.addresses)}}});
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                if let Err(e) = api.patch(&name, &params, &Patch::Merge(&annotation)).await {
                    warn!(object = %name, error = %e, "could not record the addresses on ServiceL2Status");
                    all_ok = false;
                    continue;
                }
            }
            let status = json!({"status": {
                "node": self.node, "serviceName": key.1, "serviceNamespace": key.0,
                "interfaces": interfaces.iter().map(|i| json!({"name": i})).collect::<Vec<_>>()}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            if let Err(e) = api
                .patch_status(&name, &params, &Patch::Merge(&status))
                .await
            {
                warn!(object = %name, error = %e, "could not write ServiceL2Status status");
                all_ok = false;
                continue;
            }
            if (created || gained || event_due)
                && still_announced(key)
                && let Some(service) = services.get(key)
            {
                self.announce(service).await;
            }
            if let Some(generation) = generation {
                self.events.insert(key.clone(), generation);
            }
        }
        match scope {
            Touched::Everything => self.events.retain(|key, _| announced.contains_key(key)),
            Touched::Some(keys) => {
                for key in keys.iter().filter(|key| !announced.contains_key(*key)) {
                    self.events.remove(key);
                }
            }
        }
        all_ok
    }

    /// Creates this node's object for `key`: `Some(true)` if created, `Some(false)` if it was
    /// already there, `None` if the API server refused.
    async fn create(
        &self,
        api: &Api<ServiceL2Status>,
        name: &str,
        key: &ServiceKey,
        addresses: &BTreeSet<IpAddr>,
    ) -> Option<bool> {
        let object = json!({
            "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {
                NODE_LABEL: self.node, SERVICE_NAME_LABEL: key.1, SERVICE_NAMESPACE_LABEL: key.0},
                "annotations": {ADDRESSES_ANNOTATION: addresses_text(addresses)}},
            "spec": {}
        });
        let object = match serde_json::from_value::<ServiceL2Status>(object) {
            Ok(object) => object,
            Err(e) => {
                warn!(error = %e, "building a ServiceL2Status");
                return None;
            }
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Some(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Some(false),
            Err(e) => {
                warn!(object = %name, error = %e, "could not create ServiceL2Status");
                None
            }
        }
    }

    async fn delete(&self, api: &Api<ServiceL2Status>, name: &str) -> bool {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(e) => {
                warn!(object = %name, error = %e, "could not delete ServiceL2Status");
                false
            }
        }
    }

    async fn announce(&self, service: &Service) {
        let reference = service_reference(service);
        let event = Event {
            type_: EventType::Normal,
            reason: "nodeAssigned".into(),
            note: Some(format!(
                "announcing from node \"{}\" with protocol \"layer2\"",
                self.node
            )),
            action: "Announce".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            warn!(error = %e, "could not record the nodeAssigned Event");
        }
    }
}
