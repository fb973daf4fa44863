//! `--chrome-trace`: a real run's file follows the Trace Event Format's
//! rules and carries the run's phases, counters and leaks; `memtrace report
//! --chrome-trace` makes the same file from the saved JSON trace.
use serde_json::Value;

use crate::common::*;

#[test]
fn a_run_exports_its_phases_counters_and_leaks_for_perfetto() {
    let _root = require_root();
    let dir = scratch("chrome_trace");
    let chrome = dir.join("run.chrome.json");
    let workload = Workload::in_dir(&dir).size_mib(32).touch(0.5).heap_mib(16).leak(100);
    let trace = workload.under().args(["--interval", "20ms"]).arg("--chrome-trace").arg(&chrome).traced().trace;
    let v = read_value(&chrome);
    let events = v["traceEvents"].as_array().unwrap();
    let mut counters = std::collections::BTreeSet::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap();
        assert!(["X", "C", "i", "M"].contains(&ph), "{e}");
        assert!(e["pid"].as_u64() == Some(u64::from(trace.target.pid)), "{e}");
        if ph != "M" {
            assert!(e["ts"].as_f64().unwrap() >= 0.0, "µs since the start: {e}");
        }
        if ph == "C" {
            let args = e["args"].as_object().unwrap();
            assert!(!args.is_empty() && args.values().all(Value::is_number), "{e}");
            counters.insert(e["name"].as_str().unwrap().to_string());
        }
    }
    // Every phase is a complete slice at its own start, in µs.
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), trace.phases.len());
    for (s, p) in slices.iter().zip(&trace.phases) {
        assert_eq!(s["name"], p.name.as_str());
        let start_us = p.start_s * 1e6;
        assert!((s["ts"].as_f64().unwrap() - start_us).abs() < 1.0, "{s} vs {p:#?}");
        assert!(s["dur"].as_f64().unwrap() >= 0.0);
    }
    let arrow = format!("loaded (measured): {}", workload.arrow().display());
    for track in ["RSS (kernel: rss_stat)", "heap live (measured)", arrow.as_str()] {
        assert!(counters.contains(track), "{track} in {counters:?}");
    }
    assert!(
        events.iter().any(|e| e["ph"] == "i" && e["name"] == "leak: leaky_cache_insert" && e["args"]["count"] == 100),
        "the leak as an instant event"
    );

    // The same file from the saved trace, without the kernel.
    let again = dir.join("report.chrome.json");
    Memtrace::report(&workload.trace_path()).arg("--chrome-trace").arg(&again).succeeds();
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&chrome).unwrap());
}
