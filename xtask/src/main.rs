//! `cargo xtask`: set-up, build, run, demo and tests for memtrace.
//! Every set-up step lives here, idempotent, so a fresh machine needs only
//! `cargo xtask demo` / `cargo xtask test`.
mod bench;
mod bench_python;
mod load;
mod setup;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  setup          install what building memtrace needs (nightly rust-src, bpf-linker, cargo-fuzz, Debian
                 packages); idempotent
  build          build the eBPF object and the userspace binaries (release)
  run -- ARGS    build, then run `memtrace ARGS` as root (via sudo when not root)
  demo           setup + build + trace the bundled Arrow workload and print the report
  test           setup + build + the whole test suite (unit + end-to-end with real eBPF, as root)
  bench [files|heap]  build, then time untraced vs traced side by side: the workload (files),
                 a malloc/free loop under memtrace and under a bpftrace script (heap)
  bench python   a phase marked with memtrace's Python module: no library, library untraced,
                 under memtrace run (ns per `with memtrace.phase()`)
  bench storm [SECS]  a fault storm and a malloc storm, SECS each (60): rates untraced and
                 traced, what memtrace counted and dropped, its peak RSS and CPU
  bench soak [SECS]   the workload in a loop under `memtrace -p --children` for SECS (600):
                 memtrace's RSS and CPU every 30 s
  lint           cargo fmt --check and cargo clippy -D warnings on every crate (memtrace-ebpf for
                 bpfel-unknown-none with nightly)
  fuzz [SECS]    fuzz the trace reader and the `memtrace report` renderers for SECS (300) with
                 cargo-fuzz (nightly): a crash's input is saved under fuzz/artifacts/";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build") => build(),
        Some("run") => run(&args[1..]),
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        Some("fuzz") => seconds(args.get(1), 300).and_then(fuzz),
        Some("bench") => build().and_then(|()| match args.get(1).map(String::as_str) {
            Some("files") => bench::run(),
            Some("heap") => bench::heap(),
            Some("python") => bench_python::run(),
            Some("storm") => seconds(args.get(2), 60).and_then(load::storm),
            Some("soak") => seconds(args.get(2), 600).and_then(load::soak),
            None => bench::run().and_then(|()| bench::heap()),
            Some(other) => {
                Err(anyhow::anyhow!("unknown benchmark `{other}`: use `files`, `heap`, `python`, `storm` or `soak`"))
            }
        }),
        Some("help" | "-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A benchmark's SECS argument, or its default.
fn seconds(arg: Option<&String>, default: u64) -> Result<u64> {
    match arg {
        None => Ok(default),
        Some(a) => a.parse().ok().filter(|s| *s > 0).with_context(|| format!("`{a}` is not a number of seconds")),
    }
}

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root_dir().join("target"), PathBuf::from);
    target.join("release")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, echoing it, and fails with its exit status.
pub fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", display(cmd));
    let st = cmd.status().with_context(|| format!("cannot run {}", display(cmd)))?;
    if !st.success() {
        bail!("`{}` failed ({st})", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cargo that runs xtask (so the same toolchain builds everything).
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo() -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(root_dir());
    cmd
}

/// The one way xtask runs something as root (memtrace, the test binaries
/// through cargo, apt-get): as is when already root, otherwise behind
/// `sudo -E --preserve-env=PATH`. `-E` keeps the environment the command
/// needs (MEMTRACE_BIN, CARGO_HOME, DEBIAN_FRONTEND); PATH must be named
/// on its own because sudo's `secure_path` replaces it even under `-E`, and
/// cargo, rustup's toolchains and bpf-linker live in ~/.cargo/bin.
pub fn as_root(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-E", "--preserve-env=PATH"]).arg(program);
        cmd
    }
}

/// Every host crate of the workspace. memtrace-ebpf is a member (one
/// Cargo.lock, one fmt and clippy gate) but only builds for
/// bpfel-unknown-none with nightly and `-Z build-std=core` (no_std, no_main,
/// core intrinsics): `default-members` leaves it out of a plain `cargo
/// build`, and `--workspace` needs the explicit exclusion. (An empty host
/// stub instead would put a second `memtrace` binary next to the real one
/// in target/release and make every eBPF item conditional.)
const HOST_WORKSPACE: [&str; 3] = ["--workspace", "--exclude", "memtrace-ebpf"];

/// The command line memtrace/build.rs builds the eBPF object with, here for
/// clippy: nightly cargo in memtrace-ebpf for the BPF target, with the outer
/// cargo's toolchain variables removed (they would select the stable rustc).
fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", subcommand, "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root_dir().join("target").join("ebpf"))
        .current_dir(root_dir().join("memtrace-ebpf"));
    without_outer_toolchain(&mut cmd);
    cmd
}

/// Removes the outer cargo's toolchain variables from `cmd`, a nightly
/// cargo (they would select the stable rustc).
fn without_outer_toolchain(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO") || key.starts_with("RUSTC") || key.starts_with("RUSTUP_TOOLCHAIN") {
            cmd.env_remove(key.as_ref());
        }
    }
}

fn build() -> Result<()> {
    status(cargo().args(["build", "--release", "--bins"]).args(HOST_WORKSPACE))
}

fn run(args: &[String]) -> Result<()> {
    build()?;
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    status(as_root(release_dir().join("memtrace")).args(args))
}

fn demo() -> Result<()> {
    setup::run()?;
    build()?;
    let bin = release_dir();
    let dir = root_dir().join("target").join("demo");
    std::fs::create_dir_all(&dir)?;
    let trace = dir.join("trace.json");
    let truth = dir.join("truth.json");
    eprintln!(
        "\nxtask: tracing the bundled workload (256 MiB Arrow file, 25 % of batches searched, 1000 leaked blocks)\n"
    );
    status(
        as_root(bin.join("memtrace"))
            .args(["run", "--phase-truth", "--json"])
            .arg(&trace)
            .arg("--")
            .arg(bin.join("memtrace-workload"))
            .arg("--file")
            .arg(dir.join("workload.arrow"))
            .arg("--truth")
            .arg(&truth)
            .args(["--touch", "0.25", "--leak", "1000"]),
    )?;
    eprintln!("\nxtask: JSON trace in {}, workload ground truth in {}", trace.display(), truth.display());
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    setup::run()?;
    build()?;
    // Build the test binaries unprivileged, then run them as root: the
    // end-to-end tests load eBPF programs.
    status(cargo().args(["test", "--release", "--no-run"]).args(HOST_WORKSPACE))?;
    let mut cmd = as_root(cargo_program());
    cmd.current_dir(root_dir()).args(["test", "--release"]).args(HOST_WORKSPACE).args(extra);
    cmd.env("MEMTRACE_BIN", release_dir().join("memtrace"));
    status(&mut cmd)
}

fn lint() -> Result<()> {
    // `--all` covers memtrace-ebpf too: it is a workspace member.
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args(["clippy", "--all-targets", "--release"]).args(HOST_WORKSPACE).args(["--", "-D", "warnings"]))?;
    // The eBPF crate under the same gate, for the only target it builds for.
    status(ebpf_cargo("clippy").args(["--", "-D", "warnings"]))
}

/// The fuzz target (fuzz/fuzz_targets/trace_report.rs) and the folder,
/// inside memtrace, where the inputs it crashed on are kept as tests.
const FUZZ_TARGET: &str = "trace_report";
const FUZZ_REGRESSIONS: &str = "memtrace/tests/fuzz-regressions";

/// `cargo xtask fuzz SECS`: `cargo +nightly fuzz run trace_report` for SECS
/// seconds on one core. libFuzzer starts from the seeds in fuzz/corpus/ and
/// the earlier crashes in memtrace/tests/fuzz-regressions/ (both left as
/// they are), grows its corpus in fuzz/target/working-corpus, and saves a
/// crashing input in fuzz/artifacts/trace_report/. The seed is
/// fixed, so a run from the same corpus takes the same path.
fn fuzz(seconds: u64) -> Result<()> {
    let dir = root_dir().join("fuzz");
    let mut version = Command::new("rustup");
    version.args(["run", "nightly", "cargo", "fuzz", "--version"]);
    without_outer_toolchain(&mut version);
    if !version.output().is_ok_and(|o| o.status.success()) {
        bail!("`cargo +nightly fuzz` does not run: `cargo xtask setup` installs cargo-fuzz and the nightly toolchain");
    }
    let artifacts = dir.join("artifacts").join(FUZZ_TARGET);
    let working = dir.join("target/working-corpus").join(FUZZ_TARGET);
    std::fs::create_dir_all(&working).with_context(|| format!("creating {}", working.display()))?;
    // Crashes written during this run (one seen before is written again,
    // under the same name: its hash).
    let started = std::time::SystemTime::now();
    let written_since_start = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= started))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    };
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz", "run", FUZZ_TARGET])
        // The first folder is the one libFuzzer adds to; the seeds and the
        // inputs that crashed it before are read only.
        .arg(&working)
        .arg(dir.join("corpus").join(FUZZ_TARGET))
        .arg(root_dir().join(FUZZ_REGRESSIONS))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-dict={}", dir.join("trace_report.dict").display()))
        .args(["-rss_limit_mb=4096", "-timeout=30", "-max_len=65536", "-seed=1", "-print_final_stats=1"])
        .current_dir(&dir);
    without_outer_toolchain(&mut cmd);
    let result = status(&mut cmd);
    let crashes = written_since_start(&artifacts);
    if crashes.is_empty() {
        return result.map(|()| eprintln!("xtask: fuzzed {seconds} s: no crash"));
    }
    for crash in &crashes {
        eprintln!("xtask: the fuzzer crashed on the input saved as {}", crash.display());
        eprintln!("xtask: replay it with `cargo +nightly fuzz run {FUZZ_TARGET} {}` in fuzz/", crash.display());
    }
    bail!(
        "{} crashing input(s): fix the bug, copy each into {FUZZ_REGRESSIONS}/ under a name that says what it \
         is (`cargo test -p memtrace --test fuzz_regressions` replays them), then fuzz again",
        crashes.len()
    )
}
