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

/// ns per malloc/free pair as the loop printed it.
fn loop_ns(cmd: &mut Command) -> Result<f64> {
    let out = cmd.stderr(Stdio::null()).output().context("running the malloc loop")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("ns_per_pair ").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("the malloc loop printed no timing ({}): {text}", out.status))
}

/// malloc/free pairs untraced, under memtrace's heap probes and under the
/// bpftrace script, alternating.
pub fn heap() -> Result<()> {
    let looper = release_dir().join("memtrace-mallocloop");
    let (mut plain, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        plain.push(loop_ns(Command::new(&looper).arg(HEAP_PAIRS))?);
        ours.push(loop_ns(as_root(&release_dir().join("memtrace")).args(["run", "--"]).arg(&looper).arg(HEAP_PAIRS))?);
        let cmd = format!("{} {HEAP_PAIRS}", looper.display());
        theirs.push(loop_ns(as_root(Path::new("bpftrace")).args(["-q", "-c", &cmd, "-e", BPFTRACE_HEAP]))?);
        eprintln!(
            "xtask: heap bench round {round}/{ROUNDS}: untraced {:.1} ns, memtrace {:.1} ns, bpftrace {:.1} ns per pair",
            plain[round - 1],
            ours[round - 1],
            theirs[round - 1]
        );
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, m, b) = (med(plain), med(ours), med(theirs));
    println!("heap probes: {HEAP_PAIRS} x malloc(64)+free, {ROUNDS} alternating rounds, loop time only");
    println!("  untraced                       median {p:>9.1} ns per pair");
    println!("  memtrace (entry+return+free)   median {m:>9.1} ns per pair  (target <= 2500)");
    println!("  bpftrace memleak-style script  median {b:>9.1} ns per pair");
    println!("  bpftrace / memtrace                   {:>9.2}x  (target >= 5)", b / m);
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
        let mut cmd = as_root(&bin.join("memtrace"));
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
