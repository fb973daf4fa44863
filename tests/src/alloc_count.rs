//! A counting global allocator: the workload's own heap truth.
//!
//! It wraps `std::alloc::System` (glibc malloc/free/realloc/posix_memalign),
//! so every Rust allocation also goes through the libc entry points memtrace
//! probes; the counters are what memtrace's malloc accounting should find.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct CountingAlloc;

static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);

fn record_alloc(size: usize) {
    ALLOCATED_BYTES.fetch_add(size as u64, Relaxed);
    ALLOCS.fetch_add(1, Relaxed);
}

fn record_free(size: usize) {
    FREED_BYTES.fetch_add(size as u64, Relaxed);
    FREES.fetch_add(1, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments; the
// counters only observe successful calls.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        record_free(layout.size());
    }

    /// Counted as one free of the old size plus one allocation of the new
    /// size, whether or not libc moved the block. That keeps the net growth
    /// exact (new - old) and matches a tracer that treats `realloc` as
    /// free(old) + malloc(new). A failed realloc leaves the old block alive,
    /// so it counts nothing.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record_free(layout.size());
            record_alloc(new_size);
        }
        p
    }
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapSnapshot {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
}

impl HeapSnapshot {
    pub fn now() -> Self {
        Self {
            allocated_bytes: ALLOCATED_BYTES.load(Relaxed),
            freed_bytes: FREED_BYTES.load(Relaxed),
            allocs: ALLOCS.load(Relaxed),
            frees: FREES.load(Relaxed),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &HeapSnapshot) -> HeapDelta {
        HeapDelta {
            allocated_bytes: self.allocated_bytes - earlier.allocated_bytes,
            freed_bytes: self.freed_bytes - earlier.freed_bytes,
            allocs: self.allocs - earlier.allocs,
            frees: self.frees - earlier.frees,
        }
    }
}

/// Heap activity over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapDelta {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
}

impl HeapDelta {
    /// Net growth: allocated minus freed (negative when the interval freed
    /// more than it allocated, e.g. teardown).
    pub fn growth(&self) -> i64 {
        self.allocated_bytes as i64 - self.freed_bytes as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test harness runs tests on several threads and this allocator is
    // process-wide, so only check lower bounds that other threads cannot
    // break.
    #[test]
    fn counts_a_vec_allocation_and_its_free() {
        let before = HeapSnapshot::now();
        let v: Vec<u8> = Vec::with_capacity(1 << 20);
        let mid = HeapSnapshot::now().since(&before);
        assert!(mid.allocated_bytes >= 1 << 20);
        assert!(mid.allocs >= 1);
        drop(std::hint::black_box(v));
        let after = HeapSnapshot::now().since(&before);
        assert!(after.freed_bytes >= 1 << 20);
        assert!(after.frees >= 1);
    }

    #[test]
    fn growth_is_signed() {
        let d = HeapDelta { allocated_bytes: 10, freed_bytes: 30, allocs: 1, frees: 2 };
        assert_eq!(d.growth(), -20);
    }
}
