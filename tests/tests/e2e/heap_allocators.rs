//! The heap through other allocator functions and other allocators: a C
//! program leaking through calloc, realloc and posix_memalign (glibc, then
//! jemalloc, then tcmalloc, preloaded and named with --alloc-lib), growth suspects and the
//! --events stream, and a Rust target with mimalloc linked statically.
use std::process::Command;

use memtrace::trace::{Leak, Trace};
use serde_json::Value;

use crate::common::*;

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const TCMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";

/// The line of leaky.c carrying `/* SITE:name */`.
pub fn site_line(name: &str) -> u32 {
    let text = std::fs::read_to_string(root_dir().join("tests/c/leaky.c")).unwrap();
    let marker = format!("/* SITE:{name} */");
    text.lines().position(|l| l.contains(&marker)).map(|i| i as u32 + 1).unwrap()
}

/// The leak group whose innermost frame is `function`.
pub fn group<'a>(trace: &'a Trace, function: &str) -> &'a Leak {
    let leaks = &trace.leaks;
    let found: Vec<&Leak> = leaks.iter().filter(|l| top_function(&l.stack) == function).collect();
    assert_eq!(found.len(), 1, "one group allocated in {function}: {leaks:#?}");
    found[0]
}

/// The three leaks of leaky.c, each at its allocator function's site, exact.
pub fn assert_c_leaks(trace: &Trace) {
    for (function, site, count, bytes) in [
        ("leak_with_calloc", "calloc", 100, 100_000),
        ("leak_with_realloc", "realloc", 50, 150_000),
        ("leak_with_posix_memalign", "posix_memalign", 30, 150_000),
    ] {
        let g = group(trace, function);
        assert_eq!((g.count, g.bytes), (count, bytes), "{g:#?}");
        let top = &g.stack[0];
        assert!(top.file.as_deref().unwrap().ends_with("leaky.c"), "{top:#?}");
        assert_eq!(top.line.unwrap(), site_line(site), "the {site} call's line: {top:#?}");
        assert_eq!(top_function(&g.stack[1..]), "main", "{g:#?}");
    }
    // realloc(p, 0) freed p: no leak from there (and no missed free: see heap_losses).
    let from_zero: Vec<&Leak> = trace.leaks.iter().filter(|l| has_frame(&l.stack, "realloc_to_zero")).collect();
    assert!(from_zero.is_empty(), "realloc(p, 0) leaves nothing live: {from_zero:#?}");
}

#[test]
fn a_c_program_leaking_through_calloc_realloc_and_posix_memalign_is_reported_per_site() {
    let _root = require_root();
    let dir = scratch("heap_c");
    let leaky = build_c("leaky", &dir);
    let events_path = dir.join("events.ndjson");
    let trace = Memtrace::run()
        .args(["--growth-window", "3", "--events"])
        .arg(&events_path)
        .json(dir.join("trace.json"))
        .target([leaky.as_os_str(), "grow".as_ref(), "2.5".as_ref()])
        .traced()
        .trace;
    let heap = heap(&trace);
    assert_c_leaks(&trace);
    for (counter, value) in heap_losses(heap) {
        assert_eq!(value, 0, "{counter}: {heap:#?}");
    }

    // grow_slowly_block leaked 25 blocks of 64 KiB, one every 100 ms: a
    // leak at the end, and a growth suspect while it ran.
    let grow = group(&trace, "grow_slowly_block");
    assert_eq!((grow.count, grow.bytes), (25, 25 * 65536), "{grow:#?}");
    let suspects = &trace.growth_suspects;
    assert!(!suspects.is_empty(), "{:#}", trace.growth_rule);
    assert_eq!(top_function(&suspects[0].stack), "grow_slowly_block", "{suspects:#?}");
    assert!(suspects[0].growth_bytes >= 3 * 65536, "{suspects:#?}");
    assert!(suspects.iter().all(|s| top_function(&s.stack) != "leak_with_calloc"), "done before: {suspects:#?}");

    // The kernel's side: 64 KiB blocks sit below glibc's mmap threshold,
    // so the break grew by at least the leaked 1.6 MB.
    assert!(heap.kernel.brk_heap_peak_bytes >= 25 * 65536, "{heap:#?}");
    assert!(heap.kernel.brk_calls > 0, "{heap:#?}");

    // The event stream: one line per allocation and free, adding up to the live heap.
    assert_eq!(trace.counters.ringbuf_drops, 0);
    let text = std::fs::read_to_string(&events_path).unwrap();
    let size = |e: &Value| e["size"].as_u64().unwrap_or_else(|| panic!("no size: {e}"));
    let (mut allocs, mut frees, mut live, mut stacks) = (0u64, 0u64, 0i64, 0u64);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        match e["op"].as_str().unwrap() {
            "alloc" => (allocs, live) = (allocs + 1, live + size(&e) as i64),
            "free" => (frees, live) = (frees + 1, live - size(&e) as i64),
            "stack" => stacks += 1,
            other => panic!("unknown op {other}"),
        }
    }
    let events = heap.events.as_ref().expect("--events is in the trace");
    assert_eq!((allocs, frees), (heap.totals.allocs, heap.totals.frees), "{events:#?}");
    assert_eq!(live, heap.live_bytes);
    assert_eq!(stacks, events.stacks);
    assert!(text.contains(r#""function":"leak_with_realloc""#));
}

/// leaky.c with a library preloaded (through env: a second execve, which
/// must not kill the target with SIGTRAP under ptrace) and named with
/// --alloc-lib: (scratch name, library, functions probed in it). The leaks
/// are exact.
#[test]
fn preloaded_allocators_named_with_alloc_lib_are_traced_through_their_own_functions() {
    let _root = require_root();
    for (scratch_name, library, functions) in [
        (
            "heap_jemalloc",
            JEMALLOC,
            &["malloc", "calloc", "realloc", "posix_memalign", "free", "mallocx", "sdallocx"][..],
        ),
        // Its tc_ names are aliases of malloc, free, ... (probed once); tc_new is its own code.
        ("heap_tcmalloc", TCMALLOC, &["malloc", "calloc", "realloc", "posix_memalign", "free", "tc_new"]),
    ] {
        let dir = scratch(scratch_name);
        let leaky = build_c("leaky", &dir);
        let preload = format!("LD_PRELOAD={library}");
        let trace = Memtrace::run()
            .args(["--alloc-lib", library])
            .json(dir.join("trace.json"))
            .target(["env".as_ref(), preload.as_ref(), leaky.as_os_str()])
            .traced()
            .trace;
        assert_eq!(trace.target.exit_code, Some(0), "{library}");
        let heap = heap(&trace);
        // Named as the target's maps name it: the symlink resolved.
        let real = std::fs::canonicalize(library).unwrap();
        let real = real.to_str().unwrap();
        let allocator = heap.allocators.iter().find(|a| a.path == real).unwrap();
        assert!(allocator.mapped, "{heap:#?}");
        let probed: Vec<&str> = heap
            .probes
            .iter()
            .filter(|p| p.library == real && p.offset.is_some())
            .map(|p| p.function.as_str())
            .collect();
        for f in functions {
            assert!(probed.contains(f), "{f} probed in {library}: {probed:?}");
        }
        assert_c_leaks(&trace);
        assert_eq!(heap.totals.missed_frees, 0, "{heap:#?}");
    }
}

/// memtrace-mimalloc, a Rust target with mimalloc linked statically, traced
/// directly and behind `env` (the executable memtrace spawns; the allocator
/// is found in memtrace-mimalloc when `env` execs it, before it runs):
/// probed in its executable, the leak groups as the program says it leaked.
#[test]
fn a_rust_target_with_mimalloc_linked_statically_is_probed_in_its_executable_even_behind_a_wrapper() {
    let _root = require_root();
    for (scratch_name, wrapper) in [("heap_mimalloc", &[][..]), ("heap_mimalloc_env", &["env", "MEMTRACE_TEST=1"])] {
        let dir = scratch(scratch_name);
        let bin = mimalloc_bin();
        let argv = wrapper.iter().map(std::ffi::OsStr::new).chain([bin.as_os_str()]);
        let Traced { out, trace } = Memtrace::run().json(dir.join("trace.json")).target(argv).traced();
        let stdout = stdout(&out);
        let said = stdout.lines().find_map(|l| l.strip_prefix("leaked ")).expect("the program prints what it leaked");
        let (count, bytes): (u64, u64) = {
            let mut it = said.split_whitespace().map(|v| v.parse().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        };
        let heap = heap(&trace);
        let own = heap.allocators.iter().find(|a| a.path == bin.to_str().unwrap());
        let own = own.unwrap_or_else(|| panic!("{scratch_name}: {heap:#?}"));
        assert!(own.found_by.contains("mi_malloc_aligned"), "{scratch_name}: {own:#?}");
        for (counter, value) in [
            ("dropped_allocs", heap.totals.dropped_allocs),
            ("lost_stacks", heap.totals.lost_stacks),
            ("missed_frees", heap.totals.missed_frees),
            ("unknown_frees", heap.totals.unknown_frees),
        ] {
            assert_eq!(value, 0, "{scratch_name}: {counter}: {heap:#?}");
        }

        let in_function = |name: &str| -> (u64, u64) {
            trace
                .leaks
                .iter()
                .filter(|l| l.stack.iter().any(|f| f.function.as_deref().is_some_and(|n| n.ends_with(name))))
                .fold((0, 0), |(c, b), l| (c + l.count, b + l.bytes))
        };
        let boxes = in_function("leak_zeroed_boxes");
        let grown = in_function("leak_grown_vector");
        assert_eq!(boxes, (200, 200_000), "{scratch_name}: mi_zalloc_aligned: {:#?}", trace.leaks);
        assert_eq!(grown.0, 1, "{scratch_name}: mi_realloc_aligned moved or resized one block: {:#?}", trace.leaks);
        assert_eq!((boxes.0 + grown.0, boxes.1 + grown.1), (count, bytes), "{scratch_name}");
    }
}

/// threads.c: eight threads each leak one 1,000-byte block and exit. glibc
/// frees each thread's cache (blocks freed long ago, and the cache's own
/// struct, never made through malloc) as the thread exits: those frees are
/// the allocator's own, not the program's frees of blocks made before
/// tracing, and in run mode there are none of the latter.
#[test]
fn frees_by_glibc_at_thread_exit_are_allocator_internal_not_unknown() {
    let _root = require_root();
    let dir = scratch("heap_threads");
    let threads = build_c("threads", &dir);
    let trace = Memtrace::run().json(dir.join("trace.json")).target([&threads]).traced().trace;
    let heap = heap(&trace);
    for (counter, value) in heap_losses(heap) {
        assert_eq!(value, 0, "{counter}: {heap:#?}");
    }
    // 8 threads x (5 cached blocks + the cache itself).
    assert!(heap.totals.internal_frees >= 8, "each exiting thread returns its cache: {heap:#?}");
    let leak = group(&trace, "leak_in_thread");
    assert_eq!((leak.count, leak.bytes), (8, 8000), "{leak:#?}");
    assert!(has_frame(&leak.stack, "worker"), "{leak:#?}");
    // Everything else still live is glibc's cache of thread stacks: the
    // TLS vectors ld.so allocated for them (allocate_dtv, in pthread_create).
    // ld.so and glibc have no frame pointers: unwound with their tables
    // (in before threads.c's first instruction), the stack runs through
    // them to the program's pthread_create call in main.
    let others: Vec<&Leak> = trace.leaks.iter().filter(|l| top_function(&l.stack) != "leak_in_thread").collect();
    assert!(others.iter().all(|l| top_function(&l.stack) == "allocate_dtv"), "{others:#?}");
    assert!(others.iter().all(|l| has_frame(&l.stack, "pthread_create") && has_frame(&l.stack, "main")), "{others:#?}");
    let kept: u64 = others.iter().map(|l| l.bytes).sum();
    assert_eq!(heap.live_bytes, 8000 + kept as i64, "{heap:#?}");
}

/// Four memtraces at once, each tracing its own busy 8-thread program
/// (tests/c/busy_threads.c), while their probes share glibc's functions:
/// every trace counts exactly what the same program counts traced alone.
#[test]
fn several_memtraces_at_once_each_count_only_their_own_target() {
    let _root = require_root_alone();
    let dir = scratch("heap_several");
    let program = build_c("busy_threads", &dir);
    let figures = |trace: &memtrace::trace::Trace| {
        let heap = heap(trace);
        let kept = group(trace, "worker");
        (heap.totals.allocs, heap.totals.frees, heap.live_bytes, kept.count, kept.bytes)
    };
    let alone = figures(&Memtrace::run().json(dir.join("alone.json")).target([&program]).traced().trace);
    assert_eq!((alone.3, alone.4), (8, 8 * 1136), "{alone:?}");
    assert!(alone.0 >= 8008 && alone.1 >= 8000, "{alone:?}");
    // All four traced from their first instruction, their threads started together.
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let sessions: Vec<_> = (0..4)
        .map(|i| {
            Memtrace::run().json(dir.join(format!("at_once_{i}.json"))).target([program.as_os_str(), go.as_os_str()])
        })
        .collect();
    let running: Vec<_> = sessions.iter().map(|m| m.spawn()).collect();
    std::fs::write(&go, b"go").unwrap();
    for (i, mut session) in running.into_iter().enumerate() {
        assert!(session.wait().success(), "memtrace {i}");
        let trace = session.trace();
        assert_eq!(figures(&trace), alone, "memtrace {i} of 4 at once");
        for (counter, value) in heap_losses(heap(&trace)) {
            assert_eq!(value, 0, "memtrace {i}: {counter}");
        }
    }
}

/// Two memtraces attached to the same busy 8-thread program at once: each
/// counts every call of it (the two sessions' probes on one process, and
/// their maps, stay apart), the same figures in both.
#[test]
fn two_memtraces_on_the_same_target_each_count_all_of_it() {
    let _root = require_root_alone();
    let dir = scratch("heap_same_target");
    let program = build_c("busy_threads", &dir);
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut target = Command::new(&program).arg(&go).spawn().unwrap();
    let sessions: Vec<_> =
        (0..2).map(|i| Memtrace::attach(target.id()).json(dir.join(format!("same_{i}.json")))).collect();
    let running: Vec<_> = sessions.iter().map(|m| m.spawn()).collect();
    std::fs::write(&go, b"go").unwrap();
    assert!(target.wait().unwrap().success());
    let figures: Vec<_> = running
        .into_iter()
        .enumerate()
        .map(|(i, mut session)| {
            assert!(session.wait().success(), "memtrace {i}");
            let trace = session.trace();
            for (counter, value) in heap_losses(heap(&trace)) {
                assert_eq!(value, 0, "memtrace {i}: {counter}");
            }
            let kept = group(&trace, "worker");
            assert_eq!((kept.count, kept.bytes), (8, 8 * 1136), "memtrace {i}");
            let h = heap(&trace);
            assert!(h.totals.allocs >= 8008 && h.totals.frees >= 8000, "memtrace {i}: {h:#?}");
            (h.totals.allocs, h.totals.frees, h.live_bytes)
        })
        .collect();
    assert_eq!(figures[0], figures[1], "the same target, the same figures");
}
