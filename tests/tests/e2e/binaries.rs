//! Executables as they come: stripped, static, non-PIE, deleted while
//! running, and static without symbols for the allocator. Each is traced,
//! and what cannot be resolved is shown as such (a frame as module+offset,
//! the heap as "not traced" with the reason), never as a quiet zero.
use std::{ffi::OsStr, path::Path};

use memtrace::trace::Trace;

use crate::{common::*, heap_allocators::assert_c_leaks};

/// leaky.c built with `flags` (after `-g -O0 -fno-omit-frame-pointer`), then stripped if asked.
fn leaky(dir: &Path, name: &str, flags: &[&str], strip: bool) -> std::path::PathBuf {
    let bin = dir.join(name);
    let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
    let source = root_dir().join("tests/c/leaky.c");
    args.extend([OsStr::new("-o"), bin.as_os_str(), source.as_os_str()]);
    cc(&args);
    if strip {
        let out = run(std::process::Command::new("strip").arg(&bin));
        assert!(out.status.success(), "strip: {}", describe(&out));
    }
    bin
}

fn traced(dir: &Path, bin: &Path) -> Trace {
    let name = bin.file_name().unwrap().to_string_lossy();
    Memtrace::run().json(dir.join(format!("{name}.json"))).target([bin]).traced().trace
}

#[test]
fn stripped_static_and_non_pie_executables_are_traced_and_unresolved_frames_named_as_such() {
    let _root = require_root();
    let dir = scratch("binaries");

    // Non-PIE (loaded at its link address) and static (glibc's malloc in
    // the executable itself): every leak exact, named to its line.
    let no_pie = traced(&dir, &leaky(&dir, "no-pie", &["-no-pie"], false));
    assert_c_leaks(&no_pie);
    let static_ = traced(&dir, &leaky(&dir, "static", &["-static"], false));
    assert!(heap(&static_).allocators[0].found_by.contains("executable itself"), "{:#?}", heap(&static_));
    assert_c_leaks(&static_);

    // Stripped: the same three leaks, the executable's frames as
    // module+offset (no name to give), glibc's named.
    let stripped_bin = leaky(&dir, "stripped", &[], true);
    let stripped = traced(&dir, &stripped_bin);
    let mut counts: Vec<(u64, u64)> = stripped.leaks.iter().map(|l| (l.count, l.bytes)).collect();
    counts.sort();
    assert_eq!(counts, [(30, 150_000), (50, 150_000), (100, 100_000)], "{:#?}", stripped.leaks);
    for leak in &stripped.leaks {
        let top = &leak.stack[0];
        assert_eq!(top.function, None, "{top:#?}");
        assert_eq!(top.module.as_deref(), stripped_bin.to_str(), "{top:#?}");
        assert!(top.offset.is_some(), "{top:#?}");
        assert!(has_frame(&leak.stack, "__libc_start_call_main"), "glibc's frames keep their names: {leak:#?}");
    }
    let report = Memtrace::report(&dir.join("stripped.json")).succeeds();
    assert!(stdout(&report).contains("binaries/stripped+0x"), "{}", stdout(&report));

    // Static and stripped: no malloc to probe anywhere. The heap says so.
    let bare_bin = leaky(&dir, "static-stripped", &["-static"], true);
    let out = Memtrace::run().json(dir.join("bare.json")).target([&bare_bin]).traced();
    let h = heap(&out.trace);
    assert!(h.status.starts_with("not traced: no allocator found"), "{h:#?}");
    assert!(out.report().contains("not traced: no allocator found"), "{}", out.report());
    assert!(out.trace.leaks.is_empty());
}

/// A program whose executable was deleted after it started (an upgrade
/// under a running server): its frames are named from the mapped file.
#[test]
fn an_executable_deleted_after_start_is_symbolized_from_its_mapping() {
    let _root = require_root();
    let dir = scratch("binaries_deleted");
    let bin = build_c("leaky", &dir);
    let mut child = std::process::Command::new(&bin).args(["grow", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::remove_file(&bin).unwrap();
    let trace = Memtrace::attach(child.id()).args(["--duration", "1.5"]).json(dir.join("trace.json")).traced().trace;
    child.kill().unwrap();
    child.wait().unwrap();
    let grown: Vec<_> = trace.leaks.iter().filter(|l| top_function(&l.stack) == "grow_slowly_block").collect();
    assert_eq!(grown.len(), 1, "{:#?}", trace.leaks);
    assert!(grown[0].count >= 10, "a block every 100 ms for 1.5 s: {:#?}", grown[0]);
    let top = &grown[0].stack[0];
    assert!(top.module.as_deref().unwrap().ends_with("leaky (deleted)"), "{top:#?}");
    assert!(top.file.as_deref().unwrap().ends_with("leaky.c"), "{top:#?}");
}
