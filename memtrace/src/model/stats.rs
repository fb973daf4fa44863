//! The aggregator of this trace: mmap/munmap calls, page faults by region and
//! the files mapped by the target. A plain data structure fed with decoded
//! events (and file identities resolved by the caller), so tests can feed it.
use std::collections::BTreeMap;

use memtrace_common::PAGE_SIZE;
use serde::{Deserialize, Serialize};

use crate::{
    decode::FaultAccess,
    model::anon_origins::Site,
    model::aspace::{AddressSpace, AnonOrigin, FileId, Region, Removed},
    model::kernel_heap::KernelHeap,
};

const MAP_ANONYMOUS: u64 = 0x20;
const UNRESOLVED: &str = "[unresolved file]";

/// A file mapped by the target, as resolved from /proc/PID (kernel truth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub id: FileId,
    pub path: String,
    /// From stat of the mapped file; None when it could not be read.
    pub size_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultCounts {
    pub total: u64,
    pub read: u64,
    pub write: u64,
    pub exec: u64,
}

impl FaultCounts {
    fn add(&mut self, access: FaultAccess) {
        self.total += 1;
        match access {
            FaultAccess::Read => self.read += 1,
            FaultAccess::Write => self.write += 1,
            FaultAccess::Exec => self.exec += 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStats {
    pub path: String,
    pub size_bytes: Option<u64>,
    /// Successful mmap calls of this file during the trace.
    pub mmap_calls: u64,
    /// Bytes of the file mapped into the target now / at most at once.
    pub mapped_now: u64,
    pub mapped_peak: u64,
    pub faults: FaultCounts,
}

#[derive(Debug, Default)]
pub struct TraceStats {
    aspace: AddressSpace,
    pub files: BTreeMap<FileId, FileStats>,
    /// Faults by kind of region ("file", "[heap]", "[anon]", ...).
    pub regions: BTreeMap<String, FaultCounts>,
    /// Faults seen through events (the eBPF counter is the exact total of
    /// the user-mode ones).
    pub faults: FaultCounts,
    /// Of those, faults the kernel took in kernel mode on the target's user
    /// memory (copying into or out of it for read(), write(), ...).
    pub kernel_mode_faults: u64,
    /// Faults at addresses outside every known mapping.
    pub unattributed_faults: u64,
    pub mmap_calls: u64,
    pub mmap_failed: u64,
    pub munmap_calls: u64,
    pub munmap_failed: u64,
    pub madvise_calls: u64,
    pub madvise_failed: u64,
    pub mremap_calls: u64,
    pub mremap_failed: u64,
    pub execs: u64,
    /// File-backed mmaps whose file could not be identified from /proc.
    pub unresolved_file_mappings: u64,
    /// brk and anonymous mappings (the kernel's side of the heap).
    pub kernel_heap: KernelHeap,
}

/// Bytes of anonymous mappings among removed pieces.
fn anon_bytes(removed: &[Removed]) -> u64 {
    removed.iter().filter(|r| matches!(r.region, Region::Anon(_))).map(|r| r.end - r.start).sum()
}

fn page_end(start: u64, len: u64) -> u64 {
    start.saturating_add(len).saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

pub fn region_label(region: &Region) -> &str {
    match region {
        Region::File(_) => "file",
        Region::Heap => "[heap]",
        Region::Stack => "[stack]",
        Region::Anon(_) => "[anon]",
        Region::Special(name) => name,
    }
}

/// Counts one fault under `label`, allocating the key only the first time.
fn count_region(regions: &mut BTreeMap<String, FaultCounts>, label: &str, access: FaultAccess) {
    match regions.get_mut(label) {
        Some(c) => c.add(access),
        None => regions.entry(label.to_string()).or_default().add(access),
    }
}

impl TraceStats {
    /// A finished mmap, at monotonic time `ts_ns` (its exit event's); an
    /// anonymous one made by `creator`. Returns the mapping's region.
    pub fn on_mmap(
        &mut self,
        ts_ns: u64,
        (result, len, flags, fd): (i64, u64, u64, i32),
        file: Option<FileInfo>,
        creator: AnonOrigin,
    ) -> Option<Region> {
        self.mmap_calls += 1;
        if result < 0 {
            self.mmap_failed += 1;
            return None;
        }
        let start = result as u64;
        let region = if flags & MAP_ANONYMOUS != 0 || fd < 0 {
            Region::Anon(creator)
        } else if let Some(info) = file {
            let id = info.id;
            self.learn_file(info).mmap_calls += 1;
            Region::File(id)
        } else {
            self.unresolved_file_mappings += 1;
            Region::Special(UNRESOLVED.into())
        };
        let end = page_end(start, len);
        let removed = self.aspace.map_since(start, end, region.clone(), ts_ns);
        self.kernel_heap.on_anon_unmap(anon_bytes(&removed));
        if matches!(region, Region::Anon(_)) {
            self.kernel_heap.on_anon_map(end - start);
        }
        self.forget(&removed);
        self.account(&region, end - start, true);
        Some(region)
    }

    /// A finished munmap that began at monotonic time `entered_ns` (its
    /// enter event's; None: unknown, everything in the range goes).
    pub fn on_munmap(&mut self, addr: u64, len: u64, result: i64, entered_ns: Option<u64>) {
        self.munmap_calls += 1;
        if result < 0 {
            self.munmap_failed += 1;
            return;
        }
        let removed = self.aspace.unmap_older(addr, page_end(addr, len), entered_ns.unwrap_or(u64::MAX));
        self.kernel_heap.on_anon_unmap(anon_bytes(&removed));
        self.forget(&removed);
    }

    /// A mapping moved and/or resized: what was at [old, old + old_len) now
    /// spans [result, result + new_len) (MREMAP_DONTUNMAP aside).
    pub fn on_mremap(&mut self, old_addr: u64, old_len: u64, new_len: u64, result: i64) {
        self.mremap_calls += 1;
        if result < 0 {
            self.mremap_failed += 1;
            return;
        }
        let Some(region) = self.aspace.find(old_addr).cloned() else { return };
        let removed = self.aspace.unmap(old_addr, page_end(old_addr, old_len));
        self.kernel_heap.on_anon_unmap(anon_bytes(&removed));
        self.forget(&removed);
        let start = result as u64;
        let end = page_end(start, new_len);
        let replaced = self.aspace.map(start, end, region.clone());
        self.kernel_heap.on_anon_unmap(anon_bytes(&replaced));
        if matches!(region, Region::Anon(_)) {
            self.kernel_heap.on_anon_map(end - start);
        }
        self.forget(&replaced);
        self.account(&region, end - start, true);
    }

    /// The program break moved: the `[heap]` mapping grows or shrinks with it
    /// (page-rounded), so faults there need no /proc re-read.
    pub fn on_brk(&mut self, brk: u64) {
        let old = self.kernel_heap.brk_now;
        self.kernel_heap.on_brk(brk);
        let (Some(start), Some(old)) = (self.kernel_heap.brk_start, old) else { return };
        let (old_end, new_end) = (page_end(old, 0), page_end(brk, 0));
        if new_end > old_end && old_end >= start {
            self.aspace.map(old_end, new_end, Region::Heap);
        } else if new_end < old_end && new_end >= start {
            self.aspace.unmap(new_end, old_end);
        }
    }

    pub fn on_madvise(&mut self, result: i64) {
        self.madvise_calls += 1;
        if result < 0 {
            self.madvise_failed += 1;
        }
    }

    /// The model of a child forked now: the same mappings and files (its
    /// own counts from zero), the same program break.
    pub fn forked(&self) -> TraceStats {
        let mut files = self.files.clone();
        for f in files.values_mut() {
            (f.mmap_calls, f.mapped_peak, f.faults) = (0, f.mapped_now, FaultCounts::default());
        }
        TraceStats { aspace: self.aspace.clone(), files, kernel_heap: self.kernel_heap.forked(), ..Default::default() }
    }

    /// The process has ended: its address space model goes (its counts stay).
    pub fn compact(&mut self) {
        self.aspace = AddressSpace::default();
    }

    /// A new program image replaces the whole address space.
    pub fn on_exec(&mut self) {
        self.execs += 1;
        self.aspace.clear();
        for f in self.files.values_mut() {
            f.mapped_now = 0;
        }
    }

    /// Files mapped anywhere in [start, start + len).
    pub fn files_in(&self, start: u64, len: u64) -> Vec<FileId> {
        let mut files = Vec::new();
        for region in self.aspace.overlapping(start, start.saturating_add(len)) {
            if let Region::File(id) = region {
                if !files.contains(id) {
                    files.push(*id);
                }
            }
        }
        files
    }

    /// The places of the anonymous pages in [start, start + len), in address order.
    pub fn sites_in(&self, start: u64, len: u64) -> Vec<Site> {
        let mut sites: Vec<Site> = Vec::new();
        for (.., region) in self.aspace.pieces(start, start.saturating_add(len)) {
            let site = Site::of(region);
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        sites
    }

    /// The model's mappings: (start, end, region).
    pub fn mappings(&self) -> impl Iterator<Item = (u64, u64, &Region)> {
        self.aspace.iter()
    }

    /// In a file mapping whose file could not be identified.
    pub fn is_unresolved(&self, address: u64) -> bool {
        matches!(self.aspace.find(address), Some(Region::Special(name)) if name == UNRESOLVED)
    }

    pub fn knows(&self, address: u64) -> bool {
        self.aspace.find(address).is_some()
    }

    /// Counts a fault in the mapping that holds `address`; returns where it
    /// is (None: outside every known mapping; one lookup: this runs for
    /// every fault).
    pub fn on_fault(&mut self, address: u64, access: FaultAccess) -> Option<Site> {
        self.faults.add(access);
        match self.aspace.find(address) {
            Some(region) => {
                if let Region::File(id) = region {
                    if let Some(f) = self.files.get_mut(id) {
                        f.faults.add(access);
                    }
                }
                count_region(&mut self.regions, region_label(region), access);
                Some(Site::of(region))
            }
            None => {
                self.unattributed_faults += 1;
                count_region(&mut self.regions, "[unknown]", access);
                None
            }
        }
    }

    /// Replaces the model with a /proc/PID/maps snapshot (kernel truth), used
    /// at start, after exec and when a fault lands outside every known mapping.
    pub fn sync(&mut self, vmas: Vec<(u64, u64, Region)>, files: Vec<FileInfo>) {
        for info in files {
            self.learn_file(info);
        }
        // Anonymous mappings the events described keep their origins: the
        // kernel merges neighbours into one line of the maps file.
        let old = std::mem::take(&mut self.aspace);
        for f in self.files.values_mut() {
            f.mapped_now = 0;
        }
        for (start, end, region) in vmas {
            self.aspace.map(start, end, region.clone());
            self.account(&region, end - start, true);
            if matches!(region, Region::Anon(AnonOrigin::Unseen)) {
                for (s, e, known) in old.pieces(start, end) {
                    if matches!(known, Region::Anon(AnonOrigin::Mmap { .. })) {
                        self.aspace.map(s, e, known.clone());
                    }
                }
            }
        }
    }

    fn learn_file(&mut self, info: FileInfo) -> &mut FileStats {
        let entry = self.files.entry(info.id).or_insert_with(|| FileStats {
            path: info.path.clone(),
            size_bytes: info.size_bytes,
            mmap_calls: 0,
            mapped_now: 0,
            mapped_peak: 0,
            faults: FaultCounts::default(),
        });
        if entry.size_bytes.is_none() {
            entry.size_bytes = info.size_bytes;
        }
        // The latest name wins: a file deleted or renamed since it was mapped
        // shows as the kernel names it now ("... (deleted)").
        if entry.path != info.path {
            entry.path = info.path;
        }
        entry
    }

    fn forget(&mut self, removed: &[Removed]) {
        for r in removed {
            self.account(&r.region, r.end - r.start, false);
        }
    }

    fn account(&mut self, region: &Region, bytes: u64, added: bool) {
        let Region::File(id) = region else { return };
        let Some(f) = self.files.get_mut(id) else {
            return;
        };
        if added {
            f.mapped_now += bytes;
            f.mapped_peak = f.mapped_peak.max(f.mapped_now);
        } else {
            f.mapped_now = f.mapped_now.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARROW: FileId = FileId { major: 254, minor: 0, inode: 42 };

    fn arrow() -> Option<FileInfo> {
        Some(FileInfo { id: ARROW, path: "/data/x.arrow".into(), size_bytes: Some(10_000) })
    }

    #[test]
    fn the_heap_mapping_follows_the_break() {
        let mut s = TraceStats::default();
        s.on_brk(0x10_0000); // brk(0): the start
        s.on_brk(0x12_0800);
        assert!(s.knows(0x12_0000) && !s.knows(0x12_1000), "rounded up to the page");
        s.on_fault(0x11_0000, FaultAccess::Write);
        assert_eq!(s.regions["[heap]"].write, 1);
        s.on_brk(0x11_0000);
        assert!(!s.knows(0x11_0000) && s.knows(0x10_f000));
        assert_eq!(s.kernel_heap.brk_bytes(), 0x1_0000);
    }

    #[test]
    fn faults_are_attributed_to_the_mapping_that_holds_them() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (0x10000, 10_000, 0x1, 3), arrow(), AnonOrigin::Unseen);
        s.on_mmap(0, (0x40000, 8192, 0x22, -1), None, AnonOrigin::Unseen);
        s.on_fault(0x10010, FaultAccess::Read);
        s.on_fault(0x12fff, FaultAccess::Read); // last page, rounded up from 10,000 bytes
        s.on_fault(0x40000, FaultAccess::Write);
        s.on_fault(0x90000, FaultAccess::Read);
        let f = &s.files[&ARROW];
        assert_eq!((f.faults.total, f.faults.read), (2, 2));
        assert_eq!(f.mapped_peak, 12_288);
        assert_eq!(s.regions["[anon]"].write, 1);
        assert_eq!(s.unattributed_faults, 1);
        assert_eq!(s.faults.total, 4);
    }

    #[test]
    fn failed_calls_are_counted_but_map_nothing() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (-12, 4096, 0x1, 3), arrow(), AnonOrigin::Unseen);
        s.on_munmap(0x1000, 4096, -22, None);
        assert_eq!((s.mmap_calls, s.mmap_failed, s.munmap_calls, s.munmap_failed), (1, 1, 1, 1));
        assert!(s.files.is_empty());
        assert!(!s.knows(0));
    }

    #[test]
    fn a_file_mapped_twice_keeps_its_peak_after_a_partial_unmap() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (0x100000, 8192, 0x1, 3), arrow(), AnonOrigin::Unseen);
        s.on_mmap(0, (0x200000, 8192, 0x1, 4), arrow(), AnonOrigin::Unseen);
        s.on_munmap(0x100000, 4096, 0, None);
        let f = &s.files[&ARROW];
        assert_eq!((f.mmap_calls, f.mapped_peak, f.mapped_now), (2, 16384, 12288));
        s.on_fault(0x100000, FaultAccess::Read);
        assert_eq!(s.unattributed_faults, 1);
    }

    #[test]
    fn mremap_moves_and_grows_a_file_mapping() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (0x100000, 8192, 0x1, 3), arrow(), AnonOrigin::Unseen);
        s.on_mremap(0x100000, 8192, 16384, 0x900000);
        assert!(!s.knows(0x100000));
        s.on_fault(0x903000, FaultAccess::Read);
        let f = &s.files[&ARROW];
        assert_eq!((f.mapped_now, f.mapped_peak, f.faults.total), (16384, 16384, 1));
        s.on_mremap(0x900000, 16384, 4096, -12);
        assert_eq!(s.mremap_failed, 1);
    }

    #[test]
    fn an_unidentified_file_mapping_is_counted_not_guessed() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (0x100000, 4096, 0x1, 3), None, AnonOrigin::Unseen);
        s.on_fault(0x100000, FaultAccess::Read);
        assert_eq!(s.unresolved_file_mappings, 1);
        assert_eq!(s.regions["[unresolved file]"].total, 1);
        assert!(s.files.is_empty());
    }

    #[test]
    fn exec_and_sync_replace_the_model() {
        let mut s = TraceStats::default();
        s.on_mmap(0, (0x100000, 4096, 0x1, 3), arrow(), AnonOrigin::Unseen);
        s.on_exec();
        assert!(!s.knows(0x100000));
        assert_eq!(s.files[&ARROW].mapped_now, 0);
        s.sync(vec![(0x500000, 0x502000, Region::File(ARROW)), (0x600000, 0x601000, Region::Heap)], vec![]);
        assert_eq!(s.files[&ARROW].mapped_now, 8192);
        s.on_fault(0x600010, FaultAccess::Write);
        assert_eq!(s.regions["[heap]"].write, 1);
    }
}
