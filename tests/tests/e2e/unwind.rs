//! Allocation stacks through code without frame pointers, unwound in eBPF
//! with the unwind tables memtrace compiles from each mapped file's
//! `.eh_frame`.
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

    let trace = Memtrace::run().args(["--unwind", "dwarf"]).json(dir.join("trace.json")).target([&bin]).traced().trace;
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
    let heap = heap(&trace);
    assert_eq!(heap.totals.stacks_cut_unsupported, 0, "{heap:#?}");
    assert_eq!(heap.totals.stacks_cut_depth, 0, "{heap:#?}");
}
