//! What the speaker tells the cluster: one `ServiceL2Status` per Service this node announces
//! (node, Service, interfaces), kept in the pools' namespace as MetalLB does, and an Event on
//! the Service when this node starts announcing it. Writes happen on transitions only.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::ServiceL2Status;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

pub const NODE_LABEL: &str = "metallb.io/node";
pub const SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";
const FIELD_MANAGER: &str = "ferrolb-speaker";

/// A Service by namespace and name.
pub type ServiceKey = (String, String);

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

pub struct StatusWriter {
    client: Client,
    namespace: String,
    node: String,
    recorder: Recorder,
    /// What the objects in the API say now: Service → interfaces.
    written: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// The live nodes when dead nodes' objects were last cleaned up.
    cleaned_for: BTreeSet<String>,
}

impl StatusWriter {
    /// Reads the objects a previous run of this node's speaker left, so that only changes are
    /// written from here on.
    pub async fn new(client: Client, namespace: &str, node: &str) -> anyhow::Result<Self> {
        let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), namespace);
        let existing = api
            .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
            .await?;
        let mut written = BTreeMap::new();
        for object in existing.items {
            let labels = object.labels();
            let (Some(namespace), Some(name)) = (
                labels.get(SERVICE_NAMESPACE_LABEL),
                labels.get(SERVICE_NAME_LABEL),
            ) else {
                continue;
            };
            let interfaces = object
                .status
                .as_ref()
                .and_then(|s| s.interfaces.as_ref())
                .map(|list| list.iter().filter_map(|i| i.name.clone()).collect())
                .unwrap_or_default();
            written.insert((namespace.clone(), name.clone()), interfaces);
        }
        let reporter = Reporter {
            controller: "ferrolb-speaker".into(),
            instance: Some(node.to_string()),
        };
        Ok(StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.to_string(),
            node: node.to_string(),
            written,
            cleaned_for: BTreeSet::new(),
        })
    }

    /// Brings the objects in line with what this node announces. Returns false if a write
    /// failed (it is retried on the next call).
    pub async fn sync(
        &mut self,
        announced: &BTreeMap<ServiceKey, BTreeSet<String>>,
        services: &BTreeMap<ServiceKey, Service>,
        alive: &BTreeSet<String>,
    ) -> bool {
        let api: Api<ServiceL2Status> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut all_ok = true;
        let gone: Vec<ServiceKey> = self
            .written
            .keys()
            .filter(|k| !announced.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let name = object_name(&key, &self.node);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(service = %format!("{}/{}", key.0, key.1), "no longer announced from this node");
                    self.written.remove(&key);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.written.remove(&key);
                }
                Err(e) => {
                    warn!(object = %name, error = %e, "could not delete ServiceL2Status");
                    all_ok = false;
                }
            }
        }
        for (key, interfaces) in announced {
            if self.written.get(key) == Some(interfaces) {
                continue;
            }
            let name = object_name(key, &self.node);
            let new = !self.written.contains_key(key);
            if new {
                let object = json!({
                    "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
                    "metadata": {"name": name, "namespace": self.namespace, "labels": {
                        NODE_LABEL: self.node, SERVICE_NAME_LABEL: key.1, SERVICE_NAMESPACE_LABEL: key.0}},
                    "spec": {}
                });
                let created = match serde_json::from_value::<ServiceL2Status>(object) {
                    Ok(object) => api
                        .create(&PostParams::default(), &object)
                        .await
                        .map(|_| ()),
                    Err(e) => {
                        warn!(error = %e, "building a ServiceL2Status");
                        continue;
                    }
                };
                match created {
                    Ok(()) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => {
                        warn!(object = %name, error = %e, "could not create ServiceL2Status");
                        all_ok = false;
                        continue;
                    }
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
            self.written.insert(key.clone(), interfaces.clone());
            if new && let Some(service) = services.get(key) {
                self.announce(service).await;
            }
        }
        // A node that died cannot remove its own objects: the nodes announcing its Services
        // now do, whenever the set of live nodes changed.
        if all_ok && *alive != self.cleaned_for {
            // Only nodes seen alive and then lost: at start-up, peers not heard from yet
            // are not dead.
            let dead: BTreeSet<String> = self.cleaned_for.difference(alive).cloned().collect();
            if !dead.is_empty() {
                for key in announced.keys() {
                    self.remove_objects_of(&api, key, &dead).await;
                }
            }
            self.cleaned_for = alive.clone();
        }
        all_ok
    }

    async fn remove_objects_of(
        &self,
        api: &Api<ServiceL2Status>,
        key: &ServiceKey,
        dead: &BTreeSet<String>,
    ) {
        let selector = format!(
            "{SERVICE_NAMESPACE_LABEL}={},{SERVICE_NAME_LABEL}={}",
            key.0, key.1
        );
        let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
            return;
        };
        for object in list.items {
            let node = object.labels().get(NODE_LABEL).cloned().unwrap_or_default();
            if dead.contains(&node) {
                info!(object = %object.name_any(), %node, "removing the status of a node that is gone");
                let _ = api
                    .delete(&object.name_any(), &DeleteParams::default())
                    .await;
            }
        }
    }

    async fn announce(&self, service: &Service) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            uid: service.metadata.uid.clone(),
            ..Default::default()
        };
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
