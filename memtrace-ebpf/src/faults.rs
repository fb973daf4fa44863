//! User page faults of the target.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::{event::PageFaultEvent, Counter};

use crate::emit::{count, emit, offsets, target_tid};

/// `exceptions:page_fault_user`: every fault the target takes in user mode.
/// The exact total lives in a counter; the event carries the address so
/// userspace can attribute the fault to a mapping.
#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let Some(tid) = target_tid() else { return 0 };
    count(Counter::PageFaults);
    let off = offsets();
    // SAFETY: offsets come from this kernel's tracefs format file.
    let (address, ip, error_code) = unsafe {
        (
            ctx.read_at::<u64>(off.fault_address as usize).unwrap_or(0),
            ctx.read_at::<u64>(off.fault_ip as usize).unwrap_or(0),
            ctx.read_at::<u64>(off.fault_error_code as usize).unwrap_or(0),
        )
    };
    emit(tid, PageFaultEvent { address, ip, error_code });
    0
}
