//! Phase markers: `memtrace_phase_begin(const char *name)` and
//! `memtrace_phase_end(const char *name)` in the target, read at entry.
use aya_ebpf::{
    helpers::{bpf_probe_read_user_str_bytes, generated::bpf_send_signal_thread},
    macros::uprobe,
    programs::ProbeContext,
    Global,
};
use memtrace_common::{EVENT_HEAP_MARK, EVENT_PHASE, PHASE_NAME_MAX};

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

#[inline(always)]
fn marker(ctx: &ProbeContext, begin: u64) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    // Allocations made from now on carry this marker's sequence number.
    let seq = match heap::PHASE_SEQ.get_ptr_mut(0) {
        Some(p) => unsafe {
            // Not atomic: two threads marking at the same instant could share a number.
            *p += 1;
            *p
        },
        None => 0,
    };
    let mut args = [0u64; 6];
    args[0] = begin | ((seq as u64) << 1);
    if let Some(name) = ctx.arg::<*const u8>(0) {
        let mut buf = [0u8; PHASE_NAME_MAX];
        // SAFETY: reads at most PHASE_NAME_MAX bytes of user memory; a bad
        // pointer leaves the name empty.
        if unsafe { bpf_probe_read_user_str_bytes(name, &mut buf) }.is_ok() {
            for (i, chunk) in buf.chunks_exact(8).enumerate() {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                args[1 + i] = u64::from_le_bytes(word);
            }
        }
    }
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

#[uprobe]
pub fn phase_begin(ctx: ProbeContext) -> u32 {
    marker(&ctx, 1)
}

#[uprobe]
pub fn phase_end(ctx: ProbeContext) -> u32 {
    marker(&ctx, 0)
}
