//! `memtrace mark` from another shell: the phase appears in the trace with
//! the times the marks were sent; a user other than root cannot mark. And
//! the names a program passes to its own markers, never trusted.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::common::*;

#[test]
fn marks_from_another_shell_become_a_phase_and_only_root_may_send_them() {
    let _root = require_root();
    let dir = scratch("mark");
    let mut memtrace = Memtrace::run().json(dir.join("trace.json")).target(["sleep", "1.5"]).spawn();
    let pid = memtrace.pid;
    let socket = format!("/run/memtrace/{pid}.sock");
    assert!(Path::new(&socket).exists(), "{socket}");

    let nobody = unprivileged("mark");
    let refused = Memtrace::mark(pid).arg("intruder").by_nobody(&nobody).output();
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(stderr(&refused).contains("needs root"), "{}", describe(&refused));

    let began = Instant::now();
    Memtrace::mark(pid).arg("warmup").succeeds();
    std::thread::sleep(Duration::from_millis(300));
    Memtrace::mark(pid).args(["--end", "warmup"]).succeeds();
    let held = began.elapsed().as_secs_f64();
    assert!(memtrace.wait().success());
    assert!(!Path::new(&socket).exists(), "the socket goes with the session");
    drop(nobody);

    let trace = memtrace.trace();
    let names: Vec<&str> = trace.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["warmup"], "{:#?}", trace.phases);
    let d = trace.phases[0].duration_s;
    assert!(d >= 0.3 && d <= held, "{d} s between marks sent {held:.3} s apart");
    assert!(!trace.phases[0].open);
}

/// Names a program passes to its markers are read from its memory, never
/// trusted: capped at the kernel side's buffer, printable, and a pointer
/// to nothing becomes a name that says so.
#[test]
fn hostile_phase_names_are_capped_escaped_and_never_followed() {
    let _root = require_root();
    let dir = scratch("mark_hostile_names");
    let bin = build_c("hostile_names", &dir);
    let traced = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced();
    let names: Vec<&str> = traced.trace.phases.iter().map(|p| p.name.as_str()).collect();
    let capped = "a".repeat(39); // PHASE_NAME_MAX (40) less its NUL
    assert_eq!(names, [capped.as_str(), "\\u{1b}[2J\\u{1b}[31mred\\u{a}", "[unreadable name at 0x10]"]);
    let report = traced.report();
    assert!(!report.contains('\u{1b}'), "no escape sequence reaches the terminal: {report:?}");
    assert!(report.contains("[unreadable name at 0x10]"), "{report}");
}
