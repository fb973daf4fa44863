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

/// A program that marks a phase per request keeps a bounded trace: past
/// `--max-phases` the requests are summed by path, and the sums (listed
/// plus folded) are what the program did.
#[test]
fn phases_past_max_phases_are_summed_by_path_and_still_add_up() {
    let _root = require_root();
    let dir = scratch("mark_max_phases");
    let bin = build_c("requests", &dir);
    let traced = Memtrace::run().args(["--max-phases", "10"]).json(dir.join("trace.json")).target([&bin]).traced();
    let report = traced.report();
    let truth = report.lines().find(|l| l.starts_with("requests ")).unwrap_or_else(|| panic!("{report}"));
    let fields: Vec<i64> = truth.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [requests, kept_bytes] = fields[..] else { panic!("{truth}") };
    let t = &traced.trace;
    let names: Vec<&str> = t.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(names[0], "startup");
    assert!(names[1..].iter().all(|n| *n == "request"), "{names:?}");
    assert_eq!(t.phases[0].heap_growth_bytes, Some(1 << 16));
    let [folded] = &t.phases_folded[..] else { panic!("{:#?}", t.phases_folded) };
    assert_eq!((folded.path.as_str(), folded.count as i64), ("request", requests - 9));
    assert_eq!(folded.heap_growth_phases, folded.count, "every folded request's heap totals were read");
    let listed: i64 = t.phases[1..].iter().map(|p| p.heap_growth_bytes.unwrap()).sum();
    assert_eq!(listed + folded.heap_growth_bytes.unwrap(), kept_bytes, "listed {listed} + folded {folded:?}");
    assert!(folded.first_start_s >= t.phases[9].end_s && folded.last_end_s <= t.duration_s, "{folded:?}");
    // The process's own phases are folded the same way.
    assert_eq!(t.processes[0].phases.len(), 10);
    assert_eq!(t.processes[0].phases_folded, t.phases_folded);
    let line = format!(
        "+ {} more finished phases, past --max-phases",
        memtrace::output::report::thousands(requests as u64 - 9)
    );
    assert!(report.contains(&line), "{line:?} in\n{report}");
}
