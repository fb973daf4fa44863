//! Attach mode on a process that already loaded part of its file: the
//! baseline shows what was resident before memtrace came, and the final
//! figures still match smaps.
use std::io::Write;

use crate::common::*;

#[test]
fn attach_after_load_starts_from_the_resident_baseline() {
    let _root = require_root();
    let dir = scratch("attach_loading");
    let workload = Workload::in_dir(&dir).size_mib(64).heap_mib(4).touch(0.3);
    let workload = workload.pause_after("load").pause_after("search").truth();
    let mut w = spawn_until(&mut workload.command(), "paused after load");

    let mut memtrace = Memtrace::attach(w.child.id()).json(dir.join("trace.json")).spawn();

    writeln!(w.stdin).unwrap(); // go on: build, then search
    read_line_with_text(&mut w.out, "paused after search");
    memtrace.interrupt();
    assert!(memtrace.wait().success());

    let trace = memtrace.trace();
    let truth = workload.read_truth();
    let f = file_entry(&trace, &truth.file.path);
    let at_start = f.resident_at_start_bytes.unwrap();
    let load_touched = truth.phases[1].file_bytes_touched;
    assert_eq!(truth.phases[1].name, "load");
    assert!(
        at_start >= load_touched && at_start > 0,
        "baseline {at_start} below the load phase's {load_touched}: {f:#?}"
    );
    assert_eq!(f.resident_at_start_pagemap_bytes, Some(at_start), "pagemap and smaps agree at attach: {f:#?}");
    let kernel = kernel_rss(f);
    let resident = f.measured_resident_bytes;
    assert!(
        resident.abs_diff(kernel) <= (kernel / 100).max(64 * 1024),
        "measured {resident} vs smaps {kernel}: {f:#?}"
    );
    // Pages resident before attach are not counted again as loaded.
    assert!(f.measured_loaded_bytes + at_start <= kernel + (kernel / 100).max(64 * 1024), "{f:#?}");
    assert!(f.measured_loaded_bytes > 0, "the search phase loaded pages while traced: {f:#?}");

    writeln!(w.stdin).unwrap(); // let the workload finish
    drop(w.stdin);
    assert!(w.child.wait().unwrap().success());
}
