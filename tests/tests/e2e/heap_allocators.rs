//! The heap through other allocator functions and other allocators: a C
//! program leaking through calloc, realloc and posix_memalign (glibc, then
//! jemalloc, then tcmalloc, preloaded and named with --alloc-lib), growth suspects and the
//! --events stream, and a Rust target with mimalloc linked statically.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::common::*;
use serde_json::Value;

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const TCMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";

fn build_leaky(dir: &Path) -> PathBuf {
    build_c("leaky", dir)
}

/// The line of leaky.c carrying `/* SITE:name */`.
fn site_line(name: &str) -> u64 {
    let text = std::fs::read_to_string(root_dir().join("tests/c/leaky.c")).unwrap();
    let marker = format!("/* SITE:{name} */");
    text.lines().position(|l| l.contains(&marker)).map(|i| i as u64 + 1).unwrap()
}

/// The leak group whose innermost frame is `function`.
fn group<'a>(trace: &'a Value, function: &str) -> &'a Value {
    let leaks = trace["leaks"].as_array().unwrap();
    let found: Vec<&Value> = leaks.iter().filter(|l| l["stack"][0]["function"] == function).collect();
    assert_eq!(found.len(), 1, "one group allocated in {function}: {leaks:#?}");
    found[0]
}

/// The three leaks of leaky.c, each at its allocator function's site, exact.
fn assert_c_leaks(trace: &Value) {
    for (function, site, count, bytes) in [
        ("leak_with_calloc", "calloc", 100, 100_000),
        ("leak_with_realloc", "realloc", 50, 150_000),
        ("leak_with_posix_memalign", "posix_memalign", 30, 150_000),
    ] {
        let g = group(trace, function);
        assert_eq!((u(&g["count"]), u(&g["bytes"])), (count, bytes), "{g:#}");
        let top = &g["stack"][0];
        assert!(top["file"].as_str().unwrap().ends_with("leaky.c"), "{top:#}");
        assert_eq!(u(&top["line"]), site_line(site), "the {site} call's line: {top:#}");
        assert_eq!(g["stack"][1]["function"], "main", "{g:#}");
    }
}

#[test]
fn a_c_program_leaking_through_calloc_realloc_and_posix_memalign_is_reported_per_site() {
    let _root = require_root();
    let dir = scratch("heap_c");
    let leaky = build_leaky(&dir);
    let (trace_path, events_path) = (dir.join("trace.json"), dir.join("events.ndjson"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--growth-window", "3", "--events"])
        .arg(&events_path)
        .arg("--json")
        .arg(&trace_path)
        .arg("--")
        .arg(&leaky)
        .args(["grow", "2.5"]));
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_json(&trace_path);
    let heap = &trace["heap"];
    assert_c_leaks(&trace);
    for counter in ["dropped_allocs", "lost_stacks", "lost_calls", "abandoned_calls", "missed_frees", "unknown_frees"] {
        assert_eq!(u(&heap[counter]), 0, "{counter}: {heap:#}");
    }

    // grow_slowly_block leaked 25 blocks of 64 KiB, one every 100 ms: a
    // leak at the end, and a growth suspect while it ran.
    let grow = group(&trace, "grow_slowly_block");
    assert_eq!((u(&grow["count"]), u(&grow["bytes"])), (25, 25 * 65536), "{grow:#}");
    let suspects = trace["growth_suspects"].as_array().unwrap();
    assert!(!suspects.is_empty(), "{:#}", trace["growth_rule"]);
    assert_eq!(suspects[0]["stack"][0]["function"], "grow_slowly_block", "{suspects:#?}");
    assert!(u(&suspects[0]["growth_bytes"]) >= 3 * 65536, "{suspects:#?}");
    assert!(suspects.iter().all(|s| s["stack"][0]["function"] != "leak_with_calloc"), "done before: {suspects:#?}");

    // The kernel's side: 64 KiB blocks sit below glibc's mmap threshold,
    // so the break grew by at least the leaked 1.6 MB.
    assert!(u(&heap["kernel"]["brk_heap_peak_bytes"]) >= 25 * 65536, "{heap:#}");
    assert!(u(&heap["kernel"]["brk_calls"]) > 0, "{heap:#}");

    // The event stream: one line per allocation and free, adding up to the live heap.
    assert_eq!(u(&trace["counters"]["ringbuf_drops"]), 0);
    let text = std::fs::read_to_string(&events_path).unwrap();
    let (mut allocs, mut frees, mut live, mut stacks) = (0u64, 0u64, 0i64, 0u64);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        match e["op"].as_str().unwrap() {
            "alloc" => (allocs, live) = (allocs + 1, live + u(&e["size"]) as i64),
            "free" => (frees, live) = (frees + 1, live - u(&e["size"]) as i64),
            "stack" => stacks += 1,
            other => panic!("unknown op {other}"),
        }
    }
    assert_eq!((allocs, frees), (u(&heap["allocs"]), u(&heap["frees"])), "{:#}", heap["events"]);
    assert_eq!(live, heap["live_bytes"].as_i64().unwrap());
    assert_eq!(stacks, u(&heap["events"]["stacks"]));
    assert!(text.contains(r#""function":"leak_with_realloc""#));
}

#[test]
fn jemalloc_preloaded_and_named_with_alloc_lib_is_traced_through_its_own_functions() {
    let _root = require_root();
    preloaded_allocator_gives_the_exact_leaks(
        "heap_jemalloc",
        JEMALLOC,
        &["malloc", "calloc", "realloc", "posix_memalign", "free", "mallocx", "sdallocx"],
    );
}

#[test]
fn tcmalloc_preloaded_and_named_with_alloc_lib_is_traced_through_its_own_functions() {
    let _root = require_root();
    // Its tc_ names are aliases of malloc, free, ... (probed once); tc_new is its own code.
    preloaded_allocator_gives_the_exact_leaks(
        "heap_tcmalloc",
        TCMALLOC,
        &["malloc", "calloc", "realloc", "posix_memalign", "free", "tc_new"],
    );
}

/// leaky.c with `library` preloaded (through env: a second execve, which
/// must not kill the target with SIGTRAP under ptrace) and named with
/// --alloc-lib: `functions` are probed in it and the leaks are exact.
fn preloaded_allocator_gives_the_exact_leaks(scratch_name: &str, library: &str, functions: &[&str]) {
    let dir = scratch(scratch_name);
    let leaky = build_leaky(&dir);
    let trace_path = dir.join("trace.json");
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--alloc-lib", library, "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg("env")
        .arg(format!("LD_PRELOAD={library}"))
        .arg(&leaky));
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_json(&trace_path);
    assert_eq!(trace["target"]["exit_code"], 0);
    let heap = &trace["heap"];
    // Named as the target's maps name it: the symlink resolved.
    let real = std::fs::canonicalize(library).unwrap();
    let real = real.to_str().unwrap();
    let allocator = heap["allocators"].as_array().unwrap().iter().find(|a| a["path"] == real).unwrap();
    assert_eq!(allocator["mapped"], true, "{heap:#}");
    let probed: Vec<&str> = heap["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["library"] == real && p["offset"].is_u64())
        .map(|p| p["function"].as_str().unwrap())
        .collect();
    for f in functions {
        assert!(probed.contains(f), "{f} probed in {library}: {probed:?}");
    }
    assert_c_leaks(&trace);
    assert_eq!(u(&heap["missed_frees"]), 0, "{heap:#}");
}

#[test]
fn a_rust_target_with_mimalloc_linked_statically_is_probed_in_its_executable() {
    let _root = require_root();
    mimalloc_leaks_exactly("heap_mimalloc", &[]);
}

#[test]
fn a_static_allocator_behind_a_wrapper_is_probed_at_the_exec() {
    // `env` is the executable memtrace spawns; the allocator is found in
    // memtrace-mimalloc when `env` execs it, before it runs.
    let _root = require_root();
    mimalloc_leaks_exactly("heap_mimalloc_env", &["env", "MEMTRACE_TEST=1"]);
}

/// Traces memtrace-mimalloc (behind `wrapper`, if any) and checks the leak
/// groups against what the program says it leaked.
fn mimalloc_leaks_exactly(scratch_name: &str, wrapper: &[&str]) {
    let dir = scratch(scratch_name);
    let trace_path = dir.join("trace.json");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_memtrace-mimalloc"));
    let out =
        run(Command::new(memtrace_bin()).arg("run").arg("--json").arg(&trace_path).arg("--").args(wrapper).arg(&bin));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = stdout.lines().find_map(|l| l.strip_prefix("leaked ")).expect("the program prints what it leaked");
    let (count, bytes): (u64, u64) = {
        let mut it = said.split_whitespace().map(|v| v.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let trace = read_json(&trace_path);
    let heap = &trace["heap"];
    let allocators = heap["allocators"].as_array().unwrap();
    let own = allocators.iter().find(|a| a["path"] == bin.to_str().unwrap()).unwrap_or_else(|| panic!("{heap:#}"));
    assert!(own["found_by"].as_str().unwrap().contains("mi_malloc_aligned"), "{own:#}");
    for counter in ["dropped_allocs", "lost_stacks", "missed_frees", "unknown_frees"] {
        assert_eq!(u(&heap[counter]), 0, "{counter}: {heap:#}");
    }

    let in_function = |name: &str| -> (u64, u64) {
        trace["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                l["stack"].as_array().unwrap().iter().any(|f| f["function"].as_str().is_some_and(|n| n.ends_with(name)))
            })
            .fold((0, 0), |(c, b), l| (c + u(&l["count"]), b + u(&l["bytes"])))
    };
    let boxes = in_function("leak_zeroed_boxes");
    let grown = in_function("leak_grown_vector");
    assert_eq!(boxes, (200, 200_000), "mi_zalloc_aligned: {:#}", trace["leaks"]);
    assert_eq!(grown.0, 1, "mi_realloc_aligned moved or resized one block: {:#}", trace["leaks"]);
    assert_eq!((boxes.0 + grown.0, boxes.1 + grown.1), (count, bytes));
}
