//! Running a phase between its markers and recording what it did.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::alloc_count::{HeapDelta, HeapSnapshot};
use crate::markers::{memtrace_phase_begin, memtrace_phase_end};
use crate::pages::PageSet;

/// The workload's phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Write,
    Load,
    Build,
    Search,
    Leak,
    Teardown,
}

impl Phase {
    pub fn name(self) -> &'static str {
        self.c_name().to_str().expect("phase names are ASCII")
    }

    /// The NUL-terminated name handed to the markers; static so the pointer
    /// stays valid for as long as a probe might read it.
    pub fn c_name(self) -> &'static CStr {
        match self {
            Phase::Write => c"write",
            Phase::Load => c"load",
            Phase::Build => c"build",
            Phase::Search => c"search",
            Phase::Leak => c"leak",
            Phase::Teardown => c"teardown",
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads, so
/// phase times compare directly with memtrace's event timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a phase body reports besides its result.
#[derive(Debug, Default)]
pub struct PhaseCtx {
    /// File pages this phase read through the mapping.
    pub pages: PageSet,
    /// Allocations made behind the global allocator's back (libc::malloc in
    /// the leak phase), added to the phase's heap figures.
    pub extra_allocs: u64,
    pub extra_alloc_bytes: u64,
    heap_start: HeapSnapshot,
}

impl PhaseCtx {
    /// A context whose heap figures count from now.
    pub fn starting_now() -> Self {
        Self { heap_start: HeapSnapshot::now(), ..Self::default() }
    }

    /// Heap activity since the phase started (global allocator only).
    pub fn heap_so_far(&self) -> HeapDelta {
        HeapSnapshot::now().since(&self.heap_start)
    }
}

/// The record of one finished phase.
#[derive(Debug)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub start_ns: u64,
    pub end_ns: u64,
    pub start_unix_s: f64,
    pub heap: HeapDelta,
    pub pages: PageSet,
}

/// Runs phases in sequence and keeps their records.
pub struct PhaseRunner {
    pub records: Vec<PhaseRecord>,
    origin_ns: u64,
}

impl PhaseRunner {
    pub fn new() -> Self {
        Self { records: Vec::new(), origin_ns: monotonic_ns() }
    }

    /// Runs `body` as `phase`.
    ///
    /// Order matters for comparing with memtrace: the begin marker fires
    /// before the start timestamp and heap snapshot, and the end marker after
    /// the end timestamp and snapshot, so the truth's interval lies inside the
    /// interval memtrace sees between the two uprobes. Progress lines go to
    /// stderr outside the markers so their (tiny) allocations stay out of
    /// both accounts.
    pub fn run<T>(&mut self, phase: Phase, body: impl FnOnce(&mut PhaseCtx) -> Result<T>) -> Result<T> {
        eprintln!("memtrace-workload: [{:>8.1} ms] phase {} begin", self.elapsed_ms(), phase.name());
        memtrace_phase_begin(phase.c_name().as_ptr());
        let start_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let start_ns = monotonic_ns();
        let mut ctx = PhaseCtx::starting_now();
        let out = body(&mut ctx);
        let mut heap = ctx.heap_so_far();
        let end_ns = monotonic_ns();
        memtrace_phase_end(phase.c_name().as_ptr());

        heap.allocs += ctx.extra_allocs;
        heap.allocated_bytes += ctx.extra_alloc_bytes;
        eprintln!(
            "memtrace-workload: [{:>8.1} ms] phase {} end: {:.1} ms, heap growth {} B \
             ({} allocs, {} frees), {} file pages read",
            self.elapsed_ms(),
            phase.name(),
            (end_ns - start_ns) as f64 / 1e6,
            heap.growth(),
            heap.allocs,
            heap.frees,
            ctx.pages.count()
        );
        self.records.push(PhaseRecord { phase, start_ns, end_ns, start_unix_s, heap, pages: ctx.pages });
        out
    }

    fn elapsed_ms(&self) -> f64 {
        (monotonic_ns() - self.origin_ns) as f64 / 1e6
    }
}
