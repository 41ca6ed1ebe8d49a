//! Whether this speaker may announce at all: the rule that keeps exactly one node answering
//! for an address under any single partition.
//!
//! Gossip tells a speaker which peers answer it; each speaker's heartbeat Lease tells, through
//! the API server, which speakers are running. A speaker that sees a majority of the running
//! speakers belongs to the side that elects the owners, and announces. One that sees only a
//! minority is either cut off from its peers (gossip lost, link down) or the survivor of a
//! crash that took most of them: the API server tells which. If the speakers it cannot hear
//! still renew their heartbeats, it is the one cut off and steps down, so the majority side can
//! take its addresses without two nodes answering. If their heartbeats stopped, they are gone
//! and it carries on. If it cannot reach the API server either, it cannot tell, and steps down.
//!
//! In an exact half split the half holding the lowest-named running speaker carries on. With
//! three or more speakers a crash keeps a majority, so failover stays sub-second; when it
//! does not (two nodes, or most of them crashing at once) the survivors wait until the lost
//! speakers' heartbeats expire, unless they hold the lowest name.

use std::collections::BTreeSet;

/// May this speaker announce, and if not, why. Published on its heartbeat Lease (as JSON under
/// [`STANDING_ANNOTATION`]) so that operators' tools see who stepped down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "standing")]
pub enum Standing {
    /// It sees a majority of the running speakers (or every one the API server knows).
    Announce,
    /// It hears only a minority while the API server shows the others running: it is the one
    /// cut off from its peers.
    Isolated { unheard: BTreeSet<String> },
    /// It hears only a minority and cannot reach the API server to know more.
    Fenced,
}

/// The heartbeat annotation holding a speaker's standing.
pub const STANDING_ANNOTATION: &str = "ferrolb.io/standing";

impl Standing {
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for text that is not a standing (another version, someone's edit).
    pub fn from_annotation(text: &str) -> Option<Standing> {
        serde_json::from_str(text).ok()
    }
}

/// The standing of speaker `me`.
///
/// - `heard`: speakers gossip finds alive, `me` included;
/// - `running`: speakers whose heartbeat Lease was renewed recently, as last seen while the API
///   server answered (the caller keeps the last view when it does not: a silent API server
///   must not make peers look gone);
/// - `api_reachable`: whether the API server answers now.
pub fn standing(
    me: &str,
    heard: &BTreeSet<String>,
    running: &BTreeSet<String>,
    api_reachable: bool,
) -> Standing {
    let mut known: BTreeSet<&str> = heard.iter().map(String::as_str).collect();
    known.extend(running.iter().map(String::as_str));
    known.insert(me);
    let heard_count = heard.len().max(1);
    if heard_count * 2 > known.len() {
        return Standing::Announce;
    }
    // An exact half: the half holding the lowest-named speaker carries on, the other steps
    // down; both halves reach the same verdict from the same names.
    let lowest = known.iter().next().copied();
    if heard_count * 2 == known.len() && lowest.is_some_and(|l| l == me || heard.contains(l)) {
        return Standing::Announce;
    }
    if !api_reachable {
        return Standing::Fenced;
    }
    let unheard: BTreeSet<String> = running
        .iter()
        .filter(|n| !heard.contains(*n) && n.as_str() != me)
        .cloned()
        .collect();
    if unheard.is_empty() {
        Standing::Announce
    } else {
        Standing::Isolated { unheard }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_standing_reads_back_from_its_annotation() {
        for standing in [
            Standing::Announce,
            Standing::Fenced,
            Standing::Isolated {
                unheard: set(&["b", "c"]),
            },
        ] {
            assert_eq!(
                Standing::from_annotation(&standing.to_annotation()),
                Some(standing)
            );
        }
        assert_eq!(
            Standing::Isolated {
                unheard: set(&["b"])
            }
            .to_annotation(),
            r#"{"standing":"Isolated","unheard":["b"]}"#
        );
        assert_eq!(Standing::from_annotation("stepped down"), None);
    }

    #[test]
    fn a_majority_announces_whatever_the_api_server_says() {
        let all = set(&["a", "b", "c"]);
        assert_eq!(standing("a", &all, &all, true), Standing::Announce);
        assert_eq!(
            standing("a", &set(&["a", "b"]), &all, true),
            Standing::Announce
        );
        assert_eq!(
            standing("a", &set(&["a", "b"]), &all, false),
            Standing::Announce
        );
    }

    #[test]
    fn a_speaker_that_hears_nobody_while_the_others_run_steps_down() {
        let all = set(&["a", "b", "c"]);
        assert_eq!(
            standing("a", &set(&["a"]), &all, true),
            Standing::Isolated {
                unheard: set(&["b", "c"])
            }
        );
        assert_eq!(standing("a", &set(&["a"]), &all, false), Standing::Fenced);
    }

    #[test]
    fn survivors_of_crashes_carry_on_once_the_heartbeats_stop() {
        // Two of three crashed and their heartbeats expired.
        assert_eq!(
            standing("a", &set(&["a"]), &set(&["a"]), true),
            Standing::Announce
        );
        // A two-node cluster: the peer crashed moments ago, its heartbeat is still fresh; the
        // survivor waits for it to expire unless it holds the lower name.
        assert_eq!(
            standing("b", &set(&["b"]), &set(&["a", "b"]), true),
            Standing::Isolated {
                unheard: set(&["a"])
            }
        );
        assert_eq!(
            standing("a", &set(&["a"]), &set(&["a", "b"]), true),
            Standing::Announce
        );
    }

    #[test]
    fn a_node_alone_in_its_cluster_announces() {
        assert_eq!(
            standing("a", &set(&["a"]), &set(&[]), false),
            Standing::Announce
        );
        assert_eq!(
            standing("a", &set(&[]), &set(&[]), false),
            Standing::Announce
        );
    }

    #[test]
    fn in_an_even_split_the_half_with_the_lowest_name_carries_on() {
        let all = set(&["a", "b", "c", "d"]);
        assert_eq!(
            standing("a", &set(&["a", "b"]), &all, true),
            Standing::Announce
        );
        assert_eq!(
            standing("b", &set(&["a", "b"]), &all, false),
            Standing::Announce
        );
        assert!(matches!(
            standing("c", &set(&["c", "d"]), &all, true),
            Standing::Isolated { .. }
        ));
        assert_eq!(
            standing("c", &set(&["c", "d"]), &all, false),
            Standing::Fenced
        );
        // Two nodes whose gossip is cut: exactly one keeps answering.
        let pair = set(&["a", "b"]);
        assert_eq!(standing("a", &set(&["a"]), &pair, true), Standing::Announce);
        assert!(matches!(
            standing("b", &set(&["b"]), &pair, true),
            Standing::Isolated { .. }
        ));
    }
}
