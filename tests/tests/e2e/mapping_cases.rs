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

/// One scenario of memtrace-mapper, and what its file's entry must show.
struct Case {
    scenario: &'static str,
    /// The file's path in the trace (a prefix); None: the data file the test writes.
    file: Option<&'static str>,
    /// smaps Rss at the stop, exactly.
    kernel_rss: Option<u64>,
    unloaded: Option<u64>,
    mapped_at_end: Option<u64>,
    /// The rest of the case's checks.
    check: fn(&Trace, &FileEntry),
}

const NOTHING_ELSE: fn(&Trace, &FileEntry) = |_, _| {};

const CASES: [Case; 9] = [
    // A file mapped twice counts both mappings: half through one mapping,
    // all of it through the other; RSS counts pages per mapping, like smaps.
    Case {
        scenario: "twice",
        file: None,
        kernel_rss: Some(FILE_SIZE + FILE_SIZE / 2),
        unloaded: None,
        mapped_at_end: None,
        check: |_, f| {
            assert_eq!(f.mmap_calls, 2);
            assert_eq!(f.mapped_bytes, 2 * FILE_SIZE);
            assert_eq!(Some(f.measured_loaded_bytes), f.kernel_rss_bytes);
        },
    },
    // A file unmapped mid-run gives its pages back.
    Case {
        scenario: "unmap",
        file: None,
        kernel_rss: Some(FILE_SIZE / 4),
        unloaded: Some(FILE_SIZE),
        mapped_at_end: Some(FILE_SIZE),
        check: |_, f| assert_eq!(f.measured_loaded_bytes, FILE_SIZE + FILE_SIZE / 4, "{f:#?}"),
    },
    // MADV_DONTNEED on part of a mapping.
    Case {
        scenario: "dontneed",
        file: None,
        kernel_rss: Some(FILE_SIZE / 2),
        unloaded: Some(FILE_SIZE / 2),
        mapped_at_end: None,
        check: |trace, _| assert!(trace.counters.madvise_calls >= 1),
    },
    // Anonymous memory is never counted as a file.
    Case {
        scenario: "anon",
        file: None,
        kernel_rss: None,
        unloaded: None,
        mapped_at_end: None,
        check: |trace, f| {
            // One page read; ext4's large folios let the kernel map a whole
            // 2 MiB folio for it (seen here), never the whole file.
            assert!(f.measured_loaded_bytes <= 2 * MIB, "one page read: {f:#?}");
            let files_total: u64 = trace.files.iter().map(|f| f.measured_loaded_bytes).sum();
            assert!(files_total < 16 * MIB, "32 MiB of anonymous writes leaked into file figures: {files_total}");
            let rss = trace.rss.as_ref().and_then(|r| r.at_final_truth).expect("RSS at the final truth");
            assert!(rss.anon_bytes >= 32 * MIB, "{rss:#?}");
            let anon = trace.regions.iter().find(|r| r.region == "[anon]").unwrap();
            assert!(anon.faults.write >= 8192 / 2, "{anon:#?}");
        },
    },
    // A deleted file keeps its identity.
    Case {
        scenario: "deleted",
        file: None,
        kernel_rss: Some(FILE_SIZE),
        unloaded: None,
        mapped_at_end: None,
        check: |_, f| {
            assert!(f.path.ends_with("(deleted)"), "{f:#?}");
            assert_eq!(f.size_bytes, Some(FILE_SIZE), "size read through map_files, not the vanished path");
        },
    },
    // A memfd mapping is a shmem file.
    Case {
        scenario: "memfd",
        file: Some("/memfd:memtrace-test"),
        kernel_rss: Some(8 * MIB),
        unloaded: None,
        mapped_at_end: None,
        check: NOTHING_ELSE,
    },
    // mremap grows and moves a file mapping.
    Case {
        scenario: "mremap",
        file: None,
        kernel_rss: Some(FILE_SIZE),
        unloaded: None,
        mapped_at_end: Some(FILE_SIZE),
        check: |trace, _| assert!(trace.counters.mremap_calls >= 1),
    },
    // MADV_PAGEOUT reclaims and evicts.
    Case {
        scenario: "pageout",
        file: None,
        kernel_rss: None,
        unloaded: None,
        mapped_at_end: None,
        check: |_, f| {
            let kernel = kernel_rss(f);
            assert!(kernel < FILE_SIZE / 2, "MADV_PAGEOUT left {kernel} bytes resident: {f:#?}");
            assert_eq!(f.unloaded_bytes, FILE_SIZE - kernel, "{f:#?}");
            assert!(f.evicted_bytes > 0, "reclaimed clean pages leave the page cache: {f:#?}");
            assert!(f.evicted_bytes <= FILE_SIZE, "{f:#?}");
        },
    },
    // A device mapping is reported with what is known.
    Case {
        scenario: "device",
        file: Some("/dev/zero"),
        kernel_rss: Some(MIB),
        unloaded: None,
        mapped_at_end: None,
        check: NOTHING_ELSE,
    },
];

#[test]
fn mapping_cases_match_smaps() {
    let _root = require_root();
    for case in &CASES {
        let Case { scenario, .. } = case;
        let dir = scratch(&format!("mapping_{scenario}"));
        let data = data_file(&dir);
        let run = Memtrace::run()
            .json(dir.join("trace.json"))
            .target([mapper_bin().as_os_str(), scenario.as_ref(), data.as_os_str()])
            .interrupt_when("ready pid=");
        // The mapper waits on stdin; memtrace forwards the SIGINT and exits like it.
        assert_eq!(run.status.code(), Some(130), "{scenario}: {}", run.report);
        let trace = run.trace;
        assert!(trace.final_truth.starts_with("read from"), "{scenario}: {}", trace.final_truth);

        let path = case.file.unwrap_or_else(|| data.to_str().unwrap());
        let f = trace.files.iter().find(|f| f.path.starts_with(path));
        let f = f.unwrap_or_else(|| panic!("{scenario}: no file {path} in {:#?}", trace.files));
        // Measured residency agrees with smaps within 1 % or 64 KiB.
        let kernel = kernel_rss(f);
        let measured = f.measured_resident_bytes;
        let bound = (kernel / 100).max(64 * 1024);
        assert!(measured.abs_diff(kernel) <= bound, "{scenario}: measured {measured}, smaps {kernel}: {f:#?}");
        if let Some(expected) = case.kernel_rss {
            assert_eq!(kernel, expected, "{scenario}: {f:#?}");
        }
        if let Some(expected) = case.unloaded {
            assert_eq!(f.unloaded_bytes, expected, "{scenario}: {f:#?}");
        }
        if let Some(expected) = case.mapped_at_end {
            assert_eq!(f.mapped_at_end_bytes, expected, "{scenario}: {f:#?}");
        }
        (case.check)(&trace, f);
    }
}
