//! The fuzz target's pipeline (fuzz/fuzz_targets/trace_report.rs) on every
//! input that ever crashed it (tests/fuzz-regressions/), its seeds
//! (fuzz/corpus/trace_report/) and a few hostile inputs made here: a saved
//! trace is read back and, when it is one, rendered as `memtrace report`
//! does (text, Chrome trace, HTML). Nothing may panic, and bad input gets
//! one clear line.
//!
//! Overflow checks are on only without `--release`: `cargo test -p memtrace
//! --test fuzz_regressions` also catches an arithmetic overflow, as the
//! fuzzer (debug assertions on) does.
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use memtrace::{output, trace};
use serde_json::Value;

/// What the fuzz target does with its input: Ok(true) when it was a trace
/// and rendered, Ok(false) when it was refused (with a one-line cause).
fn pipeline(name: &str, data: &[u8]) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| match trace::parse_json(data, name) {
        Ok(t) => {
            let report = output::report::render(&t);
            assert!(report.starts_with("memtrace report: PID"), "{name}: report is {report:.200}");
            let chrome = output::chrome_trace::from_trace(&t).to_string();
            assert!(chrome.starts_with('{'), "{name}: chrome trace is {chrome:.200}");
            output::html::render(&t).map_err(|e| format!("{e:#}")).map(|_| true)
        }
        Err(e) => {
            let line = format!("{e:#}");
            assert!(line.starts_with(name) && !line.contains('\n'), "{name}: not one line naming it: {line}");
            Ok(false)
        }
    }))
    .map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        format!("{name}: panicked: {what}")
    })?
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn saved_crashing_inputs_no_longer_panic() {
    let failures: Vec<String> = files_in(&manifest_dir().join("tests/fuzz-regressions"))
        .iter()
        .filter_map(|path| pipeline(&path.display().to_string(), &std::fs::read(path).unwrap()).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_fuzzers_seeds_are_traces_and_render() {
    let seeds = files_in(&manifest_dir().join("../fuzz/corpus/trace_report"));
    assert!(seeds.len() >= 2, "seeds: {seeds:?}");
    for path in seeds {
        let name = path.display().to_string();
        assert_eq!(pipeline(&name, &std::fs::read(&path).unwrap()), Ok(true), "{name}");
    }
}

/// The smallest seed, as text to be damaged.
fn minimal() -> String {
    std::fs::read_to_string(manifest_dir().join("../fuzz/corpus/trace_report/minimal.json")).unwrap()
}

#[test]
fn hostile_inputs_are_refused_in_one_line_or_rendered() {
    let good = minimal();
    let max = u64::MAX.to_string();
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let refused: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("truncated", good[..good.len() / 2].to_string()),
        ("deeply nested array", nested.clone()),
        ("deeply nested in a field", good.replacen("\"regions\":[]", &format!("\"regions\":{nested}"), 1)),
        ("a number past u64", good.replacen("\"page_faults\":3", "\"page_faults\":18446744073709551616", 1)),
        ("a number past f64", good.replacen("\"duration_s\":1.5", "\"duration_s\":1e400", 1)),
        ("a negative count", good.replacen("\"page_faults\":3", "\"page_faults\":-1", 1)),
        ("a fractional count", good.replacen("\"page_faults\":3", "\"page_faults\":3.5", 1)),
        ("another format", good.replacen("memtrace-trace", "chrome-trace", 1)),
        ("format not a string", good.replacen("\"memtrace-trace\"", "7", 1)),
        ("a newer version", good.replacen("\"version\":1", "\"version\":2", 1)),
        ("a huge version", good.replacen("\"version\":1", &format!("\"version\":{max}"), 1)),
        ("a negative version", good.replacen("\"version\":1", "\"version\":-1", 1)),
        ("version as text", good.replacen("\"version\":1", "\"version\":\"1\"", 1)),
        ("a top-level array", "[1, 2, 3]".into()),
        ("a field missing", good.replacen("\"stop_reason\"", "\"stop_reasn\"", 1)),
    ];
    for (name, text) in &refused {
        assert_eq!(pipeline(name, text.as_bytes()), Ok(false), "{name} is refused");
    }
    // A version-0 trace is older, not newer: read (and it is otherwise whole).
    assert_eq!(pipeline("version 0", good.replacen("\"version\":1", "\"version\":0", 1).as_bytes()), Ok(true));
    assert_eq!(pipeline("not UTF-8", b"{\"format\": \"\xff\xfe\"}"), Ok(false));
}

/// The JSON pointers (RFC 6901) of every number in `v`.
fn numbers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(at),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                numbers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields {
                numbers(item, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}

/// Each number of the richest seed at each edge of the integer and float
/// types, one at a time, then every one at its largest accepted edge at
/// once (so sums of figures overflow): refused or rendered, never a panic.
#[test]
fn every_number_at_the_edges_of_its_type_is_refused_or_rendered() {
    let seed = std::fs::read(manifest_dir().join("../fuzz/corpus/trace_report/tree-two-processes.json")).unwrap();
    let edges: Vec<Value> = vec![
        u64::MAX.into(),
        i64::MAX.into(),
        i64::MIN.into(),
        u32::MAX.into(),
        i32::MIN.into(),
        f64::MAX.into(),
        (-f64::MAX).into(),
    ];
    let mut trace: Value = serde_json::from_slice(&seed).unwrap();
    let mut leaves = Vec::new();
    numbers(&trace, String::new(), &mut leaves);
    assert!(leaves.len() > 100, "{} numbers", leaves.len());
    let mut failures = Vec::new();
    let mut largest = Vec::new();
    for at in &leaves {
        let was = trace.pointer(at).unwrap().clone();
        let mut accepted = None;
        for edge in &edges {
            *trace.pointer_mut(at).unwrap() = edge.clone();
            match pipeline(&format!("{at} = {edge}"), trace.to_string().as_bytes()) {
                Ok(true) if accepted.is_none() => accepted = Some(edge.clone()),
                Ok(_) => {}
                Err(e) => failures.push(e),
            }
        }
        largest.push(accepted);
        *trace.pointer_mut(at).unwrap() = was;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (at, edge) in leaves.iter().zip(largest) {
        if let Some(edge) = edge {
            *trace.pointer_mut(at).unwrap() = edge;
        }
    }
    assert_eq!(pipeline("every number at its edge", trace.to_string().as_bytes()), Ok(true));
}

/// A process tree whose parents form a cycle (a damaged trace) still lists
/// every process, each once.
#[test]
fn a_cycle_of_parents_lists_each_process_once() {
    let path = manifest_dir().join("tests/fuzz-regressions/report-process-parent-cycle.json");
    let t = trace::parse_json(&std::fs::read(&path).unwrap(), "cycle").unwrap();
    let report = output::report::render(&t);
    let tree: Vec<&str> =
        report.lines().skip_while(|l| !l.starts_with("Process tree")).skip(2).take_while(|l| !l.is_empty()).collect();
    assert_eq!(tree.len(), 3, "{report}");
}
