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

    /// From stat's `st_dev` (the userspace dev_t encoding) and `st_ino`.
    pub fn from_user_dev(st_dev: u64, inode: u64) -> FileId {
        // glibc's gnu_dev_major/minor.
        let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0xfff);
        let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0xff);
        FileId { major: major as u32, minor: minor as u32, inode }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    File(FileId),
    /// The brk heap.
    Heap,
    /// Main or thread stacks.
    Stack,
    /// Anonymous mappings (allocator arenas, large allocations, ...), with
    /// who made them.
    Anon(AnonOrigin),
    /// Kernel-provided pseudo mappings: [vdso], [vvar], ...
    Special(String),
}

/// Who made an anonymous mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnonOrigin {
    /// An mmap memtrace saw: the process that made it (a child inherits its
    /// parent's mappings and their origins) and the key of its user stack in
    /// STACKS (0: the stack was lost).
    Mmap { pid: u32, stack_id: u64 },
    /// There before memtrace saw it (found in /proc: mapped before attach,
    /// or by the kernel itself).
    Unseen,
}

/// A piece of a mapping removed from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub start: u64,
    pub end: u64,
    pub region: Region,
}

#[derive(Clone, Default, Debug)]
pub struct AddressSpace {
    /// start -> (end, region, when it was mapped: the mmap event's
    /// monotonic ns, 0 when learnt from /proc); ranges never overlap.
    vmas: BTreeMap<u64, (u64, Region, u64)>,
}

impl AddressSpace {
    /// Adds a mapping, replacing whatever overlapped it (MAP_FIXED semantics).
    /// Returns the pieces it replaced.
    pub fn map(&mut self, start: u64, end: u64, region: Region) -> Vec<Removed> {
        self.map_since(start, end, region, 0)
    }

    /// `map`, for a mapping made at monotonic time `since`.
    pub fn map_since(&mut self, start: u64, end: u64, region: Region, since: u64) -> Vec<Removed> {
        let removed = self.unmap(start, end);
        if end > start {
            self.vmas.insert(start, (end, region, since));
        }
        removed
    }

    /// Removes [start, end), splitting mappings that straddle its edges.
    pub fn unmap(&mut self, start: u64, end: u64) -> Vec<Removed> {
        self.unmap_older(start, end, u64::MAX)
    }

    /// Removes the parts of [start, end) mapped before `before`: an munmap
    /// that began then cannot have removed a mapping made later (another
    /// thread's mmap that got the freed addresses, whose event can reach
    /// the ring buffer before the munmap's own exit event).
    pub fn unmap_older(&mut self, start: u64, end: u64, before: u64) -> Vec<Removed> {
        let mut removed = Vec::new();
        if end <= start {
            return removed;
        }
        let overlapping: Vec<u64> = self
            .vmas
            .range(..end)
            .rev()
            .take_while(|(_, (e, ..))| *e > start)
            .filter(|(_, (_, _, since))| *since < before)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let (e, region, since) = self.vmas.remove(&s).expect("key just listed");
            if s < start {
                self.vmas.insert(s, (start, region.clone(), since));
            }
            if e > end {
                self.vmas.insert(end, (e, region.clone(), since));
            }
            removed.push(Removed { start: s.max(start), end: e.min(end), region });
        }
        removed.sort_by_key(|r| r.start);
        removed
    }

    pub fn find(&self, addr: u64) -> Option<&Region> {
        self.vmas.range(..=addr).next_back().filter(|(_, (end, ..))| addr < *end).map(|(_, (_, region, _))| region)
    }

    /// Regions of the mappings overlapping [start, end), by a range query.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Region> {
        self.vmas.range(..end).rev().take_while(move |(_, (e, ..))| *e > start).map(|(_, (_, r, _))| r)
    }

    pub fn clear(&mut self) {
        self.vmas.clear();
    }

    /// Every mapping: (start, end, region).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &Region)> {
        self.vmas.iter().map(|(s, (e, r, _))| (*s, *e, r))
    }

    /// The pieces of [start, end) in the model, in address order.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, &Region)> {
        let mut out: Vec<_> = self
            .vmas
            .range(..end)
            .rev()
            .take_while(|(_, (e, ..))| *e > start)
            .map(|(s, (e, r, _))| ((*s).max(start), (*e).min(end), r))
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANON: Region = Region::Anon(AnonOrigin::Unseen);

    fn file(inode: u64) -> Region {
        Region::File(FileId { major: 8, minor: 1, inode })
    }

    #[test]
    fn finds_the_region_holding_an_address() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x3000, file(1));
        a.map(0x5000, 0x6000, ANON);
        assert_eq!(a.find(0x1000), Some(&file(1)));
        assert_eq!(a.find(0x2fff), Some(&file(1)));
        assert_eq!(a.find(0x3000), None);
        assert_eq!(a.find(0x5800), Some(&ANON));
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
        let removed = a.map(0x2000, 0x4000, ANON);
        assert_eq!(
            removed,
            vec![
                Removed { start: 0x2000, end: 0x3000, region: file(1) },
                Removed { start: 0x3000, end: 0x4000, region: file(2) },
            ]
        );
        let got: Vec<_> = a.iter().map(|(s, e, r)| (s, e, r.clone())).collect();
        assert_eq!(got, vec![(0x1000, 0x2000, file(1)), (0x2000, 0x4000, ANON), (0x4000, 0x5000, file(2))]);
    }

    #[test]
    fn overlapping_finds_exactly_the_mappings_a_range_touches() {
        let mut a = AddressSpace::default();
        a.map(0x1000, 0x2000, file(1));
        a.map(0x2000, 0x3000, ANON);
        a.map(0x5000, 0x6000, file(2));
        let got: Vec<_> = a.overlapping(0x1800, 0x5001).cloned().collect();
        assert_eq!(got, vec![file(2), ANON, file(1)]);
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

    #[test]
    fn an_munmap_keeps_what_was_mapped_after_it_began() {
        let mut a = AddressSpace::default();
        a.map_since(0x1000, 0x3000, file(1), 10);
        // Another thread's mmap got [0x1000, 0x3000) after the munmap (begun
        // at 20) freed it, and its event came first.
        a.map_since(0x1000, 0x3000, file(2), 30);
        assert!(a.unmap_older(0x1000, 0x3000, 20).is_empty());
        assert_eq!(a.find(0x1000), Some(&file(2)));
        // An munmap begun after it removes it.
        assert_eq!(a.unmap_older(0x1000, 0x3000, 40).len(), 1);
        assert_eq!(a.find(0x1000), None);
    }
}
