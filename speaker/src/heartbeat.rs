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

use crate::node_interfaces::{self, INTERFACES_ANNOTATION, Interfaces};
use crate::quorum::{STANDING_ANNOTATION, Standing};

/// How often a speaker renews its heartbeat: one write per speaker every 5 s, as cheap for
/// the API server as kubelets' node leases are.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A heartbeat not seen changing for this long belongs to a speaker that stopped.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(20);
/// The label every heartbeat carries, and its value.
pub const LABEL: (&str, &str) = ("app.kubernetes.io/component", "speaker-heartbeat");
const NODE_LABEL: &str = "metallb.io/node";
const FIELD_MANAGER: &str = "ferrolb-speaker";
/// Set by a speaker stopping for a restart (SIGTERM on a node that is not going away): when
/// it stopped, by its own node's clock, which is also its successor's.
pub const RESTARTING_ANNOTATION: &str = "ferrolb.io/restarting-since";
/// How long, in seconds, the peers hold its addresses for it.
pub const RESTART_GRACE_ANNOTATION: &str = "ferrolb.io/restart-grace-seconds";
/// No speaker holds a peer's addresses longer than this, whatever the peer asked for.
pub const MAX_RESTART_GRACE: Duration = Duration::from_secs(60);

pub fn lease_name(node: &str) -> String {
    format!("ferrolb-speaker-{node}")
}

fn now_text() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The heartbeat as this speaker applies it, with the node's interfaces among `names`;
/// `annotations` are added to its metadata.
fn heartbeat_body(
    node: &str,
    names: &BTreeSet<String>,
    annotations: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(node), "labels": {LABEL.0: LABEL.1, NODE_LABEL: node}},
        "spec": {"holderIdentity": node, "renewTime": now_text(),
                 "leaseDurationSeconds": EXPIRES_AFTER.as_secs()},
    });
    let mut all = annotations.unwrap_or_else(|| json!({}));
    all[INTERFACES_ANNOTATION] = json!(node_interfaces::encode(&node_interfaces::local(names)));
    body["metadata"]["annotations"] = all;
    body
}

/// Renews this node's heartbeat until the process ends, with the speaker's standing (renewed
/// at once when it changes). The first renewal also clears a restart mark a predecessor left.
pub fn spawn_renewer(
    client: Client,
    namespace: &str,
    node: &str,
    names: BTreeSet<String>,
    mut standing: tokio::sync::watch::Receiver<Standing>,
) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let node = node.to_string();
    tokio::spawn(async move {
        let name = lease_name(&node);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        loop {
            let now = standing.borrow_and_update().to_annotation();
            let lease = heartbeat_body(&node, &names, Some(json!({STANDING_ANNOTATION: now})));
            let renewed = tokio::time::timeout(
                RENEW_EVERY,
                api.patch(&name, &params, &Patch::Apply(&lease)),
            )
            .await;
            match renewed {
                Ok(Ok(lease)) if lease.annotations().contains_key(RESTARTING_ANNOTATION) => {
                    // Applying without the mark removes it only where the API server tracks
                    // field ownership; a merge patch removes it everywhere.
                    let clear = json!({"metadata": {"annotations": {
                        RESTARTING_ANNOTATION: null, RESTART_GRACE_ANNOTATION: null}}});
                    let cleared = tokio::time::timeout(
                        RENEW_EVERY,
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&clear)),
                    )
                    .await;
                    if !matches!(cleared, Ok(Ok(_))) {
                        warn!("could not clear the restart mark on the speaker heartbeat");
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "could not renew the speaker heartbeat"),
                Err(_) => warn!("renewing the speaker heartbeat timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                // A closed channel (the speaker is stopping) leaves the plain period.
                Ok(()) = standing.changed() => {}
            }
        }
    });
}

/// Marks this node's heartbeat as restarting: the peers hold its addresses for `grace`
/// instead of taking them over, and its successor takes them back.
pub async fn mark_restarting(
    client: Client,
    namespace: &str,
    node: &str,
    names: &BTreeSet<String>,
    grace: Duration,
) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let lease = heartbeat_body(
        node,
        names,
        Some(json!({RESTARTING_ANNOTATION: now_text(),
               RESTART_GRACE_ANNOTATION: grace.as_secs().to_string()})),
    );
    let params = PatchParams::apply(FIELD_MANAGER).force();
    tokio::time::timeout(
        Duration::from_secs(2),
        api.patch(&lease_name(node), &params, &Patch::Apply(&lease)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the API server did not answer in time"))??;
    Ok(())
}

/// The grace a heartbeat's restart mark asks for, if it has one (bounded by
/// `MAX_RESTART_GRACE`).
fn restart_grace_of(lease: &Lease) -> Option<Duration> {
    lease.annotations().get(RESTARTING_ANNOTATION)?;
    let seconds = lease
        .annotations()
        .get(RESTART_GRACE_ANNOTATION)
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0);
    Some(Duration::from_secs(seconds).min(MAX_RESTART_GRACE))
}

/// Whether this node's previous speaker stopped for a restart less than its grace ago (read
/// before this speaker renews the heartbeat, which clears the mark).
pub async fn restarted_within_grace(client: Client, namespace: &str, node: &str) -> bool {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Ok(Ok(Some(lease))) =
        tokio::time::timeout(Duration::from_secs(2), api.get_opt(&lease_name(node))).await
    else {
        return false;
    };
    let Some(grace) = restart_grace_of(&lease) else {
        return false;
    };
    let since = lease
        .annotations()
        .get(RESTARTING_ANNOTATION)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_some_and(|since| {
        let elapsed = jiff::Timestamp::now().duration_since(since);
        elapsed >= jiff::SignedDuration::ZERO
            && elapsed < jiff::SignedDuration::try_from(grace).unwrap_or_default()
    })
}

/// The speakers whose heartbeats this speaker has seen change recently.
#[derive(Debug, Default)]
pub struct Heartbeats {
    /// Node → the heartbeat's last renewTime, and when this speaker saw it change.
    seen: BTreeMap<String, (String, Instant)>,
    /// The running set as of the last time the API server answered.
    last_running: BTreeSet<String>,
    /// Node → its restart mark, when this speaker saw it appear, and the grace it asks for.
    restarting: BTreeMap<String, (String, Instant, Duration)>,
    /// Node → the interfaces it published (nodes that published none are not here).
    interfaces: BTreeMap<String, Interfaces>,
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
            match (
                lease.annotations().get(RESTARTING_ANNOTATION),
                restart_grace_of(lease),
            ) {
                (Some(mark), Some(grace)) => match self.restarting.get(&node) {
                    Some((seen, _, _)) if seen == mark => {}
                    _ => {
                        self.restarting
                            .insert(node.clone(), (mark.clone(), now, grace));
                    }
                },
                _ => {
                    self.restarting.remove(&node);
                }
            }
            match lease
                .annotations()
                .get(INTERFACES_ANNOTATION)
                .and_then(|text| node_interfaces::decode(text))
            {
                Some(interfaces) => {
                    self.interfaces.insert(node.clone(), interfaces);
                }
                None => {
                    self.interfaces.remove(&node);
                }
            }
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

    /// The interfaces each node's speaker published.
    pub fn interfaces(&self) -> &BTreeMap<String, Interfaces> {
        &self.interfaces
    }

    /// The speakers that stopped for a restart within the grace they asked for: their peers
    /// hold their addresses for them meanwhile.
    pub fn restarting(&self, now: Instant) -> BTreeSet<String> {
        self.restarting
            .iter()
            .filter(|(_, (_, seen, grace))| now.saturating_duration_since(*seen) < *grace)
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// The speakers whose heartbeat changed within `EXPIRES_AFTER`, except those that said
    /// they stopped to restart: they are away, not cut off. While the API server does
    /// not answer, nothing is renewed in this speaker's view: the set seen when it last
    /// answered stands.
    pub fn running(&mut self, now: Instant, api_reachable: bool) -> BTreeSet<String> {
        if !api_reachable {
            return self.last_running.clone();
        }
        let restarting = self.restarting(now);
        self.last_running = self
            .seen
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) < EXPIRES_AFTER)
            .map(|(node, _)| node.clone())
            .filter(|node| !restarting.contains(node))
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
    fn a_restarting_speaker_is_held_for_its_grace_and_not_counted_as_running() {
        let mut heartbeats = Heartbeats::default();
        let start = Instant::now();
        let renewed = "2026-01-01T00:00:00.000000Z";
        let mut marked = lease("b", renewed);
        Arc::make_mut(&mut marked).metadata.annotations = Some(
            [
                (RESTARTING_ANNOTATION.to_string(), renewed.to_string()),
                (RESTART_GRACE_ANNOTATION.to_string(), "10".to_string()),
            ]
            .into(),
        );
        heartbeats.observe(&[lease("a", renewed), marked.clone()], start);
        assert_eq!(
            heartbeats.restarting(start),
            BTreeSet::from(["b".to_string()])
        );
        assert_eq!(
            heartbeats.running(start, true),
            BTreeSet::from(["a".to_string()])
        );
        // The same mark seen again does not extend the grace.
        let later = start + Duration::from_secs(9);
        heartbeats.observe(&[lease("a", renewed), marked], later);
        assert!(
            heartbeats
                .restarting(start + Duration::from_secs(10))
                .is_empty()
        );
        // Its successor clears the mark: running again.
        heartbeats.observe(
            &[
                lease("a", renewed),
                lease("b", "2026-01-01T00:00:11.000000Z"),
            ],
            start + Duration::from_secs(11),
        );
        assert!(
            heartbeats
                .running(start + Duration::from_secs(11), true)
                .contains("b")
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
