//! Assembling the `Trace` from what the session gathered: the consumer's
//! aggregates, the stop capture, the probes' counters and the set-up's
//! findings. Pure code: no kernel, no /proc (unit tests below feed it).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_common::{Counter, HeapTotals};

use super::{
    consumer::Consumer,
    heap_at_stop::HeapAtStop,
    heap_sampler::HeapSampler,
    process::ProcessModel,
    setup::HeapSetup,
    stop::{BoundaryTruth, KernelTruth, StopCapture},
    target::Stop,
};
use crate::{
    kernel::probes::KernelCounters,
    model::{
        aspace::FileId,
        estimates::{estimate, Inputs},
        heap_marks::HeapMarks,
        loading::{FileLoad, RssCounters, PAGE},
        pageset::PageSet,
        phases::{FileCounts, Phases},
        timeline::Timeline,
    },
    procfs,
    trace::{
        self, Counters, FileEntry, FileEstimates, FileTotals, FoldedPhaseEntry, FoldedProcesses, Heap, HeapAllocator,
        HeapEvents, HeapProbeEntry, HeapSample, KernelFaults, KernelHeapSummary, Leak, Mode, PhaseEntry, PhaseFile,
        ProcessEntry, ProcessHeap, RegionFaults, Rss, RssSummary, Trace,
    },
};

/// Everything the trace is made of, gathered by the session.
pub struct Parts<'a> {
    pub pid: u32,
    pub command: String,
    pub mode: Mode,
    pub started: SystemTime,
    /// Monotonic time when tracing began (phase times are relative to it).
    pub start_ns: u64,
    pub traced_s: f64,
    pub stop: &'a Stop,
    pub consumer: &'a Consumer,
    pub counters: &'a KernelCounters,
    /// Each process's stop capture, by PID.
    pub captures: &'a BTreeMap<u32, StopCapture>,
    /// The ended processes folded away (`--max-processes`).
    pub folded: Option<&'a FoldedProcesses>,
    /// The scope's allocator totals at the end (every process's).
    pub scope_heap: Option<HeapTotals>,
    /// Attach mode: per-file kernel truth when tracing began.
    pub start_truth: Option<&'a KernelTruth>,
    /// `--children`: each descendant's, by PID.
    pub start_truths: &'a BTreeMap<u32, KernelTruth>,
    /// The kernel's count of the target's own faults over the traced
    /// interval: (minor, major, source).
    pub own_faults: Option<(u64, u64, &'static str)>,
    /// `--phase-truth` was in force (run mode).
    pub phase_truth: bool,
    pub boundaries: &'a BoundaryTruth,
    /// The executable's phase markers, and the libraries' that were probed.
    pub phase_markers: String,
    pub marker_libs: &'a [String],
    /// The language runtimes found in the mapped files.
    pub runtimes: &'a crate::runtime::Runtimes,
    /// The processes whose Python frames the eBPF side read.
    pub python: &'a HashMap<u32, &'static crate::runtime::cpython::Layout>,
    /// `--phase-fn`: "NAME: SYMBOL in PATH".
    pub phase_functions: Vec<String>,
    pub heap: HeapSetup,
    pub heap_events: Option<HeapEvents>,
    pub timeline: Timeline,
    pub leak_age: Option<Duration>,
    pub growth_window: usize,
    pub growth_samples: u64,
    /// How stacks were walked and the unwind tables loaded.
    pub unwind: crate::trace::UnwindStats,
    pub warnings: Vec<String>,
}

pub fn trace(p: Parts) -> Trace {
    let c = p.consumer;
    let root = c.root();
    let no_capture = StopCapture::none();
    let capture = p.captures.get(&p.pid).unwrap_or(&no_capture);
    let end_truth = capture.truth.as_ref().and_then(|t| t.as_ref().ok());
    let processes: Vec<ProcessEntry> = c
        .processes
        .values()
        .map(|pm| {
            let start_truth = if pm.pid == p.pid { p.start_truth } else { p.start_truths.get(&pm.pid) };
            let capture = p.captures.get(&pm.pid).unwrap_or(&no_capture);
            let mut entry = process_entry(pm, capture, start_truth, p.start_ns);
            // `--phase-truth` stops only the first process.
            let no_truth = HashMap::new();
            let boundary_truth = if pm.pid == p.pid { &p.boundaries.at } else { &no_truth };
            let last_heap = entry.heap.as_ref().filter(|h| h.totals != HeapTotals::default()).map(|h| h.totals);
            entry.phases = phase_entries(
                c,
                PhaseSource { phases: &pm.phases, marks: &pm.heap_marks, last_heap: last_heap.as_ref() },
                p.start_ns,
                boundary_truth,
            );
            entry.phases_folded = folded_phase_entries(c, &pm.phases, p.start_ns);
            entry.runtime = runtime_entry(p.runtimes, p.python, pm);
            entry
        })
        .collect();
    let mut processes = processes;
    let tree = processes.len() > 1 || p.folded.is_some();
    // The folded processes count in every sum over processes below, as one
    // entry (taken out again before the list goes in the trace).
    if let Some(f) = p.folded {
        processes.push(super::fold::as_entry(f));
    }
    let files = if tree { tree_files(&processes, p.captures) } else { file_entries(root, p.start_truth, end_truth) };
    let (mut heap, mut leaks) = heap_section(c, p.heap, capture, heap_timeline(&p.timeline), p.heap_events);
    let mut leak_groups_not_listed =
        capture.heap.as_ref().and_then(|h| h.as_ref().ok()).map_or(0, |h| h.more_leak_groups as u64);
    let mut growth_suspects: Vec<_> =
        capture.heap.as_ref().and_then(|h| h.as_ref().ok()).map(|h| h.growth_suspects.clone()).unwrap_or_default();
    if tree {
        // The scope's heap: every process's totals, leaks and suspects.
        // The largest groups of all, as many as one process lists: every
        // group stays in its process's entry (a tree of thousands of
        // processes listed each twice).
        leaks = processes.iter().flat_map(|pe| pe.leaks.iter().cloned()).collect();
        leaks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.count.cmp(&a.count)));
        let beyond = leaks.len().saturating_sub(super::heap_at_stop::MAX_LEAK_GROUPS);
        leaks.truncate(super::heap_at_stop::MAX_LEAK_GROUPS);
        leak_groups_not_listed = processes.iter().map(|pe| pe.leak_groups_not_listed).sum::<u64>() + beyond as u64;
        growth_suspects = p
            .captures
            .values()
            .filter_map(|cap| cap.heap.as_ref()?.as_ref().ok())
            .flat_map(|h| h.growth_suspects.clone())
            .collect();
        growth_suspects.sort_by_key(|g| std::cmp::Reverse(g.growth_bytes));
        if let (Some(h), Some(totals)) = (&mut heap, p.scope_heap) {
            if h.status == "traced" {
                h.totals = totals;
                h.live_bytes = processes.iter().filter_map(|pe| pe.heap.as_ref()).map(|ph| ph.live_bytes).sum();
                h.live_allocations =
                    processes.iter().filter_map(|pe| pe.heap.as_ref()).map(|ph| ph.live_allocations).sum();
                h.released_by_exec_allocs = 0;
                h.released_by_exec_bytes = 0;
                h.peak_live_bytes = h.peak_live_bytes.max(h.live_bytes);
                h.read_at = format!(
                    "{} (the first process); each other process's at its own exit stop or when tracing stopped",
                    h.read_at
                );
            }
        }
    }
    let last_heap = heap.as_ref().map(|h| h.totals);
    if let Some(h) = &mut heap {
        h.unwind = p.unwind;
    }
    let exit = match p.stop {
        Stop::Exited(Some(e)) => Some(*e),
        _ => root.exit,
    };
    let (exit_code, exit_signal) = exit.map_or((None, None), |e| (Some(e.code), e.signal));
    let kernel = if tree { tree_kernel_faults(&processes) } else { kernel_faults(p.stop, p.own_faults) };
    let regions = if tree { tree_regions(&processes) } else { regions(root) };
    let rss = if tree { tree_rss(&processes, &p.timeline) } else { rss_summary(root, capture) };
    let anon = scope_anon(&processes);
    if p.folded.is_some() {
        processes.pop();
    }
    Trace {
        format: trace::FORMAT.into(),
        version: trace::VERSION,
        target: trace::Target { pid: p.pid, command: p.command, exit_code, exit_signal },
        mode: p.mode,
        started_at: trace::rfc3339_utc(p.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()),
        duration_s: p.traced_s,
        stop_reason: p.stop.reason(),
        counters: scope_counters(c, p.counters, p.folded),
        kernel,
        kernel_wait4: match p.stop {
            Stop::Exited(Some(e)) if tree => Some(KernelFaults {
                source: "wait4 rusage of the command at its exit (its own faults and those of the descendants reaped under it)"
                    .into(),
                minor_faults: e.minflt,
                major_faults: e.majflt,
            }),
            _ => None,
        },
        regions,
        rss,
        final_truth: final_truth(capture),
        phase_markers: match (p.marker_libs.is_empty(), p.phase_markers.starts_with("none")) {
            (true, _) => p.phase_markers,
            // Only a library has them (a Python program's, through the shipped one).
            (false, true) => format!("attached to memtrace_phase_begin/end in {}", p.marker_libs.join(", ")),
            (false, false) => format!("{}; also in {}", p.phase_markers, p.marker_libs.join(", ")),
        },
        phase_truth: if p.phase_truth {
            format!(
                "smaps read at {} phase boundaries, the main thread stopped there (ptrace) for {:.1} ms in all",
                p.boundaries.at.len(),
                p.boundaries.stopped.as_secs_f64() * 1e3
            )
        } else {
            "none (run mode with --phase-truth reads smaps at each phase boundary)".into()
        },
        phase_functions: p.phase_functions,
        unmatched_phase_ends: c.phases.unmatched_ends,
        phases: phase_entries(
            c,
            PhaseSource { phases: &c.phases, marks: &c.heap_marks, last_heap: last_heap.as_ref() },
            p.start_ns,
            &p.boundaries.at,
        ),
        phases_folded: folded_phase_entries(c, &c.phases, p.start_ns),
        runtime: runtime_entry(p.runtimes, p.python, root),
        anon,
        heap,
        leak_rule: match p.leak_age {
            Some(age) => format!("live allocations at least {} s old at the stop", age.as_secs_f64()),
            None => "every allocation still live at the stop".into(),
        },
        leaks,
        leak_groups_not_listed,
        growth_rule: format!(
            "allocation stacks whose live bytes grew in each of the last {} samples ({:.1} s apart; {} samples taken)",
            p.growth_window,
            HeapSampler::growth_interval_s(),
            p.growth_samples
        ),
        growth_suspects,
        timeline: p.timeline,
        file_totals: FileTotals::of(&files),
        files,
        sources: trace::default_sources(),
        warnings: p.warnings,
        processes,
        processes_folded: p.folded.cloned(),
        memtrace: None,
    }
}

fn final_truth(capture: &StopCapture) -> String {
    match &capture.truth {
        Some(Ok(_)) => format!("read from /proc/PID/smaps {}", capture.moment),
        Some(Err(e)) => e.clone(),
        None => {
            "none: the target exited before memtrace could read /proc/PID/smaps (its mappings were already torn down)"
                .into()
        }
    }
}

fn regions(p: &ProcessModel) -> Vec<RegionFaults> {
    p.stats.regions.iter().map(|(r, f)| RegionFaults { region: r.clone(), faults: *f }).collect()
}

fn rss_summary(p: &ProcessModel, capture: &StopCapture) -> Option<RssSummary> {
    p.loading.rss_start.map(|start| RssSummary {
        start: rss(start),
        end: rss(p.loading.rss_now),
        peak: rss(p.loading.rss_peak),
        at_final_truth: capture.rss_at_truth.map(rss),
    })
}

/// One process's own figures.
/// The runtime in the files `pm` maps (CPython), as the trace says it.
fn runtime_entry(
    runtimes: &crate::runtime::Runtimes,
    python: &HashMap<u32, &'static crate::runtime::cpython::Layout>,
    pm: &ProcessModel,
) -> Option<crate::trace::RuntimeEntry> {
    runtimes.of(pm.stats.files.keys()).map(|r| crate::trace::RuntimeEntry {
        name: r.name.to_string(),
        version: r.version.clone(),
        file: r.file.clone(),
        source: r.source.clone(),
        frames: match r.cpython {
            Some(_) if !python.contains_key(&pm.pid) => {
                "not read (--no-python-frames, or its image was not found: see the warnings)".into()
            }
            _ => r.frames.clone(),
        },
    })
}

/// The scope's anonymous memory: its processes', origin by origin.
fn scope_anon(processes: &[ProcessEntry]) -> Option<trace::AnonMemory> {
    let mut listed = processes.iter().filter_map(|e| e.anon.as_ref());
    let mut sum = listed.next()?.clone();
    for a in listed {
        sum.add(a, super::anon_at_stop::MAX_ORIGINS);
    }
    Some(sum)
}

pub(super) fn process_entry(
    pm: &ProcessModel,
    capture: &StopCapture,
    start_truth: Option<&KernelTruth>,
    start_ns: u64,
) -> ProcessEntry {
    let end_truth = capture.truth.as_ref().and_then(|t| t.as_ref().ok());
    let files = file_entries(pm, start_truth, end_truth);
    let secs = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let heap_at_stop = capture.heap.as_ref().and_then(|h| h.as_ref().ok());
    let heap = capture.heap.as_ref().map(|h| match h {
        Ok(h) => ProcessHeap {
            read_at: capture.moment.heap_read_at().into(),
            live_bytes: h.totals.live_bytes() - h.released_by_exec.1 as i64,
            live_allocations: h.live_allocations,
            totals: h.totals,
        },
        Err(e) => ProcessHeap { read_at: format!("could not be read: {e}"), ..ProcessHeap::default() },
    });
    ProcessEntry {
        pid: pm.pid,
        parent: pm.parent,
        command: pm.command.clone(),
        started_s: secs(pm.started_ns.max(start_ns)),
        ended_s: pm.ended.map(|e| secs(e.ts_ns)),
        exit_code: pm.exit.map(|e| e.code),
        exit_signal: pm.exit.and_then(|e| e.signal),
        final_truth: final_truth(capture),
        counters: process_counters(pm),
        kernel: capture.kernel_faults.map(|(minor, major)| KernelFaults {
            source: format!("/proc/PID/stat {}: its own faults", capture.moment),
            minor_faults: minor,
            major_faults: major,
        }),
        regions: regions(pm),
        rss: rss_summary(pm, capture),
        heap,
        leaks: heap_at_stop.map(|h| h.leaks.clone()).unwrap_or_default(),
        leak_groups_not_listed: heap_at_stop.map_or(0, |h| h.more_leak_groups as u64),
        phases: Vec::new(),
        phases_folded: Vec::new(),
        runtime: None,
        anon: capture.anon.clone(),
        file_totals: FileTotals::of(&files),
        files,
    }
}

/// The tree's files: each file once, with the processes' figures summed
/// (their RSS for it is what `top` adds up; a page mapped by several
/// counts in each), evictions once (every process mapping the file sees
/// the same eviction).
fn tree_files(processes: &[ProcessEntry], captures: &BTreeMap<u32, StopCapture>) -> Vec<FileEntry> {
    let mut by_file: BTreeMap<(u32, u32, u64), FileEntry> = BTreeMap::new();
    for f in processes.iter().flat_map(|pe| &pe.files) {
        match by_file.entry((f.device_major, f.device_minor, f.inode)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(f.clone());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => merge_file(o.get_mut(), f),
        }
    }
    // A page of the file resident in several processes is one page of the
    // page cache: the union of their pagemap file pages.
    let pagemaps: Vec<&HashMap<FileId, procfs::FilePages>> =
        captures.values().filter_map(|c| c.truth.as_ref()?.as_ref().ok()?.pagemap.as_ref()).collect();
    for f in by_file.values_mut() {
        let id = FileId { major: f.device_major, minor: f.device_minor, inode: f.inode };
        if f.kernel_distinct_resident_bytes.is_some() {
            let mut union = PageSet::default();
            for pages in pagemaps.iter().filter_map(|p| p.get(&id)) {
                union.union_with(&pages.file_pages);
            }
            f.kernel_distinct_resident_bytes = Some(union.len() * PAGE);
        }
    }
    let mut files: Vec<FileEntry> = by_file.into_values().collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.measured_loaded_bytes));
    files
}

pub(super) fn merge_file(into: &mut FileEntry, f: &FileEntry) {
    let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    into.mapped_bytes += f.mapped_bytes;
    into.mapped_at_end_bytes += f.mapped_at_end_bytes;
    into.mmap_calls += f.mmap_calls;
    for (a, b) in [
        (&mut into.page_faults.total, f.page_faults.total),
        (&mut into.page_faults.read, f.page_faults.read),
        (&mut into.page_faults.write, f.page_faults.write),
        (&mut into.page_faults.exec, f.page_faults.exec),
        (&mut into.measured_loaded_bytes, f.measured_loaded_bytes),
        (&mut into.measured_resident_bytes, f.measured_resident_bytes),
        (&mut into.peak_resident_bytes, f.peak_resident_bytes),
        (&mut into.unloaded_bytes, f.unloaded_bytes),
        (&mut into.fault_around_bytes, f.fault_around_bytes),
        (&mut into.read_from_disk_bytes, f.read_from_disk_bytes),
        (&mut into.cache_added_other_bytes, f.cache_added_other_bytes),
        (&mut into.fault_ranges_bytes, f.fault_ranges_bytes),
        (&mut into.estimates.rss_growth_bytes, f.estimates.rss_growth_bytes),
        (&mut into.estimates.capped_growth_bytes, f.estimates.capped_growth_bytes),
    ] {
        *a += b;
    }
    into.evicted_bytes = into.evicted_bytes.max(f.evicted_bytes);
    into.resident_at_start_bytes = add(into.resident_at_start_bytes, f.resident_at_start_bytes);
    into.resident_at_start_pagemap_bytes = add(into.resident_at_start_pagemap_bytes, f.resident_at_start_pagemap_bytes);
    into.kernel_rss_bytes = add(into.kernel_rss_bytes, f.kernel_rss_bytes);
    into.kernel_pagemap_bytes = add(into.kernel_pagemap_bytes, f.kernel_pagemap_bytes);
    into.kernel_pss_bytes = add(into.kernel_pss_bytes, f.kernel_pss_bytes);
    // Replaced by the union in `tree_files`; here only whether any process had one.
    into.kernel_distinct_resident_bytes = add(into.kernel_distinct_resident_bytes, f.kernel_distinct_resident_bytes);
    // The estimates judged against the tree's sum, as a monitor of the
    // whole tree would be.
    let truth = match into.kernel_rss_bytes {
        Some(k) if into.mapped_at_end_bytes > 0 => k,
        _ => into.peak_resident_bytes,
    };
    let e = &mut into.estimates;
    e.fixed_ratio_error_bytes = e.fixed_ratio_bytes as i64 - truth as i64;
    e.rss_growth_error_bytes = e.rss_growth_bytes as i64 - truth as i64;
    e.capped_growth_error_bytes = e.capped_growth_bytes as i64 - truth as i64;
}

/// The kernel's fault counts summed over the processes that have one.
fn tree_kernel_faults(processes: &[ProcessEntry]) -> Option<KernelFaults> {
    let counted: Vec<&KernelFaults> = processes.iter().filter_map(|pe| pe.kernel.as_ref()).collect();
    (!counted.is_empty()).then(|| KernelFaults {
        source: format!(
            "/proc/PID/stat of {} of the {} traced processes, each read at its exit stop or when tracing stopped, summed",
            counted.len(),
            processes.len()
        ),
        minor_faults: counted.iter().map(|k| k.minor_faults).sum(),
        major_faults: counted.iter().map(|k| k.major_faults).sum(),
    })
}

fn tree_regions(processes: &[ProcessEntry]) -> Vec<RegionFaults> {
    let mut by_region: BTreeMap<String, crate::model::stats::FaultCounts> = BTreeMap::new();
    for r in processes.iter().flat_map(|pe| &pe.regions) {
        let f = by_region.entry(r.region.clone()).or_default();
        (f.total, f.read, f.write, f.exec) =
            (f.total + r.faults.total, f.read + r.faults.read, f.write + r.faults.write, f.exec + r.faults.exec);
    }
    by_region.into_iter().map(|(region, faults)| RegionFaults { region, faults }).collect()
}

/// The tree's RSS: the first process's at the start; the processes' sum
/// at the end and at their final truth; the peak of the sum as sampled.
fn tree_rss(processes: &[ProcessEntry], timeline: &Timeline) -> Option<RssSummary> {
    let first = processes.iter().find(|pe| pe.parent.is_none()).and_then(|pe| pe.rss.as_ref())?;
    let sum = |pick: fn(&RssSummary) -> Option<Rss>| {
        processes.iter().filter_map(|pe| pe.rss.as_ref().and_then(pick)).fold(None, |acc: Option<Rss>, r| {
            let a = acc.unwrap_or_default();
            Some(Rss {
                file_bytes: a.file_bytes + r.file_bytes,
                anon_bytes: a.anon_bytes + r.anon_bytes,
                shmem_bytes: a.shmem_bytes + r.shmem_bytes,
                swap_bytes: a.swap_bytes + r.swap_bytes,
            })
        })
    };
    let end = sum(|r| Some(r.end)).unwrap_or_default();
    let sampled_peak =
        timeline.samples.iter().max_by_key(|s| s.rss_file_bytes + s.rss_anon_bytes + s.rss_shmem_bytes).map(|s| Rss {
            file_bytes: s.rss_file_bytes,
            anon_bytes: s.rss_anon_bytes,
            shmem_bytes: s.rss_shmem_bytes,
            swap_bytes: 0,
        });
    Some(RssSummary {
        start: first.start,
        end,
        peak: sampled_peak.unwrap_or(first.peak),
        at_final_truth: sum(|r| r.at_final_truth),
    })
}

/// The kernel's own fault accounting, to check the measured faults against.
/// Like with like: the target's own faults over the traced interval; wait4's
/// rusage (which adds the children the target reaped) only when /proc could
/// not be read at the exit stop.
fn kernel_faults(stop: &Stop, own: Option<(u64, u64, &'static str)>) -> Option<KernelFaults> {
    match (own, stop) {
        (Some((minor, major, source)), _) => {
            Some(KernelFaults { source: source.into(), minor_faults: minor, major_faults: major })
        }
        (None, Stop::Exited(Some(e))) => Some(KernelFaults {
            source: "wait4 rusage of the child (includes the children it reaped)".into(),
            minor_faults: e.minflt,
            major_faults: e.majflt,
        }),
        (None, _) => None,
    }
}

/// The scope's counters: the in-kernel ones, and the processes' sums.
/// (The processes folded away count through `folded`'s sums.)
fn scope_counters(c: &Consumer, k: &KernelCounters, folded: Option<&FoldedProcesses>) -> Counters {
    let mut sum = folded.map(|f| f.counters.clone()).unwrap_or_default();
    for pm in c.processes.values() {
        add_counters(&mut sum, &process_counters(pm));
    }
    Counters {
        page_faults: k[Counter::PageFaults],
        mmap_calls: k[Counter::MmapCalls],
        munmap_calls: k[Counter::MunmapCalls],
        madvise_calls: k[Counter::MadviseCalls],
        mremap_calls: k[Counter::MremapCalls],
        ringbuf_drops: k[Counter::RingbufDrops],
        syscalls_lost: k[Counter::PendingFull],
        eviction_watch_full: k[Counter::WatchFull],
        processes_not_traced: k[Counter::TracedFull],
        forks_unread: k[Counter::ForkUnread],
        python_stacks_other_thread: k[Counter::PythonOtherThread],
        python_stacks_cut: k[Counter::PythonUnreadable],
        malformed_events: c.malformed_events,
        stray_events: c.stray_events,
        ..sum
    }
}

/// `sum += p` for the counters a process has of its own (the others are
/// the scope's in-kernel counters).
pub(super) fn add_counters(sum: &mut Counters, p: &Counters) {
    for (a, b) in [
        (&mut sum.page_faults, p.page_faults),
        (&mut sum.mmap_calls, p.mmap_calls),
        (&mut sum.munmap_calls, p.munmap_calls),
        (&mut sum.madvise_calls, p.madvise_calls),
        (&mut sum.mremap_calls, p.mremap_calls),
        (&mut sum.page_faults_seen, p.page_faults_seen),
        (&mut sum.page_faults_kernel_mode, p.page_faults_kernel_mode),
        (&mut sum.page_faults_read, p.page_faults_read),
        (&mut sum.page_faults_write, p.page_faults_write),
        (&mut sum.page_faults_exec, p.page_faults_exec),
        (&mut sum.mmap_failed, p.mmap_failed),
        (&mut sum.munmap_failed, p.munmap_failed),
        (&mut sum.madvise_failed, p.madvise_failed),
        (&mut sum.mremap_failed, p.mremap_failed),
        (&mut sum.execs, p.execs),
        (&mut sum.unattributed_faults, p.unattributed_faults),
        (&mut sum.unresolved_file_mappings, p.unresolved_file_mappings),
        (&mut sum.unattributed_file_loaded_bytes, p.unattributed_file_loaded_bytes),
        (&mut sum.unattributed_file_unloaded_bytes, p.unattributed_file_unloaded_bytes),
        (&mut sum.file_rss_released_at_exit_bytes, p.file_rss_released_at_exit_bytes),
    ] {
        *a += b;
    }
}

/// One process's counters, from the events seen in its context (the
/// in-kernel counters are the scope's: its own event counts stand in).
fn process_counters(pm: &ProcessModel) -> Counters {
    let (s, l) = (&pm.stats, &pm.loading);
    Counters {
        page_faults: s.faults.total - s.kernel_mode_faults,
        mmap_calls: s.mmap_calls,
        munmap_calls: s.munmap_calls,
        madvise_calls: s.madvise_calls,
        madvise_failed: s.madvise_failed,
        mremap_calls: s.mremap_calls,
        mremap_failed: s.mremap_failed,
        page_faults_seen: s.faults.total,
        page_faults_kernel_mode: s.kernel_mode_faults,
        page_faults_read: s.faults.read,
        page_faults_write: s.faults.write,
        page_faults_exec: s.faults.exec,
        mmap_failed: s.mmap_failed,
        munmap_failed: s.munmap_failed,
        execs: s.execs,
        unattributed_faults: s.unattributed_faults,
        unresolved_file_mappings: s.unresolved_file_mappings,
        unattributed_file_loaded_bytes: l.unattributed_loaded_bytes,
        unattributed_file_unloaded_bytes: l.unattributed_unloaded_bytes,
        file_rss_released_at_exit_bytes: l.released_at_exit_bytes,
        ..Counters::default()
    }
}

fn rss(c: RssCounters) -> Rss {
    Rss { file_bytes: c.file, anon_bytes: c.anon, shmem_bytes: c.shmem, swap_bytes: c.swap }
}

/// The heap's own timeline (kept in the trace since version 1): the heap
/// part of the trace's timeline.
fn heap_timeline(timeline: &Timeline) -> Vec<HeapSample> {
    timeline
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
        .collect()
}

/// One entry per file the target mapped, joining the mapping statistics, the
/// measured loading, the kernel truth and the estimates.
fn file_entries(c: &ProcessModel, start: Option<&KernelTruth>, end: Option<&KernelTruth>) -> Vec<FileEntry> {
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
            let at_start = start.map(|t| t.rss(id));
            let present = |p: &HashMap<FileId, procfs::FilePages>| p.get(id).map_or(0, |f| f.present_bytes);
            let at_start_pagemap = start.and_then(|t| t.pagemap.as_ref()).map(present);
            let kernel = end.map(|t| t.rss(id));
            let pss = end.map(|t| t.smaps.get(id).map_or(0, |s| s.pss));
            let pagemap = end.and_then(|t| t.pagemap.as_ref()).map(present);
            let distinct =
                end.and_then(|t| t.pagemap.as_ref()).map(|p| p.get(id).map_or(0, |f| f.file_pages.len() * PAGE));
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
                fault_ranges_bytes: load.fault_range_pages() * PAGE,
                kernel_rss_bytes: kernel,
                kernel_pagemap_bytes: pagemap,
                kernel_pss_bytes: pss,
                kernel_distinct_resident_bytes: distinct,
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

/// The heap status when no allocator memtrace probed was in the target.
pub const NO_ALLOCATOR_MAPPED: &str =
    "not traced: no allocator found in the target (none of the files memtrace probed was mapped: \
     a static executable without symbols, or an allocator memtrace does not know; name it with --alloc-lib)";

/// The trace's heap section and leak candidates.
fn heap_section(
    c: &Consumer,
    setup: HeapSetup,
    capture: &StopCapture,
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
    let k = &c.root().stats.kernel_heap;
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
                    .processes
                    .values()
                    .flat_map(|p| p.stats.files.values())
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
    if !heap.allocators.iter().any(|a| a.mapped) {
        // Probes in files the target never mapped see nothing: zeros here
        // would read as "no allocations".
        heap.status = NO_ALLOCATOR_MAPPED.into();
    }
    let when = capture.moment.heap_read_at();
    let mut leaks = vec![];
    match &capture.heap {
        Some(Ok(h)) => {
            heap.read_at = when.to_string();
            leaks = at_stop_figures(&mut heap, h);
        }
        Some(Err(e)) => heap.read_at = format!("could not be read {when}: {e}"),
        None => heap.read_at = "never read".into(),
    }
    let at_markers = c.heap_marks.peak_at_markers();
    heap.peak_live_bytes =
        heap.timeline.iter().map(|s| s.live_bytes).chain(at_markers).chain([heap.live_bytes]).max().unwrap_or(0);
    (Some(heap), leaks)
}

/// The heap figures read at the stop; returns the leak candidates.
fn at_stop_figures(heap: &mut Heap, h: &HeapAtStop) -> Vec<Leak> {
    heap.totals = h.totals;
    (heap.released_by_exec_allocs, heap.released_by_exec_bytes) = h.released_by_exec;
    heap.live_bytes = h.totals.live_bytes() - h.released_by_exec.1 as i64;
    heap.live_allocations = h.live_allocations;
    heap.open_calls_at_stop = h.open_calls;
    h.leaks.clone()
}

/// The phases of the scope or of one process, with the heap totals at
/// their markers and the heap at the end (`last_heap`).
struct PhaseSource<'a> {
    phases: &'a Phases,
    marks: &'a HeapMarks,
    last_heap: Option<&'a HeapTotals>,
}

fn phase_entries(
    c: &Consumer,
    source: PhaseSource,
    start_ns: u64,
    boundary_truth: &HashMap<u64, HashMap<FileId, u64>>,
) -> Vec<PhaseEntry> {
    let secs = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let path_of = |id: &FileId| c.known_file(*id).path;
    let PhaseSource { phases, marks, last_heap } = source;
    phases
        .done
        .iter()
        .map(|p| {
            // Kernel truth at both boundaries (--phase-truth): smaps Rss change.
            let truth = boundary_truth.get(&p.start_ns).zip(boundary_truth.get(&p.end_ns));
            let kernel_change = |id: &FileId| {
                truth.map(|(a, b)| b.get(id).copied().unwrap_or(0) as i64 - a.get(id).copied().unwrap_or(0) as i64)
            };
            let mut ids: BTreeSet<FileId> = p.files.keys().copied().collect();
            if let Some((a, b)) = truth {
                ids.extend(a.keys().chain(b.keys()).filter(|id| kernel_change(id) != Some(0)));
            }
            let files = ids
                .iter()
                .map(|id| phase_file(path_of(id), &p.files.get(id).copied().unwrap_or_default(), kernel_change(id)))
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
                heap_growth_bytes: last_heap.and_then(|last| marks.growth(p.start_seq, p.end_seq, last)),
                page_faults: p.page_faults,
                anon_rss_growth_bytes: p.anon_rss_growth,
                files,
            }
        })
        .collect()
}

/// What a phase changed in one file.
fn phase_file(path: String, d: &FileCounts, kernel_rss_change_bytes: Option<i64>) -> PhaseFile {
    PhaseFile {
        path,
        measured_loaded_bytes: d.loaded,
        measured_unloaded_bytes: d.unloaded,
        measured_rss_change_bytes: d.loaded as i64 - d.unloaded as i64,
        kernel_rss_change_bytes,
        fault_around_bytes: d.fault_around,
        read_from_disk_bytes: d.read_from_disk,
    }
}

/// The phases past `--max-phases`, summed by path, in order of first start.
fn folded_phase_entries(c: &Consumer, phases: &Phases, start_ns: u64) -> Vec<FoldedPhaseEntry> {
    let secs = |ns: u64| ns.saturating_sub(start_ns) as f64 / 1e9;
    let mut out: Vec<(u64, FoldedPhaseEntry)> = phases
        .folded
        .values()
        .map(|f| {
            let files = f.files.iter().map(|(id, d)| phase_file(c.known_file(*id).path, d, None)).collect();
            let entry = FoldedPhaseEntry {
                name: f.name.clone(),
                path: f.path.clone(),
                depth: f.depth,
                count: f.count,
                first_start_s: secs(f.first_start_ns),
                last_end_s: secs(f.last_end_ns),
                total_duration_s: f.total_ns as f64 / 1e9,
                page_faults: f.page_faults,
                anon_rss_growth_bytes: f.anon_rss_growth,
                heap_growth_bytes: (f.heap_growth_of > 0).then_some(f.heap_growth),
                heap_growth_phases: f.heap_growth_of,
                files,
            };
            (f.first_start_ns, entry)
        })
        .collect();
    out.sort_by_key(|(start, _)| *start);
    out.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{consumer::recorded, setup::HeapUntraced, stop::Moment};
    use crate::target::child::ChildExit;

    fn assemble(capture: StopCapture, stop: &Stop, heap: HeapSetup) -> Trace {
        assemble_with(capture, stop, heap, None)
    }

    fn assemble_with(
        capture: StopCapture,
        stop: &Stop,
        heap: HeapSetup,
        own_faults: Option<(u64, u64, &'static str)>,
    ) -> Trace {
        let (mut c, _) = recorded::consumer();
        for e in recorded::events() {
            c.on_event(recorded::PID, e);
        }
        let mut slots = [0u64; Counter::COUNT];
        slots[Counter::PageFaults as usize] = 2;
        slots[Counter::RingbufDrops as usize] = 7;
        let counters = KernelCounters::from(slots);
        trace(Parts {
            pid: recorded::PID,
            command: "index-server --mmap".into(),
            mode: Mode::Run,
            started: UNIX_EPOCH,
            start_ns: 1_000,
            traced_s: 1.0,
            stop,
            consumer: &c,
            counters: &counters,
            captures: &BTreeMap::from([(recorded::PID, capture)]),
            folded: None,
            scope_heap: None,
            start_truth: None,
            start_truths: &BTreeMap::new(),
            own_faults,
            phase_truth: false,
            boundaries: &BoundaryTruth::default(),
            phase_markers: "attached".into(),
            marker_libs: &["/usr/lib/libmarkers.so".into()],
            runtimes: &Default::default(),
            python: &HashMap::new(),
            phase_functions: vec![],
            heap,
            heap_events: None,
            timeline: Timeline::default(),
            leak_age: None,
            growth_window: 5,
            growth_samples: 0,
            unwind: Default::default(),
            warnings: vec!["evictions of x will not be seen".into()],
        })
    }

    fn exit_capture() -> StopCapture {
        let smaps = HashMap::from([(recorded::FILE, procfs::SmapsFile { rss: 72 << 10, pss: 36 << 10 })]);
        StopCapture {
            moment: Moment::ExitStop,
            truth: Some(Ok(KernelTruth { smaps, pagemap: None })),
            rss_at_truth: Some(RssCounters { file: 68 << 10, ..Default::default() }),
            kernel_faults: Some((9, 1)),
            heap: None,
            anon: None,
        }
    }

    #[test]
    fn a_run_to_its_exit_joins_measurement_kernel_truth_and_estimates_per_file() {
        let exit = ChildExit { code: 3, signal: None, minflt: 10, majflt: 2 };
        let t = assemble(exit_capture(), &Stop::Exited(Some(exit)), Err(HeapUntraced::NoAllocator("no glibc".into())));
        assert_eq!((t.mode, t.target.exit_code, t.stop_reason.as_str()), (Mode::Run, Some(3), "target exited"));
        assert_eq!(
            t.final_truth,
            "read from /proc/PID/smaps at the target's exit (stopped there with ptrace; mappings intact)"
        );
        assert_eq!(
            t.kernel.as_ref().map(|k| (k.source.as_str(), k.minor_faults)),
            Some(("wait4 rusage of the child (includes the children it reaped)", 10))
        );
        // With its own count read at the exit stop, that is the kernel's count.
        let own = assemble_with(
            exit_capture(),
            &Stop::Exited(Some(exit)),
            Ok(vec![]),
            Some((7, 1, "/proc/PID/stat at the exit stop")),
        );
        assert_eq!(own.kernel.map(|k| (k.source, k.minor_faults)), Some(("/proc/PID/stat at the exit stop".into(), 7)));
        assert_eq!((t.counters.page_faults, t.counters.ringbuf_drops, t.counters.page_faults_seen), (2, 7, 2));
        let f = &t.files[0];
        assert_eq!(
            (f.path.as_str(), f.measured_loaded_bytes, f.kernel_rss_bytes),
            (recorded::PATH, 68 << 10, Some(72 << 10))
        );
        assert_eq!(f.fault_ranges_bytes, 16 * 4096, "the fault-around range (the second fault had no filemap event)");
        assert_eq!(f.estimates.reference, "kernel_rss_bytes", "still mapped: judged against smaps");
        assert_eq!(f.estimates.fixed_ratio_error_bytes, (LEN_80_PERCENT - (72 << 10)) as i64);
        assert_eq!(t.file_totals.measured_loaded_bytes, 68 << 10);
        assert_eq!(t.phases.len(), 1);
        assert_eq!((t.phases[0].name.as_str(), t.phases[0].files[0].measured_loaded_bytes), ("load", 64 << 10));
        assert_eq!(t.phase_markers, "attached; also in /usr/lib/libmarkers.so");
        let heap = t.heap.unwrap();
        assert_eq!((heap.status.as_str(), heap.allocator.as_str()), ("not traced: no glibc", "not traced: no glibc"));
        assert_eq!(t.warnings, ["evictions of x will not be seen"]);
        assert_eq!(t.rss.unwrap().at_final_truth.unwrap().file_bytes, 68 << 10);
    }

    const LEN_80_PERCENT: u64 = recorded::LEN / 5 * 4;

    #[test]
    fn without_an_exit_stop_there_is_no_truth_and_the_kernel_counts_come_from_stat() {
        let capture = StopCapture::none();
        let t = assemble_with(
            capture,
            &Stop::Exited(None),
            Ok(vec![]),
            Some((5, 0, "/proc/PID/stat: the change while traced")),
        );
        assert!(t.final_truth.starts_with("none: the target exited"), "{}", t.final_truth);
        assert_eq!(t.kernel.unwrap().source, "/proc/PID/stat: the change while traced");
        let f = &t.files[0];
        assert_eq!((f.kernel_rss_bytes, f.estimates.reference.as_str()), (None, "peak_resident_bytes"));
        let heap = t.heap.unwrap();
        // No allocator probed (nor mapped): the status says so, never a quiet zero.
        assert_eq!((heap.status.as_str(), heap.read_at.as_str()), (NO_ALLOCATOR_MAPPED, "never read"));
        let stopped = assemble(exit_capture(), &Stop::Duration(Duration::from_secs(2)), Ok(vec![]));
        assert_eq!(stopped.stop_reason, "--duration 2 s elapsed");
    }
}
