//! `memtrace run -- CMD`: the bundled workload traced from its first instruction.

use std::{os::unix::fs::PermissionsExt, process::Command};

use crate::common::*;

#[test]
fn traces_the_workload_and_agrees_with_the_kernels_fault_count() {
    let _root = require_root();
    let dir = scratch("run_mode");
    let (trace_path, truth_path, arrow) = (dir.join("trace.json"), dir.join("truth.json"), dir.join("w.arrow"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(workload_bin())
        .arg("--file")
        .arg(&arrow)
        .args(["--size-mib", "32", "--touch", "0.5", "--heap-mib", "8", "--truth"])
        .arg(&truth_path));
    assert!(out.status.success(), "{}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("memtrace report: PID"), "{report}");

    let trace = read_json(&trace_path);
    let truth = read_json(&truth_path);
    assert_eq!(trace["format"], "memtrace-trace");
    assert_eq!(trace["version"], 1);
    assert_eq!(trace["mode"], "run");
    assert_eq!(trace["target"]["pid"], truth["pid"], "the traced PID is the workload's own");
    assert_eq!(trace["target"]["exit_code"], 0);
    let mode = std::fs::metadata(&trace_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "traces are private to root");

    // Our count of user-mode faults against the kernel's own (rusage). The
    // kernel also counts faults it takes on the target's memory inside
    // syscalls (copy_to_user, execve), so ours may be lower, but the same order.
    let c = &trace["counters"];
    let measured = u(&c["page_faults"]);
    let kernel = u(&trace["kernel"]["minor_faults"]) + u(&trace["kernel"]["major_faults"]);
    assert!(measured > 100, "{c:#}");
    assert!(measured * 2 >= kernel && measured <= kernel * 2, "measured {measured} faults, kernel counted {kernel}");
    assert_eq!(u(&c["ringbuf_drops"]), 0, "{c:#}");
    assert_eq!(u(&c["page_faults_seen"]), measured, "every counted fault reached userspace");
    assert!(u(&c["mmap_calls"]) >= 1 && u(&c["munmap_calls"]) >= 1, "{c:#}");

    // The Arrow file is among the mapped files with its real size, and the
    // search phase's reads faulted inside its mapping.
    let path = truth["file"]["path"].as_str().unwrap();
    let f = file_entry(&trace, path);
    assert_eq!(f["size_bytes"], truth["file"]["size_bytes"]);
    assert_eq!(f["inode"], truth["file"]["inode"]);
    let size = u(&truth["file"]["size_bytes"]);
    assert!(u(&f["mapped_bytes"]) >= size, "{f:#}");
    assert!(u(&f["mmap_calls"]) >= 1, "{f:#}");
    assert!(u(&f["page_faults"]["total"]) > 0, "{f:#}");
    assert_eq!(u(&f["mapped_at_end_bytes"]), 0, "teardown unmapped it: {f:#}");
    // The kernel truth was read at the exit stop, mappings intact: the
    // workload's own binary is still mapped there, and measured agrees.
    assert!(trace["final_truth"].as_str().unwrap().contains("at the target's exit"), "{}", trace["final_truth"]);
    assert_eq!(u(&f["kernel_rss_bytes"]), 0, "unmapped at teardown, so nothing resident at exit: {f:#}");
    assert_eq!(f["estimates"]["reference"], "peak_resident_bytes", "an unmapped file is judged by its peak");
    assert_eq!(u(&f["peak_resident_bytes"]), u(&f["measured_loaded_bytes"]), "{f:#}");

    // Phases from the marker uprobes: the workload's, in order, with its own
    // CLOCK_MONOTONIC times within 5 ms.
    assert!(trace["phase_markers"].as_str().unwrap().starts_with("attached"), "{}", trace["phase_markers"]);
    let phases = trace["phases"].as_array().unwrap();
    let truth_phases = truth["phases"].as_array().unwrap();
    let names: Vec<_> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["write", "load", "build", "search", "leak", "teardown"]);
    for (p, t) in phases.iter().zip(truth_phases) {
        assert_eq!(p["name"], t["name"]);
        assert_eq!(p["open"], false);
        let ms = |a: u64, b: u64| a.abs_diff(b) as f64 / 1e6;
        assert!(ms(u(&p["start_monotonic_ns"]), u(&t["start_ns"])) < 5.0, "{p:#} vs {t:#}");
        assert!(ms(u(&p["end_monotonic_ns"]), u(&t["end_ns"])) < 5.0, "{p:#} vs {t:#}");
    }
    // The Arrow file is only read inside phases: the per-phase loaded bytes
    // add up to the total, and the search phase loaded some.
    let in_phase = |p: &serde_json::Value| {
        p["files"].as_array().unwrap().iter().find(|f| f["path"] == path).map_or(0, |f| u(&f["measured_loaded_bytes"]))
    };
    let per_phase: u64 = phases.iter().map(in_phase).sum();
    assert_eq!(per_phase, u(&f["measured_loaded_bytes"]), "{phases:#?}");
    assert!(in_phase(&phases[3]) > 0, "search loaded nothing: {:#}", phases[3]);
    assert_eq!(in_phase(&phases[2]), 0, "build does not touch the file: {:#}", phases[2]);
}

#[test]
fn markers_of_a_program_started_through_a_wrapper_are_probed_at_its_exec() {
    // `env` is what memtrace spawns; the workload's markers (in its own
    // executable) are probed at the exec stop, so even the first phase,
    // which begins at once, is seen.
    let _root = require_root();
    let dir = scratch("run_through_env");
    let (trace_path, truth_path) = (dir.join("trace.json"), dir.join("truth.json"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "-q", "--json"])
        .arg(&trace_path)
        .args(["--", "env", "MEMTRACE_TEST=1"])
        .arg(workload_bin())
        .arg("--file")
        .arg(dir.join("w.arrow"))
        .args(["--size-mib", "4", "--touch", "0.3", "--truth"])
        .arg(&truth_path));
    assert!(out.status.success(), "{}", describe(&out));
    let (trace, truth) = (read_json(&trace_path), read_json(&truth_path));
    let markers = trace["phase_markers"].as_str().unwrap();
    assert!(markers.ends_with(&format!("also in {}", workload_bin().display())), "{markers}");
    let names = |phases: &serde_json::Value| -> Vec<String> {
        phases.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(&trace["phases"]), names(&truth["phases"]));
}

#[test]
fn propagates_the_commands_exit_code_and_still_reports() {
    let _root = require_root();
    let dir = scratch("run_exit_code");
    let trace_path = dir.join("t.json");
    let out =
        run(Command::new(memtrace_bin()).args(["run", "--json"]).arg(&trace_path).args(["--", "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let trace = read_json(&trace_path);
    assert_eq!(trace["target"]["exit_code"], 3);
    assert!(u(&trace["counters"]["page_faults"]) > 0);
}

#[test]
fn phase_truth_reads_smaps_at_every_marker_and_each_phase_matches_it() {
    let _root = require_root();
    let dir = scratch("run_phase_truth");
    let (trace_path, truth_path, arrow) = (dir.join("trace.json"), dir.join("truth.json"), dir.join("w.arrow"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--phase-truth", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(workload_bin())
        .arg("--file")
        .arg(&arrow)
        .args(["--size-mib", "32", "--touch", "0.4", "--heap-mib", "8", "--truth"])
        .arg(&truth_path));
    assert!(out.status.success(), "the SIGSTOPs at the markers must not reach the workload: {}", describe(&out));
    let trace = read_json(&trace_path);
    let truth = read_json(&truth_path);
    assert!(trace["phase_truth"].as_str().unwrap().starts_with("smaps read at 12 phase boundaries"), "{}", trace);
    let path = truth["file"]["path"].as_str().unwrap();
    let phases = trace["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 6, "{phases:#?}");
    let mut arrow_change = 0i64;
    for p in phases {
        assert_eq!(p["kernel_truth_at_boundaries"], true, "{p:#}");
        for f in p["files"].as_array().unwrap() {
            let measured = f["measured_rss_change_bytes"].as_i64().unwrap();
            let kernel = f["kernel_rss_change_bytes"].as_i64().unwrap();
            // The bound: 1 % or 64 KiB, whichever is larger.
            let bound = (kernel.unsigned_abs() / 100).max(64 * 1024);
            assert!(measured.abs_diff(kernel) <= bound, "phase {}: {f:#}", p["name"]);
            if f["path"] == path {
                arrow_change += kernel;
            }
        }
    }
    // load and search loaded the Arrow file, teardown released all of it.
    let in_phase = |i: usize| phases[i]["files"].as_array().unwrap().iter().find(|f| f["path"] == path).cloned();
    let search = in_phase(3).expect("search loaded the Arrow file");
    assert!(search["kernel_rss_change_bytes"].as_i64().unwrap() > 0, "{search:#}");
    assert!(in_phase(2).is_none(), "build does not touch the file: {:#}", phases[2]);
    assert_eq!(arrow_change, 0, "the file ends unmapped: what phases loaded, teardown released");
}
