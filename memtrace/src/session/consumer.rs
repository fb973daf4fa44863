//! The consumer: decoded events in, the aggregators (`model`) updated. The
//! few /proc reads it needs while dispatching (a mapping the events did not
//! name, the program break after exec, a phase name the kernel could not
//! read) go through [`ProcReader`], so unit tests replay recorded events
//! against recorded /proc answers.
use std::collections::{HashMap, HashSet};

use aya::maps::{MapData, RingBuf};
use memtrace_common::{HeapTotals, PHASE_NAME_MAX};

use crate::{
    decode::Event,
    model::{
        aspace::FileId,
        heap_marks::HeapMarks,
        loading::Loading,
        phases::{FileCounts, Phases, Totals},
        stats::{FileInfo, TraceStats},
        timeline::{FileLoaded, Reading},
    },
    output::events_log::EventLog,
    procfs::{self, Snapshot},
    symbolize::FileMapping,
};

/// What the consumer asks /proc while dispatching events.
pub trait ProcReader {
    /// The target's mappings now (None once it is gone).
    fn snapshot(&self) -> Option<Snapshot>;
    /// The file mapped at `addr` now.
    fn file_at(&self, addr: u64) -> Option<FileInfo>;
    /// Where the program break starts (after an execve).
    fn brk_start(&self) -> Option<u64>;
    /// A NUL-terminated string in the target's memory.
    fn c_string(&self, addr: u64, max: usize) -> Option<String>;
    /// The kernel's (minor, major) fault counts so far.
    fn faults(&self) -> Option<(u64, u64)>;
    /// The file `id` named from its path within its filesystem (read in
    /// eBPF at mmap time), checked to be that very file.
    fn resolve_file(&self, id: FileId, fs_path: &str) -> Option<FileInfo>;
}

/// The live target's /proc.
pub struct LiveProc(pub u32);

impl ProcReader for LiveProc {
    fn snapshot(&self) -> Option<Snapshot> {
        procfs::snapshot(self.0)
    }
    fn file_at(&self, addr: u64) -> Option<FileInfo> {
        procfs::file_at(self.0, addr)
    }
    fn brk_start(&self) -> Option<u64> {
        procfs::brk_range(self.0).map(|(start, _)| start)
    }
    fn c_string(&self, addr: u64, max: usize) -> Option<String> {
        procfs::read_c_string(self.0, addr, max)
    }
    fn faults(&self) -> Option<(u64, u64)> {
        procfs::kernel_faults(self.0)
    }
    fn resolve_file(&self, id: FileId, fs_path: &str) -> Option<FileInfo> {
        procfs::resolve_file(self.0, id, fs_path)
    }
}

pub struct Consumer {
    pub pid: u32,
    proc: Box<dyn ProcReader>,
    pub stats: TraceStats,
    pub loading: Loading,
    pub phases: Phases,
    pub heap_marks: HeapMarks,
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
    /// Timestamp of the latest phase marker of the main thread: where a
    /// `--phase-truth` stop belongs.
    pub last_main_marker_ns: Option<u64>,
    /// `--events`: the allocation stream's file.
    pub events: Option<EventLog>,
    /// `--phase-fn` phase names, by function index - 1.
    phase_fn_names: Vec<String>,
    /// When the target last called execve (allocations before it died with that image).
    pub last_exec_ns: u64,
    /// The target's file mappings at the latest /proc read: allocation
    /// stacks are symbolized with them if the target is gone at stop.
    pub mappings: Vec<FileMapping>,
    /// An exec or an executable file mapping was seen since the session last
    /// refreshed the unwind tables.
    pub exec_mapped: bool,
}

impl Consumer {
    pub fn new(pid: u32, proc: Box<dyn ProcReader>, phase_fn_names: Vec<String>, events: Option<EventLog>) -> Self {
        Consumer {
            pid,
            proc,
            stats: TraceStats::default(),
            loading: Loading::default(),
            phases: Phases::default(),
            heap_marks: HeapMarks::default(),
            mmap_file: HashMap::new(),
            mmap_path: HashMap::new(),
            range_entered_ns: HashMap::new(),
            unknown_pages: HashSet::new(),
            last_main_marker_ns: None,
            events,
            phase_fn_names,
            last_exec_ns: 0,
            mappings: Vec::new(),
            exec_mapped: false,
        }
    }

    /// Re-reads the maps file: the model, and the mappings kept for
    /// symbolizing stacks if the target is gone at stop.
    pub fn sync(&mut self) {
        if let Some(snap) = self.proc.snapshot() {
            self.mappings = snap.mappings;
            self.stats.sync(snap.vmas, snap.files);
        }
        self.unknown_pages.clear();
    }

    /// Every record in the ring buffer now.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.feed(&item);
        }
    }

    /// One raw record.
    pub fn feed(&mut self, bytes: &[u8]) {
        match Event::decode(bytes) {
            Ok(event) => self.on_event(event),
            Err(_) => self.stats.malformed_events += 1,
        }
    }

    /// One decoded event into the aggregators.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::MmapPath { tid, result, path, complete, .. } => {
                self.mmap_path.insert(tid, (result, path, complete));
            }
            Event::MmapFile { tid, result, file, char_device, .. } => {
                self.mmap_file.insert(tid, (result, file, char_device));
            }
            Event::Mmap { ts_ns, tid, result, len, prot, flags, fd, .. } => {
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
                self.stats.on_mmap(ts_ns, result, len, flags, fd, file);
            }
            Event::RangeEnter { ts_ns, tid, addr, len, .. } => {
                self.range_entered_ns.insert(tid, ts_ns);
                self.loading.on_range_enter(tid, self.stats.files_in(addr, len));
            }
            Event::Mremap { tid, old_addr, old_len, new_len, result, .. } => {
                self.range_entered_ns.remove(&tid);
                self.stats.on_mremap(old_addr, old_len, new_len, result);
                self.loading.on_range_exit(tid);
            }
            Event::Madvise { tid, result, .. } => {
                self.range_entered_ns.remove(&tid);
                self.stats.on_madvise(result);
                self.loading.on_range_exit(tid);
            }
            Event::Munmap { tid, addr, len, result, .. } => {
                let entered = self.range_entered_ns.remove(&tid);
                self.stats.on_munmap(addr, len, result, entered);
                self.loading.on_range_exit(tid);
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
                self.sync();
            }
            Event::Phase { ts_ns, tid, begin, name, seq, function, name_at } => {
                let name = match (function, name_at) {
                    (0, Some(addr)) => self
                        .proc
                        .c_string(addr, PHASE_NAME_MAX - 1)
                        .unwrap_or_else(|| format!("[unreadable name at {addr:#x}]")),
                    (0, None) => name,
                    (f, _) => {
                        self.phase_fn_names.get(f as usize - 1).cloned().unwrap_or_else(|| format!("[phase-fn {f}]"))
                    }
                };
                if tid == self.pid {
                    self.last_main_marker_ns = Some(ts_ns);
                }
                self.phase(begin, name, ts_ns, seq);
            }
            Event::HeapMark { seq, totals, .. } => self.heap_marks.on_totals(seq, totals),
            Event::Brk { brk, .. } => self.stats.on_brk(brk),
            Event::Alloc { ts_ns, tid, address, size, stack_id, phase_seq } => {
                if let Some(log) = &mut self.events {
                    log.on_alloc(ts_ns, tid, address, size, stack_id, phase_seq);
                }
            }
            Event::Free { ts_ns, tid, address, size, stack_id } => {
                if let Some(log) = &mut self.events {
                    log.on_free(ts_ns, tid, address, size, stack_id);
                }
            }
            Event::RssStat { tid, member, bytes, .. } => self.loading.on_rss(tid, member, bytes),
            Event::FilemapFault { tid, file, index, .. } => self.loading.on_filemap_fault(tid, file, index),
            Event::FilemapMapPages { tid, file, first, last, .. } => self.loading.on_map_pages(tid, file, first, last),
            Event::PageCacheAdd { tid, file, index, pages, .. } => self.loading.on_cache_add(tid, file, index, pages),
            Event::PageCacheDelete { file, index, pages, .. } => self.loading.on_cache_delete(file, index, pages),
        }
    }

    fn on_fault(&mut self, tid: u32, address: u64, access: crate::decode::FaultAccess) {
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
        let file = self.stats.on_fault(address, access);
        self.loading.on_fault(tid, file);
    }

    /// A phase boundary from any source: marker, `--phase-fn`, `memtrace mark`.
    pub fn phase(&mut self, begin: bool, name: String, ts_ns: u64, seq: u32) {
        let totals = self.totals();
        if begin {
            self.phases.begin(name, ts_ns, seq, totals);
        } else {
            self.phases.end(&name, ts_ns, seq, &totals);
        }
        self.heap_marks.on_marker(seq, self.phases.current_path());
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

    /// Running totals for phase accounting.
    pub fn totals(&self) -> Totals {
        Totals {
            files: self
                .loading
                .files
                .iter()
                .map(|(id, l)| {
                    let counts = FileCounts {
                        loaded: l.loaded_bytes,
                        fault_around: l.fault_around_bytes,
                        read_from_disk: l.read_from_disk_bytes,
                        unloaded: l.unloaded_bytes,
                    };
                    (*id, counts)
                })
                .collect(),
            page_faults: self.stats.faults.total,
            anon_rss: self.loading.rss_now.anon,
        }
    }

    /// What the timeline and the live view sample now.
    pub fn reading(&self, t_s: f64, heap: Option<&HeapTotals>) -> Reading {
        let rss = self.loading.rss_now;
        let mut files: Vec<FileLoaded> = self
            .loading
            .files
            .iter()
            .filter(|(_, l)| l.loaded_bytes > 0)
            .map(|(id, l)| FileLoaded { path: self.known_file(*id).path, loaded_bytes: l.loaded_bytes })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.loaded_bytes));
        Reading {
            t_s,
            phase: self.phases.current_path(),
            rss_file: rss.file,
            rss_anon: rss.anon,
            rss_shmem: rss.shmem,
            heap_live: heap.map(HeapTotals::live_bytes),
            brk_heap: self.stats.kernel_heap.brk_bytes(),
            anon_mapped_net: self.stats.kernel_heap.anon_net_bytes(),
            allocs_total: heap.map_or(0, |t| t.allocs),
            frees_total: heap.map_or(0, |t| t.frees),
            faults_total: self.proc.faults(),
            files,
        }
    }
}

/// A recorded /proc for replaying events in unit tests: one file mapped,
/// and counts of how often the consumer asked.
#[cfg(test)]
pub(crate) mod recorded {
    use std::cell::Cell;

    use super::*;
    use crate::model::aspace::Region;

    pub const PID: u32 = 4242;
    pub const FILE: FileId = FileId { major: 8, minor: 1, inode: 42 };
    pub const PATH: &str = "/data/index.bin";
    pub const START: u64 = 0x7f00_0000_0000;
    pub const LEN: u64 = 16 << 20;
    pub const PHASE_NAME_AT: u64 = 0x5000;

    #[derive(Default)]
    pub struct RecordedProc {
        pub snapshots: Cell<u32>,
    }

    pub fn file_info() -> FileInfo {
        FileInfo { id: FILE, path: PATH.into(), size_bytes: Some(LEN) }
    }

    impl ProcReader for std::rc::Rc<RecordedProc> {
        fn snapshot(&self) -> Option<Snapshot> {
            self.snapshots.set(self.snapshots.get() + 1);
            Some(Snapshot {
                vmas: vec![(START, START + LEN, Region::File(FILE))],
                files: vec![file_info()],
                mappings: vec![FileMapping { start: START, end: START + LEN, offset: 0, path: PATH.into() }],
            })
        }
        fn file_at(&self, addr: u64) -> Option<FileInfo> {
            (START..START + LEN).contains(&addr).then(file_info)
        }
        fn brk_start(&self) -> Option<u64> {
            Some(0x55_0000)
        }
        fn c_string(&self, addr: u64, _max: usize) -> Option<String> {
            (addr == PHASE_NAME_AT).then(|| "load".to_string())
        }
        fn faults(&self) -> Option<(u64, u64)> {
            Some((100, 1))
        }
        fn resolve_file(&self, id: FileId, fs_path: &str) -> Option<FileInfo> {
            (fs_path == OTHER_PATH).then(|| FileInfo { id, path: OTHER_PATH.into(), size_bytes: Some(LEN) })
        }
    }

    /// Another file the recorded program maps at START after FILE is gone
    /// (/proc, read late, still shows FILE there).
    pub const OTHER: FileId = FileId { major: 254, minor: 1, inode: 77 };
    pub const OTHER_PATH: &str = "/data/other.arrow";

    pub fn consumer() -> (Consumer, std::rc::Rc<RecordedProc>) {
        let proc = std::rc::Rc::new(RecordedProc::default());
        (Consumer::new(PID, Box::new(proc.clone()), vec!["search_fn".into()], None), proc)
    }

    /// A run as the kernel reports it: the file mapped, a phase `load`
    /// (its name on a page the kernel could not read) in which one fault
    /// maps 64 KiB of it by fault-around, then 4 KiB more outside the phase.
    pub fn events() -> Vec<Event> {
        let (pid, ts) = (PID, 1_000);
        let fault = |ts_ns, address| Event::PageFault {
            ts_ns,
            tid: pid,
            address,
            ip: 0x40_1000,
            access: crate::decode::FaultAccess::Read,
            kernel_mode: false,
        };
        vec![
            Event::MmapFile { ts_ns: ts, tid: pid, result: START as i64, file: FILE, char_device: false },
            Event::Mmap { ts_ns: ts, tid: pid, result: START as i64, len: LEN, prot: 1, flags: 1, fd: 3, offset: 0 },
            Event::Phase {
                ts_ns: ts + 10,
                tid: pid,
                begin: true,
                name: String::new(),
                seq: 1,
                function: 0,
                name_at: Some(PHASE_NAME_AT),
            },
            fault(ts + 20, START),
            Event::FilemapFault { ts_ns: ts + 21, tid: pid, file: FILE, index: 0 },
            Event::RssStat { ts_ns: ts + 22, tid: pid, member: crate::decode::RssMember::File, bytes: 64 << 10 },
            Event::FilemapMapPages { ts_ns: ts + 23, tid: pid, file: FILE, first: 0, last: 15 },
            Event::Phase {
                ts_ns: ts + 30,
                tid: pid,
                begin: false,
                name: "load".into(),
                seq: 2,
                function: 0,
                name_at: None,
            },
            fault(ts + 40, START + (1 << 20)),
            Event::RssStat { ts_ns: ts + 41, tid: pid, member: crate::decode::RssMember::File, bytes: 68 << 10 },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::{recorded::*, *};

    #[test]
    fn a_recorded_run_is_attributed_to_its_file_and_phase() {
        let (mut c, proc) = consumer();
        for e in events() {
            c.on_event(e);
        }
        let file = &c.stats.files[&FILE];
        assert_eq!((file.path.as_str(), file.mapped_now, file.faults.total), (PATH, LEN, 2));
        let load = &c.loading.files[&FILE];
        assert_eq!((load.loaded_bytes, load.fault_around_bytes), (68 << 10, 64 << 10));
        let phase = &c.phases.done[0];
        assert_eq!(phase.name, "load", "the name the kernel could not read comes from /proc/PID/mem");
        assert_eq!(phase.files[&FILE].loaded, 64 << 10, "only the fault inside the phase");
        assert_eq!(c.last_main_marker_ns, Some(1_030));
        assert_eq!(proc.snapshots.get(), 0, "every fault was inside a mapping the events described");
    }

    /// A file mapped where /proc, read after the fact, shows another: the
    /// kernel's identity and path win, and its faults are its own.
    #[test]
    fn a_file_mapped_where_another_was_is_named_by_the_kernel_not_by_proc() {
        let (mut c, _) = consumer();
        let mmap = |file, path: &str| {
            [
                Event::MmapPath { ts_ns: 1, tid: PID, result: START as i64, path: path.into(), complete: true },
                Event::MmapFile { ts_ns: 1, tid: PID, result: START as i64, file, char_device: false },
                Event::Mmap { ts_ns: 1, tid: PID, result: START as i64, len: LEN, prot: 1, flags: 1, fd: 3, offset: 0 },
            ]
        };
        for e in mmap(OTHER, OTHER_PATH) {
            c.on_event(e);
        }
        c.on_event(Event::PageFault {
            ts_ns: 2,
            tid: PID,
            address: START,
            ip: 0x40_1000,
            access: crate::decode::FaultAccess::Read,
            kernel_mode: false,
        });
        assert_eq!(c.stats.files[&OTHER].path, OTHER_PATH);
        assert_eq!(c.stats.files[&OTHER].faults.total, 1);
        assert!(!c.stats.files.contains_key(&FILE), "/proc's file at the address was not this mapping's");
        // The same identity as /proc's: /proc names it.
        for e in mmap(FILE, "/elsewhere") {
            c.on_event(e);
        }
        assert_eq!(c.stats.files[&FILE].path, PATH);
    }

    #[test]
    fn a_fault_outside_every_known_mapping_rereads_the_maps_once_per_page() {
        let (mut c, proc) = consumer();
        let fault = |address| Event::PageFault {
            ts_ns: 1,
            tid: PID,
            address,
            ip: 0,
            access: crate::decode::FaultAccess::Write,
            kernel_mode: false,
        };
        // The kernel's own mapping in execve: no mmap event described it.
        c.on_event(fault(START + 8));
        assert_eq!(proc.snapshots.get(), 1);
        assert!(c.stats.knows(START + 8), "the re-read taught the model the mapping");
        c.on_event(fault(0x1000));
        c.on_event(fault(0x1008));
        assert_eq!(proc.snapshots.get(), 2, "a second fault on the same unknown page does not re-read");
        assert_eq!(c.mappings.len(), 1, "mappings kept for symbolizing after the target is gone");
    }

    #[test]
    fn phase_fn_events_are_named_by_their_function_and_bad_records_counted() {
        let (mut c, _) = consumer();
        for (begin, ts_ns) in [(true, 5), (false, 9)] {
            c.on_event(Event::Phase {
                ts_ns,
                tid: PID + 1,
                begin,
                name: String::new(),
                seq: 0,
                function: 1,
                name_at: None,
            });
        }
        assert_eq!(c.phases.done[0].name, "search_fn");
        assert_eq!(c.last_main_marker_ns, None, "another thread's marker is no --phase-truth stop");
        c.feed(&[1, 2, 3]);
        assert_eq!(c.stats.malformed_events, 1);
    }
}
