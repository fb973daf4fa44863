//! The timeline: samples every --interval with the RSS split, the heap, the
//! per-file loaded bytes, faults and the phase in force, consistent with
//! the rest of the trace.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

#[test]
fn samples_follow_the_workload_through_its_phases() {
    let _root = require_root();
    let dir = scratch("timeline");
    let (trace_path, arrow) = (dir.join("trace.json"), dir.join("w.arrow"));
    let out = run(Command::new(memtrace_bin())
        .args(["run", "--interval", "10ms", "--json"])
        .arg(&trace_path)
        .arg("--")
        .arg(workload_bin())
        .arg("--file")
        .arg(&arrow)
        .args(["--size-mib", "128", "--touch", "1.0", "--heap-mib", "64"]));
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_json(&trace_path);
    let tl = &trace["timeline"];
    let samples = tl["samples"].as_array().unwrap();
    assert_eq!(tl["interval_s"].as_f64(), Some(0.01));
    assert_eq!(u(&tl["thinned_samples"]), 0);
    let duration = trace["duration_s"].as_f64().unwrap();
    let expected = duration / 0.01;
    assert!(
        (samples.len() as f64) > expected * 0.5 && (samples.len() as f64) <= expected + 2.0,
        "{} samples in {duration} s",
        samples.len()
    );
    let t: Vec<f64> = samples.iter().map(|s| s["t_s"].as_f64().unwrap()).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");

    // The phases seen in the samples are the workload's, in its order.
    let mut seen: Vec<&str> = Vec::new();
    for s in samples {
        let p = s["phase"].as_str().unwrap();
        if !p.is_empty() && seen.last() != Some(&p) {
            seen.push(p);
        }
    }
    let order = ["write", "load", "build", "search", "leak", "teardown"];
    let positions: Vec<usize> = seen.iter().map(|p| order.iter().position(|o| o == p).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.contains(&"build") && seen.contains(&"search"), "phases this long are sampled: {seen:?}");

    // The 64 MiB heap shows while it is built, and anonymous RSS with it.
    let peak_heap = samples.iter().filter_map(|s| s["heap_live_bytes"].as_i64()).max().unwrap();
    assert!(peak_heap >= 64 << 20, "{peak_heap}");
    let peak_anon = samples.iter().map(|s| u(&s["rss_anon_bytes"])).max().unwrap();
    assert!(peak_anon >= 64 << 20, "{peak_anon}");

    // The Arrow file's loaded bytes never go down and end at most at the trace's figure.
    let arrow_path = arrow.to_str().unwrap();
    let loaded: Vec<u64> = samples
        .iter()
        .map(|s| {
            s["files_loaded_bytes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == arrow_path)
                .map_or(0, |f: &Value| u(&f["loaded_bytes"]))
        })
        .collect();
    assert!(loaded.windows(2).all(|w| w[0] <= w[1]), "{loaded:?}");
    let total = u(&file_entry(&trace, arrow_path)["measured_loaded_bytes"]);
    assert!(*loaded.last().unwrap() <= total && *loaded.iter().max().unwrap() > 0, "{loaded:?} vs {total}");

    // Faults per interval add up to no more than the kernel's count for the run.
    let sampled: u64 = samples.iter().filter_map(|s| s["minor_faults"].as_u64()).sum();
    let kernel = u(&trace["kernel"]["minor_faults"]);
    assert!(sampled <= kernel && sampled * 2 >= kernel, "sampled {sampled}, kernel {kernel}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Timeline [kernel truth"), "{report}");
}

#[test]
fn an_interval_below_10ms_is_refused() {
    let out = run(Command::new(memtrace_bin()).args(["run", "--interval", "5ms", "--", "true"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("10ms minimum"), "{}", describe(&out));
}
