//! Setting a session up: load and attach the probes (tracepoints, phase
//! markers, `--phase-fn`, allocators), then start the target (release the
//! held child, or read the attached process's baseline), open the control
//! socket, and only then let events flow.
use std::{
    collections::HashSet,
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

pub use crate::kernel::probes::{HeapSetup, HeapUntraced};
use crate::{
    kernel::{
        probes::{LoadOptions, Probes},
        tracefs,
    },
    model::{aspace::Region, timeline},
    output::{events_log::EventLog, live::LiveView, report::heap as report_heap},
    procfs,
    target::control::{self, ControlSocket},
    uprobes::{allocator, marker_libs::MarkerLibs},
    warnings::Warnings,
};

use super::{
    consumer::{Consumer, LiveProc},
    heap_sampler::HeapSampler,
    monotonic_ns, readable, signals,
    stop::{BoundaryTruth, KernelTruth},
    target::TargetHandle,
    unwind::UnwindTables,
    Options, Session, Target,
};

impl Session {
    pub(super) fn start(target: Target, opts: Options, signals: signals::Caught) -> Result<Session> {
        let (pid, command, run_mode) = match &target {
            Target::Run(child) => (child.pid, child.command.clone(), true),
            Target::Attach { pid, command } => (*pid, command.clone(), false),
        };
        let mut warnings = Warnings::default();
        let offsets = tracefs::read_offsets(&tracefs::ensure_mounted()?)?;
        let phase_truth = opts.phase_truth && run_mode;
        let dwarf = opts.unwind == crate::cli::Unwind::Dwarf;
        let load = LoadOptions {
            hold_at_markers: phase_truth,
            hold_at_code: dwarf && run_mode,
            heap_events: opts.events.is_some(),
            follow_forks: if run_mode { opts.follow } else { opts.children || opts.cgroup.is_some() },
            holdable: run_mode,
            cgroup: opts.cgroup.as_ref().map_or(0, |c| c.id),
            sizes: opts.map_sizes,
        };
        let mut probes = Probes::attach(pid, &offsets, load, &mut warnings)?;
        // `--children`: its running descendants join the scope before any
        // uprobe goes in (so none of them inherited one); what they fork
        // from now on the kernel adds at the fork.
        let family = match &opts.cgroup {
            _ if run_mode => Vec::new(),
            Some(cgroup) => join_cgroup(&mut probes, cgroup)?,
            None if opts.children => join_family(&mut probes, pid)?,
            None => Vec::new(),
        };
        let mut unwind = UnwindTables::new(opts.unwind);
        if dwarf && !run_mode {
            // Already running: its code is mapped. The tables go in before
            // the allocator probes, so no stack is walked without them.
            for p in std::iter::once(pid).chain(family.iter().map(|(child, _)| *child)) {
                unwind.refresh(p, &mut probes, &mut warnings);
            }
        }
        let ring = readable(probes.take_events()?).context("polling the event ring buffer")?;
        let binary = match &target {
            Target::Run(child) => std::fs::canonicalize(&child.program).unwrap_or_else(|_| child.program.clone()),
            Target::Attach { pid, .. } => PathBuf::from(format!("/proc/{pid}/exe")),
        };
        let phase_markers = attach_phase_markers(&mut probes, pid, &binary, &mut warnings);
        let mut marker_libs = MarkerLibs::new(pid, &binary);
        if let Target::Run(child) = &target {
            if let Some(library) = &child.marker_library {
                marker_libs.arm(&mut probes, library, &mut warnings);
            }
            for warning in &child.warnings {
                warnings.warn(warning.clone());
            }
        }
        if !opts.phase_fns.is_empty() {
            probes.attach_phase_fns(pid, &opts.phase_fns)?;
        }
        probes.probe_at_entry = opts.probe_at_entry;
        let heap = attach_heap(&mut probes, pid, &binary, run_mode, &opts.alloc_libs, &mut warnings);
        if opts.explain_probes {
            eprint!("{}", report_heap::explain_probes(&heap));
        }
        let start_ns = monotonic_ns();
        let events = opts.events.as_deref().map(|path| EventLog::create(path, start_ns)).transpose()?;
        let phase_fn_names = opts.phase_fns.iter().map(|f| f.name.clone()).collect();
        let mut consumer = Consumer::new(pid, LiveProc::factory(), phase_fn_names, events);
        consumer.set_max_phases(opts.max_phases);
        // Each record is the ring's 8-byte header and at least an event header.
        let smallest_record = 8 + std::mem::size_of::<memtrace_common::event::EventHeader>() as u64;
        consumer.ring_records_max = u64::from(opts.map_sizes.ring_bytes) / smallest_record;
        let signals = signals::Signals::new(signals)?;
        let (started, clock) = (SystemTime::now(), Instant::now());
        let (target, start_truth) = match target {
            Target::Run(child) => {
                // Until exec, the child is a copy of memtrace: name that range
                // so its few faults are not mistaken for the command's.
                consumer.root_mut().stats.sync(vec![(0, u64::MAX, Region::Special("[before exec]".into()))], vec![]);
                (TargetHandle::spawned(*child, opts.follow)?, None)
            }
            Target::Attach { pid, .. } => {
                let start_truth = attach_baseline(consumer.root_mut());
                (TargetHandle::attached(pid)?, start_truth)
            }
        };
        // Attach mode: a library it maps already that exports markers (the
        // Python module's) is probed before memtrace says it traces.
        let mapped: Vec<String> = consumer.root_mut().stats.files.values().map(|f| f.path.clone()).collect();
        for path in mapped {
            marker_libs.consider(&mut probes, &path, &mut warnings);
        }
        let mut start_truths = std::collections::BTreeMap::new();
        for &(child, parent) in &family {
            if let Some(truth) = attach_baseline(consumer.add_process(child, parent, start_ns)) {
                start_truths.insert(child, truth);
            }
        }
        let (mark_tx, marks) = mpsc::unbounded_channel();
        let control = ControlSocket::open(Path::new(control::DIR), pid, mark_tx, monotonic_ns)
            .map_err(|e| warnings.warn(format!("`memtrace mark` will not reach this session: {e:#}")))
            .ok();
        let mut session = Session {
            pid,
            command,
            probes,
            ring,
            consumer,
            target,
            heap,
            watched: HashSet::new(),
            adopted: HashSet::from([pid]),
            retirer: Default::default(),
            harvest: Default::default(),
            marker_libs,
            runtimes: Default::default(),
            python: Default::default(),
            phase_markers,
            phase_truth,
            boundaries: BoundaryTruth::default(),
            start_truth,
            start_truths,
            captures: Default::default(),
            sampler: HeapSampler::new(opts.growth_window),
            timeline: timeline::Sampler::new(opts.interval.as_secs_f64()),
            live: (!opts.quiet).then(|| LiveView::new(std::io::stderr().is_terminal())),
            marks,
            control,
            signals,
            warnings,
            unwind,
            started,
            clock,
            start_ns,
            opts,
        };
        let joined = family.len();
        for (child, _) in family {
            session.adopted.insert(child);
            session.attach_process(child);
        }
        // Said once every probe is in: a test (or a person) may act on it.
        let children = match joined {
            0 => String::new(),
            n => format!(" and {n} of its running descendants"),
        };
        eprintln!(
            "memtrace: tracing PID {pid} ({}){children} with {} probes; Ctrl-C stops and reports",
            session.command,
            session.probes.attached.len()
        );
        Ok(session)
    }
}

/// `--children`: the target's running descendants (zombies left out),
/// added to the kernel's scope parents first; looked for again until none
/// is new, so a process forked meanwhile by one not yet added is found.
fn join_family(probes: &mut Probes, pid: u32) -> Result<Vec<(u32, Option<u32>)>> {
    let mut family: Vec<(u32, Option<u32>)> = Vec::new();
    loop {
        let new: Vec<(u32, u32)> = procfs::descendants(pid)
            .into_iter()
            .filter(|(child, _)| !family.iter().any(|(known, _)| known == child))
            .filter(|(child, _)| std::fs::read_link(format!("/proc/{child}/exe")).is_ok())
            .collect();
        if new.is_empty() {
            return Ok(family);
        }
        for &(child, _) in &new {
            probes.trace_process(child)?;
        }
        family.extend(new.into_iter().map(|(child, parent)| (child, Some(parent))));
    }
}

/// `--cgroup`: the processes in it now besides the first (the target),
/// added to the kernel's scope before any uprobe goes in; each one's parent
/// when it is in the cgroup too. Those that start later join in the kernel.
fn join_cgroup(probes: &mut Probes, cgroup: &crate::target::cgroup::Cgroup) -> Result<Vec<(u32, Option<u32>)>> {
    let mut family = Vec::new();
    for &pid in &cgroup.members[1..] {
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_err() {
            continue; // a zombie, or gone already
        }
        probes.trace_process(pid)?;
        let parent = procfs::parent_of(pid).filter(|p| cgroup.members.contains(p));
        family.push((pid, parent));
    }
    Ok(family)
}

/// Attach mode: what was mapped, the program break, the RSS counters and
/// the per-file kernel truth before memtrace attached.
fn attach_baseline(p: &mut crate::session::process::ProcessModel) -> Option<KernelTruth> {
    let pid = p.pid;
    p.sync();
    if let Some((start, end)) = procfs::brk_range(pid) {
        p.stats.kernel_heap.set_start(start, end);
    }
    if let Some(rss) = procfs::rss_counters(pid) {
        p.loading.set_baseline(rss);
    }
    KernelTruth::read(pid).ok()
}

/// The executable's phase markers; the text says what was found.
fn attach_phase_markers(probes: &mut Probes, pid: u32, binary: &Path, warnings: &mut Warnings) -> String {
    if !crate::uprobes::marker_libs::is_elf(binary) {
        // A script: the kernel runs its interpreter, whose file is probed
        // like any library with markers once mapped.
        return format!("none: {} is not an ELF file (a script?)", binary.display());
    }
    match probes.attach_phase_markers(pid, binary) {
        Ok(true) => format!("attached to memtrace_phase_begin/end in {}", binary.display()),
        Ok(false) => format!("none: {} does not export memtrace_phase_begin/end", binary.display()),
        Err(e) => {
            warnings.warn(format!("phases will not be traced: {e:#}"));
            format!("none: {e:#}")
        }
    }
}

/// Finds the allocators and attaches the heap probes; the error says why
/// the heap is not traced. One allocator failing leaves the others traced.
fn attach_heap(
    probes: &mut Probes,
    pid: u32,
    binary: &Path,
    run_mode: bool,
    alloc_libs: &[PathBuf],
    warnings: &mut Warnings,
) -> HeapSetup {
    let allocators = allocator::find(pid, binary, run_mode, alloc_libs, warnings)
        .map_err(|e| HeapUntraced::NoAllocator(format!("{e:#}")))?;
    let mut setup = Vec::new();
    let mut errors = Vec::new();
    for allocator in allocators {
        match probes.attach_allocator(pid, &allocator) {
            Ok(report) => setup.push((allocator, report)),
            Err(e) => {
                warnings.warn(format!("allocations through {} will not be traced: {e:#}", allocator.path.display()));
                errors.push(format!("{}: {e:#}", allocator.path.display()));
            }
        }
    }
    if setup.is_empty() {
        return Err(HeapUntraced::ProbesFailed(errors));
    }
    Ok(setup)
}

impl Session {
    /// After a later execve in run mode (`env VAR=x prog`): an allocator
    /// linked into the new executable (found in the first one only
    /// otherwise) is probed while the new image is held at its exec stop.
    pub(super) fn attach_exec_allocator(&mut self, pid: u32, exe: &Path) {
        let Some((mut allocator, _)) = allocator::in_executable(exe) else { return };
        if self.heap.as_ref().is_ok_and(|s| s.iter().any(|(a, _)| a.path == exe)) {
            return; // the same executable again: already probed
        }
        allocator.how.push_str("; found when the target exec'd it");
        match self.probes.attach_allocator(pid, &allocator) {
            Ok(report) => {
                let entry = (allocator, report);
                if self.opts.explain_probes {
                    eprint!("{}", report_heap::explain_probes(&Ok(vec![entry.clone()])));
                }
                match &mut self.heap {
                    Ok(s) => s.push(entry),
                    Err(_) => self.heap = Ok(vec![entry]),
                }
            }
            Err(e) => self.warnings.warn(format!("allocations through {} will not be traced: {e:#}", exe.display())),
        }
    }

    /// Files the target maps for the first time (and, first, new
    /// executable mappings for the unwinder): the kernel side watches
    /// their evictions, and a library with phase markers gets the marker
    /// probes. Called after every drain: cheap when no file is new (files
    /// are never removed).
    pub(super) fn watch_new_files(&mut self) {
        for pid in std::mem::take(&mut self.consumer.forked) {
            self.adopt(pid);
        }
        // `--cgroup`: running processes met in the kernel (none of their
        // probes copied from a parent), probed from now on.
        for pid in std::mem::take(&mut self.consumer.joined) {
            if self.adopted.insert(pid) {
                self.unwind.refresh(pid, &mut self.probes, &mut self.warnings);
                self.attach_process(pid);
            }
        }
        // The running processes only (those that ended map nothing new): a
        // tree of thousands made every drain look at all of them again.
        for pid in self.consumer.running() {
            let Some(p) = self.consumer.processes.get_mut(&pid) else { continue };
            // New code mapped (an exec, a library loaded): the unwinder's tables
            // follow, before the allocations made through it if it is quick enough.
            let code_mapped = std::mem::take(&mut p.exec_mapped) && p.alive();
            if code_mapped {
                self.unwind.refresh(p.pid, &mut self.probes, &mut self.warnings);
            }
            for (id, file) in &p.stats.files {
                if self.watched.insert(*id) {
                    if let Err(e) = self.probes.watch_file(*id) {
                        self.warnings.warn(format!("evictions of {} will not be seen: {e:#}", file.path));
                    }
                    self.marker_libs.consider(&mut self.probes, &file.path, &mut self.warnings);
                    let open = procfs::in_target_root(pid, Path::new(&file.path));
                    self.runtimes.consider(*id, &file.path, &open);
                }
            }
            if code_mapped && !self.opts.no_python_frames && !self.python.contains_key(&pid) {
                if let Some(runtime) = self.runtimes.of(p.stats.files.keys()).cloned() {
                    self.read_python_frames(pid, &runtime);
                }
            }
        }
    }

    /// A CPython process (its runtime found in a file it maps): where its
    /// `_PyRuntime` lies in it, from the mapping of the file that holds it,
    /// so the allocator probes read its frames.
    fn read_python_frames(&mut self, pid: u32, runtime: &crate::runtime::Runtime) {
        let Some(cpython) = runtime.cpython else { return };
        // From the mapping of the file's start, not of its data: the loader
        // maps the whole file first and its segments over it, and /proc may
        // be read in between.
        let mappings = procfs::file_mappings(pid);
        let Some(m) = mappings.iter().find(|m| m.path == runtime.file && m.offset == 0) else {
            self.warnings
                .warn_for(pid, format!("Python frames of PID {pid} will not be read: {} is not mapped", runtime.file));
            return;
        };
        let runtime_address = m.start + cpython.runtime_from_start;
        let l = cpython.layout;
        let python = memtrace_common::PythonProcess {
            tstate_current: runtime_address + l.runtime_tstate_current,
            tstate_native_thread_id: l.tstate_native_thread_id,
            tstate_cframe: l.tstate_cframe,
            cframe_current_frame: l.cframe_current_frame,
            frame_code: l.frame_code,
            frame_previous: l.frame_previous,
            frame_prev_instr: l.frame_prev_instr,
            frame_is_entry: l.frame_is_entry,
            code_adaptive: l.code_adaptive,
        };
        match self.probes.set_python(pid, &python) {
            Ok(()) => {
                self.python.insert(pid, l);
            }
            Err(e) => self.warnings.warn_for(pid, format!("Python frames of PID {pid} will not be read: {e:#}")),
        }
    }

    /// A process the traced tree just forked (the kernel traces it from its
    /// first instruction; in run mode it is held at its first stop until
    /// this returns): the per-process probes go in (allocators, phase
    /// markers, `--phase-fn`) and its unwinder walks with its parent's
    /// tables. Called once per process, after its fork event was read.
    fn adopt(&mut self, pid: u32) {
        if !self.adopted.insert(pid) {
            return;
        }
        if let Some(parent) = self.consumer.processes.get(&pid).and_then(|p| p.parent) {
            self.unwind.inherit(parent, pid);
            // The kernel copied the parent's probes into it at the fork:
            // only what the parent lacks is attached below.
            let forked_ns = self.consumer.processes[&pid].started_ns;
            self.probes.inherit_probes(parent, pid, forked_ns);
            // The kernel copied its parent's Python entry at the fork too.
            if let Some(&layout) = self.python.get(&parent) {
                self.python.insert(pid, layout);
            }
        }
        self.probes.own_context(pid);
        self.attach_process(pid);
    }

    /// The per-process probes of `pid`: its allocators, its phase markers
    /// (in its executable and in the libraries found with them) and
    /// `--phase-fn`; those it already runs (copied at its fork) are skipped.
    fn attach_process(&mut self, pid: u32) {
        if let Ok(allocators) = &self.heap {
            for (allocator, _) in allocators {
                if let Err(e) = self.probes.attach_allocator(pid, allocator) {
                    self.warnings.warn_for(
                        pid,
                        format!(
                            "allocations of PID {pid} through {} will not be traced: {e:#}",
                            allocator.path.display()
                        ),
                    );
                }
            }
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        if let Ok(exe) = exe.as_deref() {
            let _ = self.probes.attach_phase_markers(pid, &procfs::in_target_root(pid, exe));
        }
        self.marker_libs.attach_to(pid, &mut self.probes, &mut self.warnings);
        if !self.opts.phase_fns.is_empty() {
            if let Err(e) = self.probes.attach_phase_fns(pid, &self.opts.phase_fns) {
                self.warnings.warn_for(pid, format!("--phase-fn in PID {pid}: {e:#}"));
            }
        }
    }
}

/// How long the live view waits between refreshes.
pub(super) const LIVE_REFRESH: Duration = Duration::from_secs(1);
