//! memtrace's in-kernel half: tracepoint programs filtered to one thread group,
//! counting in per-CPU counters and streaming compact events through a ring buffer.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod emit;
mod faults;
mod filemap;
mod heap;
mod hold;
mod mmap;
mod mmap_file;
mod phases;
mod process;
mod python;
mod regs;
mod unwind;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // eBPF programs cannot panic at run time; the verifier rejects any path here.
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";
