//! Phase markers: `memtrace_phase_begin(const char *name)` and
//! `memtrace_phase_end(const char *name)` in the target, read at entry.
use aya_ebpf::{helpers::bpf_probe_read_user_str_bytes, macros::uprobe, programs::ProbeContext};
use memtrace_common::{EVENT_PHASE, PHASE_NAME_MAX};

use crate::emit::{emit, target_tid};

#[inline(always)]
fn marker(ctx: &ProbeContext, begin: u64) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    let mut args = [0u64; 6];
    args[0] = begin;
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
