//! A set of page indices stored as disjoint ranges: a 100 GB file touched
//! sequentially costs a handful of entries, not millions.
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    /// first -> last (inclusive); ranges neither overlap nor touch.
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl PageSet {
    /// Pages in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds pages first..=last; returns how many were new.
    pub fn insert(&mut self, first: u64, last: u64) -> u64 {
        if last < first {
            return 0;
        }
        let before = self.len;
        let (mut lo, mut hi) = (first, last);
        // Merge every range that overlaps or touches [lo, hi].
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=hi.saturating_add(1))
            .rev()
            .take_while(|(_, &l)| l.saturating_add(1) >= lo)
            .map(|(&f, &l)| (f, l))
            .collect();
        for (f, l) in touching {
            self.ranges.remove(&f);
            self.len -= l - f + 1;
            lo = lo.min(f);
            hi = hi.max(l);
        }
        self.ranges.insert(lo, hi);
        self.len += hi - lo + 1;
        self.len - before
    }

    /// Removes pages first..=last; returns how many were present.
    pub fn remove(&mut self, first: u64, last: u64) -> u64 {
        if last < first {
            return 0;
        }
        let before = self.len;
        let overlapping: Vec<(u64, u64)> =
            self.ranges.range(..=last).rev().take_while(|(_, &l)| l >= first).map(|(&f, &l)| (f, l)).collect();
        for (f, l) in overlapping {
            self.ranges.remove(&f);
            self.len -= l - f + 1;
            if f < first {
                self.ranges.insert(f, first - 1);
                self.len += first - f;
            }
            if l > last {
                self.ranges.insert(last + 1, l);
                self.len += l - last;
            }
        }
        before - self.len
    }

    /// Adds every page of `other`.
    pub fn union_with(&mut self, other: &PageSet) {
        for (first, last) in other.ranges() {
            self.insert(first, last);
        }
    }

    /// The set as disjoint ranges first..=last, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&f, &l)| (f, l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let mut s = PageSet::default();
        assert_eq!(s.insert(10, 19), 10);
        assert_eq!(s.insert(20, 29), 10); // adjacent
        assert_eq!(s.insert(15, 34), 5); // overlapping
        assert_eq!(s.insert(0, 3), 4);
        assert_eq!(s.len(), 29);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 3), (10, 34)]);
        assert_eq!(s.insert(4, 9), 6);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 34)]);
        assert_eq!(s.insert(5, 5), 0);
    }

    #[test]
    fn removal_splits_ranges_and_counts_what_was_there() {
        let mut s = PageSet::default();
        s.insert(0, 99);
        assert_eq!(s.remove(10, 19), 10);
        assert_eq!(s.remove(15, 24), 5);
        assert_eq!(s.remove(200, 300), 0);
        assert_eq!(s.len(), 85);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 9), (25, 99)]);
        assert_eq!(s.remove(0, u64::MAX - 1), 85);
        assert_eq!(s.len(), 0);
    }
}
