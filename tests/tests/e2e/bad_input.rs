//! Bad input: each case exits non-zero with a one-line cause, and starts nothing.

use std::process::Command;

use crate::common::*;

fn one_line_error(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "expected a one-line cause:\n{}", describe(&out));
    assert!(stderr.starts_with("memtrace: error: "), "{stderr}");
    stderr
}

#[test]
fn unknown_pid() {
    let err = one_line_error(Command::new(memtrace_bin()).args(["-p", "999999"]));
    assert!(err.contains("no process with PID 999999"), "{err}");
}

#[test]
fn command_not_found() {
    let err = one_line_error(Command::new(memtrace_bin()).args(["run", "--", "memtrace-no-such-command", "x"]));
    assert!(err.contains("command not found: memtrace-no-such-command"), "{err}");
}

#[test]
fn nothing_to_trace() {
    let err = one_line_error(&mut Command::new(memtrace_bin()));
    assert!(err.contains("-p PID") && err.contains("run -- CMD"), "{err}");
}

#[test]
fn phase_truth_is_refused_in_attach_mode() {
    let pid = std::process::id().to_string();
    let err = one_line_error(Command::new(memtrace_bin()).args(["-p", &pid, "--phase-truth"]));
    assert!(err.contains("--phase-truth needs run mode"), "{err}");
}

#[test]
fn unwritable_trace_path_is_refused_before_tracing() {
    let _root = require_root();
    let err =
        one_line_error(Command::new(memtrace_bin()).args(["run", "--json", "/nonexistent-dir/t.json", "--", "true"]));
    assert!(err.contains("/nonexistent-dir"), "{err}");
}

#[test]
fn without_privileges_it_says_to_use_sudo() {
    let _root = require_root(); // to drop privileges we must have them
    let (dir, bin) = unprivileged_dir("unprivileged");
    let err = one_line_error(as_nobody(&bin).args(["run", "--", "true"]));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("CAP_BPF") && err.contains("sudo"), "{err}");
}

#[test]
fn an_alloc_lib_that_is_no_allocator_is_refused_with_the_fix() {
    let _root = require_root();
    let err = one_line_error(Command::new(memtrace_bin()).args(["run", "--alloc-lib", "/bin/true", "--", "true"]));
    assert!(err.contains("defines none of the allocator functions") && err.contains("libjemalloc.so.2"), "{err}");
    let err = one_line_error(Command::new(memtrace_bin()).args(["run", "--alloc-lib", "/etc/hostname", "--", "true"]));
    assert!(err.contains("--alloc-lib /etc/hostname") && err.contains("not an ELF file"), "{err}");
}
