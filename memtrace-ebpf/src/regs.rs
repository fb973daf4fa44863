//! The user registers a uprobe program reads beyond its arguments (which
//! aya's `ctx.arg()` reads for every architecture): the stack pointer and
//! the instruction pointer. Their `pt_regs` fields, and what a return does
//! to the stack pointer, are architecture-specific; memtrace only knows them
//! for x86_64. `bpf_target_arch` is the architecture of the kernel the
//! object is for (set by build.rs, like aya-ebpf's own).
#[cfg(bpf_target_arch = "x86_64")]
use aya_ebpf::bindings::pt_regs;

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!(
    "memtrace-ebpf reads x86_64 user registers (rsp, rip) in its uprobes: build it for an x86_64 kernel \
     (AYA_BPF_TARGET_ARCH=x86_64), or add this architecture's registers to memtrace-ebpf/src/regs.rs"
);

/// How far above the entry's stack pointer a function's return leaves it:
/// x86's `ret` pops the 8-byte return address that `call` pushed.
#[cfg(bpf_target_arch = "x86_64")]
pub const RETURN_SP_OFFSET: u64 = 8;

/// The user stack pointer.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn stack_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: the kernel hands every uprobe program the user registers.
    unsafe { (*regs).rsp }
}

/// The user instruction pointer (where the probe fired).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn instruction_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: as above.
    unsafe { (*regs).rip }
}

/// The user frame pointer (rbp): where a frame-pointer walk starts, and the
/// base some unwind rows compute the caller's stack pointer from.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn frame_pointer(regs: *const pt_regs) -> u64 {
    // SAFETY: as above.
    unsafe { (*regs).rbp }
}
