//! Sets of addresses of one family as disjoint inclusive intervals, so that the lowest free
//! address, taking one and giving one back cost O(log n) whatever the pool's size.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive intervals of address values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// start -> end
    intervals: BTreeMap<u128, u128>,
}

impl IpSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every value from `start` to `end` inclusive.
    pub fn insert_range(&mut self, mut start: u128, mut end: u128) {
        if start > end {
            return;
        }
        // Absorb every interval that overlaps or touches [start, end].
        let touching: Vec<(u128, u128)> = self
            .intervals
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|(_, e)| e.saturating_add(1) >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.intervals.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.intervals.insert(start, end);
    }

    pub fn insert(&mut self, value: u128) {
        self.insert_range(value, value);
    }

    /// Removes `value`; false if it was not in the set.
    pub fn remove(&mut self, value: u128) -> bool {
        let Some((&start, &end)) = self.intervals.range(..=value).next_back() else {
            return false;
        };
        if value > end {
            return false;
        }
        self.intervals.remove(&start);
        if start < value {
            self.intervals.insert(start, value - 1);
        }
        if value < end {
            self.intervals.insert(value + 1, end);
        }
        true
    }

    pub fn contains(&self, value: u128) -> bool {
        self.intervals
            .range(..=value)
            .next_back()
            .is_some_and(|(_, end)| value <= *end)
    }

    /// The lowest value in the set.
    pub fn first(&self) -> Option<u128> {
        self.intervals.keys().next().copied()
    }

    /// The lowest value in the set that is at least `from`.
    pub fn first_from(&self, from: u128) -> Option<u128> {
        if let Some((_, &end)) = self.intervals.range(..=from).next_back()
            && from <= end
        {
            return Some(from);
        }
        self.intervals.range(from..).next().map(|(start, _)| *start)
    }

    /// How many values `v` in the set have `v % modulus == residue`.
    pub fn count_with_residue(&self, modulus: u128, residue: u128) -> u128 {
        // Values <= x with that residue: those of the form residue + k * modulus.
        let up_to = |x: u128| -> u128 {
            if x < residue {
                0
            } else {
                (x - residue) / modulus + 1
            }
        };
        self.intervals.iter().fold(0u128, |n, (&s, &e)| {
            let below = if s == 0 { 0 } else { up_to(s - 1) };
            n.saturating_add(up_to(e) - below)
        })
    }

    /// Number of values, saturating at `u128::MAX`.
    pub fn len(&self) -> u128 {
        self.intervals.iter().fold(0u128, |n, (s, e)| {
            n.saturating_add((e - s).saturating_add(1))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// How many intervals hold the set: what its memory grows with, not its length.
    pub fn interval_count(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn ranges_merge_and_split() {
        let mut set = IpSet::new();
        set.insert_range(10, 20);
        set.insert_range(21, 30);
        set.insert_range(5, 8);
        assert_eq!(set.len(), 4 + 21);
        assert_eq!(set.first(), Some(5));
        assert!(set.remove(15));
        assert!(!set.contains(15));
        assert!(set.contains(14) && set.contains(16));
        assert!(!set.remove(15));
        set.insert(15);
        assert_eq!(set.len(), 25);
        assert_eq!(set.intervals.len(), 2);
    }

    #[test]
    fn whole_ipv6_space_counts_saturated() {
        let mut set = IpSet::new();
        set.insert_range(0, u128::MAX);
        assert_eq!(set.len(), u128::MAX);
        assert!(set.remove(u128::MAX));
        assert!(set.remove(0));
        assert_eq!(set.first(), Some(1));
    }

    proptest! {
        /// The interval set behaves as a plain set of values.
        #[test]
        fn first_from_and_residues_match_the_model(values in prop::collection::btree_set(0u128..2000, 0..60), from in 0u128..2100) {
            let mut set = IpSet::new();
            for v in &values {
                set.insert(*v);
            }
            prop_assert_eq!(set.first_from(from), values.range(from..).next().copied());
            for residue in [0u128, 255] {
                let expected = values.iter().filter(|v| *v % 256 == residue).count() as u128;
                prop_assert_eq!(set.count_with_residue(256, residue), expected);
            }
        }

        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec((0u8..3, 0u128..64, 0u128..8), 0..80)) {
            let mut set = IpSet::new();
            let mut model = BTreeSet::new();
            for (op, value, width) in ops {
                match op {
                    0 => {
                        set.insert_range(value, value + width);
                        model.extend(value..=value + width);
                    }
                    1 => prop_assert_eq!(set.remove(value), model.remove(&value)),
                    _ => prop_assert_eq!(set.contains(value), model.contains(&value)),
                }
                prop_assert_eq!(set.first(), model.first().copied());
                prop_assert_eq!(set.len(), model.len() as u128);
            }
        }
    }
}
