//! User page faults of the target.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use memtrace_common::{event::PageFaultEvent, Counter};

use crate::emit::{count, emit, offsets, traced};

/// `exceptions:page_fault_user`: every fault the target takes in user mode.
/// The exact total lives in a counter; the event carries the address so
/// userspace can attribute the fault to a mapping.
#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
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
    emit(task, PageFaultEvent { address, ip, error_code });
    0
}

/// First address above user space on x86-64 (4-level paging; 5-level
/// tables put user space lower than this too).
const USER_END: u64 = 1 << 47;

/// `exceptions:page_fault_kernel`: a fault the kernel takes in kernel mode;
/// at a user address in the target's context it is the kernel touching the
/// target's memory for it (read() copying into a buffer). The kernel counts
/// these as the process's faults, so they are sent too, marked by their
/// error code (no user-mode bit). Same record layout as page_fault_user.
#[tracepoint]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    let Some(task) = traced() else { return 0 };
    let off = offsets();
    // SAFETY: as above (the two events share their format).
    let (address, ip, error_code) = unsafe {
        (
            ctx.read_at::<u64>(off.fault_address as usize).unwrap_or(0),
            ctx.read_at::<u64>(off.fault_ip as usize).unwrap_or(0),
            ctx.read_at::<u64>(off.fault_error_code as usize).unwrap_or(0),
        )
    };
    if address >= USER_END {
        return 0;
    }
    emit(task, PageFaultEvent { address, ip, error_code: error_code & !4 });
    0
}
