//! Distinct-page accounting for byte ranges of the Arrow file.
//!
//! The truth file reports how many distinct file pages each phase read. The
//! phases know the byte ranges they read (footer, message headers, value
//! buffers); this module turns those ranges into a page count, merging
//! overlapping and adjacent ranges so a page shared by two ranges is counted
//! once.

/// A set of file pages, kept as sorted, disjoint, non-adjacent half-open
/// intervals of page numbers `[first, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSet {
    /// Page intervals added so far; normalised lazily by [`PageSet::normalize`].
    intervals: Vec<(u64, u64)>,
}

impl PageSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the bytes `offset..offset + len` of the file were read.
    /// An empty range touches no page.
    pub fn add_range(&mut self, offset: u64, len: u64, page_size: u64) {
        assert!(page_size > 0, "page size must be positive");
        if len == 0 {
            return;
        }
        let first = offset / page_size;
        let end = (offset + len).div_ceil(page_size);
        self.intervals.push((first, end));
        self.normalize();
    }

    /// Adds every page of `other` to `self`.
    pub fn extend(&mut self, other: &PageSet) {
        self.intervals.extend_from_slice(&other.intervals);
        self.normalize();
    }

    /// Number of distinct pages in the set.
    pub fn count(&self) -> u64 {
        self.intervals.iter().map(|(a, b)| b - a).sum()
    }

    /// Sorts and merges overlapping or touching intervals, so `count` never
    /// counts a page twice and the vector stays small (one entry per
    /// contiguous run of pages).
    fn normalize(&mut self) {
        self.intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.intervals.len());
        for &(a, b) in &self.intervals {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.intervals = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::PageSet;

    const PS: u64 = 4096;

    fn count(ranges: &[(u64, u64)]) -> u64 {
        let mut set = PageSet::new();
        for &(off, len) in ranges {
            set.add_range(off, len, PS);
        }
        set.count()
    }

    #[test]
    fn empty_set_and_empty_ranges_touch_nothing() {
        assert_eq!(PageSet::new().count(), 0);
        assert_eq!(count(&[(0, 0), (12345, 0)]), 0);
    }

    #[test]
    fn single_byte_and_exact_pages() {
        assert_eq!(count(&[(0, 1)]), 1);
        assert_eq!(count(&[(PS - 1, 1)]), 1);
        assert_eq!(count(&[(0, PS)]), 1);
        assert_eq!(count(&[(0, PS + 1)]), 2);
        assert_eq!(count(&[(PS, 3 * PS)]), 3);
    }

    #[test]
    fn unaligned_ends_touch_partial_pages() {
        // Starts mid page 0 and ends mid page 2: pages 0, 1, 2.
        assert_eq!(count(&[(100, 2 * PS)]), 3);
        // Crosses one page boundary with two bytes.
        assert_eq!(count(&[(PS - 1, 2)]), 2);
    }

    #[test]
    fn overlapping_ranges_count_once() {
        assert_eq!(count(&[(0, 2 * PS), (PS, 2 * PS)]), 3);
        assert_eq!(count(&[(10, 20), (15, 100)]), 1);
        // Contained range.
        assert_eq!(count(&[(0, 10 * PS), (3 * PS, 10)]), 10);
    }

    #[test]
    fn adjacent_ranges_share_boundary_pages() {
        // Two ranges that meet inside page 1 share it.
        assert_eq!(count(&[(0, PS + 10), (PS + 10, 10)]), 2);
        // Two ranges that meet on a page boundary do not share a page.
        assert_eq!(count(&[(0, PS), (PS, PS)]), 2);
    }

    #[test]
    fn disjoint_ranges_and_order_independence() {
        let a = count(&[(0, 1), (10 * PS, 1), (5 * PS + 7, PS)]);
        let b = count(&[(5 * PS + 7, PS), (10 * PS, 1), (0, 1)]);
        assert_eq!(a, 4);
        assert_eq!(a, b);
    }

    #[test]
    fn union_is_not_sum() {
        let mut x = PageSet::new();
        x.add_range(0, 3 * PS, PS);
        let mut y = PageSet::new();
        y.add_range(2 * PS, 3 * PS, PS);
        let mut u = x.clone();
        u.extend(&y);
        assert_eq!(x.count() + y.count(), 6);
        assert_eq!(u.count(), 5);
    }
}
