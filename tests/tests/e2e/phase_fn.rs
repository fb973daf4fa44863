//! `--phase-fn NAME=SYMBOL`: phases from the functions of an unmodified C
//! program, one per outermost call even when the function recurses deeper
//! than the kernel keeps return probes, none left open at exit, with the
//! heap each one gained.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

#[test]
fn each_outermost_call_of_a_phase_function_is_one_phase() {
    let _root = require_root();
    let dir = scratch("phase_fn");
    let bin = build_c("phases", &dir);
    let trace_path = dir.join("trace.json");
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--phase-fn", "walk=walk", "--phase-fn", "batch=batch", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(&bin));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("walks 3 depth 100 sum 303 batches 2"), "{stdout}");
    assert!(stdout.contains("--phase-fn: walk: walk in"), "{stdout}");

    let trace = read_json(&trace_path);
    let phases = trace["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["walk", "walk", "walk", "batch", "batch"], "{phases:#?}");
    assert_eq!(u(&trace["unmatched_phase_ends"]), 0);
    assert_eq!(u(&trace["heap"]["abandoned_calls"]), 0, "{:#}", trace["heap"]);
    for p in phases {
        assert_eq!(p["open"], false, "every phase ended at its function's return: {p:#}");
        assert_eq!(p["depth"], 0, "{p:#}");
        let ms = p["duration_s"].as_f64().unwrap() * 1e3;
        let (heap, slept) = match p["name"].as_str().unwrap() {
            "walk" => (4096, 30.0), // leaked in the outermost call
            _ => (0, 20.0),         // 1 MiB allocated and freed
        };
        assert_eq!(p["heap_growth_bytes"].as_i64().unwrap(), heap, "{p:#}");
        assert!(ms >= slept && ms < slept + 200.0, "{} took {ms:.1} ms: {p:#}", p["name"]);
    }
    // Phases do not overlap and follow the program's order.
    let ends: Vec<(f64, f64)> =
        phases.iter().map(|p: &Value| (p["start_s"].as_f64().unwrap(), p["end_s"].as_f64().unwrap())).collect();
    assert!(ends.windows(2).all(|w| w[0].1 <= w[1].0), "{ends:?}");
}

#[test]
fn allocations_deeper_than_the_kernels_return_probes_are_counted_not_lost_silently() {
    let _root = require_root();
    // 100 walk frames hold the thread's 64 pending return probes: the three
    // mallocs at the bottom get none. Each is seen as never returned when
    // the thread's next allocator call arrives.
    let (trace, report) = trace_phases("phase_fn_deep", "deep");
    assert_eq!((u(&trace["heap"]["abandoned_calls"]), u(&trace["heap"]["open_calls_at_stop"])), (3, 0));
    let names: Vec<&str> = trace["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["walk", "walk", "walk"]);
    assert!(report.contains("calls never returned 3, calls open at stop 0"), "{report}");

    // With _exit right after the walks, no later call reveals the third:
    // it is still open at the exit stop, and counted there.
    let (trace, report) = trace_phases("phase_fn_deep_exit", "deep-exit");
    assert_eq!((u(&trace["heap"]["abandoned_calls"]), u(&trace["heap"]["open_calls_at_stop"])), (2, 1));
    assert!(report.contains("calls never returned 2, calls open at stop 1"), "{report}");
}

/// `phases MODE` traced with walk as a phase function: the trace and the report.
fn trace_phases(scratch_name: &str, mode: &str) -> (Value, String) {
    let dir = scratch(scratch_name);
    let bin = build_c("phases", &dir);
    let trace_path = dir.join("trace.json");
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--phase-fn", "walk=walk", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(&bin)
        .arg(mode));
    assert!(out.status.success(), "{}", describe(&out));
    (read_json(&trace_path), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_phase_function_the_program_lacks_is_refused_before_it_runs() {
    let _root = require_root();
    let dir = scratch("phase_fn_missing");
    let bin = build_c("phases", &dir);
    let out = run(Command::new(memtrace_bin()).args(["run", "--phase-fn", "w=no_such_fn", "--"]).arg(&bin));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("defines no function `no_such_fn`") && stderr.lines().count() == 1, "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("walks"), "the program never ran");
}

#[test]
fn phase_markers_exported_by_a_library_are_found_there() {
    let _root = require_root();
    let dir = scratch("marker_lib");
    let lib = dir.join("libmtmark.so");
    let src = root_dir().join("tests/c");
    let build = |args: &[&str]| {
        let out = run(Command::new("cc").args(["-g", "-O0", "-fno-omit-frame-pointer"]).args(args));
        assert!(out.status.success(), "{}", describe(&out));
    };
    build(&["-shared", "-fPIC", "-o", lib.to_str().unwrap(), src.join("markerlib.c").to_str().unwrap()]);
    let bin = dir.join("uselib");
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    build(&["-o", bin.to_str().unwrap(), src.join("uselib.c").to_str().unwrap(), lib.to_str().unwrap(), &rpath]);

    let trace_path = dir.join("trace.json");
    let out = run(Command::new(memtrace_bin()).args(["run", "--json"]).arg(&trace_path).arg("--").arg(&bin));
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_json(&trace_path);
    let markers = trace["phase_markers"].as_str().unwrap();
    assert!(
        markers.contains("does not export") && markers.contains("also in") && markers.contains("libmtmark.so"),
        "{markers}"
    );
    let phases = trace["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "{phases:#?}");
    assert_eq!(phases[0]["name"], "libphase");
    assert_eq!(phases[0]["heap_growth_bytes"], 8192);
}
