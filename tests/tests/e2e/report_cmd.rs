//! `memtrace report TRACE.json`: a saved trace printed again, exactly as the
//! run printed it, by an unprivileged user; a damaged trace gets a one-line
//! cause and a non-zero exit, never a panic.
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn a_saved_trace_reports_as_the_run_did_without_privileges_and_damage_is_named() {
    let _root = require_root();
    let nobody = unprivileged("report");
    let workload = Workload::in_dir(&nobody.dir).size_mib(8).touch(0.5).leak(10);
    let run = workload.under().traced();
    let trace_path = workload.trace_path();
    std::fs::set_permissions(&trace_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let again = Memtrace::report(&trace_path).by_nobody(&nobody).succeeds();
    assert_eq!(stdout(&again), run.report(), "same report");

    let text = std::fs::read_to_string(&trace_path).unwrap();
    let damaged = nobody.dir.join("damaged.json");
    for (content, cause) in [
        (text[..text.len() / 3].to_string(), "the trace is truncated"),
        (text.replacen("\"duration_s\":", "\"duration_s\": \"x\", \"was\":", 1), "damaged memtrace trace"),
        (text.replacen("\"memtrace-trace\"", "\"other-format\"", 1), "not a memtrace trace"),
        ("\u{0}\u{1}binary".to_string(), "is not JSON"),
    ] {
        std::fs::write(&damaged, content).unwrap();
        std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = Memtrace::report(&damaged).by_nobody(&nobody).output();
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("memtrace: error: ") && stderr.contains(cause), "{cause}: {stderr}");
    }
}
