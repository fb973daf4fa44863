//! Event storms and exhausted maps. A target faulting as fast as this
//! machine lets it, and one calling malloc/free at full speed on two
//! threads: every event is counted (or its drop is), the figures agree
//! with the target's own counts and the kernel's, and memtrace's own RSS
//! stays bounded (it is in the trace, from getrusage). Maps made tiny on
//! purpose: what does not fit is dropped, counted and named, and the rest
//! stays exact. (`cargo xtask bench storm` runs the storms for 60 s.)
use std::path::{Path, PathBuf};

use memtrace::trace::Trace;

use crate::common::*;

/// Seconds each storm lasts here (the benchmark runs 60).
const STORM_SECS: &str = "6";
/// memtrace's own RSS must stay below this under any storm.
const RSS_BOUND: u64 = 512 << 20;

fn storm(dir: &Path) -> PathBuf {
    let bin = dir.join("storm");
    let source = root_dir().join("tests/c/storm.c");
    let out = run(std::process::Command::new("cc")
        .args(["-g", "-O2", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&source)
        .arg("-lpthread"));
    assert!(out.status.success(), "cc storm.c: {}", describe(&out));
    bin
}

/// The number after `key ` on the target's output.
fn printed(out: &str, key: &str) -> u64 {
    let line =
        out.lines().find_map(|l| l.strip_prefix(&format!("{key} "))).unwrap_or_else(|| panic!("no {key}: {out}"));
    line.trim().parse().unwrap()
}

/// memtrace's cost is in the trace and its report, and bounded.
fn assert_bounded(trace: &Trace, report: &str) {
    let own = trace.memtrace.as_ref().expect("memtrace's own cost in the trace");
    assert!(own.peak_rss_bytes > 0 && own.peak_rss_bytes < RSS_BOUND, "{own:#?}");
    assert!(own.cpu_user_s + own.cpu_system_s > 0.0, "{own:#?}");
    let last = report.lines().rev().find(|l| l.starts_with("memtrace itself")).unwrap_or_default();
    assert!(last.contains("peak RSS") && last.contains("ring-buffer records"), "{report}");
}

#[test]
fn a_fault_storm_is_counted_fault_for_fault_with_memtrace_bounded() {
    let _root = require_root();
    let dir = scratch("storm_faults");
    let bin = storm(&dir);
    let sparse = dir.join("sparse.bin"); // 4 GiB, no block allocated
    let traced = Memtrace::run()
        .json(dir.join("trace.json"))
        .target([bin.as_os_str(), "faults".as_ref(), sparse.as_os_str(), "4096".as_ref(), STORM_SECS.as_ref()])
        .traced();
    let _ = std::fs::remove_file(&sparse);
    let (trace, report) = (&traced.trace, traced.report());
    let pages = printed(&report, "pages");
    let c = &trace.counters;
    assert!(c.page_faults_write >= pages, "each written page is a fault: {pages} pages, {c:#?}");
    let kernel = trace.kernel.as_ref().expect("the kernel's count").minor_faults;
    let measured = c.page_faults + c.ringbuf_drops;
    assert!(measured.abs_diff(kernel) * 1000 <= kernel, "within 0.1 % of the kernel's: {measured} vs {kernel}");
    assert_eq!(c.ringbuf_drops, 0, "the default ring keeps up with this machine's fault rate: {c:#?}");
    let sparse_name = sparse.to_str().unwrap();
    let f = trace.files.iter().find(|f| f.path == sparse_name).expect("the sparse file is in the trace");
    assert!(f.page_faults.write >= pages, "{f:#?}");
    assert_bounded(trace, &report);
}

#[test]
fn a_malloc_storm_on_two_threads_is_counted_call_for_call() {
    let _root = require_root();
    let dir = scratch("storm_malloc");
    let bin = storm(&dir);
    let traced = Memtrace::run()
        .json(dir.join("trace.json"))
        .target([bin.as_os_str(), "malloc".as_ref(), "2".as_ref(), STORM_SECS.as_ref()])
        .traced();
    let pairs = printed(&traced.report(), "pairs");
    let h = heap(&traced.trace);
    // Besides the pairs: the threads' and stdio's own few blocks.
    assert!(h.totals.allocs >= pairs && h.totals.allocs - pairs < 100, "{pairs} pairs: {:#?}", h.totals);
    assert!(h.totals.frees >= pairs && h.totals.frees - pairs < 100, "{pairs} pairs: {:#?}", h.totals);
    for (loss, n) in heap_losses(h) {
        assert_eq!(n, 0, "{loss}: {:#?}", h.totals);
    }
    assert_eq!(traced.trace.counters.ringbuf_drops, 0);
    assert_bounded(&traced.trace, &traced.report());
}

#[test]
fn tiny_maps_drop_what_does_not_fit_count_it_and_keep_the_rest_exact() {
    let _root = require_root();
    let dir = scratch("storm_tiny_maps");
    let leaky = build_c("leaky", &dir);
    let full = Memtrace::run().json(dir.join("full.json")).target([&leaky]).traced().trace;
    let full = heap(&full).totals;

    // 16 live allocations at most: the rest are dropped and counted; every
    // call is still counted once, either way.
    let tiny = Memtrace::run().args(["--max-live-allocs", "16"]).json(dir.join("live.json")).target([&leaky]).traced();
    let h = heap(&tiny.trace);
    assert!(h.totals.dropped_allocs > 0 && h.live_allocations <= 16, "{h:#?}");
    assert_eq!(h.totals.allocs + h.totals.dropped_allocs, full.allocs, "{:#?} vs {full:#?}", h.totals);
    assert!(tiny.report().contains("live map full: --max-live-allocs"), "{}", tiny.report());

    // 2 stacks at most: later allocations are kept without a stack.
    let few = Memtrace::run().args(["--max-stacks", "2"]).json(dir.join("stacks.json")).target([&leaky]).traced();
    let h = heap(&few.trace);
    assert!(h.totals.lost_stacks > 0, "{:#?}", h.totals);
    assert_eq!(h.totals.allocs, full.allocs, "{:#?}", h.totals);

    // A 4 KiB ring under a stream of every allocation: events are dropped
    // and counted, the heap figures (kept in kernel maps) stay exact.
    let events = dir.join("events.jsonl");
    let small = Memtrace::run()
        .args(["--ring-buffer-kib", "4", "--events"])
        .arg(&events)
        .json(dir.join("ring.json"))
        .target([mallocloop_bin().as_os_str(), "200000".as_ref()])
        .traced();
    let c = &small.trace.counters;
    assert!(c.ringbuf_drops > 0, "{c:#?}");
    let h = heap(&small.trace);
    assert!(h.totals.allocs >= 200_000 && h.totals.frees >= 200_000, "{:#?}", h.totals);
    let lines = std::fs::read_to_string(&events).unwrap().lines().filter(|l| l.contains("\"op\":\"alloc\"")).count();
    assert!((lines as u64) < h.totals.allocs, "the stream lost what the ring dropped: {lines} lines");
    assert!(
        small.report().contains(&format!("ring-buffer drops {}", memtrace::output::report::thousands(c.ringbuf_drops))),
        "{}",
        small.report()
    );
}
