//! Who announces an address: every speaker runs this on the same inputs and gets the same
//! answer, so exactly one node answers ARP/NDP for each address without talking to the others.
//!
//! The owner is the candidate with the highest preference (the summed weights of the
//! L2Advertisements' `preferredNodeSelectors` it matches); among equals, the one with the
//! highest score for `(node, address)`. That is rendezvous hashing: a node leaving moves only
//! the addresses it owned, a node joining takes only the addresses it now scores highest on,
//! and all Services sharing an address land on one node because the address, not the Service,
//! is hashed.
//!
//! Ownership is sticky (`keep_or_elect`): the election only decides when an address has no
//! current owner among the candidates, so a node joining or coming back takes nothing from a
//! healthy owner. All speakers read the current owners from the same ServiceL2Status objects.
//!
//! The score function is part of the speakers' contract with each other: during a rolling
//! upgrade old and new speakers must agree, so it is spelled out here (FNV-1a, then the
//! SplitMix64 finalizer) rather than borrowed from a hasher whose output may change.

use std::net::IpAddr;

/// A node that may announce an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub node: &'a str,
    /// Summed `preferredNodeSelectors` weights the node matches; higher wins.
    pub preference: u32,
}

/// The node that announces `ip`, or `None` when there is no candidate.
pub fn elect<'a, I>(ip: IpAddr, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = Candidate<'a>>,
{
    candidates
        .into_iter()
        .max_by(|a, b| election_order(ip, a, b))
        .map(|c| c.node)
}

/// The candidates in the order the election prefers them, best first: the first is the one
/// `elect` picks, the second the one that would take over from it.
pub fn ranking<'a, I>(ip: IpAddr, candidates: I) -> Vec<Candidate<'a>>
where
    I: IntoIterator<Item = Candidate<'a>>,
{
    let mut ranked: Vec<Candidate<'a>> = candidates.into_iter().collect();
    ranked.sort_by(|a, b| election_order(ip, b, a));
    ranked
}

/// How two candidates compare for `ip`: the greater one wins.
fn election_order(ip: IpAddr, a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.preference
        .cmp(&b.preference)
        .then_with(|| score(a.node, ip).cmp(&score(b.node, ip)))
        // Equal scores are astronomically rare; the name settles them the same way
        // everywhere.
        .then_with(|| b.node.cmp(a.node))
}

/// The node that announces `ip` when `current` announces it now: a current owner that is still
/// a candidate with the best preference keeps it (ownership does not revert when a node joins
/// or comes back, which would break every connection through the address); otherwise the
/// election decides.
pub fn keep_or_elect<'a, I>(ip: IpAddr, current: Option<&str>, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = Candidate<'a>>,
{
    let candidates: Vec<Candidate<'a>> = candidates.into_iter().collect();
    let best = candidates.iter().map(|c| c.preference).max()?;
    if let Some(kept) = candidates
        .iter()
        .find(|c| Some(c.node) == current && c.preference == best)
    {
        return Some(kept.node);
    }
    elect(ip, candidates)
}

/// The rendezvous score of a node for an address.
pub fn score(node: &str, ip: IpAddr) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    };
    node.bytes().for_each(&mut eat);
    // A separator no node name contains keeps ("ab", x) and ("a", b‖x) apart.
    eat(0);
    match ip {
        IpAddr::V4(v4) => v4.octets().into_iter().for_each(&mut eat),
        IpAddr::V6(v6) => v6.octets().into_iter().for_each(&mut eat),
    }
    splitmix64(hash)
}

/// Spreads FNV's output over all 64 bits, so that similar names and addresses do not give
/// correlated scores.
fn splitmix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plain(nodes: &[&'static str]) -> Vec<Candidate<'static>> {
        nodes
            .iter()
            .map(|node| Candidate {
                node,
                preference: 0,
            })
            .collect()
    }

    #[test]
    fn the_ranking_starts_with_the_elected_node() {
        for last in 0..=255u8 {
            let ip = IpAddr::from([192, 0, 2, last]);
            let mut candidates = plain(&["a", "b", "c", "d"]);
            candidates[3].preference = u32::from(last % 3);
            let ranked = ranking(ip, candidates.clone());
            assert_eq!(Some(ranked[0].node), elect(ip, candidates.clone()));
            // Without the winner, the runner-up is elected: the next owner.
            let rest: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| c.node != ranked[0].node)
                .collect();
            assert_eq!(Some(ranked[1].node), elect(ip, rest));
        }
    }

    #[test]
    fn no_candidate_no_owner() {
        assert_eq!(elect("192.0.2.1".parse().unwrap(), []), None);
    }

    #[test]
    fn the_score_is_pinned() {
        // Speakers of different versions must agree, so this value may never change. It was
        // computed independently (Python) from the algorithm in the module comment.
        let ip: IpAddr = "192.168.117.100".parse().unwrap();
        assert_eq!(score("node-a", ip), 0x2421_d642_558b_2e27);
    }

    #[test]
    fn a_live_current_owner_keeps_its_address() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let natural = elect(ip, plain(&["a", "b", "c"])).unwrap();
        let other = ["a", "b", "c"].into_iter().find(|n| *n != natural).unwrap();
        assert_eq!(
            keep_or_elect(ip, Some(other), plain(&["a", "b", "c"])),
            Some(other)
        );
        // Gone from the candidates (dead, excluded): the election decides.
        let without: Vec<&'static str> = ["a", "b", "c"]
            .into_iter()
            .filter(|n| *n != other)
            .collect();
        assert_eq!(
            keep_or_elect(ip, Some(other), plain(&without)),
            elect(ip, plain(&without))
        );
        assert_eq!(
            keep_or_elect(ip, None, plain(&["a", "b", "c"])),
            Some(natural)
        );
    }

    #[test]
    fn a_preferred_node_still_wins_over_a_current_owner() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let mut candidates = plain(&["a", "b"]);
        candidates[1].preference = 10;
        assert_eq!(keep_or_elect(ip, Some("a"), candidates), Some("b"));
    }

    #[test]
    fn preference_beats_score() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let mut candidates = plain(&["a", "b", "c"]);
        let natural = elect(ip, candidates.clone()).unwrap();
        let other = ["a", "b", "c"].into_iter().find(|n| *n != natural).unwrap();
        for c in &mut candidates {
            if c.node == other {
                c.preference = 10;
            }
        }
        assert_eq!(elect(ip, candidates), Some(other));
    }
}
