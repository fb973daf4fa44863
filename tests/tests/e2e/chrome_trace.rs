//! `--chrome-trace`: a real run's file follows the Trace Event Format's
//! rules and carries the run's phases, counters and leaks; `memtrace report
//! --chrome-trace` makes the same file from the saved JSON trace.

use crate::common::*;
use serde_json::Value;

#[test]
fn a_run_exports_its_phases_counters_and_leaks_for_perfetto() {
    let _root = require_root();
    let dir = scratch("chrome_trace");
    let chrome = dir.join("run.chrome.json");
    let chrome_arg = chrome.to_str().unwrap();
    let (_, trace_path) = trace_workload(
        &dir,
        &["--interval", "20ms", "--chrome-trace", chrome_arg],
        &["--size-mib", "32", "--touch", "0.5", "--heap-mib", "16", "--leak", "100"],
    );
    let trace = read_json(&trace_path);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&chrome).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let mut counters = std::collections::BTreeSet::new();
    for e in events {
        let ph = e["ph"].as_str().unwrap();
        assert!(["X", "C", "i", "M"].contains(&ph), "{e}");
        assert!(e["pid"].as_u64() == trace["target"]["pid"].as_u64(), "{e}");
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
    let phases = trace["phases"].as_array().unwrap();
    assert_eq!(slices.len(), phases.len());
    for (s, p) in slices.iter().zip(phases) {
        assert_eq!(s["name"], p["name"]);
        let start_us = p["start_s"].as_f64().unwrap() * 1e6;
        assert!((s["ts"].as_f64().unwrap() - start_us).abs() < 1.0, "{s} vs {p}");
        assert!(s["dur"].as_f64().unwrap() >= 0.0);
    }
    let arrow = format!("loaded (measured): {}", dir.join("w.arrow").display());
    for track in ["RSS (kernel: rss_stat)", "heap live (measured)", arrow.as_str()] {
        assert!(counters.contains(track), "{track} in {counters:?}");
    }
    assert!(
        events.iter().any(|e| e["ph"] == "i" && e["name"] == "leak: leaky_cache_insert" && e["args"]["count"] == 100),
        "the leak as an instant event"
    );

    // The same file from the saved trace, without the kernel.
    let again = dir.join("report.chrome.json");
    let out = run(std::process::Command::new(memtrace_bin())
        .arg("report")
        .arg(&trace_path)
        .arg("--chrome-trace")
        .arg(&again));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&chrome).unwrap());
}
