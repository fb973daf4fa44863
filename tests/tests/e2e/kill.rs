//! memtrace killed with SIGKILL (nothing of it can run at its end): its
//! programs and links go with its file descriptors, the definitions of its
//! uprobe events are removed by the helper it started, and the target
//! finishes as if never traced. These tests count memtrace's programs in
//! the kernel, so each holds the kernel alone.
use std::{
    io::{BufRead, Write},
    process::Stdio,
    time::Duration,
};

use crate::common::*;

/// Nothing of the memtrace whose PID was `memtrace_pid` is left in the kernel.
fn assert_nothing_left(memtrace_pid: u32, what: &str) {
    let group = format!("memtrace_{memtrace_pid}");
    let left = uprobe_events_left(&group);
    assert!(left.is_empty(), "{what}: uprobe events left after SIGKILL: {left:?}");
    assert_eq!(wait_for_no_programs_of_ours(), 0, "{what}: programs left after SIGKILL");
}

/// Attached, killed, attached again, killed at another moment, three
/// times; a fourth memtrace traces the rest of the run. The workload's own
/// ground truth is whole and the last trace finds its leaks exactly: the
/// killed ones left nothing that harms the target or a later memtrace.
#[test]
fn attached_killed_and_attached_again_three_times_the_workload_ends_right() {
    let _root = require_root_alone();
    assert_eq!(wait_for_no_programs_of_ours(), 0, "another memtrace is running; this test needs the kernel to itself");
    let dir = scratch("kill_attach_again");
    let workload = Workload::in_dir(&dir).size_mib(8).touch(0.3).heap_mib(16).leak(100).pause_after("build").truth();
    let mut w = spawn_until(&mut workload.command(), "paused after build");
    let pid = w.child.id();
    // Killed while attaching (its probes half in), while tracing, and
    // while tracing after the target's threads all ran into its probes.
    for (round, wait) in [(1, None), (2, Some(Duration::ZERO)), (3, Some(Duration::from_millis(500)))] {
        let what = format!("round {round}");
        let mut memtrace = Memtrace::attach(pid).json(dir.join(format!("killed-{round}.json"))).command();
        let mut memtrace = memtrace.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        match wait {
            None => std::thread::sleep(Duration::from_millis(100)),
            Some(wait) => {
                read_line_with_text(&mut std::io::BufReader::new(memtrace.stderr.take().unwrap()), "tracing PID");
                std::thread::sleep(wait);
            }
        }
        let memtrace_pid = memtrace.id();
        memtrace.kill().unwrap();
        memtrace.wait().unwrap();
        assert_nothing_left(memtrace_pid, &what);
        assert!(!dir.join(format!("killed-{round}.json")).exists(), "{what}: no half-written trace");
        assert!(w.child.try_wait().unwrap().is_none(), "{what}: the target lives on");
    }
    let mut last = Memtrace::attach(pid).json(dir.join("trace.json")).spawn();
    writeln!(w.stdin).unwrap();
    drop(w.stdin);
    let mut rest = String::new();
    while w.out.read_line(&mut rest).unwrap() > 0 {}
    assert!(w.child.wait().unwrap().success(), "the target finishes: {rest}");
    assert!(last.wait().success());
    let truth = workload.read_truth();
    assert!(truth.complete, "its ground truth is whole");
    let trace = last.trace();
    let leaked: u64 = trace.leaks.iter().filter(|l| has_frame(&l.stack, "leaky_cache_insert")).map(|l| l.count).sum();
    assert_eq!(leaked, 100, "the last memtrace finds the leaks exactly: {:#?}", trace.leaks);
}

/// `memtrace run` killed while its command runs: the command (no longer
/// traced, no longer held) runs to its end with its ground truth whole.
#[test]
fn run_mode_killed_leaves_the_command_to_finish_right() {
    let _root = require_root_alone();
    assert_eq!(wait_for_no_programs_of_ours(), 0, "another memtrace is running; this test needs the kernel to itself");
    let dir = scratch("kill_run");
    let workload = Workload::in_dir(&dir).size_mib(8).touch(0.3).heap_mib(8).pause_after("build").truth();
    // The command's stdin and stdout are memtrace's: the test steers it through them.
    let mut memtrace = spawn_until(&mut workload.under().command(), "paused after build pid=");
    let target: u32 = memtrace.ready.trim().rsplit('=').next().unwrap().parse().unwrap();
    let memtrace_pid = memtrace.child.id();
    memtrace.child.kill().unwrap();
    memtrace.child.wait().unwrap();
    assert_nothing_left(memtrace_pid, "run mode");
    let status = std::fs::read_to_string(format!("/proc/{target}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "no longer traced: {status}");
    writeln!(memtrace.stdin).unwrap();
    drop(memtrace.stdin);
    // EOF: the command (the pipe's last writer) exited.
    let mut rest = String::new();
    while memtrace.out.read_line(&mut rest).unwrap() > 0 {}
    assert!(workload.read_truth().complete, "its ground truth is whole");
    assert!(!workload.trace_path().exists(), "no half-written trace");
}
