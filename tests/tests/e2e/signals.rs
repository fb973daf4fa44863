//! memtrace stopped by SIGINT, SIGTERM or SIGHUP at any moment of its life
//! (while it attaches, while it traces, while it writes its report and
//! files): it reports what it traced, every output file is whole (the
//! trace passes the schema, the Chrome trace is JSON, every events line is
//! an object), nothing half-written is left beside them, and it exits 0 in
//! attach mode, with the command's exit code in run mode.
use std::{
    io::Read,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;

const SIGNALS: [(i32, &str); 3] = [
    (libc::SIGINT, "interrupted (SIGINT)"),
    (libc::SIGTERM, "terminated (SIGTERM)"),
    (libc::SIGHUP, "hung up (SIGHUP)"),
];

/// When the signal is sent.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// This long after memtrace caught its signals (its first step):
    /// checking, loading, attaching.
    Starting(u64),
    /// After it said it is tracing.
    Tracing,
    /// A second signal right after a first SIGINT: while it stops.
    Stopping,
    /// A second signal once the report began (after a first SIGINT):
    /// while it writes the report and the files, and detaches.
    Reporting,
}

/// Waits until memtrace's handlers are in (SigCgt in /proc/PID/status has
/// the signal's bit): before that, the kernel's default would kill it,
/// as it would any program before its first instruction.
fn wait_for_handler(child: &Child, signal: i32) {
    let status = format!("/proc/{}/status", child.id());
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let caught = text.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
        if u64::from_str_radix(caught, 16).unwrap_or(0) & (1 << (signal - 1)) != 0 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "memtrace never caught signal {signal}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child (not yet waited for: its PID is ours).
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits for memtrace's exit, bounded.
fn exit_of(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: memtrace did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The three output files are whole, and nothing else is in `dir`.
fn assert_outputs_whole(dir: &Path, what: &str) -> memtrace::trace::Trace {
    let trace = read_trace(&dir.join("trace.json"));
    read_value(&dir.join("chrome.json"));
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    for line in events.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: events line {line:?} is not JSON: {e}"));
        assert!(v["op"].is_string(), "{what}: {line}");
    }
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["chrome.json", "events.jsonl", "trace.json"], "{what}: files left beside the outputs");
    trace
}

fn with_outputs(memtrace: Memtrace, dir: &Path) -> Memtrace {
    memtrace
        .json(dir.join("trace.json"))
        .arg("--chrome-trace")
        .arg(dir.join("chrome.json"))
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .arg("-q")
}

/// Sends `signal` at `moment`; the exit status and stdout (the report).
fn stop_at(memtrace: Memtrace, signal: i32, moment: Moment) -> (std::process::ExitStatus, String, Child) {
    let mut child =
        memtrace.command().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut report = String::new();
    match moment {
        Moment::Starting(ms) => {
            wait_for_handler(&child, signal);
            std::thread::sleep(Duration::from_millis(ms));
            send(&child, signal);
        }
        Moment::Tracing => {
            read_line_with_text(&mut stderr, "memtrace: tracing PID");
            std::thread::sleep(Duration::from_millis(300));
            send(&child, signal);
        }
        Moment::Stopping | Moment::Reporting => {
            read_line_with_text(&mut stderr, "memtrace: tracing PID");
            std::thread::sleep(Duration::from_millis(300));
            send(&child, libc::SIGINT);
            if matches!(moment, Moment::Reporting) {
                std::io::BufRead::read_line(&mut stdout, &mut report).unwrap();
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
            send(&child, signal);
        }
    }
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    stdout.read_to_string(&mut report).unwrap();
    let status = exit_of(&mut child, &format!("{moment:?}"));
    drain.join().unwrap();
    (status, report, child)
}

#[test]
fn attach_mode_reports_whole_whenever_a_signal_stops_it() {
    let _root = require_root();
    let dir = scratch("signals_attach");
    // A target that allocates all the time (so every output has content).
    let mut target = KillOnDrop(
        std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import time\nwhile True:\n    x = [bytearray(64) for _ in range(200)]\n    time.sleep(0.005)",
            ])
            .spawn()
            .unwrap(),
    );
    for moment in [Moment::Starting(0), Moment::Starting(40), Moment::Starting(200), Moment::Tracing, Moment::Stopping]
    {
        for (signal, reason) in SIGNALS {
            let what = format!("{moment:?} {reason}");
            let out = dir.join(format!("{signal}-{moment:?}").replace(['(', ')'], ""));
            std::fs::create_dir_all(&out).unwrap();
            let (status, report, _) = stop_at(with_outputs(Memtrace::attach(target.0.id()), &out), signal, moment);
            assert_eq!(status.code(), Some(0), "{what}: {status:?}\n{report}");
            assert!(report.contains("attach mode"), "{what}: no report:\n{report}");
            let trace = assert_outputs_whole(&out, &what);
            let first =
                if matches!(moment, Moment::Stopping | Moment::Reporting) { "interrupted (SIGINT)" } else { reason };
            assert_eq!(trace.stop_reason, first, "{what}");
        }
    }
    assert!(target.0.try_wait().unwrap().is_none(), "the target lives on");
}

/// The target, killed however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run mode passes the signal on to the command and reports at its exit:
/// memtrace exits with the command's code (128 + the signal).
#[test]
fn run_mode_passes_the_signal_on_and_reports_whole() {
    let _root = require_root();
    let dir = scratch("signals_run");
    for moment in [Moment::Starting(0), Moment::Starting(30), Moment::Tracing, Moment::Reporting] {
        for (signal, _) in SIGNALS {
            let what = format!("{moment:?} {signal}");
            let out = dir.join(format!("{signal}-{moment:?}").replace(['(', ')'], ""));
            std::fs::create_dir_all(&out).unwrap();
            let memtrace = with_outputs(Memtrace::run(), &out).target(["sleep", "600"]);
            let (status, report, _) = stop_at(memtrace, signal, moment);
            let first = if matches!(moment, Moment::Reporting) { libc::SIGINT } else { signal };
            assert_eq!(status.code(), Some(128 + first), "{what}: {status:?}\n{report}");
            let trace = assert_outputs_whole(&out, &what);
            assert_eq!(trace.target.exit_signal, Some(first), "{what}");
        }
    }
}
