//! Types shared by memtrace's eBPF programs and its userspace controller.
//!
//! Everything here is `#[repr(C)]` plain data: the eBPF side writes these bytes
//! into maps and the ring buffer, userspace reads the same bytes back.
#![no_std]

/// One record in the `EVENTS` ring buffer. A fixed 64-byte layout keeps the
/// eBPF side trivial (one `reserve`, no variable-length records); the meaning
/// of `args` depends on `kind` (see the `EVENT_*` constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    pub kind: u32,
    /// Kernel thread id (userspace "TID") of the thread that caused the event.
    pub tid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub args: [u64; 6],
}

/// A finished `mmap`: args = [returned address or -errno, len, prot, flags, fd, offset].
pub const EVENT_MMAP: u32 = 1;
/// A finished `munmap`: args = [addr, len, return value].
pub const EVENT_MUNMAP: u32 = 2;
/// A user-mode page fault: args = [faulting address, instruction pointer, x86 error code].
pub const EVENT_PAGE_FAULT: u32 = 3;
/// The target called `execve` successfully: its address space was replaced. args unused.
pub const EVENT_EXEC: u32 = 4;

/// `munmap` or `madvise` entered: args = [addr, len, RANGE_OP_*, madvise
/// behavior]. Marks the thread's RSS changes until the matching exit event
/// (EVENT_MUNMAP or EVENT_MADVISE) as belonging to that range.
pub const EVENT_RANGE_ENTER: u32 = 5;
pub const RANGE_OP_MUNMAP: u64 = 0;
pub const RANGE_OP_MADVISE: u64 = 1;
pub const RANGE_OP_MREMAP: u64 = 2;
/// The file behind a new mapping, read in the kernel from the task's fd table
/// at `sys_exit_mmap`, just before EVENT_MMAP: args = [mapped address, s_dev, inode].
pub const EVENT_MMAP_FILE: u32 = 14;
/// A finished `mremap`: args = [old addr, old len, new len, flags, result (new addr or -errno)].
pub const EVENT_MREMAP: u32 = 13;
/// A phase boundary: args[0] bit 0 is 1 for a begin
/// (`memtrace_phase_begin`, or a `--phase-fn` function's entry), 0 for an
/// end; args[0] >> 40 is the `--phase-fn` function's index (0: a marker);
/// (args[0] >> 1) & 0xffff_ffff is the marker's sequence number (1, 2, ...: the `phase_seq` that allocations made
/// after it carry); args[1..6] hold the
/// NUL-terminated name (at most PHASE_NAME_MAX bytes including the NUL).
pub const EVENT_PHASE: u32 = 12;
pub const PHASE_NAME_MAX: usize = 40;
/// In EVENT_PHASE args[0]: the name could not be read in the kernel (its
/// page was not resident); args[1] is its address in the target instead.
pub const PHASE_NAME_AT_POINTER: u64 = 1 << 36;
/// Set in the sequence numbers of phase boundaries made from userspace
/// (`memtrace mark`), which cannot take the eBPF side's numbers atomically:
/// the two never share a number.
pub const PHASE_SEQ_USER: u32 = 1 << 31;
/// The heap totals right after a phase marker (same sequence number):
/// args = [allocated bytes, freed bytes, allocations, frees, unknown frees, sequence number].
pub const EVENT_HEAP_MARK: u32 = 15;
/// A finished `brk`: args = [the program break after the call (the kernel
/// returns the old break when it refuses)].
pub const EVENT_BRK: u32 = 16;
/// `--events` only: an allocation recorded in the live map: args =
/// [address, size, stack id, phase sequence].
pub const EVENT_ALLOC: u32 = 17;
/// `--events` only: a free (or realloc's release) of a live allocation:
/// args = [address, size, stack id]; of an unknown address: args = [address, 0, 0].
pub const EVENT_FREE: u32 = 18;
/// A finished `madvise`: args = [addr, len, behavior, return value].
pub const EVENT_MADVISE: u32 = 11;
/// `kmem:rss_stat` of the target's mm: args = [member (0 file, 1 anon, 2 swap,
/// 3 shmem), counter value in bytes, curr (1 when the target's own thread
/// changed it), mm_id].
pub const EVENT_RSS_STAT: u32 = 6;
/// `filemap:mm_filemap_fault` (page-cache lookup on a fault): args = [s_dev, ino, index].
pub const EVENT_FILEMAP_FAULT: u32 = 7;
/// `filemap:mm_filemap_map_pages` (fault-around): args = [s_dev, ino, first index, last index].
pub const EVENT_FILEMAP_MAP_PAGES: u32 = 8;
/// `filemap:mm_filemap_add_to_page_cache` in the target's context (a read
/// from disk): args = [s_dev, ino, index, folio order].
pub const EVENT_PAGE_CACHE_ADD: u32 = 9;
/// `filemap:mm_filemap_delete_from_page_cache` of a watched file (any
/// context: reclaim runs elsewhere): args = [s_dev, ino, index, folio order].
pub const EVENT_PAGE_CACHE_DELETE: u32 = 10;

/// Key of the `WATCHED_FILES` map: a file the target maps, as the kernel's
/// tracepoints name it (s_dev is the kernel's internal dev_t: major << 20 | minor).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub ino: u64,
    pub s_dev: u32,
    pub _pad: u32,
}

/// Indices into the per-CPU `COUNTERS` array; userspace sums the CPUs.
pub const COUNTER_PAGE_FAULTS: u32 = 0;
pub const COUNTER_MMAP_CALLS: u32 = 1;
pub const COUNTER_MUNMAP_CALLS: u32 = 2;
/// Events lost because the ring buffer was full when the program tried to reserve.
pub const COUNTER_RINGBUF_DROPS: u32 = 3;
/// Syscalls whose entry arguments could not be stashed (the per-thread map was full),
/// so their exit produced no event.
pub const COUNTER_PENDING_FULL: u32 = 4;
pub const COUNTER_MADVISE_CALLS: u32 = 5;
pub const COUNTER_MREMAP_CALLS: u32 = 6;
/// Mapped files the kernel side could not add to WATCHED_FILES (map full):
/// their evictions are not seen.
pub const COUNTER_WATCH_FULL: u32 = 7;
pub const NUM_COUNTERS: u32 = 8;

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
}

/// Allocator entry points, as recorded between a call's entry and return.
pub const ALLOC_MALLOC: u32 = 1;
pub const ALLOC_CALLOC: u32 = 2;
pub const ALLOC_REALLOC: u32 = 3;
/// `aligned_alloc`, `memalign` (size in the second argument).
pub const ALLOC_MEMALIGN: u32 = 4;
pub const ALLOC_POSIX_MEMALIGN: u32 = 5;
/// `valloc`, `pvalloc`.
pub const ALLOC_VALLOC: u32 = 6;

/// An allocation call in progress on one thread (`ALLOC_PENDING`, by tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingAlloc {
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
    /// Phase markers seen before it was made (see EVENT_PHASE).
    pub phase_seq: u32,
    pub _pad: u32,
}

/// Frames kept per allocation stack.
pub const MAX_STACK_DEPTH: usize = 127;

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
}

/// Heap totals (`HEAP_TOTALS[0]`), updated atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HeapTotals {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
    /// free() of an address memtrace never saw allocated (made before it
    /// attached, or dropped): never subtracted from the live heap.
    pub unknown_frees: u64,
    /// Allocations not recorded because LIVE_ALLOCS was full.
    pub dropped_allocs: u64,
    /// Allocations whose stack could not be taken (STACKS full, no user stack).
    pub lost_stacks: u64,
    /// An address allocated again while memtrace still had it live: the
    /// free in between was missed (an unprobed path); the old one is retired.
    pub missed_frees: u64,
    /// Allocation calls that returned NULL (or an error).
    pub failed_allocs: u64,
    /// Allocation calls whose entry could not be recorded (ALLOC_PENDING full).
    pub lost_calls: u64,
    /// Allocation calls whose return was never seen: the thread's next call
    /// found them still open (a longjmp out of the allocator, or the kernel's
    /// limit of 64 pending return probes per thread, reached under deep
    /// recursion of a `--phase-fn` function). Their allocations are not counted.
    pub abandoned_calls: u64,
}

/// `LIVE_ALLOCS` capacity unless the loader overrides it.
pub const DEFAULT_MAX_LIVE_ALLOCS: u32 = 1 << 20;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), made only of integers, with no padding holes
    // that could leak uninitialised bytes (u32/u64 fields laid out in order).
    unsafe impl aya::Pod for super::RawEvent {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::PendingAlloc {}
    unsafe impl aya::Pod for super::LiveAlloc {}
    unsafe impl aya::Pod for super::StackStats {}
    unsafe impl aya::Pod for super::StackFrames {}
    unsafe impl aya::Pod for super::HeapTotals {}
}
