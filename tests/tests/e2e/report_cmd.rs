//! `memtrace report TRACE.json`: a saved trace printed again, exactly as the
//! run printed it, by an unprivileged user; a damaged trace gets a one-line
//! cause and a non-zero exit, never a panic.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn a_saved_trace_reports_as_the_run_did_without_privileges_and_damage_is_named() {
    let _root = require_root();
    let (dir, bin) = unprivileged_dir("report");
    let (out, trace_path) = trace_workload(&dir, &[], &["--size-mib", "8", "--touch", "0.5", "--leak", "10"]);
    std::fs::set_permissions(&trace_path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let again = run(as_nobody(&bin).arg("report").arg(&trace_path));
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&out.stdout), "same report");

    let text = std::fs::read_to_string(&trace_path).unwrap();
    let damaged = dir.join("damaged.json");
    for (content, cause) in [
        (text[..text.len() / 3].to_string(), "the trace is truncated"),
        (text.replacen("\"duration_s\":", "\"duration_s\": \"x\", \"was\":", 1), "damaged memtrace trace"),
        (text.replacen("\"memtrace-trace\"", "\"other-format\"", 1), "not a memtrace trace"),
        ("\u{0}\u{1}binary".to_string(), "is not JSON"),
    ] {
        std::fs::write(&damaged, content).unwrap();
        std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = run(as_nobody(&bin).arg("report").arg(&damaged));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("memtrace: error: ") && stderr.contains(cause), "{cause}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
