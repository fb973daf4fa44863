//! Attach mode on a process that already loaded part of its file: the
//! baseline shows what was resident before memtrace came, and the final
//! figures still match smaps.

use std::{io::Write, process::Command};

use crate::common::*;

#[test]
fn attach_after_load_starts_from_the_resident_baseline() {
    let _root = require_root();
    let dir = scratch("attach_loading");
    let truth_path = dir.join("truth.json");
    let mut w = spawn_until(
        Command::new(workload_bin())
            .arg("--file")
            .arg(dir.join("w.arrow"))
            .args(["--size-mib", "64", "--heap-mib", "4", "--touch", "0.3"])
            .args(["--pause-after", "load", "--pause-after", "search", "--truth"])
            .arg(&truth_path),
        "paused after load",
    );

    let trace_path = dir.join("trace.json");
    let (mut memtrace, _m_err) = attach_memtrace(w.child.id(), &trace_path);

    writeln!(w.stdin).unwrap(); // go on: build, then search
    read_line_with_text(&mut w.out, "paused after search");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(memtrace.id() as i32, libc::SIGINT) };
    assert!(memtrace.wait().unwrap().success());

    let trace = read_json(&trace_path);
    let truth = read_json(&truth_path);
    let f = file_entry(&trace, truth["file"]["path"].as_str().unwrap());
    let at_start = u(&f["resident_at_start_bytes"]);
    let load_touched = u(&truth["phases"][1]["file_bytes_touched"]);
    assert_eq!(truth["phases"][1]["name"], "load");
    assert!(
        at_start >= load_touched && at_start > 0,
        "baseline {at_start} below the load phase's {load_touched}: {f:#}"
    );
    assert_eq!(u(&f["resident_at_start_pagemap_bytes"]), at_start, "pagemap and smaps agree at attach: {f:#}");
    let kernel = u(&f["kernel_rss_bytes"]);
    let resident = u(&f["measured_resident_bytes"]);
    assert!(resident.abs_diff(kernel) <= (kernel / 100).max(64 * 1024), "measured {resident} vs smaps {kernel}: {f:#}");
    // Pages resident before attach are not counted again as loaded.
    assert!(u(&f["measured_loaded_bytes"]) + at_start <= kernel + (kernel / 100).max(64 * 1024), "{f:#}");
    assert!(u(&f["measured_loaded_bytes"]) > 0, "the search phase loaded pages while traced: {f:#}");

    writeln!(w.stdin).unwrap(); // let the workload finish
    drop(w.stdin);
    assert!(w.child.wait().unwrap().success());
}
