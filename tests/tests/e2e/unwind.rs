//! Allocation stacks through code without frame pointers, unwound in eBPF
//! with the unwind tables memtrace compiles from each mapped file's
//! `.eh_frame`.
use std::{ffi::OsStr, process::Command};

use memtrace::trace::Trace;

use crate::common::*;

/// nofp_main.c and its library, both -O2 -fomit-frame-pointer: the leak's
/// stack names every function, in order, down to `main`, crossing from the
/// executable into the library, back and into the library again.
#[test]
fn a_leak_through_code_without_frame_pointers_has_its_whole_stack() {
    let _root = require_root();
    let dir = scratch("unwind_nofp");
    let src = root_dir().join("tests/c");
    let lib = dir.join("libnofp.so");
    cc_no_frame_pointers(&[
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        lib.as_ref(),
        src.join("nofp_lib.c").as_ref(),
    ]);
    let bin = dir.join("nofp_main");
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    cc_no_frame_pointers(&[
        "-o".as_ref(),
        bin.as_ref(),
        src.join("nofp_main.c").as_ref(),
        lib.as_ref(),
        rpath.as_ref(),
    ]);

    // The default is --unwind dwarf.
    let trace = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced().trace;
    let leaks: Vec<_> = trace.leaks.iter().filter(|l| top_function(&l.stack) == "nofp_leak_here").collect();
    assert_eq!(leaks.len(), 1, "one group allocated in nofp_leak_here: {:#?}", trace.leaks);
    let leak = leaks[0];
    assert_eq!((leak.count, leak.bytes), (10, 10_000), "{leak:#?}");
    let names: Vec<&str> = leak.stack.iter().map(|f| f.function.as_deref().unwrap_or("?")).collect();
    let until_main = names.iter().position(|n| *n == "main").map(|i| &names[..=i]);
    assert_eq!(
        until_main,
        Some(
            &[
                "nofp_leak_here",
                "nofp_lib_level5",
                "app_callback",
                "nofp_lib_level3",
                "nofp_lib_level2",
                "app_level1",
                "main"
            ][..]
        ),
        "{names:?}"
    );
    // Built with -g: every frame down to main has its file and line.
    for frame in &leak.stack[..7] {
        let file = frame.file.as_deref().unwrap_or("");
        assert!(file.ends_with("nofp_lib.c") || file.ends_with("nofp_main.c"), "{frame:?}");
        assert!(frame.line.is_some_and(|l| l > 0), "{frame:?}");
    }
    let heap = heap(&trace);
    assert_eq!(heap.unwind.method, "dwarf");
    assert!(heap.unwind.holds >= 1, "held at least for libnofp.so's code: {:?}", heap.unwind);
    assert!(heap.unwind.files >= 3, "the executable, ld.so, libnofp.so, libc: {:?}", heap.unwind);
    assert_eq!(heap.totals.stacks_cut_unsupported, 0, "{heap:#?}");
    assert_eq!(heap.totals.stacks_cut_depth, 0, "{heap:#?}");
}

/// The names of a stack's frames, innermost first ("?" without a symbol).
fn names(stack: &[memtrace::symbolize::Frame]) -> Vec<&str> {
    stack.iter().map(|f| f.function.as_deref().unwrap_or("?")).collect()
}

/// Where in `names` the first frame containing `part` is.
fn position(names: &[&str], part: &str) -> Option<usize> {
    names.iter().position(|n| n.contains(part))
}

/// Leaks made inside glibc (Debian's, built without frame pointers) from
/// a program without them: the glibc frames and their callers both appear.
#[test]
fn leaks_inside_glibc_show_glibc_frames_and_their_callers() {
    let _root = require_root();
    let dir = scratch("unwind_glibc");
    let bin = dir.join("glibc_frames");
    cc_no_frame_pointers(&["-o".as_ref(), bin.as_ref(), root_dir().join("tests/c/glibc_frames.c").as_ref()]);
    let trace = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced().trace;

    // strdup from the qsort callback: 3 blocks of 32 bytes, one or more groups
    // (each at the depth of glibc's merge sort where the compare ran).
    let from_callback: Vec<_> = trace.leaks.iter().filter(|l| has_frame(&l.stack, "compare_and_leak")).collect();
    assert_eq!(from_callback.iter().map(|l| (l.count, l.bytes)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)), (3, 96));
    for leak in &from_callback {
        let names = names(&leak.stack);
        let at = |part| position(&names, part).unwrap_or_else(|| panic!("no {part} frame in {names:?}"));
        // strdup, the callback, glibc's sort (qsort's frames), our caller, main: in that order.
        assert!(at("strdup") < at("compare_and_leak"), "{names:?}");
        assert!(at("compare_and_leak") < at("qsort"), "{names:?}");
        assert!(at("qsort") < at("sort_and_leak"), "{names:?}");
        assert!(at("sort_and_leak") < at("main"), "{names:?}");
        let glibc_frames = leak.stack[at("compare_and_leak") + 1..at("sort_and_leak")]
            .iter()
            .filter(|f| f.module.as_deref().is_some_and(|m| m.contains("libc.so")))
            .count();
        assert!(glibc_frames >= 2, "glibc's sort frames between the callback and its caller: {names:?}");
    }
    // fopen's FILE: allocated by glibc's own code, called from open_and_leak.
    let file = trace
        .leaks
        .iter()
        .find(|l| has_frame(&l.stack, "open_and_leak"))
        .unwrap_or_else(|| panic!("no leak through open_and_leak: {:#?}", trace.leaks));
    let names = names(&file.stack);
    let caller = position(&names, "open_and_leak").unwrap();
    assert!(caller >= 1 && position(&names, "fopen").is_some_and(|f| f < caller), "{names:?}");
    assert!(position(&names, "main").is_some_and(|m| m > caller), "{names:?}");
    let heap = heap(&trace);
    assert_eq!(heap.totals.stacks_cut_no_table + heap.totals.stacks_cut_unsupported, 0, "{heap:#?}");
}

/// Debian's python3 (no frame pointers): a leak's stack runs from malloc
/// through the interpreter down to the program's entry, at least 10
/// frames, where a frame-pointer walk stops after one or two. (Debian's
/// `main` tail-calls `Py_BytesMain`, so `Py_BytesMain` is the frame above
/// `__libc_start_call_main`: there is no `main` frame to find.)
#[test]
fn a_python_leak_reaches_the_entry_point_through_the_interpreter() {
    let _root = require_root();
    let dir = scratch("unwind_python");
    let script = root_dir().join("tests/python/deep_leak.py");
    let big = |trace: &Trace| {
        trace
            .leaks
            .iter()
            .find(|l| l.bytes >= 10_000_000 && l.count == 1)
            .unwrap_or_else(|| panic!("no 10 MB leak: {:#?}", trace.leaks))
            .clone()
    };
    let dwarf =
        Memtrace::run().json(dir.join("dwarf.json")).target([OsStr::new("/usr/bin/python3"), script.as_ref()]).traced();
    let leak = big(&dwarf.trace);
    let names = names(&leak.stack);
    assert!(names.len() >= 10, "{names:?}");
    assert_eq!(names.last(), Some(&"_start"), "the stack reaches the entry point: {names:?}");
    let at = |part| position(&names, part).unwrap_or_else(|| panic!("no {part} in {names:?}"));
    assert!(at("_PyEval_EvalFrameDefault") < at("Py_RunMain"), "{names:?}");
    assert!(at("Py_RunMain") < at("Py_BytesMain"), "{names:?}");
    assert!(at("Py_BytesMain") < at("__libc_start_call_main"), "{names:?}");
    let fp = Memtrace::run()
        .args(["--unwind", "fp"])
        .json(dir.join("fp.json"))
        .target([OsStr::new("/usr/bin/python3"), script.as_ref()])
        .traced();
    let fp_leak = big(&fp.trace);
    assert_eq!(heap(&fp.trace).unwind.method, "fp");
    assert!(fp_leak.stack.len() < names.len(), "frame pointers alone: {:?}", self::names(&fp_leak.stack));
}

/// g++ -O2 without frame pointers, throwing and catching 200 exceptions
/// through 9 levels, allocating in destructors while the runtime unwinds:
/// unwinding never crashes or loops, every allocation is counted, and the
/// leak made afterwards has its exact stack.
#[test]
fn cpp_exceptions_unwind_cleanly() {
    let _root = require_root();
    let dir = scratch("unwind_cpp");
    let bin = dir.join("exceptions");
    let out = run(Command::new("g++")
        .args(["-g", "-O2", "-fomit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(root_dir().join("tests/c/exceptions.cpp")));
    assert!(out.status.success(), "g++: {}", describe(&out));
    let traced = Memtrace::run().json(dir.join("trace.json")).target([&bin]).traced();
    let trace = traced.trace;
    assert_eq!(trace.target.exit_code, Some(0), "the program caught all 201: {}", describe(&traced.out));
    let leak = trace
        .leaks
        .iter()
        .find(|l| l.bytes == 4321)
        .unwrap_or_else(|| panic!("no 4,321-byte leak: {:#?}", trace.leaks));
    let names = names(&leak.stack);
    let until_main = names.iter().position(|n| *n == "main").map(|i| &names[..=i]);
    assert_eq!(until_main, Some(&["keep_one", "after_the_storm", "main"][..]), "{names:?}");
    let heap = heap(&trace);
    // 200 rounds of 9 destructors' malloc, 9 strings (SSO off: 64+ chars)
    // and one exception object each.
    assert!(heap.totals.allocs >= 200 * 19, "{heap:#?}");
    assert_eq!(heap.totals.stacks_cut_unsupported + heap.totals.stacks_cut_depth, 0, "{heap:#?}");
}
