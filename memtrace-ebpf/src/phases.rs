//! Phases: the marker functions `memtrace_phase_begin(const char *name)`
//! and `memtrace_phase_end(const char *name)` in the target, read at entry;
//! and `--phase-fn` functions, a phase from the entry of their outermost
//! call to its return.
use aya_ebpf::{
    helpers::{
        bpf_probe_read_user_str_bytes,
        generated::{bpf_get_attach_cookie, bpf_send_signal_thread},
    },
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
    EbpfContext, Global,
};
use memtrace_common::{EVENT_HEAP_MARK, EVENT_PHASE, PHASE_NAME_AT_POINTER, PHASE_NAME_MAX};

use crate::{
    emit::{emit, target_tgid, target_tid},
    heap,
};

/// Set by the loader for `--phase-truth` (run mode only): stop the target's
/// main thread at each marker so memtrace, its ptrace tracer, reads the
/// kernel truth at the phase boundary before the marker runs.
#[no_mangle]
static PHASE_STOP: Global<u32> = Global::new(0);

const SIGSTOP: u32 = 19;

/// Open `--phase-fn` calls: (tid << 32 | function index) -> stack pointer
/// at the entry of the outermost call.
#[map]
static PHASE_FN_OPEN: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// A phase boundary: the event, the heap totals at that instant, and the
/// `--phase-truth` stop. `function` is the `--phase-fn` index (0: a marker,
/// whose name is in `name`).
#[inline(always)]
fn boundary(tid: u32, begin: u64, function: u64, name: [u64; 5]) -> u32 {
    // Allocations made from now on carry this marker's sequence number.
    let seq = heap::next_phase_seq();
    let args = [begin | ((seq as u64) << 1) | (function << 40), name[0], name[1], name[2], name[3], name[4]];
    emit(EVENT_PHASE, tid, args);
    let h = heap::snapshot();
    emit(EVENT_HEAP_MARK, tid, [h.allocated_bytes, h.freed_bytes, h.allocs, h.frees, h.unknown_frees, seq as u64]);
    // Only the main thread is ptraced; a SIGSTOP to another thread would stop
    // the whole group behind the tracer's back.
    if PHASE_STOP.load() != 0 && tid == target_tgid() {
        // SAFETY: the helper queues a signal for the current thread; it is
        // delivered (as a ptrace signal-delivery stop) on return to user mode.
        unsafe { bpf_send_signal_thread(SIGSTOP) };
    }
    0
}

#[inline(always)]
fn marker(ctx: &ProbeContext, begin: u64) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    let mut words = [0u64; 5];
    let mut flags = begin;
    if let Some(name) = ctx.arg::<*const u8>(0) {
        let mut buf = [0u8; PHASE_NAME_MAX];
        // SAFETY: reads at most PHASE_NAME_MAX bytes of user memory.
        if unsafe { bpf_probe_read_user_str_bytes(name, &mut buf) }.is_ok() {
            for (i, chunk) in buf.chunks_exact(8).enumerate() {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                words[i] = u64::from_le_bytes(word);
            }
        } else {
            // A page not yet faulted in (BPF may not fault): send the
            // pointer; userspace reads the name from /proc/PID/mem.
            flags |= PHASE_NAME_AT_POINTER;
            words[0] = name as u64;
        }
    }
    boundary(tid, flags, 0, words)
}

#[inline(always)]
fn phase_fn_key<C: EbpfContext>(ctx: &C, tid: u32) -> (u64, u64) {
    // SAFETY: the cookie set at attach: the function's index (1, 2, ...).
    let function = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    (((tid as u64) << 32) | function, function)
}

#[inline(always)]
fn stack_pointer(regs: *mut aya_ebpf::bindings::pt_regs) -> u64 {
    // SAFETY: the kernel hands every uprobe program the user registers.
    unsafe { (*regs).rsp }
}

/// Entry of a `--phase-fn` function. A call below the open one (recursion,
/// or a nested call of the same function) belongs to it; one at or above
/// it means the open call left without returning (longjmp, an exception):
/// that phase ends and a new one begins.
#[uprobe]
pub fn phase_fn_enter(ctx: ProbeContext) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    let (key, function) = phase_fn_key(&ctx, tid);
    let sp = stack_pointer(ctx.regs);
    if let Some(open) = PHASE_FN_OPEN.get_ptr(&key) {
        // SAFETY: map value pointer, valid for this program run.
        if sp < unsafe { *open } {
            return 0;
        }
        boundary(tid, 0, function, [0; 5]);
    }
    let _ = PHASE_FN_OPEN.insert(&key, &sp, 0);
    boundary(tid, 1, function, [0; 5])
}

/// Return of a `--phase-fn` function: the outermost call's return (stack
/// pointer 8 above its entry's) ends the phase; deeper returns do not.
#[uretprobe]
pub fn phase_fn_exit(ctx: RetProbeContext) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    let (key, function) = phase_fn_key(&ctx, tid);
    let Some(open) = PHASE_FN_OPEN.get_ptr(&key) else { return 0 };
    // SAFETY: map value pointer, copied before the entry is removed.
    if stack_pointer(ctx.regs) < unsafe { *open }.wrapping_add(8) {
        return 0;
    }
    let _ = PHASE_FN_OPEN.remove(&key);
    boundary(tid, 0, function, [0; 5])
}

#[uprobe]
pub fn phase_begin(ctx: ProbeContext) -> u32 {
    marker(&ctx, 1)
}

#[uprobe]
pub fn phase_end(ctx: ProbeContext) -> u32 {
    marker(&ctx, 0)
}
