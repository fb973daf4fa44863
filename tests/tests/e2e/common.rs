//! Helpers shared by the end-to-end tests: they run the real memtrace binary
//! (real eBPF, as root) against the real bundled workload and other programs.
//!
//! Every memtrace command line is built by [`Memtrace`] (any program, any
//! subcommand) or [`Workload`] (the bundled workload under `memtrace run`,
//! or alone for attach mode); no test assembles its own.

use std::{
    ffi::{OsStr, OsString},
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use memtrace::trace::{FileEntry, Heap, Trace};
use serde::Deserialize;
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

pub fn mapper_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace-mapper"))
}

pub fn mallocloop_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace-mallocloop"))
}

pub fn mimalloc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memtrace-mimalloc"))
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

/// Reads a JSON file that is not a memtrace trace (the --events lines and
/// the Chrome trace are read where they are checked).
pub fn read_value(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Reads a memtrace trace: it must pass the JSON Schema in the repository
/// (every trace the tests produce is validated), then deserialize into the
/// typed [`Trace`].
pub fn read_trace(path: &Path) -> Trace {
    let value = read_value(path);
    assert_eq!(value["format"], "memtrace-trace", "{} is not a memtrace trace", path.display());
    if let Err(errors) = schema_errors(path) {
        panic!("{} does not match schema/memtrace-trace.schema.json:\n{errors}", path.display());
    }
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{} is no memtrace::trace::Trace: {e}", path.display()))
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

/// The workload's ground truth (tests/src/truth.rs), the fields the tests read.
#[derive(Debug, Deserialize)]
pub struct Truth {
    pub pid: u32,
    pub file: TruthFile,
    pub phases: Vec<TruthPhase>,
    pub file_pages_touched_total: u64,
    pub complete: bool,
}

#[derive(Debug, Deserialize)]
pub struct TruthFile {
    pub path: String,
    pub size_bytes: u64,
    pub inode: u64,
    pub page_size: u64,
}

#[derive(Debug, Deserialize)]
pub struct TruthPhase {
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub file_bytes_touched: u64,
    pub heap_growth_bytes: i64,
}

pub fn read_truth(path: &Path) -> Truth {
    let value = read_value(path);
    assert_eq!(value["format"], "memtrace-workload-truth", "{}", path.display());
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: not the workload's truth: {e}", path.display()))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The trace's entry for the file at `path`.
pub fn file_entry<'a>(trace: &'a Trace, path: &str) -> &'a FileEntry {
    trace
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("trace has no file {path}: {:#?}", trace.files))
}

/// The trace's heap (present whenever the allocator probes were set).
pub fn heap(trace: &Trace) -> &Heap {
    trace.heap.as_ref().unwrap_or_else(|| panic!("the trace has no heap: {trace:#?}"))
}

/// smaps Rss of a file at stop (present whenever the kernel truth was read).
pub fn kernel_rss(f: &FileEntry) -> u64 {
    f.kernel_rss_bytes.unwrap_or_else(|| panic!("no kernel truth for {}: {f:#?}", f.path))
}

/// Reads lines until one contains `needle`; returns that line.
pub fn read_line_with_text(reader: &mut impl BufRead, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "EOF while waiting for `{needle}`");
        if line.contains(needle) {
            return line;
        }
    }
}

/// A process the test talks to: its stdout lines, and its stdin for "go on".
pub struct Steered {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub stdin: ChildStdin,
    /// The line that said it was ready.
    pub ready: String,
}

/// Spawns `cmd` with piped stdin/stdout (stderr dropped) and waits for the
/// stdout line containing `ready` (for example "paused after load").
pub fn spawn_until(cmd: &mut Command, ready: &str) -> Steered {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let ready = read_line_with_text(&mut out, ready);
    Steered { child, out, stdin, ready }
}

/// SIGINT, as Ctrl-C would send it.
pub fn interrupt(child: &Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// A world-readable directory holding a copy of memtrace anyone can run
/// (the build tree may sit under a private home), for running as nobody.
/// Removed when dropped.
pub struct Unprivileged {
    pub dir: PathBuf,
    bin: PathBuf,
}

pub fn unprivileged(test: &str) -> Unprivileged {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("memtrace-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("memtrace");
    std::fs::copy(memtrace_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    Unprivileged { dir, bin }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tests/c/NAME.c built with frame pointers and debug info into `dir`.
pub fn build_c(name: &str, dir: &Path) -> PathBuf {
    let bin = dir.join(name);
    cc(&["-o".as_ref(), bin.as_ref(), root_dir().join(format!("tests/c/{name}.c")).as_ref()]);
    bin
}

/// tests/c/embed_python.c built in `dir` against Debian's libpython3.11
/// (libpython3.11-dev, from `cargo xtask setup`): a program that embeds CPython.
pub fn build_embed_python(dir: &Path) -> PathBuf {
    let embed = dir.join("embed_python");
    let includes = ["-I/usr/include/python3.11", "-I/usr/include/x86_64-linux-gnu/python3.11"];
    let source = root_dir().join("tests/c/embed_python.c");
    let built = run(Command::new("cc").args(includes).arg("-o").arg(&embed).arg(&source).arg("-lpython3.11"));
    assert!(built.status.success(), "{}", describe(&built));
    embed
}

/// `cc -g -O0 -fno-omit-frame-pointer ARGS` (gcc comes with `cargo xtask setup`), which must succeed.
pub fn cc(args: &[&OsStr]) {
    let out = run(Command::new("cc").args(["-g", "-O0", "-fno-omit-frame-pointer"]).args(args));
    assert!(out.status.success(), "cc {args:?}: {}", describe(&out));
}

/// `cc -g -O2 -fomit-frame-pointer ARGS`, which must succeed: code as
/// release builds make it, with no frame pointers for a stack walk.
pub fn cc_no_frame_pointers(args: &[&OsStr]) {
    let out = run(Command::new("cc").args(["-g", "-O2", "-fomit-frame-pointer"]).args(args));
    assert!(out.status.success(), "cc {args:?}: {}", describe(&out));
}

/// A memtrace command line: `memtrace [SUBCOMMAND...] [ARGS] [--json PATH]
/// [-- TARGET...]`, run as root or as nobody, then run to completion,
/// interrupted at a marker, or spawned.
#[derive(Clone, Debug)]
pub struct Memtrace {
    program: PathBuf,
    as_nobody: bool,
    args: Vec<OsString>,
    json: Option<PathBuf>,
    target: Option<Vec<OsString>>,
    /// SUDO_UID and SUDO_GID as sudo would set them; None: unset.
    sudo_by: Option<(u32, u32)>,
}

/// Unsets the variables by which memtrace knows it runs through sudo: a
/// test's target runs as root (as the test's own files are) unless the test
/// says otherwise, also when `sudo cargo xtask test` started it.
pub fn without_sudo(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("SUDO_UID").env_remove("SUDO_GID").env_remove("SUDO_USER").env_remove("SUDO_COMMAND")
}

/// A finished run: memtrace's output and its validated, typed trace.
pub struct Traced {
    pub out: Output,
    pub trace: Trace,
}

impl Traced {
    /// memtrace's stdout: the report.
    pub fn report(&self) -> String {
        stdout(&self.out)
    }
}

/// A run interrupted like Ctrl-C at the target's marker line.
pub struct Interrupted {
    pub trace: Trace,
    /// memtrace's stdout after the marker: the report.
    pub report: String,
    pub status: ExitStatus,
}

/// memtrace running in the background, past its "tracing PID" line.
pub struct Session {
    pub child: Child,
    /// The PID memtrace said it traces.
    pub pid: u32,
    /// Kept open until memtrace exits (it reports on stderr to the end).
    _stderr: BufReader<ChildStderr>,
    json: Option<PathBuf>,
}

impl Session {
    pub fn interrupt(&self) {
        interrupt(&self.child);
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    /// The trace it wrote (after it exited).
    pub fn trace(&self) -> Trace {
        read_trace(self.json.as_deref().expect("started with .json(PATH)"))
    }
}

impl Memtrace {
    fn with(args: &[&str]) -> Memtrace {
        Memtrace {
            program: memtrace_bin(),
            as_nobody: false,
            args: args.iter().map(OsString::from).collect(),
            json: None,
            target: None,
            sudo_by: None,
        }
    }

    /// `memtrace` alone; add what you like with [`Memtrace::args`].
    pub fn bare() -> Memtrace {
        Memtrace::with(&[])
    }

    /// `memtrace run`; the command goes in with [`Memtrace::target`].
    pub fn run() -> Memtrace {
        Memtrace::with(&["run"])
    }

    /// `memtrace -p PID` (attach mode).
    pub fn attach(pid: u32) -> Memtrace {
        Memtrace::with(&["-p", &pid.to_string()])
    }

    /// `memtrace report TRACE`.
    pub fn report(trace: &Path) -> Memtrace {
        Memtrace::bare().arg("report").arg(trace)
    }

    /// `memtrace mark -p PID`; the phase name and `--end` go in as args.
    pub fn mark(pid: u32) -> Memtrace {
        Memtrace::with(&["mark", "-p", &pid.to_string()])
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Memtrace {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Memtrace {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--json PATH`: the trace the finishing calls read back.
    pub fn json(mut self, path: impl Into<PathBuf>) -> Memtrace {
        self.json = Some(path.into());
        self
    }

    /// `-- PROGRAM ARGS...`: the command `memtrace run` spawns.
    pub fn target<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, argv: I) -> Memtrace {
        self.target = Some(argv.into_iter().map(|a| a.as_ref().to_owned()).collect());
        self
    }

    /// As if `sudo memtrace` was typed by user `uid` (group `gid`): the
    /// variables sudo sets for memtrace.
    pub fn through_sudo_by(mut self, uid: u32, gid: u32) -> Memtrace {
        self.sudo_by = Some((uid, gid));
        self
    }

    /// Run as user and group nobody with no capabilities, from `u`'s copy.
    pub fn by_nobody(mut self, u: &Unprivileged) -> Memtrace {
        self.program = u.bin.clone();
        self.as_nobody = true;
        self
    }

    /// The argument vector, program first.
    fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![self.program.clone().into_os_string()];
        argv.extend(self.args.iter().cloned());
        if let Some(json) = &self.json {
            argv.push("--json".into());
            argv.push(json.clone().into_os_string());
        }
        if let Some(target) = &self.target {
            argv.push("--".into());
            argv.extend(target.iter().cloned());
        }
        argv
    }

    pub fn command(&self) -> Command {
        let argv = self.argv();
        let mut cmd = if self.as_nobody {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]);
            cmd.args(&argv);
            cmd.current_dir("/");
            cmd
        } else {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        };
        without_sudo(&mut cmd);
        if let Some((uid, gid)) = self.sudo_by {
            cmd.env("SUDO_UID", uid.to_string()).env("SUDO_GID", gid.to_string());
        }
        cmd
    }

    /// The command as one shell line (for `script -c`); no argument may
    /// need quoting.
    pub fn shell_line(&self) -> String {
        let words: Vec<String> = self.argv().iter().map(|a| a.to_str().unwrap().to_string()).collect();
        assert!(words
            .iter()
            .all(|w| !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c))));
        words.join(" ")
    }

    /// Runs it to the end, whatever the outcome.
    pub fn output(&self) -> Output {
        run(&mut self.command())
    }

    /// Runs it to the end; it must succeed.
    pub fn succeeds(&self) -> Output {
        let out = self.output();
        assert!(out.status.success(), "{}", describe(&out));
        out
    }

    /// Runs it to the end; it must fail with a one-line `memtrace: error: `
    /// cause on stderr, which is returned.
    pub fn one_line_error(&self) -> String {
        let out = self.output();
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = stderr(&out).trim().to_string();
        assert_eq!(stderr.lines().count(), 1, "expected a one-line cause:\n{}", describe(&out));
        assert!(stderr.starts_with("memtrace: error: "), "{stderr}");
        stderr
    }

    /// Runs it to the end; it must succeed. Returns the output and the trace.
    pub fn traced(&self) -> Traced {
        let out = self.succeeds();
        Traced { trace: self.read_json(), out }
    }

    /// The trace at the `--json` path.
    pub fn read_json(&self) -> Trace {
        read_trace(self.json.as_deref().expect("a trace needs .json(PATH)"))
    }

    /// Runs it until the target prints a line containing `marker` (it then
    /// waits on its stdin, which it shares with memtrace), interrupts
    /// memtrace like Ctrl-C would, and returns the trace. memtrace reads
    /// the kernel truth before forwarding the signal.
    pub fn interrupt_when(&self, marker: &str) -> Interrupted {
        let mut cmd = self.command();
        let mut memtrace = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut out = BufReader::new(memtrace.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(marker) {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the target never printed `{marker}`");
        }
        interrupt(&memtrace);
        let mut report = String::new();
        out.read_to_string(&mut report).unwrap();
        let status = memtrace.wait().unwrap();
        Interrupted { trace: self.read_json(), report, status }
    }

    /// Starts it with stdout and stderr piped and waits until it says it is
    /// tracing.
    pub fn spawn(&self) -> Session {
        let mut child = self.command().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let line = read_line_with_text(&mut stderr, "memtrace: tracing PID");
        let pid = line.split_whitespace().nth(3).and_then(|p| p.parse().ok());
        let pid = pid.unwrap_or_else(|| panic!("no PID in {line:?}"));
        Session { child, pid, _stderr: stderr, json: self.json.clone() }
    }
}

/// The bundled workload on its own Arrow file `DIR/w.arrow`, with the
/// options the tests give it; under `memtrace run` (its trace in
/// `DIR/trace.json`) or alone (attach mode).
#[derive(Clone, Debug)]
pub struct Workload {
    dir: PathBuf,
    wrapper: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
}

impl Workload {
    pub fn in_dir(dir: &Path) -> Workload {
        Workload { dir: dir.to_path_buf(), wrapper: Vec::new(), env: Vec::new(), args: Vec::new() }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Workload {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn size_mib(self, mib: u64) -> Workload {
        self.arg("--size-mib").arg(mib.to_string())
    }

    pub fn heap_mib(self, mib: u64) -> Workload {
        self.arg("--heap-mib").arg(mib.to_string())
    }

    /// The share of record batches the search phase reads.
    pub fn touch(self, share: f64) -> Workload {
        self.arg("--touch").arg(share.to_string())
    }

    /// Blocks the leak phase leaks (in leaky_cache_insert).
    pub fn leak(self, count: u64) -> Workload {
        self.arg("--leak").arg(count.to_string())
    }

    pub fn leak_size(self, bytes: u64) -> Workload {
        self.arg("--leak-size").arg(bytes.to_string())
    }

    /// Evicts the file from the page cache before loading it.
    pub fn cold(self) -> Workload {
        self.arg("--cold")
    }

    /// Waits on stdin after `phase`, having printed "paused after PHASE".
    pub fn pause_after(self, phase: &str) -> Workload {
        self.arg("--pause-after").arg(phase)
    }

    /// Writes its ground truth to [`Workload::truth_path`].
    pub fn truth(self) -> Workload {
        let path = self.truth_path();
        self.arg("--truth").arg(path)
    }

    /// Started through `wrapper...` (a command that execs the workload
    /// with the arguments appended), not directly.
    pub fn through<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, wrapper: I) -> Workload {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// An environment variable, when the workload is started alone.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Workload {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn arrow(&self) -> PathBuf {
        self.dir.join("w.arrow")
    }

    pub fn trace_path(&self) -> PathBuf {
        self.dir.join("trace.json")
    }

    pub fn truth_path(&self) -> PathBuf {
        self.dir.join("truth.json")
    }

    pub fn read_truth(&self) -> Truth {
        read_truth(&self.truth_path())
    }

    fn argv(&self) -> Vec<OsString> {
        let mut argv = self.wrapper.clone();
        argv.push(workload_bin().into_os_string());
        argv.push("--file".into());
        argv.push(self.arrow().into_os_string());
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// The workload's command line as shell words (single-quoted).
    pub fn shell_words(&self) -> String {
        let quote = |a: &OsString| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''"));
        self.argv().iter().map(quote).collect::<Vec<_>>().join(" ")
    }

    /// The workload alone (for attach mode).
    pub fn command(&self) -> Command {
        let argv = self.argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `memtrace run --json DIR/trace.json -- WORKLOAD...`; memtrace's
    /// own options go in with [`Memtrace::args`].
    pub fn under(&self) -> Memtrace {
        assert!(self.env.is_empty(), "memtrace run passes its own environment: use .through([\"env\", ...])");
        Memtrace::run().json(self.trace_path()).target(self.argv())
    }

    /// `memtrace run MEMTRACE_ARGS` over it ([`Workload::under`]) run to its end, which must succeed.
    pub fn traced<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, memtrace_args: I) -> Traced {
        self.under().args(memtrace_args).traced()
    }
}

/// The heap's loss counters: allocator calls or blocks memtrace could not
/// follow, each 0 when the probes saw everything.
pub fn heap_losses(h: &Heap) -> [(&'static str, u64); 6] {
    [
        ("dropped_allocs", h.totals.dropped_allocs),
        ("lost_stacks", h.totals.lost_stacks),
        ("lost_calls", h.totals.lost_calls),
        ("abandoned_calls", h.totals.abandoned_calls),
        ("missed_frees", h.totals.missed_frees),
        ("unknown_frees", h.totals.unknown_frees),
    ]
}

/// Whether any frame of `stack` is in a function whose name contains `function`.
pub fn has_frame(stack: &[memtrace::symbolize::Frame], function: &str) -> bool {
    stack.iter().any(|f| f.function.as_deref().is_some_and(|n| n.contains(function)))
}

/// The innermost frame's function ("" when it has none).
pub fn top_function(stack: &[memtrace::symbolize::Frame]) -> &str {
    stack.first().and_then(|f| f.function.as_deref()).unwrap_or("")
}

// What memtrace leaves in the kernel (tests that count it hold the kernel
// alone: `require_root_alone`).

/// Names of memtrace's programs as the kernel stores them (15 bytes at most:
/// sched_process_exec and sched_process_exit are both "sched_process_e",
/// so it is listed twice).
pub const OUR_PROGRAMS: [&str; 29] = [
    "sched_process_e",
    "sched_process_e",
    "sched_process_f",
    "page_fault_kern",
    "sys_enter_mmap",
    "sys_exit_mmap",
    "sys_enter_munma",
    "sys_exit_munmap",
    "sys_enter_madvi",
    "sys_exit_madvis",
    "sys_enter_mrema",
    "sys_exit_mremap",
    "sys_exit_brk",
    "page_fault_user",
    "rss_stat",
    "mm_filemap_faul",
    "mm_filemap_map_",
    "mm_filemap_add_",
    "mm_filemap_dele",
    "phase_begin",
    "phase_end",
    "malloc_enter",
    "calloc_enter",
    "realloc_enter",
    "memalign_enter",
    "posix_memalign_",
    "valloc_enter",
    "alloc_exit",
    "free_enter",
];

pub fn our_loaded_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| OUR_PROGRAMS.contains(&n)))
        .count()
}

/// The uprobe events defined in tracefs now.
pub fn uprobe_events() -> String {
    std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap()
}

/// memtrace's detacher process closes the last references after memtrace
/// exited, and the kernel detaches (tens of ms a probe) and frees programs
/// after an RCU grace period: poll.
pub fn wait_for_no_programs_of_ours() -> usize {
    let start = std::time::Instant::now();
    loop {
        let n = our_loaded_programs();
        if n == 0 || start.elapsed() > std::time::Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The uprobe events still defined in `group` once its helper had time to
/// remove them (after the detacher's perf events are closed).
pub fn uprobe_events_left(group: &str) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let left: Vec<String> = uprobe_events().lines().filter(|l| l.contains(group)).map(String::from).collect();
        if left.is_empty() || start.elapsed() > std::time::Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
