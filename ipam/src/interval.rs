//! A set of `u128` kept as disjoint, non-adjacent inclusive ranges.
//!
//! This is what keeps allocation cheap on huge spaces: a fresh IPv6 /64 is one range, not 2^64
//! entries, and "lowest free" is the first key of a `BTreeMap`. Every operation is O(log n) in the
//! number of ranges (plus the ranges it merges or cuts). Because ranges are always merged, two sets
//! with the same members have the same representation, so derived `PartialEq` is set equality.
//!
//! The sets used by this crate never hold all 2^128 values (a subnet is at most 2^127 addresses),
//! so `len` cannot overflow.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    /// start → end (inclusive).
    ranges: BTreeMap<u128, u128>,
    /// Number of members, kept up to date so counting free addresses is O(1).
    len: u128,
}

impl IntervalSet {
    pub fn new() -> IntervalSet {
        IntervalSet::default()
    }

    pub fn len(&self) -> u128 {
        self.len
    }

    pub fn first(&self) -> Option<u128> {
        self.ranges.first_key_value().map(|(&start, _)| start)
    }

    pub fn contains(&self, x: u128) -> bool {
        self.ranges.range(..=x).next_back().is_some_and(|(_, &end)| end >= x)
    }

    /// Adds `lo..=hi`, merging with ranges it overlaps or touches.
    pub fn insert(&mut self, lo: u128, hi: u128) {
        debug_assert!(lo <= hi);
        let (mut new_lo, mut new_hi) = (lo, hi);
        let mut absorbed = Vec::new();
        // Ranges are sorted by start and disjoint, so their ends are sorted too: walking down from
        // the last range that starts at or before hi+1, stop at the first that ends before lo-1.
        for (&start, &end) in self.ranges.range(..=hi.saturating_add(1)).rev() {
            if end.saturating_add(1) < lo {
                break;
            }
            absorbed.push((start, end));
        }
        for (start, end) in absorbed {
            self.ranges.remove(&start);
            self.len -= end - start + 1;
            new_lo = new_lo.min(start);
            new_hi = new_hi.max(end);
        }
        self.ranges.insert(new_lo, new_hi);
        self.len += new_hi - new_lo + 1;
    }

    /// Removes `lo..=hi`; returns how many members were removed.
    pub fn remove(&mut self, lo: u128, hi: u128) -> u128 {
        debug_assert!(lo <= hi);
        let mut hit = Vec::new();
        for (&start, &end) in self.ranges.range(..=hi).rev() {
            if end < lo {
                break;
            }
            hit.push((start, end));
        }
        let mut removed = 0;
        for (start, end) in hit {
            self.ranges.remove(&start);
            if start < lo {
                self.ranges.insert(start, lo - 1);
            }
            if end > hi {
                self.ranges.insert(hi + 1, end);
            }
            removed += end.min(hi) - start.max(lo) + 1;
        }
        self.len -= removed;
        removed
    }

    /// Removes one value; false if it was not a member.
    pub fn remove_point(&mut self, x: u128) -> bool {
        self.remove(x, x) == 1
    }

    #[cfg(test)]
    pub fn ranges(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u128, u128),
        Remove(u128, u128),
    }

    fn op() -> impl Strategy<Value = Op> {
        (any::<bool>(), 0u128..64, 0u128..8)
            .prop_map(|(ins, lo, w)| if ins { Op::Insert(lo, lo + w) } else { Op::Remove(lo, lo + w) })
    }

    proptest! {
        /// The interval set behaves exactly like a plain set, stays canonical (sorted, disjoint,
        /// never adjacent) and counts its members.
        #[test]
        fn matches_a_plain_set(ops in proptest::collection::vec(op(), 0..60)) {
            let mut set = IntervalSet::new();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(lo, hi) => {
                        set.insert(lo, hi);
                        model.extend(lo..=hi);
                    }
                    Op::Remove(lo, hi) => {
                        let before = model.len();
                        model.retain(|x| !(lo..=hi).contains(x));
                        prop_assert_eq!(set.remove(lo, hi), (before - model.len()) as u128);
                    }
                }
                prop_assert_eq!(set.len(), model.len() as u128);
                prop_assert_eq!(set.first(), model.first().copied());
                let members: BTreeSet<u128> = set.ranges().flat_map(|(s, e)| s..=e).collect();
                prop_assert_eq!(&members, &model);
                let ranges: Vec<_> = set.ranges().collect();
                for w in ranges.windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0, "ranges {:?} not canonical", ranges);
                }
                for x in 0..80 {
                    prop_assert_eq!(set.contains(x), model.contains(&x));
                }
            }
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut set = IntervalSet::new();
        set.insert(u128::MAX - 10, u128::MAX);
        set.insert(0, 3);
        assert_eq!(set.len(), 15);
        assert!(set.remove_point(u128::MAX));
        assert!(!set.remove_point(u128::MAX));
        set.insert(u128::MAX, u128::MAX);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(0, 3), (u128::MAX - 10, u128::MAX)]);
        assert_eq!(set.remove(2, u128::MAX), 13);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(0, 1)]);
    }
}
