//! `kubectl ferrolb explain service NS/NAME`: where a Service's addresses came from, or why it
//! has none, and for each address who answers, who else could and in which order, and why the
//! other nodes cannot.
//!
//! The answers come from the speakers' own decision functions (`announce_policy`,
//! `node_interfaces`, `election`, `runtime::elect_owner`) run on what the API server holds,
//! with the speakers' heartbeats standing in for gossip: a speaker counts as alive when its
//! heartbeat is fresh and it has not stepped down.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_controller::service_condition;
use ferrolb_controller::service_request::{ANNOTATION_PREFIX, LEGACY_ANNOTATION_PREFIX};
use ferrolb_speaker::announce_policy::{covering, plan_address, pool_of};
use ferrolb_speaker::election::{Candidate, ranking, score};
use ferrolb_speaker::node_interfaces::{Interfaces, unable_to_announce};
use ferrolb_speaker::owner_claims::OwnerClaims;
use ferrolb_speaker::runtime::{elect_owner, node_info, pool_info, service_info};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::cluster_view::{ClusterView, SpeakerState};

/// Why a Service has no address: the controller's condition, and the same in plain words.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
    pub plain: String,
}

/// A candidate for an address, in the election's order.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedCandidate {
    pub node: String,
    pub preference: u32,
    pub score: u64,
    /// Why its speaker cannot take the address now, if it cannot.
    pub unavailable: Option<String>,
}

/// One address of the Service.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressExplanation {
    pub ip: IpAddr,
    pub pool: Option<String>,
    /// The L2Advertisements that cover it for this Service.
    pub advertisements: Vec<String>,
    /// Who answers, as the ServiceL2Status objects say.
    pub owner: Option<String>,
    /// Who the election gives among the speakers alive now (the owner, once settled).
    pub elected: Option<String>,
    /// Who would answer if the owner went away.
    pub next_owner: Option<String>,
    pub candidates: Vec<RankedCandidate>,
    /// Nodes that are not candidates, and why.
    pub not_candidates: Vec<(String, String)>,
    /// Why nobody announces it, when nobody does.
    pub unannounced: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub service: String,
    pub traffic_policy: String,
    pub endpoint_nodes: Vec<String>,
    pub has_serving_endpoint: bool,
    /// MetalLB annotations set on the Service.
    pub annotations: BTreeMap<String, String>,
    pub refusal: Option<Refusal>,
    pub addresses: Vec<AddressExplanation>,
}

/// Explains `service` from `view`; `slices` are its EndpointSlices.
pub fn explain_service(
    view: &ClusterView,
    service: &Service,
    slices: &[Arc<EndpointSlice>],
) -> Explanation {
    let info = service_info(service, slices);
    let annotations: BTreeMap<String, String> = service
        .annotations()
        .iter()
        .filter(|(k, _)| {
            k.starts_with(ANNOTATION_PREFIX) || k.starts_with(LEGACY_ANNOTATION_PREFIX)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let refusal = if info.ips.is_empty() {
        Some(refusal_of(service, &annotations))
    } else {
        None
    };
    let pools: Vec<_> = view.pools.iter().filter_map(pool_info).collect();
    let nodes: Vec<_> = view.nodes.iter().map(node_info).collect();
    let speakers = view.speakers();
    let alive: BTreeSet<String> = speakers
        .values()
        .filter(|s| s.announcing())
        .map(|s| s.node.clone())
        .collect();
    let known: BTreeMap<String, Interfaces> = speakers
        .values()
        .filter_map(|s| Some((s.node.clone(), s.interfaces.clone()?)))
        .collect();
    let mut claims = OwnerClaims::default();
    claims.rebuild(view.statuses.iter().map(|s| s.as_ref()));
    // Who could announce were there a serving endpoint; whether there is one is said apart.
    let mut would_serve = info.clone();
    would_serve.has_serving_endpoint = true;
    let no_one_held = BTreeSet::new();
    let addresses = info
        .ips
        .iter()
        .map(|ip| {
            let owner = claims.owner(ip, |_| true).map(str::to_string);
            let Some(pool) = pool_of(*ip, &info, &pools) else {
                return AddressExplanation {
                    ip: *ip,
                    pool: None,
                    advertisements: Vec::new(),
                    owner,
                    elected: None,
                    next_owner: None,
                    candidates: Vec::new(),
                    not_candidates: Vec::new(),
                    unannounced: Some(
                        "it is in no valid IPAddressPool (the pool shrank or is invalid), so no speaker announces it"
                            .into(),
                    ),
                };
            };
            let covering = covering(&view.advertisements, pool, &would_serve);
            let mut not_candidates = Vec::new();
            let plan = plan_address(*ip, &would_serve, &covering, &nodes, |node, why| {
                not_candidates.push((node.name.clone(), why.to_string()));
            });
            let unable = unable_to_announce(*ip, &plan.candidates, &plan.interfaces, &known);
            for (node, why) in &unable {
                not_candidates.push((node.clone(), why.to_string()));
            }
            let able: Vec<Candidate> = plan
                .candidates
                .iter()
                .filter(|(node, _)| !unable.contains_key(*node))
                .map(|(node, preference)| Candidate {
                    node,
                    preference: *preference,
                })
                .collect();
            let candidates = ranking(*ip, able)
                .into_iter()
                .map(|c| RankedCandidate {
                    node: c.node.to_string(),
                    preference: c.preference,
                    score: score(c.node, *ip),
                    unavailable: speaker_trouble(speakers.get(c.node)),
                })
                .collect();
            let elected = info
                .has_serving_endpoint
                .then(|| elect_owner(&plan, owner.as_deref(), &alive, &no_one_held, &known))
                .flatten()
                .map(str::to_string);
            let current = owner.clone().or_else(|| elected.clone());
            let next_owner = current.as_ref().and_then(|gone| {
                let mut others = alive.clone();
                others.remove(gone);
                elect_owner(&plan, None, &others, &no_one_held, &known).map(str::to_string)
            });
            let unannounced = if !info.has_serving_endpoint {
                Some("the Service has no serving endpoint; an address is announced only while one serves it (as MetalLB does)".into())
            } else if covering.is_empty() {
                Some(format!(
                    "no L2Advertisement covers pool {} for this Service (ipAddressPools, ipAddressPoolSelectors, serviceSelectors)",
                    pool.name
                ))
            } else if elected.is_none() {
                Some("no candidate node has a speaker that can announce now".into())
            } else {
                None
            };
            AddressExplanation {
                ip: *ip,
                pool: Some(pool.name.clone()),
                advertisements: covering.iter().map(|a| a.name_any()).collect(),
                owner,
                elected,
                next_owner,
                candidates,
                not_candidates,
                unannounced,
            }
        })
        .collect();
    Explanation {
        service: format!("{}/{}", info.namespace, info.name),
        traffic_policy: if info.local_traffic_policy {
            "Local".into()
        } else {
            "Cluster".into()
        },
        endpoint_nodes: info.endpoint_nodes.iter().cloned().collect(),
        has_serving_endpoint: info.has_serving_endpoint,
        annotations,
        refusal,
        addresses,
    }
}

fn speaker_trouble(speaker: Option<&SpeakerState>) -> Option<String> {
    match speaker {
        None => Some("no speaker heartbeat from this node".into()),
        Some(s) => s.trouble(),
    }
}

/// The controller's reason for giving the Service no address, in plain words.
fn refusal_of(service: &Service, annotations: &BTreeMap<String, String>) -> Refusal {
    let Some(condition) = service_condition::current(service) else {
        return Refusal {
            reason: "NoCondition".into(),
            message: String::new(),
            plain: "the controller has not looked at this Service yet: check that a controller replica runs and leads (kubectl ferrolb status), and that the Service's loadBalancerClass is one ferrolb handles".into(),
        };
    };
    let annotation = |name: &str| {
        [ANNOTATION_PREFIX, LEGACY_ANNOTATION_PREFIX]
            .iter()
            .find_map(|prefix| {
                let key = format!("{prefix}{name}");
                annotations.get(&key).map(|v| format!("{key}: {v}"))
            })
    };
    let asked = |name: &str| {
        annotation(name)
            .map(|a| format!(" (annotation {a})"))
            .unwrap_or_default()
    };
    let plain = match condition.reason.as_str() {
        "PoolExhausted" => format!(
            "every address this Service may take is already in use: the pools offered to it are exhausted{}. Free an address (delete a Service, or let Services share one with metallb.io/allow-shared-ip) or add addresses to a pool",
            asked("address-pool")
        ),
        "NoPool" => "no pool is offered to this Service: no pool has autoAssign, and no pool's serviceAllocation selects its namespace or labels".into(),
        "PoolNotFound" => format!(
            "it asks for a pool that does not exist or is invalid{}",
            asked("address-pool")
        ),
        "NotInRequestedPool" | "NotInAnyPool" => format!(
            "it asks for an address that no pool it may use contains{}{}",
            asked("loadBalancerIPs"),
            asked("address-pool")
        ),
        "AvoidedAddress" => format!(
            "it asks for an address ending in .0 or .255 from a pool with avoidBuggyIPs{}",
            asked("loadBalancerIPs")
        ),
        "SharingConflict" => format!(
            "it asks for an address another Service holds, and the two cannot share it{}{}",
            asked("allow-shared-ip"),
            asked("loadBalancerIPs")
        ),
        "AddressInUse" => format!(
            "the address it asks for is held by a Service that ferrolb does not handle{}",
            asked("loadBalancerIPs")
        ),
        "InvalidRequest" => "its annotations or spec ask for something that cannot be read or cannot be met; fix what the message names".into(),
        _ => "the controller gave it no address; the message says why".into(),
    };
    Refusal {
        reason: condition.reason.clone(),
        message: condition.message.clone(),
        plain,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Service {}", self.service)?;
        let endpoints = if !self.has_serving_endpoint {
            "no serving endpoint".to_string()
        } else if self.endpoint_nodes.is_empty() {
            "serving endpoints".to_string()
        } else {
            format!("serving endpoints on {}", self.endpoint_nodes.join(", "))
        };
        writeln!(
            f,
            "  externalTrafficPolicy {}, {endpoints}",
            self.traffic_policy
        )?;
        for (key, value) in &self.annotations {
            writeln!(f, "  annotation {key}: {value}")?;
        }
        if let Some(refusal) = &self.refusal {
            writeln!(f, "\nNo address.")?;
            writeln!(f, "  Why: {}.", refusal.plain)?;
            if !refusal.message.is_empty() {
                writeln!(
                    f,
                    "  The controller says ({}): {}",
                    refusal.reason, refusal.message
                )?;
            }
        }
        for address in &self.addresses {
            writeln!(f, "\n{}", address.ip)?;
            if let Some(pool) = &address.pool {
                writeln!(f, "  pool            {pool}")?;
            }
            if !address.advertisements.is_empty() {
                writeln!(f, "  advertised by   {}", address.advertisements.join(", "))?;
            }
            match (&address.owner, &address.elected) {
                (Some(owner), Some(elected)) if owner == elected => {
                    writeln!(f, "  answered by     {owner}")?;
                }
                (Some(owner), Some(elected)) => writeln!(
                    f,
                    "  answered by     {owner} (ServiceL2Status); the election now gives {elected}: a change is under way"
                )?,
                (Some(owner), None) => writeln!(f, "  answered by     {owner} (ServiceL2Status)")?,
                (None, Some(elected)) => writeln!(
                    f,
                    "  answered by     {elected} (elected; no ServiceL2Status yet)"
                )?,
                (None, None) => writeln!(f, "  answered by     nobody")?,
            }
            if let Some(why) = &address.unannounced {
                writeln!(f, "  not announced:  {why}")?;
            }
            match &address.next_owner {
                Some(next) => writeln!(f, "  next owner      {next}, if the owner went away")?,
                None if address.pool.is_some() => {
                    writeln!(
                        f,
                        "  next owner      none: no other candidate could take over"
                    )?;
                }
                None => {}
            }
            if !address.candidates.is_empty() {
                writeln!(
                    f,
                    "  candidates, in election order (higher preference first, then higher score of node and address):"
                )?;
                for (i, c) in address.candidates.iter().enumerate() {
                    let state = c.unavailable.as_deref().unwrap_or("speaker running");
                    writeln!(
                        f,
                        "    {}. {:<20} preference {:<4} score {:016x}  {state}",
                        i + 1,
                        c.node,
                        c.preference,
                        c.score
                    )?;
                }
            }
            if !address.not_candidates.is_empty() {
                writeln!(f, "  not candidates:")?;
                for (node, why) in &address.not_candidates {
                    writeln!(f, "    {node:<22} {why}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, unavailable: bool) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "NetworkUnavailable",
                "status": if unavailable { "True" } else { "False" }}]}}))
        .unwrap()
    }

    fn heartbeat(node: &str, interfaces: &str, now: Timestamp) -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": format!("ferrolb-speaker-{node}"),
                "annotations": {"ferrolb.io/interfaces": interfaces,
                                "ferrolb.io/standing": "{\"standing\":\"Announce\"}"}},
            "spec": {"holderIdentity": node, "renewTime": now.to_string()}}),
        )
        .unwrap()
    }

    fn view() -> ClusterView {
        let now = Timestamp::now();
        let on_segment = r#"{"eth0":["192.0.2.11/24"]}"#;
        ClusterView {
            read_at: Some(now),
            pools: vec![
                serde_json::from_value(json!({"metadata": {"name": "first-pool"},
                "spec": {"addresses": ["192.0.2.100-192.0.2.110"]}}))
                .unwrap(),
            ],
            advertisements: vec![
                serde_json::from_value(
                    json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                       "metadata": {"name": "example"}, "spec": {}}),
                )
                .unwrap(),
            ],
            nodes: vec![
                node("node-a", json!({}), false),
                node("node-b", json!({}), false),
                node("node-c", json!({}), false),
                node(
                    "node-x",
                    json!({"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
                    false,
                ),
                node("node-y", json!({}), true),
                node("node-z", json!({}), false),
            ],
            heartbeats: vec![
                heartbeat("node-a", on_segment, now),
                heartbeat("node-b", on_segment, now),
                heartbeat("node-c", on_segment, now),
                // Elsewhere: no interface in the address's subnet.
                heartbeat("node-z", r#"{"eth0":["203.0.113.5/24"]}"#, now),
            ],
            ..Default::default()
        }
    }

    fn service() -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "myapp", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.100"}]}}}),
        )
        .unwrap()
    }

    fn slices() -> Vec<Arc<EndpointSlice>> {
        vec![Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "myapp-1", "namespace": "default"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-a"}]}),
            )
            .unwrap(),
        )]
    }

    #[test]
    fn the_owner_the_next_owner_and_every_other_nodes_reason_are_given() {
        let explained = explain_service(&view(), &service(), &slices());
        let address = &explained.addresses[0];
        let order: Vec<&str> = address.candidates.iter().map(|c| c.node.as_str()).collect();
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        let expected = ranking(
            ip,
            ["node-a", "node-b", "node-c"].map(|node| Candidate {
                node,
                preference: 0,
            }),
        );
        assert_eq!(order, expected.iter().map(|c| c.node).collect::<Vec<_>>());
        // No ServiceL2Status yet: the elected node answers, the runner-up takes over.
        assert_eq!(address.elected.as_deref(), Some(order[0]));
        assert_eq!(address.next_owner.as_deref(), Some(order[1]));
        let reasons: BTreeMap<&str, &str> = address
            .not_candidates
            .iter()
            .map(|(n, why)| (n.as_str(), why.as_str()))
            .collect();
        assert!(reasons["node-x"].contains("exclude-from-external-load-balancers"));
        assert!(reasons["node-y"].contains("NetworkUnavailable"));
        assert!(reasons["node-z"].contains("no interface in the address's subnet"));
        let text = explained.to_string();
        assert!(
            text.contains(&format!(
                "next owner      {}, if the owner went away",
                order[1]
            )),
            "{text}"
        );
    }

    #[test]
    fn a_local_service_names_the_nodes_without_an_endpoint() {
        let mut local = service();
        local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let explained = explain_service(&view(), &local, &slices());
        let address = &explained.addresses[0];
        assert_eq!(address.elected.as_deref(), Some("node-a"));
        // The only node with an endpoint: nobody could take over.
        assert_eq!(address.next_owner, None);
        assert!(
            address
                .not_candidates
                .iter()
                .any(|(n, why)| n == "node-b" && why.contains("no serving endpoint"))
        );
    }

    #[test]
    fn a_service_without_a_condition_or_endpoints_is_told_what_is_missing() {
        let mut waiting = service();
        waiting.status = None;
        let explained = explain_service(&view(), &waiting, &[]);
        assert!(explained.addresses.is_empty());
        assert!(
            explained
                .refusal
                .unwrap()
                .plain
                .contains("has not looked at")
        );
        let unserved = explain_service(&view(), &service(), &[]);
        assert!(
            unserved.addresses[0]
                .unannounced
                .as_deref()
                .unwrap()
                .contains("no serving endpoint")
        );
    }
}
