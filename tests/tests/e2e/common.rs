//! Helpers shared by the end-to-end tests: they run the real memtrace binary
//! (real eBPF, as root) against the real bundled workload.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use serde_json::Value;

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The memtrace binary: $MEMTRACE_BIN (set by `cargo xtask test`), else the
/// one built next to these tests.
pub fn memtrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MEMTRACE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("memtrace");
    assert!(bin.exists(), "memtrace binary not found at {}: run the tests with `cargo xtask test`", bin.display());
    bin
}

pub fn workload_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace-workload"))
}

/// The kernel as the tests share it: every test that loads eBPF holds it
/// shared for its whole run; a test that counts memtrace's programs in the
/// kernel holds it alone (all tests are threads of one binary).
static KERNEL: RwLock<()> = RwLock::new(());

/// Held for a test's whole run (see [`require_root`]).
pub struct KernelGuard {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "end-to-end tests load real eBPF programs and need root: run them with `cargo xtask test`");
}

/// End-to-end tests load eBPF programs: without root they fail (never
/// skip). The guard shares the kernel with the other tests until dropped.
#[must_use = "hold the guard for the whole test: `let _root = require_root();`"]
pub fn require_root() -> KernelGuard {
    assert_root();
    let shared = KERNEL.read().unwrap_or_else(|e| e.into_inner());
    KernelGuard { _shared: Some(shared), _alone: None }
}

/// Like [`require_root`], but no other test runs memtrace until the guard
/// is dropped.
#[must_use = "hold the guard for the whole test: `let _root = require_root_alone();`"]
pub fn require_root_alone() -> KernelGuard {
    assert_root();
    let alone = KERNEL.write().unwrap_or_else(|e| e.into_inner());
    KernelGuard { _shared: None, _alone: Some(alone) }
}

/// A fresh scratch directory for one test under target/e2e.
pub fn scratch(test: &str) -> PathBuf {
    let dir = root_dir().join("target").join("e2e").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads a JSON file; a memtrace trace must also pass the JSON Schema in
/// the repository, so every trace the tests produce is validated.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    if value["format"] == "memtrace-trace" {
        if let Err(errors) = schema_errors(path) {
            panic!("{} does not match schema/memtrace-trace.schema.json:\n{errors}", path.display());
        }
    }
    value
}

/// Validates a trace file against the schema with Debian's python3 and its
/// python3-jsonschema (installed by `cargo xtask setup`; not whatever
/// `python3` comes first in PATH); Err holds the first violations.
pub fn schema_errors(trace: &Path) -> Result<(), String> {
    const VALIDATE: &str = "import json, sys, jsonschema\n\
schema = json.load(open(sys.argv[1]))\n\
jsonschema.Draft202012Validator.check_schema(schema)\n\
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))\n\
for e in errors[:5]: print('/'.join(map(str, e.absolute_path)) or '(top)', ':', e.message[:300])\n\
sys.exit(1 if errors else 0)\n";
    let schema = root_dir().join("schema/memtrace-trace.schema.json");
    let out =
        Command::new("/usr/bin/python3").args(["-c", VALIDATE]).arg(&schema).arg(trace).output().expect("python3");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => panic!("validating with python3-jsonschema (`cargo xtask setup` installs it): {}", describe(&out)),
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The trace's entry for the file at `path`.
pub fn file_entry<'a>(trace: &'a Value, path: &str) -> &'a Value {
    trace["files"]
        .as_array()
        .expect("files[]")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("trace has no file {path}: {:#}", trace["files"]))
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// Runs `memtrace run --json TRACE -- target...`, waits until the target
/// prints a line containing `marker` (it then waits on its stdin, which it
/// shares with memtrace), interrupts memtrace like Ctrl-C would, and returns
/// the trace. memtrace reads the kernel truth before forwarding the signal.
pub fn trace_until_marker(
    trace_path: &Path,
    target: &mut Command,
    marker: &str,
) -> (Value, String, std::process::ExitStatus) {
    use std::{
        io::{BufRead, BufReader, Read},
        process::Stdio,
    };
    let mut cmd = Command::new(memtrace_bin());
    cmd.args(["run", "--json"]).arg(trace_path).arg("--").arg(target.get_program()).args(target.get_args());
    let mut memtrace = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(memtrace.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the target never printed `{marker}`");
    }
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(memtrace.id() as i32, libc::SIGINT) };
    let mut report = String::new();
    out.read_to_string(&mut report).unwrap();
    let status = memtrace.wait().unwrap();
    (read_json(trace_path), report, status)
}

pub fn mapper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace-mapper"))
}

/// Reads lines until one contains `needle`; returns that line.
pub fn read_line_with_text(reader: &mut impl std::io::BufRead, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "EOF while waiting for `{needle}`");
        if line.contains(needle) {
            return line;
        }
    }
}

/// Starts `memtrace -p PID --json TRACE` and waits until it says it is
/// tracing. Its stdout is piped; its stderr reader is returned and must be
/// kept until memtrace exits (it reports on stderr to the end).
pub fn attach_memtrace(
    pid: u32,
    trace_path: &Path,
) -> (std::process::Child, std::io::BufReader<std::process::ChildStderr>) {
    use std::process::Stdio;
    let mut memtrace = Command::new(memtrace_bin())
        .arg("-p")
        .arg(pid.to_string())
        .arg("--json")
        .arg(trace_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(memtrace.stderr.take().unwrap());
    read_line_with_text(&mut err, "memtrace: tracing PID");
    (memtrace, err)
}

/// A process the test talks to: its stdout lines, and its stdin for "go on".
pub struct Steered {
    pub child: std::process::Child,
    pub out: std::io::BufReader<std::process::ChildStdout>,
    pub stdin: std::process::ChildStdin,
}

/// Spawns `cmd` with piped stdin/stdout (stderr dropped) and waits for the
/// stdout line containing `ready` (for example "paused after load").
pub fn spawn_until(cmd: &mut Command, ready: &str) -> Steered {
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    read_line_with_text(&mut out, ready);
    Steered { child, out, stdin }
}

/// A world-readable directory holding a copy of memtrace anyone can run
/// (the build tree may sit under a private home), for running as nobody.
pub fn unprivileged_dir(test: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("memtrace-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("memtrace");
    std::fs::copy(memtrace_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// `program` run as user and group nobody, with no capabilities.
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]).arg(program);
    cmd.current_dir("/");
    cmd
}

/// tests/c/NAME.c built with frame pointers and debug info into `dir`.
pub fn build_c(name: &str, dir: &Path) -> PathBuf {
    let source = root_dir().join(format!("tests/c/{name}.c"));
    let bin = dir.join(name);
    let out = run(Command::new("cc").args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"]).arg(&bin).arg(&source));
    assert!(out.status.success(), "building {name}.c (gcc comes with `cargo xtask setup`): {}", describe(&out));
    bin
}

/// `memtrace run [memtrace_args] --json DIR/trace.json -- memtrace-workload
/// --file DIR/w.arrow [workload_args]`, which must succeed. Returns its
/// output and the trace's path.
pub fn trace_workload(dir: &Path, memtrace_args: &[&str], workload_args: &[&str]) -> (Output, PathBuf) {
    let trace_path = dir.join("trace.json");
    let out = run(Command::new(memtrace_bin())
        .arg("run")
        .args(memtrace_args)
        .arg("--json")
        .arg(&trace_path)
        .arg("--")
        .arg(workload_bin())
        .arg("--file")
        .arg(dir.join("w.arrow"))
        .args(workload_args));
    assert!(out.status.success(), "{}", describe(&out));
    (out, trace_path)
}
