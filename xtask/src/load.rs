//! `cargo xtask bench storm` and `cargo xtask bench soak`: memtrace under
//! load, with its own cost printed (not CI tests: they take minutes).
//!
//! storm: tests/c/storm.c faulting page by page through a 4 GiB sparse
//! file, then calling malloc/free on two threads, SECS each (default 60),
//! untraced and under `memtrace run`: the target's rate both ways, what
//! memtrace counted, its drops, peak RSS and CPU (from its trace).
//!
//! soak: a shell loop running the bundled workload again and again,
//! attached with `memtrace -p LOOP --children` for SECS (default 600):
//! memtrace's RSS and CPU every 30 s, which should stay flat.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{as_root, release_dir, root_dir};

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = root_dir().join("target/bench").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn build_storm(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("storm");
    let status = Command::new("cc")
        .args(["-g", "-O2", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(root_dir().join("tests/c/storm.c"))
        .arg("-lpthread")
        .status()
        .context("running cc")?;
    if !status.success() {
        bail!("cc storm.c failed");
    }
    Ok(bin)
}

/// The number after `key ` in the target's output.
fn printed(out: &str, key: &str) -> Result<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("no `{key}` in: {out}"))
}

pub fn storm(secs: u64) -> Result<()> {
    let dir = scratch("storm")?;
    let bin = build_storm(&dir)?;
    let sparse = dir.join("sparse.bin");
    let secs_arg = secs.to_string();
    let sparse_arg = sparse.display().to_string();
    let loads: [(&str, &str, Vec<&str>); 2] = [
        ("faults", "pages", vec!["faults", &sparse_arg, "4096", &secs_arg]),
        ("malloc/free on 2 threads", "pairs", vec!["malloc", "2", &secs_arg]),
    ];
    println!("storms of {secs} s each (machine: see `env`; compare the rates side by side)");
    for (name, key, args) in loads {
        let out = Command::new(&bin).args(&args).stderr(Stdio::inherit()).output()?;
        let untraced = printed(&String::from_utf8_lossy(&out.stdout), key)?;
        let json = dir.join("trace.json");
        let out = as_root(release_dir().join("memtrace"))
            .args(["run", "-q", "--json"])
            .arg(&json)
            .arg("--")
            .arg(&bin)
            .args(&args)
            .stderr(Stdio::null())
            .output()?;
        let traced = printed(&String::from_utf8_lossy(&out.stdout), key)?;
        let trace: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
        let c = &trace["counters"];
        let h = &trace["heap"]["totals"];
        let m = &trace["memtrace"];
        println!("  {name}:");
        println!(
            "    untraced {:>12.0} {key}/s   traced {:>12.0} {key}/s   ratio {:.2}",
            untraced as f64 / secs as f64,
            traced as f64 / secs as f64,
            untraced as f64 / traced.max(1) as f64
        );
        println!(
            "    memtrace counted: page faults {}, allocations {}, frees {}; ring-buffer drops {}, dropped allocations {}",
            c["page_faults"], h["allocs"], h["frees"], c["ringbuf_drops"], h["dropped_allocs"]
        );
        println!(
            "    memtrace itself: peak RSS {:.1} MiB, CPU {:.2} s user + {:.2} s system, {} ring records ({:.0}/s)",
            m["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            m["cpu_user_s"].as_f64().unwrap_or(0.0),
            m["cpu_system_s"].as_f64().unwrap_or(0.0),
            m["ring_records"],
            m["ring_records_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = std::fs::remove_file(&sparse);
    Ok(())
}

/// RSS (KiB) and CPU seconds (user + system) of `pid` now.
/// A process's (RSS KiB, of it anonymous KiB, CPU seconds) from /proc.
/// The file part of memtrace's RSS is mostly the ELF and DWARF files the
/// symbolizer maps: page cache, reclaimable, shared.
fn usage(pid: u32) -> Option<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
    };
    let (rss, anon) = (kib("VmRSS:")?, kib("RssAnon:")?);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((rss, anon, ticks / hz))
}

pub fn soak(secs: u64) -> Result<()> {
    let dir = scratch("soak")?;
    let workload = release_dir().join("memtrace-workload");
    let script = format!(
        "while :; do {} --file {}/w.arrow --size-mib 32 --heap-mib 32 --leak 100 --touch 0.5 >/dev/null 2>&1; done",
        workload.display(),
        dir.display()
    );
    let mut looping = Command::new("sh").args(["-c", &script]).spawn().context("starting the loop")?;
    std::thread::sleep(Duration::from_secs(1));
    let mut memtrace = as_root(release_dir().join("memtrace"))
        .args(["-q", "--children", "-p", &looping.id().to_string(), "--duration", &secs.to_string(), "--json"])
        .arg(dir.join("trace.json"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting memtrace")?;
    println!("soak: the workload in a loop for {secs} s under `memtrace -p LOOP --children`");
    println!("   t s   memtrace RSS   of it anonymous   CPU s (user+system)");
    let start = Instant::now();
    // A line every 30 s while it traces; then its stop (report and trace
    // written), timed.
    let mut next_line = Duration::from_secs(30);
    let stopping = loop {
        std::thread::sleep(Duration::from_secs(1));
        if memtrace.try_wait()?.is_some() {
            break None;
        }
        if start.elapsed() >= Duration::from_secs(secs) {
            break Some(Instant::now());
        }
        if start.elapsed() >= next_line {
            next_line += Duration::from_secs(30);
            if let Some((rss, anon, cpu)) = usage(memtrace.id()) {
                let mib = |kib: u64| kib as f64 / 1024.0;
                println!(
                    "  {:>4.0}   {:>9.1} MiB   {:>11.1} MiB   {:>8.2}",
                    start.elapsed().as_secs_f64(),
                    mib(rss),
                    mib(anon),
                    cpu
                );
            }
        }
    };
    memtrace.wait()?;
    if let Some(stopping) = stopping {
        println!("  stopping (report and trace written) took {:.1} s", stopping.elapsed().as_secs_f64());
    }
    let _ = looping.kill();
    let _ = looping.wait();
    let trace: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json"))?)?;
    let m = &trace["memtrace"];
    println!(
        "  at the end: peak RSS {:.1} MiB, CPU {:.2} s user + {:.2} s system, {} processes traced ({} listed, the rest folded)",
        m["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        m["cpu_user_s"].as_f64().unwrap_or(0.0),
        m["cpu_system_s"].as_f64().unwrap_or(0.0),
        trace["processes"].as_array().map_or(0, Vec::len) as u64 + trace["processes_folded"]["processes"].as_u64().unwrap_or(0),
        trace["processes"].as_array().map_or(0, Vec::len),
    );
    Ok(())
}
