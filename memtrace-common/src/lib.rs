//! Types shared by memtrace's eBPF programs and its userspace controller.
//!
//! Everything here is `#[repr(C)]` plain data (and `#[repr(u32)]` enums
//! naming the integers in it): the eBPF side writes these bytes into maps and
//! the ring buffer (see [`event`]), userspace reads the same bytes back.
// Userspace (the `user` feature) gets std for serde and schemars; the eBPF
// side builds it without.
#![cfg_attr(not(feature = "user"), no_std)]

pub mod event;

/// The page size memtrace assumes everywhere (x86_64's base page): byte
/// counts of file pages, page-cache indexes and range rounding use it.
pub const PAGE_SIZE: u64 = 4096;

/// Longest phase name sent from the kernel, including its NUL.
pub const PHASE_NAME_MAX: usize = 40;

/// Bytes of one path component an `MmapPathEvent` carries (with its NUL):
/// a longer name marks the path incomplete.
pub const PATH_NAME_MAX: usize = 128;

/// Path components an `MmapPathEvent` carries: a deeper file's path is
/// incomplete (and named from /proc when its identity matches there).
pub const PATH_DEPTH_MAX: usize = 16;
/// Set in the sequence numbers of phase boundaries made from userspace
/// (`memtrace mark`), which cannot take the eBPF side's numbers atomically:
/// the two never share a number.
pub const PHASE_SEQ_USER: u32 = 1 << 31;

/// Key of the `WATCHED_FILES` map: a file the target maps, as the kernel's
/// tracepoints name it (s_dev is the kernel's internal dev_t: major << 20 | minor).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub ino: u64,
    pub s_dev: u32,
    pub _pad: u32,
}

/// Key of `CODE_FILES`: a file whose code one traced process mapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeFileKey {
    pub ino: u64,
    pub s_dev: u32,
    pub pid: u32,
}

/// Most processes traced at once (`TRACED`).
pub const MAX_TRACED: u32 = 4096;

/// One traced process (`TRACED`, by thread group id): written by userspace
/// for the processes it names, by the fork program for their children.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracedProcess {
    /// This process's own allocator totals (HEAP_TOTALS holds the scope's).
    pub heap: HeapTotals,
    /// The mm_id its rss_stat events carry (0: none seen yet).
    pub mm_id: u32,
    /// `TRACED_HOLDABLE`: memtrace is its ptrace tracer, so eBPF may hold it.
    pub flags: u32,
    /// Its latest phase boundary's number (0 before the first): its new
    /// allocations carry it, so a leak is tagged with its own process's
    /// phase, not another's. A child starts with its parent's.
    pub phase_seq: u32,
    pub _pad: u32,
}

/// `TracedProcess::flags`: the process is ptraced by memtrace (run mode):
/// its main thread may be held with a SIGSTOP that memtrace swallows.
pub const TRACED_HOLDABLE: u32 = 1;

/// Key of `LIVE_ALLOCS`: the address in its process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub address: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// Slots of the per-CPU `COUNTERS` array; userspace sums the CPUs. The
/// values are the slots: never renumber one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    PageFaults = 0,
    MmapCalls = 1,
    MunmapCalls = 2,
    /// Events lost because the ring buffer was full when the program tried to reserve.
    RingbufDrops = 3,
    /// Syscalls whose entry arguments could not be stashed (the per-thread map was full),
    /// so their exit produced no event.
    PendingFull = 4,
    MadviseCalls = 5,
    MremapCalls = 6,
    /// Mapped files the kernel side could not add to WATCHED_FILES (map full):
    /// their evictions are not seen.
    WatchFull = 7,
    /// New processes of the traced tree not traced: `TRACED` was full.
    TracedFull = 8,
    /// New tasks the fork program could not read (no kernel BTF offsets):
    /// children are not followed.
    ForkUnread = 9,
    /// Allocation stacks of a Python thread whose interpreter frames were
    /// not read: another thread held the GIL (this one had released it).
    PythonOtherThread = 10,
    /// Python frame chains cut short: a frame could not be read.
    PythonUnreadable = 11,
}

impl Counter {
    /// Number of counters (the `COUNTERS` array's size).
    pub const COUNT: usize = 12;
    /// Every counter, in slot order.
    pub const ALL: [Counter; Counter::COUNT] = [
        Counter::PageFaults,
        Counter::MmapCalls,
        Counter::MunmapCalls,
        Counter::RingbufDrops,
        Counter::PendingFull,
        Counter::MadviseCalls,
        Counter::MremapCalls,
        Counter::WatchFull,
        Counter::TracedFull,
        Counter::ForkUnread,
        Counter::PythonOtherThread,
        Counter::PythonUnreadable,
    ];
}

const _: () = {
    let mut i = 0;
    while i < Counter::COUNT {
        assert!(Counter::ALL[i] as usize == i, "Counter::ALL is not in slot order");
        i += 1;
    }
};

/// Byte offsets of the tracepoint fields the programs read, taken from the
/// tracefs `format` files at start-up (Rust eBPF has no CO-RE; offsets can move
/// between kernels) and written into the object with `override_global`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub fault_address: u32,
    pub fault_ip: u32,
    pub fault_error_code: u32,
    pub mmap_addr: u32,
    pub mmap_len: u32,
    pub mmap_prot: u32,
    pub mmap_flags: u32,
    pub mmap_fd: u32,
    pub mmap_off: u32,
    pub munmap_addr: u32,
    pub munmap_len: u32,
    pub madvise_start: u32,
    pub madvise_len: u32,
    pub madvise_behavior: u32,
    pub mremap_addr: u32,
    pub mremap_old_len: u32,
    pub mremap_new_len: u32,
    pub mremap_flags: u32,
    /// `ret` in every `syscalls:sys_exit_*` record.
    pub exit_ret: u32,
    pub rss_mm_id: u32,
    pub rss_curr: u32,
    pub rss_member: u32,
    pub rss_size: u32,
    /// mm_filemap_fault and mm_filemap_map_pages share these.
    pub fault_ino: u32,
    pub fault_dev: u32,
    pub fault_index: u32,
    pub map_pages_last: u32,
    /// add_to_page_cache and delete_from_page_cache share these.
    pub cache_ino: u32,
    pub cache_index: u32,
    pub cache_dev: u32,
    pub cache_order: u32,
    /// `group_dead` of sched_process_exit (0: the kernel has no such field,
    /// before Linux 6.9; then the main thread's exit ends the process).
    pub exit_group_dead: u32,
    /// `brk` of syscalls:sys_enter_brk (the break asked for).
    pub brk_arg: u32,
}

/// Byte offsets of kernel struct members the fexit program follows, read
/// from the kernel's BTF at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    /// `file.f_path.dentry` (the two offsets added).
    pub file_f_path_dentry: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_name.name` (the two offsets added).
    pub dentry_d_name_name: u32,
    pub inode_i_mode: u32,
    /// `task_struct.pid` and `.tgid` (the fork program tells a new process
    /// from a new thread by them).
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `task_struct.exit_signal`: SIGCHLD for fork and vfork children, which
    /// ptrace's fork options make traced (and so holdable) too.
    pub task_exit_signal: u32,
    /// `task_struct.utask`, `uprobe_task.return_instances` and
    /// `return_instance.{stack, orig_ret_vaddr, next}`: the return addresses
    /// the kernel's uretprobes replaced with their trampoline, for stack
    /// walks through a probed call still running (an mmap inside malloc).
    /// 0: not known on this kernel, no such walk is repaired.
    pub task_utask: u32,
    pub utask_return_instances: u32,
    pub ri_stack: u32,
    pub ri_orig_ret_vaddr: u32,
    pub ri_next: u32,
    pub _pad: u32,
}

/// Allocator entry points, as recorded between a call's entry and return
/// (`PendingAlloc::kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocKind {
    Malloc = 1,
    Calloc = 2,
    Realloc = 3,
    /// `aligned_alloc`, `memalign` (size in the second argument).
    Memalign = 4,
    PosixMemalign = 5,
    /// `valloc`, `pvalloc`.
    Valloc = 6,
}

impl AllocKind {
    pub const fn from_u32(kind: u32) -> Option<AllocKind> {
        Some(match kind {
            1 => AllocKind::Malloc,
            2 => AllocKind::Calloc,
            3 => AllocKind::Realloc,
            4 => AllocKind::Memalign,
            5 => AllocKind::PosixMemalign,
            6 => AllocKind::Valloc,
            _ => return None,
        })
    }
}

/// An allocation call in progress on one thread (`ALLOC_PENDING`, by tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingAlloc {
    /// An [`AllocKind`] as `u32` (map values stay plain integers: userspace
    /// reads them as `aya::Pod`).
    pub kind: u32,
    pub _pad: u32,
    /// Requested bytes.
    pub size: u64,
    /// realloc: the old pointer; posix_memalign: where the result is stored.
    pub arg: u64,
    /// Stack pointer at entry. An allocator call made from inside this one
    /// (glibc's realloc calls malloc for mmapped blocks) runs deeper, below
    /// it: its entry and return are skipped and the outer call accounts. A
    /// call at or above it means this one never returned through us (longjmp):
    /// it is replaced.
    pub sp: u64,
    /// Where the entry probe fired. At the same stack pointer, another
    /// function is a tail call of this one (`jmp malloc`), the same function
    /// a new call after a return that went unseen.
    pub ip: u64,
}

/// One live allocation (`LIVE_ALLOCS`, by address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveAlloc {
    pub size: u64,
    pub ts_ns: u64,
    /// Key in the `STACKS` map (a hash of the frames), or 0 when the stack
    /// could not be taken.
    pub stack_id: u64,
    /// The latest phase boundary's sequence number when it was made (see
    /// `event::PhaseEvent`).
    pub phase_seq: u32,
    pub _pad: u32,
}

/// Frames kept per allocation stack.
pub const MAX_STACK_DEPTH: usize = 127;

/// CPython frames read in eBPF at allocation time, appended to the native
/// frames of a `StackFrames` (innermost first): each is one word with
/// PYTHON_FRAME set, the code object's address in the low 47 bits, the
/// instruction index (code units into `co_code_adaptive`, capped) above
/// it, and PYTHON_ENTRY when the frame is the first of one C-level call of
/// the interpreter (its native `_PyEval_EvalFrameDefault` frame follows).
pub const PYTHON_FRAME: u64 = 1 << 63;
pub const PYTHON_ENTRY: u64 = 1 << 62;
pub const PYTHON_INSTR_SHIFT: u32 = 47;
pub const PYTHON_INSTR_MAX: u64 = (1 << 15) - 1;
pub const PYTHON_CODE_MASK: u64 = (1 << 47) - 1;
/// Python frames read per allocation at most.
pub const PYTHON_DEPTH: usize = 48;

/// Where a traced CPython keeps its frames (`PYTHON_PROCS`, by pid): the
/// address of `_PyRuntime.gilstate.tstate_current` in the process, and the
/// field offsets of its version (userspace's table, see runtime::cpython).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProcess {
    pub tstate_current: u64,
    pub tstate_native_thread_id: u32,
    pub tstate_cframe: u32,
    pub cframe_current_frame: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_prev_instr: u32,
    pub frame_is_entry: u32,
    pub code_adaptive: u32,
}

/// One user stack (`STACKS`, keyed by a hash of its frames): innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackFrames {
    pub len: u64,
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// Per allocation stack (`STACK_STATS`, by stack id), updated atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackStats {
    pub live_count: u64,
    pub live_bytes: u64,
    pub allocs: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// The process the stack is in (stack ids hash it with the frames).
    pub pid: u32,
    pub _pad: u32,
}

/// Heap totals (`HEAP_TOTALS[0]`), updated atomically in eBPF; sent at
/// each phase boundary (`HeapMarkEvent`) and read at the stop. The same
/// type is the trace's `heap` totals in userspace (flattened into its JSON),
/// so the kernel map, the events and the JSON cannot drift apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema))]
#[cfg_attr(feature = "user", serde(default))]
pub struct HeapTotals {
    /// Requested bytes of every allocation recorded.
    pub allocated_bytes: u64,
    /// Requested bytes of every recorded allocation freed again.
    pub freed_bytes: u64,
    /// Allocation calls recorded.
    pub allocs: u64,
    /// Frees of recorded allocations.
    pub frees: u64,
    /// Frees, by the program's own code, of addresses memtrace never saw
    /// allocated (made before it attached, or dropped): never subtracted
    /// from the live heap.
    pub unknown_frees: u64,
    /// Allocations not tracked: the live map (LIVE_ALLOCS) was full.
    pub dropped_allocs: u64,
    /// Allocations recorded without a stack (STACKS full, no user stack).
    pub lost_stacks: u64,
    /// Addresses allocated again while memtrace still had them live: the
    /// free in between went unseen (an unprobed path); the old one is retired.
    pub missed_frees: u64,
    /// Allocation calls that returned NULL (or an error).
    pub failed_allocs: u64,
    /// Allocator calls whose entry could not be recorded (ALLOC_PENDING full).
    pub lost_calls: u64,
    /// Allocator calls whose return was never seen: the thread's next call
    /// found them still open (a longjmp out of the allocator, or the kernel's
    /// limit of 64 pending return probes per thread, reached under deep
    /// recursion of a `--phase-fn` function). Their allocations are not counted.
    pub abandoned_calls: u64,
    /// Frees of addresses memtrace never saw allocated, called from the
    /// allocator library's own code: blocks it made without a probed call
    /// or hands back a second time (glibc returning a thread's cache and the
    /// cache itself when the thread exits). Not allocations made before
    /// tracing; never subtracted from the live heap.
    pub internal_frees: u64,
    /// Allocations whose stack, unwound with tables, ends early: a frame in
    /// code with no unwind table whose frame-pointer step failed (no frame
    /// pointer there, or a file whose table was not loaded).
    pub stacks_cut_no_table: u64,
    /// Allocations whose stack ends early at an unwind rule the eBPF
    /// unwinder does not follow (CFA from another register or an expression).
    pub stacks_cut_unsupported: u64,
    /// Allocations whose stack ends early because a saved return address or
    /// rbp could not be read from the target's stack.
    pub stacks_cut_unreadable: u64,
    /// Allocations whose stack was cut at the unwinder's depth limit (64 frames).
    pub stacks_cut_depth: u64,
}

impl HeapTotals {
    /// Requested bytes allocated and not freed (negative when frees of
    /// blocks allocated before tracing outweigh).
    pub fn live_bytes(&self) -> i64 {
        self.allocated_bytes as i64 - self.freed_bytes as i64
    }
}

/// How one row of an unwind table finds the canonical frame address (CFA:
/// the caller's stack pointer before its `call`). x86_64 only.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfaBase {
    /// No unwind information here (between the functions an FDE covers).
    None = 0,
    /// CFA = rsp + offset.
    Rsp = 1,
    /// CFA = rbp + offset.
    Rbp = 2,
    /// A PLT stub: CFA = rsp + 8, plus 8 when (rip & 15) >= 11 (the
    /// expression every x86_64 linker emits for .plt).
    Plt = 3,
    /// A rule the unwinder cannot follow (another register, an expression).
    Unsupported = 4,
    /// The return address is undefined: the outermost frame (`_start`,
    /// `clone`'s child), where a stack ends.
    Outermost = 5,
}

/// Where one row of an unwind table finds the caller's rbp.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RbpRule {
    /// Not saved by this frame: the caller's rbp is the current one.
    Unchanged = 0,
    /// Saved at CFA + rbp_offset.
    AtCfa = 1,
    /// A rule the unwinder cannot follow.
    Unsupported = 2,
}

/// One row of a compiled unwind table: from `pc` (a virtual address of the
/// ELF file, before the load bias) up to the next row's `pc`, how to find
/// the caller's frame. The return address is always at CFA - 8 on x86_64
/// (rows where it is not are `CfaBase::Unsupported`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    pub pc: u64,
    pub cfa_offset: i32,
    pub rbp_offset: i16,
    /// A [`CfaBase`].
    pub cfa: u8,
    /// An [`RbpRule`].
    pub rbp: u8,
}

/// Files whose unwind tables `UNWIND_TABLES` holds at once: each file's
/// rows are an array of their own, sized to fit (16 bytes a row: glibc's
/// 23,331 rows take 365 KiB, libLLVM-15's 842,966 take 13 MiB), so map
/// memory is what the target's files need, and a large library fits.
pub const UNWIND_TABLES_MAX: u32 = 512;

/// Rows one file's table may have: the eBPF binary search covers this many.
pub const UNWIND_TABLE_ROWS_MAX: u32 = 1 << 23;

/// `BPF_F_INNER_MAP`: lets the tables in `UNWIND_TABLES` differ in size.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;

/// Frames the eBPF unwinder follows at most (as many as a stack holds: each
/// frame is one bpf_loop round, checked once by the verifier, so depth costs
/// only the time to walk it).
pub const UNWIND_DEPTH: usize = MAX_STACK_DEPTH;

/// Distinct (module, reason) pairs `STACK_CUTS` counts.
pub const STACK_CUTS_MAX: u32 = 1024;

/// A `STACK_CUTS` key: where an unwind stopped early and why. The start of
/// the executable file mapping holding the last frame reached (0: in no
/// file mapping, e.g. JIT code or the vDSO) with the reason (`StackCut`) in
/// its low bits (mapping starts are page-aligned).
#[inline(always)]
pub const fn stack_cut_key(mapping_start: u64, reason: StackCut) -> u64 {
    (mapping_start & !0xfff) | reason as u64
}

/// Why an unwind stopped before the outermost frame.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackCut {
    /// Code with no unwind table, where the frame-pointer step failed.
    NoTable = 1,
    /// A rule the unwinder does not follow.
    Unsupported = 2,
    /// A saved return address or rbp could not be read.
    Unreadable = 3,
    /// The depth limit.
    Depth = 4,
}

impl StackCut {
    /// Splits a `STACK_CUTS` key into the mapping start and the reason.
    pub fn from_key(key: u64) -> Option<(u64, StackCut)> {
        let reason = match key & 0xfff {
            1 => StackCut::NoTable,
            2 => StackCut::Unsupported,
            3 => StackCut::Unreadable,
            4 => StackCut::Depth,
            _ => return None,
        };
        Some((key & !0xfff, reason))
    }
}

/// Mapping lists `UNWIND_MAPPINGS` holds: distinct address-space layouts
/// traced at once (forked children share their parent's).
pub const UNWIND_MAPPING_SLOTS: u32 = 256;

/// Executable file mappings the eBPF unwinder knows at once.
pub const MAX_EXEC_MAPPINGS: usize = 256;

/// One executable file mapping of the target, for the eBPF unwinder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    /// Runtime addresses [start, end).
    pub start: u64,
    pub end: u64,
    /// Runtime address minus the file's virtual address (what the rows' `pc` use).
    pub bias: u64,
    /// The file's table: its index in `UNWIND_TABLES`, and its rows
    /// (sorted by `pc`). `rows == 0`: no table (frame pointers are followed).
    pub table: u32,
    pub rows: u32,
}

/// A process's executable file mappings (`UNWIND_MAPPINGS[pid]`), sorted by
/// `start`. `count == 0`: no tables loaded, stacks are frame-pointer walks.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecMappings {
    pub count: u64,
    /// Bumped at each rewrite: the rows the unwinder cached by address
    /// (`UNWIND_CACHE`) are keyed with it, so none outlives its mapping.
    pub generation: u64,
    pub entries: [ExecMapping; MAX_EXEC_MAPPINGS],
}

/// Slots of `UNWIND_CACHE`, a direct-mapped cache per CPU of the row in
/// force at a code address: the call sites allocations come from repeat,
/// and a hit is one array lookup where a miss is two binary searches of
/// ~20 steps each (measured: ~590 ns a frame without it, AMD EPYC).
pub const UNWIND_CACHE_SLOTS: u32 = 1 << 13;
const _: () = assert!(UNWIND_CACHE_SLOTS.is_power_of_two());

/// One `UNWIND_CACHE` slot: the key (`unwind_cache_key`; 0: empty) and the
/// row found for it (`cfa` None: no table covers the address).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CachedRow {
    pub key: u64,
    pub row: UnwindRow,
}

/// The `UNWIND_CACHE` slot of a key (Fibonacci hashing: the top bits of
/// key × 2^64/φ, spread well for nearby addresses).
#[inline(always)]
pub const fn unwind_cache_slot(key: u64) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - UNWIND_CACHE_SLOTS.trailing_zeros())) as u32
}

/// An `UNWIND_CACHE` key: a code address (below 2^48 in user space) and the
/// mapping generation it was resolved in (its low 16 bits: a stale entry
/// would have to go unevicted through 65,536 rewrites to be found again).
#[inline(always)]
pub const fn unwind_cache_key(pc: u64, generation: u64) -> u64 {
    (pc & ((1 << 48) - 1)) | (generation << 48)
}

/// `LIVE_ALLOCS` capacity unless the loader overrides it.
pub const DEFAULT_MAX_LIVE_ALLOCS: u32 = 1 << 20;
/// Distinct allocation stacks kept by default (`--max-stacks`).
pub const DEFAULT_MAX_STACKS: u32 = 65536;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are repr(C), made only of integers, with no padding holes
    // that could leak uninitialised bytes (u32/u64 fields laid out in order).
    unsafe impl aya::Pod for super::PythonProcess {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::PendingAlloc {}
    unsafe impl aya::Pod for super::LiveAlloc {}
    unsafe impl aya::Pod for super::StackStats {}
    unsafe impl aya::Pod for super::StackFrames {}
    unsafe impl aya::Pod for super::HeapTotals {}
    unsafe impl aya::Pod for super::UnwindRow {}
    unsafe impl aya::Pod for super::ExecMapping {}
    unsafe impl aya::Pod for super::ExecMappings {}
    unsafe impl aya::Pod for super::TracedProcess {}
    unsafe impl aya::Pod for super::AllocKey {}
    unsafe impl aya::Pod for super::CodeFileKey {}
}
