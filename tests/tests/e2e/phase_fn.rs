//! `--phase-fn NAME=SYMBOL`: phases from the functions of an unmodified C
//! program, one per outermost call even when the function recurses deeper
//! than the kernel keeps return probes, none left open at exit, with the
//! heap each one gained.
use std::path::Path;

use crate::common::*;

/// `memtrace run PHASE_FNS --json DIR/trace.json -- BIN ARGS`.
fn phases_under(dir: &Path, bin: &Path, phase_fns: &[&str], args: &[&str]) -> Memtrace {
    let memtrace = phase_fns.iter().fold(Memtrace::run(), |m, f| m.args(["--phase-fn", f]));
    memtrace
        .json(dir.join("trace.json"))
        .target(std::iter::once(bin.as_os_str()).chain(args.iter().map(|a| a.as_ref())))
}

#[test]
fn each_outermost_call_of_a_phase_function_is_one_phase() {
    let _root = require_root();
    let dir = scratch("phase_fn");
    let bin = build_c("phases", &dir);
    let traced = phases_under(&dir, &bin, &["walk=walk", "batch=batch"], &[]).traced();
    let stdout = traced.report();
    assert!(stdout.contains("walks 3 depth 100 sum 303 batches 2"), "{stdout}");
    assert!(stdout.contains("--phase-fn: walk: walk in"), "{stdout}");

    let trace = traced.trace;
    let phases = &trace.phases;
    let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["walk", "walk", "walk", "batch", "batch"], "{phases:#?}");
    assert_eq!(trace.unmatched_phase_ends, 0);
    assert_eq!(heap(&trace).totals.abandoned_calls, 0, "{:#?}", trace.heap);
    for p in phases {
        assert!(!p.open, "every phase ended at its function's return: {p:#?}");
        assert_eq!(p.depth, 0, "{p:#?}");
        let ms = p.duration_s * 1e3;
        let (heap, slept) = match p.name.as_str() {
            "walk" => (4096, 30.0), // leaked in the outermost call
            _ => (0, 20.0),         // 1 MiB allocated and freed
        };
        assert_eq!(p.heap_growth_bytes, Some(heap), "{p:#?}");
        assert!(ms >= slept && ms < slept + 200.0, "{} took {ms:.1} ms: {p:#?}", p.name);
    }
    // Phases do not overlap and follow the program's order.
    let ends: Vec<(f64, f64)> = phases.iter().map(|p| (p.start_s, p.end_s)).collect();
    assert!(ends.windows(2).all(|w| w[0].1 <= w[1].0), "{ends:?}");
}

#[test]
fn allocations_deeper_than_the_kernels_return_probes_are_counted_not_lost_silently() {
    let _root = require_root();
    // 100 walk frames hold the thread's 64 pending return probes: the three
    // mallocs at the bottom get none. Each is seen as never returned when
    // the thread's next allocator call arrives.
    let deep = trace_phases("phase_fn_deep", "deep");
    let h = heap(&deep.trace);
    assert_eq!((h.totals.abandoned_calls, h.open_calls_at_stop), (3, 0));
    let names: Vec<&str> = deep.trace.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["walk", "walk", "walk"]);
    let report = deep.report();
    assert!(report.contains("calls never returned 3, calls open at stop 0"), "{report}");

    // With _exit right after the walks, no later call reveals the third:
    // it is still open at the exit stop, and counted there.
    let deep_exit = trace_phases("phase_fn_deep_exit", "deep-exit");
    let h = heap(&deep_exit.trace);
    assert_eq!((h.totals.abandoned_calls, h.open_calls_at_stop), (2, 1));
    let report = deep_exit.report();
    assert!(report.contains("calls never returned 2, calls open at stop 1"), "{report}");
}

/// `phases MODE` traced with walk as a phase function.
fn trace_phases(scratch_name: &str, mode: &str) -> Traced {
    let dir = scratch(scratch_name);
    let bin = build_c("phases", &dir);
    phases_under(&dir, &bin, &["walk=walk"], &[mode]).traced()
}

#[test]
fn a_phase_function_the_program_lacks_is_refused_before_it_runs() {
    let _root = require_root();
    let dir = scratch("phase_fn_missing");
    let bin = build_c("phases", &dir);
    let out = Memtrace::run().args(["--phase-fn", "w=no_such_fn"]).target([&bin]).output();
    assert!(!out.status.success());
    let stderr = stderr(&out);
    assert!(stderr.contains("defines no function `no_such_fn`") && stderr.lines().count() == 1, "{stderr}");
    assert!(!stdout(&out).contains("walks"), "the program never ran");
}

#[test]
fn phase_markers_exported_by_a_library_are_found_there() {
    let _root = require_root();
    let dir = scratch("marker_lib");
    let lib = dir.join("libmtmark.so");
    let src = root_dir().join("tests/c");
    cc(&["-shared".as_ref(), "-fPIC".as_ref(), "-o".as_ref(), lib.as_ref(), src.join("markerlib.c").as_ref()]);
    let bin = dir.join("uselib");
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    cc(&["-o".as_ref(), bin.as_ref(), src.join("uselib.c").as_ref(), lib.as_ref(), rpath.as_ref()]);

    let trace = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced().trace;
    let markers = &trace.phase_markers;
    assert!(
        markers.starts_with("attached to memtrace_phase_begin/end in") && markers.contains("libmtmark.so"),
        "{markers}"
    );
    let phases = &trace.phases;
    assert_eq!(phases.len(), 1, "{phases:#?}");
    assert_eq!(phases[0].name, "libphase");
    assert_eq!(phases[0].heap_growth_bytes, Some(8192));
}
