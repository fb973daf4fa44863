//! The heap from the allocator probes: leak candidates with symbolized
//! stacks, per-phase growth against the workload's own counting allocator,
//! probe placement, attach mode's unknown frees, and a target whose glibc
//! is not the host's file (another mount namespace, or replaced on disk).

use std::{io::Write, process::Command};

use crate::common::*;
use serde_json::Value;

fn has_frame(leak: &Value, function: &str) -> bool {
    leak["stack"].as_array().unwrap().iter().any(|f| f["function"].as_str().is_some_and(|n| n.contains(function)))
}

#[test]
fn the_workloads_leak_is_one_candidate_and_phase_growth_matches_its_allocator() {
    let _root = require_root();
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
    let _root = require_root();
    let dir = scratch("heap_attach");
    let w = spawn_paused_workload(Command::new(workload_bin()), &dir);
    // Attached after build: search, leak, teardown (frees the heap built before attach), exit.
    let trace = attach_until_exit(w, &dir);
    let heap = &trace["heap"];
    assert!(heap["allocators"][0]["found_by"].as_str().unwrap().contains("the glibc the target maps"), "{heap:#}");
    assert!(u(&heap["unknown_frees"]) > 0, "teardown freed blocks made before attach: {heap:#}");
    assert!(heap["live_bytes"].as_i64().unwrap() >= 0, "{heap:#}");
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#}", trace["leaks"]);
}

/// `workload` (the workload binary, or a command that execs it with these
/// arguments appended) run until it pauses after its build phase.
fn spawn_paused_workload(mut workload: Command, dir: &std::path::Path) -> Steered {
    workload.arg("--file").arg(dir.join("w.arrow"));
    workload.args(["--size-mib", "8", "--heap-mib", "16", "--leak", "100", "--pause-after", "build"]);
    spawn_until(&mut workload, "paused after build")
}

#[test]
fn a_target_in_another_mount_namespace_is_probed_in_its_own_glibc() {
    // A container's view: the target's glibc is another file (a copy, so
    // another inode) at the very path where the host has its own. Probing
    // the host's file would see none of its calls.
    let _root = require_root();
    let dir = scratch("heap_mount_namespace");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let host_libc =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libc.so.6")).unwrap();
    let own_libc = dir.join("libc.so.6");
    std::fs::copy(host_libc, &own_libc).unwrap();
    let script = format!("mount --bind {} {host_libc} && exec \"$0\" \"$@\"", own_libc.display());
    let mut workload = Command::new("unshare");
    workload.args(["--mount", "--propagation", "private", "sh", "-c", &script]).arg(workload_bin());
    let w = spawn_paused_workload(workload, &dir);
    let pid = w.child.id(); // unshare and sh exec: the workload keeps the PID
    let target_maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let inode_of = |line: &str| line.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap();
    let target_inode = target_maps.lines().find(|l| l.ends_with(host_libc)).map(inode_of).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(target_inode, std::fs::metadata(host_libc).unwrap().ino(), "the setup failed: same glibc");

    let trace = attach_until_exit(w, &dir);
    assert_eq!(trace["heap"]["allocators"][0]["path"], host_libc, "named as the target names it: {:#}", trace["heap"]);
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#}", trace["leaks"]);
}

#[test]
fn a_glibc_replaced_on_disk_after_it_was_mapped_is_probed_as_mapped() {
    // A server running across a glibc upgrade maps "libc.so.6 (deleted)":
    // the file at that path now is another one.
    let _root = require_root();
    let dir = scratch("heap_deleted_libc");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let host_libc =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libc.so.6")).unwrap();
    let libs = dir.join("lib");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::copy(host_libc, libs.join("libc.so.6")).unwrap();
    let mut workload = Command::new(workload_bin());
    workload.env("LD_LIBRARY_PATH", &libs);
    let w = spawn_paused_workload(workload, &dir);
    std::fs::remove_file(libs.join("libc.so.6")).unwrap();
    std::fs::copy("/bin/true", libs.join("libc.so.6")).unwrap(); // something else at that path now
    let trace = attach_until_exit(w, &dir);
    let allocator = &trace["heap"]["allocators"][0];
    assert_eq!(allocator["path"], libs.join("libc.so.6").to_str().unwrap(), "{allocator:#}");
    assert!(allocator["found_by"].as_str().unwrap().contains("replaced on disk"), "{allocator:#}");
    assert_eq!(allocator["mapped"], true, "{allocator:#}");
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#}", trace["leaks"]);
}

/// Attaches to the paused workload, lets it finish, returns the trace.
fn attach_until_exit(mut w: Steered, dir: &std::path::Path) -> Value {
    let trace_path = dir.join("trace.json");
    let (mut memtrace, _m_err) = attach_memtrace(w.child.id(), &trace_path);
    writeln!(w.stdin).unwrap();
    assert!(w.child.wait().unwrap().success());
    assert!(memtrace.wait().unwrap().success());
    read_json(&trace_path)
}

/// Allocations in leak groups whose stack passes leaky_cache_insert.
fn leaky_cache_allocations(trace: &Value) -> u64 {
    trace["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| has_frame(l, "leaky_cache_insert"))
        .map(|l| u(&l["count"]))
        .sum()
}
