//! One traced process as the consumer models it: its address space and
//! file statistics, its page loading, its own phases, its own /proc. The
//! consumer routes each event to the process the kernel named in the
//! record's header; the scope's phases (every process's boundaries and
//! `memtrace mark`) and the allocation stream stay with the consumer.
use std::collections::{HashMap, HashSet};

use memtrace_common::{event::RangeOp, HeapTotals};

use super::consumer::ProcReader;
use crate::{
    decode::{Event, FaultAccess, RssMember},
    model::{
        anon_origins::{AnonOrigins, Site},
        aspace::{AnonOrigin, FileId, Region},
        heap_marks::HeapMarks,
        loading::Loading,
        phases::{FileCounts, Phases, Totals},
        stats::{FileInfo, TraceStats},
    },
    symbolize::FileMapping,
};

/// How a traced process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEnd {
    /// When its last thread exited (monotonic ns).
    pub ts_ns: u64,
    /// Its heap totals then (measured in eBPF).
    pub heap: HeapTotals,
}

pub struct ProcessModel {
    pub pid: u32,
    /// The traced process that forked it (None: named by the user).
    pub parent: Option<u32>,
    /// Its command line when memtrace first saw it (and after each exec).
    pub command: String,
    /// When it was forked, or when tracing began (monotonic ns).
    pub started_ns: u64,
    pub ended: Option<ProcessEnd>,
    /// Its exit status from its ptrace tracer (run mode).
    pub exit: Option<crate::target::child::ChildExit>,
    proc: Box<dyn ProcReader>,
    pub stats: TraceStats,
    pub loading: Loading,
    /// Its anonymous memory by where it lives and who mapped it.
    pub anon: AnonOrigins,
    /// The kernel's file identity of each thread's mmap in progress (and
    /// whether the fd is a character device), and its path in its filesystem.
    mmap_file: HashMap<u32, (i64, FileId, bool)>,
    mmap_path: HashMap<u32, (i64, String, bool)>,
    /// When each thread's munmap, madvise or mremap in progress began.
    range_entered_ns: HashMap<u32, u64>,
    /// Pages found outside every mapping at the latest /proc re-read: another
    /// fault there does not trigger a new re-read (mappings the events did
    /// not describe, e.g. the kernel's own in execve).
    unknown_pages: HashSet<u64>,
    /// Timestamp of the latest phase marker of its main thread: where a
    /// `--phase-truth` stop belongs.
    pub last_main_marker_ns: Option<u64>,
    /// When it last called execve (allocations before it died with that image).
    pub last_exec_ns: u64,
    /// Its file mappings at the latest /proc read: allocation stacks are
    /// symbolized with them if it is gone at stop.
    pub mappings: Vec<FileMapping>,
    /// An exec or an executable file mapping was seen since the session last
    /// refreshed its unwind tables.
    pub exec_mapped: bool,
    /// Its own phases (its markers, and the scope's user marks), measured
    /// with its own figures.
    pub phases: Phases,
    /// Its own heap totals at each of those boundaries.
    pub heap_marks: HeapMarks,
}

impl ProcessModel {
    pub fn new(pid: u32, parent: Option<u32>, started_ns: u64, proc: Box<dyn ProcReader>) -> ProcessModel {
        let command = proc.command_line().unwrap_or_else(|| format!("[pid {pid}]"));
        ProcessModel {
            pid,
            parent,
            command,
            started_ns,
            ended: None,
            exit: None,
            proc,
            stats: TraceStats::default(),
            loading: Loading::default(),
            anon: AnonOrigins::default(),
            mmap_file: HashMap::new(),
            mmap_path: HashMap::new(),
            range_entered_ns: HashMap::new(),
            unknown_pages: HashSet::new(),
            last_main_marker_ns: None,
            last_exec_ns: 0,
            mappings: Vec::new(),
            exec_mapped: false,
            phases: Phases::default(),
            heap_marks: HeapMarks::default(),
        }
    }

    /// A child `parent` forked: the same mappings (the parent's model at
    /// the fork, in event order), its own counters from zero, the kernel's
    /// RSS counters it starts with (pages copied at the fork) as baseline.
    pub fn forked(parent: &ProcessModel, pid: u32, ts_ns: u64, proc: Box<dyn ProcReader>) -> ProcessModel {
        let mut child = ProcessModel::new(pid, Some(parent.pid), ts_ns, proc);
        child.stats = parent.stats.forked();
        child.anon = AnonOrigins::forked();
        child.mappings = parent.mappings.clone();
        child.last_exec_ns = parent.last_exec_ns;
        if let Some(rss) = child.proc.rss_counters() {
            child.loading.set_baseline(rss);
        }
        // It is inside the phases open in its parent (and will end them),
        // from its own figures at birth: nothing loaded, no heap of its own.
        let totals = child.phase_totals();
        child.phases = parent.phases.forked(&totals);
        child.heap_marks = parent.heap_marks.forked(child.phases.open_seqs());
        child
    }

    /// A running process that joined the scope: what it maps now, and its
    /// RSS counters now as the baseline (its pages from before are not
    /// "loaded" while traced).
    pub fn joined_now(&mut self) {
        self.sync();
        if let Some(rss) = self.proc.rss_counters() {
            self.loading.set_baseline(rss);
        }
    }

    /// Its running totals for phase accounting.
    pub fn phase_totals(&self) -> Totals {
        let mut totals = Totals::default();
        for (id, l) in &self.loading.files {
            totals.files.insert(
                *id,
                FileCounts {
                    loaded: l.loaded_bytes,
                    fault_around: l.fault_around_bytes,
                    read_from_disk: l.read_from_disk_bytes,
                    unloaded: l.unloaded_bytes,
                },
            );
        }
        totals.page_faults = self.stats.faults.total;
        if self.alive() {
            totals.anon_rss = self.loading.rss_now.anon;
        }
        totals
    }

    /// A phase boundary in this process (or one marked for the whole scope).
    pub fn phase(&mut self, begin: bool, name: &str, ts_ns: u64, seq: u32) {
        let totals = self.phase_totals();
        if begin {
            self.phases.begin(name.to_string(), ts_ns, seq, totals);
        } else {
            self.phases.end(name, ts_ns, seq, &totals);
            self.phases.fold_ready(&mut self.heap_marks);
        }
        self.heap_marks.on_marker(seq, ts_ns, self.phases.current_path());
    }

    /// Re-reads the maps file: the model, and the mappings kept for
    /// symbolizing stacks if the process is gone at stop.
    pub fn sync(&mut self) {
        if let Some(snap) = self.proc.snapshot() {
            self.mappings = snap.mappings;
            self.stats.sync(snap.vmas, snap.files);
        }
        self.unknown_pages.clear();
    }

    /// The kernel's (minor, major) fault counts so far.
    pub fn kernel_faults(&self) -> Option<(u64, u64)> {
        self.proc.faults()
    }

    /// A NUL-terminated string in the process's memory.
    pub fn c_string(&self, addr: u64, max: usize) -> Option<String> {
        self.proc.c_string(addr, max)
    }

    /// One event of this process into its aggregators. Scope-wide events
    /// (phases, heap marks, the allocation stream, forks) are the
    /// consumer's and ignored here.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::MmapPath { tid, result, path, complete, .. } => {
                self.mmap_path.insert(tid, (result, path, complete));
            }
            Event::MmapFile { tid, result, file, char_device, .. } => {
                self.mmap_file.insert(tid, (result, file, char_device));
            }
            Event::Mmap { ts_ns, tid, result, len, prot, flags, fd, stack_id, .. } => {
                const PROT_EXEC: u64 = 4;
                self.exec_mapped |= result >= 0 && fd >= 0 && prot & PROT_EXEC != 0;
                // The kernel named the file as the mapping was made (device,
                // inode, path in its filesystem). /proc names it only if the
                // same file is still there: by now another may be mapped at
                // the address. Never /proc/PID/fd/FD: the fd may name another file.
                let ident = self.mmap_file.remove(&tid).filter(|(r, ..)| *r == result);
                let kernel_path =
                    self.mmap_path.remove(&tid).filter(|(r, _, complete)| *r == result && *complete).map(|(_, p, _)| p);
                let from_proc = (result >= 0 && fd >= 0).then(|| self.proc.file_at(result as u64)).flatten();
                let file = match (from_proc, ident) {
                    (Some(info), None) => Some(info),
                    (Some(info), Some((_, id, _))) if info.id == id => Some(info),
                    // A device's mmap may map a file of its own (a shared
                    // /dev/zero mapping is a shmem file): /proc names what is mapped.
                    (Some(info), Some((_, _, true))) => Some(info),
                    (_, Some((_, id, _))) => Some(self.named_file(id, kernel_path.as_deref())),
                    (None, None) => None,
                };
                let creator = AnonOrigin::Mmap { pid: self.pid, stack_id };
                if let Some(Region::Anon(origin)) = self.stats.on_mmap(ts_ns, (result, len, flags, fd), file, creator) {
                    self.anon.on_mmap(origin, len);
                }
            }
            Event::RangeEnter { tid, addr, op: RangeOp::Brk, .. } => {
                // A lowering of the break gives the heap's pages back.
                let heap = &self.stats.kernel_heap;
                if let (Some(start), Some(now)) = (heap.brk_start, heap.brk_now) {
                    if addr >= start && addr < now {
                        self.anon.on_range_enter(tid, vec![Site::Brk]);
                    }
                }
            }
            Event::RangeEnter { ts_ns, tid, addr, len, .. } => {
                self.range_entered_ns.insert(tid, ts_ns);
                self.loading.on_range_enter(tid, self.stats.files_in(addr, len));
                self.anon.on_range_enter(tid, self.stats.sites_in(addr, len));
            }
            Event::Mremap { tid, old_addr, old_len, new_len, result, .. } => {
                self.range_entered_ns.remove(&tid);
                self.stats.on_mremap(old_addr, old_len, new_len, result);
                self.loading.on_range_exit(tid);
                self.anon.on_range_exit(tid);
            }
            Event::Madvise { tid, result, .. } => {
                self.range_entered_ns.remove(&tid);
                self.stats.on_madvise(result);
                self.loading.on_range_exit(tid);
                self.anon.on_range_exit(tid);
            }
            Event::Munmap { tid, addr, len, result, .. } => {
                let entered = self.range_entered_ns.remove(&tid);
                self.stats.on_munmap(addr, len, result, entered);
                self.loading.on_range_exit(tid);
                self.anon.on_range_exit(tid);
            }
            Event::PageFault { tid, address, access, kernel_mode, .. } => {
                if kernel_mode {
                    self.stats.kernel_mode_faults += 1;
                }
                self.on_fault(tid, address, access);
            }
            Event::Exec { ts_ns, .. } => {
                self.last_exec_ns = ts_ns;
                self.exec_mapped = true;
                self.stats.on_exec();
                self.stats.kernel_heap.on_exec(self.proc.brk_start());
                self.loading.on_exec();
                self.anon.on_exec();
                self.sync();
                if let Some(command) = self.proc.command_line() {
                    self.command = command;
                }
            }
            Event::Phase { ts_ns, tid, .. } => {
                if tid == self.pid {
                    self.last_main_marker_ns = Some(ts_ns);
                }
            }
            Event::Brk { tid, brk, .. } => {
                self.stats.on_brk(brk);
                self.anon.on_range_exit(tid);
            }
            Event::RssStat { tid, member, bytes, .. } => {
                let before = self.loading.rss_now.anon;
                self.loading.on_rss(tid, member, bytes);
                if member == RssMember::Anon {
                    self.anon.on_rss(tid, self.loading.rss_now.anon as i64 - before as i64);
                }
            }
            Event::FilemapFault { tid, file, index, .. } => self.loading.on_filemap_fault(tid, file, index),
            Event::FilemapMapPages { tid, file, first, last, .. } => self.loading.on_map_pages(tid, file, first, last),
            Event::PageCacheAdd { tid, file, index, pages, .. } => self.loading.on_cache_add(tid, file, index, pages),
            Event::PageCacheDelete { file, index, pages, .. } => self.loading.on_cache_delete(file, index, pages),
            Event::ProcessExit { ts_ns, totals, .. } => self.ended = Some(ProcessEnd { ts_ns, heap: totals }),
            Event::ProcessJoin { .. } => {}
            Event::HeapMark { .. } | Event::Alloc { .. } | Event::Free { .. } | Event::ProcessFork { .. } => {}
        }
    }

    fn on_fault(&mut self, tid: u32, address: u64, access: FaultAccess) {
        // Outside every known mapping, or in a file mapping whose file could
        // not be named when its mmap was read (it had moved or gone by then):
        // the maps file says what is there now.
        let unsure = |s: &TraceStats| !s.knows(address) || s.is_unresolved(address);
        if unsure(&self.stats) && !self.unknown_pages.contains(&(address >> 12)) {
            self.sync();
            if unsure(&self.stats) {
                self.unknown_pages.insert(address >> 12);
            }
        }
        let site = self.stats.on_fault(address, access);
        let file = match site {
            Some(Site::FileCopy(id)) => Some(id),
            _ => None,
        };
        self.loading.on_fault(tid, file);
        self.anon.on_fault(tid, site);
    }

    /// The file `id`, named as known, else from the path the kernel gave
    /// at mmap time, else by device and inode.
    fn named_file(&self, id: FileId, kernel_path: Option<&str>) -> FileInfo {
        let known = self.known_file(id);
        if known.path != id.placeholder_name() {
            return known;
        }
        kernel_path.and_then(|p| self.proc.resolve_file(id, p)).unwrap_or(known)
    }

    /// A file known by identity only: its path if seen before, else its
    /// device and inode until /proc shows its name.
    pub fn known_file(&self, id: FileId) -> FileInfo {
        match self.stats.files.get(&id) {
            Some(f) => FileInfo { id, path: f.path.clone(), size_bytes: f.size_bytes },
            None => FileInfo { id, path: id.placeholder_name(), size_bytes: None },
        }
    }

    /// It has ended and its heap was read: what only events would still
    /// need goes (the address space model, page sets, per-thread state,
    /// the mappings kept for symbolizing), its figures stay. A tree of
    /// thousands of short processes otherwise holds all of them to the end.
    pub fn compact(&mut self) {
        self.stats.compact();
        self.loading.compact();
        self.anon.compact();
        self.mappings = Vec::new();
        self.mmap_file = HashMap::new();
        self.mmap_path = HashMap::new();
        self.range_entered_ns = HashMap::new();
        self.unknown_pages = HashSet::new();
    }

    /// Still running (its last thread has not exited).
    pub fn alive(&self) -> bool {
        self.ended.is_none() && self.exit.is_none()
    }
}
