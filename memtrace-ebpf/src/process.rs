//! The traced processes' life cycle: exec replaces an address space, fork
//! adds a process to the scope (`--follow`), the last thread's exit takes
//! it out.
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    Global,
};
use memtrace_common::{
    event::{ExecEvent, ProcessExitEvent, ProcessForkEvent},
    Counter, HeapTotals, TracedProcess, TRACED_HOLDABLE,
};

use crate::{
    emit::{count, emit, known_process, offsets, traced, traced_process, TRACED},
    filemap::MM_OWNERS,
    mmap_file::{field, KERNEL_OFFSETS},
    python, unwind,
};

/// Set by the loader: children of traced processes are traced too.
#[no_mangle]
static FOLLOW: Global<u32> = Global::new(0);

const SIGCHLD: u32 = 17;

/// `sched:sched_process_exec`: the process's address space was replaced, so
/// userspace drops its mapping model and re-reads /proc/PID/maps.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    emit(task, ExecEvent {});
    0
}

/// `sched_process_fork(parent, child)`, in the parent's context right after
/// the child was made and before it runs: a new process (not a thread) of
/// a traced one is traced from its first instruction. Raw, for the child's
/// `task_struct` (the tracepoint's fields cannot tell a thread from a process).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    if FOLLOW.load() == 0 {
        return 0;
    }
    let Some((task, parent)) = traced_process() else { return 0 };
    let child: *const u8 = ctx.arg(1);
    let off = KERNEL_OFFSETS.load();
    // SAFETY: offsets from this kernel's BTF; the reads are probe reads.
    let ids = unsafe {
        (off.task_tgid != 0)
            .then(|| {
                Some((
                    field::<i32>(child, off.task_pid)? as u32,
                    field::<i32>(child, off.task_tgid)? as u32,
                    field::<i32>(child, off.task_exit_signal)? as u32,
                ))
            })
            .flatten()
    };
    let Some((pid, tgid, exit_signal)) = ids else {
        count(Counter::ForkUnread);
        return 0;
    };
    if pid != tgid {
        return 0; // a new thread of a traced process: traced already
    }
    // ptrace's fork options trace a child whose exit signal is SIGCHLD
    // (fork, vfork, posix_spawn) when its parent is traced: it may be held.
    // SAFETY: map value pointer, valid for this program run.
    let holdable = unsafe { (*parent).flags } & TRACED_HOLDABLE != 0 && exit_signal == SIGCHLD;
    let entry = TracedProcess {
        heap: HeapTotals::default(),
        mm_id: 0,
        flags: if holdable { TRACED_HOLDABLE } else { 0 },
        // SAFETY: as above.
        phase_seq: unsafe { (*parent).phase_seq },
        _pad: 0,
    };
    if TRACED.insert(tgid, entry, 0).is_err() {
        count(Counter::TracedFull);
        return 0;
    }
    // Same code at the same addresses as the parent until it execs.
    unwind::inherit(task.pid, tgid);
    python::inherit(task.pid, tgid);
    emit(task, ProcessForkEvent { child: tgid, _pad: 0 });
    0
}

/// `sched:sched_process_exit`: when the process's last thread exits, its
/// heap totals go to userspace and it leaves the scope.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let Some((task, process)) = known_process() else { return 0 };
    let at = offsets().exit_group_dead;
    // SAFETY: offset from this kernel's tracefs format file.
    let group_dead = if at == 0 {
        task.is_main_thread()
    } else {
        let byte = unsafe { ctx.read_at::<u8>(at as usize).unwrap_or(0) };
        byte != 0
    };
    if !group_dead {
        return 0;
    }
    // SAFETY: map value pointer, copied before the entry is removed.
    let (totals, mm_id) = unsafe { ((*process).heap, (*process).mm_id) };
    emit(task, ProcessExitEvent { totals });
    let _ = MM_OWNERS.remove(mm_id);
    unwind::forget(task.pid);
    python::forget(task.pid);
    let _ = TRACED.remove(task.pid);
    0
}
