//! Holding the target (run mode): the main thread is stopped with a SIGSTOP
//! its ptrace tracer, memtrace, sees and swallows, so memtrace can act
//! before the target's next instruction: read the kernel truth at a phase
//! marker (`--phase-truth`), or load the unwind table of code just mapped.
use aya_ebpf::{helpers::generated::bpf_send_signal_thread, Global};

use crate::emit::Task;

/// Set by the loader for `--phase-truth`: hold at each phase marker.
#[no_mangle]
static PHASE_STOP: Global<u32> = Global::new(0);

/// Set by the loader for `--unwind dwarf` in run mode: hold after each
/// mapping of a file's code, until its unwind table is loaded.
#[no_mangle]
static CODE_STOP: Global<u32> = Global::new(0);

const SIGSTOP: u32 = 19;

/// Why the target is held.
#[derive(Clone, Copy)]
pub enum Hold {
    PhaseMarker,
    CodeMapped,
}

/// Holds the traced process's main thread on its return to user mode, if
/// the loader asked for holds of this kind. Only main threads are ptraced:
/// a SIGSTOP to another thread would stop the whole group behind the
/// tracer's back.
#[inline(always)]
pub fn hold(task: Task, why: Hold) {
    let wanted = match why {
        Hold::PhaseMarker => PHASE_STOP.load(),
        Hold::CodeMapped => CODE_STOP.load(),
    };
    if wanted != 0 && task.is_main_thread() {
        // SAFETY: the helper queues a signal for the current thread; it is
        // delivered (as a ptrace signal-delivery stop) on return to user mode.
        unsafe { bpf_send_signal_thread(SIGSTOP) };
    }
}
