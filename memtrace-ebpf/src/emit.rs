//! Shared state of all programs: the traced processes, counters and the event ring buffer.
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    Global,
};
use memtrace_common::{
    event::{EventBody, EventHeader, EventKind, ProcessJoinEvent, Record},
    Counter, TracedProcess, TracepointOffsets, MAX_TRACED,
};

/// The traced processes by thread group id (userspace PID): the scope.
/// Userspace writes the ones it names; the fork program adds their
/// children; the exit program removes each when its last thread exits (so
/// a recycled PID is never traced by mistake).
#[map]
pub(crate) static TRACED: HashMap<u32, TracedProcess> = HashMap::with_max_entries(MAX_TRACED, 0);

/// `--cgroup`: the cgroup v2 id (its directory's inode number) whose
/// processes are all in the scope, those started later too; 0: none.
#[no_mangle]
static CGROUP: Global<u64> = Global::new(0);

/// A process of the traced cgroup met before userspace or a fork added it
/// (moved in from outside, or started by a process outside the scope):
/// into the scope now, and userspace is told so it can probe it.
#[inline(always)]
fn joins(pid_tgid: u64) -> bool {
    let cgroup = CGROUP.load();
    // SAFETY: a helper with no arguments.
    if cgroup == 0 || unsafe { bpf_get_current_cgroup_id() } != cgroup {
        return false;
    }
    let pid = (pid_tgid >> 32) as u32;
    const BPF_NOEXIST: u64 = 1;
    if TRACED.insert(pid, TracedProcess::default(), BPF_NOEXIST).is_err() {
        // Another CPU added it first (or the map is full: counted there).
        return unsafe { TRACED.get(pid) }.is_some();
    }
    emit(Task { tid: pid_tgid as u32, pid }, ProcessJoinEvent { _pad: 0 });
    true
}

/// Tracepoint field offsets read from tracefs by the loader.
#[no_mangle]
static OFFSETS: Global<TracepointOffsets> = Global::new(TracepointOffsets {
    fault_address: 8,
    fault_ip: 16,
    fault_error_code: 24,
    mmap_addr: 16,
    mmap_len: 24,
    mmap_prot: 32,
    mmap_flags: 40,
    mmap_fd: 48,
    mmap_off: 56,
    munmap_addr: 16,
    munmap_len: 24,
    madvise_start: 16,
    madvise_len: 24,
    madvise_behavior: 32,
    mremap_addr: 16,
    mremap_old_len: 24,
    mremap_new_len: 32,
    mremap_flags: 40,
    exit_ret: 16,
    rss_mm_id: 8,
    rss_curr: 12,
    rss_member: 16,
    rss_size: 24,
    fault_ino: 8,
    fault_dev: 16,
    fault_index: 24,
    map_pages_last: 32,
    cache_ino: 16,
    cache_index: 24,
    cache_dev: 32,
    cache_order: 36,
    exit_group_dead: 0,
    brk_arg: 16,
});

/// 16 MiB: about 350k page-fault records (40 bytes + the ring buffer's 8-byte
/// header; each kind reserves only its own record) before the consumer must
/// catch up. Overflow is counted in Counter::RingbufDrops.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT as u32, 0);

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    OFFSETS.load()
}

/// The thread an event comes from and the traced process it belongs to.
#[derive(Clone, Copy)]
pub struct Task {
    pub tid: u32,
    pub pid: u32,
}

impl Task {
    /// Another task acting on a traced process (reclaim, exit teardown).
    pub const fn on_behalf_of(pid: u32) -> Task {
        Task { tid: 0, pid }
    }

    /// The process's main thread (the one ptrace holds in run mode).
    pub const fn is_main_thread(&self) -> bool {
        self.tid == self.pid
    }
}

/// The current task, when its process is traced.
#[inline(always)]
pub fn traced() -> Option<Task> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: read-only lookup of a plain value.
    match unsafe { TRACED.get(pid) } {
        Some(_) => Some(Task { tid: pid_tgid as u32, pid }),
        None => joins(pid_tgid).then_some(Task { tid: pid_tgid as u32, pid }),
    }
}

/// The current task and its process's entry, when its process is in
/// TRACED already (never joining it: for its exit).
#[inline(always)]
pub fn known_process() -> Option<(Task, *mut TracedProcess)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    TRACED.get_ptr_mut(pid).map(|p| (Task { tid: pid_tgid as u32, pid }, p))
}

/// The current task and its process's entry, when its process is traced.
#[inline(always)]
pub fn traced_process() -> Option<(Task, *mut TracedProcess)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let task = Task { tid: pid_tgid as u32, pid };
    match TRACED.get_ptr_mut(pid) {
        Some(p) => Some((task, p)),
        None if joins(pid_tgid) => TRACED.get_ptr_mut(pid).map(|p| (task, p)),
        None => None,
    }
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Unread bytes after which a frequent event wakes the consumer anyway.
const WAKEUP_BACKLOG: u64 = 2 * 1024 * 1024;

/// Frequent events (faults, counter changes, page cache, phase markers and
/// their heap totals) do not wake the consumer, which drains every few
/// milliseconds: a wakeup per fault cost the target more than the tracing
/// itself, and two per marker made a phase cost ~60 us on a 2-core VM (a
/// Python program marking a phase per request). Rare events (mmap, exec)
/// wake it at once so /proc is read while the mapping still exists; so does
/// a marker whose name must be read from /proc/PID/mem (see emit_waking).
#[inline(always)]
fn wakeup_flags(kind: EventKind) -> u64 {
    // `kind` is a constant of each emit::<B>() instance: this folds away.
    let frequent = matches!(
        kind,
        EventKind::PageFault
            | EventKind::RssStat
            | EventKind::FilemapFault
            | EventKind::FilemapMapPages
            | EventKind::PageCacheAdd
            | EventKind::PageCacheDelete
            | EventKind::Phase
            | EventKind::HeapMark
    );
    if !frequent || EVENTS.query(BPF_RB_AVAIL_DATA) > WAKEUP_BACKLOG {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends one event: reserves the record of `B`'s kind (header + body, a
/// constant size the verifier can check) and fills it. Every program sends
/// through here or emit_waking; a full ring buffer is counted, never silent.
#[inline(always)]
pub fn emit<B: EventBody>(task: Task, body: B) {
    send(task, body, wakeup_flags(B::KIND));
}

/// Sends one event and wakes the consumer at once, whatever its kind: it
/// must read /proc while what the event names still exists.
#[inline(always)]
pub fn emit_waking<B: EventBody>(task: Task, body: B) {
    send(task, body, BPF_RB_FORCE_WAKEUP);
}

#[inline(always)]
fn send<B: EventBody>(task: Task, body: B, flags: u64) {
    match EVENTS.reserve::<Record<B>>(0) {
        Some(mut entry) => {
            // SAFETY: the helper only reads the clock.
            let ts_ns = unsafe { bpf_ktime_get_ns() };
            entry.write(Record { header: header(B::KIND, task, ts_ns), body });
            entry.submit(flags);
        }
        None => count(Counter::RingbufDrops),
    }
}

/// Sends one event whose body is too large for the BPF stack (512 bytes):
/// reserves its record and lets `fill` write the body in the ring buffer
/// itself; `fill` returning false discards the record.
#[inline(always)]
pub fn emit_in_place<B: EventBody>(task: Task, fill: impl FnOnce(&mut B) -> bool) {
    let Some(mut entry) = EVENTS.reserve::<Record<B>>(0) else {
        count(Counter::RingbufDrops);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: the helper only reads the clock; `record` is the reserved
    // space, ours until submitted or discarded, and `fill` sets the body
    // (all integers: any bytes are a valid value).
    let filled = unsafe {
        let ts_ns = bpf_ktime_get_ns();
        (&raw mut (*record).header).write(header(B::KIND, task, ts_ns));
        fill(&mut (*record).body)
    };
    if filled {
        entry.submit(wakeup_flags(B::KIND));
    } else {
        entry.discard(0);
    }
}

#[inline(always)]
fn header(kind: EventKind, task: Task, ts_ns: u64) -> EventHeader {
    EventHeader { kind: kind as u32, tid: task.tid, ts_ns, pid: task.pid, _pad: 0 }
}
