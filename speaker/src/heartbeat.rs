//! Each speaker's heartbeat in the API server: a Lease named `ferrolb-speaker-NODE` in the
//! speakers' namespace, renewed every `RENEW_EVERY`. It tells the other speakers, when gossip
//! cannot reach this one, whether it is still running (see `quorum`).
//!
//! Freshness is judged by when this speaker saw a heartbeat change, on its own clock, not by
//! the `renewTime` the other node wrote: node clocks need not agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tracing::warn;

/// How often a speaker renews its heartbeat: one write per speaker every 5 s, as cheap for
/// the API server as kubelets' node leases are.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A heartbeat not seen changing for this long belongs to a speaker that stopped.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(20);
/// The label every heartbeat carries, and its value.
pub const LABEL: (&str, &str) = ("app.kubernetes.io/component", "speaker-heartbeat");
const NODE_LABEL: &str = "metallb.io/node";
const FIELD_MANAGER: &str = "ferrolb-speaker";

pub fn lease_name(node: &str) -> String {
    format!("ferrolb-speaker-{node}")
}

/// Renews this node's heartbeat until the process ends.
pub fn spawn_renewer(client: Client, namespace: &str, node: &str) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let node = node.to_string();
    tokio::spawn(async move {
        let name = lease_name(&node);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        loop {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "labels": {LABEL.0: LABEL.1, NODE_LABEL: node}},
                "spec": {"holderIdentity": node, "renewTime": now,
                         "leaseDurationSeconds": EXPIRES_AFTER.as_secs()},
            });
            let renewed = tokio::time::timeout(
                RENEW_EVERY,
                api.patch(&name, &params, &Patch::Apply(&lease)),
            )
            .await;
            match renewed {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "could not renew the speaker heartbeat"),
                Err(_) => warn!("renewing the speaker heartbeat timed out"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    });
}

/// The speakers whose heartbeats this speaker has seen change recently.
#[derive(Debug, Default)]
pub struct Heartbeats {
    /// Node → the heartbeat's last renewTime, and when this speaker saw it change.
    seen: BTreeMap<String, (String, Instant)>,
    /// The running set as of the last time the API server answered.
    last_running: BTreeSet<String>,
}

impl Heartbeats {
    /// Takes in the heartbeat Leases as the cache holds them now.
    pub fn observe(&mut self, leases: &[Arc<Lease>], now: Instant) {
        for lease in leases {
            if lease.labels().get(LABEL.0).map(String::as_str) != Some(LABEL.1) {
                continue;
            }
            let Some(node) = lease.labels().get(NODE_LABEL).cloned() else {
                continue;
            };
            let renewed = lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            match self.seen.get(&node) {
                Some((last, _)) if *last == renewed => {}
                _ => {
                    self.seen.insert(node, (renewed, now));
                }
            }
        }
    }

    /// The speakers whose heartbeat changed within `EXPIRES_AFTER`. While the API server does
    /// not answer, nothing is renewed in this speaker's view: the set seen when it last
    /// answered stands.
    pub fn running(&mut self, now: Instant, api_reachable: bool) -> BTreeSet<String> {
        if !api_reachable {
            return self.last_running.clone();
        }
        self.last_running = self
            .seen
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < EXPIRES_AFTER)
            .map(|(node, _)| node.clone())
            .collect();
        self.last_running.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(node: &str, renewed: &str) -> Arc<Lease> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": lease_name(node), "labels": {LABEL.0: LABEL.1, NODE_LABEL: node}},
                "spec": {"holderIdentity": node, "renewTime": renewed},
            }))
            .unwrap_or_default(),
        )
    }

    #[test]
    fn a_heartbeat_that_stops_changing_expires_on_this_speakers_clock() {
        let mut heartbeats = Heartbeats::default();
        let start = Instant::now();
        heartbeats.observe(
            &[
                lease("a", "2026-01-01T00:00:00.000000Z"),
                lease("b", "2000-01-01T00:00:00.000000Z"),
            ],
            start,
        );
        assert_eq!(
            heartbeats.running(start, true).len(),
            2,
            "b's old renewTime does not matter"
        );
        let later = start + EXPIRES_AFTER - Duration::from_secs(1);
        heartbeats.observe(
            &[
                lease("a", "2026-01-01T00:00:19.000000Z"),
                lease("b", "2000-01-01T00:00:00.000000Z"),
            ],
            later,
        );
        let expired = start + EXPIRES_AFTER + Duration::from_secs(1);
        let running = heartbeats.running(expired, true);
        assert!(
            running.contains("a") && !running.contains("b"),
            "{running:?}"
        );
    }

    #[test]
    fn without_the_api_server_the_last_view_stands() {
        let mut heartbeats = Heartbeats::default();
        let start = Instant::now();
        let renewed = "2026-01-01T00:00:00.000000Z";
        heartbeats.observe(&[lease("a", renewed), lease("b", renewed)], start);
        assert_eq!(heartbeats.running(start, true).len(), 2);
        let much_later = start + EXPIRES_AFTER * 10;
        assert_eq!(heartbeats.running(much_later, false).len(), 2);
    }
}
