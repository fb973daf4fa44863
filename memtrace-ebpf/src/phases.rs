//! Phases: the marker functions `memtrace_phase_begin(const char *name)`
//! and `memtrace_phase_end(const char *name)` in the target, read at entry;
//! and `--phase-fn` functions, a phase from the entry of their outermost
//! call to its return.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_probe_read_user_str_bytes, generated::bpf_get_attach_cookie},
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use memtrace_common::{
    event::{HeapMarkEvent, PhaseEvent},
    TracedProcess, PHASE_NAME_MAX, PHASE_SEQ_USER,
};

use crate::{
    emit::{emit, emit_in_place, emit_waking, traced_process, Task},
    heap,
    hold::{hold, Hold},
    regs::{stack_pointer, RETURN_SP_OFFSET},
};

/// Open `--phase-fn` calls: (tid << 32 | function index) -> stack pointer
/// at the entry of the outermost call.
#[map]
static PHASE_FN_OPEN: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Phase boundaries the eBPF side has numbered so far: each takes the next
/// number with an atomic fetch-and-add, so threads marking at the same
/// instant get distinct numbers. (`memtrace mark` numbers its own, with
/// PHASE_SEQ_USER set, and never writes here.)
#[map]
static PHASE_SEQ: Array<u64> = Array::with_max_entries(1, 0);

/// Takes the next phase boundary number (1, 2, ...) for a boundary in
/// `process`: its allocations from now on carry it.
#[inline(always)]
fn next_phase_seq(process: *mut TracedProcess) -> u32 {
    let Some(counter) = PHASE_SEQ.get_ptr_mut(0) else { return 0 };
    // SAFETY: map value pointer, valid for this program run. This must be
    // BPF's atomic fetch-and-add (the object is built for BPF cpu v3, see
    // memtrace/build.rs), and SeqCst it must be: for a Relaxed one, the
    // nightly's LLVM emits the plain atomic add, whose register keeps the
    // operand, and every marker got number 1. (llvm-objdump shows
    // `atomic_fetch_add` here.)
    let previous = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
    let seq = (previous as u32).wrapping_add(1) & !PHASE_SEQ_USER;
    // SAFETY: the TRACED entry's pointer, valid for this program run. Last
    // writer wins: of two boundaries at one instant in two threads,
    // allocations after both carry one of them.
    unsafe { (*process).phase_seq = seq };
    seq
}

/// A boundary with no name (a `--phase-fn` function's, named by its index).
#[inline(always)]
fn unnamed(begin: bool, function: u32) -> PhaseEvent {
    PhaseEvent { name_ptr: 0, seq: 0, function, begin: begin as u32, name_at_pointer: 0, name: [0; PHASE_NAME_MAX] }
}

/// A phase boundary: the event (its sequence number is taken here), the
/// heap totals at that instant, and the `--phase-truth` stop.
#[inline(always)]
fn boundary(task: Task, process: *mut TracedProcess, mut event: PhaseEvent) -> u32 {
    // Allocations made from now on carry this marker's sequence number.
    let seq = next_phase_seq(process);
    event.seq = seq;
    if event.name_at_pointer != 0 {
        emit_waking(task, event); // the name is read from /proc/PID/mem: soon
    } else {
        emit(task, event);
    }
    // Written in the ring buffer itself: two totals do not fit on the
    // stack beside the phase event.
    emit_in_place(task, |mark: &mut HeapMarkEvent| {
        mark.totals = heap::snapshot();
        // SAFETY: as in next_phase_seq.
        mark.process = unsafe { (*process).heap };
        mark.seq = seq;
        mark._pad = 0;
        true
    });
    // `--phase-truth`: memtrace reads the kernel truth before the marker runs.
    hold(task, Hold::PhaseMarker);
    0
}

#[inline(always)]
fn marker(ctx: &ProbeContext, begin: bool) -> u32 {
    let Some((task, process)) = traced_process() else { return 0 };
    let mut event = unnamed(begin, 0);
    if let Some(name) = ctx.arg::<*const u8>(0) {
        // SAFETY: reads at most PHASE_NAME_MAX bytes of user memory.
        if unsafe { bpf_probe_read_user_str_bytes(name, &mut event.name) }.is_err() {
            // A page not yet faulted in (BPF may not fault): send the
            // pointer; userspace reads the name from /proc/PID/mem.
            event.name_at_pointer = 1;
            event.name_ptr = name as u64;
        }
    }
    boundary(task, process, event)
}

#[inline(always)]
fn phase_fn_key<C: EbpfContext>(ctx: &C, tid: u32) -> (u64, u32) {
    // SAFETY: the cookie set at attach: the function's index (1, 2, ...).
    let function = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    (((tid as u64) << 32) | function, function as u32)
}

/// Entry of a `--phase-fn` function. A call below the open one (recursion,
/// or a nested call of the same function) belongs to it; one at or above
/// it means the open call left without returning (longjmp, an exception):
/// that phase ends and a new one begins.
#[uprobe]
pub fn phase_fn_enter(ctx: ProbeContext) -> u32 {
    let Some((task, process)) = traced_process() else { return 0 };
    let (key, function) = phase_fn_key(&ctx, task.tid);
    let sp = stack_pointer(ctx.regs);
    if let Some(open) = PHASE_FN_OPEN.get_ptr(key) {
        // SAFETY: map value pointer, valid for this program run.
        if sp < unsafe { *open } {
            return 0;
        }
        boundary(task, process, unnamed(false, function));
    }
    let _ = PHASE_FN_OPEN.insert(key, sp, 0);
    boundary(task, process, unnamed(true, function))
}

/// Return of a `--phase-fn` function: the outermost call's return (stack
/// pointer RETURN_SP_OFFSET above its entry's) ends the phase; deeper
/// returns do not.
#[uretprobe]
pub fn phase_fn_exit(ctx: RetProbeContext) -> u32 {
    let Some((task, process)) = traced_process() else { return 0 };
    let (key, function) = phase_fn_key(&ctx, task.tid);
    let Some(open) = PHASE_FN_OPEN.get_ptr(key) else { return 0 };
    // SAFETY: map value pointer, copied before the entry is removed.
    if stack_pointer(ctx.regs) < unsafe { *open }.wrapping_add(RETURN_SP_OFFSET) {
        return 0;
    }
    let _ = PHASE_FN_OPEN.remove(key);
    boundary(task, process, unnamed(false, function))
}

#[uprobe]
pub fn phase_begin(ctx: ProbeContext) -> u32 {
    marker(&ctx, true)
}

#[uprobe]
pub fn phase_end(ctx: ProbeContext) -> u32 {
    marker(&ctx, false)
}
