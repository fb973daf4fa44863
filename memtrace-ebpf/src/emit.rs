//! Shared state of all programs: the target filter, counters and the event ring buffer.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    Global,
};
use memtrace_common::{
    RawEvent, TracepointOffsets, COUNTER_RINGBUF_DROPS, EVENT_FILEMAP_FAULT, EVENT_FILEMAP_MAP_PAGES,
    EVENT_PAGE_CACHE_ADD, EVENT_PAGE_CACHE_DELETE, EVENT_PAGE_FAULT, EVENT_RSS_STAT, NUM_COUNTERS,
};

/// Thread group (userspace PID) being traced; written by the loader.
#[no_mangle]
static TARGET_TGID: Global<u32> = Global::new(0);

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
});

/// 16 MiB: about 230k events of 72 bytes (64 + ring-buffer header) before the
/// consumer must catch up. Overflow is counted in COUNTER_RINGBUF_DROPS.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    OFFSETS.load()
}

#[inline(always)]
pub fn target_tgid() -> u32 {
    TARGET_TGID.load()
}

/// Returns the current thread id when the current task belongs to the target.
#[inline(always)]
pub fn target_tid() -> Option<u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == TARGET_TGID.load() {
        Some(pid_tgid as u32)
    } else {
        None
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Unread bytes after which a frequent event wakes the consumer anyway.
const WAKEUP_BACKLOG: u64 = 2 * 1024 * 1024;

/// Frequent events (faults, counter changes, page cache) do not wake the
/// consumer, which drains every few milliseconds: a wakeup per fault cost the
/// target more than the tracing itself. Rare events (mmap, exec, phases) wake
/// it at once so /proc is read while the mapping still exists.
#[inline(always)]
fn wakeup_flags(kind: u32) -> u64 {
    let frequent = matches!(
        kind,
        EVENT_PAGE_FAULT
            | EVENT_RSS_STAT
            | EVENT_FILEMAP_FAULT
            | EVENT_FILEMAP_MAP_PAGES
            | EVENT_PAGE_CACHE_ADD
            | EVENT_PAGE_CACHE_DELETE
    );
    if !frequent || EVENTS.query(BPF_RB_AVAIL_DATA) > WAKEUP_BACKLOG {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Sends one event; a full ring buffer is counted, never silent.
#[inline(always)]
pub fn emit(kind: u32, tid: u32, args: [u64; 6]) {
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut entry) => {
            entry.write(RawEvent { kind, tid, ts_ns: unsafe { bpf_ktime_get_ns() }, args });
            entry.submit(wakeup_flags(kind));
        }
        None => count(COUNTER_RINGBUF_DROPS),
    }
}
