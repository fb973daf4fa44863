//! `cargo xtask bench python`: what a phase marked with memtrace's Python
//! module costs the program, untraced (the bound: under 1 us) and
//! traced; and what reading Python frames adds to an allocation. Rounds
//! alternate so machine noise hits every configuration.
use std::process::Command;

use anyhow::{Context, Result};

use crate::{as_root, release_dir, root_dir};

const ROUNDS: usize = 5;
const UNTRACED_PHASES: &str = "1000000";
/// Traced, each phase is two uprobe hits and four ring records: fewer.
const TRACED_PHASES: &str = "100000";
/// Debian's CPython, which `cargo xtask setup` installs.
const PYTHON: &str = "/usr/bin/python3";

/// (ns per phase, ns per empty iteration) as tests/python/phase_loop.py printed them.
fn phase_ns(cmd: &mut Command) -> Result<(f64, f64)> {
    let out = cmd.output().context("running the phase loop")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<f64>().ok())).with_context(|| {
            format!("the phase loop printed no {key}({}): {text}{}", out.status, String::from_utf8_lossy(&out.stderr))
        })
    };
    Ok((value("ns_per_phase ")?, value("ns_per_iteration ")?))
}

pub fn run() -> Result<()> {
    let dir = root_dir().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    // The library as memtrace builds it (python/memtrace/_markers.c, same flags).
    let library = dir.join("libmemtrace-markers.so");
    let source = root_dir().join("python/memtrace/_markers.c");
    crate::status(
        Command::new("cc")
            .args(["-shared", "-fPIC", "-O0", "-fno-omit-frame-pointer", "-o"])
            .arg(&library)
            .arg(&source),
    )?;
    let script = root_dir().join("tests/python/phase_loop.py");
    let memtrace = release_dir().join("memtrace");
    let python = |cmd: &mut Command, library: Option<&std::path::Path>, phases: &str| {
        cmd.env("PYTHONPATH", root_dir().join("python"));
        match library {
            Some(path) => cmd.env("MEMTRACE_MARKER_LIB", path),
            None => cmd.env("MEMTRACE_MARKER_LIB", ""), // set but empty: no library
        };
        cmd.arg(PYTHON).arg(&script).arg(phases);
    };
    let labels = ["no library", "library, untraced", "memtrace run"];
    let mut times: Vec<Vec<(f64, f64)>> = vec![Vec::new(); labels.len()];
    for round in 1..=ROUNDS {
        let mut cmd = Command::new("env");
        python(&mut cmd, None, UNTRACED_PHASES);
        times[0].push(phase_ns(&mut cmd)?);
        let mut cmd = Command::new("env");
        python(&mut cmd, Some(&library), UNTRACED_PHASES);
        times[1].push(phase_ns(&mut cmd)?);
        // memtrace names its own copy of the library (MEMTRACE_MARKER_LIB).
        let mut cmd = as_root(&memtrace);
        cmd.args(["run", "-q", "--", "env"]).arg(format!("PYTHONPATH={}", root_dir().join("python").display()));
        cmd.arg(PYTHON).arg(&script).arg(TRACED_PHASES);
        times[2].push(phase_ns(&mut cmd)?);
        let line: Vec<String> = labels.iter().zip(&times).map(|(l, t)| format!("{l} {:.1}", t[round - 1].0)).collect();
        eprintln!("xtask: python phase bench round {round}/{ROUNDS} (ns per phase): {}", line.join(", "));
    }
    let med: Vec<(f64, f64)> = times
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v[v.len() / 2]
        })
        .collect();
    println!(
        "python phases: `with memtrace.phase(\"request\"): pass` in a loop, {PYTHON}, {ROUNDS} alternating rounds, medians"
    );
    println!("  (the loop's own cost, an empty iteration, is {:.1} ns; not subtracted)", med[1].1);
    println!("  no library (the module's no-op)        {:>9.1} ns per phase  ({UNTRACED_PHASES} phases)", med[0].0);
    println!(
        "  library loaded, memtrace not tracing   {:>9.1} ns per phase  (target < 1000; {UNTRACED_PHASES} phases)",
        med[1].0
    );
    println!(
        "  under memtrace run                     {:>9.1} ns per phase  (two uprobe hits; {TRACED_PHASES} phases)",
        med[2].0
    );
    allocations()
}

const ALLOCATIONS: &str = "200000";

/// ns per `bytes(4000)` (a malloc and a free, three Python calls deep):
/// untraced, traced without and with Python frames.
fn allocations() -> Result<()> {
    let script = root_dir().join("tests/python/alloc_loop.py");
    let memtrace = release_dir().join("memtrace");
    let configs: [(&str, Option<&str>); 3] =
        [("untraced", None), ("memtrace --no-python-frames", Some("--no-python-frames")), ("memtrace", Some(""))];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 1..=ROUNDS {
        for ((_, flag), t) in configs.iter().zip(times.iter_mut()) {
            let mut cmd = match flag {
                None => Command::new(PYTHON),
                Some(flag) => {
                    let mut cmd = as_root(&memtrace);
                    cmd.args(["run", "-q"]).args(Some(flag).filter(|f| !f.is_empty())).args(["--", PYTHON]);
                    cmd
                }
            };
            cmd.arg(&script).arg(ALLOCATIONS);
            let out = cmd.output().context("running the allocation loop")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let ns = text
                .lines()
                .find_map(|l| l.strip_prefix("ns_per_alloc ").and_then(|v| v.trim().parse::<f64>().ok()))
                .with_context(|| format!("the allocation loop printed no timing ({}): {text}", out.status))?;
            t.push(ns);
        }
        let line: Vec<String> =
            configs.iter().zip(&times).map(|(c, t)| format!("{} {:.1}", c.0, t[round - 1])).collect();
        eprintln!("xtask: python allocation bench round {round}/{ROUNDS} (ns per allocation): {}", line.join(", "));
    }
    let med = crate::bench::medians(times);
    println!("python allocations: bytes(4000) made and dropped {ALLOCATIONS} times, 3 Python calls deep, medians");
    println!("  untraced                               {:>9.1} ns per allocation", med[0]);
    println!("  memtrace --no-python-frames            {:>9.1} ns per allocation", med[1]);
    println!("  memtrace (Python frames read)          {:>9.1} ns per allocation", med[2]);
    println!("  Python frames add                      {:>9.1} ns per allocation", med[2] - med[1]);
    Ok(())
}
