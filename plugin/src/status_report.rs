//! `kubectl ferrolb status`: the pools' use, the speakers' health, each component's verdict on
//! the configuration, address conflicts and Services still waiting, with a list of what needs
//! attention (the command exits non-zero when it is not empty, for scripts).

use std::fmt;

use ferrolb_controller::service_condition;
use ferrolb_crds::ConfigurationResult;
use ferrolb_speaker::runtime::service_info;
use kube::ResourceExt;

use crate::cluster_view::{ClusterView, SpeakerState, event_time};

#[derive(Debug, Clone, PartialEq)]
pub struct PoolLine {
    pub name: String,
    pub used_ipv4: i64,
    pub free_ipv4: i64,
    pub used_ipv6: i64,
    pub free_ipv6: i64,
    /// The Valid condition: reason, and its message when the pool is not valid.
    pub valid: String,
    pub orphaned: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub pools: Vec<PoolLine>,
    pub speakers: Vec<SpeakerState>,
    /// Nodes with no speaker heartbeat at all.
    pub nodes_without_speaker: Vec<String>,
    /// Component, result, error summary.
    pub configuration: Vec<(String, String, String)>,
    /// Recent AddressConflict Events: when, Service, message.
    pub conflicts: Vec<(String, String, String)>,
    /// Services with no address: namespace/name, reason, message.
    pub waiting: Vec<(String, String, String)>,
    /// What needs attention, one line each.
    pub attention: Vec<String>,
}

impl StatusReport {
    pub fn needs_attention(&self) -> bool {
        !self.attention.is_empty()
    }
}

/// The report for `view`; `conflict_window` is how old an AddressConflict Event may be to
/// still count (by its time, against when the view was read).
pub fn status_report(view: &ClusterView, conflict_window: std::time::Duration) -> StatusReport {
    let mut attention = Vec::new();
    let pools: Vec<PoolLine> = view
        .pools
        .iter()
        .map(|pool| {
            let status = pool.status.clone().unwrap_or_default();
            let condition = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "Valid");
            let invalid = condition.is_some_and(|c| c.status == "False");
            let valid = match condition {
                None => "not reported yet".to_string(),
                Some(c) if invalid => format!("{}: {}", c.reason, c.message),
                Some(c) => c.reason.clone(),
            };
            let orphaned: Vec<String> = status
                .orphaned_addresses
                .unwrap_or_default()
                .iter()
                .map(|o| format!("{} ({})", o.address, o.services.join(", ")))
                .collect();
            let name = pool.name_any();
            if invalid {
                attention.push(format!("pool {name} is invalid: {valid}"));
            }
            if !orphaned.is_empty() {
                attention.push(format!(
                    "pool {name} no longer contains addresses Services hold: {}",
                    orphaned.join("; ")
                ));
            }
            PoolLine {
                name,
                used_ipv4: status.assigned_ipv4,
                free_ipv4: status.available_ipv4,
                used_ipv6: status.assigned_ipv6,
                free_ipv6: status.available_ipv6,
                valid,
                orphaned,
            }
        })
        .collect();
    // A deleted node's heartbeat stays behind (nothing owns it); only nodes that exist count.
    let nodes: std::collections::BTreeSet<String> =
        view.nodes.iter().map(ResourceExt::name_any).collect();
    let speakers: Vec<SpeakerState> = view
        .speakers()
        .into_values()
        .filter(|s| nodes.contains(&s.node))
        .collect();
    for speaker in &speakers {
        if let Some(trouble) = speaker.trouble() {
            attention.push(format!("speaker on {}: {trouble}", speaker.node));
        }
    }
    let nodes_without_speaker: Vec<String> = view
        .nodes
        .iter()
        .map(ResourceExt::name_any)
        .filter(|node| !speakers.iter().any(|s| &s.node == node))
        .collect();
    let configuration: Vec<(String, String, String)> = view
        .configuration_states
        .iter()
        .map(|state| {
            let status = state.status.clone().unwrap_or_default();
            let result = match status.result {
                Some(ConfigurationResult::Valid) => "Valid",
                Some(ConfigurationResult::Invalid) => "Invalid",
                Some(ConfigurationResult::Unknown) | None => "Unknown",
            };
            (
                state.name_any(),
                result.to_string(),
                status.error_summary.unwrap_or_default(),
            )
        })
        .collect();
    for (component, result, summary) in &configuration {
        if result == "Invalid" {
            attention.push(format!(
                "{component} ignores part of the configuration: {summary}"
            ));
        }
    }
    let now = view.read_at;
    let conflicts: Vec<(String, String, String)> = view
        .conflicts
        .iter()
        .filter_map(|event| {
            let when = event_time(event)?;
            let recent = now.is_none_or(|now| {
                now.duration_since(when)
                    .try_into()
                    .is_ok_and(|age: std::time::Duration| age <= conflict_window)
            });
            recent.then(|| {
                (
                    when.to_string(),
                    format!(
                        "{}/{}",
                        event.involved_object.namespace.clone().unwrap_or_default(),
                        event.involved_object.name.clone().unwrap_or_default()
                    ),
                    event.message.clone().unwrap_or_default(),
                )
            })
        })
        .collect();
    if !conflicts.is_empty() {
        attention.push(format!(
            "{} address conflict(s) recorded in the last {} min",
            conflicts.len(),
            conflict_window.as_secs() / 60
        ));
    }
    let waiting: Vec<(String, String, String)> = view
        .services
        .iter()
        .filter(|s| service_info(s, &[]).ips.is_empty())
        .map(|s| {
            let (reason, message) = service_condition::current(s).map_or_else(
                || {
                    (
                        "NoCondition".to_string(),
                        "not looked at by the controller".to_string(),
                    )
                },
                |c| (c.reason.clone(), c.message.clone()),
            );
            (
                format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                reason,
                message,
            )
        })
        .collect();
    if !waiting.is_empty() {
        attention.push(format!(
            "{} Service(s) have no address (kubectl ferrolb explain service NS/NAME says why)",
            waiting.len()
        ));
    }
    StatusReport {
        pools,
        speakers,
        nodes_without_speaker,
        configuration,
        conflicts,
        waiting,
        attention,
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Pools")?;
        if self.pools.is_empty() {
            writeln!(f, "  none")?;
        } else {
            writeln!(
                f,
                "  {:<24} {:>16} {:>22} {:<14} ORPHANED",
                "NAME", "IPv4 USED/FREE", "IPv6 USED/FREE", "VALID"
            )?;
            for pool in &self.pools {
                let orphaned = if pool.orphaned.is_empty() {
                    "-".to_string()
                } else {
                    pool.orphaned.join("; ")
                };
                writeln!(
                    f,
                    "  {:<24} {:>16} {:>22} {:<14} {orphaned}",
                    pool.name,
                    format!("{}/{}", pool.used_ipv4, pool.free_ipv4),
                    format!("{}/{}", pool.used_ipv6, pool.free_ipv6),
                    pool.valid,
                )?;
            }
        }
        writeln!(f, "\nSpeakers")?;
        if self.speakers.is_empty() {
            writeln!(f, "  none has a heartbeat")?;
        }
        for speaker in &self.speakers {
            let age = speaker
                .heartbeat_age
                .map_or("?".to_string(), |a| format!("{}s ago", a.as_secs()));
            let state = speaker
                .trouble()
                .unwrap_or_else(|| "announcing".to_string());
            writeln!(f, "  {:<24} heartbeat {:<10} {state}", speaker.node, age)?;
        }
        for node in &self.nodes_without_speaker {
            writeln!(f, "  {node:<24} no speaker heartbeat")?;
        }
        writeln!(f, "\nConfiguration (ConfigurationState)")?;
        if self.configuration.is_empty() {
            writeln!(f, "  none reported")?;
        }
        for (component, result, summary) in &self.configuration {
            writeln!(f, "  {component:<24} {result:<8} {summary}")?;
        }
        writeln!(f, "\nAddress conflicts")?;
        if self.conflicts.is_empty() {
            writeln!(f, "  none recently")?;
        }
        for (when, service, message) in &self.conflicts {
            writeln!(f, "  {when} {service}: {message}")?;
        }
        writeln!(f, "\nServices without an address")?;
        if self.waiting.is_empty() {
            writeln!(f, "  none")?;
        }
        for (service, reason, message) in &self.waiting {
            writeln!(f, "  {service}: {reason}: {message}")?;
        }
        if self.attention.is_empty() {
            writeln!(f, "\nAll well.")?;
        } else {
            writeln!(f, "\nNeeds attention:")?;
            for line in &self.attention {
                writeln!(f, "  - {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{Timestamp, ToSpan};
    use serde_json::json;
    use std::time::Duration;

    fn lease(
        node: &str,
        renewed: Timestamp,
        standing: &str,
    ) -> k8s_openapi::api::coordination::v1::Lease {
        serde_json::from_value(
            json!({"metadata": {"name": format!("ferrolb-speaker-{node}"),
                "annotations": {"ferrolb.io/standing": standing}},
            "spec": {"holderIdentity": node, "renewTime": renewed.to_string()}}),
        )
        .unwrap()
    }

    #[test]
    fn stepped_down_or_silent_speakers_orphans_and_recent_conflicts_need_attention() {
        let now = Timestamp::now();
        let announcing = r#"{"standing":"Announce"}"#;
        let node = |name: &str| -> k8s_openapi::api::core::v1::Node {
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
        };
        let healthy = ClusterView {
            read_at: Some(now),
            nodes: vec![node("node-a"), node("node-b")],
            // node-gone was deleted long ago: its heartbeat is not a speaker in trouble.
            heartbeats: vec![
                lease("node-a", now, announcing),
                lease("node-gone", now - 3.hours(), announcing),
            ],
            conflicts: vec![
                serde_json::from_value(json!({
                "metadata": {"name": "old", "creationTimestamp": (now - 2.hours()).to_string()},
                "involvedObject": {"name": "myapp", "namespace": "default"},
                "reason": "AddressConflict", "message": "long ago"}))
                .unwrap(),
            ],
            ..Default::default()
        };
        let report = status_report(&healthy, Duration::from_secs(600));
        assert!(!report.needs_attention(), "{report}");
        assert!(report.to_string().contains("All well."));

        let mut troubled = healthy.clone();
        troubled.heartbeats = vec![
            lease(
                "node-a",
                now,
                r#"{"standing":"Isolated","unheard":["node-b"]}"#,
            ),
            lease("node-b", now - 45.seconds(), announcing),
        ];
        troubled.pools = vec![
            serde_json::from_value(json!({"metadata": {"name": "shrunk"},
            "spec": {"addresses": ["192.0.2.0/30"]},
            "status": {"assignedIPv4": 0, "assignedIPv6": 0, "availableIPv4": 4, "availableIPv6": 0,
                "orphanedAddresses": [{"address": "192.0.2.9", "services": ["default/myapp"]}]}}))
            .unwrap(),
        ];
        troubled.conflicts.push(
            serde_json::from_value(json!({
                "metadata": {"name": "new", "creationTimestamp": (now - 1.minutes()).to_string()},
                "involvedObject": {"name": "myapp", "namespace": "default"},
                "reason": "AddressConflict", "message": "claimed by another MAC"}))
            .unwrap(),
        );
        let report = status_report(&troubled, Duration::from_secs(600));
        let attention = report.attention.join("\n");
        assert!(
            attention.contains("speaker on node-a: fenced: it cannot hear node-b"),
            "{attention}"
        );
        assert!(
            attention.contains("speaker on node-b: heartbeat not renewed for 45s"),
            "{attention}"
        );
        assert!(
            attention.contains("192.0.2.9 (default/myapp)"),
            "{attention}"
        );
        assert!(attention.contains("1 address conflict(s)"), "{attention}");
    }
}
