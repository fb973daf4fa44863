//! mmap-family syscalls of the target. Arguments are stashed per thread at
//! entry and sent with the result at exit, so userspace sees one event per
//! finished call with its outcome.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{
    event::{
        BrkEvent, MadviseEvent, MmapEvent, MmapFileEvent, MmapPathEvent, MremapEvent, MunmapEvent, RangeEnterEvent,
        RangeOp,
    },
    CodeFileKey, Counter, FileKey,
};

use crate::{
    emit::{count, emit, emit_in_place, offsets, traced, Task},
    filemap::WATCHED_FILES,
    heap::capture_stack,
    hold::{hold, Hold},
    mmap_file::{file_of_fd, fill_path, identity},
};

const MAP_ANONYMOUS: u64 = 0x20;
const PROT_EXEC: u64 = 4;

/// Entry arguments of the syscall each target thread is inside, keyed by
/// tid (per-thread scratch, not wire format): slot 0 is kept for the result
/// (see `finish`), the others hold the call's arguments in the order its
/// exit program reads them.
#[map]
static PENDING: HashMap<u32, [u64; 6]> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
fn read(ctx: &TracePointContext, offset: u32) -> u64 {
    // SAFETY: offsets come from this kernel's tracefs format file.
    unsafe { ctx.read_at::<u64>(offset as usize).unwrap_or(0) }
}

#[inline(always)]
fn stash(tid: u32, args: [u64; 6]) {
    if PENDING.insert(tid, args, 0).is_err() {
        count(Counter::PendingFull);
    }
}

/// Takes the stashed arguments and replaces slot 0 with the syscall's result.
#[inline(always)]
fn finish(ctx: &TracePointContext, tid: u32) -> Option<[u64; 6]> {
    // SAFETY: the value is copied out before the entry is removed.
    let mut args = unsafe { *PENDING.get(tid)? };
    let _ = PENDING.remove(tid);
    args[0] = read(ctx, offsets().exit_ret);
    Some(args)
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let off = offsets();
    let args = [
        read(&ctx, off.mmap_addr),
        read(&ctx, off.mmap_len),
        read(&ctx, off.mmap_prot),
        read(&ctx, off.mmap_flags),
        read(&ctx, off.mmap_fd),
        read(&ctx, off.mmap_off),
    ];
    stash(task.tid, args);
    0
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    count(Counter::MmapCalls);
    if let Some(args) = finish(&ctx, task.tid) {
        let [ret, len, prot, flags, fd, offset] = args;
        let (result, fd) = (ret as i64, fd as i64);
        let mut file = None;
        if result >= 0 && fd >= 0 && flags & MAP_ANONYMOUS == 0 {
            let opened = file_of_fd(fd as u64);
            if let Some((f, (dev, ino, char_device))) = opened.and_then(|f| Some((f, identity(f)?))) {
                let key = FileKey { ino, s_dev: dev, _pad: 0 };
                file = Some(key);
                // Watch its evictions from now on, not from when userspace
                // gets to this event.
                if WATCHED_FILES.insert(key, 1, 0).is_err() {
                    count(Counter::WatchFull);
                }
                // Its path now: by the time userspace reads /proc, another
                // file may be mapped at this address.
                emit_in_place(task, |e: &mut MmapPathEvent| {
                    e.result = result;
                    fill_path(f, e)
                });
                emit(task, MmapFileEvent { result, ino, s_dev: dev, char_device: char_device as u32 });
            }
        }
        // An anonymous mapping: who made it (its origin, by which its
        // resident pages are told apart: pymalloc arenas, thread stacks,
        // an allocator's own).
        let stack_id =
            if result >= 0 && (flags & MAP_ANONYMOUS != 0 || fd < 0) { creator_stack(&ctx, task) } else { 0 };
        emit(task, MmapEvent { result, len, prot, flags, fd, offset, stack_id });
        // A file's code, mapped for the first time (the loader mapping a
        // library): its unwind table goes in before any of it runs.
        if result >= 0
            && fd >= 0
            && flags & MAP_ANONYMOUS == 0
            && prot & PROT_EXEC != 0
            && first_code_mapping(task, file)
        {
            hold(task, Hold::CodeMapped);
        }
    }
    0
}

/// Per-CPU copy of the calling thread's user registers (too big for the BPF stack).
#[map]
static USER_REGS: PerCpuArray<pt_regs> = PerCpuArray::with_max_entries(1, 0);

/// The user stack of the thread inside this syscall, walked from the
/// registers it entered the kernel with (the allocators' unwinder, so code
/// without frame pointers walks too); its key in STACKS, 0 if lost.
#[inline(always)]
fn creator_stack(ctx: &TracePointContext, task: Task) -> u64 {
    let Some(regs) = USER_REGS.get_ptr_mut(0) else { return 0 };
    // SAFETY: the current task's saved user registers, copied by the
    // helper into the per-CPU buffer (a failed read leaves it unused).
    let copied = unsafe {
        let user = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        bpf_probe_read_kernel(regs.cast(), core::mem::size_of::<pt_regs>() as u32, user.cast())
    };
    if copied != 0 {
        return 0;
    }
    // Inside a probed call still running (malloc's mmap): repaired.
    capture_stack::<true>(task.pid, regs, ctx.as_ptr(), |_| {})
}

/// Files whose code each traced process mapped: the hold for a file's unwind table
/// is needed once (a JIT mapping code from one memfd again and again is not
/// stopped each time; a library mapped again gets its new place in the
/// mapping list at the next drain).
#[map]
static CODE_FILES: HashMap<CodeFileKey, u8> = HashMap::with_max_entries(8192, 0);

/// Whether this is the first mapping of this file's code (true when the
/// file is unknown or the set is full: hold rather than miss a table).
#[inline(always)]
fn first_code_mapping(task: Task, file: Option<FileKey>) -> bool {
    const BPF_NOEXIST: u64 = 1;
    const EEXIST: i32 = 17;
    let Some(file) = file else { return true };
    // Per process: a child that execs maps libc again into an address space
    // whose unwinder mapping list does not have it yet.
    let key = CodeFileKey { ino: file.ino, s_dev: file.s_dev, pid: task.pid };
    !matches!(CODE_FILES.insert(key, 1, BPF_NOEXIST), Err(e) if e == -EEXIST)
}

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let off = offsets();
    // Slot 0 is overwritten by the result at exit; the address goes to slot 1 too.
    let addr = read(&ctx, off.munmap_addr);
    let len = read(&ctx, off.munmap_len);
    stash(task.tid, [addr, addr, len, 0, 0, 0]);
    // RSS changes until the exit event are pages of this range being unmapped.
    emit(task, RangeEnterEvent { addr, len, behavior: 0, op: RangeOp::Munmap as u32, _pad: 0 });
    0
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    count(Counter::MunmapCalls);
    if let Some(a) = finish(&ctx, task.tid) {
        emit(task, MunmapEvent { addr: a[1], len: a[2], result: a[0] as i64 });
    }
    0
}

#[tracepoint]
pub fn sys_enter_madvise(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let off = offsets();
    let (addr, len, behavior) =
        (read(&ctx, off.madvise_start), read(&ctx, off.madvise_len), read(&ctx, off.madvise_behavior));
    stash(task.tid, [addr, addr, len, behavior, 0, 0]);
    // MADV_DONTNEED, MADV_PAGEOUT, ... drop pages: RSS changes until the exit
    // event belong to this range.
    emit(task, RangeEnterEvent { addr, len, behavior, op: RangeOp::Madvise as u32, _pad: 0 });
    0
}

#[tracepoint]
pub fn sys_exit_madvise(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    count(Counter::MadviseCalls);
    if let Some(a) = finish(&ctx, task.tid) {
        emit(task, MadviseEvent { addr: a[1], len: a[2], behavior: a[3], result: a[0] as i64 });
    }
    0
}

#[tracepoint]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let off = offsets();
    let addr = read(&ctx, off.mremap_addr);
    let old_len = read(&ctx, off.mremap_old_len);
    stash(task.tid, [addr, addr, old_len, read(&ctx, off.mremap_new_len), read(&ctx, off.mremap_flags), 0]);
    // Shrinking unmaps the tail: RSS changes until the exit event belong here.
    emit(task, RangeEnterEvent { addr, len: old_len, behavior: 0, op: RangeOp::Mremap as u32, _pad: 0 });
    0
}

#[tracepoint]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    count(Counter::MremapCalls);
    if let Some(a) = finish(&ctx, task.tid) {
        emit(task, MremapEvent { old_addr: a[1], old_len: a[2], new_len: a[3], flags: a[4], result: a[0] as i64 });
    }
    0
}

/// A `brk` lowering the break gives pages back: RSS changes until its exit
/// belong to the heap (userspace knows the break now and tells a lowering
/// from a raise).
#[tracepoint]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let addr = read(&ctx, offsets().brk_arg);
    emit(task, RangeEnterEvent { addr, len: 0, behavior: 0, op: RangeOp::Brk as u32, _pad: 0 });
    0
}

/// The program break after each `brk` (glibc's main heap grows and shrinks
/// through it); no entry stash needed, the result is the whole story.
#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    emit(task, BrkEvent { brk: read(&ctx, offsets().exit_ret) });
    0
}
