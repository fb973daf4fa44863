//! Per-file loading measured with eBPF against the kernel's own smaps and the
//! workload's ground truth: the workload pauses after its search phase, the
//! test interrupts memtrace, which reads smaps while the mapping is alive.
use crate::common::*;

/// (scratch name, share of the file the search reads, evicted from the page cache first).
const CASES: [(&str, f64, bool); 6] = [
    ("loading_warm_0_1", 0.1, false),
    ("loading_warm_0_3", 0.3, false),
    ("loading_warm_1_0", 1.0, false),
    ("loading_cold_0_1", 0.1, true),
    ("loading_cold_0_3", 0.3, true),
    ("loading_cold_1_0", 1.0, true),
];

#[test]
fn loading_warm_and_cold_at_several_touch_shares() {
    let _root = require_root();
    for (name, touch, cold) in CASES {
        check_loading(name, touch, cold);
    }
}

fn check_loading(name: &str, touch: f64, cold: bool) {
    let dir = scratch(name);
    let mut workload = Workload::in_dir(&dir).size_mib(64).heap_mib(4).touch(touch);
    workload = workload.pause_after("search").truth();
    if cold {
        workload = workload.cold();
    }
    let run = workload.under().interrupt_when("paused after search");
    assert_eq!(run.status.code(), Some(130), "{name}: memtrace exits like its interrupted child\n{}", run.report);
    let (trace, truth) = (run.trace, workload.read_truth());

    assert!(!truth.complete);
    assert!(trace.final_truth.starts_with("read from /proc/PID/smaps"), "{name}: {}", trace.final_truth);
    let f = file_entry(&trace, &truth.file.path);
    let kernel = kernel_rss(f);
    let measured = f.measured_loaded_bytes;
    let touched = truth.file_pages_touched_total * truth.file.page_size;
    let tolerance = (kernel / 100).max(64 * 1024);
    eprintln!(
        "{name}: measured {measured}, smaps {kernel}, touched {touched}, read from disk {}",
        f.read_from_disk_bytes
    );
    assert!(measured.abs_diff(kernel) <= tolerance, "{name}: measured {measured} vs smaps {kernel}: {f:#?}");
    // Two kernel truths, page by page (pagemap) and summed (smaps), agree.
    assert_eq!(f.kernel_pagemap_bytes, Some(kernel), "{name}: {f:#?}");
    let totals = &trace.file_totals;
    assert!(totals.measured_loaded_bytes >= measured, "{name}: {totals:#?}");
    assert!(measured >= touched, "{name}: measured {measured} below the {touched} bytes the workload read: {f:#?}");
    assert_eq!(f.resident_at_start_bytes, None, "{name}: run mode starts from nothing");
    assert!(f.fault_around_bytes <= measured, "{name}: {f:#?}");
    let size_pages = truth.file.size_bytes.div_ceil(4096) * 4096;
    let disk = f.read_from_disk_bytes;
    assert!(disk <= size_pages, "{name}: read {disk} bytes from disk, more than the file: {f:#?}");
    if cold {
        assert!(
            disk >= touched,
            "{name}: cold run read only {disk} bytes from disk for {touched} bytes touched: {f:#?}"
        );
    }
    // The naive estimates are there, with their errors against smaps.
    let e = &f.estimates;
    assert_eq!(e.reference, "kernel_rss_bytes", "{name}");
    assert_eq!(e.fixed_ratio_bytes, (truth.file.size_bytes as f64 * 0.8) as u64, "{name}");
    assert_eq!(e.fixed_ratio_error_bytes, e.fixed_ratio_bytes as i64 - kernel as i64, "{name}");
    assert_eq!(trace.counters.ringbuf_drops, 0, "{name}");
}
