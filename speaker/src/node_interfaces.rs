//! Which interfaces, and which subnets on them, each node's speaker can answer on: published
//! on its heartbeat Lease so that every speaker leaves the same nodes out of an election.
//!
//! MetalLB elects among all the nodes an L2Advertisement selects, whatever their interfaces:
//! a node without the interface the advertisement names wins its share of addresses and
//! announces nothing. Here a candidate is left out when
//! - the advertisements name interfaces for it and it has none of them, or
//! - it has no interface in the address's subnet while another candidate has one (the
//!   address is on a segment some nodes are not attached to).
//!
//! A node whose interfaces are not known (a speaker that has not published them yet) is
//! never left out: the rules only ever remove nodes known to be unable to announce.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// The heartbeat annotation holding a node's interfaces, as JSON: interface → networks.
pub const INTERFACES_ANNOTATION: &str = "ferrolb.io/interfaces";

/// A node's interfaces and the networks configured on each.
pub type Interfaces = BTreeMap<String, Vec<IpNetwork>>;

/// This node's interfaces among `names` (those the responder answers on), as the kernel has
/// them now.
pub fn local(names: &BTreeSet<String>) -> Interfaces {
    pnet_datalink::interfaces()
        .into_iter()
        .filter(|i| names.contains(&i.name))
        .map(|i| (i.name.clone(), i.ips.clone()))
        .collect()
}

pub fn encode(interfaces: &Interfaces) -> String {
    let text: BTreeMap<&String, Vec<String>> = interfaces
        .iter()
        .map(|(name, networks)| (name, networks.iter().map(ToString::to_string).collect()))
        .collect();
    serde_json::to_string(&text).unwrap_or_default()
}

/// Reads an annotation written by `encode`; `None` when it is not one (another version,
/// someone's edit): the node then counts as unknown.
pub fn decode(text: &str) -> Option<Interfaces> {
    let raw: BTreeMap<String, Vec<String>> = serde_json::from_str(text).ok()?;
    raw.into_iter()
        .map(|(name, networks)| {
            let networks: Option<Vec<IpNetwork>> =
                networks.iter().map(|n| n.parse().ok()).collect();
            Some((name, networks?))
        })
        .collect()
}

/// Why a candidate cannot announce an address on its interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceExclusion {
    /// The advertisements name interfaces for it and it has none of them.
    NoNamedInterface,
    /// It has no interface in the address's subnet while another candidate has one.
    OutsideSubnet,
}

impl std::fmt::Display for InterfaceExclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InterfaceExclusion::NoNamedInterface => {
                "it has none of the interfaces its L2Advertisements name"
            }
            InterfaceExclusion::OutsideSubnet => {
                "it has no interface in the address's subnet, and another candidate has one"
            }
        })
    }
}

/// The candidates (node → preference) that cannot announce `ip`, and why: `on` gives, per
/// candidate, the interfaces the advertisements name (`None`: any), `known` the nodes'
/// interfaces.
pub fn unable_to_announce(
    ip: IpAddr,
    candidates: &BTreeMap<String, u32>,
    on: &BTreeMap<String, Option<BTreeSet<String>>>,
    known: &BTreeMap<String, Interfaces>,
) -> BTreeMap<String, InterfaceExclusion> {
    // Per known candidate: the interfaces it would answer on.
    let answering: BTreeMap<&String, Vec<(&String, &Vec<IpNetwork>)>> = candidates
        .keys()
        .filter_map(|node| {
            let interfaces = known.get(node)?;
            let listed = on.get(node).and_then(Option::as_ref);
            Some((
                node,
                interfaces
                    .iter()
                    .filter(|(name, _)| listed.is_none_or(|l| l.contains(*name)))
                    .collect(),
            ))
        })
        .collect();
    let in_subnet = |node: &String| {
        answering.get(node).is_some_and(|interfaces| {
            interfaces
                .iter()
                .any(|(_, networks)| networks.iter().any(|n| n.contains(ip)))
        })
    };
    let someone_in_subnet = candidates.keys().any(in_subnet);
    candidates
        .keys()
        .filter_map(|node| match answering.get(node) {
            None => None,
            Some(interfaces) if interfaces.is_empty() => {
                Some((node.clone(), InterfaceExclusion::NoNamedInterface))
            }
            Some(_) if someone_in_subnet && !in_subnet(node) => {
                Some((node.clone(), InterfaceExclusion::OutsideSubnet))
            }
            Some(_) => None,
        })
        .collect()
}

/// The candidates (node → preference) that can announce `ip`: those
/// [`unable_to_announce`] does not leave out.
pub fn able_to_announce(
    ip: IpAddr,
    candidates: &BTreeMap<String, u32>,
    on: &BTreeMap<String, Option<BTreeSet<String>>>,
    known: &BTreeMap<String, Interfaces>,
) -> BTreeMap<String, u32> {
    let unable = unable_to_announce(ip, candidates, on, known);
    candidates
        .iter()
        .filter(|(node, _)| !unable.contains_key(*node))
        .map(|(node, preference)| (node.clone(), *preference))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interfaces(list: &[(&str, &[&str])]) -> Interfaces {
        list.iter()
            .map(|(name, networks)| {
                (
                    name.to_string(),
                    networks.iter().map(|n| n.parse().unwrap()).collect(),
                )
            })
            .collect()
    }

    fn candidates(nodes: &[&str]) -> BTreeMap<String, u32> {
        nodes.iter().map(|n| (n.to_string(), 0)).collect()
    }

    #[test]
    fn the_annotation_round_trips_and_nonsense_is_unknown() {
        let local = interfaces(&[
            ("eth0", &["192.0.2.11/24", "2001:db8::11/64"]),
            ("eth1", &[]),
        ]);
        assert_eq!(decode(&encode(&local)), Some(local));
        assert_eq!(decode("eth0=192.0.2.11/24"), None);
        assert_eq!(decode(r#"{"eth0": ["not a network"]}"#), None);
    }

    #[test]
    fn a_node_without_the_named_interface_is_left_out() {
        let known = BTreeMap::from([
            ("a".to_string(), interfaces(&[("eth0", &["192.0.2.11/24"])])),
            (
                "b".to_string(),
                interfaces(&[("eth0", &["192.0.2.12/24"]), ("eth1", &[])]),
            ),
        ]);
        let eth1: BTreeMap<String, Option<BTreeSet<String>>> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), Some(BTreeSet::from(["eth1".to_string()]))))
            .collect();
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(
            able_to_announce(ip, &candidates(&["a", "b", "c"]), &eth1, &known),
            candidates(&["b", "c"]),
            "a lacks eth1; c is unknown and stays"
        );
        let any: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        assert_eq!(
            able_to_announce(ip, &candidates(&["a", "b"]), &any, &known),
            candidates(&["a", "b"])
        );
    }

    #[test]
    fn a_node_outside_the_subnet_is_left_out_when_another_is_in_it() {
        let known = BTreeMap::from([
            (
                "a".to_string(),
                interfaces(&[("eth0", &["192.0.2.11/24", "198.51.100.11/24"])]),
            ),
            ("b".to_string(), interfaces(&[("eth0", &["192.0.2.12/24"])])),
            (
                "c".to_string(),
                interfaces(&[
                    ("eth0", &["192.0.2.13/24"]),
                    ("eth1", &["198.51.100.13/24"]),
                ]),
            ),
        ]);
        let any = BTreeMap::new();
        let all = candidates(&["a", "b", "c"]);
        assert_eq!(
            able_to_announce("198.51.100.50".parse().unwrap(), &all, &any, &known),
            candidates(&["a", "c"])
        );
        // Restricted to eth0, c is not in the subnet on an interface it would answer on.
        let eth0: BTreeMap<String, Option<BTreeSet<String>>> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), Some(BTreeSet::from(["eth0".to_string()]))))
            .collect();
        assert_eq!(
            able_to_announce("198.51.100.50".parse().unwrap(), &all, &eth0, &known),
            candidates(&["a"])
        );
        // A subnet no node has (a routed range): nobody is left out.
        assert_eq!(
            able_to_announce("203.0.113.10".parse().unwrap(), &all, &any, &known),
            all
        );
        assert_eq!(
            able_to_announce("2001:db8::100".parse().unwrap(), &all, &any, &known),
            all
        );
    }
}
