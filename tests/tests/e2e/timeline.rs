//! The timeline: samples every --interval with the RSS split, the heap, the
//! per-file loaded bytes, faults and the phase in force, consistent with
//! the rest of the trace.
use crate::common::*;

#[test]
fn samples_follow_the_workload_through_its_phases() {
    let _root = require_root();
    let dir = scratch("timeline");
    let workload = Workload::in_dir(&dir).size_mib(128).touch(1.0).heap_mib(64);
    let run = workload.traced(["--interval", "10ms"]);
    let trace = &run.trace;
    let tl = &trace.timeline;
    let samples = &tl.samples;
    assert_eq!(tl.interval_s, 0.01);
    assert_eq!(tl.thinned_samples, 0);
    let duration = trace.duration_s;
    let t: Vec<f64> = samples.iter().map(|s| s.t_s).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    // No sample is taken while the target is held at a stop memtrace acts
    // on (its exec, with the unwind tables of its code loaded, ~0.1 s on
    // this machine; its exit, with smaps read): nothing happens in it then.
    // Between the first and the last sample, at least half the ticks.
    let (first, last) = (t[0], t[t.len() - 1]);
    assert!(first < 0.3, "the first sample at {first} s");
    let span_ticks = (last - first) / 0.01;
    assert!(
        (samples.len() as f64) > span_ticks * 0.5 && (samples.len() as f64) <= duration / 0.01 + 2.0,
        "{} samples in {duration} s, from {first} s to {last} s",
        samples.len()
    );

    // The phases seen in the samples are the workload's, in its order.
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        let p = s.phase.as_str();
        if !p.is_empty() && seen.last() != Some(&p) {
            seen.push(p);
        }
    }
    let order = ["write", "load", "build", "search", "leak", "teardown"];
    let positions: Vec<usize> = seen.iter().map(|p| order.iter().position(|o| o == p).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.contains(&"build") && seen.contains(&"search"), "phases this long are sampled: {seen:?}");

    // The 64 MiB heap shows while it is built, and anonymous RSS with it.
    let peak_heap = samples.iter().filter_map(|s| s.heap_live_bytes).max().unwrap();
    assert!(peak_heap >= 64 << 20, "{peak_heap}");
    let peak_anon = samples.iter().map(|s| s.rss_anon_bytes).max().unwrap();
    assert!(peak_anon >= 64 << 20, "{peak_anon}");

    // The Arrow file's loaded bytes never go down and end at most at the trace's figure.
    let arrow = workload.arrow();
    let arrow_path = arrow.to_str().unwrap();
    let loaded: Vec<u64> = samples
        .iter()
        .map(|s| s.files_loaded_bytes.iter().find(|f| f.path == arrow_path).map_or(0, |f| f.loaded_bytes))
        .collect();
    assert!(loaded.windows(2).all(|w| w[0] <= w[1]), "{loaded:?}");
    let total = file_entry(trace, arrow_path).measured_loaded_bytes;
    assert!(*loaded.last().unwrap() <= total && *loaded.iter().max().unwrap() > 0, "{loaded:?} vs {total}");

    // Faults per interval add up to no more than the kernel's count for the run.
    let sampled: u64 = samples.iter().filter_map(|s| s.minor_faults).sum();
    let kernel = trace.kernel.as_ref().expect("the kernel's fault counts").minor_faults;
    assert!(sampled <= kernel && sampled * 2 >= kernel, "sampled {sampled}, kernel {kernel}");
    let report = run.report();
    assert!(report.contains("Timeline [kernel truth"), "{report}");
}

#[test]
fn an_interval_below_10ms_is_refused() {
    let out = Memtrace::run().args(["--interval", "5ms"]).target(["true"]).output();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("10ms minimum"), "{}", describe(&out));
}
