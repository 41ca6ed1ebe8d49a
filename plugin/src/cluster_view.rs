//! What the plugin reads from the API server, once per command: the same objects the
//! controller and the speakers decide from, plus what they publish about themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_crds::{ConfigurationState, IPAddressPool, L2Advertisement, ServiceL2Status};
use ferrolb_speaker::heartbeat;
use ferrolb_speaker::node_interfaces::{self, INTERFACES_ANNOTATION, Interfaces};
use ferrolb_speaker::quorum::{STANDING_ANNOTATION, Standing};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// Everything `explain` and `status` look at.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// When it was read, by this machine's clock (heartbeat ages are measured against it).
    pub read_at: Option<Timestamp>,
    /// Services of type LoadBalancer, in every namespace.
    pub services: Vec<Service>,
    pub pools: Vec<IPAddressPool>,
    pub advertisements: Vec<L2Advertisement>,
    pub nodes: Vec<Node>,
    pub statuses: Vec<Arc<ServiceL2Status>>,
    pub heartbeats: Vec<Lease>,
    pub configuration_states: Vec<ConfigurationState>,
    /// AddressConflict Events the speakers recorded, newest last.
    pub conflicts: Vec<Event>,
}

/// A speaker, as its heartbeat Lease shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerState {
    pub node: String,
    /// How long ago it renewed its heartbeat, by the renewal time it wrote; `None`: unknown.
    pub heartbeat_age: Option<Duration>,
    pub standing: Option<Standing>,
    pub interfaces: Option<Interfaces>,
}

impl SpeakerState {
    /// Whether its heartbeat is recent enough for the other speakers to count it running.
    pub fn running(&self) -> bool {
        self.heartbeat_age
            .is_some_and(|age| age < heartbeat::EXPIRES_AFTER)
    }

    /// Whether it may answer for addresses now.
    pub fn announcing(&self) -> bool {
        self.running() && matches!(self.standing, None | Some(Standing::Announce))
    }

    /// What is wrong with it, in plain words, if anything.
    pub fn trouble(&self) -> Option<String> {
        if !self.running() {
            return Some(match self.heartbeat_age {
                Some(age) => format!(
                    "heartbeat not renewed for {}s: the speaker is down, or cut off from the API server (then it fenced itself)",
                    age.as_secs()
                ),
                None => "no heartbeat renewal time".into(),
            });
        }
        match &self.standing {
            Some(Standing::Isolated { unheard }) => Some(format!(
                "fenced: it cannot hear {} over gossip while the API server shows them running, so it stepped down",
                unheard.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(Standing::Fenced) => Some(
                "fenced: it hears a minority of the speakers and no API server, so it stepped down"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl ClusterView {
    /// Reads the view; `namespace` holds the pools, advertisements and speakers' objects.
    pub async fn read(client: &Client, namespace: &str) -> anyhow::Result<ClusterView> {
        let all = ListParams::default();
        let services = Api::<Service>::all(client.clone())
            .list(&all)
            .await?
            .items
            .into_iter()
            .filter(|s| {
                s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
            })
            .collect();
        let heartbeat_label = format!("{}={}", heartbeat::LABEL.0, heartbeat::LABEL.1);
        let mut conflicts = Api::<Event>::all(client.clone())
            .list(&ListParams::default().fields("reason=AddressConflict"))
            .await?
            .items;
        conflicts.sort_by_key(event_time);
        Ok(ClusterView {
            read_at: Some(Timestamp::now()),
            services,
            pools: Api::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
                .items,
            advertisements: Api::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
                .items,
            nodes: Api::all(client.clone()).list(&all).await?.items,
            statuses: Api::<ServiceL2Status>::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
            heartbeats: Api::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&heartbeat_label))
                .await?
                .items,
            configuration_states: Api::namespaced(client.clone(), namespace)
                .list(&all)
                .await?
                .items,
            conflicts,
        })
    }

    /// The EndpointSlices of one Service.
    pub async fn slices_of(
        client: &Client,
        namespace: &str,
        service: &str,
    ) -> anyhow::Result<Vec<Arc<EndpointSlice>>> {
        let selector = format!("kubernetes.io/service-name={service}");
        Ok(Api::<EndpointSlice>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Every speaker with a heartbeat, by node name.
    pub fn speakers(&self) -> BTreeMap<String, SpeakerState> {
        let now = self.read_at.unwrap_or_else(Timestamp::now);
        self.heartbeats
            .iter()
            .filter_map(|lease| {
                let spec = lease.spec.as_ref()?;
                let node = spec.holder_identity.clone()?;
                let heartbeat_age = spec.renew_time.as_ref().map(|t| {
                    let age = now.duration_since(t.0);
                    Duration::try_from(age).unwrap_or(Duration::ZERO)
                });
                let annotations = lease.annotations();
                let state = SpeakerState {
                    node: node.clone(),
                    heartbeat_age,
                    standing: annotations
                        .get(STANDING_ANNOTATION)
                        .and_then(|text| Standing::from_annotation(text)),
                    interfaces: annotations
                        .get(INTERFACES_ANNOTATION)
                        .and_then(|text| node_interfaces::decode(text)),
                };
                Some((node, state))
            })
            .collect()
    }

    pub fn find_service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name)
    }
}

/// When an Event happened: its eventTime (events.k8s.io), else lastTimestamp, else when it was
/// created.
pub fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speaker(age: Option<u64>, standing: Option<Standing>) -> SpeakerState {
        SpeakerState {
            node: "node-1".into(),
            heartbeat_age: age.map(Duration::from_secs),
            standing,
            interfaces: None,
        }
    }

    #[test]
    fn a_speaker_needs_a_fresh_heartbeat_and_to_stand_for_announcing() {
        assert!(speaker(Some(2), Some(Standing::Announce)).announcing());
        assert!(speaker(Some(2), None).announcing());
        let stale = speaker(Some(45), Some(Standing::Announce));
        assert!(!stale.announcing());
        assert!(stale.trouble().unwrap().contains("not renewed for 45s"));
        let isolated = speaker(
            Some(1),
            Some(Standing::Isolated {
                unheard: ["node-2".to_string()].into(),
            }),
        );
        assert!(!isolated.announcing());
        assert!(isolated.trouble().unwrap().starts_with("fenced"));
        assert_eq!(speaker(Some(1), Some(Standing::Announce)).trouble(), None);
    }
}
