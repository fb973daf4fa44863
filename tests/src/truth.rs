//! The ground-truth JSON the e2e tests compare memtrace's output against.
//! Field names are a stable interface: add fields, never rename them.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::Advice;
use crate::pages::PageSet;
use crate::phases::PhaseRecord;

pub const FORMAT: &str = "memtrace-workload-truth";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Truth {
    pub format: &'static str,
    pub version: u32,
    pub pid: u32,
    pub file: FileTruth,
    pub cold: bool,
    /// Pages still in the page cache after `--cold` eviction; null without `--cold`.
    pub cold_resident_pages: Option<u64>,
    /// The `--madvise` advice given on the file mapping ("normal", "random", "sequential").
    pub madvise: Advice,
    pub touch: f64,
    pub touched_batches: Vec<usize>,
    pub phases: Vec<PhaseTruth>,
    /// Distinct pages over all phases (union, not sum).
    pub file_pages_touched_total: u64,
    pub leak: LeakTruth,
    /// Null when the truth was written before the search phase ran.
    pub search: Option<SearchTruth>,
    /// False when written at a `--pause-after` point: `phases` holds only the
    /// phases finished so far (the file is rewritten when the run completes).
    pub complete: bool,
}

#[derive(Debug, Serialize)]
pub struct FileTruth {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub inode: u64,
    pub device_major: u32,
    pub device_minor: u32,
    pub page_size: u64,
    pub record_batches: usize,
    pub rows_per_batch: usize,
    pub dim: usize,
}

impl FileTruth {
    /// Identity of the file as the kernel sees it (what memtrace keys
    /// per-file stats on): canonical path, inode and st_dev split into
    /// major/minor.
    pub fn stat(path: &Path, page_size: u64, record_batches: usize, rows_per_batch: usize, dim: usize) -> Result<Self> {
        let path = path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))?;
        let meta = std::fs::metadata(&path)?;
        let dev = meta.dev() as libc::dev_t;
        Ok(Self {
            path,
            size_bytes: meta.len(),
            inode: meta.ino(),
            device_major: libc::major(dev),
            device_minor: libc::minor(dev),
            page_size,
            record_batches,
            rows_per_batch,
            dim,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct PhaseTruth {
    pub name: &'static str,
    /// CLOCK_MONOTONIC ns (bpf_ktime_get_ns's clock).
    pub start_ns: u64,
    pub end_ns: u64,
    pub start_unix_s: f64,
    pub duration_s: f64,
    pub file_pages_touched: u64,
    pub file_bytes_touched: u64,
    pub heap_allocated_bytes: u64,
    pub heap_freed_bytes: u64,
    pub heap_allocs: u64,
    pub heap_frees: u64,
    pub heap_growth_bytes: i64,
}

impl PhaseTruth {
    pub fn from_record(r: &PhaseRecord, page_size: u64) -> Self {
        let pages = r.pages.count();
        Self {
            name: r.phase.name(),
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            start_unix_s: r.start_unix_s,
            duration_s: (r.end_ns - r.start_ns) as f64 / 1e9,
            file_pages_touched: pages,
            file_bytes_touched: pages * page_size,
            heap_allocated_bytes: r.heap.allocated_bytes,
            heap_freed_bytes: r.heap.freed_bytes,
            heap_allocs: r.heap.allocs,
            heap_frees: r.heap.frees,
            heap_growth_bytes: r.heap.growth(),
        }
    }
}

/// Union of all phases' pages.
pub fn total_pages(records: &[PhaseRecord]) -> u64 {
    let mut all = PageSet::new();
    for r in records {
        all.extend(&r.pages);
    }
    all.count()
}

#[derive(Debug, Serialize)]
pub struct LeakTruth {
    pub count: u64,
    pub size_bytes: u64,
    pub total_bytes: u64,
    pub function: &'static str,
}

#[derive(Debug, Serialize, Clone)]
pub struct SearchTruth {
    pub rows_scanned: u64,
    /// `[global row, score]`, best first.
    pub top: Vec<(u64, f32)>,
}

/// Writes `truth` to `path` atomically: a temp file in the same directory,
/// then rename, so a reader never sees a partial file.
pub fn write_atomic(truth: &Truth, path: &Path) -> Result<()> {
    let name = path.file_name().with_context(|| format!("--truth {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let write = || -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        serde_json::to_writer_pretty(&mut f, truth)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The e2e tests read these names; changing one breaks them.
    #[test]
    fn field_names_are_stable() {
        let t = Truth {
            format: FORMAT,
            version: VERSION,
            pid: 1,
            file: FileTruth {
                path: "/x".into(),
                size_bytes: 0,
                inode: 0,
                device_major: 0,
                device_minor: 0,
                page_size: 4096,
                record_batches: 0,
                rows_per_batch: 0,
                dim: 0,
            },
            cold: false,
            cold_resident_pages: None,
            madvise: Advice::Random,
            touch: 0.5,
            touched_batches: vec![],
            phases: vec![],
            file_pages_touched_total: 0,
            leak: LeakTruth { count: 0, size_bytes: 0, total_bytes: 0, function: "leaky_cache_insert" },
            search: Some(SearchTruth { rows_scanned: 0, top: vec![(3, 1.5)] }),
            complete: true,
        };
        let v = serde_json::to_value(&t).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cold",
                "cold_resident_pages",
                "complete",
                "file",
                "file_pages_touched_total",
                "format",
                "leak",
                "madvise",
                "phases",
                "pid",
                "search",
                "touch",
                "touched_batches",
                "version"
            ]
        );
        assert_eq!(v["madvise"], "random");
        assert!(v["cold_resident_pages"].is_null());
        assert_eq!(v["search"]["top"][0][0], 3);
        assert_eq!(v["search"]["top"][0][1], 1.5);
    }
}
