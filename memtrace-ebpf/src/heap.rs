//! Allocator probes: the malloc family's entries (uprobes) and returns
//! (one uretprobe program), and free. Only aggregates live here: a map of
//! live allocations (address -> size, stack, time, phase), per-stack totals
//! and heap totals. Nothing is streamed per call unless `--events` asks for
//! it (HEAP_EVENTS).
use core::{
    ffi::c_void,
    intrinsics::{atomic_xadd, AtomicOrdering},
};

use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_stack},
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext, Global,
};
use memtrace_common::{
    event::{AllocEvent, FreeEvent},
    AllocKey, AllocKind, HeapTotals, LiveAlloc, PendingAlloc, StackCut, StackFrames, StackStats, TracedProcess,
    DEFAULT_MAX_LIVE_ALLOCS, DEFAULT_MAX_STACKS, MAX_STACK_DEPTH,
};

use crate::{
    emit::{emit, traced_process, Task},
    python,
    regs::{instruction_pointer, stack_pointer, RETURN_SP_OFFSET},
    unwind,
};

/// Set by the loader for `--events`: every recorded allocation and every
/// free also goes to the ring buffer (costs a reserve per call).
#[no_mangle]
static HEAP_EVENTS: Global<u32> = Global::new(0);

#[inline(always)]
fn streaming() -> bool {
    HEAP_EVENTS.load() != 0
}

const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_USER_STACK: u64 = 1 << 8;

/// Calls between entry and return, by thread id.
#[map]
static ALLOC_PENDING: HashMap<u32, PendingAlloc> = HashMap::with_max_entries(16384, 0);

/// Live allocations by process and address. Not preallocated: memory grows with use.
#[map]
static LIVE_ALLOCS: HashMap<AllocKey, LiveAlloc> =
    HashMap::with_max_entries(DEFAULT_MAX_LIVE_ALLOCS, BPF_F_NO_PREALLOC);

/// User stacks of allocation sites (frame-pointer walks), keyed by a hash
/// of their frames. Not the kernel's stack-trace map: that one keys stacks
/// by hash bucket, so two stacks in one bucket lose one of them (it lost
/// 130 of 5,215 allocations' stacks on the workload); a 64-bit hash of the
/// frames does not collide in practice, and memory grows with use.
#[map]
static STACKS: HashMap<u64, StackFrames> = HashMap::with_max_entries(DEFAULT_MAX_STACKS, BPF_F_NO_PREALLOC);

/// Per-CPU scratch space for one stack (too big for the BPF stack).
#[map]
pub(crate) static STACK_SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(1, 0);

#[map]
static STACK_STATS: HashMap<u64, StackStats> = HashMap::with_max_entries(DEFAULT_MAX_STACKS + 1, 0);

/// The scope's heap totals (every traced process's); each process's own
/// are in its TRACED entry.
#[map]
static HEAP_TOTALS: Array<HeapTotals> = Array::with_max_entries(1, 0);

/// The calling process: its thread and pid, and its TRACED entry.
#[derive(Clone, Copy)]
struct Caller {
    task: Task,
    process: *mut TracedProcess,
}

#[inline(always)]
fn caller() -> Option<Caller> {
    traced_process().map(|(task, process)| Caller { task, process })
}

#[inline(always)]
fn add(field: *mut u64, v: u64) {
    // SAFETY: `field` points into a map value, which lives as long as the
    // map; concurrent updates from other CPUs go through the same atomics.
    // (The BPF target has no AtomicU64::fetch_add; with the result unused
    // this intrinsic compiles to the BPF atomic add.)
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

#[inline(always)]
fn totals() -> Option<*mut HeapTotals> {
    HEAP_TOTALS.get_ptr_mut(0)
}

/// Adds to one heap total, chosen by `pick`: the scope's and the process's.
#[inline(always)]
fn add_to(c: Caller, pick: fn(*mut HeapTotals) -> *mut u64, v: u64) {
    if let Some(t) = totals() {
        add(pick(t), v);
    }
    // SAFETY: the TRACED entry's pointer, valid for this program run.
    add(pick(unsafe { &raw mut (*c.process).heap }), v);
}

#[inline(always)]
fn bump(c: Caller, pick: fn(*mut HeapTotals) -> *mut u64) {
    add_to(c, pick, 1);
}

/// Takes an allocation's user stack; returns its key in STACKS (0: none).
/// Stacks cut short are counted in the process's heap totals.
#[inline(always)]
fn user_stack(c: Caller, ctx: &RetProbeContext) -> u64 {
    capture_stack::<false>(c.task.pid, ctx.regs, ctx.as_ptr(), |cut| match cut {
        StackCut::NoTable => bump(c, |t| unsafe { &raw mut (*t).stacks_cut_no_table }),
        StackCut::Unsupported => bump(c, |t| unsafe { &raw mut (*t).stacks_cut_unsupported }),
        StackCut::Unreadable => bump(c, |t| unsafe { &raw mut (*t).stacks_cut_unreadable }),
        StackCut::Depth => bump(c, |t| unsafe { &raw mut (*t).stacks_cut_depth }),
    })
}

/// Takes the user stack of process `pid` whose registers are `regs` (`ctx`
/// the program's context, for the kernel's frame-pointer walk); returns
/// its key in STACKS (0: none). `on_cut` hears why a walk stopped short;
/// `REPAIR` as for `unwind::walk`.
#[inline(always)]
pub(crate) fn capture_stack<const REPAIR: bool>(
    pid: u32,
    regs: *const pt_regs,
    ctx: *mut c_void,
    on_cut: impl Fn(StackCut),
) -> u64 {
    let Some(scratch) = STACK_SCRATCH.get_ptr_mut(0) else { return 0 };
    // With the target's unwind tables loaded, unwind with them (code built
    // without frame pointers); else the kernel's frame-pointer walk.
    let len = match unwind::walk::<REPAIR>(pid, regs) {
        Some((len, cut)) => {
            if let Some(cut) = cut {
                on_cut(cut);
            }
            len as u64
        }
        None => {
            // SAFETY: the helper writes at most the size given into the per-CPU buffer.
            let n = unsafe {
                bpf_get_stack(ctx, (&raw mut (*scratch).ips).cast(), (MAX_STACK_DEPTH * 8) as u32, BPF_F_USER_STACK)
            };
            if n <= 0 {
                return 0;
            }
            (n as u64 / 8).min(MAX_STACK_DEPTH as u64)
        }
    };
    // A CPython process: the interpreter's frames follow the native ones.
    let len = python::append(pid, scratch, len);
    if len == 0 {
        return 0;
    }
    // FNV-1a over the process and the frames (the buffer past `len` holds
    // stale frames): the same frames in two processes are two stacks, each
    // symbolized with its own process's mappings and counted for it.
    let mut hash: u64 = (0xcbf2_9ce4_8422_2325 ^ pid as u64).wrapping_mul(0x0000_0100_0000_01b3);
    for i in 0..MAX_STACK_DEPTH {
        if i as u64 >= len {
            break;
        }
        // SAFETY: i < MAX_STACK_DEPTH, inside the buffer.
        let ip = unsafe { (*scratch).ips[i] };
        hash = (hash ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hash = hash.max(1); // 0 means "no stack"
    if STACKS.get_ptr(hash).is_none() {
        unsafe { (*scratch).len = len };
        // SAFETY: the scratch entry is a valid map value for the whole run.
        // By reference: clippy's `*scratch` would copy the 1 KiB of frames
        // onto the 512-byte BPF stack (the linker rejects the program).
        #[allow(clippy::needless_borrows_for_generic_args)]
        let inserted = STACKS.insert(hash, unsafe { &*scratch }, BPF_NOEXIST as u64);
        if inserted.is_err() && STACKS.get_ptr(hash).is_none() {
            return 0; // STACKS full
        }
    }
    hash
}

#[inline(always)]
fn stack_stats(pid: u32, stack_id: u64) -> Option<*mut StackStats> {
    if let Some(s) = STACK_STATS.get_ptr_mut(stack_id) {
        return Some(s);
    }
    let _ = STACK_STATS.insert(stack_id, StackStats { pid, ..StackStats::default() }, BPF_NOEXIST as u64);
    STACK_STATS.get_ptr_mut(stack_id)
}

/// Records an allocation call's entry, unless it runs inside another one.
#[inline(always)]
fn enter(ctx: &ProbeContext, kind: AllocKind, size: u64, arg: u64) -> u32 {
    let Some(c) = caller() else { return 0 };
    let tid = c.task.tid;
    let sp = stack_pointer(ctx.regs);
    let ip = instruction_pointer(ctx.regs);
    if let Some(outer) = ALLOC_PENDING.get_ptr(tid) {
        // SAFETY: map value pointer, valid for this program run.
        let (outer_sp, outer_ip) = unsafe { ((*outer).sp, (*outer).ip) };
        if sp < outer_sp {
            return 0; // nested in an allocator call that will account for it
        }
        // At the same stack pointer in another function: the open call
        // tail-called this one (`jmp malloc`), which returns for both; it
        // replaces the record. Anything else: the open call's return went
        // unseen (longjmp, the kernel's return-probe limit).
        if sp > outer_sp || ip == outer_ip {
            bump(c, |t| unsafe { &raw mut (*t).abandoned_calls });
        }
    }
    let pending = PendingAlloc { kind: kind as u32, _pad: 0, size, arg, sp, ip };
    if ALLOC_PENDING.insert(tid, pending, 0).is_err() {
        bump(c, |t| unsafe { &raw mut (*t).lost_calls });
    }
    0
}

/// Takes `ptr` out of the live map. Returns false when it was not there.
#[inline(always)]
fn release(c: Caller, ptr: u64) -> bool {
    let key = AllocKey { address: ptr, pid: c.task.pid, _pad: 0 };
    let Some(live) = LIVE_ALLOCS.get_ptr(key) else { return false };
    // SAFETY: map value pointer, copied before the entry is removed.
    let live = unsafe { *live };
    if LIVE_ALLOCS.remove(key).is_err() {
        return false; // another thread took it first
    }
    if streaming() {
        emit(c.task, FreeEvent { address: ptr, size: live.size, stack_id: live.stack_id });
    }
    bump(c, |t| unsafe { &raw mut (*t).frees });
    add_to(c, |t| unsafe { &raw mut (*t).freed_bytes }, live.size);
    if let Some(s) = stack_stats(c.task.pid, live.stack_id) {
        unsafe {
            add(&raw mut (*s).live_count, u64::MAX); // wrapping add of -1
            add(&raw mut (*s).live_bytes, live.size.wrapping_neg());
            add(&raw mut (*s).freed_bytes, live.size);
        }
    }
    true
}

#[inline(always)]
fn record(c: Caller, ctx: &RetProbeContext, ptr: u64, size: u64) {
    // Still live here means its free went by unseen: retire the old block.
    if release(c, ptr) {
        bump(c, |t| unsafe { &raw mut (*t).missed_frees });
    }
    // Taken at the return: the frame-pointer walk then starts in the caller
    // (at malloc's entry it would skip the caller's own frame).
    let stack_id = user_stack(c, ctx);
    if stack_id == 0 {
        bump(c, |t| unsafe { &raw mut (*t).lost_stacks });
    }
    // SAFETY: the TRACED entry's pointer, valid for this program run.
    let phase_seq = unsafe { (*c.process).phase_seq };
    let live = LiveAlloc { size, ts_ns: unsafe { bpf_ktime_get_ns() }, stack_id, phase_seq, _pad: 0 };
    let key = AllocKey { address: ptr, pid: c.task.pid, _pad: 0 };
    if LIVE_ALLOCS.insert(key, live, 0).is_err() {
        // Not counted as allocated either: its free will be unknown, and
        // live = allocated - freed stays right.
        bump(c, |t| unsafe { &raw mut (*t).dropped_allocs });
        return;
    }
    bump(c, |t| unsafe { &raw mut (*t).allocs });
    add_to(c, |t| unsafe { &raw mut (*t).allocated_bytes }, size);
    if streaming() {
        emit(c.task, AllocEvent { address: ptr, size, stack_id, phase_seq, _pad: 0 });
    }
    if let Some(s) = stack_stats(c.task.pid, stack_id) {
        unsafe {
            add(&raw mut (*s).live_count, 1);
            add(&raw mut (*s).live_bytes, size);
            add(&raw mut (*s).allocs, 1);
            add(&raw mut (*s).allocated_bytes, size);
        }
    }
}

#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ctx, AllocKind::Malloc, size, 0)
}

#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    let (n, size): (u64, u64) = (ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0));
    // Wrapping: an overflow check needs 128-bit arithmetic, which BPF lacks;
    // and a calloc whose product overflows fails (NULL), so it is never recorded.
    enter(&ctx, AllocKind::Calloc, n.wrapping_mul(size), 0)
}

#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    let (old, size): (u64, u64) = (ctx.arg(0).unwrap_or(0), ctx.arg(1).unwrap_or(0));
    enter(&ctx, AllocKind::Realloc, size, old)
}

/// `aligned_alloc(align, size)`, `memalign(align, size)`.
#[uprobe]
pub fn memalign_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    enter(&ctx, AllocKind::Memalign, size, 0)
}

/// `posix_memalign(void **memptr, size_t align, size_t size)`.
#[uprobe]
pub fn posix_memalign_enter(ctx: ProbeContext) -> u32 {
    let (memptr, size): (u64, u64) = (ctx.arg(0).unwrap_or(0), ctx.arg(2).unwrap_or(0));
    enter(&ctx, AllocKind::PosixMemalign, size, memptr)
}

/// `valloc(size)`, `pvalloc(size)`.
#[uprobe]
pub fn valloc_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ctx, AllocKind::Valloc, size, 0)
}

/// The return of every allocation function.
#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let Some(c) = caller() else { return 0 };
    let tid = c.task.tid;
    let Some(pending) = ALLOC_PENDING.get_ptr(tid) else { return 0 };
    // SAFETY: map value pointer, copied before the entry is removed.
    let p = unsafe { *pending };
    // After the return the stack pointer is RETURN_SP_OFFSET above the
    // entry's: a lower one is a nested call returning.
    if stack_pointer(ctx.regs) < p.sp.wrapping_add(RETURN_SP_OFFSET) {
        return 0;
    }
    let _ = ALLOC_PENDING.remove(tid);
    let ret: u64 = ctx.ret();
    match AllocKind::from_u32(p.kind) {
        Some(AllocKind::PosixMemalign) => {
            if ret as u32 != 0 {
                bump(c, |t| unsafe { &raw mut (*t).failed_allocs });
                return 0;
            }
            // SAFETY: reads the pointer the call stored at `memptr`.
            match unsafe { bpf_probe_read_user(p.arg as *const u64) } {
                Ok(ptr) if ptr != 0 => record(c, &ctx, ptr, p.size),
                _ => bump(c, |t| unsafe { &raw mut (*t).failed_allocs }),
            }
        }
        // realloc(NULL, n) is malloc(n); a failed realloc leaves p alive.
        Some(AllocKind::Realloc) if ret != 0 => {
            // The old block is gone (moved) or renewed in place (resized).
            if p.arg != 0 && !release(c, p.arg) {
                unknown_free(c, p.arg);
            }
            record(c, &ctx, ret, p.size);
        }
        // realloc(p, 0) returning NULL freed p (glibc). Its free of p, made
        // inside this call, was left to this return (see free_enter), so p
        // is released here; otherwise it stayed live and was later counted
        // as a missed free and a false leak.
        Some(AllocKind::Realloc) if p.size == 0 => {
            if p.arg != 0 && !release(c, p.arg) {
                unknown_free(c, p.arg);
            }
        }
        _ if ret != 0 => record(c, &ctx, ret, p.size),
        _ => bump(c, |t| unsafe { &raw mut (*t).failed_allocs }),
    }
    0
}

/// Counts a free of an address memtrace never saw allocated.
#[inline(always)]
fn unknown_free(c: Caller, ptr: u64) {
    bump(c, |t| unsafe { &raw mut (*t).unknown_frees });
    if streaming() {
        emit(c.task, FreeEvent { address: ptr, size: 0, stack_id: 0 });
    }
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let Some(c) = caller() else { return 0 };
    let tid = c.task.tid;
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    if ptr == 0 {
        return 0;
    }
    if let Some(outer) = ALLOC_PENDING.get_ptr(tid) {
        // SAFETY: map value pointer, valid for this program run.
        let outer = unsafe { *outer };
        // A realloc that moves its block frees the old one through the
        // exported free (mimalloc's mi_realloc calls mi_free): the realloc's
        // return accounts for it.
        if outer.kind == AllocKind::Realloc as u32 && outer.arg == ptr && stack_pointer(ctx.regs) < outer.sp {
            return 0;
        }
    }
    if !release(c, ptr) {
        if called_from_allocator(&ctx) {
            bump(c, |t| unsafe { &raw mut (*t).internal_frees });
        } else {
            unknown_free(c, ptr);
        }
    }
    0
}

/// Whether the free's caller (the return address at the stack pointer: the
/// probe sits before anything moves it) is the allocator library's own
/// code. The attach cookie says where that code is relative to the probe:
/// low 32 bits, the probe's distance from the start of its executable
/// segment; high 32 bits, the segment's length (0: not known).
#[inline(always)]
fn called_from_allocator(ctx: &ProbeContext) -> bool {
    // SAFETY: reads the cookie userspace attached this probe with.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let (offset, len) = (cookie & 0xffff_ffff, cookie >> 32);
    // SAFETY: reads 8 bytes of the target's stack; a fault returns an error.
    let Ok(caller) = (unsafe { bpf_probe_read_user(stack_pointer(ctx.regs) as *const u64) }) else {
        return false;
    };
    let start = instruction_pointer(ctx.regs).wrapping_sub(offset);
    len != 0 && caller.wrapping_sub(start) < len
}

/// The heap totals now (for the phase marker's heap snapshot).
#[inline(always)]
pub fn snapshot() -> HeapTotals {
    match HEAP_TOTALS.get(0) {
        Some(t) => *t,
        None => HeapTotals::default(),
    }
}
