//! The heap from the allocator probes: leak candidates with symbolized
//! stacks, per-phase growth against the workload's own counting allocator,
//! probe placement, attach mode's unknown frees, and a target whose glibc
//! is not the host's file (another mount namespace, or replaced on disk).
use std::{io::Write, path::Path};

use memtrace::trace::{Leak, Trace};

use crate::common::*;

#[test]
fn the_workloads_leak_is_one_candidate_and_phase_growth_matches_its_allocator() {
    let _root = require_root();
    let dir = scratch("heap_run");
    let workload = Workload::in_dir(&dir).size_mib(16).touch(0.5).heap_mib(32).leak(1000).leak_size(4096).truth();
    let Traced { out, trace } = workload.traced(["--explain-probes"]);
    let truth = workload.read_truth();
    let heap = heap(&trace);

    // Probe placement on this glibc: every function on an emulated instruction.
    let stderr = stderr(&out);
    assert!(stderr.contains("memtrace: heap probes in"), "{stderr}");
    for p in &heap.probes {
        if p.offset.is_none() {
            continue; // an alias or a function this glibc lacks
        }
        assert_eq!(p.emulated, Some(true), "{p:#?}");
    }
    let free = heap.probes.iter().find(|p| p.function == "free").unwrap();
    assert!(free.offset.unwrap() > 0, "free's NULL test is stepped over: {free:#?}");

    assert_eq!(heap.read_at, "at the target's exit stop", "{heap:#?}");
    for (counter, value) in heap_losses(heap) {
        assert_eq!(value, 0, "{counter}: {heap:#?}");
    }

    // Exactly the 1000 blocks of 4096 bytes from leaky_cache_insert.
    let leaks = &trace.leaks;
    let leaky: Vec<&Leak> = leaks.iter().filter(|l| has_frame(&l.stack, "leaky_cache_insert")).collect();
    assert_eq!(leaky.len(), 1, "one group after merging unrolled call sites: {leaky:#?}");
    assert_eq!((leaky[0].count, leaky[0].bytes), (1000, 4_096_000), "{:#?}", leaky[0]);
    assert_eq!(leaky[0].phase, "leak");
    let top = &leaky[0].stack[0];
    assert_eq!(
        top.function.as_deref(),
        Some("leaky_cache_insert"),
        "the innermost frame is the caller of malloc: {top:#?}"
    );
    assert!(top.file.as_deref().unwrap().ends_with("markers.rs") && top.line.unwrap() > 0, "{top:#?}");
    // The built heap (32 MiB), freed at teardown, is not a candidate; what
    // else is live at exit is the Rust runtime's few small buffers.
    let others: u64 = leaks.iter().filter(|l| !has_frame(&l.stack, "leaky_cache_insert")).map(|l| l.bytes).sum();
    assert!(others < 64 * 1024, "{others} bytes of other candidates: {leaks:#?}");
    assert!(heap.peak_live_bytes >= 32 << 20, "{heap:#?}");

    // Per-phase growth against the workload's counting allocator (its own
    // allocations; the leak phase's libc::malloc added by hand): within 1 %.
    for (p, t) in trace.phases.iter().zip(&truth.phases) {
        assert_eq!(p.name, t.name);
        let (measured, expected) = (p.heap_growth_bytes.unwrap(), t.heap_growth_bytes);
        let bound = (expected.unsigned_abs() / 100).max(4096);
        assert!(measured.abs_diff(expected) <= bound, "phase {}: measured {measured}, truth {expected}", p.name);
    }
    let report = stdout(&out);
    assert!(report.contains("Leak candidates") && report.contains("leaky_cache_insert (src/markers.rs:"), "{report}");
}

#[test]
fn attach_mid_run_counts_frees_of_older_blocks_as_unknown() {
    let _root = require_root();
    let dir = scratch("heap_attach");
    let w = spawn_paused_workload(paused_after_build(&dir));
    // Attached after build: search, leak, teardown (frees the heap built before attach), exit.
    let trace = attach_until_exit(w, &dir);
    let heap = heap(&trace);
    assert!(heap.allocators[0].found_by.contains("the glibc the target maps"), "{heap:#?}");
    assert!(heap.totals.unknown_frees > 0, "teardown freed blocks made before attach: {heap:#?}");
    assert!(heap.live_bytes >= 0, "{heap:#?}");
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#?}", trace.leaks);
}

/// The workload these attach tests start: it pauses after its build phase.
fn paused_after_build(dir: &Path) -> Workload {
    Workload::in_dir(dir).size_mib(8).heap_mib(16).leak(100).pause_after("build")
}

/// `workload` run until it pauses after its build phase.
fn spawn_paused_workload(workload: Workload) -> Steered {
    spawn_until(&mut workload.command(), "paused after build")
}

/// The path of the glibc this test process maps.
fn host_libc() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libc.so.6"));
    libc.unwrap().to_string()
}

#[test]
fn a_target_in_another_mount_namespace_is_probed_in_its_own_glibc() {
    // A container's view: the target's glibc is another file (a copy, so
    // another inode) at the very path where the host has its own. Probing
    // the host's file would see none of its calls.
    let _root = require_root();
    let dir = scratch("heap_mount_namespace");
    let host_libc = host_libc();
    let own_libc = dir.join("libc.so.6");
    std::fs::copy(&host_libc, &own_libc).unwrap();
    let script = format!("mount --bind {} {host_libc} && exec \"$0\" \"$@\"", own_libc.display());
    let workload =
        paused_after_build(&dir).through(["unshare", "--mount", "--propagation", "private", "sh", "-c", &script]);
    let w = spawn_paused_workload(workload);
    let pid = w.child.id(); // unshare and sh exec: the workload keeps the PID
    let target_maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let inode_of = |line: &str| line.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap();
    let target_inode = target_maps.lines().find(|l| l.ends_with(&host_libc)).map(inode_of).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(target_inode, std::fs::metadata(&host_libc).unwrap().ino(), "the setup failed: same glibc");

    let trace = attach_until_exit(w, &dir);
    let heap = heap(&trace);
    assert_eq!(heap.allocators[0].path, host_libc, "named as the target names it: {heap:#?}");
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#?}", trace.leaks);
}

#[test]
fn a_glibc_replaced_on_disk_after_it_was_mapped_is_probed_as_mapped() {
    // A server running across a glibc upgrade maps "libc.so.6 (deleted)":
    // the file at that path now is another one.
    let _root = require_root();
    let dir = scratch("heap_deleted_libc");
    let libs = dir.join("lib");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::copy(host_libc(), libs.join("libc.so.6")).unwrap();
    let w = spawn_paused_workload(paused_after_build(&dir).env("LD_LIBRARY_PATH", &libs));
    std::fs::remove_file(libs.join("libc.so.6")).unwrap();
    std::fs::copy("/bin/true", libs.join("libc.so.6")).unwrap(); // something else at that path now
    let trace = attach_until_exit(w, &dir);
    let allocator = &heap(&trace).allocators[0];
    assert_eq!(allocator.path, libs.join("libc.so.6").to_str().unwrap(), "{allocator:#?}");
    assert!(allocator.found_by.contains("replaced on disk"), "{allocator:#?}");
    assert!(allocator.mapped, "{allocator:#?}");
    assert_eq!(leaky_cache_allocations(&trace), 100, "{:#?}", trace.leaks);
}

/// Attaches to the paused workload, lets it finish, returns the trace.
fn attach_until_exit(mut w: Steered, dir: &Path) -> Trace {
    let mut memtrace = Memtrace::attach(w.child.id()).json(dir.join("trace.json")).spawn();
    writeln!(w.stdin).unwrap();
    assert!(w.child.wait().unwrap().success());
    assert!(memtrace.wait().success());
    memtrace.trace()
}

/// Allocations in leak groups whose stack passes leaky_cache_insert.
fn leaky_cache_allocations(trace: &Trace) -> u64 {
    trace.leaks.iter().filter(|l| has_frame(&l.stack, "leaky_cache_insert")).map(|l| l.count).sum()
}
