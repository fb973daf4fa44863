//! One tracing session: set up (load, attach, start the target), run until
//! the target exits, the duration elapses or a signal arrives, capture the
//! kernel truth and the heap at the stop, then assemble the `Trace`. Every
//! stop path ends in a trace. Depends on everything below it (kernel,
//! uprobes, target, procfs, decode, model, trace); nothing depends on it
//! but `main`.
mod anon_at_stop;
pub mod assemble;
pub mod consumer;
mod fold;
mod harvest;
pub mod heap_at_stop;
pub mod heap_sampler;
pub mod process;
mod run;
mod setup;
pub mod signals;
mod stop;
pub mod target;
mod unwind;

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::mpsc,
};

use crate::{
    kernel::probes::Probes,
    model::{aspace::FileId, timeline},
    output::live::LiveView,
    target::{
        child::HeldChild,
        control::{ControlSocket, Mark},
    },
    trace::Trace,
    uprobes::{marker_libs::MarkerLibs, phase_fn::PhaseFn},
    warnings::Warnings,
};
use consumer::Consumer;
use heap_sampler::HeapSampler;
use setup::HeapSetup;
use stop::{BoundaryTruth, KernelTruth, StopCapture};
use target::TargetHandle;

/// What to trace, as `main` found it.
pub enum Target {
    /// `memtrace run`: a child spawned and held before its first instruction.
    Run(Box<HeldChild>),
    /// `memtrace -p PID`.
    Attach { pid: u32, command: String },
}

pub struct Options {
    pub duration: Option<Duration>,
    /// Stop the target at each phase marker to read smaps (run mode).
    pub phase_truth: bool,
    /// Run mode: trace the processes the command forks too.
    pub follow: bool,
    /// Attach mode: trace the target's descendants and what they fork.
    pub children: bool,
    /// `--cgroup`: every process of it (the target is its first).
    pub cgroup: Option<crate::target::cgroup::Cgroup>,
    /// Leak candidates: live allocations at least this old (None: all live at the end).
    pub leak_age: Option<Duration>,
    /// Print the allocator probes' placement at start.
    pub explain_probes: bool,
    /// Allocator probes on the first instruction (no placement).
    pub probe_at_entry: bool,
    /// `--no-python-frames`.
    pub no_python_frames: bool,
    /// `--group-by-native-stack`.
    pub group_by_native_stack: bool,
    /// `--unwind`: with `Dwarf`, the unwind tables are loaded (without
    /// them the eBPF side walks frame pointers).
    pub unwind: crate::cli::Unwind,
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
    /// Processes listed one by one; ended ones beyond are folded (`--max-processes`).
    pub max_processes: usize,
    /// Finished phases listed one by one; later ones folded by path (`--max-phases`).
    pub max_phases: usize,
    pub map_sizes: crate::kernel::probes::MapSizes,
}

/// The kernel takes tens of ms per probe to unregister, seconds in all:
/// the caller reports first and joins this before exiting.
pub type Detaching = std::thread::JoinHandle<()>;

/// Traces until the target exits, the duration elapses or a signal comes.
pub async fn trace(target: Target, opts: Options, signals: signals::Caught) -> Result<(Trace, Detaching)> {
    let mut session = Session::start(target, opts, signals)?;
    let stop = session.run_until_stop().await?;
    session.capture_at_stop(&stop);
    session.finish(stop)
}

/// Everything a running session holds. Built by `setup`, driven by `run`,
/// read at the stop by `stop`, turned into a `Trace` by `assemble`.
struct Session {
    opts: Options,
    pid: u32,
    command: String,
    probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    consumer: Consumer,
    target: TargetHandle,
    heap: HeapSetup,
    /// Files whose evictions the kernel side watches (all the target mapped).
    watched: HashSet<FileId>,
    /// Processes whose per-process probes are attached (the first one and
    /// every child adopted).
    adopted: HashSet<u32>,
    marker_libs: MarkerLibs,
    /// Language runtimes found in the mapped files (CPython).
    runtimes: crate::runtime::Runtimes,
    /// Processes whose Python frames the eBPF side reads, with their layout.
    python: HashMap<u32, &'static crate::runtime::cpython::Layout>,
    /// What the executable's phase markers gave ("attached to ...", "none: ...").
    phase_markers: String,
    /// `--phase-truth` in run mode: smaps at each phase boundary.
    phase_truth: bool,
    boundaries: BoundaryTruth,
    /// Attach mode: per-file kernel truth when tracing began.
    start_truth: Option<KernelTruth>,
    /// What was read at each process's last moment (its exit stop, or the
    /// end of tracing), by PID.
    /// `--children`: the kernel truth of each descendant when tracing began.
    start_truths: std::collections::BTreeMap<u32, KernelTruth>,
    captures: std::collections::BTreeMap<u32, StopCapture>,
    sampler: HeapSampler,
    timeline: timeline::Sampler,
    live: Option<LiveView>,
    marks: mpsc::UnboundedReceiver<Mark>,
    control: Option<ControlSocket>,
    signals: signals::Signals,
    warnings: Warnings,
    /// Drops the probes of processes that ended while tracing goes on.
    retirer: crate::kernel::retire::Retirer,
    /// Reads and removes what processes that ended hold.
    harvest: harvest::Harvest,
    /// The eBPF unwinder's tables for the target's executable files.
    unwind: unwind::UnwindTables,
    started: SystemTime,
    clock: Instant,
    start_ns: u64,
}

/// Registers an owned fd for readiness polling.
fn readable<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: RingBuf and OwnedFd own their fd for their whole lifetime and
    // always return the same one from as_raw_fd.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// CLOCK_MONOTONIC nanoseconds, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
