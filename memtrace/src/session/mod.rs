//! One tracing session: attach the probes, stream events into the
//! aggregator until the target exits, the duration elapses or a signal
//! arrives, then build the trace. Every stop path ends in a trace.
pub mod heap_at_stop;
pub mod heap_sampler;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::IsTerminal,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use memtrace_common::{Counter, PHASE_NAME_MAX};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
};

use crate::{
    decode::Event,
    decode::HeapCounts,
    kernel::probes::{HeapSetup, Probes},
    kernel::tracefs,
    model::aspace::{FileId, Region},
    model::estimates::{estimate, Inputs},
    model::heap_marks::HeapMarks,
    model::loading::{FileLoad, Loading, RssCounters, PAGE},
    model::phases::{FileCounts, Phases, Totals},
    model::stats::{FileInfo, TraceStats},
    model::timeline::{self, FileLoaded, Reading},
    output::events_log::EventLog,
    output::live::{LiveView, Status as LiveStatus},
    output::report::heap as report_heap,
    procfs,
    session::heap_at_stop::{HeapAtStop, StopContext},
    session::heap_sampler::HeapSampler,
    symbolize::{self, FileMapping},
    target::child::{pidfd, ChildExit, HeldChild, Hooks},
    target::control::{self, ControlSocket, Mark},
    trace::{
        self, Counters, FileEntry, FileEstimates, FileTotals, Heap, HeapAllocator, HeapEvents, HeapProbeEntry,
        HeapSample, KernelFaults, KernelHeapSummary, Leak, PhaseEntry, PhaseFile, RegionFaults, Rss, RssSummary, Trace,
    },
    uprobes::allocator,
    uprobes::marker_libs::MarkerLibs,
    uprobes::phase_fn::PhaseFn,
};

pub enum Target {
    Run(HeldChild),
    Attach { pid: u32, command: String },
}

pub struct Options {
    pub duration: Option<Duration>,
    /// Stop the target at each phase marker to read smaps (run mode).
    pub phase_truth: bool,
    /// Leak candidates: live allocations at least this old (None: all live at the end).
    pub leak_age: Option<Duration>,
    /// Print the allocator probes' placement at start.
    pub explain_probes: bool,
    /// Allocator probes on the first instruction (no placement).
    pub probe_at_entry: bool,
    /// More allocator libraries to probe (`--alloc-lib`).
    pub alloc_libs: Vec<PathBuf>,
    /// Write every allocation and free to this file (`--events`).
    pub events: Option<PathBuf>,
    /// Growth suspects: stacks whose live bytes grew in each of this many samples.
    pub growth_window: usize,
    /// `--phase-fn` functions, checked to exist.
    pub phase_fns: Vec<PhaseFn>,
    /// Timeline sampling interval (`--interval`).
    pub interval: Duration,
    /// No live view (`--quiet`).
    pub quiet: bool,
}

/// A ptrace stop of the spawned child that the session must act on before
/// the child may go on.
enum ChildStop {
    Exit,
    Marker,
    /// A later execve: the new image is loaded and has not run yet.
    Exec,
}

/// How often the live view is refreshed.
const LIVE_REFRESH: Duration = Duration::from_secs(1);
/// How often the ring buffer is drained when no event asked for a wakeup.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// How long the child may be held at a stop while smaps is read.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after forwarding a signal to a spawned child memtrace waits for it.
const CHILD_GRACE: Duration = Duration::from_secs(5);
struct Consumer {
    pid: u32,
    stats: TraceStats,
    loading: Loading,
    phases: Phases,
    /// The kernel's file identity of each thread's mmap in progress.
    mmap_file: HashMap<u32, (i64, FileId)>,
    /// The RSS counters when the final kernel truth was read.
    rss_at_truth: Option<RssCounters>,
    /// Pages found outside every mapping at the latest /proc re-read: another
    /// fault there does not trigger a new re-read (mappings the events did
    /// not describe, e.g. the kernel's own in execve).
    unknown_pages: HashSet<u64>,
    /// Timestamp of the latest phase marker of the main thread: where a
    /// `--phase-truth` stop belongs.
    last_main_marker_ns: Option<u64>,
    /// Per-file smaps Rss at phase boundaries, by marker timestamp.
    boundary_truth: HashMap<u64, HashMap<FileId, u64>>,
    /// Time the target spent stopped for boundary truth.
    boundary_stopped: Duration,
    heap_marks: HeapMarks,
    /// `--events`: the allocation stream's file.
    events: Option<EventLog>,
    /// `--phase-fn` phase names, by function index - 1.
    phase_fn_names: Vec<String>,
    /// When the target last called execve (allocations before it died with that image).
    last_exec_ns: u64,
    /// The target's file mappings at the latest /proc read: allocation
    /// stacks are symbolized with them if the target is gone at stop.
    mappings: Vec<FileMapping>,
}

impl Consumer {
    fn sync(&mut self) {
        // One read of the maps file: the model, and the mappings kept for
        // symbolizing stacks if the target is gone at stop.
        if let Some(snap) = procfs::snapshot(self.pid) {
            self.mappings = snap.mappings;
            self.stats.sync(snap.vmas, snap.files);
        }
        self.unknown_pages.clear();
    }

    fn feed(&mut self, bytes: &[u8]) {
        let event = match Event::decode(bytes) {
            Ok(e) => e,
            Err(_) => {
                self.stats.malformed_events += 1;
                return;
            }
        };
        match event {
            Event::MmapFile { tid, result, file, .. } => {
                self.mmap_file.insert(tid, (result, file));
            }
            Event::Mmap { tid, result, len, flags, fd, .. } => {
                // The kernel named the file as the mapping was made; /proc
                // adds the path when the mapping is still there. Never
                // /proc/PID/fd/FD: by now the fd may name another file.
                let ident = self.mmap_file.remove(&tid).filter(|(r, _)| *r == result).map(|(_, id)| id);
                let from_proc = (result >= 0 && fd >= 0).then(|| procfs::file_at(self.pid, result as u64)).flatten();
                // /proc names what is mapped (for a shared /dev/zero mapping,
                // a shmem file, not the fd's device); the fd's identity serves
                // when the mapping has already moved or gone.
                let file = match (from_proc, ident) {
                    (Some(info), _) => Some(info),
                    (None, Some(id)) => Some(self.known_file(id)),
                    (None, None) => None,
                };
                self.stats.on_mmap(result, len, flags, fd, file);
            }
            Event::RangeEnter { tid, addr, len, .. } => {
                self.loading.on_range_enter(tid, self.stats.files_in(addr, len));
            }
            Event::Mremap { tid, old_addr, old_len, new_len, result, .. } => {
                self.stats.on_mremap(old_addr, old_len, new_len, result);
                self.loading.on_range_exit(tid);
            }
            Event::Madvise { tid, result, .. } => {
                self.stats.on_madvise(result);
                self.loading.on_range_exit(tid);
            }
            Event::Munmap { tid, addr, len, result, .. } => {
                self.stats.on_munmap(addr, len, result);
                self.loading.on_range_exit(tid);
            }
            Event::PageFault { tid, address, access, .. } => {
                // Outside every known mapping, or in a file mapping whose file
                // could not be named when its mmap was read (it had moved or
                // gone by then): the maps file says what is there now.
                let unsure = !self.stats.knows(address) || self.stats.is_unresolved(address);
                if unsure && !self.unknown_pages.contains(&(address >> 12)) {
                    self.sync();
                    if !self.stats.knows(address) || self.stats.is_unresolved(address) {
                        self.unknown_pages.insert(address >> 12);
                    }
                }
                let file = self.stats.on_fault(address, access);
                self.loading.on_fault(tid, file);
            }
            Event::Exec { ts_ns, .. } => {
                self.last_exec_ns = ts_ns;
                self.stats.on_exec();
                self.stats.kernel_heap.on_exec(procfs::brk_range(self.pid).map(|(start, _)| start));
                self.loading.on_exec();
                self.sync();
            }
            Event::Phase { ts_ns, tid, begin, name, seq, function, name_at } => {
                let name = match (function, name_at) {
                    (0, Some(addr)) => procfs::read_c_string(self.pid, addr, PHASE_NAME_MAX - 1)
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

    /// What the timeline samples now.
    fn reading(&self, t_s: f64, heap: Option<&memtrace_common::HeapTotals>) -> Reading {
        let rss = self.loading.rss_now;
        let mut files: Vec<FileLoaded> = self
            .loading
            .files
            .iter()
            .filter(|(_, l)| l.loaded_bytes > 0)
            .map(|(id, l)| FileLoaded {
                path: self.stats.files.get(id).map_or_else(|| self.known_file(*id).path, |f| f.path.clone()),
                loaded_bytes: l.loaded_bytes,
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.loaded_bytes));
        Reading {
            t_s,
            phase: self.phases.current_path(),
            rss_file: rss.file,
            rss_anon: rss.anon,
            rss_shmem: rss.shmem,
            heap_live: heap.map(|t| heap_at_stop::counts(t).live_bytes()),
            brk_heap: self.stats.kernel_heap.brk_bytes(),
            anon_mapped_net: self.stats.kernel_heap.anon_net_bytes(),
            allocs_total: heap.map_or(0, |t| t.allocs),
            frees_total: heap.map_or(0, |t| t.frees),
            faults_total: procfs::kernel_faults(self.pid),
            files,
        }
    }

    /// A phase boundary from any source: marker, `--phase-fn`, `memtrace mark`.
    fn phase(&mut self, begin: bool, name: String, ts_ns: u64, seq: u32) {
        let totals = self.totals();
        if begin {
            self.phases.begin(name, ts_ns, seq, totals);
        } else {
            self.phases.end(&name, ts_ns, seq, &totals);
        }
        self.heap_marks.on_marker(seq, self.phases.current_path());
    }

    /// A `memtrace mark` from the control socket: a phase boundary now,
    /// after the events already in the ring.
    fn mark(&mut self, mark: Mark, probes: &mut Probes, ring: &mut RingBuf<MapData>) {
        self.drain(ring);
        let seq = probes.next_phase_seq().unwrap_or(0);
        if let Ok(t) = probes.heap_totals() {
            self.heap_marks.on_totals(seq, heap_at_stop::counts(&t));
        }
        self.phase(mark.begin, mark.name, mark.ts_ns, seq);
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.feed(&item);
        }
    }

    /// A file known by identity only: its path if seen before, else its
    /// device and inode until /proc shows its name.
    fn known_file(&self, id: FileId) -> FileInfo {
        match self.stats.files.get(&id) {
            Some(f) => FileInfo { id, path: f.path.clone(), size_bytes: f.size_bytes },
            None => {
                FileInfo { id, path: format!("[dev {}:{} inode {}]", id.major, id.minor, id.inode), size_bytes: None }
            }
        }
    }

    /// Running totals for phase accounting.
    fn totals(&self) -> Totals {
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

    /// Kernel truth now: per-file smaps Rss and pagemap present pages, read
    /// after the events so far.
    fn truth(&mut self, ring: &mut RingBuf<MapData>) -> Result<KernelTruth, String> {
        self.drain(ring);
        self.sync(); // current names of the mapped files, e.g. "(deleted)"
        self.rss_at_truth = Some(self.loading.rss_now);
        let smaps = procfs::file_rss(self.pid).map_err(|e| format!("could not read /proc/{}/smaps: {e}", self.pid))?;
        let pagemap = procfs::file_pagemap(self.pid).ok();
        Ok(KernelTruth { smaps, pagemap })
    }

    /// The target is stopped at a phase marker: record per-file smaps Rss
    /// for that boundary.
    fn boundary(&mut self, ring: &mut RingBuf<MapData>) {
        let stopped = Instant::now();
        self.drain(ring); // the marker's own event is in the ring already
        if let (Some(ts), Ok(smaps)) = (self.last_main_marker_ns, procfs::file_rss(self.pid)) {
            self.boundary_truth.insert(ts, smaps);
        }
        self.boundary_stopped += stopped.elapsed();
    }
}

/// Files the target maps for the first time: the kernel side watches their
/// evictions, and a library with phase markers gets the marker probes.
fn watch_new_files(probes: &mut Probes, stats: &TraceStats, watched: &mut HashSet<FileId>, markers: &mut MarkerLibs) {
    // Called after every drain: cheap when no file is new (files are never removed).
    if stats.files.len() == watched.len() {
        return;
    }
    for (id, file) in &stats.files {
        if watched.insert(*id) {
            if let Err(e) = probes.watch_file(*id) {
                eprintln!("memtrace: warning: evictions of {} will not be seen: {e:#}", file.path);
            }
            markers.consider(probes, &file.path);
        }
    }
}

enum Stop {
    Exited(Option<ChildExit>),
    Duration,
    Signal(&'static str),
}

/// Traces until the target exits, the duration elapses or a signal comes.
/// Returns the trace and the detaching of the probes, still under way:
/// the kernel takes tens of ms per probe to unregister, seconds in all, so
/// the caller reports first and joins it before exiting.
pub async fn trace(target: Target, opts: Options) -> Result<(Trace, std::thread::JoinHandle<()>)> {
    let (pid, command, mode) = match &target {
        Target::Run(child) => (child.pid, child.command.clone(), "run"),
        Target::Attach { pid, command } => (*pid, command.clone(), "attach"),
    };
    let tracefs_root = tracefs::ensure_mounted()?;
    let offsets = tracefs::read_offsets(&tracefs_root)?;
    let phase_truth = opts.phase_truth && mode == "run";
    let mut probes = Probes::attach(pid, &offsets, phase_truth, opts.events.is_some())?;
    let mut ring = readable(probes.take_events()?).context("polling the event ring buffer")?;
    let binary = match &target {
        Target::Run(child) => std::fs::canonicalize(&child.program).unwrap_or_else(|_| child.program.clone()),
        Target::Attach { pid, .. } => PathBuf::from(format!("/proc/{pid}/exe")),
    };
    let phase_markers = match probes.attach_phase_markers(pid, &binary) {
        Ok(true) => format!("attached to memtrace_phase_begin/end in {}", binary.display()),
        Ok(false) => format!("none: {} does not export memtrace_phase_begin/end", binary.display()),
        Err(e) => {
            eprintln!("memtrace: warning: phases will not be traced: {e:#}");
            format!("none: {e:#}")
        }
    };
    if !opts.phase_fns.is_empty() {
        probes.attach_phase_fns(pid, &opts.phase_fns)?;
    }
    probes.probe_at_entry = opts.probe_at_entry;
    let mut heap_setup = attach_heap(&mut probes, pid, &binary, mode == "run", &opts.alloc_libs);
    if opts.explain_probes {
        eprint!("{}", report_heap::explain_probes(&heap_setup));
    }
    let start_ns = monotonic_ns();

    let mut consumer = Consumer {
        pid,
        stats: TraceStats::default(),
        loading: Loading::default(),
        rss_at_truth: None,
        phases: Phases::default(),
        mmap_file: HashMap::new(),
        unknown_pages: HashSet::new(),
        last_main_marker_ns: None,
        boundary_truth: HashMap::new(),
        boundary_stopped: Duration::ZERO,
        heap_marks: HeapMarks::default(),
        last_exec_ns: 0,
        phase_fn_names: opts.phase_fns.iter().map(|f| f.name.clone()).collect(),
        events: match &opts.events {
            Some(path) => Some(EventLog::create(path, start_ns)?),
            None => None,
        },
        mappings: Vec::new(),
    };
    let mut watched = HashSet::new();
    let mut marker_libs = MarkerLibs::new(pid, &binary);
    let mut start_truth: Option<KernelTruth> = None;
    let mut final_truth: Option<Result<KernelTruth, String>> = None;
    let mut truth_moment = "when tracing stopped";
    let mut heap_stop: Option<(Result<HeapAtStop, String>, &str)> = None;
    let mut sampler = HeapSampler::new(opts.growth_window);
    // Handle Ctrl-C/SIGTERM before the child runs: a signal that arrives
    // early must stop the trace, not kill memtrace.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut stat_faults = None;
    let mut exit_rx: Option<oneshot::Receiver<Result<ChildExit>>> = None;
    let mut child_stops: Option<mpsc::UnboundedReceiver<(ChildStop, std::sync::mpsc::SyncSender<()>)>> = None;
    let mut exit_fd: Option<AsyncFd<OwnedFd>> = None;
    match target {
        Target::Run(mut child) => {
            // Until exec, the child is a copy of memtrace: name that range so
            // its few faults are not mistaken for the command's.
            consumer.stats.sync(vec![(0, u64::MAX, Region::Special("[before exec]".into()))], vec![]);
            child.release()?;
            let (stop_tx, stop_rx) = mpsc::unbounded_channel();
            // The child is stopped: let the session read /proc, then go on.
            let hook = |kind: fn() -> ChildStop, stop_tx: mpsc::UnboundedSender<_>| {
                Box::new(move || {
                    let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
                    if stop_tx.send((kind(), ack_tx)).is_ok() {
                        let _ = ack_rx.recv_timeout(CHILD_STOP_TIMEOUT);
                    }
                })
            };
            let hooks = Hooks {
                at_exit: hook(|| ChildStop::Exit, stop_tx.clone()),
                at_marker: hook(|| ChildStop::Marker, stop_tx.clone()),
                at_exec: hook(|| ChildStop::Exec, stop_tx),
            };
            exit_rx = Some(child.supervise(hooks)?);
            child_stops = Some(stop_rx);
        }
        Target::Attach { .. } => {
            consumer.sync(); // baseline: what was mapped before we attached
            if let Some((start, end)) = procfs::brk_range(pid) {
                consumer.stats.kernel_heap.set_start(start, end);
            }
            if let Some(rss) = procfs::rss_counters(pid) {
                consumer.loading.set_baseline(rss);
            }
            start_truth =
                procfs::file_rss(pid).ok().map(|smaps| KernelTruth { smaps, pagemap: procfs::file_pagemap(pid).ok() });
            stat_faults = procfs::kernel_faults(pid);
            exit_fd = Some(readable(pidfd(pid)?).context("polling the target's pidfd")?);
        }
    }
    let (mark_tx, mut mark_rx) = mpsc::unbounded_channel();
    let control = match ControlSocket::open(Path::new(control::DIR), pid, mark_tx, monotonic_ns) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("memtrace: warning: `memtrace mark` will not reach this session: {e:#}");
            None
        }
    };
    eprintln!(
        "memtrace: tracing PID {pid} ({command}) with {} probes; Ctrl-C stops and reports",
        probes.attached.len()
    );

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut timeline = timeline::Sampler::new(opts.interval.as_secs_f64());
    let mut live = (!opts.quiet).then(|| LiveView::new(std::io::stderr().is_terminal()));
    let mut live_tick = tokio::time::interval_at(tokio::time::Instant::now() + LIVE_REFRESH, LIVE_REFRESH);
    let mut sample_tick = tokio::time::interval(opts.interval);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Frequent events do not wake us (see the eBPF side): drain on a short tick.
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    let mut ticks = 0u64;
    let mut grace: Option<tokio::time::Instant> = None;
    let stop = loop {
        let exit_wait = async {
            match (&mut exit_rx, &exit_fd) {
                (Some(rx), _) => Some(rx.await.ok().and_then(|r| r.ok())),
                (None, Some(fd)) => {
                    let _ = fd.readable().await;
                    Some(None)
                }
                _ => std::future::pending().await,
            }
        };
        let until = async {
            match grace.or(deadline) {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let child_stop = async {
            match &mut child_stops {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((kind, ack)) = child_stop => {
                match kind {
                    ChildStop::Exit => {
                        if final_truth.is_none() {
                            final_truth = Some(consumer.truth(ring.get_mut()));
                            truth_moment = "at the target's exit (stopped there with ptrace; mappings intact)";
                        }
                        if heap_setup.is_ok() {
                            heap_stop = Some((capture_heap(&probes, &consumer, &opts, &sampler), "at the target's exit stop"));
                        }
                        consumer.loading.on_exit();
                    }
                    ChildStop::Marker => consumer.boundary(ring.get_mut()),
                    ChildStop::Exec => {
                        // The exec event is in the ring: draining it reads the
                        // new image's mappings, so its markers and its own
                        // allocator are probed before its first instruction.
                        consumer.drain(ring.get_mut());
                        watch_new_files(&mut probes, &consumer.stats, &mut watched, &mut marker_libs);
                        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                            attach_exec_allocator(&mut probes, pid, &exe, &mut heap_setup, opts.explain_probes);
                        }
                    }
                }
                let _ = ack.send(());
            }
            Some(mark) = mark_rx.recv() => consumer.mark(mark, &mut probes, ring.get_mut()),
            _ = live_tick.tick(), if live.is_some() => {
                consumer.drain(ring.get_mut());
                let heap = heap_setup.is_ok().then(|| probes.heap_totals().ok()).flatten();
                let r = consumer.reading(clock.elapsed().as_secs_f64(), heap.as_ref());
                let status = LiveStatus {
                    elapsed_s: r.t_s,
                    phase: r.phase,
                    rss_file: r.rss_file,
                    rss_anon: r.rss_anon,
                    rss_shmem: r.rss_shmem,
                    heap_live: r.heap_live,
                    faults_total: consumer.stats.faults.total,
                    ringbuf_drops: probes.counters().map_or(0, |c| c[Counter::RingbufDrops]),
                    top_files: r.files.into_iter().map(|f| (f.path, f.loaded_bytes)).collect(),
                };
                if let Some(view) = &mut live {
                    eprint!("{}", view.render(&status));
                }
            }
            _ = sample_tick.tick() => {
                consumer.drain(ring.get_mut());
                let heap = heap_setup.is_ok().then(|| probes.heap_totals().ok()).flatten();
                timeline.record(consumer.reading(clock.elapsed().as_secs_f64(), heap.as_ref()));
            }
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                consumer.drain(guard.get_inner_mut());
                guard.clear_ready();
                watch_new_files(&mut probes, &consumer.stats, &mut watched, &mut marker_libs);
            }
            exit = exit_wait => break Stop::Exited(exit.flatten()),
            _ = until => break if grace.is_some() { Stop::Signal("signal (target did not exit in time)") } else { Stop::Duration },
            _ = tick.tick() => {
                consumer.drain(ring.get_mut());
                watch_new_files(&mut probes, &consumer.stats, &mut watched, &mut marker_libs);
                ticks += 1;
                if heap_setup.is_ok() {
                    sampler.tick(&probes);
                }
                if exit_fd.is_some() && ticks.is_multiple_of(100) {
                    stat_faults = procfs::kernel_faults(pid).or(stat_faults);
                }
            }
            sig = async { tokio::select! { _ = sigint.recv() => libc::SIGINT, _ = sigterm.recv() => libc::SIGTERM } } => {
                if exit_rx.is_some() && grace.is_none() {
                    // Run mode: read the kernel truth while the child still has its mappings.
                    final_truth = Some(consumer.truth(ring.get_mut()));
                    truth_moment = "when memtrace was interrupted";
                    if heap_setup.is_ok() {
                        heap_stop = Some((capture_heap(&probes, &consumer, &opts, &sampler), "when memtrace was interrupted"));
                    }
                }
                if let Some(s) = on_signal(&exit_rx, pid, sig, &mut grace) {
                    break s;
                }
            }
        }
    };
    if let Some(view) = &mut live {
        eprint!("{}", view.clear());
    }
    if final_truth.is_none() && !matches!(stop, Stop::Exited(_)) {
        final_truth = Some(consumer.truth(ring.get_mut()));
    }
    if heap_setup.is_ok() && heap_stop.is_none() {
        let when = if matches!(stop, Stop::Exited(_)) {
            "after the target exited (no exit stop; stacks symbolized with its last known mappings)"
        } else {
            "when tracing stopped"
        };
        heap_stop = Some((capture_heap(&probes, &consumer, &opts, &sampler), when));
    }
    // Events already in the ring buffer belong to the trace: take them all.
    consumer.drain(ring.get_mut());
    let heap_events = consumer.events.take().map(|log| {
        let ids = log.stack_ids();
        let stacks: Vec<Vec<u64>> = ids.iter().map(|id| probes.stack(*id).unwrap_or_default()).collect();
        let frames = symbolize::symbolize(pid, &stacks, &consumer.mappings);
        log.finish(&ids.into_iter().zip(frames).collect::<Vec<_>>())
    });
    let end_totals = consumer.totals();
    consumer.phases.finish(monotonic_ns(), &end_totals);
    let counters = probes.counters()?;
    drop(ring);
    drop(control);
    let traced_s = clock.elapsed().as_secs_f64();
    let detaching = std::thread::spawn(move || probes.detach());

    let (exit_code, exit_signal, kernel, stop_reason) = match &stop {
        Stop::Exited(Some(e)) => (
            Some(e.code),
            e.signal,
            Some(KernelFaults {
                source: "wait4 rusage of the child".into(),
                minor_faults: e.minflt,
                major_faults: e.majflt,
            }),
            "target exited".to_string(),
        ),
        other => {
            let kernel = stat_faults.map(|(minor, major)| KernelFaults {
                source: "/proc/PID/stat, whole process lifetime, last read before stop".into(),
                minor_faults: minor,
                major_faults: major,
            });
            let reason = match other {
                Stop::Exited(_) => "target exited".to_string(),
                Stop::Duration => format!("--duration {} s elapsed", opts.duration.unwrap_or_default().as_secs_f64()),
                Stop::Signal(s) => s.to_string(),
            };
            (None, None, kernel, reason)
        }
    };
    if matches!(stop, Stop::Duration) && mode == "run" {
        eprintln!("memtrace: stopped tracing; PID {pid} keeps running");
    }

    let last_heap = match &heap_stop {
        Some((Ok(h), _)) => Some(heap_at_stop::counts(&h.totals)),
        _ => None,
    };
    let leak_groups_not_listed = match &heap_stop {
        Some((Ok(h), _)) => h.more_leak_groups as u64,
        _ => 0,
    };
    if let Some(e) = &sampler.growth_error {
        eprintln!("memtrace: warning: growth suspects could not be sampled: {e}");
    }
    let growth_suspects = match &heap_stop {
        Some((Ok(h), _)) => h.growth_suspects.clone(),
        _ => vec![],
    };
    // The heap's own timeline (kept in the trace since version 1) is the
    // heap part of the trace's timeline.
    let heap_timeline = timeline
        .timeline
        .samples
        .iter()
        .filter_map(|s| {
            Some(HeapSample {
                t_s: s.t_s,
                live_bytes: s.heap_live_bytes?,
                anon_rss_bytes: s.rss_anon_bytes,
                brk_heap_bytes: s.brk_heap_bytes,
                anon_mapped_net_bytes: s.anon_mapped_net_bytes,
            })
        })
        .collect();
    let (heap, leaks) = heap_section(&consumer, heap_setup, heap_stop, heap_timeline, heap_events);
    let s = &consumer.stats;
    let unix = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let files = file_entries(&consumer, start_truth.as_ref(), final_truth.as_ref().and_then(|t| t.as_ref().ok()));
    let trace = Trace {
        format: trace::FORMAT.into(),
        version: trace::VERSION,
        target: trace::Target { pid, command, exit_code, exit_signal },
        mode: mode.into(),
        started_at: trace::rfc3339_utc(unix),
        duration_s: traced_s,
        stop_reason,
        counters: Counters {
            page_faults: counters[Counter::PageFaults],
            mmap_calls: counters[Counter::MmapCalls],
            munmap_calls: counters[Counter::MunmapCalls],
            madvise_calls: counters[Counter::MadviseCalls],
            madvise_failed: s.madvise_failed,
            mremap_calls: counters[Counter::MremapCalls],
            mremap_failed: s.mremap_failed,
            ringbuf_drops: counters[Counter::RingbufDrops],
            page_faults_seen: s.faults.total,
            page_faults_read: s.faults.read,
            page_faults_write: s.faults.write,
            page_faults_exec: s.faults.exec,
            mmap_failed: s.mmap_failed,
            munmap_failed: s.munmap_failed,
            execs: s.execs,
            syscalls_lost: counters[Counter::PendingFull],
            eviction_watch_full: counters[Counter::WatchFull],
            unattributed_faults: s.unattributed_faults,
            unresolved_file_mappings: s.unresolved_file_mappings,
            malformed_events: s.malformed_events,
            unattributed_file_loaded_bytes: consumer.loading.unattributed_loaded_bytes,
            unattributed_file_unloaded_bytes: consumer.loading.unattributed_unloaded_bytes,
            file_rss_released_at_exit_bytes: consumer.loading.released_at_exit_bytes,
        },
        kernel,
        regions: s.regions.iter().map(|(r, f)| RegionFaults { region: r.clone(), faults: *f }).collect(),
        rss: consumer.loading.rss_start.map(|start| RssSummary {
            start: rss(start),
            end: rss(consumer.loading.rss_now),
            peak: rss(consumer.loading.rss_peak),
            at_final_truth: consumer.rss_at_truth.map(rss),
        }),
        final_truth: match &final_truth {
            Some(Ok(_)) => format!("read from /proc/PID/smaps {truth_moment}"),
            Some(Err(e)) => e.clone(),
            None => "none: the target exited before memtrace could read /proc/PID/smaps (its mappings were already torn down)".into(),
        },
        phase_markers: if marker_libs.attached.is_empty() {
            phase_markers
        } else {
            format!("{phase_markers}; also in {}", marker_libs.attached.join(", "))
        },
        phase_truth: if phase_truth {
            format!(
                "smaps read at {} phase boundaries, the main thread stopped there (ptrace) for {:.1} ms in all",
                consumer.boundary_truth.len(),
                consumer.boundary_stopped.as_secs_f64() * 1e3
            )
        } else {
            "none (run mode with --phase-truth reads smaps at each phase boundary)".into()
        },
        phase_functions: opts
            .phase_fns
            .iter()
            .map(|f| format!("{}: {} in {}", f.name, f.symbol, f.path.display()))
            .collect(),
        unmatched_phase_ends: consumer.phases.unmatched_ends,
        phases: phase_entries(&consumer, start_ns, last_heap.as_ref()),
        heap,
        leak_rule: match opts.leak_age {
            Some(age) => format!("live allocations at least {} s old at the stop", age.as_secs_f64()),
            None => "every allocation still live at the stop".into(),
        },
        leaks,
        leak_groups_not_listed,
        growth_rule: format!(
            "allocation stacks whose live bytes grew in each of the last {} samples ({:.1} s apart; {} samples taken)",
            opts.growth_window,
            HeapSampler::growth_interval_s(),
            sampler.growth.samples
        ),
        growth_suspects,
        timeline: timeline.timeline,
        file_totals: FileTotals::of(&files),
        files,
        sources: trace::default_sources(),
    };
    Ok((trace, detaching))
}

/// The heap state when tracing stops, or why it could not be read.
fn capture_heap(probes: &Probes, c: &Consumer, opts: &Options, sampler: &HeapSampler) -> Result<HeapAtStop, String> {
    let now = monotonic_ns();
    let made_by = now.saturating_sub(opts.leak_age.map_or(0, |a| a.as_nanos() as u64));
    let window_s = sampler.growth.window() as f64 * HeapSampler::growth_interval_s();
    let suspects = sampler.growth.suspects();
    let ctx = StopContext {
        pid: c.pid,
        now_ns: now,
        made_by_ns: made_by,
        last_exec_ns: c.last_exec_ns,
        marks: &c.heap_marks,
        saved_mappings: &c.mappings,
    };
    heap_at_stop::at_stop(probes, &ctx, suspects, window_s).map_err(|e| format!("{e:#}"))
}

/// Finds the allocators and attaches the heap probes; the error says why
/// the heap is not traced. One allocator failing leaves the others traced.
fn attach_heap(probes: &mut Probes, pid: u32, binary: &Path, run_mode: bool, alloc_libs: &[PathBuf]) -> HeapSetup {
    let allocators = allocator::find(pid, binary, run_mode, alloc_libs).map_err(|e| format!("{e:#}"))?;
    let mut setup = Vec::new();
    let mut errors = Vec::new();
    for allocator in allocators {
        match probes.attach_allocator(pid, &allocator.open_path, &allocator.path) {
            Ok(report) => setup.push((allocator, report)),
            Err(e) => {
                eprintln!(
                    "memtrace: warning: allocations through {} will not be traced: {e:#}",
                    allocator.path.display()
                );
                errors.push(format!("{}: {e:#}", allocator.path.display()));
            }
        }
    }
    if setup.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(setup)
}

/// After a later execve in run mode (`env VAR=x prog`): an allocator linked
/// into the new executable (found in the first one only otherwise) is
/// probed while the new image is held at its exec stop.
fn attach_exec_allocator(probes: &mut Probes, pid: u32, exe: &Path, setup: &mut HeapSetup, explain: bool) {
    let Some((mut allocator, _)) = allocator::in_executable(exe) else { return };
    if setup.as_ref().is_ok_and(|s| s.iter().any(|(a, _)| a.path == exe)) {
        return; // the same executable again: already probed
    }
    allocator.how.push_str("; found when the target exec'd it");
    match probes.attach_allocator(pid, &allocator.open_path, &allocator.path) {
        Ok(report) => {
            let entry = (allocator, report);
            if explain {
                eprint!("{}", report_heap::explain_probes(&Ok(vec![entry.clone()])));
            }
            match setup {
                Ok(s) => s.push(entry),
                Err(_) => *setup = Ok(vec![entry]),
            }
        }
        Err(e) => eprintln!("memtrace: warning: allocations through {} will not be traced: {e:#}", exe.display()),
    }
}

/// Per-file kernel truth at one instant.
struct KernelTruth {
    smaps: HashMap<FileId, u64>,
    pagemap: Option<HashMap<FileId, u64>>,
}

fn rss(c: RssCounters) -> Rss {
    Rss { file_bytes: c.file, anon_bytes: c.anon, shmem_bytes: c.shmem, swap_bytes: c.swap }
}

/// One entry per file the target mapped, joining the mapping statistics, the
/// measured loading, the kernel truth and the estimates.
fn file_entries(c: &Consumer, start: Option<&KernelTruth>, end: Option<&KernelTruth>) -> Vec<FileEntry> {
    let all_files_size: u64 = c.stats.files.values().filter_map(|f| f.size_bytes).sum();
    // A monitor samples RSS while the program runs; give it its best case:
    // the growth from the start to the peak of the RSS total.
    let (rss_growth, heap_growth) = match c.loading.rss_start {
        Some(s) => {
            let now = c.loading.rss_peak;
            (now.total() as i64 - s.total() as i64, now.anon as i64 - s.anon as i64)
        }
        None => (0, 0),
    };
    let empty = FileLoad::default();
    c.stats
        .files
        .iter()
        .map(|(id, f)| {
            let load = c.loading.files.get(id).unwrap_or(&empty);
            let at_start = start.map(|t| t.smaps.get(id).copied().unwrap_or(0));
            let at_start_pagemap = start.and_then(|t| t.pagemap.as_ref()).map(|p| p.get(id).copied().unwrap_or(0));
            let kernel = end.map(|t| t.smaps.get(id).copied().unwrap_or(0));
            let pagemap = end.and_then(|t| t.pagemap.as_ref()).map(|p| p.get(id).copied().unwrap_or(0));
            let measured_resident = (at_start.unwrap_or(0) + load.loaded_bytes).saturating_sub(load.unloaded_bytes);
            let e = estimate(Inputs { file_size: f.size_bytes.unwrap_or(0), all_files_size, rss_growth, heap_growth });
            // Estimates are judged against smaps at stop while the file is
            // still mapped; once unmapped (or without a final truth), against
            // what the file cost at its peak, measured.
            let peak = at_start.unwrap_or(0) + load.peak_resident_bytes;
            let (reference, truth) = match kernel {
                Some(k) if f.mapped_now > 0 => ("kernel_rss_bytes", k),
                _ => ("peak_resident_bytes", peak),
            };
            let err = |v: u64| v as i64 - truth as i64;
            FileEntry {
                path: f.path.clone(),
                size_bytes: f.size_bytes,
                mapped_bytes: f.mapped_peak,
                mapped_at_end_bytes: f.mapped_now,
                mmap_calls: f.mmap_calls,
                device_major: id.major,
                device_minor: id.minor,
                inode: id.inode,
                page_faults: f.faults,
                resident_at_start_bytes: at_start,
                resident_at_start_pagemap_bytes: at_start_pagemap,
                measured_loaded_bytes: load.loaded_bytes,
                measured_resident_bytes: measured_resident,
                peak_resident_bytes: peak,
                unloaded_bytes: load.unloaded_bytes,
                fault_around_bytes: load.fault_around_bytes,
                // A large folio at the end of the file reaches past EOF.
                read_from_disk_bytes: f
                    .size_bytes
                    .map_or(load.read_from_disk_bytes, |s| load.read_from_disk_bytes.min(s.div_ceil(PAGE) * PAGE)),
                cache_added_other_bytes: load.cache_added_other_bytes,
                evicted_bytes: load.evicted_bytes,
                fault_ranges_bytes: load.pages.len() * PAGE,
                kernel_rss_bytes: kernel,
                kernel_pagemap_bytes: pagemap,
                estimates: FileEstimates {
                    fixed_ratio_bytes: e.fixed_ratio,
                    rss_growth_bytes: e.rss_growth,
                    capped_growth_bytes: e.capped_growth,
                    reference: reference.into(),
                    fixed_ratio_error_bytes: err(e.fixed_ratio),
                    rss_growth_error_bytes: err(e.rss_growth),
                    capped_growth_error_bytes: err(e.capped_growth),
                },
            }
        })
        .collect()
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec; CLOCK_MONOTONIC is the clock of bpf_ktime_get_ns.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The trace's heap section and leak candidates.
fn heap_section(
    c: &Consumer,
    setup: HeapSetup,
    at_stop: Option<(Result<HeapAtStop, String>, &str)>,
    timeline: Vec<HeapSample>,
    events: Option<HeapEvents>,
) -> (Option<Heap>, Vec<Leak>) {
    let setup = match setup {
        Ok(s) => s,
        Err(why) => {
            let status = format!("not traced: {why}");
            let heap = Heap { allocator: status.clone(), status, ..Heap::default() };
            return (Some(heap), vec![]);
        }
    };
    let k = &c.stats.kernel_heap;
    let allocator =
        setup.iter().map(|(a, _)| format!("{}: {}", a.path.display(), a.how)).collect::<Vec<_>>().join("; ");
    let mut heap = Heap {
        allocator,
        status: "traced".into(),
        allocators: setup
            .iter()
            .map(|(a, _)| HeapAllocator {
                path: a.path.display().to_string(),
                found_by: a.how.clone(),
                mapped: c
                    .stats
                    .files
                    .values()
                    .any(|f| Path::new(f.path.strip_suffix(" (deleted)").unwrap_or(&f.path)) == a.path),
            })
            .collect(),
        probes: setup
            .into_iter()
            .flat_map(|(_, probes)| probes)
            .map(|p| HeapProbeEntry {
                function: p.function,
                library: p.library.display().to_string(),
                address: p.address,
                offset: p.placement.as_ref().map(|pl| pl.offset),
                emulated: p.placement.as_ref().map(|pl| pl.emulated),
                placement: p.placement.map(|pl| pl.reason),
                status: p.status,
            })
            .collect(),
        timeline,
        kernel: KernelHeapSummary {
            brk_heap_bytes: k.brk_bytes(),
            brk_heap_peak_bytes: k.brk_peak_bytes(),
            brk_calls: k.brk_calls,
            anon_mmap_calls: k.anon_mmap_calls,
            anon_mapped_bytes: k.anon_mapped_bytes,
            anon_unmapped_bytes: k.anon_unmapped_bytes,
        },
        events,
        ..Heap::default()
    };
    let mut leaks = vec![];
    match at_stop {
        Some((Ok(h), when)) => {
            let t = h.totals;
            heap.read_at = when.to_string();
            (heap.released_by_exec_allocs, heap.released_by_exec_bytes) = h.released_by_exec;
            heap.live_bytes = t.allocated_bytes as i64 - t.freed_bytes as i64 - h.released_by_exec.1 as i64;
            heap.live_allocations = h.live_allocations;
            (heap.allocated_bytes, heap.freed_bytes, heap.allocs, heap.frees) =
                (t.allocated_bytes, t.freed_bytes, t.allocs, t.frees);
            (heap.unknown_frees, heap.dropped_allocs, heap.missed_frees) =
                (t.unknown_frees, t.dropped_allocs, t.missed_frees);
            (heap.lost_stacks, heap.failed_allocs, heap.lost_calls) = (t.lost_stacks, t.failed_allocs, t.lost_calls);
            (heap.abandoned_calls, heap.open_calls_at_stop) = (t.abandoned_calls, h.open_calls);
            leaks = h.leaks;
        }
        Some((Err(e), when)) => heap.read_at = format!("could not be read {when}: {e}"),
        None => heap.read_at = "never read".into(),
    }
    let at_markers = c.heap_marks.at_marker.values().map(|m| m.live_bytes());
    heap.peak_live_bytes =
        heap.timeline.iter().map(|s| s.live_bytes).chain(at_markers).chain([heap.live_bytes]).max().unwrap_or(0);
    (Some(heap), leaks)
}

fn phase_entries(c: &Consumer, start_ns: u64, last_heap: Option<&HeapCounts>) -> Vec<PhaseEntry> {
    let secs = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let path_of = |id: &FileId| {
        c.stats
            .files
            .get(id)
            .map_or_else(|| format!("[dev {}:{} inode {}]", id.major, id.minor, id.inode), |f| f.path.clone())
    };
    c.phases
        .done
        .iter()
        .map(|p| {
            // Kernel truth at both boundaries (--phase-truth): smaps Rss change.
            let truth = c.boundary_truth.get(&p.start_ns).zip(c.boundary_truth.get(&p.end_ns));
            let kernel_change = |id: &FileId| {
                truth.map(|(a, b)| b.get(id).copied().unwrap_or(0) as i64 - a.get(id).copied().unwrap_or(0) as i64)
            };
            let mut ids: BTreeSet<FileId> = p.files.keys().copied().collect();
            if let Some((a, b)) = truth {
                ids.extend(a.keys().chain(b.keys()).filter(|id| kernel_change(id) != Some(0)));
            }
            let files = ids
                .iter()
                .map(|id| {
                    let d = p.files.get(id).copied().unwrap_or_default();
                    PhaseFile {
                        path: path_of(id),
                        measured_loaded_bytes: d.loaded,
                        measured_unloaded_bytes: d.unloaded,
                        measured_rss_change_bytes: d.loaded as i64 - d.unloaded as i64,
                        kernel_rss_change_bytes: kernel_change(id),
                        fault_around_bytes: d.fault_around,
                        read_from_disk_bytes: d.read_from_disk,
                    }
                })
                .collect();
            PhaseEntry {
                name: p.name.clone(),
                path: p.path.clone(),
                depth: p.depth,
                start_s: secs(p.start_ns),
                end_s: secs(p.end_ns),
                duration_s: p.end_ns.saturating_sub(p.start_ns) as f64 / 1e9,
                start_monotonic_ns: p.start_ns,
                end_monotonic_ns: p.end_ns,
                open: p.open,
                kernel_truth_at_boundaries: truth.is_some(),
                heap_growth_bytes: last_heap.and_then(|last| c.heap_marks.growth(p.start_seq, p.end_seq, last)),
                page_faults: p.page_faults,
                anon_rss_growth_bytes: p.anon_rss_growth,
                files,
            }
        })
        .collect()
}

/// Registers an owned fd for readiness polling.
fn readable<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: RingBuf and OwnedFd own their fd for their whole lifetime and
    // always return the same one from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Attach mode stops at once. Run mode forwards the signal to the child and
/// keeps tracing until it exits (or the grace period ends), so its last
/// events are not lost.
fn on_signal<T>(child: &Option<T>, pid: u32, sig: i32, grace: &mut Option<tokio::time::Instant>) -> Option<Stop> {
    let name = if sig == libc::SIGINT { "interrupted (SIGINT)" } else { "terminated (SIGTERM)" };
    if child.is_none() || grace.is_some() {
        return Some(Stop::Signal(name));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, sig) };
    *grace = Some(tokio::time::Instant::now() + CHILD_GRACE);
    None
}
