//! A model of the target's address space: which region each address belongs
//! to, kept up to date from mmap/munmap events and /proc/PID/maps snapshots.
use std::collections::BTreeMap;

/// A file as the kernel names it: device and inode (paths can change or vanish).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// How a file is named before /proc has shown its path.
    pub fn placeholder_name(&self) -> String {
        format!("[dev {}:{} inode {}]", self.major, self.minor, self.inode)
    }

    /// The kernel's internal dev_t (major << 20 | minor), as tracepoints report it.
    pub fn kernel_dev(&self) -> u32 {
        (self.major << 20) | (self.minor & 0xfffff)
    }

    pub fn from_kernel_dev(s_dev: u32, inode: u64) -> FileId {
        FileId { major: s_dev >> 20, minor: s_dev & 0xfffff, inode }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    File(FileId),
    /// The brk heap.
    Heap,
    /// Main or thread stacks.
    Stack,
    /// Anonymous mappings (allocator arenas, large allocations, ...).
    Anon,
    /// Kernel-provided pseudo mappings: [vdso], [vvar], ...
    Special(String),
}

/// A piece of a mapping removed from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub start: u64,
    pub end: u64,
    pub region: Region,
}

#[derive(Default, Debug)]
pub struct AddressSpace {
    /// start -> (end, region); ranges never overlap.
    vmas: BTreeMap<u64, (u64, Region)>,
}

impl AddressSpace {
    /// Adds a mapping, replacing whatever overlapped it (MAP_FIXED semantics).
    /// Returns the pieces it replaced.
    pub fn map(&mut self, start: u64, end: u64, region: Region) -> Vec<Removed> {
        let removed = self.unmap(start, end);
        if end > start {
            self.vmas.insert(start, (end, region));
        }
        removed
    }

    /// Removes [start, end), splitting mappings that straddle its edges.
    pub fn unmap(&mut self, start: u64, end: u64) -> Vec<Removed> {
        let mut removed = Vec::new();
        if end <= start {
            return removed;
        }
        let overlapping: Vec<u64> =
            self.vmas.range(..end).rev().take_while(|(_, (e, _))| *e > start).map(|(s, _)| *s).collect();
        for s in overlapping {
            let (e, region) = self.vmas.remove(&s).expect("key just listed");
            if s < start {
                self.vmas.insert(s, (start, region.clone()));
            }
            if e > end {
                self.vmas.insert(end, (e, region.clone()));
            }
            removed.push(Removed { start: s.max(start), end: e.min(end), region });
        }
        removed.sort_by_key(|r| r.start);
        removed
    }

    pub fn find(&self, addr: u64) -> Option<&Region> {
        self.vmas.range(..=addr).next_back().filter(|(_, (end, _))| addr < *end).map(|(_, (_, region))| region)
    }

    /// Regions of the mappings overlapping [start, end), by a range query.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Region> {
        self.vmas.range(..end).rev().take_while(move |(_, (e, _))| *e > start).map(|(_, (_, r))| r)
    }

    pub fn clear(&mut self) {
        self.vmas.clear();
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &Region)> {
        self.vmas.iter().map(|(s, (e, r))| (*s, *e, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(inode: u64) -> Region {
        Region::File(FileId { major: 8, minor: 1, inode })
    }

    #[test]
    fn finds_the_region_holding_an_address() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x3000, file(1));
        a.map(0x5000, 0x6000, Region::Anon);
        assert_eq!(a.find(0x1000), Some(&file(1)));
        assert_eq!(a.find(0x2fff), Some(&file(1)));
        assert_eq!(a.find(0x3000), None);
        assert_eq!(a.find(0x5800), Some(&Region::Anon));
        assert_eq!(a.find(0x0fff), None);
    }

    #[test]
    fn unmapping_the_middle_splits_a_mapping() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x5000, file(1));
        let removed = a.unmap(0x2000, 0x3000);
        assert_eq!(removed, vec![Removed { start: 0x2000, end: 0x3000, region: file(1) }]);
        assert_eq!(a.find(0x1fff), Some(&file(1)));
        assert_eq!(a.find(0x2500), None);
        assert_eq!(a.find(0x3000), Some(&file(1)));
        assert_eq!(a.iter().count(), 2);
    }

    #[test]
    fn fixed_mapping_replaces_overlapped_pieces_of_several_mappings() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x3000, file(1));
        a.map(0x3000, 0x5000, file(2));
        let removed = a.map(0x2000, 0x4000, Region::Anon);
        assert_eq!(
            removed,
            vec![
                Removed { start: 0x2000, end: 0x3000, region: file(1) },
                Removed { start: 0x3000, end: 0x4000, region: file(2) },
            ]
        );
        let got: Vec<_> = a.iter().map(|(s, e, r)| (s, e, r.clone())).collect();
        assert_eq!(got, vec![(0x1000, 0x2000, file(1)), (0x2000, 0x4000, Region::Anon), (0x4000, 0x5000, file(2))]);
    }

    #[test]
    fn overlapping_finds_exactly_the_mappings_a_range_touches() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x2000, file(1));
        a.map(0x2000, 0x3000, Region::Anon);
        a.map(0x5000, 0x6000, file(2));
        let got: Vec<_> = a.overlapping(0x1800, 0x5001).cloned().collect();
        assert_eq!(got, vec![file(2), Region::Anon, file(1)]);
        assert_eq!(a.overlapping(0x3000, 0x5000).count(), 0);
        assert_eq!(a.overlapping(0x2fff, 0x3000).count(), 1);
    }

    #[test]
    fn unmapping_nothing_or_an_empty_range_changes_nothing() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x2000, Region::Heap);
        assert!(a.unmap(0x8000, 0x9000).is_empty());
        assert!(a.unmap(0x1000, 0x1000).is_empty());
        assert_eq!(a.find(0x1000), Some(&Region::Heap));
    }
}
