//! Properties of the election every speaker runs: same answer whatever order the nodes are
//! seen in, and minimal movement when nodes come and go.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_speaker::election::{Candidate, elect};
use proptest::prelude::*;

fn candidates(nodes: &[String]) -> Vec<Candidate<'_>> {
    nodes
        .iter()
        .map(|n| Candidate {
            node: n,
            preference: 0,
        })
        .collect()
}

fn addresses(seed: u32, count: u32) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (seed.wrapping_add(i) % 256)))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 + u128::from(seed ^ i),
                ))
            }
        })
        .collect()
}

fn node_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z][a-z0-9-]{0,12}", 2..12)
        .prop_map(|set| set.into_iter().collect())
}

proptest! {
    #[test]
    fn the_order_nodes_are_seen_in_does_not_matter(nodes in node_names(), seed in any::<u32>(), rotate in 0usize..12) {
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        let by = rotate % shuffled.len();
        shuffled.rotate_left(by);
        for ip in addresses(seed, 32) {
            prop_assert_eq!(elect(ip, candidates(&nodes)), elect(ip, candidates(&shuffled)));
        }
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_addresses(nodes in node_names(), seed in any::<u32>(), leaving in any::<prop::sample::Index>()) {
        let gone = leaving.index(nodes.len());
        let remaining: Vec<String> = nodes.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.clone()).collect();
        for ip in addresses(seed, 64) {
            let before = elect(ip, candidates(&nodes)).unwrap();
            let after = elect(ip, candidates(&remaining)).unwrap();
            if before != nodes[gone] {
                prop_assert_eq!(before, after, "{} moved although its owner stayed", ip);
            }
        }
    }

    #[test]
    fn a_joining_node_takes_addresses_only_for_itself(nodes in node_names(), seed in any::<u32>()) {
        let (newcomer, existing) = nodes.split_last().unwrap();
        for ip in addresses(seed, 64) {
            let before = elect(ip, candidates(existing)).unwrap();
            let after = elect(ip, candidates(&nodes)).unwrap();
            prop_assert!(after == before || after == newcomer.as_str());
        }
    }
}

#[test]
fn addresses_spread_over_the_nodes() {
    let nodes: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
    let mut owned = [0u32; 3];
    for i in 0..3000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i));
        let owner = elect(ip, candidates(&nodes)).unwrap();
        owned[nodes.iter().position(|n| n == owner).unwrap()] += 1;
    }
    // A fair share is 1000 each; rendezvous hashing stays well within 15% of it.
    for count in owned {
        assert!((850..=1150).contains(&count), "{owned:?}");
    }
}
