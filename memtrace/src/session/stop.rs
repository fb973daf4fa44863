//! What is read when tracing stops, and when: the per-file kernel truth
//! (smaps, pagemap) and the heap (totals, live allocations grouped into
//! leaks, growth suspects), both while the target's mappings still exist.
//! One capture per session, at the latest moment the target is alive: its
//! exit stop in run mode (memtrace is its ptrace tracer), else when the
//! loop ends. Also the smaps reads at phase boundaries (`--phase-truth`).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    anon_at_stop::{self, AnonContext},
    assemble::{self, Parts},
    heap_at_stop::{self, HeapAtStop, StopContext},
    heap_sampler::HeapSampler,
    monotonic_ns,
    target::Stop,
    Session,
};
use crate::{
    model::{aspace::FileId, heap_marks::LiveAllocation, loading::RssCounters},
    procfs,
    trace::Trace,
};

/// Live allocations by process, and the scope's open allocator calls.
pub type LiveHeaps = (BTreeMap<u32, Vec<LiveAllocation>>, u64);

/// Per-file kernel truth at one instant.
pub struct KernelTruth {
    pub smaps: HashMap<FileId, procfs::SmapsFile>,
    pub pagemap: Option<HashMap<FileId, procfs::FilePages>>,
}

impl KernelTruth {
    pub fn read(pid: u32) -> Result<KernelTruth, String> {
        let smaps = procfs::file_smaps(pid).map_err(|e| format!("could not read /proc/{pid}/smaps: {e}"))?;
        Ok(KernelTruth { smaps, pagemap: procfs::file_pagemap(pid).ok() })
    }

    /// smaps Rss of one file (0 when not mapped).
    pub fn rss(&self, id: &FileId) -> u64 {
        self.smaps.get(id).map_or(0, |s| s.rss)
    }
}

/// When the stop capture was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Run mode: the child stopped at its exit with ptrace, mappings intact.
    ExitStop,
    /// The target was gone before anything could be read (attach mode, or
    /// no exit stop): no kernel truth; stacks from the last known mappings.
    AfterExit,
    /// The duration elapsed or a signal came; the target still runs.
    Stopped,
}

impl Moment {
    /// The target's /proc still shows its mappings.
    fn target_alive(self) -> bool {
        self != Moment::AfterExit
    }

    /// `heap.read_at` in the trace.
    pub fn heap_read_at(self) -> &'static str {
        match self {
            Moment::ExitStop => "at the target's exit stop",
            Moment::AfterExit => {
                "after the target exited (no exit stop; stacks symbolized with its last known mappings)"
            }
            Moment::Stopped => "when tracing stopped",
        }
    }
}

/// `final_truth` in the trace: when smaps was read.
impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Moment::ExitStop => "at the target's exit (stopped there with ptrace; mappings intact)",
            Moment::AfterExit => "after the target exited",
            Moment::Stopped => "when tracing stopped",
        })
    }
}

/// Everything read at a process's stop.
pub struct StopCapture {
    pub moment: Moment,
    /// None when the target was gone.
    pub truth: Option<Result<KernelTruth, String>>,
    /// The RSS counters (from the events) when the truth was read.
    pub rss_at_truth: Option<RssCounters>,
    /// The kernel's (minor, major) count of the process's own faults then
    /// (/proc/PID/stat).
    pub kernel_faults: Option<(u64, u64)>,
    /// None when the heap is not traced.
    pub heap: Option<Result<HeapAtStop, String>>,
    /// Its anonymous memory by origin (None: not read).
    pub anon: Option<crate::trace::AnonMemory>,
}

impl StopCapture {
    /// Nothing read (a process whose capture is missing).
    pub fn none() -> StopCapture {
        StopCapture {
            moment: Moment::AfterExit,
            truth: None,
            rss_at_truth: None,
            kernel_faults: None,
            heap: None,
            anon: None,
        }
    }
}

/// Per-file smaps Rss at phase boundaries (`--phase-truth`), by marker time.
#[derive(Default)]
pub struct BoundaryTruth {
    pub at: HashMap<u64, HashMap<FileId, u64>>,
    /// Time the target spent stopped for them.
    pub stopped: Duration,
}

impl Session {
    /// Reads process `pid`'s kernel truth and heap now, after every event so far.
    pub(super) fn capture(&mut self, pid: u32, moment: Moment) {
        self.consumer.drain(self.ring.get_mut());
        let heap = self.heap.is_ok().then(|| self.live_heaps(&HashSet::from([pid])));
        self.capture_with(pid, moment, heap.as_ref());
    }

    /// The live allocations of `pids`, and the scope's open allocator calls.
    pub(super) fn live_heaps(&self, pids: &HashSet<u32>) -> Result<LiveHeaps, String> {
        let live = self.probes.live_allocations(|pid| pids.contains(&pid)).map_err(|e| format!("{e:#}"))?;
        let open_calls = self.probes.open_alloc_calls().map_err(|e| format!("{e:#}"))?;
        Ok((live, open_calls))
    }

    /// One process's capture, with its heap read from `heap` (None: not traced).
    pub(super) fn capture_with(&mut self, pid: u32, moment: Moment, heap: Option<&Result<LiveHeaps, String>>) {
        let Some(p) = self.consumer.process_mut(pid) else { return };
        let mut rss_at_truth = None;
        let kernel_faults = moment.target_alive().then(|| p.kernel_faults()).flatten();
        let truth = moment.target_alive().then(|| {
            p.sync(); // current names of the mapped files, e.g. "(deleted)"
            rss_at_truth = Some(p.loading.rss_now);
            KernelTruth::read(pid)
        });
        let heap = heap.map(|h| self.heap_from(pid, h));
        let anon = Some(self.anon_at_stop(pid, moment.target_alive()));
        self.captures.insert(pid, StopCapture { moment, truth, rss_at_truth, kernel_faults, heap, anon });
    }

    /// Process `pid`'s anonymous memory by origin now (`alive`: its /proc
    /// shows its mappings).
    fn anon_at_stop(&self, pid: u32, alive: bool) -> crate::trace::AnonMemory {
        let p = &self.consumer.processes[&pid];
        let start = p.loading.rss_start.map_or(0, |r| r.anon);
        let interpreter =
            self.runtimes.of(p.stats.files.keys()).filter(|r| r.name == "CPython").map(|r| r.file.clone());
        let ctx = AnonContext {
            pid,
            anon: &p.anon,
            stats: &p.stats,
            kernel_growth_bytes: p.loading.rss_now.anon as i64 - start as i64,
            alive,
            saved_mappings: &p.mappings,
            python: self.python.get(&pid).copied(),
            interpreter: interpreter.as_deref(),
        };
        anon_at_stop::at_stop(&self.probes, &ctx)
    }

    /// Process `pid`'s heap from one walk of the live map.
    fn heap_from(&self, pid: u32, heaps: &Result<LiveHeaps, String>) -> Result<HeapAtStop, String> {
        match heaps {
            Ok((live, open_calls)) => {
                self.heap_at_stop(pid, live.get(&pid).map_or(&[][..], Vec::as_slice), *open_calls)
            }
            Err(e) => Err(e.clone()),
        }
    }

    /// A child's exit stop: its truth now, while its mappings exist; its
    /// heap later, with the harvest's (or the stop's) one walk of the live
    /// map for every process that ended since. No code of it runs after
    /// this stop, so the allocations read then are those of now. (A walk
    /// at each exit made a tree of short processes, pyenv's shims, 18x
    /// slower than untraced.)
    ///
    /// A CPython process's heap is read now, though: its leak stacks' Python
    /// frames are named from its code objects in its memory, gone after
    /// this stop (a multiprocessing worker's showed "unreadable" code).
    pub(super) fn capture_at_exit_stop(&mut self, pid: u32) {
        self.consumer.drain(self.ring.get_mut());
        let now = self.heap.is_ok() && self.python.contains_key(&pid);
        let heap = now.then(|| self.live_heaps(&HashSet::from([pid])));
        self.capture_with(pid, Moment::ExitStop, heap.as_ref());
    }

    /// Fills in the heap of a capture taken without it (`capture_at_exit_stop`).
    pub(super) fn fill_heap(&mut self, pid: u32, heaps: &Result<LiveHeaps, String>) {
        if self.captures.get(&pid).is_some_and(|c| c.heap.is_none()) {
            let heap = self.heap_from(pid, heaps);
            if let Some(c) = self.captures.get_mut(&pid) {
                c.heap = Some(heap);
            }
        }
    }

    /// Captures whose heap is still to be read (the heap is traced).
    pub(super) fn heaps_to_fill(&self) -> Vec<u32> {
        if self.heap.is_err() {
            return Vec::new();
        }
        self.captures.iter().filter(|(_, c)| c.heap.is_none()).map(|(pid, _)| *pid).collect()
    }

    /// After the loop: the capture of every process whose exit stop did
    /// not take one (still running, or gone without one).
    pub(super) fn capture_at_stop(&mut self, stop: &Stop) {
        let pending: Vec<(u32, Moment)> = self
            .consumer
            .processes
            .values()
            .filter(|p| !self.captures.contains_key(&p.pid))
            .map(|p| {
                let gone = !p.alive() || (p.pid == self.pid && matches!(stop, Stop::Exited(_)));
                (p.pid, if gone { Moment::AfterExit } else { Moment::Stopped })
            })
            .collect();
        // The children whose exit stops left their heap to be read: in the same walk.
        let unfilled = self.heaps_to_fill();
        self.consumer.drain(self.ring.get_mut());
        let pids: HashSet<u32> = pending.iter().map(|(pid, _)| *pid).chain(unfilled.iter().copied()).collect();
        let heap = self.heap.is_ok().then(|| self.live_heaps(&pids));
        for &(pid, moment) in &pending {
            self.capture_with(pid, moment, heap.as_ref());
        }
        if let Some(heap) = &heap {
            for pid in unfilled {
                self.fill_heap(pid, heap);
            }
        }
    }

    /// Process `pid`'s heap at the stop, or why it could not be read.
    fn heap_at_stop(&self, pid: u32, live: &[LiveAllocation], open_calls: u64) -> Result<HeapAtStop, String> {
        let p = &self.consumer.processes[&pid];
        // Ages as at its end (its heap may be read a little later).
        let now = p.ended.map_or_else(monotonic_ns, |e| e.ts_ns);
        let made_by = now.saturating_sub(self.opts.leak_age.map_or(0, |a| a.as_nanos() as u64));
        let window_s = self.sampler.growth.window() as f64 * HeapSampler::growth_interval_s();
        // Its own totals: from the kernel while it is traced, else those its
        // exit event carried.
        let totals = self.probes.process_heap_totals(pid).or(p.ended.map(|e| e.heap)).unwrap_or_default();
        let interpreter = match (self.python.contains_key(&pid), self.opts.group_by_native_stack) {
            (true, false) => self.runtimes.of(p.stats.files.keys()).map(|r| r.file.clone()),
            _ => None,
        };
        let ctx = StopContext {
            pid,
            totals,
            now_ns: now,
            made_by_ns: made_by,
            last_exec_ns: p.last_exec_ns,
            marks: &p.heap_marks,
            saved_mappings: &p.mappings,
            python: self.python.get(&pid).copied(),
            interpreter: interpreter.as_deref(),
            live,
            open_calls,
        };
        let suspects = self.sampler.suspects_of(pid);
        heap_at_stop::at_stop(&self.probes, &ctx, suspects, window_s).map_err(|e| format!("{e:#}"))
    }

    /// The target is stopped at a phase marker: per-file smaps Rss for
    /// that boundary.
    /// Whether the stop was a new marker's.
    pub(super) fn boundary_truth(&mut self) -> bool {
        let stopped = Instant::now();
        // The marker's own event is in the ring already (drained by the caller).
        let Some(ts) = self.consumer.root().last_main_marker_ns else { return false };
        if self.boundaries.at.contains_key(&ts) {
            return false; // held for another reason (code mapped) since this marker
        }
        if let Ok(smaps) = procfs::file_rss(self.pid) {
            self.boundaries.at.insert(ts, smaps);
        }
        self.boundaries.stopped += stopped.elapsed();
        true
    }

    /// Takes the last events, closes the phases and the events log, starts
    /// detaching the probes and assembles the trace.
    pub(super) fn finish(mut self, stop: Stop) -> Result<(Trace, super::Detaching)> {
        // Events already in the ring buffer belong to the trace: take them all.
        self.consumer.drain(self.ring.get_mut());
        let heap_events = self.consumer.events.take().map(|log| {
            let ids = log.stack_ids();
            let stacks: Vec<Vec<u64>> = ids.iter().map(|id| self.probes.stack(*id).unwrap_or_default()).collect();
            let python = self.python.get(&self.pid).copied();
            let frames = crate::symbolize::symbolize(self.pid, &stacks, &self.consumer.root().mappings, python);
            log.finish(&ids.into_iter().zip(frames).collect::<Vec<_>>())
        });
        let now = monotonic_ns();
        let end_totals = self.consumer.totals();
        let c = &mut self.consumer;
        c.phases.finish(now, &end_totals, &mut c.heap_marks);
        for p in c.processes.values_mut() {
            let totals = p.phase_totals();
            p.phases.finish(p.ended.map_or(now, |e| e.ts_ns), &totals, &mut p.heap_marks);
        }
        let counters = self.probes.counters()?;
        self.unwind.collect_cuts(&self.probes);
        if let Some(e) = &self.sampler.growth_error {
            self.warnings.warn(format!("growth suspects could not be sampled: {e}"));
        }
        if matches!(stop, Stop::Duration(_)) && self.target.mode() == crate::trace::Mode::Run {
            eprintln!("memtrace: stopped tracing; PID {} keeps running", self.pid);
        }
        let traced_s = self.clock.elapsed().as_secs_f64();
        let own_faults = self.target.own_faults();
        let scope_heap = self.heap.is_ok().then(|| self.probes.heap_totals().ok()).flatten();
        let mut trace = assemble::trace(Parts {
            pid: self.pid,
            mode: self.target.mode(),
            command: self.command,
            started: self.started,
            start_ns: self.start_ns,
            traced_s,
            stop: &stop,
            consumer: &self.consumer,
            counters: &counters,
            captures: &self.captures,
            folded: self.harvest.folded.as_ref(),
            scope_heap,
            start_truth: self.start_truth.as_ref(),
            start_truths: &self.start_truths,
            own_faults,
            phase_truth: self.phase_truth,
            boundaries: &self.boundaries,
            phase_markers: self.phase_markers,
            marker_libs: &self.marker_libs.attached,
            runtimes: &self.runtimes,
            python: &self.python,
            phase_functions: self
                .opts
                .phase_fns
                .iter()
                .map(|f| format!("{}: {} in {}", f.name, f.symbol, f.path.display()))
                .collect(),
            heap: self.heap,
            heap_events,
            timeline: self.timeline.timeline,
            leak_age: self.opts.leak_age,
            growth_window: self.opts.growth_window,
            growth_samples: self.sampler.growth.samples,
            unwind: self.unwind.stats,
            warnings: self.warnings.into_vec(),
        });
        trace.memtrace = Some(crate::procfs::own_cost(self.consumer.records, traced_s));
        // Closing the ring and the control socket before detaching: nothing
        // reads them any more.
        drop((self.ring, self.control));
        if let Err(e) = crate::kernel::detacher::hand_over() {
            eprintln!("memtrace: detaching in the foreground (could not fork the detacher: {e})");
        }
        let (probes, retirer) = (self.probes, self.retirer);
        Ok((
            trace,
            std::thread::spawn(move || {
                probes.detach();
                retirer.finish();
            }),
        ))
    }
}
