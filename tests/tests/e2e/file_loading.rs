//! Per-file loading measured with eBPF against the kernel's own smaps and the
//! workload's ground truth: the workload pauses after its search phase, the
//! test interrupts memtrace, which reads smaps while the mapping is alive.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

const SIZE_MIB: &str = "64";

fn trace_paused_after_search(name: &str, touch: &str, cold: bool) -> (Value, Value) {
    let _root = require_root();
    let dir = scratch(name);
    let (trace_path, truth_path) = (dir.join("trace.json"), dir.join("truth.json"));
    let mut workload = Command::new(workload_bin());
    workload.arg("--file").arg(dir.join("w.arrow")).args(["--size-mib", SIZE_MIB, "--heap-mib", "4", "--touch", touch]);
    workload.args(["--pause-after", "search", "--truth"]).arg(&truth_path);
    if cold {
        workload.arg("--cold");
    }
    let (trace, report, status) = trace_until_marker(&trace_path, &mut workload, "paused after search");
    assert_eq!(status.code(), Some(130), "memtrace exits like its interrupted child\n{report}");
    (trace, read_json(&truth_path))
}

fn check_loading(name: &str, touch: &str, cold: bool) {
    let (trace, truth) = trace_paused_after_search(name, touch, cold);
    assert_eq!(truth["complete"], false);
    assert!(
        trace["final_truth"].as_str().unwrap().starts_with("read from /proc/PID/smaps"),
        "{}",
        trace["final_truth"]
    );
    let path = truth["file"]["path"].as_str().unwrap();
    let f = file_entry(&trace, path);
    let kernel = u(&f["kernel_rss_bytes"]);
    let measured = u(&f["measured_loaded_bytes"]);
    let touched = u(&truth["file_pages_touched_total"]) * u(&truth["file"]["page_size"]);
    let tolerance = (kernel / 100).max(64 * 1024);
    eprintln!(
        "{name}: measured {measured}, smaps {kernel}, touched {touched}, read from disk {}",
        f["read_from_disk_bytes"]
    );
    assert!(measured.abs_diff(kernel) <= tolerance, "measured {measured} vs smaps {kernel}: {f:#}");
    // Two kernel truths, page by page (pagemap) and summed (smaps), agree.
    assert_eq!(u(&f["kernel_pagemap_bytes"]), kernel, "{f:#}");
    let totals = &trace["file_totals"];
    assert!(u(&totals["measured_loaded_bytes"]) >= measured, "{totals:#}");
    assert!(measured >= touched, "measured {measured} below the {touched} bytes the workload read: {f:#}");
    assert_eq!(f["resident_at_start_bytes"], Value::Null, "run mode starts from nothing");
    assert!(u(&f["fault_around_bytes"]) <= measured);
    let size_pages = u(&truth["file"]["size_bytes"]).div_ceil(4096) * 4096;
    let disk = u(&f["read_from_disk_bytes"]);
    assert!(disk <= size_pages, "read {disk} bytes from disk, more than the file: {f:#}");
    if cold {
        assert!(disk >= touched, "cold run read only {disk} bytes from disk for {touched} bytes touched: {f:#}");
    }
    // The naive estimates are there, with their errors against smaps.
    let e = &f["estimates"];
    assert_eq!(e["reference"], "kernel_rss_bytes");
    assert_eq!(u(&e["fixed_ratio_bytes"]), (u(&truth["file"]["size_bytes"]) as f64 * 0.8) as u64);
    assert_eq!(e["fixed_ratio_error_bytes"].as_i64().unwrap(), u(&e["fixed_ratio_bytes"]) as i64 - kernel as i64);
    assert_eq!(u(&trace["counters"]["ringbuf_drops"]), 0);
}

#[test]
fn warm_touch_0_1() {
    check_loading("loading_warm_0_1", "0.1", false);
}

#[test]
fn warm_touch_0_3() {
    check_loading("loading_warm_0_3", "0.3", false);
}

#[test]
fn warm_touch_1_0() {
    check_loading("loading_warm_1_0", "1.0", false);
}

#[test]
fn cold_touch_0_1() {
    check_loading("loading_cold_0_1", "0.1", true);
}

#[test]
fn cold_touch_0_3() {
    check_loading("loading_cold_0_3", "0.3", true);
}

#[test]
fn cold_touch_1_0() {
    check_loading("loading_cold_1_0", "1.0", true);
}
