//! Symbols memtrace attaches uprobes to by name.
//!
//! They are `#[no_mangle] extern "C"` so they keep their plain names in the
//! executable's symbol table, and `#[inline(never)]` so each call site really
//! calls them (a uprobe on an inlined copy would never fire).

use std::ffi::c_char;
use std::sync::atomic::{AtomicU64, Ordering};

/// Separate counters for begin and end on purpose: with identical bodies,
/// LLVM's function merging could fold the two functions into one address
/// (two symbol names, one entry point), and a uprobe on one would then fire
/// for the other too.
static PHASE_BEGINS: AtomicU64 = AtomicU64::new(0);
static PHASE_ENDS: AtomicU64 = AtomicU64::new(0);

/// Called right before a phase starts; `name` is a NUL-terminated static
/// string that the probe reads from the first argument register.
#[no_mangle]
#[inline(never)]
pub extern "C" fn memtrace_phase_begin(name: *const c_char) {
    // black_box keeps `name` live (so the argument register is really set up)
    // and the atomic store is a side effect the optimizer must keep.
    std::hint::black_box(name);
    PHASE_BEGINS.fetch_add(1, Ordering::SeqCst);
}

/// Called right after a phase ends; see [`memtrace_phase_begin`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn memtrace_phase_end(name: *const c_char) {
    std::hint::black_box(name);
    PHASE_ENDS.fetch_add(1, Ordering::SeqCst);
}

/// Allocates `size` bytes with libc's `malloc` (not the Rust allocator, so
/// memtrace sees a plain malloc with this function on the stack), fills them
/// so the pages are really used, and returns the pointer. The caller in the
/// `leak` phase forgets it, which is the leak memtrace should report.
/// Returns null only when malloc fails.
#[no_mangle]
#[inline(never)]
pub extern "C" fn leaky_cache_insert(size: usize) -> *mut u8 {
    // SAFETY: malloc with any size is sound; the write stays within the
    // `size` bytes just allocated, and only happens when malloc succeeded.
    unsafe {
        let p = libc::malloc(size).cast::<u8>();
        if !p.is_null() {
            std::ptr::write_bytes(p, 0xA5, size);
        }
        std::hint::black_box(p)
    }
}

/// How many begin/end markers ran; lets the workload check its own phase
/// bookkeeping (each begin must be matched by an end).
pub fn marker_counts() -> (u64, u64) {
    (PHASE_BEGINS.load(Ordering::SeqCst), PHASE_ENDS.load(Ordering::SeqCst))
}
