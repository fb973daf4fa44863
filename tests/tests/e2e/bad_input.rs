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
    // A zombie: a child that exited and was not waited for yet.
    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    let stat = format!("/proc/{}/stat", zombie.id());
    while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_refused(&[
        ("unknown PID", Memtrace::attach(999999), &["no process with PID 999999"]),
        ("a kernel thread", Memtrace::attach(2), &["PID 2", "is a kernel thread"]),
        ("a zombie", Memtrace::attach(zombie.id()), &["has exited"]),
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
        (
            "--children in run mode",
            Memtrace::run().arg("--children").target(["true"]),
            &["--children is for attach mode"],
        ),
        (
            "--cgroup that does not exist",
            Memtrace::bare().args(["--cgroup", "/no/such/cgroup"]),
            &["no such directory"],
        ),
        ("--cgroup not a cgroup", Memtrace::bare().args(["--cgroup", "/tmp"]), &["not a cgroup v2 directory"]),
        ("--cgroup with -p", Memtrace::attach(own_pid).args(["--cgroup", "/tmp"]), &["without -p PID"]),
    ]);
    zombie.wait().unwrap();
    // Bad values: refused by the parser (exit 2) with the option and the
    // reason on the first line, before anything is traced or written.
    let dir = scratch("bad_values");
    let json = dir.join("t.json");
    for (option, value, says) in [
        ("--interval", "0", "below the 10ms minimum"),
        ("--interval", "fast", "not an interval like 100ms"),
        ("--duration", "-1", "not a positive number of seconds"),
        ("--duration", "0", "not a positive number of seconds"),
        ("--leak-age", "abc", "not a positive number of seconds"),
        ("--growth-window", "0", "not in 2..=600"),
        ("--max-phases", "0", "0 is not in 1.."),
        ("--unwind", "frames", "possible values: fp, dwarf"),
    ] {
        let out = Memtrace::run().args([option, value]).json(&json).target(["true"]).output();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{option} {value}: {}", describe(&out));
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(&format!("invalid value '{value}' for '{option}")), "{option} {value}: {err}");
        assert!(err.contains(says), "{option} {value}: `{says}` not in {err}");
        assert!(!json.exists(), "{option} {value}: nothing written");
    }
    assert_refused(&[(
        "--phase-fn without =",
        Memtrace::run().args(["--phase-fn", "search"]).target(["true"]),
        &["--phase-fn search", "expected NAME=SYMBOL"],
    )]);
    // An option `run` does not know, before the command: refused by the
    // parser (exit 2), the closest known one suggested; never run as the command.
    for (flag, suggested) in [("--phase-trut", "--phase-truth"), ("--no-such-flag", "")] {
        let out = Memtrace::run().arg(flag).target(["true"]).output();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", describe(&out));
        assert!(err.contains(&format!("unexpected argument '{flag}'")), "{err}");
        assert!(err.contains(suggested), "{flag}: no suggestion of {suggested}: {err}");
        assert!(!err.contains("command not found"), "{err}");
    }
}

/// Refused before tracing, as root (or as nobody, which needs root to become).
#[test]
fn bad_environment() {
    let _root = require_root();
    let nobody = unprivileged("unprivileged");
    // A cgroup made here (root only).
    if let Some(root) = memtrace::target::cgroup::mount_point() {
        let empty = root.join(format!("memtrace-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert_refused(&[
            ("the root cgroup", Memtrace::bare().arg("--cgroup").arg(&root), &["the root cgroup"]),
            ("an empty cgroup", Memtrace::bare().arg("--cgroup").arg(&empty), &["no process in it yet"]),
        ]);
        let _ = std::fs::remove_dir(&empty);
    }
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
