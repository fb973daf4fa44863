//! memtrace-workload: a program that maps a big Arrow file, builds heap
//! structures, scans part of the file, leaks, and tears down — and records
//! its own ground truth of all of it, for memtrace's end-to-end tests.

mod alloc_count;
mod arrow_file;
mod cli;
mod cold;
mod control;
mod heap_build;
mod markers;
mod pages;
mod phases;
mod search;
mod truth;

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

use crate::arrow_file::Layout;
use crate::cli::Args;
use crate::markers::leaky_cache_insert;
use crate::phases::{Phase, PhaseRunner};
use crate::truth::{FileTruth, LeakTruth, PhaseTruth, SearchTruth, Truth};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` keeps the whole context chain on one line.
            eprintln!("memtrace-workload: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The system page size (the granularity of page faults and page counts).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Fails fast (before minutes of writing) when `path`'s directory is missing.
fn check_parent_dir(path: &Path, option: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("{option} {}: directory {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        bail!("{option} {} is a directory", path.display());
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    check_parent_dir(&args.file, "--file")?;
    if let Some(t) = &args.truth {
        check_parent_dir(t, "--truth")?;
    }
    let leak_total = args.leak.checked_mul(args.leak_size).context("--leak × --leak-size overflows")?;
    let layout = Layout::for_size(args.size_mib, args.rows_per_batch as usize, args.dim as usize);
    let page_size = page_size();
    let touched_batches = search::choose_batches(layout.batches, args.touch);
    let mut cold_resident_pages = None;
    let mut searched: Option<SearchTruth> = None;
    // The truth so far; written at a --pause-after point too, so that a test
    // can compare what a tracer sees during the pause with the phases so far.
    let make_truth =
        |runner: &PhaseRunner, cold: Option<u64>, search: Option<SearchTruth>, complete: bool| -> Result<Truth> {
            Ok(Truth {
                format: truth::FORMAT,
                version: truth::VERSION,
                pid: std::process::id(),
                file: FileTruth::stat(&args.file, page_size, layout.batches, layout.rows_per_batch, layout.dim)?,
                cold: args.cold,
                cold_resident_pages: cold,
                madvise: args.madvise,
                touch: args.touch,
                touched_batches: touched_batches.clone(),
                phases: runner.records.iter().map(|r| PhaseTruth::from_record(r, page_size)).collect(),
                file_pages_touched_total: truth::total_pages(&runner.records),
                leak: LeakTruth {
                    count: args.leak,
                    size_bytes: args.leak_size,
                    total_bytes: leak_total,
                    function: "leaky_cache_insert",
                },
                search,
                complete,
            })
        };
    let pause = |phase: Phase, runner: &PhaseRunner, cold: Option<u64>, search: &Option<SearchTruth>| -> Result<()> {
        if args.pause_after.contains(&phase) {
            if let Some(path) = &args.truth {
                truth::write_atomic(&make_truth(runner, cold, search.clone(), false)?, path)?;
            }
            control::pause_after(phase)?;
        }
        Ok(())
    };
    let mut runner = PhaseRunner::new();

    runner.run(Phase::Write, |_| match arrow_file::check_existing(&args.file, &layout) {
        Ok(()) => {
            eprintln!("memtrace-workload: {} is a valid workload file, not rewriting it", args.file.display());
            Ok(())
        }
        Err(why) => {
            eprintln!(
                "memtrace-workload: writing {} ({} batches of {} rows, dim {}); no reusable file there ({why})",
                args.file.display(),
                layout.batches,
                layout.rows_per_batch,
                layout.dim
            );
            arrow_file::write_file(&args.file, &layout)
        }
    })?;
    pause(Phase::Write, &runner, cold_resident_pages, &searched)?;

    // Outside any phase: eviction is preparation, not workload behaviour.
    cold_resident_pages = if args.cold {
        let r = cold::make_cold(&args.file)?;
        eprintln!(
            "memtrace-workload: cold: {} of {} file pages still resident after POSIX_FADV_DONTNEED",
            r.resident, r.total
        );
        if r.resident * 100 >= r.total.max(1) {
            eprintln!("memtrace-workload: warning: 1% or more of the file is still cached; going on");
        }
        Some(r.resident)
    } else {
        None
    };

    let mapped = runner.run(Phase::Load, |ctx| {
        let file = File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
        // The fd is closed when `file` drops; the mapping outlives it.
        arrow_file::open_zero_copy(&file, &layout, args.madvise.to_memmap(), &mut ctx.pages, page_size)
    })?;
    pause(Phase::Load, &runner, cold_resident_pages, &searched)?;

    let built =
        runner.run(Phase::Build, |ctx| Ok(heap_build::build(ctx, args.heap_mib * 1024 * 1024, layout.total_rows())))?;
    eprintln!(
        "memtrace-workload: build: index of {} ids, {} result buffers ({} floats)",
        built.index.len(),
        built.buffers.len(),
        built.buffers.iter().map(Vec::len).sum::<usize>()
    );
    pause(Phase::Build, &runner, cold_resident_pages, &searched)?;

    let found = runner.run(Phase::Search, |ctx| {
        search::search(&mapped, &touched_batches, layout.rows_per_batch, layout.dim, &mut ctx.pages, page_size)
    })?;
    searched = Some(SearchTruth { rows_scanned: found.rows_scanned, top: found.top });
    pause(Phase::Search, &runner, cold_resident_pages, &searched)?;

    runner.run(Phase::Leak, |ctx| {
        for _ in 0..args.leak {
            let p = leaky_cache_insert(args.leak_size as usize);
            ensure!(!p.is_null(), "malloc({}) failed", args.leak_size);
            // The pointer is forgotten here: nothing frees it. The global
            // allocator never saw this libc::malloc, so add it to the phase's
            // heap figures by hand.
            ctx.extra_allocs += 1;
            ctx.extra_alloc_bytes += args.leak_size;
        }
        Ok(())
    })?;
    pause(Phase::Leak, &runner, cold_resident_pages, &searched)?;

    runner.run(Phase::Teardown, |_| {
        drop(built);
        // Dropping the batches drops the last owner of the mapping (munmap).
        ensure!(mapped.close(), "the file mapping is still referenced after teardown");
        Ok(())
    })?;
    pause(Phase::Teardown, &runner, cold_resident_pages, &searched)?;

    let (begins, ends) = markers::marker_counts();
    ensure!(
        begins == ends && begins == runner.records.len() as u64,
        "phase markers unbalanced: {begins} begins, {ends} ends"
    );

    let truth = make_truth(&runner, cold_resident_pages, searched, true)?;
    eprintln!(
        "memtrace-workload: file {} bytes ({} pages), {} of {} batches searched, {} file pages read in all",
        truth.file.size_bytes,
        truth.file.size_bytes.div_ceil(page_size),
        truth.touched_batches.len(),
        layout.batches,
        truth.file_pages_touched_total
    );
    if let Some(path) = &args.truth {
        truth::write_atomic(&truth, path)?;
        eprintln!("memtrace-workload: truth written to {}", path.display());
    }

    if args.hold {
        control::hold()?;
    }
    Ok(())
}
