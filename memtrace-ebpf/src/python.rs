//! CPython frames at allocation time: the interpreter's chain of frames
//! (`_PyInterpreterFrame`, 3.11), read from the thread state that holds
//! the GIL, appended to the native stack as PYTHON_FRAME words (see
//! memtrace-common). Userspace resolves each code object's name, file and
//! line from /proc/PID/mem; here only pointers are copied.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_loop},
    macros::map,
    maps::HashMap,
};
use memtrace_common::{
    Counter, PythonProcess, StackFrames, MAX_STACK_DEPTH, PYTHON_CODE_MASK, PYTHON_DEPTH, PYTHON_ENTRY, PYTHON_FRAME,
    PYTHON_INSTR_MAX, PYTHON_INSTR_SHIFT,
};

use crate::emit::count;

/// The traced CPython processes, by pid (written by userspace when it finds
/// the interpreter in a process's mappings).
#[map]
static PYTHON_PROCS: HashMap<u32, PythonProcess> = HashMap::with_max_entries(4096, 0);

/// A process forked from a traced Python is one too (same addresses).
#[inline(always)]
pub fn inherit(parent: u32, child: u32) {
    // SAFETY: read-only lookup of a plain value, copied before the insert.
    if let Some(p) = unsafe { PYTHON_PROCS.get(parent) } {
        let copy = *p;
        let _ = PYTHON_PROCS.insert(child, copy, 0);
    }
}

pub fn forget(pid: u32) {
    let _ = PYTHON_PROCS.remove(pid);
}

struct Walk {
    p: PythonProcess,
    frame: u64,
    out: *mut StackFrames,
    n: u64,
    unreadable: bool,
}

#[inline(always)]
fn read<T>(address: u64) -> Option<T> {
    // SAFETY: a bounded read of target memory; fails cleanly on a bad address.
    unsafe { bpf_probe_read_user(address as *const T) }.ok()
}

/// Appends the calling thread's Python frames to `out` (after its `len`
/// native frames) when its process is a traced CPython and this thread
/// holds the GIL; returns the new length.
#[inline(always)]
pub fn append(pid: u32, out: *mut StackFrames, len: u64) -> u64 {
    // SAFETY: read-only lookup of a plain value.
    let Some(p) = (unsafe { PYTHON_PROCS.get(pid) }).copied() else { return len };
    let Some(tstate) = read::<u64>(p.tstate_current) else { return len };
    if tstate == 0 {
        return len; // no thread holds the GIL: no Python code runs
    }
    let tid = bpf_get_current_pid_tgid() as u32 as u64;
    let Some(owner) = read::<u64>(tstate + p.tstate_native_thread_id as u64) else { return len };
    if owner != tid {
        // This thread released the GIL (C code running without it).
        count(Counter::PythonOtherThread);
        return len;
    }
    let Some(cframe) = read::<u64>(tstate + p.tstate_cframe as u64) else { return len };
    let Some(frame) = read::<u64>(cframe + p.cframe_current_frame as u64) else { return len };
    let mut w = Walk { p, frame, out, n: len, unreadable: false };
    // SAFETY: `step` has the callback signature bpf_loop expects, and `w`
    // outlives the call.
    unsafe { bpf_loop(PYTHON_DEPTH as u32, step as *mut c_void, (&raw mut w).cast(), 0) };
    if w.unreadable {
        count(Counter::PythonUnreadable);
    }
    w.n
}

/// bpf_loop's callback: one Python frame. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` that `append` passed.
    let w = unsafe { &mut *ctx.cast::<Walk>() };
    if w.frame == 0 {
        return 1;
    }
    let n = w.n as usize;
    if n >= MAX_STACK_DEPTH {
        return 1;
    }
    let (Some(code), Some(instr), Some(previous), Some(entry)) = (
        read::<u64>(w.frame + w.p.frame_code as u64),
        read::<u64>(w.frame + w.p.frame_prev_instr as u64),
        read::<u64>(w.frame + w.p.frame_previous as u64),
        read::<u8>(w.frame + w.p.frame_is_entry as u64),
    ) else {
        w.unreadable = true;
        return 1;
    };
    let index = (instr.wrapping_sub(code + w.p.code_adaptive as u64) / 2).min(PYTHON_INSTR_MAX);
    let mut word = PYTHON_FRAME | (code & PYTHON_CODE_MASK) | (index << PYTHON_INSTR_SHIFT);
    if entry != 0 {
        word |= PYTHON_ENTRY;
    }
    // SAFETY: n < MAX_STACK_DEPTH, inside the per-CPU scratch.
    unsafe { (*w.out).ips[n] = word };
    w.n += 1;
    w.frame = previous;
    0
}
