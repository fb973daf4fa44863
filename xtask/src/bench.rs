//! `cargo xtask bench`: overhead of tracing the bundled workload, measured
//! side by side in one run (untraced and traced runs alternate, so machine
//! noise hits both), reported as medians and their ratio.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{as_root, release_dir, root_dir};

const ROUNDS: usize = 7;

/// The workload's own time from its first phase's start to its last phase's
/// end, from its ground truth: excludes memtrace's start-up and detach.
fn workload_time(truth: &Path) -> Result<Duration> {
    let text = std::fs::read_to_string(truth).with_context(|| format!("reading {}", truth.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let phases = v["phases"].as_array().context("truth without phases")?;
    let start = phases.first().and_then(|p| p["start_ns"].as_u64()).context("truth without start")?;
    let end = phases.last().and_then(|p| p["end_ns"].as_u64()).context("truth without end")?;
    Ok(Duration::from_nanos(end - start))
}

fn time_once(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().context("running the workload")?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("benchmark run failed ({status}): rerun it by hand to see why");
    }
    Ok(elapsed)
}

/// Each configuration's median of its rounds.
pub fn medians(times: Vec<Vec<f64>>) -> Vec<f64> {
    times
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The bpftrace script a memleak-style user would write: size at malloc
/// entry, pointer at its return, free at entry.
const BPFTRACE_HEAP: &str = r#"
uprobe:/usr/lib/x86_64-linux-gnu/libc.so.6:malloc /pid == cpid/ { @size[tid] = arg0; }
uretprobe:/usr/lib/x86_64-linux-gnu/libc.so.6:malloc /pid == cpid/ { @live[retval] = @size[tid]; delete(@size[tid]); }
uprobe:/usr/lib/x86_64-linux-gnu/libc.so.6:free /pid == cpid/ { delete(@live[arg0]); }
"#;
const HEAP_PAIRS: &str = "200000";
/// Extra frames under the loop for the stack-depth configurations.
const DEEP: &str = "40";

/// ns per malloc/free pair as the loop printed it.
fn loop_ns(cmd: &mut Command) -> Result<f64> {
    let out = cmd.stderr(Stdio::null()).output().context("running the malloc loop")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("ns_per_pair ").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("the malloc loop printed no timing ({}): {text}", out.status))
}

/// jemalloc as Debian ships it (installed by `cargo xtask setup`).
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// malloc/free pairs untraced, under memtrace's heap probes and under the
/// bpftrace script, alternating; then the same under jemalloc, and each
/// allocator with every probe on the function's first instruction
/// (`--probe-at-entry`), which is what memtrace's placement saves.
pub fn heap() -> Result<()> {
    let looper = release_dir().join("memtrace-mallocloop").display().to_string();
    let memtrace = release_dir().join("memtrace").display().to_string();
    let preload = format!("LD_PRELOAD={JEMALLOC}");
    let script = format!("{looper} {HEAP_PAIRS}");
    // (label, run as root, argv)
    let configs: [(&str, bool, Vec<&str>); 11] = [
        ("untraced", false, vec![&looper, HEAP_PAIRS]),
        ("memtrace", true, vec![&memtrace, "run", "--", &looper, HEAP_PAIRS]),
        ("memtrace --unwind fp", true, vec![&memtrace, "run", "--unwind", "fp", "--", &looper, HEAP_PAIRS]),
        ("deep untraced", false, vec![&looper, HEAP_PAIRS, DEEP]),
        ("deep memtrace", true, vec![&memtrace, "run", "--", &looper, HEAP_PAIRS, DEEP]),
        ("deep memtrace --unwind fp", true, vec![&memtrace, "run", "--unwind", "fp", "--", &looper, HEAP_PAIRS, DEEP]),
        ("bpftrace", true, vec!["bpftrace", "-q", "-c", &script, "-e", BPFTRACE_HEAP]),
        ("memtrace --probe-at-entry", true, vec![&memtrace, "run", "--probe-at-entry", "--", &looper, HEAP_PAIRS]),
        ("jemalloc untraced", false, vec!["env", &preload, &looper, HEAP_PAIRS]),
        (
            "jemalloc memtrace",
            true,
            vec![&memtrace, "run", "--alloc-lib", JEMALLOC, "--", "env", &preload, &looper, HEAP_PAIRS],
        ),
        (
            "jemalloc memtrace --probe-at-entry",
            true,
            vec![
                &memtrace,
                "run",
                "--probe-at-entry",
                "--alloc-lib",
                JEMALLOC,
                "--",
                "env",
                &preload,
                &looper,
                HEAP_PAIRS,
            ],
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 1..=ROUNDS {
        let mut line = Vec::new();
        for ((label, root, argv), t) in configs.iter().zip(times.iter_mut()) {
            let mut cmd = if *root { as_root(Path::new(argv[0])) } else { Command::new(argv[0]) };
            t.push(loop_ns(cmd.args(&argv[1..])).with_context(|| label.to_string())?);
            line.push(format!("{label} {:.1}", t[round - 1]));
        }
        eprintln!("xtask: heap bench round {round}/{ROUNDS} (ns per pair): {}", line.join(", "));
    }
    let med = medians(times);
    // The configurations above, by label.
    let m = |label: &str| med[configs.iter().position(|c| c.0 == label).expect("a configuration")];
    let deep = DEEP.parse::<u64>().unwrap_or(0);
    println!("heap probes: {HEAP_PAIRS} x malloc(64)+free, {ROUNDS} alternating rounds, loop time only, medians");
    println!("glibc:");
    println!("  untraced                             {:>9.1} ns per pair", m("untraced"));
    println!(
        "  memtrace (entry+return+free)         {:>9.1} ns per pair  (--unwind dwarf, the default)",
        m("memtrace")
    );
    println!("  memtrace --unwind fp                 {:>9.1} ns per pair", m("memtrace --unwind fp"));
    println!(
        "  dwarf / fp                           {:>9.2}x  (the eBPF unwinder against the kernel's frame-pointer walk)",
        m("memtrace") / m("memtrace --unwind fp")
    );
    println!("  bpftrace memleak-style script        {:>9.1} ns per pair", m("bpftrace"));
    println!("  bpftrace / memtrace                  {:>9.2}x", m("bpftrace") / m("memtrace"));
    println!("  memtrace --probe-at-entry            {:>9.1} ns per pair", m("memtrace --probe-at-entry"));
    println!(
        "  at-entry / placed                    {:>9.2}x  (what placement saves)",
        m("memtrace --probe-at-entry") / m("memtrace")
    );
    println!("glibc, the loop {deep} frames deeper (stacks of ~{} frames):", deep + 6);
    println!("  untraced                             {:>9.1} ns per pair", m("deep untraced"));
    println!("  memtrace                             {:>9.1} ns per pair", m("deep memtrace"));
    println!("  memtrace --unwind fp                 {:>9.1} ns per pair", m("deep memtrace --unwind fp"));
    println!("  dwarf / fp                           {:>9.2}x", m("deep memtrace") / m("deep memtrace --unwind fp"));
    println!(
        "  dwarf per extra frame                {:>9.1} ns  (fp: {:.1} ns)",
        (m("deep memtrace") - m("memtrace")) / deep as f64,
        (m("deep memtrace --unwind fp") - m("memtrace --unwind fp")) / deep as f64
    );
    println!("jemalloc (LD_PRELOAD, --alloc-lib):");
    println!("  untraced                             {:>9.1} ns per pair", m("jemalloc untraced"));
    println!("  memtrace                             {:>9.1} ns per pair", m("jemalloc memtrace"));
    println!("  memtrace --probe-at-entry            {:>9.1} ns per pair", m("jemalloc memtrace --probe-at-entry"));
    println!(
        "  at-entry / placed                    {:>9.2}x",
        m("jemalloc memtrace --probe-at-entry") / m("jemalloc memtrace")
    );
    Ok(())
}

pub fn run() -> Result<()> {
    let bin = release_dir();
    let dir = root_dir().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("bench.arrow");
    let truth = dir.join("truth.json");
    let workload = |cmd: &mut Command, file: &Path| {
        cmd.arg(bin.join("memtrace-workload")).arg("--file").arg(file);
        cmd.args(["--size-mib", "256", "--touch", "1.0", "--heap-mib", "64", "--truth"]).arg(&truth);
    };
    // Write the file once, outside the measurement.
    let mut warm = Command::new(bin.join("memtrace-workload"));
    warm.arg("--file").arg(&file).args(["--size-mib", "256", "--touch", "0"]);
    time_once(&mut warm)?;

    let (mut plain, mut traced, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let mut cmd = Command::new("env");
        workload(&mut cmd, &file);
        time_once(&mut cmd)?;
        plain.push(workload_time(&truth)?);
        let mut cmd = as_root(bin.join("memtrace"));
        cmd.args(["run", "--"]);
        workload(&mut cmd, &file);
        whole.push(time_once(&mut cmd)?);
        traced.push(workload_time(&truth)?);
        eprintln!(
            "xtask: bench round {round}/{ROUNDS}: workload untraced {:.1} ms, traced {:.1} ms (memtrace run in all {:.1} ms)",
            plain[round - 1].as_secs_f64() * 1e3,
            traced[round - 1].as_secs_f64() * 1e3,
            whole[round - 1].as_secs_f64() * 1e3
        );
    }
    let (p, t, w) = (median(plain), median(traced), median(whole));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("workload: 256 MiB Arrow file, --touch 1.0, --heap-mib 64, warm page cache, {ROUNDS} alternating rounds");
    println!("(workload time = its first phase start to its last phase end, from its own ground truth)");
    println!("  workload untraced             median {:>8.1} ms", ms(p));
    println!("  workload under memtrace       median {:>8.1} ms", ms(t));
    println!("  ratio traced/untraced                {:>8.2}  (target <= 1.10)", ms(t) / ms(p));
    println!(
        "  memtrace run, start to exit   median {:>8.1} ms  (adds loading, attaching and detaching the probes)",
        ms(w)
    );
    Ok(())
}
