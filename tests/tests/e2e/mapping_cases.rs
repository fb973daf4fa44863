//! Mapping cases the per-file accounting must get right, each checked
//! against the kernel's smaps read while the mappings exist.
use std::path::{Path, PathBuf};

use memtrace::trace::{FileEntry, Trace};

use crate::common::*;

const MIB: u64 = 1 << 20;
const FILE_SIZE: u64 = 16 * MIB;

fn data_file(dir: &Path) -> PathBuf {
    let path = dir.join("data.bin");
    let bytes: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut file, &bytes).unwrap();
    file.sync_all().unwrap(); // clean pages: reclaim may drop them at once
    path
}

fn run_case(scenario: &str) -> (Trace, PathBuf) {
    let dir = scratch(&format!("mapping_{scenario}"));
    let file = data_file(&dir);
    let run = Memtrace::run()
        .json(dir.join("trace.json"))
        .target([mapper_bin().as_os_str(), scenario.as_ref(), file.as_os_str()])
        .interrupt_when("ready pid=");
    // The mapper waits on stdin; memtrace forwards the SIGINT and exits like it.
    assert_eq!(run.status.code(), Some(130), "{}", run.report);
    assert!(run.trace.final_truth.starts_with("read from"), "{}", run.trace.final_truth);
    (run.trace, file)
}

fn entry<'a>(trace: &'a Trace, path: &Path) -> &'a FileEntry {
    let path = path.to_str().unwrap();
    let f = trace.files.iter().find(|f| f.path.starts_with(path));
    f.unwrap_or_else(|| panic!("no file {path} in {:#?}", trace.files))
}

/// Measured residency agrees with smaps within 1 % or 64 KiB.
fn assert_resident_matches(f: &FileEntry) {
    let kernel = kernel_rss(f);
    let measured = f.measured_resident_bytes;
    assert!(measured.abs_diff(kernel) <= (kernel / 100).max(64 * 1024), "measured {measured}, smaps {kernel}: {f:#?}");
}

#[test]
fn a_file_mapped_twice_counts_both_mappings() {
    let _root = require_root();
    let (trace, file) = run_case("twice");
    let f = entry(&trace, &file);
    assert_eq!(f.mmap_calls, 2);
    assert_eq!(f.mapped_bytes, 2 * FILE_SIZE);
    // Half through one mapping, all of it through the other: RSS counts
    // pages per mapping, like smaps.
    assert_eq!(kernel_rss(f), FILE_SIZE + FILE_SIZE / 2);
    assert_resident_matches(f);
    assert_eq!(f.measured_loaded_bytes, kernel_rss(f));
}

#[test]
fn a_file_unmapped_mid_run_gives_its_pages_back() {
    let _root = require_root();
    let (trace, file) = run_case("unmap");
    let f = entry(&trace, &file);
    assert_eq!(kernel_rss(f), FILE_SIZE / 4);
    assert_resident_matches(f);
    assert_eq!(f.measured_loaded_bytes, FILE_SIZE + FILE_SIZE / 4, "{f:#?}");
    assert_eq!(f.unloaded_bytes, FILE_SIZE, "{f:#?}");
    assert_eq!(f.mapped_at_end_bytes, FILE_SIZE);
}

#[test]
fn madv_dontneed_on_part_of_a_mapping() {
    let _root = require_root();
    let (trace, file) = run_case("dontneed");
    let f = entry(&trace, &file);
    assert_eq!(kernel_rss(f), FILE_SIZE / 2);
    assert_resident_matches(f);
    assert_eq!(f.unloaded_bytes, FILE_SIZE / 2, "{f:#?}");
    assert!(trace.counters.madvise_calls >= 1);
}

#[test]
fn anonymous_memory_is_never_counted_as_a_file() {
    let _root = require_root();
    let (trace, file) = run_case("anon");
    let f = entry(&trace, &file);
    assert_resident_matches(f);
    // One page read; ext4's large folios let the kernel map a whole 2 MiB
    // folio for it (seen here), never the whole file.
    assert!(f.measured_loaded_bytes <= 2 * MIB, "one page read: {f:#?}");
    let files_total: u64 = trace.files.iter().map(|f| f.measured_loaded_bytes).sum();
    assert!(files_total < 16 * MIB, "32 MiB of anonymous writes leaked into file figures: {files_total}");
    let rss = trace.rss.as_ref().and_then(|r| r.at_final_truth).expect("RSS at the final truth");
    assert!(rss.anon_bytes >= 32 * MIB, "{rss:#?}");
    let anon = trace.regions.iter().find(|r| r.region == "[anon]").unwrap();
    assert!(anon.faults.write >= 8192 / 2, "{anon:#?}");
}

#[test]
fn a_deleted_file_keeps_its_identity() {
    let _root = require_root();
    let (trace, file) = run_case("deleted");
    let f = entry(&trace, &file);
    assert!(f.path.ends_with("(deleted)"), "{f:#?}");
    assert_eq!(f.size_bytes, Some(FILE_SIZE), "size read through map_files, not the vanished path");
    assert_eq!(kernel_rss(f), FILE_SIZE);
    assert_resident_matches(f);
}

#[test]
fn a_memfd_mapping_is_a_shmem_file() {
    let _root = require_root();
    let (trace, _) = run_case("memfd");
    let f = entry(&trace, Path::new("/memfd:memtrace-test"));
    assert_eq!(kernel_rss(f), 8 * MIB);
    assert_resident_matches(f);
}

#[test]
fn mremap_grows_and_moves_a_file_mapping() {
    let _root = require_root();
    let (trace, file) = run_case("mremap");
    let f = entry(&trace, &file);
    assert_eq!(kernel_rss(f), FILE_SIZE);
    assert_resident_matches(f);
    assert!(trace.counters.mremap_calls >= 1);
    assert_eq!(f.mapped_at_end_bytes, FILE_SIZE);
}

#[test]
fn madv_pageout_reclaims_and_evicts() {
    let _root = require_root();
    let (trace, file) = run_case("pageout");
    let f = entry(&trace, &file);
    assert_resident_matches(f);
    let kernel = kernel_rss(f);
    assert!(kernel < FILE_SIZE / 2, "MADV_PAGEOUT left {kernel} bytes resident: {f:#?}");
    assert_eq!(f.unloaded_bytes, FILE_SIZE - kernel, "{f:#?}");
    assert!(f.evicted_bytes > 0, "reclaimed clean pages leave the page cache: {f:#?}");
    assert!(f.evicted_bytes <= FILE_SIZE, "{f:#?}");
}

#[test]
fn a_device_mapping_is_reported_with_what_is_known() {
    let _root = require_root();
    let (trace, _) = run_case("device");
    let f = entry(&trace, Path::new("/dev/zero"));
    assert_eq!(kernel_rss(f), MIB, "{f:#?}");
    assert_resident_matches(f);
}
