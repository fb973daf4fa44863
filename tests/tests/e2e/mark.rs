//! `memtrace mark` from another shell: the phase appears in the trace with
//! the times the marks were sent; a user other than root cannot mark.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;

#[test]
fn marks_from_another_shell_become_a_phase_and_only_root_may_send_them() {
    let _root = require_root();
    let dir = scratch("mark");
    let trace_path = dir.join("trace.json");
    let mut memtrace = Command::new(memtrace_bin())
        .args(["run", "--json"])
        .arg(&trace_path)
        .args(["--", "sleep", "1.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(memtrace.stderr.take().unwrap());
    let line = read_line_with_text(&mut err, "memtrace: tracing PID");
    let pid: u32 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let socket = format!("/run/memtrace/{pid}.sock");
    assert!(std::path::Path::new(&socket).exists(), "{socket}");

    let (unprivileged, bin) = unprivileged_dir("mark");
    let refused = run(as_nobody(&bin).args(["mark", "-p", &pid.to_string(), "intruder"]));
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs root"), "{}", describe(&refused));

    let mark = |args: &[&str]| {
        let out = run(Command::new(memtrace_bin()).arg("mark").args(["-p", &pid.to_string()]).args(args));
        assert!(out.status.success(), "{}", describe(&out));
    };
    let began = Instant::now();
    mark(&["warmup"]);
    std::thread::sleep(Duration::from_millis(300));
    mark(&["--end", "warmup"]);
    let held = began.elapsed().as_secs_f64();
    assert!(memtrace.wait().unwrap().success());
    assert!(!std::path::Path::new(&socket).exists(), "the socket goes with the session");
    std::fs::remove_dir_all(unprivileged).unwrap();

    let trace = read_json(&trace_path);
    let phases = trace["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["warmup"], "{phases:#?}");
    let d = phases[0]["duration_s"].as_f64().unwrap();
    assert!(d >= 0.3 && d <= held, "{d} s between marks sent {held:.3} s apart");
    assert_eq!(phases[0]["open"], false);
}
