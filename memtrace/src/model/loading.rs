//! Per-file loading: which bytes of each mapped file the kernel really mapped
//! into the target, read from disk for it and evicted.
//!
//! The kernel's RSS counter for file pages (`kmem:rss_stat`, member 0) is
//! exact; the filemap tracepoints say which file and pages a fault asked for
//! but overcount (fault-around ranges include pages the kernel skipped). So
//! each change of the counter is attributed to the file the changing thread
//! was working on: the file of its last page fault (fault-around's counter
//! update comes just before `mm_filemap_map_pages`, a direct fault's after
//! `mm_filemap_fault`, a copy-on-write's after the fault), or the files of
//! the range it is unmapping.
use std::collections::{BTreeMap, HashMap};

use crate::{decode::RssMember, model::aspace::FileId, model::pageset::PageSet};

/// memtrace-common's PAGE_SIZE under the name this module's users know
/// (the session imports `loading::PAGE`): one constant, two spellings.
pub use memtrace_common::PAGE_SIZE as PAGE;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileLoad {
    /// Bytes the kernel mapped into the target (sum of attributed increases).
    pub loaded_bytes: u64,
    /// Bytes unmapped again (munmap, madvise, copy-on-write, reclaim).
    pub unloaded_bytes: u64,
    /// Of `loaded_bytes`, mapped by fault-around (`mm_filemap_map_pages`).
    pub fault_around_bytes: u64,
    /// Distinct pages put into the page cache while the target's faults
    /// looked the file up (synchronous reads and the readahead they started).
    /// Distinct, so a page read twice counts once.
    pub read_from_disk_bytes: u64,
    disk_pages: PageSet,
    /// Pages put into the page cache by the target outside a fault: write(2)
    /// of new data, read(2), fadvise/madvise readahead. Not mapping loads.
    pub cache_added_other_bytes: u64,
    /// Pages of the file that left the page cache while traced (reclaim,
    /// MADV_PAGEOUT, truncation), whoever had them mapped.
    pub evicted_bytes: u64,
    /// Highest `resident_bytes()` reached (what the file cost at its peak).
    pub peak_resident_bytes: u64,
    /// Pages the filemap tracepoints named for the target (an overcount of
    /// what was mapped, kept for page-level views).
    pub pages: PageSet,
    /// `pages.len()` when the page sets were dropped (the process ended).
    compacted_pages: u64,
}

impl FileLoad {
    /// Pages the filemap tracepoints named (`pages`, or its size when
    /// the process ended and its page sets were dropped).
    pub fn fault_range_pages(&self) -> u64 {
        self.pages.len() + self.compacted_pages
    }

    /// Drops the page sets, keeping the figures (no event of an ended
    /// process follows: nothing more to tell apart).
    fn compact(&mut self) {
        self.compacted_pages += self.pages.len();
        self.pages = PageSet::default();
        self.disk_pages = PageSet::default();
    }

    /// Bytes of the file mapped now by this accounting (measured).
    pub fn resident_bytes(&self) -> u64 {
        self.loaded_bytes.saturating_sub(self.unloaded_bytes)
    }
}

/// What a thread is doing, for attributing its next RSS change.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Context {
    /// Handling a page fault in a mapping of this file (None: not a file).
    Fault(Option<FileId>),
    /// Inside the page-cache lookup of a fault on this file (between
    /// `mm_filemap_fault` and the counter change that maps the page): pages
    /// added to the cache now are read from disk for the mapping.
    CacheLookup(FileId),
    /// Inside munmap or madvise of a range holding these files.
    Range(Vec<FileId>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssCounters {
    pub file: u64,
    pub anon: u64,
    pub shmem: u64,
    pub swap: u64,
}

impl RssCounters {
    pub fn total(&self) -> u64 {
        self.file + self.anon + self.shmem
    }

    fn slot(&mut self, m: RssMember) -> &mut u64 {
        match m {
            RssMember::File => &mut self.file,
            RssMember::Anon => &mut self.anon,
            RssMember::Shmem => &mut self.shmem,
            RssMember::Swap => &mut self.swap,
        }
    }
}

#[derive(Debug, Default)]
pub struct Loading {
    pub files: BTreeMap<FileId, FileLoad>,
    context: HashMap<u32, Context>,
    /// The last increase attributed on each thread, so that the fault-around
    /// event that follows it can classify it.
    last_increase: HashMap<u32, (FileId, u64)>,
    /// The kernel's RSS counters at the start of the trace and now (kernel truth).
    pub rss_start: Option<RssCounters>,
    pub rss_now: RssCounters,
    /// The counters when their total was highest.
    pub rss_peak: RssCounters,
    /// File-page changes no file could be named for.
    pub unattributed_loaded_bytes: u64,
    pub unattributed_unloaded_bytes: u64,
    /// File pages given back as the process tore its memory down at exit
    /// (after the exit stop): not unmapping by the program, so no file's figure.
    pub released_at_exit_bytes: u64,
    exiting: bool,
}

impl Loading {
    /// The counters before the first traced change (attach mode reads them
    /// from /proc; a fresh exec starts from zero).
    pub fn set_baseline(&mut self, rss: RssCounters) {
        self.rss_start = Some(rss);
        self.rss_now = rss;
        self.rss_peak = rss;
    }

    /// The target is stopped at exit: every later decrease is its teardown.
    pub fn on_exit(&mut self) {
        self.exiting = true;
        self.context.clear();
    }

    /// The process has ended: only its figures are kept.
    pub fn compact(&mut self) {
        self.files.values_mut().for_each(FileLoad::compact);
        self.context = HashMap::new();
        self.last_increase = HashMap::new();
    }

    pub fn on_exec(&mut self) {
        self.context.clear();
        self.last_increase.clear();
        self.set_baseline(RssCounters::default());
    }

    pub fn on_fault(&mut self, tid: u32, file: Option<FileId>) {
        self.context.insert(tid, Context::Fault(file));
        self.last_increase.remove(&tid);
    }

    pub fn on_range_enter(&mut self, tid: u32, files: Vec<FileId>) {
        self.context.insert(tid, Context::Range(files));
    }

    pub fn on_range_exit(&mut self, tid: u32) {
        self.context.remove(&tid);
    }

    pub fn on_rss(&mut self, tid: u32, member: RssMember, bytes: u64) {
        if self.rss_start.is_none() {
            self.set_baseline(RssCounters::default());
        }
        let slot = self.rss_now.slot(member);
        let delta = bytes as i64 - *slot as i64;
        *slot = bytes;
        if self.rss_now.total() > self.rss_peak.total() {
            self.rss_peak = self.rss_now;
        }
        // Pages of tmpfs and memfd files are counted as shmem, not file pages.
        if !matches!(member, RssMember::File | RssMember::Shmem) || delta == 0 {
            return;
        }
        if self.exiting && delta < 0 {
            self.released_at_exit_bytes += delta.unsigned_abs();
            return;
        }
        if let Some(Context::CacheLookup(f)) = self.context.get(&tid) {
            self.context.insert(tid, Context::Fault(Some(*f)));
        }
        let file = match self.context.get(&tid) {
            Some(Context::Fault(file)) => *file,
            // Unmapping or madvise: the first file of the range that still has pages.
            Some(Context::Range(files)) if delta < 0 => {
                files.iter().copied().find(|f| self.files.get(f).is_some_and(|l| l.resident_bytes() > 0))
            }
            _ => None,
        };
        let Some(file) = file else {
            if delta > 0 {
                self.unattributed_loaded_bytes += delta as u64;
            } else {
                self.unattributed_unloaded_bytes += delta.unsigned_abs();
            }
            return;
        };
        let load = self.files.entry(file).or_default();
        if delta > 0 {
            load.loaded_bytes += delta as u64;
            load.peak_resident_bytes = load.peak_resident_bytes.max(load.resident_bytes());
            self.last_increase.insert(tid, (file, delta as u64));
        } else {
            load.unloaded_bytes += delta.unsigned_abs();
        }
    }

    pub fn on_filemap_fault(&mut self, tid: u32, file: FileId, index: u64) {
        self.context.insert(tid, Context::CacheLookup(file));
        self.files.entry(file).or_default().pages.insert(index, index);
    }

    pub fn on_map_pages(&mut self, tid: u32, file: FileId, first: u64, last: u64) {
        let load = self.files.entry(file).or_default();
        load.pages.insert(first, last);
        if let Some((f, bytes)) = self.last_increase.remove(&tid) {
            if f == file {
                load.fault_around_bytes += bytes;
            }
        }
    }

    pub fn on_cache_add(&mut self, tid: u32, file: FileId, index: u64, pages: u64) {
        let in_fault = matches!(self.context.get(&tid), Some(Context::CacheLookup(_)));
        let load = self.files.entry(file).or_default();
        if in_fault {
            load.disk_pages.insert(index, index + pages - 1);
            load.read_from_disk_bytes = load.disk_pages.len() * PAGE;
        } else {
            load.cache_added_other_bytes += pages * PAGE;
        }
    }

    pub fn on_cache_delete(&mut self, file: FileId, index: u64, pages: u64) {
        // The kernel only reports evictions of files the target maps. Large
        // folios mapped whole name no pages in the filemap tracepoints, so
        // the page set cannot say which evicted pages were the target's.
        let load = self.files.entry(file).or_default();
        load.evicted_bytes += pages * PAGE;
        load.pages.remove(index, index + pages - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { major: 254, minor: 0, inode: 1 };
    const B: FileId = FileId { major: 254, minor: 0, inode: 2 };

    fn loading() -> Loading {
        let mut l = Loading::default();
        l.set_baseline(RssCounters { file: 100 * PAGE, ..Default::default() });
        l
    }

    #[test]
    fn fault_around_counts_the_counter_change_not_the_range() {
        let mut l = loading();
        l.on_fault(1, Some(A));
        // The kernel mapped 14 of the 16 pages in the range (2 not uptodate).
        l.on_rss(1, RssMember::File, 114 * PAGE);
        l.on_map_pages(1, A, 0, 15);
        let a = &l.files[&A];
        assert_eq!(a.loaded_bytes, 14 * PAGE);
        assert_eq!(a.fault_around_bytes, 14 * PAGE);
        assert_eq!(a.pages.len(), 16, "the range overcounts; it is kept only for page views");
    }

    #[test]
    fn a_direct_fault_is_attributed_to_the_file_the_page_cache_named() {
        let mut l = loading();
        l.on_fault(1, None); // address not (yet) known to be in a file mapping
        l.on_filemap_fault(1, B, 7);
        l.on_rss(1, RssMember::File, 101 * PAGE);
        assert_eq!(l.files[&B].loaded_bytes, PAGE);
        assert_eq!(l.files[&B].fault_around_bytes, 0);
    }

    #[test]
    fn threads_keep_their_own_context() {
        let mut l = loading();
        l.on_fault(1, Some(A));
        l.on_fault(2, Some(B));
        l.on_rss(2, RssMember::File, 104 * PAGE);
        l.on_rss(1, RssMember::File, 105 * PAGE);
        assert_eq!(l.files[&A].loaded_bytes, PAGE);
        assert_eq!(l.files[&B].loaded_bytes, 4 * PAGE);
    }

    #[test]
    fn unmapping_gives_pages_back_and_anon_changes_are_not_file_loading() {
        let mut l = loading();
        l.on_fault(1, Some(A));
        l.on_rss(1, RssMember::File, 110 * PAGE);
        l.on_rss(1, RssMember::Anon, 50 * PAGE);
        l.on_range_enter(1, vec![B, A]);
        l.on_rss(1, RssMember::File, 104 * PAGE);
        l.on_range_exit(1);
        let a = &l.files[&A];
        assert_eq!((a.loaded_bytes, a.unloaded_bytes, a.resident_bytes()), (10 * PAGE, 6 * PAGE, 4 * PAGE));
        assert_eq!(a.peak_resident_bytes, 10 * PAGE);
        assert_eq!(l.rss_now.anon, 50 * PAGE);
        assert!(!l.files.contains_key(&B));
    }

    #[test]
    fn changes_without_context_are_counted_as_unattributed() {
        let mut l = loading();
        l.on_rss(0, RssMember::File, 90 * PAGE); // reclaim, from another task
        l.on_rss(3, RssMember::File, 95 * PAGE); // a thread never seen faulting
        assert_eq!(l.unattributed_unloaded_bytes, 10 * PAGE);
        assert_eq!(l.unattributed_loaded_bytes, 5 * PAGE);
        assert!(l.files.is_empty());
    }

    #[test]
    fn disk_reads_and_evictions_of_named_pages() {
        let mut l = loading();
        l.on_fault(1, Some(A));
        l.on_rss(1, RssMember::File, 116 * PAGE);
        l.on_map_pages(1, A, 0, 15);
        l.on_filemap_fault(1, A, 20);
        l.on_cache_add(1, A, 16, 16); // the fault's read and its readahead
        l.on_cache_add(1, A, 24, 8); // overlaps: counted once
        l.on_rss(1, RssMember::File, 117 * PAGE);
        l.on_cache_add(1, A, 40, 4); // after the fault: write(2) of new data, say
        l.on_cache_delete(A, 8, 16);
        let a = &l.files[&A];
        assert_eq!(a.read_from_disk_bytes, 16 * PAGE); // pages 16..=31
        assert_eq!(a.cache_added_other_bytes, 4 * PAGE);
        assert_eq!(a.loaded_bytes, 17 * PAGE);
        assert_eq!(a.evicted_bytes, 16 * PAGE);
        assert_eq!(a.pages.len(), 8, "pages 0..=7 remain named");
    }

    #[test]
    fn teardown_after_the_exit_stop_is_no_files_unloading() {
        let mut l = loading();
        l.on_fault(1, Some(A));
        l.on_rss(1, RssMember::File, 110 * PAGE);
        l.on_exit();
        l.on_rss(1, RssMember::File, 0);
        assert_eq!(l.files[&A].unloaded_bytes, 0);
        assert_eq!(l.released_at_exit_bytes, 110 * PAGE);
        assert_eq!(l.unattributed_unloaded_bytes, 0);
    }

    #[test]
    fn exec_starts_a_new_mm_from_zero() {
        let mut l = loading();
        l.on_exec();
        l.on_fault(1, Some(A));
        l.on_rss(1, RssMember::File, 3 * PAGE);
        assert_eq!(l.files[&A].loaded_bytes, 3 * PAGE);
    }
}
