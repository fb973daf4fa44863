//! `--chrome-trace PATH`: the trace in the Chrome Trace Event Format, which
//! ui.perfetto.dev and chrome://tracing open. Phases are complete ("X")
//! slices on the target's track; the timeline becomes counter ("C") tracks
//! (RSS split, live heap, each file's loaded bytes); leak candidates and
//! losses are instant ("i") events at the stop. A process tree gets one
//! track per process: its life as a slice, its own phases, its leaks; the
//! counters stay on the first process's track and cover the tree.
//! Timestamps are µs since tracing started.
use serde_json::{json, Value};

use crate::trace::Trace;

/// Files given their own counter track (most loaded first).
const FILE_TRACKS: usize = 8;

fn us(seconds: f64) -> f64 {
    (seconds * 1e6).max(0.0)
}

pub fn from_trace(t: &Trace) -> Value {
    let pid = t.target.pid;
    let mut events = vec![
        json!({"name": "process_name", "ph": "M", "pid": pid, "tid": pid, "args": {"name": format!("{} (PID {pid})", t.target.command)}}),
        json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": pid, "args": {"name": "phases"}}),
    ];
    for p in &t.phases {
        events.push(json!({
            "name": p.name, "cat": "phase", "ph": "X", "pid": pid, "tid": pid,
            "ts": us(p.start_s), "dur": us(p.end_s - p.start_s),
            "args": {
                "path": p.path,
                "page_faults": p.page_faults,
                "anon_rss_growth_bytes": p.anon_rss_growth_bytes,
                "heap_growth_bytes": p.heap_growth_bytes,
                "open_at_stop": p.open,
            },
        }));
    }
    // Files with a track: the most loaded at the end of the timeline.
    let mut files: Vec<(&str, u64)> = t
        .timeline
        .samples
        .last()
        .map(|s| s.files_loaded_bytes.iter().map(|f| (f.path.as_str(), f.loaded_bytes)).collect())
        .unwrap_or_default();
    files.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
    files.truncate(FILE_TRACKS);
    for s in &t.timeline.samples {
        let ts = us(s.t_s);
        events.push(json!({"name": "RSS (kernel: rss_stat)", "ph": "C", "pid": pid, "ts": ts, "args": {
            "file": s.rss_file_bytes, "anon": s.rss_anon_bytes, "shmem": s.rss_shmem_bytes}}));
        if let Some(live) = s.heap_live_bytes {
            events.push(
                json!({"name": "heap live (measured)", "ph": "C", "pid": pid, "ts": ts, "args": {"bytes": live}}),
            );
        }
        for (path, _) in &files {
            let loaded = s.files_loaded_bytes.iter().find(|f| f.path == *path).map_or(0, |f| f.loaded_bytes);
            events.push(
                json!({"name": format!("loaded (measured): {path}"), "ph": "C", "pid": pid, "ts": ts, "args": {"bytes": loaded}}),
            );
        }
    }
    let end = us(t.duration_s);
    if t.processes.len() > 1 {
        process_tracks(&mut events, t);
    }
    for l in &t.leaks {
        let top = l.stack.first().and_then(|f| f.function.clone()).unwrap_or_else(|| "(no symbol)".into());
        // A tree's leak on its own process's track (a single process's: 0 or its PID).
        let pid = if t.processes.iter().any(|p| p.pid == l.pid) { l.pid } else { pid };
        events.push(json!({
            "name": format!("leak: {top}"), "cat": "leak", "ph": "i", "s": "p", "pid": pid, "tid": pid, "ts": end,
            "args": {"bytes": l.bytes, "count": l.count, "phase": l.phase, "oldest_age_s": l.oldest_age_s},
        }));
    }
    let c = &t.counters;
    let losses = [
        ("ring-buffer drops", c.ringbuf_drops),
        ("syscalls lost", c.syscalls_lost),
        ("malformed events", c.malformed_events),
        ("dropped allocations", t.heap.as_ref().map_or(0, |h| h.totals.dropped_allocs)),
    ];
    for (what, n) in losses.into_iter().filter(|(_, n)| *n > 0) {
        events.push(json!({"name": format!("{what}: {n}"), "cat": "loss", "ph": "i", "s": "g", "pid": pid, "tid": pid, "ts": end, "args": {"count": n}}));
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"memtrace_format": t.format, "version": t.version, "started_at": t.started_at, "command": t.target.command},
    })
}

/// One track per process of a tree: its name, its life (fork or start to
/// exit or stop) with its main figures, and its own phases.
fn process_tracks(events: &mut Vec<Value>, t: &Trace) {
    for p in &t.processes {
        let pid = p.pid;
        // The life track's thread id: beside the PID's own, in 64 bits (a
        // PID near u32::MAX, which a damaged trace can hold, still fits).
        let life = u64::from(pid) + 1_000_000_000;
        if pid != t.target.pid {
            events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "tid": pid, "args": {"name": format!("{} (PID {pid})", p.command)}}));
            events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": pid, "args": {"name": "phases"}}));
            for ph in &p.phases {
                events.push(json!({
                    "name": ph.name, "cat": "phase", "ph": "X", "pid": pid, "tid": pid,
                    "ts": us(ph.start_s), "dur": us(ph.end_s - ph.start_s),
                    "args": {"path": ph.path, "page_faults": ph.page_faults, "heap_growth_bytes": ph.heap_growth_bytes},
                }));
            }
        }
        let ended = p.ended_s.unwrap_or(t.duration_s);
        events.push(json!({
            "name": "process", "cat": "process", "ph": "X", "pid": pid, "tid": life,
            "ts": us(p.started_s), "dur": us(ended - p.started_s),
            "args": {
                "parent": p.parent,
                "exit_code": p.exit_code,
                "exit_signal": p.exit_signal,
                "files_loaded_bytes (measured)": p.file_totals.measured_loaded_bytes,
                "heap_live_bytes (measured)": p.heap.as_ref().map(|h| h.live_bytes),
                "page_faults (measured)": p.counters.page_faults_seen,
            },
        }));
        events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": life, "args": {"name": "life"}}));
    }
}

/// Writes it whole or not at all (mode 0600), like the JSON trace.
pub fn write(path: &std::path::Path, t: &Trace) -> anyhow::Result<()> {
    crate::trace::write_atomically("--chrome-trace", path, |file| {
        use std::io::Write;
        serde_json::to_writer(&mut *file, &from_trace(t))?;
        Ok(file.write_all(b"\n")?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::timeline::{FileLoaded, Sample, Timeline},
        trace::tests::sample,
    };

    /// The format's rules a viewer relies on (the e2e test applies the same
    /// to a real run's file).
    pub fn check_rules(v: &Value) -> Result<(), String> {
        let events = v["traceEvents"].as_array().ok_or("no traceEvents array")?;
        for e in events {
            let ph = e["ph"].as_str().ok_or(format!("no ph: {e}"))?;
            if !["X", "C", "i", "M"].contains(&ph) {
                return Err(format!("unexpected ph {ph}: {e}"));
            }
            if e["name"].as_str().is_none_or(str::is_empty) || !e["pid"].is_u64() {
                return Err(format!("name and pid required: {e}"));
            }
            if ph != "M" && !e["ts"].as_f64().is_some_and(|t| t >= 0.0) {
                return Err(format!("ts must be µs >= 0: {e}"));
            }
            if ph == "X" && !e["dur"].as_f64().is_some_and(|d| d >= 0.0) {
                return Err(format!("X needs dur >= 0: {e}"));
            }
            if ph == "C" && !e["args"].as_object().is_some_and(|a| !a.is_empty() && a.values().all(Value::is_number)) {
                return Err(format!("counter args must be numbers: {e}"));
            }
            if ph == "i" && !["g", "p", "t"].contains(&e["s"].as_str().unwrap_or("t")) {
                return Err(format!("instant scope: {e}"));
            }
        }
        Ok(())
    }

    #[test]
    fn phases_counters_and_leaks_follow_the_format() {
        let mut t = sample();
        t.timeline = Timeline {
            interval_s: 0.1,
            thinned_samples: 0,
            samples: (0..3)
                .map(|i| Sample {
                    t_s: i as f64 * 0.1,
                    rss_file_bytes: 4096 * i,
                    heap_live_bytes: Some(100),
                    files_loaded_bytes: vec![FileLoaded { path: "/data/a.arrow".into(), loaded_bytes: 8192 * i }],
                    ..Sample::default()
                })
                .collect(),
        };
        t.counters.ringbuf_drops = 2;
        let v = from_trace(&t);
        check_rules(&v).unwrap();
        let names: Vec<&str> = v["traceEvents"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
        assert!(
            names.contains(&"loaded (measured): /data/a.arrow") && names.contains(&"ring-buffer drops: 2"),
            "{names:?}"
        );
        assert_eq!(names.iter().filter(|n| **n == "RSS (kernel: rss_stat)").count(), 3);
        let bad = json!({"traceEvents": [{"name": "x", "ph": "C", "pid": 1, "ts": 0, "args": {"v": "1"}}]});
        assert!(check_rules(&bad).is_err(), "a string counter value is refused");
    }
}
