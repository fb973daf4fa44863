//! Bad input: each case exits non-zero with a one-line cause, and starts nothing.
use crate::common::*;

#[test]
fn unknown_pid() {
    let err = Memtrace::attach(999999).one_line_error();
    assert!(err.contains("no process with PID 999999"), "{err}");
}

#[test]
fn command_not_found() {
    let err = Memtrace::run().target(["memtrace-no-such-command", "x"]).one_line_error();
    assert!(err.contains("command not found: memtrace-no-such-command"), "{err}");
}

#[test]
fn nothing_to_trace() {
    let err = Memtrace::bare().one_line_error();
    assert!(err.contains("-p PID") && err.contains("run -- CMD"), "{err}");
}

#[test]
fn phase_truth_is_refused_in_attach_mode() {
    let err = Memtrace::attach(std::process::id()).arg("--phase-truth").one_line_error();
    assert!(err.contains("--phase-truth needs run mode"), "{err}");
}

#[test]
fn unwritable_trace_path_is_refused_before_tracing() {
    let _root = require_root();
    let err = Memtrace::run().json("/nonexistent-dir/t.json").target(["true"]).one_line_error();
    assert!(err.contains("/nonexistent-dir"), "{err}");
}

#[test]
fn without_privileges_it_says_to_use_sudo() {
    let _root = require_root(); // to drop privileges we must have them
    let nobody = unprivileged("unprivileged");
    let err = Memtrace::run().target(["true"]).by_nobody(&nobody).one_line_error();
    assert!(err.contains("CAP_BPF") && err.contains("sudo"), "{err}");
}

#[test]
fn an_alloc_lib_that_is_no_allocator_is_refused_with_the_fix() {
    let _root = require_root();
    let err = Memtrace::run().args(["--alloc-lib", "/bin/true"]).target(["true"]).one_line_error();
    assert!(err.contains("defines none of the allocator functions") && err.contains("libjemalloc.so.2"), "{err}");
    let err = Memtrace::run().args(["--alloc-lib", "/etc/hostname"]).target(["true"]).one_line_error();
    assert!(err.contains("--alloc-lib /etc/hostname") && err.contains("not an ELF file"), "{err}");
}
