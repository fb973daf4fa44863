//! The heap from the allocator probes: leak candidates with symbolized
//! stacks, per-phase growth against the workload's own counting allocator,
//! probe placement, and attach mode's unknown frees.
mod common;

use std::{io::Write, process::Command};

use common::*;
use serde_json::Value;

fn has_frame(leak: &Value, function: &str) -> bool {
    leak["stack"].as_array().unwrap().iter().any(|f| f["function"].as_str().is_some_and(|n| n.contains(function)))
}

#[test]
fn the_workloads_leak_is_one_candidate_and_phase_growth_matches_its_allocator() {
    require_root();
    let dir = scratch("heap_run");
    let (trace_path, truth_path) = (dir.join("trace.json"), dir.join("truth.json"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--explain-probes", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(workload_bin())
        .arg("--file")
        .arg(dir.join("w.arrow"))
        .args(["--size-mib", "16", "--touch", "0.5", "--heap-mib", "32", "--leak", "1000", "--leak-size", "4096"])
        .arg("--truth")
        .arg(&truth_path));
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_json(&trace_path);
    let truth = read_json(&truth_path);
    let heap = &trace["heap"];

    // Probe placement on this glibc: every function on an emulated instruction.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("memtrace: heap probes in"), "{stderr}");
    for p in heap["probes"].as_array().unwrap() {
        if p["offset"].is_null() {
            continue; // an alias or a function this glibc lacks
        }
        assert_eq!(p["emulated"], true, "{p:#}");
    }
    let free = heap["probes"].as_array().unwrap().iter().find(|p| p["function"] == "free").unwrap();
    assert!(u(&free["offset"]) > 0, "free's NULL test is stepped over: {free:#}");

    assert_eq!(heap["read_at"], "at the target's exit stop", "{heap:#}");
    for counter in ["dropped_allocs", "lost_stacks", "lost_calls", "abandoned_calls", "missed_frees", "unknown_frees"] {
        assert_eq!(u(&heap[counter]), 0, "{counter}: {heap:#}");
    }

    // Exactly the 1000 blocks of 4096 bytes from leaky_cache_insert.
    let leaks = trace["leaks"].as_array().unwrap();
    let leaky: Vec<&Value> = leaks.iter().filter(|l| has_frame(l, "leaky_cache_insert")).collect();
    assert_eq!(leaky.len(), 1, "one group after merging unrolled call sites: {leaky:#?}");
    assert_eq!((u(&leaky[0]["count"]), u(&leaky[0]["bytes"])), (1000, 4_096_000), "{:#}", leaky[0]);
    assert_eq!(leaky[0]["phase"], "leak");
    let top = &leaky[0]["stack"][0];
    assert_eq!(top["function"], "leaky_cache_insert", "the innermost frame is the caller of malloc: {top:#}");
    assert!(top["file"].as_str().unwrap().ends_with("markers.rs") && u(&top["line"]) > 0, "{top:#}");
    // The built heap (32 MiB), freed at teardown, is not a candidate; what
    // else is live at exit is the Rust runtime's few small buffers.
    let others: u64 = leaks.iter().filter(|l| !has_frame(l, "leaky_cache_insert")).map(|l| u(&l["bytes"])).sum();
    assert!(others < 64 * 1024, "{others} bytes of other candidates: {leaks:#?}");
    assert!(u(&heap["peak_live_bytes"]) as i64 >= 32 << 20, "{heap:#}");

    // Per-phase growth against the workload's counting allocator (its own
    // allocations; the leak phase's libc::malloc added by hand): within 1 %.
    let phases = trace["phases"].as_array().unwrap();
    for (p, t) in phases.iter().zip(truth["phases"].as_array().unwrap()) {
        assert_eq!(p["name"], t["name"]);
        let (measured, expected) = (p["heap_growth_bytes"].as_i64().unwrap(), t["heap_growth_bytes"].as_i64().unwrap());
        let bound = (expected.unsigned_abs() / 100).max(4096);
        assert!(measured.abs_diff(expected) <= bound, "phase {}: measured {measured}, truth {expected}", p["name"]);
    }
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Leak candidates") && report.contains("leaky_cache_insert (src/markers.rs:"), "{report}");
}

#[test]
fn attach_mid_run_counts_frees_of_older_blocks_as_unknown() {
    require_root();
    let dir = scratch("heap_attach");
    let mut w = spawn_until(
        Command::new(workload_bin()).arg("--file").arg(dir.join("w.arrow")).args([
            "--size-mib",
            "8",
            "--heap-mib",
            "16",
            "--leak",
            "100",
            "--pause-after",
            "build",
        ]),
        "paused after build",
    );
    let trace_path = dir.join("trace.json");
    let (mut memtrace, _m_err) = attach_memtrace(w.child.id(), &trace_path);
    writeln!(w.stdin).unwrap(); // search, leak, teardown (frees the heap built before attach), exit
    assert!(w.child.wait().unwrap().success());
    assert!(memtrace.wait().unwrap().success());

    let trace = read_json(&trace_path);
    let heap = &trace["heap"];
    assert!(heap["allocators"][0]["found_by"].as_str().unwrap().contains("the glibc the target maps"), "{heap:#}");
    assert!(u(&heap["unknown_frees"]) > 0, "teardown freed blocks made before attach: {heap:#}");
    assert!(heap["live_bytes"].as_i64().unwrap() >= 0, "{heap:#}");
    let leaky: u64 = trace["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| has_frame(l, "leaky_cache_insert"))
        .map(|l| u(&l["count"]))
        .sum();
    assert_eq!(leaky, 100, "{:#}", trace["leaks"]);
}
