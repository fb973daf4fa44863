//! Bad input: each case exits non-zero with a one-line cause, and starts nothing.
use crate::common::*;

/// Each case: what it is, the command, and what its one-line cause must say.
fn assert_refused(cases: &[(&str, Memtrace, &[&str])]) {
    for (what, memtrace, says) in cases {
        let err = memtrace.one_line_error();
        for needle in *says {
            assert!(err.contains(needle), "{what}: `{needle}` not in {err}");
        }
    }
}

/// Refused while reading the command line: no root needed.
#[test]
fn bad_arguments() {
    let own_pid = std::process::id();
    assert_refused(&[
        ("unknown PID", Memtrace::attach(999999), &["no process with PID 999999"]),
        (
            "command not found",
            Memtrace::run().target(["memtrace-no-such-command", "x"]),
            &["command not found: memtrace-no-such-command"],
        ),
        ("nothing to trace", Memtrace::bare(), &["-p PID", "run -- CMD"]),
        (
            "--phase-truth in attach mode",
            Memtrace::attach(own_pid).arg("--phase-truth"),
            &["--phase-truth needs run mode"],
        ),
    ]);
}

/// Refused before tracing, as root (or as nobody, which needs root to become).
#[test]
fn bad_environment() {
    let _root = require_root();
    let nobody = unprivileged("unprivileged");
    assert_refused(&[
        (
            "unwritable trace path",
            Memtrace::run().json("/nonexistent-dir/t.json").target(["true"]),
            &["/nonexistent-dir"],
        ),
        ("without privileges", Memtrace::run().target(["true"]).by_nobody(&nobody), &["CAP_BPF", "sudo"]),
        (
            "an --alloc-lib that is no allocator",
            Memtrace::run().args(["--alloc-lib", "/bin/true"]).target(["true"]),
            &["defines none of the allocator functions", "libjemalloc.so.2"],
        ),
        (
            "an --alloc-lib that is no ELF file",
            Memtrace::run().args(["--alloc-lib", "/etc/hostname"]).target(["true"]),
            &["--alloc-lib /etc/hostname", "not an ELF file"],
        ),
    ]);
}
