//! Command-line options.

use std::path::PathBuf;

use clap::Parser;

use crate::phases::Phase;

/// A test workload for memtrace that behaves like a program serving
/// embeddings from a memory-mapped Arrow file, and writes its own ground
/// truth (file pages read, heap growth, leaks, phase times) for comparison.
///
/// Phases, in order, each wrapped in calls to memtrace_phase_begin/end:
/// write (create the Arrow IPC file unless a valid one exists), load (mmap
/// it and decode batch metadata zero-copy), build (grow the heap with a hash
/// index and result buffers), search (scan the embeddings of a spread-out
/// subset of batches), leak (malloc and forget from leaky_cache_insert),
/// teardown (free everything, munmap).
#[derive(Debug, Parser)]
#[command(name = "memtrace-workload", version)]
pub struct Args {
    /// Arrow IPC file to create (if needed) and map
    #[arg(long, value_name = "PATH", default_value = "memtrace-workload.arrow")]
    pub file: PathBuf,

    /// Approximate size of the Arrow file in MiB (rounded up to whole record batches)
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub size_mib: u64,

    /// Fraction (0.0..=1.0) of record batches whose embeddings the search phase
    /// reads; the chosen batches are spread evenly over the file
    #[arg(long, value_name = "FRACTION", default_value_t = 0.25, value_parser = parse_fraction)]
    pub touch: f64,

    /// Heap growth in MiB that the build phase creates and keeps until teardown
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub heap_mib: u64,

    /// Number of allocations the leak phase leaks (via leaky_cache_insert)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub leak: u64,

    /// Size in bytes of each leaked allocation
    #[arg(long, value_name = "S", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub leak_size: u64,

    /// Rows per record batch
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    pub rows_per_batch: u64,

    /// Embedding dimension (Float32 values per row)
    #[arg(long, value_name = "D", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1 << 16))]
    pub dim: u64,

    /// Before load: fsync the file, drop it from the page cache
    /// (posix_fadvise DONTNEED) and check with mincore that it is gone, so
    /// the phases' reads become real page faults on disk-backed pages
    #[arg(long)]
    pub cold: bool,

    /// madvise(2) advice for the file mapping, given right after mmap in the
    /// load phase. `random` turns off the kernel's read-around on faults, so
    /// with --cold only the pages the workload reads come into the page cache
    /// (fault-around may still map already-cached neighbours)
    #[arg(long, value_name = "ADVICE", value_enum, default_value_t = Advice::Normal)]
    pub madvise: Advice,

    /// After teardown (and after writing the truth) print `holding pid=<pid>`
    /// and serve stdin: a line `fault N` maps N anonymous pages, writes one
    /// byte per page, unmaps them and answers `done fault N`; EOF exits
    #[arg(long)]
    pub hold: bool,

    /// After PHASE ends print `paused after <PHASE> pid=<pid>` and wait for one
    /// line on stdin before going on (repeatable: --pause-after load --pause-after search)
    #[arg(long, value_name = "PHASE", value_enum)]
    pub pause_after: Vec<Phase>,

    /// Write the ground-truth JSON to PATH (atomically: temp file + rename)
    #[arg(long, value_name = "PATH")]
    pub truth: Option<PathBuf>,
}

/// Access-pattern advice for the file mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Advice {
    Normal,
    Random,
    Sequential,
}

impl Advice {
    pub fn to_memmap(self) -> memmap2::Advice {
        match self {
            Advice::Normal => memmap2::Advice::Normal,
            Advice::Random => memmap2::Advice::Random,
            Advice::Sequential => memmap2::Advice::Sequential,
        }
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.0..=1.0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn touch_range_is_enforced() {
        assert_eq!(parse_fraction("0"), Ok(0.0));
        assert_eq!(parse_fraction("1.0"), Ok(1.0));
        assert!(parse_fraction("1.01").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("NaN").is_err());
        assert!(parse_fraction("x").is_err());
    }

    #[test]
    fn defaults() {
        let a = Args::try_parse_from(["memtrace-workload"]).unwrap();
        assert_eq!(a.size_mib, 256);
        assert_eq!(a.touch, 0.25);
        assert_eq!(a.heap_mib, 64);
        assert_eq!(a.leak, 0);
        assert_eq!(a.leak_size, 4096);
        assert!(a.pause_after.is_empty());
        assert_eq!(a.madvise, Advice::Normal);
        let a = Args::try_parse_from(["w", "--pause-after", "load"]).unwrap();
        assert_eq!(a.pause_after, [Phase::Load]);
        let a = Args::try_parse_from(["w", "--pause-after", "load", "--pause-after", "search"]).unwrap();
        assert_eq!(a.pause_after, [Phase::Load, Phase::Search]);
    }
}
