//! The page cache and the target's RSS counters: which file pages the kernel
//! maps for the target (fault, fault-around), reads from disk for it, evicts,
//! and the exact RSS counter values that say how many pages each step mapped.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use memtrace_common::{
    event::{FilemapFaultEvent, FilemapMapPagesEvent, PageCacheAddEvent, PageCacheDeleteEvent, RssStatEvent},
    FileKey, MAX_TRACED,
};

use crate::emit::{emit, offsets, traced, traced_process, Task};

/// Files the target maps (written by userspace): evictions of other files are
/// not the target's business and are not sent.
#[map]
pub(crate) static WATCHED_FILES: HashMap<FileKey, u8> = HashMap::with_max_entries(4096, 0);

/// Each traced process's mm_id (a hash of its mm pointer) as seen in
/// rss_stat from its own threads: lets reclaim, which runs in other tasks,
/// be attributed too. Removed with the process (exit program).
#[map]
pub(crate) static MM_OWNERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACED, 0);

#[inline(always)]
unsafe fn read<T>(ctx: &TracePointContext, offset: u32) -> T
where
    T: Default,
{
    // SAFETY (caller): offsets come from this kernel's tracefs format file.
    unsafe { ctx.read_at::<T>(offset as usize).unwrap_or_default() }
}

#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let off = offsets();
    let (mm_id, curr, member, size) = unsafe {
        (
            read::<u32>(&ctx, off.rss_mm_id),
            read::<u32>(&ctx, off.rss_curr),
            read::<i32>(&ctx, off.rss_member),
            read::<i64>(&ctx, off.rss_size),
        )
    };
    let task = match traced_process() {
        Some((task, process)) if curr == 1 => {
            // SAFETY: map value pointer; a racing write stores the same value.
            let known = unsafe { (*process).mm_id };
            if known != mm_id {
                // New (first event, or a new image after exec).
                let _ = MM_OWNERS.remove(known);
                let _ = MM_OWNERS.insert(mm_id, task.pid, 0);
                unsafe { (*process).mm_id = mm_id };
            }
            task
        }
        _ => {
            // Another task changing a traced process's counters (reclaim, exit).
            // SAFETY: read-only lookup of a plain value.
            match unsafe { MM_OWNERS.get(mm_id) } {
                Some(&pid) => Task::on_behalf_of(pid),
                None => return 0,
            }
        }
    };
    emit(task, RssStatEvent { bytes: size as u64, member: member as u32, curr, mm_id, _pad: 0 });
    0
}

/// (ino, s_dev, index): the fields mm_filemap_fault and mm_filemap_map_pages share.
#[inline(always)]
fn fault_fields(ctx: &TracePointContext) -> (u64, u32, u64) {
    let off = offsets();
    unsafe { (read::<u64>(ctx, off.fault_ino), read::<u32>(ctx, off.fault_dev), read::<u64>(ctx, off.fault_index)) }
}

#[tracepoint]
pub fn mm_filemap_fault(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let (ino, s_dev, index) = fault_fields(&ctx);
    emit(task, FilemapFaultEvent { ino, index, s_dev, _pad: 0 });
    0
}

#[tracepoint]
pub fn mm_filemap_map_pages(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let (ino, s_dev, first) = fault_fields(&ctx);
    let last = unsafe { read::<u64>(&ctx, offsets().map_pages_last) };
    emit(task, FilemapMapPagesEvent { ino, first, last, s_dev, _pad: 0 });
    0
}

#[inline(always)]
fn cache_fields(ctx: &TracePointContext) -> (u64, u32, u64, u8) {
    let off = offsets();
    unsafe {
        (
            read::<u64>(ctx, off.cache_ino),
            read::<u32>(ctx, off.cache_dev),
            read::<u64>(ctx, off.cache_index),
            read::<u8>(ctx, off.cache_order),
        )
    }
}

#[tracepoint]
pub fn mm_filemap_add_to_page_cache(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let (ino, s_dev, index, order) = cache_fields(&ctx);
    emit(task, PageCacheAddEvent { ino, index, s_dev, order: order as u32 });
    0
}

#[tracepoint]
pub fn mm_filemap_delete_from_page_cache(ctx: TracePointContext) -> u32 {
    let (ino, dev, index, order) = cache_fields(&ctx);
    let key = FileKey { ino, s_dev: dev, _pad: 0 };
    // SAFETY: read-only lookup of a plain value.
    if unsafe { WATCHED_FILES.get(key) }.is_none() {
        return 0;
    }
    // Evictions mostly run in other tasks (reclaim): header pid 0 then.
    let task = traced().unwrap_or(Task::on_behalf_of(0));
    emit(task, PageCacheDeleteEvent { ino, index, s_dev: dev, order: order as u32 });
    0
}
