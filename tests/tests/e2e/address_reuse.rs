//! Files mapped one after another at the same address (map, read, unmap,
//! map the next): each is named by the identity and path the kernel had at
//! its mmap, never by whatever /proc shows at that address later.
use std::process::Command;

use memtrace::trace::Trace;

use crate::common::*;

const FILES: u64 = 200;
const FILE_BYTES: u64 = 1 << 20;

/// Runs remap.c over FILES fresh files from `threads` threads; the trace.
fn remap(threads: u32) -> (Trace, std::path::PathBuf) {
    let dir = scratch(&format!("address_reuse_{threads}"));
    let bin = dir.join("remap");
    let out =
        run(Command::new("cc").args(["-g", "-O2", "-pthread", "-o"]).arg(&bin).arg(root_dir().join("tests/c/remap.c")));
    assert!(out.status.success(), "cc: {}", describe(&out));
    let files = dir.join("files");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let trace = Memtrace::run()
        .json(dir.join("trace.json"))
        .target([bin.as_os_str(), files.as_os_str(), FILES.to_string().as_ref(), threads.to_string().as_ref()])
        .traced()
        .trace;
    (trace, files)
}

/// Every file under its own path (none as `[dev M:m inode N]`, none
/// missing); the loaded bytes of each, by file.
fn loaded_by_file(trace: &Trace, files: &std::path::Path) -> Vec<(String, u64)> {
    let placeholders: Vec<_> = trace.files.iter().filter(|f| f.path.starts_with("[dev ")).collect();
    assert!(placeholders.is_empty(), "files left unnamed: {placeholders:#?}");
    let mut loaded: Vec<(String, u64)> = trace
        .files
        .iter()
        .filter(|f| f.path.starts_with(&*files.to_string_lossy()))
        .map(|f| (f.path.clone(), f.measured_loaded_bytes))
        .collect();
    loaded.sort();
    let expected: Vec<String> = (0..FILES).map(|i| format!("{}/file-{i:03}", files.display())).collect();
    assert_eq!(loaded.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), expected);
    loaded
}

#[test]
fn files_mapped_one_after_another_at_one_address_are_each_named_and_loaded_exactly() {
    let _root = require_root();
    let (trace, files) = remap(1);
    for (path, bytes) in loaded_by_file(&trace, &files) {
        assert_eq!(bytes, FILE_BYTES, "{path}");
    }
}

/// From two threads at once. Every file is still named right (before the
/// fix, 103 of 200 were missing); the loaded bytes come from kmem:rss_stat,
/// a per-process counter the kernel sums at each event, so two threads
/// faulting at the same instant can swap fault-around batches (16 pages,
/// 64 KiB each) between their files: one to three batches per file seen
/// here, more when other tests load the machine. Each file within half its
/// size, the total within 1 %.
#[test]
fn files_mapped_at_reused_addresses_from_two_threads_are_each_named() {
    let _root = require_root();
    let (trace, files) = remap(2);
    let loaded = loaded_by_file(&trace, &files);
    for (path, bytes) in &loaded {
        assert!(bytes.abs_diff(FILE_BYTES) <= FILE_BYTES / 2, "{path}: {bytes}");
    }
    let total: u64 = loaded.iter().map(|(_, b)| b).sum();
    assert!(total.abs_diff(FILES * FILE_BYTES) * 100 <= FILES * FILE_BYTES, "{total}");
}
