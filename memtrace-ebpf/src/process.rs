//! Process life-cycle events of the target.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::event::ExecEvent;

use crate::emit::{emit, target_tid};

/// `sched:sched_process_exec`: the target's address space was replaced, so
/// userspace drops its mapping model and re-reads /proc/PID/maps.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    emit(tid, ExecEvent {});
    0
}
