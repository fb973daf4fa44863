//! The consumer: decoded events in, the aggregators (`model`) updated. The
//! few /proc reads it needs while dispatching (a mapping the events did not
//! name, the program break after exec, a phase name the kernel could not
//! read) go through [`ProcReader`], so unit tests replay recorded events
//! against recorded /proc answers.
use std::collections::BTreeMap;

use aya::maps::{MapData, RingBuf};
use memtrace_common::{HeapTotals, PHASE_NAME_MAX};

use super::process::ProcessModel;
use crate::{
    decode::{self, Event},
    model::{
        aspace::FileId,
        heap_marks::HeapMarks,
        loading::RssCounters,
        phases::{FileCounts, Phases, Totals},
        stats::FileInfo,
        timeline::{FileLoaded, Reading},
    },
    output::events_log::EventLog,
    procfs::{self, Snapshot},
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
    /// The kernel's RSS counters now.
    fn rss_counters(&self) -> Option<RssCounters>;
    /// The command line.
    fn command_line(&self) -> Option<String>;
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
    fn rss_counters(&self) -> Option<RssCounters> {
        procfs::rss_counters(self.0)
    }
    fn command_line(&self) -> Option<String> {
        procfs::command_line(self.0)
    }
}

impl LiveProc {
    /// Every process's /proc, for the consumer to make at a fork.
    pub fn factory() -> ProcFor {
        Box::new(|pid| Box::new(LiveProc(pid)))
    }
}

/// Makes the /proc reader of a process the consumer meets (a fork).
pub type ProcFor = Box<dyn Fn(u32) -> Box<dyn ProcReader>>;

pub struct Consumer {
    /// The first process traced (the command run, or the PID attached to).
    pub pid: u32,
    /// Every process traced so far, by PID (exited ones stay).
    pub processes: BTreeMap<u32, ProcessModel>,
    proc_for: ProcFor,
    pub phases: Phases,
    pub heap_marks: HeapMarks,
    /// `--events`: the allocation stream's file.
    pub events: Option<EventLog>,
    /// `--phase-fn` phase names, by function index - 1.
    phase_fn_names: Vec<String>,
    pub malformed_events: u64,
    /// Records naming a process the consumer never saw begin (none expected).
    pub stray_events: u64,
    /// Ring-buffer records read.
    pub records: u64,
    /// Processes forked since the session last took them (their probes go in).
    pub forked: Vec<u32>,
    /// Processes of the traced cgroup met since (none of their probes copied).
    pub joined: Vec<u32>,
    /// The phase totals of processes that ended, summed once: a tree of
    /// thousands of short processes made every phase boundary sum them
    /// all again (quadratic: a 10-minute soak fell behind its ring).
    ended_totals: Totals,
    /// Processes whose totals are not in `ended_totals` (alive, or ended
    /// since the last phase boundary).
    unfolded: std::collections::BTreeSet<u32>,
    /// The most records the ring buffer can hold (its size in its
    /// smallest records): one `drain` reads no more.
    pub ring_records_max: u64,
    /// Processes whose exit event came since the session last took them.
    ended_recently: Vec<u32>,
    /// The files of processes taken out (folded): still named by path.
    taken_files: BTreeMap<FileId, FileInfo>,
    /// Finished phases listed one by one, in the scope and in each process.
    max_phases: usize,
}

impl Consumer {
    pub fn new(pid: u32, proc_for: ProcFor, phase_fn_names: Vec<String>, events: Option<EventLog>) -> Self {
        let root = ProcessModel::new(pid, None, 0, proc_for(pid));
        Consumer {
            pid,
            processes: BTreeMap::from([(pid, root)]),
            proc_for,
            phases: Phases::default(),
            heap_marks: HeapMarks::default(),
            events,
            phase_fn_names,
            malformed_events: 0,
            stray_events: 0,
            records: 0,
            forked: Vec::new(),
            joined: Vec::new(),
            ended_totals: Totals::default(),
            unfolded: std::collections::BTreeSet::from([pid]),
            ring_records_max: u64::MAX,
            ended_recently: Vec::new(),
            taken_files: BTreeMap::new(),
            max_phases: crate::model::phases::DEFAULT_MAX_LISTED,
        }
    }

    /// Lists at most `max` finished phases in the scope and in each
    /// process, folding the rest by path (`--max-phases`); before tracing.
    pub fn set_max_phases(&mut self, max: usize) {
        self.max_phases = max;
        self.phases = Phases::new(max);
        for p in self.processes.values_mut() {
            p.phases = Phases::new(max);
        }
    }

    /// A running process that joined the scope when tracing began (a
    /// descendant of the first, with `--children`).
    pub fn add_process(&mut self, pid: u32, parent: Option<u32>, started_ns: u64) -> &mut ProcessModel {
        let mut model = ProcessModel::new(pid, parent, started_ns, (self.proc_for)(pid));
        model.phases = Phases::new(self.max_phases);
        self.unfolded.insert(pid);
        self.processes.entry(pid).or_insert(model)
    }

    /// The first process traced.
    pub fn root(&self) -> &ProcessModel {
        &self.processes[&self.pid]
    }

    pub fn root_mut(&mut self) -> &mut ProcessModel {
        self.processes.get_mut(&self.pid).expect("the root process is never removed")
    }

    pub fn process_mut(&mut self, pid: u32) -> Option<&mut ProcessModel> {
        self.processes.get_mut(&pid)
    }

    /// Processes still running.
    pub fn alive(&self) -> impl Iterator<Item = &ProcessModel> {
        self.processes.values().filter(|p| p.alive())
    }

    /// Every record in the ring buffer now: at most as many as the ring
    /// holds, so records a storm adds while this reads wait for the next
    /// call (an unbounded loop never returned to stop, signals or samples).
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        self.drain_at_most(ring, self.ring_records_max);
    }

    /// At most `max` records; whether the ring was emptied.
    pub fn drain_at_most(&mut self, ring: &mut RingBuf<MapData>, max: u64) -> bool {
        for _ in 0..max {
            let Some(item) = ring.next() else { return true };
            self.feed(&item);
        }
        false
    }

    /// One raw record.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.records += 1;
        match (decode::pid_of(bytes), Event::decode(bytes)) {
            (Some(pid), Ok(event)) => self.on_event(pid, event),
            _ => self.malformed_events += 1,
        }
    }

    /// One decoded event of process `pid` into the aggregators.
    pub fn on_event(&mut self, pid: u32, event: Event) {
        match event {
            Event::Phase { ts_ns, tid, begin, ref name, seq, function, name_at } => {
                let name = match (function, name_at) {
                    (0, Some(addr)) => self
                        .processes
                        .get(&pid)
                        .and_then(|p| p.c_string(addr, PHASE_NAME_MAX - 1))
                        .unwrap_or_else(|| format!("[unreadable name at {addr:#x}]")),
                    (0, None) => name.clone(),
                    (f, _) => {
                        self.phase_fn_names.get(f as usize - 1).cloned().unwrap_or_else(|| format!("[phase-fn {f}]"))
                    }
                };
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.on_event(Event::Phase { ts_ns, tid, begin, name: String::new(), seq, function, name_at });
                }
                self.phase(Some(pid), begin, name, ts_ns, seq);
            }
            Event::HeapMark { seq, totals, process, .. } => {
                self.heap_marks.on_totals(seq, totals);
                self.phases.fold_ready(&mut self.heap_marks);
                if let Some(p) = self.processes.get_mut(&pid) {
                    p.heap_marks.on_totals(seq, process);
                    p.phases.fold_ready(&mut p.heap_marks);
                }
            }
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
            Event::ProcessJoin { ts_ns, .. } if !self.processes.contains_key(&pid) => {
                let parent = crate::procfs::parent_of(pid).filter(|p| self.processes.contains_key(p));
                self.add_process(pid, parent, ts_ns).joined_now();
                self.joined.push(pid);
            }
            // Already known: it joined when tracing began (`--children`).
            Event::ProcessFork { child, .. } if self.processes.contains_key(&child) => {}
            Event::ProcessFork { ts_ns, child, .. } => {
                let Some(parent) = self.processes.get(&pid) else {
                    self.stray_events += 1;
                    return;
                };
                let model = ProcessModel::forked(parent, child, ts_ns, (self.proc_for)(child));
                self.processes.insert(child, model);
                self.unfolded.insert(child);
                self.forked.push(child);
            }
            // An eviction by another task: every running process mapping
            // the file (one that ended lost nothing by it).
            Event::PageCacheDelete { .. } if pid == 0 => {
                for pid in &self.unfolded {
                    match self.processes.get_mut(pid) {
                        Some(p) if p.alive() => p.on_event(event.clone()),
                        _ => {}
                    }
                }
            }
            Event::ProcessExit { .. } => match self.processes.get_mut(&pid) {
                Some(p) => {
                    p.on_event(event);
                    self.ended_recently.push(pid);
                }
                None => self.stray_events += 1,
            },
            event => match self.processes.get_mut(&pid) {
                Some(p) => p.on_event(event),
                None => self.stray_events += 1,
            },
        }
    }

    /// A phase boundary from any source: a marker or `--phase-fn` in
    /// process `pid`, or `memtrace mark` (None: every running process's).
    /// The scope's phases get every boundary.
    pub fn phase(&mut self, pid: Option<u32>, begin: bool, name: String, ts_ns: u64, seq: u32) {
        // The marking process, or every running one (not every process
        // ever traced: a tree of thousands made each boundary cost them all).
        let marked = match pid {
            Some(pid) => vec![pid],
            None => self.running(),
        };
        for each in &marked {
            match self.processes.get_mut(each) {
                Some(p) if pid.is_some() || p.alive() => p.phase(begin, &name, ts_ns, seq),
                _ => {}
            }
        }
        let totals = self.totals();
        if begin {
            self.phases.begin(name, ts_ns, seq, totals);
        } else {
            self.phases.end(&name, ts_ns, seq, &totals);
            self.phases.fold_ready(&mut self.heap_marks);
        }
        // The scope's marks hold heap totals only: leak groups are named
        // with each process's own marks.
    }

    /// Running totals of the whole scope for phase accounting: the
    /// processes still unfolded, plus the frozen sum of those that ended
    /// (no event of a process follows its end).
    pub fn totals(&mut self) -> Totals {
        self.fold_ended();
        let mut totals = self.ended_totals.clone();
        for p in self.unfolded.iter().filter_map(|pid| self.processes.get(pid)) {
            add_totals(&mut totals, &p.phase_totals());
        }
        totals
    }

    /// Adds the totals of processes that ended since the last call to
    /// `ended_totals`, once.
    fn fold_ended(&mut self) {
        let ended: Vec<u32> =
            self.unfolded.iter().copied().filter(|pid| self.processes.get(pid).is_none_or(|p| !p.alive())).collect();
        for pid in ended {
            if let Some(p) = self.processes.get(&pid) {
                add_totals(&mut self.ended_totals, &p.phase_totals());
            }
            self.unfolded.remove(&pid);
        }
    }

    /// The processes running, and those that ended since the last phase
    /// boundary or sample (not yet folded into the ended totals).
    pub fn running(&self) -> Vec<u32> {
        self.unfolded.iter().copied().collect()
    }

    /// Takes an ended process's model out (to be folded), its figures
    /// already in the ended totals and its files' names kept. None for the
    /// first process and for one still running.
    pub fn take_ended_model(&mut self, pid: u32) -> Option<ProcessModel> {
        if pid == self.pid || self.processes.get(&pid).is_none_or(ProcessModel::alive) {
            return None;
        }
        self.fold_ended();
        let p = self.processes.remove(&pid)?;
        for (id, f) in &p.stats.files {
            self.taken_files.entry(*id).or_insert_with(|| FileInfo {
                id: *id,
                path: f.path.clone(),
                size_bytes: f.size_bytes,
            });
        }
        Some(p)
    }

    /// Processes that ended since the last call (their exit event came).
    pub fn take_ended(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.ended_recently)
    }

    /// A file by identity, named as the first process that knows it names it.
    pub fn known_file(&self, id: FileId) -> FileInfo {
        let mut placeholder = None;
        for p in self.processes.values() {
            let info = p.known_file(id);
            if info.path != id.placeholder_name() {
                return info;
            }
            placeholder.get_or_insert(info);
        }
        if let Some(info) = self.taken_files.get(&id).filter(|info| info.path != id.placeholder_name()) {
            return info.clone();
        }
        placeholder.unwrap_or(FileInfo { id, path: id.placeholder_name(), size_bytes: None })
    }

    /// What the timeline and the live view sample now: the scope's sums
    /// (RSS of the processes running now).
    /// (Processes that ended count through their folded totals: a sample
    /// costs the running ones, not every process ever traced.)
    pub fn reading(&mut self, t_s: f64, heap: Option<&HeapTotals>) -> Reading {
        self.fold_ended();
        let mut rss = RssCounters::default();
        let (mut brk_heap, mut anon_mapped_net) = (0, 0);
        let mut loaded: BTreeMap<FileId, u64> =
            self.ended_totals.files.iter().map(|(id, counts)| (*id, counts.loaded)).collect();
        let mut faults: Option<(u64, u64)> = None;
        for p in self.unfolded.iter().filter_map(|pid| self.processes.get(pid)) {
            for (id, l) in &p.loading.files {
                *loaded.entry(*id).or_default() += l.loaded_bytes;
            }
            if !p.alive() {
                continue;
            }
            let now = p.loading.rss_now;
            (rss.file, rss.anon, rss.shmem, rss.swap) =
                (rss.file + now.file, rss.anon + now.anon, rss.shmem + now.shmem, rss.swap + now.swap);
            brk_heap += p.stats.kernel_heap.brk_bytes();
            anon_mapped_net += p.stats.kernel_heap.anon_net_bytes();
            if let Some((minor, major)) = p.kernel_faults() {
                let f = faults.get_or_insert((0, 0));
                (f.0, f.1) = (f.0 + minor, f.1 + major);
            }
        }
        let mut files: Vec<FileLoaded> = loaded
            .into_iter()
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(id, loaded_bytes)| FileLoaded { path: self.known_file(id).path, loaded_bytes })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.loaded_bytes));
        Reading {
            t_s,
            phase: self.phases.current_path(),
            rss_file: rss.file,
            rss_anon: rss.anon,
            rss_shmem: rss.shmem,
            heap_live: heap.map(HeapTotals::live_bytes),
            brk_heap,
            anon_mapped_net,
            allocs_total: heap.map_or(0, |t| t.allocs),
            frees_total: heap.map_or(0, |t| t.frees),
            faults_total: faults,
            processes: self.alive().count() as u32,
            files,
        }
    }

    /// Faults seen through events, every process (those that ended through
    /// their folded totals).
    pub fn faults_seen(&self) -> u64 {
        let running: u64 =
            self.unfolded.iter().filter_map(|pid| self.processes.get(pid)).map(|p| p.stats.faults.total).sum();
        self.ended_totals.page_faults + running
    }
}

/// A recorded /proc for replaying events in unit tests: one file mapped,
/// and counts of how often the consumer asked.
#[cfg(test)]
pub(crate) mod recorded {
    use std::cell::Cell;

    use super::*;
    use crate::{model::aspace::Region, symbolize::FileMapping};

    pub const PID: u32 = 4242;
    pub const FILE: FileId = FileId { major: 8, minor: 1, inode: 42 };
    pub const PATH: &str = "/data/index.bin";
    pub const START: u64 = 0x7f00_0000_0000;
    pub const LEN: u64 = 16 << 20;

    /// The finished mmap of the recorded file (fd 3, read-only, private) at START.
    pub fn file_mmap(ts_ns: u64, tid: u32) -> Event {
        Event::Mmap { ts_ns, tid, result: START as i64, len: LEN, prot: 1, flags: 1, fd: 3, offset: 0, stack_id: 0 }
    }
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
        fn rss_counters(&self) -> Option<RssCounters> {
            Some(RssCounters { file: 8 << 10, ..Default::default() })
        }
        fn command_line(&self) -> Option<String> {
            Some("index-server --mmap".into())
        }
    }

    /// Another file the recorded program maps at START after FILE is gone
    /// (/proc, read late, still shows FILE there).
    pub const OTHER: FileId = FileId { major: 254, minor: 1, inode: 77 };
    pub const OTHER_PATH: &str = "/data/other.arrow";

    pub fn consumer() -> (Consumer, std::rc::Rc<RecordedProc>) {
        let proc = std::rc::Rc::new(RecordedProc::default());
        let reader = proc.clone();
        let proc_for: ProcFor = Box::new(move |_| Box::new(reader.clone()));
        (Consumer::new(PID, proc_for, vec!["search_fn".into()], None), proc)
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
            file_mmap(ts, pid),
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

/// `into += own`, file by file.
fn add_totals(into: &mut Totals, own: &Totals) {
    for (id, l) in &own.files {
        let f: &mut FileCounts = into.files.entry(*id).or_default();
        f.loaded += l.loaded;
        f.fault_around += l.fault_around;
        f.read_from_disk += l.read_from_disk;
        f.unloaded += l.unloaded;
    }
    into.page_faults += own.page_faults;
    into.anon_rss += own.anon_rss;
}

#[cfg(test)]
mod tests {
    use super::{recorded::*, *};

    #[test]
    fn a_recorded_run_is_attributed_to_its_file_and_phase() {
        let (mut c, proc) = consumer();
        for e in events() {
            c.on_event(PID, e);
        }
        let file = &c.root().stats.files[&FILE];
        assert_eq!((file.path.as_str(), file.mapped_now, file.faults.total), (PATH, LEN, 2));
        let load = &c.root().loading.files[&FILE];
        assert_eq!((load.loaded_bytes, load.fault_around_bytes), (68 << 10, 64 << 10));
        let phase = &c.phases.done[0];
        assert_eq!(phase.name, "load", "the name the kernel could not read comes from /proc/PID/mem");
        assert_eq!(phase.files[&FILE].loaded, 64 << 10, "only the fault inside the phase");
        assert_eq!(c.root().last_main_marker_ns, Some(1_030));
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
                file_mmap(1, PID),
            ]
        };
        for e in mmap(OTHER, OTHER_PATH) {
            c.on_event(PID, e);
        }
        c.on_event(
            PID,
            Event::PageFault {
                ts_ns: 2,
                tid: PID,
                address: START,
                ip: 0x40_1000,
                access: crate::decode::FaultAccess::Read,
                kernel_mode: false,
            },
        );
        assert_eq!(c.root().stats.files[&OTHER].path, OTHER_PATH);
        assert_eq!(c.root().stats.files[&OTHER].faults.total, 1);
        assert!(!c.root().stats.files.contains_key(&FILE), "/proc's file at the address was not this mapping's");
        // The same identity as /proc's: /proc names it.
        for e in mmap(FILE, "/elsewhere") {
            c.on_event(PID, e);
        }
        assert_eq!(c.root().stats.files[&FILE].path, PATH);
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
        c.on_event(PID, fault(START + 8));
        assert_eq!(proc.snapshots.get(), 1);
        assert!(c.root().stats.knows(START + 8), "the re-read taught the model the mapping");
        c.on_event(PID, fault(0x1000));
        c.on_event(PID, fault(0x1008));
        assert_eq!(proc.snapshots.get(), 2, "a second fault on the same unknown page does not re-read");
        assert_eq!(c.root().mappings.len(), 1, "mappings kept for symbolizing after the target is gone");
    }

    /// A forked child that ends: named once as ended, its figures the
    /// same in the scope's sums before and after its model is cut down,
    /// and a later eviction (by another task) is not its own.
    #[test]
    fn an_ended_process_keeps_its_figures_when_compacted() {
        let (mut c, _) = consumer();
        const CHILD: u32 = PID + 1;
        c.on_event(PID, Event::ProcessFork { ts_ns: 1, tid: PID, child: CHILD });
        for e in events() {
            c.on_event(CHILD, e);
        }
        let before = c.root().loading.files.get(&FILE).cloned();
        assert_eq!(before, None, "the child's events are its own");
        let loaded = |c: &mut Consumer| {
            let r = c.reading(1.0, None);
            (r.files.iter().map(|f| (f.path.clone(), f.loaded_bytes)).collect::<Vec<_>>(), r.processes)
        };
        // Its RSS at the fork (8 KiB, recorded) is its baseline.
        let child_loaded = (68 - 8) << 10;
        assert_eq!(loaded(&mut c), (vec![(PATH.to_string(), child_loaded)], 2));
        let faults = c.faults_seen();
        c.on_event(CHILD, Event::ProcessExit { ts_ns: 2_000, tid: CHILD, totals: HeapTotals::default() });
        assert_eq!(c.take_ended(), [CHILD]);
        assert!(c.take_ended().is_empty(), "taken once");
        let child = &c.processes[&CHILD].loading.files[&FILE];
        let pages = child.fault_range_pages();
        assert_eq!(pages, 16, "fault-around's 16 pages (the direct fault's among them)");
        c.process_mut(CHILD).unwrap().compact();
        assert_eq!(loaded(&mut c), (vec![(PATH.to_string(), child_loaded)], 1));
        assert_eq!(c.faults_seen(), faults);
        let child = &c.processes[&CHILD].loading.files[&FILE];
        assert_eq!((child.fault_range_pages(), child.loaded_bytes), (pages, child_loaded));
        c.on_event(0, Event::PageCacheDelete { ts_ns: 3_000, tid: 0, file: FILE, index: 0, pages: 4 });
        assert_eq!(c.processes[&CHILD].loading.files[&FILE].evicted_bytes, 0, "it had ended");
    }

    #[test]
    fn phase_fn_events_are_named_by_their_function_and_bad_records_counted() {
        let (mut c, _) = consumer();
        for (begin, ts_ns) in [(true, 5), (false, 9)] {
            c.on_event(
                PID,
                Event::Phase { ts_ns, tid: PID + 1, begin, name: String::new(), seq: 0, function: 1, name_at: None },
            );
        }
        assert_eq!(c.phases.done[0].name, "search_fn");
        assert_eq!(c.root().last_main_marker_ns, None, "another thread's marker is no --phase-truth stop");
        c.feed(&[1, 2, 3]);
        assert_eq!(c.malformed_events, 1);
    }
}
