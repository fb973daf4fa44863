//! The JSON trace (format "memtrace-trace"): what a run measured, built from
//! the aggregates once tracing stops, and written whole or not at all.
mod io;
mod schema;

use std::collections::BTreeMap;

pub use io::{
    check_writable, give_to_invoking_user, invoking_user, parse_json, read_json, write_atomically, write_json,
};
pub use schema::json_schema;
use serde::{Deserialize, Serialize};

use crate::model::stats::FaultCounts;

pub const FORMAT: &str = "memtrace-trace";
pub const VERSION: u32 = 1;

/// How memtrace reached the target.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `memtrace run -- CMD`: spawned and held before its first instruction.
    Run,
    /// `memtrace -p PID`.
    Attach,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Run => "run",
            Mode::Attach => "attach",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Trace {
    pub format: String,
    pub version: u32,
    pub target: Target,
    /// "run" (spawned by memtrace) or "attach" (-p PID).
    pub mode: Mode,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_s: f64,
    pub stop_reason: String,
    pub counters: Counters,
    /// The kernel's own fault accounting for the target, to check ours against.
    pub kernel: Option<KernelFaults>,
    /// A tree in run mode: wait4's rusage of the command, which adds the
    /// descendants it (and they) reaped: compared with the tree's total,
    /// never with one process's.
    pub kernel_wait4: Option<KernelFaults>,
    pub regions: Vec<RegionFaults>,
    /// The target's RSS counters at the start and end of the trace.
    pub rss: Option<RssSummary>,
    /// When the kernel truth at stop (smaps) was read, or why it could not be.
    pub final_truth: String,
    /// Whether the target's phase markers were found and attached.
    pub phase_markers: String,
    /// `--phase-fn` functions: "NAME: SYMBOL in PATH".
    #[serde(default)]
    pub phase_functions: Vec<String>,
    /// Whether kernel truth was read at phase boundaries, and what it cost.
    pub phase_truth: String,
    pub unmatched_phase_ends: u64,
    /// Phases in order of start; nested ones follow their parent (the
    /// first `--max-phases` finished ones, and those open at the stop).
    pub phases: Vec<PhaseEntry>,
    /// Finished phases past `--max-phases`, summed by path (absent in
    /// older traces).
    #[serde(default)]
    pub phases_folded: Vec<FoldedPhaseEntry>,
    /// The language runtime found in the target's mapped files (null: none
    /// memtrace recognises; absent in older traces).
    #[serde(default)]
    pub runtime: Option<RuntimeEntry>,
    /// The program's heap from the allocator probes (null when not traced).
    pub heap: Option<Heap>,
    /// Which live allocations count as leak candidates.
    pub leak_rule: String,
    /// Leak candidates: live allocations grouped by stack and phase, largest first.
    pub leaks: Vec<Leak>,
    /// Smaller groups left out of `leaks` (not symbolized; with a process
    /// tree, also the groups listed only in their process's `leaks`).
    pub leak_groups_not_listed: u64,
    /// Which stacks count as growth suspects.
    #[serde(default)]
    pub growth_rule: String,
    /// Allocation stacks whose live bytes grew in every sample of the window, most growth first.
    #[serde(default)]
    pub growth_suspects: Vec<GrowthSuspect>,
    /// Anonymous memory by origin (every process's, summed by origin;
    /// absent in older traces).
    #[serde(default)]
    pub anon: Option<AnonMemory>,
    /// Samples every `--interval` (thinned to stay bounded).
    #[serde(default)]
    pub timeline: crate::model::timeline::Timeline,
    pub files: Vec<FileEntry>,
    /// Sums over `files`.
    pub file_totals: FileTotals,
    /// Where each group of figures comes from.
    pub sources: BTreeMap<String, String>,
    /// What memtrace could not do during the run, as it warned on stderr
    /// (added after version 1 shipped: absent in older traces).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Every process traced (the command and, in run mode, each process of
    /// its tree), in order of PID, with its own figures under the same names
    /// as the top level, which describes the whole scope (absent in older
    /// traces).
    #[serde(default)]
    pub processes: Vec<ProcessEntry>,
    /// Processes that ended after `--max-processes` were listed: summed
    /// here, not listed one by one (their figures are in the scope's sums
    /// above too). Null when none was folded.
    #[serde(default)]
    pub processes_folded: Option<FoldedProcesses>,
    /// What tracing cost memtrace itself (absent in older traces).
    #[serde(default)]
    pub memtrace: Option<OwnCost>,
}

/// memtrace's own cost, from the start to the end of tracing (kernel
/// truth: getrusage of memtrace's process, its threads together).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct OwnCost {
    /// Peak resident set (ru_maxrss).
    pub peak_rss_bytes: u64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Records read from the eBPF ring buffer (measured).
    pub ring_records: u64,
    /// ring_records per second traced.
    pub ring_records_per_s: f64,
}

/// One traced process: what it did, measured in its own context.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ProcessEntry {
    pub pid: u32,
    /// The traced process that forked it (null: the first one).
    pub parent: Option<u32>,
    /// Its command line (after its last exec).
    pub command: String,
    /// Seconds after tracing began when it was forked (0: traced from the start).
    pub started_s: f64,
    /// When its last thread exited (null: still running when tracing stopped).
    pub ended_s: Option<f64>,
    /// From its ptrace tracer (run mode; null in attach mode or while running).
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// When its smaps was read, or why it could not be.
    pub final_truth: String,
    /// Its own faults and calls (events seen in its context; the in-kernel
    /// counters and ring-buffer drops are the scope's, at the top level).
    pub counters: Counters,
    /// The kernel's count of its own faults (/proc/PID/stat when last read).
    pub kernel: Option<KernelFaults>,
    pub regions: Vec<RegionFaults>,
    pub rss: Option<RssSummary>,
    /// Its allocator totals (measured in eBPF) and live heap; null when the heap is not traced.
    pub heap: Option<ProcessHeap>,
    /// Its leak candidates.
    pub leaks: Vec<Leak>,
    pub leak_groups_not_listed: u64,
    /// Its own phases: its markers (and a forked child's inherited open
    /// phases, from its birth) and `memtrace mark`s while it ran, with its
    /// own figures.
    pub phases: Vec<PhaseEntry>,
    /// Its finished phases past `--max-phases`, summed by path.
    #[serde(default)]
    pub phases_folded: Vec<FoldedPhaseEntry>,
    /// The language runtime in the files it maps.
    #[serde(default)]
    pub runtime: Option<RuntimeEntry>,
    /// Its anonymous memory by origin.
    #[serde(default)]
    pub anon: Option<AnonMemory>,
    pub files: Vec<FileEntry>,
    pub file_totals: FileTotals,
}

/// Ended processes summed into one entry, so that a tree of thousands of
/// short processes keeps a trace (and memtrace's memory) of bounded size.
/// Each was read whole before it was folded (its heap at its end, its
/// files' figures); what is lost is the per-process detail: its phases,
/// its leak groups' stacks, its PID.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FoldedProcesses {
    /// How many were folded.
    pub processes: u64,
    /// Their command lines, with how many ran each (the first
    /// FOLDED_COMMANDS distinct ones; the others under "(other commands)").
    pub commands: BTreeMap<String, u64>,
    /// The earliest start and the latest end among them (seconds after tracing began).
    pub first_started_s: f64,
    pub last_ended_s: f64,
    /// Their counters, summed.
    pub counters: Counters,
    /// The kernel's counts of their own faults, summed over those that had one.
    pub kernel: Option<KernelFaults>,
    pub regions: Vec<RegionFaults>,
    /// Their heaps at their ends, summed (null when the heap is not traced).
    pub heap: Option<ProcessHeap>,
    /// Their anonymous memory by origin, summed.
    #[serde(default)]
    pub anon: Option<AnonMemory>,
    /// Their leak candidates (alive at their ends), summed.
    pub leak_bytes: u64,
    pub leak_allocations: u64,
    /// Each file once, their figures summed.
    pub files: Vec<FileEntry>,
    pub file_totals: FileTotals,
}

/// Distinct command lines `FoldedProcesses::commands` names.
pub const FOLDED_COMMANDS: usize = 20;

/// Anonymous memory by origin: every change of the kernel's anonymous RSS
/// counter (rss_stat) attributed to the mapping the changing thread
/// faulted in or was unmapping, each anonymous mapping known by the stack
/// of the mmap that made it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AnonMemory {
    /// Anonymous RSS at the end minus at the start (kernel truth: rss_stat).
    pub kernel_growth_bytes: i64,
    /// Resident now by origin, summed over `origins` and the ones not listed
    /// (measured; from zero at the start of tracing).
    pub attributed_bytes: u64,
    /// Changes no origin could be named for (another thread's, the
    /// kernel's own; a decrease larger than the origin held).
    pub unattributed_increase_bytes: u64,
    pub unattributed_decrease_bytes: u64,
    /// Given back by the kernel's teardown after the exit stop.
    pub released_at_exit_bytes: u64,
    /// Anonymous mmaps whose creator stack was lost (the stack map full,
    /// an unreadable stack).
    pub stacks_lost: u64,
    /// When the kernel truth by origin (`kernel_anon_bytes`) was read, or why not.
    pub truth: String,
    /// Largest first (by resident bytes now, then by peak).
    pub origins: Vec<AnonOriginEntry>,
    /// Origins beyond the listed ones (their bytes are in `attributed_bytes`).
    pub origins_not_listed: u64,
}

impl AnonMemory {
    /// Adds another process's figures, origin by origin (a tree's, the
    /// folded processes'): peaks are summed (each process's own peak; an
    /// upper bound of the sum's), the kernel's bytes only where both have them.
    pub fn add(&mut self, other: &AnonMemory, max_origins: usize) {
        self.kernel_growth_bytes += other.kernel_growth_bytes;
        self.attributed_bytes += other.attributed_bytes;
        self.unattributed_increase_bytes += other.unattributed_increase_bytes;
        self.unattributed_decrease_bytes += other.unattributed_decrease_bytes;
        self.released_at_exit_bytes += other.released_at_exit_bytes;
        self.stacks_lost += other.stacks_lost;
        self.origins_not_listed += other.origins_not_listed;
        if self.truth.is_empty() {
            self.truth.clone_from(&other.truth);
        } else if !other.truth.is_empty() && self.truth != other.truth {
            self.truth = "each process's own (see processes[].anon.truth)".into();
        }
        for o in &other.origins {
            match self.origins.iter_mut().find(|have| have.origin == o.origin) {
                Some(have) => {
                    have.rss_bytes += o.rss_bytes;
                    have.peak_rss_bytes += o.peak_rss_bytes;
                    have.kernel_anon_bytes = have.kernel_anon_bytes.zip(o.kernel_anon_bytes).map(|(a, b)| a + b);
                    have.mappings += o.mappings;
                    have.mapped_bytes += o.mapped_bytes;
                    have.stacks += o.stacks;
                    if o.stack_rss_bytes > have.stack_rss_bytes || have.stack.is_empty() {
                        have.stack.clone_from(&o.stack);
                        have.stack_rss_bytes = o.stack_rss_bytes;
                    }
                }
                None => self.origins.push(o.clone()),
            }
        }
        self.origins.sort_by(|a, b| {
            let key = |o: &AnonOriginEntry| (o.rss_bytes.max(o.kernel_anon_bytes.unwrap_or(0)), o.peak_rss_bytes);
            key(b).cmp(&key(a)).then_with(|| a.origin.cmp(&b.origin))
        });
        if self.origins.len() > max_origins {
            self.origins_not_listed += (self.origins.len() - max_origins) as u64;
            self.origins.truncate(max_origins);
        }
    }
}

/// One origin of anonymous memory: the mappings of one kind of creator.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct AnonOriginEntry {
    /// What made it: "pymalloc arenas", "malloc heap: mmap'd chunks and
    /// arenas", "malloc heap: brk ([heap])", "thread stacks", "mmap from FUNCTION", ...
    pub origin: String,
    /// "mmap" (anonymous mappings made while traced), "brk", "stack" (the
    /// main thread's), "file_copy" (written pages of a private file mapping),
    /// "unseen" (mapped before tracing), "other".
    pub kind: String,
    /// Resident now (measured).
    pub rss_bytes: u64,
    /// The most it held at once (measured; for an origin of several stacks,
    /// the highest sum at a timeline sample or any one stack's own peak).
    pub peak_rss_bytes: u64,
    /// smaps "Anonymous" of its pages when tracing stopped (kernel truth;
    /// split by pagemap where one mapping holds several origins); null
    /// when not read. Includes pages from before tracing (attach mode).
    pub kernel_anon_bytes: Option<u64>,
    /// mmap calls that made its mappings while traced, and the bytes they mapped.
    pub mappings: u64,
    pub mapped_bytes: u64,
    /// Distinct creator stacks.
    pub stacks: u64,
    /// The creator stack with the most resident bytes (innermost frame first).
    pub stack: Vec<crate::symbolize::Frame>,
    pub stack_rss_bytes: u64,
}

/// One process's heap, as its allocator probes counted it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ProcessHeap {
    /// When its live allocations were read.
    pub read_at: String,
    pub live_bytes: i64,
    pub live_allocations: u64,
    #[serde(flatten)]
    pub totals: memtrace_common::HeapTotals,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Target {
    pub pid: u32,
    pub command: String,
    /// Set when the target exited while traced (run mode: its exit code).
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Counters {
    /// Exact, from the in-kernel counter.
    pub page_faults: u64,
    pub mmap_calls: u64,
    pub munmap_calls: u64,
    pub madvise_calls: u64,
    pub mremap_calls: u64,
    pub ringbuf_drops: u64,
    /// Faults that reached userspace as events (page_faults - drops, plus
    /// the kernel-mode ones).
    pub page_faults_seen: u64,
    /// Faults the kernel took in kernel mode on the target's user memory
    /// (exceptions:page_fault_kernel at a user address: read() copying into
    /// the target's pages, ...): in the kernel's count, not in `page_faults`.
    #[serde(default)]
    pub page_faults_kernel_mode: u64,
    pub page_faults_read: u64,
    pub page_faults_write: u64,
    pub page_faults_exec: u64,
    pub mmap_failed: u64,
    pub munmap_failed: u64,
    pub madvise_failed: u64,
    pub mremap_failed: u64,
    pub execs: u64,
    /// Syscalls whose entry could not be stashed in eBPF (map full).
    pub syscalls_lost: u64,
    /// Mapped files whose evictions could not be watched (eBPF map full).
    pub eviction_watch_full: u64,
    pub unattributed_faults: u64,
    pub unresolved_file_mappings: u64,
    pub malformed_events: u64,
    /// File-page RSS changes no file could be named for (kmem:rss_stat).
    pub unattributed_file_loaded_bytes: u64,
    pub unattributed_file_unloaded_bytes: u64,
    /// File pages given back by the kernel's teardown after the exit stop.
    pub file_rss_released_at_exit_bytes: u64,
    /// Processes the traced tree forked that could not be traced (the
    /// kernel's table of traced processes was full).
    #[serde(default)]
    pub processes_not_traced: u64,
    /// Forks whose new task could not be read in the kernel (no BTF
    /// offsets): their children are not followed.
    #[serde(default)]
    pub forks_unread: u64,
    /// Records naming a process memtrace never saw begin.
    #[serde(default)]
    pub stray_events: u64,
    /// Allocations in a CPython process whose Python frames were not read:
    /// the thread had released the GIL (C code running without it).
    #[serde(default)]
    pub python_stacks_other_thread: u64,
    /// Python frame chains cut short: a frame could not be read.
    #[serde(default)]
    pub python_stacks_cut: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct KernelFaults {
    pub source: String,
    pub minor_faults: u64,
    pub major_faults: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct RegionFaults {
    pub region: String,
    pub faults: FaultCounts,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Rss {
    pub file_bytes: u64,
    pub anon_bytes: u64,
    pub shmem_bytes: u64,
    pub swap_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct RssSummary {
    pub start: Rss,
    pub end: Rss,
    /// When the total (file + anon + shmem) was highest.
    pub peak: Rss,
    /// When the kernel truth at stop was read (null when it was not).
    pub at_final_truth: Option<Rss>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FileEstimates {
    pub fixed_ratio_bytes: u64,
    pub rss_growth_bytes: u64,
    pub capped_growth_bytes: u64,
    /// What the errors are measured against: "kernel_rss_bytes" (smaps at stop, file
    /// still mapped) or "peak_resident_bytes" (measured; file unmapped or no truth).
    pub reference: String,
    pub fixed_ratio_error_bytes: i64,
    pub rss_growth_error_bytes: i64,
    pub capped_growth_error_bytes: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FileTotals {
    pub files: usize,
    pub size_bytes: u64,
    pub mapped_bytes: u64,
    pub resident_at_start_bytes: Option<u64>,
    pub measured_loaded_bytes: u64,
    pub measured_resident_bytes: u64,
    pub fault_around_bytes: u64,
    pub read_from_disk_bytes: u64,
    pub evicted_bytes: u64,
    pub kernel_rss_bytes: Option<u64>,
    pub kernel_pagemap_bytes: Option<u64>,
}

impl FileTotals {
    pub fn of(files: &[FileEntry]) -> FileTotals {
        let opt = |f: fn(&FileEntry) -> Option<u64>| files.iter().map(f).sum::<Option<u64>>();
        FileTotals {
            files: files.len(),
            size_bytes: files.iter().filter_map(|f| f.size_bytes).sum(),
            mapped_bytes: files.iter().map(|f| f.mapped_bytes).sum(),
            resident_at_start_bytes: opt(|f| f.resident_at_start_bytes),
            measured_loaded_bytes: files.iter().map(|f| f.measured_loaded_bytes).sum(),
            measured_resident_bytes: files.iter().map(|f| f.measured_resident_bytes).sum(),
            fault_around_bytes: files.iter().map(|f| f.fault_around_bytes).sum(),
            read_from_disk_bytes: files.iter().map(|f| f.read_from_disk_bytes).sum(),
            evicted_bytes: files.iter().map(|f| f.evicted_bytes).sum(),
            kernel_rss_bytes: opt(|f| f.kernel_rss_bytes),
            kernel_pagemap_bytes: opt(|f| f.kernel_pagemap_bytes),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct PhaseEntry {
    pub name: String,
    /// Enclosing phases and this one, joined with "/".
    pub path: String,
    pub depth: usize,
    /// Seconds since tracing started.
    pub start_s: f64,
    pub end_s: f64,
    pub duration_s: f64,
    /// CLOCK_MONOTONIC of the marker calls (exact, not sample-aligned).
    pub start_monotonic_ns: u64,
    pub end_monotonic_ns: u64,
    /// Still running when tracing stopped.
    pub open: bool,
    /// Live heap at the end marker minus at the begin marker (allocator
    /// view: requested bytes); null without heap probes.
    pub heap_growth_bytes: Option<i64>,
    /// smaps was read at both of its markers (`--phase-truth`).
    pub kernel_truth_at_boundaries: bool,
    pub page_faults: u64,
    pub anon_rss_growth_bytes: i64,
    pub files: Vec<PhaseFile>,
}

/// Fields added after version 1 first shipped read as their defaults from
/// older traces (`#[serde(default)]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default)]
pub struct Heap {
    /// Every allocator probed and how it was found, in one line ("path: how;
    /// ..."), or "not traced: why" (kept from version 1; `allocators` has the parts).
    pub allocator: String,
    /// "traced", or why the heap is not traced.
    pub status: String,
    /// Each allocator probed, how it was found, and whether the target mapped it.
    pub allocators: Vec<HeapAllocator>,
    pub probes: Vec<HeapProbeEntry>,
    /// When the figures below were read.
    pub read_at: String,
    /// Allocated minus freed, requested bytes (not allocator overhead).
    pub live_bytes: i64,
    /// Highest live_bytes seen in the samples and at phase markers.
    pub peak_live_bytes: i64,
    pub live_allocations: u64,
    /// The allocator totals from the kernel map, as eBPF counted them
    /// (flattened: each is a field of `heap` in the JSON).
    #[serde(flatten)]
    pub totals: memtrace_common::HeapTotals,
    /// Allocations still live when the target called execve again (the old
    /// image's heap, gone with it): taken out of live_bytes and the leaks.
    pub released_by_exec_allocs: u64,
    pub released_by_exec_bytes: u64,
    /// Allocator calls entered but not returned when tracing stopped (one
    /// at most per thread): in flight at that instant, or never to return
    /// (a thread's last such call; its earlier ones are in
    /// `abandoned_calls`). Their allocations are not counted.
    #[serde(default)]
    pub open_calls_at_stop: u64,
    /// The heap part of the trace's timeline (every `--interval`).
    pub timeline: Vec<HeapSample>,
    /// The kernel's side: the program break and anonymous mappings
    /// (measured, syscall tracepoints).
    pub kernel: KernelHeapSummary,
    /// How allocation stacks were walked, and the unwind tables loaded.
    #[serde(default)]
    pub unwind: UnwindStats,
    /// `--events`: where the full stream went.
    pub events: Option<HeapEvents>,
}

/// The eBPF unwinder's tables (`--unwind dwarf`): what was loaded, what it
/// cost, and the files stacks were walked through with frame pointers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct UnwindStats {
    /// `fp` or `dwarf` (`--unwind`).
    pub method: String,
    /// Executable files whose tables were loaded, their rows and the map
    /// memory they take (16 bytes a row).
    pub files: u64,
    pub rows: u64,
    pub map_bytes: u64,
    /// Reading and compiling the tables and loading them into the kernel.
    pub build_ms: f64,
    /// Run mode: times the target was held (its main thread stopped, right
    /// after an exec or a mapping of code) until the new file's table was in,
    /// and for how long in all.
    pub holds: u64,
    pub held_ms: f64,
    /// Files with no unwind information (or unreadable): walked with frame pointers.
    pub files_without_table: Vec<String>,
    /// Files whose tables could not be loaded: walked with frame pointers.
    pub files_not_loaded: Vec<String>,
    /// Stacks cut short, by the module of the last frame reached and why
    /// (measured, eBPF; the totals are the heap's `stacks_cut_*`), most first.
    #[serde(default)]
    pub cuts: Vec<UnwindCut>,
}

/// Stacks the unwinder cut short in one module for one reason.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct UnwindCut {
    /// The file whose code the last frame reached is in; null: in no file
    /// mapping memtrace knew (JIT code, the vDSO, a mapping already gone).
    pub module: Option<String>,
    /// `no_table`, `unsupported`, `unreadable` or `depth`.
    pub reason: String,
    /// Allocations whose stack was cut there.
    pub stacks: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct KernelHeapSummary {
    /// Program break minus its start, at the stop and at most.
    pub brk_heap_bytes: u64,
    pub brk_heap_peak_bytes: u64,
    pub brk_calls: u64,
    pub anon_mmap_calls: u64,
    pub anon_mapped_bytes: u64,
    pub anon_unmapped_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct HeapEvents {
    pub path: String,
    pub allocs: u64,
    pub frees: u64,
    /// Symbolized stacks appended at the end of the file.
    pub stacks: u64,
    /// A write error: the stream stops there (the trace is still complete).
    pub error: Option<String>,
}

/// An allocation stack whose live bytes grew in every sample of the window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct GrowthSuspect {
    pub stack_id: u64,
    pub live_bytes: u64,
    pub live_count: u64,
    /// Growth of live bytes over the window.
    pub growth_bytes: u64,
    pub window_s: f64,
    pub stack: Vec<crate::symbolize::Frame>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct HeapAllocator {
    pub path: String,
    pub found_by: String,
    /// The target mapped this file while traced (false: its probes never fired).
    pub mapped: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct HeapProbeEntry {
    pub function: String,
    pub library: String,
    pub address: u64,
    /// Offset of the probe from the function's start (null: not probed).
    pub offset: Option<u64>,
    /// The probed instruction is emulated by the kernel (fast) rather than single-stepped.
    pub emulated: Option<bool>,
    pub placement: Option<String>,
    pub status: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default)]
pub struct HeapSample {
    pub t_s: f64,
    pub live_bytes: i64,
    /// Anonymous RSS (kernel view, rss_stat) at the same moment.
    pub anon_rss_bytes: u64,
    /// Program break minus its start (kernel view, brk tracepoint).
    pub brk_heap_bytes: u64,
    /// Anonymous bytes mapped minus unmapped since tracing began (mmap tracepoints).
    pub anon_mapped_net_bytes: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Leak {
    pub bytes: u64,
    pub count: u64,
    pub oldest_age_s: f64,
    pub phase: String,
    /// The process the allocations live in (0 in traces made before
    /// memtrace followed process trees).
    #[serde(default)]
    pub pid: u32,
    /// Key of the stack in the kernel map (a hash of its frames; 0: the stack could not be taken).
    pub stack_id: u64,
    /// Innermost frame first (the allocation's caller).
    pub stack: Vec<crate::symbolize::Frame>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct PhaseFile {
    pub path: String,
    pub measured_loaded_bytes: u64,
    pub measured_unloaded_bytes: u64,
    /// loaded - unloaded: comparable with `kernel_rss_change_bytes`.
    pub measured_rss_change_bytes: i64,
    /// smaps Rss at the phase's end marker minus at its begin marker
    /// (`--phase-truth`); null without kernel truth at both boundaries.
    pub kernel_rss_change_bytes: Option<i64>,
    pub fault_around_bytes: u64,
    pub read_from_disk_bytes: u64,
}

/// A language runtime recognised in a mapped file by what the file defines
/// (CPython: `_PyRuntime`, and `Py_Version` for its version).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default)]
pub struct RuntimeEntry {
    /// "CPython".
    pub name: String,
    /// "3.11.2", or why it is not known.
    pub version: String,
    /// The file that holds it: the executable, or a shared libpython.
    pub file: String,
    /// Where the version was read.
    pub source: String,
    /// What memtrace does with the runtime's own frames.
    pub frames: String,
}

/// The finished phases of one path past the listed ones, summed: what a
/// server that marks a phase per request did in all its requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default)]
pub struct FoldedPhaseEntry {
    pub name: String,
    pub path: String,
    pub depth: usize,
    /// How many phases of this path were folded.
    pub count: u64,
    /// The first one's start and the last one's end, seconds since tracing started.
    pub first_start_s: f64,
    pub last_end_s: f64,
    /// Their durations, summed.
    pub total_duration_s: f64,
    pub page_faults: u64,
    pub anon_rss_growth_bytes: i64,
    /// Live-heap growth summed over `heap_growth_phases` of them (those
    /// whose markers' heap totals were read); null without heap probes.
    pub heap_growth_bytes: Option<i64>,
    pub heap_growth_phases: u64,
    /// Per file, summed (no kernel truth: `kernel_rss_change_bytes` null).
    pub files: Vec<PhaseFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FileEntry {
    pub path: String,
    pub size_bytes: Option<u64>,
    /// Most bytes of the file mapped into the target at once.
    pub mapped_bytes: u64,
    pub mapped_at_end_bytes: u64,
    pub mmap_calls: u64,
    pub device_major: u32,
    pub device_minor: u32,
    pub inode: u64,
    pub page_faults: FaultCounts,
    /// Resident when tracing started (attach mode; smaps). Null in run mode.
    pub resident_at_start_bytes: Option<u64>,
    /// Present pages of its mappings in /proc/PID/pagemap at attach.
    pub resident_at_start_pagemap_bytes: Option<u64>,
    /// Bytes the kernel mapped into the target during the trace.
    pub measured_loaded_bytes: u64,
    /// resident_at_start + loaded - unloaded: what the trace says is mapped now.
    pub measured_resident_bytes: u64,
    /// Highest measured residency during the trace.
    pub peak_resident_bytes: u64,
    pub unloaded_bytes: u64,
    pub fault_around_bytes: u64,
    pub read_from_disk_bytes: u64,
    /// Page-cache additions by the target outside faults (write(2), read(2), readahead advice).
    pub cache_added_other_bytes: u64,
    pub evicted_bytes: u64,
    /// Distinct pages the filemap tracepoints named (fault-around ranges overcount).
    pub fault_ranges_bytes: u64,
    /// smaps Rss of the file's mappings when tracing stopped; null when no truth could be read.
    pub kernel_rss_bytes: Option<u64>,
    /// Present pages of the file's mappings in /proc/PID/pagemap at the same moment.
    pub kernel_pagemap_bytes: Option<u64>,
    /// smaps Pss of the file's mappings at the same moment (a page shared by
    /// n processes counts 1/n in each).
    pub kernel_pss_bytes: Option<u64>,
    /// The file's own pages present in the mappings (pagemap), each page of
    /// the file counted once: for a process tree, the union over its
    /// processes, each read at its exit stop or when tracing stopped; what
    /// the machine really spends on the file, beside `kernel_rss_bytes`
    /// (what `top` adds up) and `kernel_pss_bytes`.
    pub kernel_distinct_resident_bytes: Option<u64>,
    pub estimates: FileEstimates,
}

pub fn default_sources() -> BTreeMap<String, String> {
    [
        ("counters", "measured (eBPF tracepoints, in-kernel per-CPU counters)"),
        ("regions", "measured (page-fault events attributed to mappings from mmap events and /proc/PID/maps)"),
        ("files.size_bytes", "kernel truth (stat of /proc/PID/map_files)"),
        ("files.mapped_bytes", "measured (mmap/munmap events) with /proc/PID/maps snapshots"),
        ("files.page_faults", "measured (page-fault events)"),
        ("kernel", "kernel truth (/proc/PID/stat: run mode at the exit stop, the process's own; attach mode, the change while traced)"),
        ("rss", "kernel truth (kmem:rss_stat counter values; /proc/PID/status at attach)"),
        ("files.measured_loaded_bytes", "measured (kmem:rss_stat file-page changes attributed to the faulting file)"),
        ("files.fault_around_bytes", "measured (changes followed by filemap:mm_filemap_map_pages)"),
        ("files.read_from_disk_bytes", "measured (filemap:mm_filemap_add_to_page_cache inside the target's faults)"),
        ("files.cache_added_other_bytes", "measured (filemap:mm_filemap_add_to_page_cache by the target outside faults)"),
        ("files.evicted_bytes", "measured (filemap:mm_filemap_delete_from_page_cache of files the target maps)"),
        ("files.resident_at_start_bytes", "kernel truth (/proc/PID/smaps Rss at attach)"),
        ("files.resident_at_start_pagemap_bytes", "kernel truth (/proc/PID/pagemap present pages at attach)"),
        ("files.kernel_rss_bytes", "kernel truth (/proc/PID/smaps Rss at stop)"),
        ("files.kernel_pagemap_bytes", "kernel truth (/proc/PID/pagemap present pages at stop)"),
        ("files.kernel_pss_bytes", "kernel truth (/proc/PID/smaps Pss at stop; a tree's is the sum over its processes)"),
        (
            "files.kernel_distinct_resident_bytes",
            "kernel truth (/proc/PID/pagemap file pages at stop, by page of the file; a tree's is the union over its processes)",
        ),
        ("phases", "measured (uprobes on memtrace_phase_begin/end; per-phase figures are differences of the measured totals)"),
        ("phases_folded", "measured (the phases past --max-phases, their figures summed by path)"),
        ("runtime", "the target's files (the runtime's symbols and version data, read from the ELF file)"),
        ("anon.kernel_growth_bytes", "kernel truth (kmem:rss_stat anonymous pages, end minus start)"),
        (
            "anon.origins",
            "measured (kmem:rss_stat anonymous-page changes attributed to the mapping of the faulting address or the range being unmapped; each anonymous mapping named by the user stack of its mmap, read in eBPF)",
        ),
        (
            "anon.origins.kernel_anon_bytes",
            "kernel truth (/proc/PID/smaps Anonymous at stop, split by /proc/PID/pagemap present pages where one mapping holds several origins)",
        ),
        ("files.estimates", "estimate (fixed 80 % of size; peak RSS growth minus anon growth, by size share; min(peak RSS growth, 80 % of mapped size), by size share)"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Seconds since the epoch as RFC 3339 UTC ("2026-11-23T15:11:26Z").
pub fn rfc3339_utc(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_446_686), "2026-11-23T15:11:26Z");
    }

    pub(crate) fn sample() -> Trace {
        Trace {
            format: FORMAT.into(),
            version: VERSION,
            target: Target { pid: 1, command: "x".into(), exit_code: Some(0), exit_signal: None },
            mode: Mode::Run,
            started_at: rfc3339_utc(0),
            duration_s: 1.5,
            stop_reason: "target exited".into(),
            counters: Counters { page_faults: 3, ..Default::default() },
            kernel: None,
            kernel_wait4: None,
            regions: vec![],
            rss: None,
            phase_markers: "none".into(),
            phase_truth: "none".into(),
            phase_functions: vec![],
            unmatched_phase_ends: 0,
            phases: vec![],
            phases_folded: vec![],
            runtime: None,
            heap: None,
            leak_rule: "alive at the end".into(),
            leaks: vec![],
            leak_groups_not_listed: 0,
            growth_rule: "none".into(),
            growth_suspects: vec![],
            anon: Some(AnonMemory {
                kernel_growth_bytes: 3 << 20,
                attributed_bytes: 3 << 20,
                truth: "smaps Anonymous when tracing stopped, split by pagemap".into(),
                origins: vec![AnonOriginEntry {
                    origin: "pymalloc arenas".into(),
                    kind: "mmap".into(),
                    rss_bytes: 3 << 20,
                    peak_rss_bytes: 4 << 20,
                    kernel_anon_bytes: Some(3 << 20),
                    mappings: 4,
                    mapped_bytes: 4 << 20,
                    stacks: 2,
                    stack: vec![crate::symbolize::Frame {
                        address: 0x7f00_0000_1000,
                        function: Some("PyTuple_New".into()),
                        module: Some("/usr/bin/python3.11".into()),
                        offset: Some(0x1000),
                        ..Default::default()
                    }],
                    stack_rss_bytes: 2 << 20,
                }],
                ..AnonMemory::default()
            }),
            timeline: Default::default(),
            final_truth: "none".into(),
            files: vec![],
            file_totals: FileTotals::default(),
            sources: default_sources(),
            warnings: vec![],
            processes: vec![],
            processes_folded: None,
            memtrace: None,
        }
    }
}
