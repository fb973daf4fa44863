//! Python programs marking phases with memtrace's module (python/memtrace),
//! run as an ordinary user while memtrace runs as root.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use memtrace::trace::{PhaseEntry, Trace};
use serde_json::Value;

use crate::common::*;

/// Debian's CPython, which `cargo xtask setup` installs.
const PYTHON: &str = "/usr/bin/python3";
const NOBODY: u32 = 65534;
const DATA_MIB: u64 = 16;

/// A directory user nobody can read (the repository may be under /root):
/// the module, the test program, a data file, and `out/` it may write to.
struct PythonDir {
    _unprivileged: Unprivileged,
    dir: PathBuf,
}

impl PythonDir {
    fn new(test: &str) -> PythonDir {
        let unprivileged = unprivileged(test);
        let dir = unprivileged.dir.clone();
        let module = dir.join("lib/memtrace");
        std::fs::create_dir_all(&module).unwrap();
        for file in ["__init__.py", "_markers.c"] {
            std::fs::copy(root_dir().join("python/memtrace").join(file), module.join(file)).unwrap();
        }
        std::fs::copy(root_dir().join("tests/python/phases.py"), dir.join("phases.py")).unwrap();
        let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 + 1).collect();
        let data: Vec<u8> = page.iter().copied().cycle().take((DATA_MIB << 20) as usize).collect();
        std::fs::write(dir.join("data.bin"), data).unwrap();
        std::fs::create_dir(dir.join("out")).unwrap();
        for (path, mode) in [(dir.join("lib"), 0o755), (module, 0o755), (dir.join("out"), 0o777)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        PythonDir { _unprivileged: unprivileged, dir }
    }

    fn program(&self, out: &str) -> Vec<PathBuf> {
        vec![PYTHON.into(), self.dir.join("phases.py"), self.dir.join("data.bin"), self.dir.join("out").join(out)]
    }

    fn data_path(&self) -> String {
        self.dir.join("data.bin").display().to_string()
    }
}

/// What the program recorded: its uid, page count and phases by start.
struct Recorded {
    value: Value,
    phases: Vec<(String, u64, u64)>,
}

fn recorded(path: &Path) -> Recorded {
    let value = read_value(path);
    let mut phases: Vec<(String, u64, u64)> = value["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap().to_string(), p["before_ns"].as_u64().unwrap(), p["after_ns"].as_u64().unwrap())
        })
        .collect();
    phases.sort_by_key(|p| p.1);
    Recorded { value, phases }
}

fn by_start(trace: &Trace) -> Vec<&PhaseEntry> {
    let mut phases: Vec<&PhaseEntry> = trace.phases.iter().collect();
    phases.sort_by_key(|p| p.start_monotonic_ns);
    phases
}

const EXPECTED: [(&str, &str); 8] = [
    ("startup", "startup"),
    ("load", "load"),
    ("search", "search"),
    ("query", "search/query"),
    ("query", "search/query"),
    ("query", "search/query"),
    ("worker", "worker"),
    ("reread", "reread"),
];

#[test]
fn python_phases_of_a_program_run_as_the_sudo_user_match_its_own_clock() {
    let _root = require_root();
    let py = PythonDir::new("python_phases");
    let json = py.dir.join("trace.json");
    let memtrace =
        Memtrace::run().arg("-q").json(&json).target(py.program("times.json")).through_sudo_by(NOBODY, NOBODY);
    let mut cmd = memtrace.command();
    cmd.env("PYTHONPATH", py.dir.join("lib"));
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", describe(&out));
    let trace = read_trace(&json);
    let times = py.dir.join("out/times.json");
    let own = recorded(&times);

    // The command ran as the user who "typed sudo", with the shipped library.
    assert_eq!(own.value["uid"].as_u64(), Some(u64::from(NOBODY)));
    assert_eq!(std::fs::metadata(&times).unwrap().uid(), NOBODY, "the file the command created is the user's");
    let library = own.value["library"].as_str().expect("the module found a marker library");
    assert!(library.ends_with("libmemtrace-markers.so"), "{library}");
    assert!(
        trace.phase_markers.starts_with("attached") && trace.phase_markers.contains(library),
        "{}",
        trace.phase_markers
    );

    // Every phase, the first one (begun right after the import) too, in
    // order, nested as marked, the worker thread's included.
    let phases = by_start(&trace);
    let seen: Vec<(&str, &str)> = phases.iter().map(|p| (p.name.as_str(), p.path.as_str())).collect();
    assert_eq!(seen, EXPECTED, "{phases:#?}");
    assert_eq!(trace.unmatched_phase_ends, 0);
    assert_eq!(own.phases.len(), phases.len());
    for (p, (name, before, after)) in phases.iter().zip(&own.phases) {
        assert_eq!(&p.name, name);
        // The program's times bracket the markers by a few microseconds.
        assert!(*before <= p.start_monotonic_ns && p.end_monotonic_ns <= *after, "{name}: {p:#?} vs {before}..{after}");
        let slack = (after - before) - (p.end_monotonic_ns - p.start_monotonic_ns);
        assert!(slack < 5_000_000, "{name}: the program saw {} ns, memtrace {} ns", after - before, p.duration_s);
    }
}

#[test]
fn python_phases_load_what_smaps_says_at_each_boundary() {
    let _root = require_root();
    let py = PythonDir::new("python_phase_truth");
    let json = py.dir.join("trace.json");
    let memtrace = Memtrace::run()
        .args(["-q", "--phase-truth"])
        .json(&json)
        .target(py.program("times.json"))
        .through_sudo_by(NOBODY, NOBODY);
    let mut cmd = memtrace.command();
    cmd.env("PYTHONPATH", py.dir.join("lib"));
    let out = run(&mut cmd);
    assert!(out.status.success(), "the holds at the markers must not reach Python: {}", describe(&out));
    let trace = read_trace(&json);
    let own = recorded(&py.dir.join("out/times.json"));
    let page = own.value["page_size"].as_u64().unwrap();
    let pages = own.value["pages"].as_u64().unwrap();
    assert_eq!(pages * page, DATA_MIB << 20);

    let data = py.data_path();
    let phases = by_start(&trace);
    let mut checked = 0;
    for p in &phases {
        // The worker's marker is another thread's: no --phase-truth stop.
        assert_eq!(p.kernel_truth_at_boundaries, p.name != "worker", "{p:#?}");
        if !p.kernel_truth_at_boundaries {
            continue;
        }
        for f in &p.files {
            let kernel = f.kernel_rss_change_bytes.unwrap_or_else(|| panic!("phase {}: {f:#?}", p.name));
            let bound = (kernel.unsigned_abs() / 100).max(64 * 1024);
            assert!(f.measured_rss_change_bytes.abs_diff(kernel) <= bound, "phase {}: {f:#?}", p.name);
            checked += 1;
        }
    }
    assert!(checked >= 5, "per-phase files checked against smaps: {checked}");
    let file_change = |name: &str| -> i64 {
        let p = phases.iter().find(|p| p.name == name).unwrap();
        p.files.iter().find(|f| f.path == data).map_or(0, |f| f.kernel_rss_change_bytes.unwrap())
    };
    // load touched the first quarter, page by page: exactly that is mapped
    // (fault-around stays in the 64 KiB-aligned window the quarter fills).
    assert_eq!(file_change("load"), (pages / 4 * page) as i64);
    assert_eq!(file_change("reread"), 0, "the quarter read again was mapped already");
    assert_eq!(file_change("startup"), 0, "mapping the file loads nothing");
}

/// pip builds the marker library into the installed package; a program
/// started without memtrace loads it, and `memtrace -p` finds its markers
/// in the mapped library when it attaches.
#[test]
fn a_pip_installed_module_marks_phases_for_memtrace_attached_later() {
    let _root = require_root();
    let py = PythonDir::new("python_pip_attach");
    let source = py.dir.join("source");
    let copied = run(Command::new("cp").arg("-r").arg(root_dir().join("python")).arg(&source));
    assert!(copied.status.success(), "{}", describe(&copied));
    let site = py.dir.join("site");
    let pip = run(Command::new(PYTHON)
        .args(["-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", "--target"])
        .arg(&site)
        .arg(&source)
        .env("PIP_ROOT_USER_ACTION", "ignore"));
    assert!(pip.status.success(), "{}", describe(&pip));
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut program = Command::new("setpriv");
    program.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).args(py.program("attached.json")).arg("--wait");
    program.env("PYTHONPATH", &site).env_remove("MEMTRACE_MARKER_LIB").current_dir("/");
    let mut child = program.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let json = py.dir.join("trace.json");
    let session = Memtrace::attach(child.id()).arg("-q").json(&json).spawn();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let mut session = session;
    assert!(session.wait().success());
    let trace = session.trace();
    let own = recorded(&py.dir.join("out/attached.json"));
    let library = own.value["library"].as_str().expect("the module found its own library");
    assert!(library.starts_with(site.to_str().unwrap()) && library.contains("_markers"), "{library}");
    assert!(trace.phase_markers.contains(library), "{}", trace.phase_markers);
    let seen: Vec<(&str, &str)> = by_start(&trace).iter().map(|p| (p.name.as_str(), p.path.as_str())).collect();
    assert_eq!(seen, EXPECTED);
}

/// The interpreter is recognised by what its file defines, in Debian's
/// statically linked python3 and in a shared libpython a program embeds.
#[test]
fn the_interpreter_and_its_version_are_found_in_the_executable_or_a_shared_libpython() {
    let _root = require_root();
    let dir = scratch("python_runtime");
    let printed = run(Command::new(PYTHON).args(["-c", "import platform; print(platform.python_version())"]));
    let version = stdout(&printed).trim().to_string();

    let traced = Memtrace::run().json(dir.join("static.json")).target([PYTHON, "-c", "pass"]).traced();
    let runtime = traced.trace.runtime.as_ref().expect("CPython found in python3");
    assert_eq!((runtime.name.as_str(), runtime.version.as_str()), ("CPython", version.as_str()));
    let exe = std::fs::canonicalize(PYTHON).unwrap();
    assert_eq!(runtime.file, exe.display().to_string());
    assert!(runtime.source.starts_with("Py_Version"), "{runtime:#?}");
    assert!(traced.report().contains(&format!("runtime: CPython {version} [the target's files: Py_Version")));
    assert_eq!(traced.trace.processes[0].runtime.as_ref(), Some(runtime), "the process's own entry says it too");

    // Debian's libpython3.11, the same CPython as a shared library.
    let embed = build_embed_python(&dir);
    let traced = Memtrace::run().json(dir.join("shared.json")).target([embed.as_os_str(), "pass".as_ref()]).traced();
    let runtime = traced.trace.runtime.as_ref().expect("CPython found in libpython");
    assert_eq!(runtime.version, version, "{runtime:#?}");
    assert!(runtime.file.contains("libpython3.11.so"), "{runtime:#?}");

    // A program with no interpreter has none.
    let traced = Memtrace::run().json(dir.join("none.json")).target(["/bin/true"]).traced();
    assert_eq!(traced.trace.runtime, None);
}

/// The line of `file` (tests/python/leaky/) that holds `marker`.
fn line_of(file: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(root_dir().join("tests/python/leaky").join(file)).unwrap();
    text.lines().position(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker} in {file}")) as u32 + 1
}

/// The leak group whose second Python frame is `caller`'s.
fn group_called_from<'t>(trace: &'t Trace, caller: &str) -> &'t memtrace::trace::Leak {
    trace
        .leaks
        .iter()
        .find(|l| python_frames(l).get(1).is_some_and(|f| f.0 == caller))
        .unwrap_or_else(|| panic!("no group called from {caller}: {:#?}", trace.leaks))
}

/// The Python frames of a leak group, as (function, file name, line).
fn python_frames(leak: &memtrace::trace::Leak) -> Vec<(String, String, u32)> {
    leak.stack
        .iter()
        .filter(|f| f.module.as_deref() == Some("[python]"))
        .map(|f| {
            let file = f.file.as_deref().map(|p| p.rsplit('/').next().unwrap_or(p).to_string()).unwrap_or_default();
            (f.function.clone().unwrap_or_default(), file, f.line.unwrap_or(0))
        })
        .collect()
}

/// A leaky cache in a named function, called from two others: each leak
/// group's stack has the three Python frames, files and lines, among the
/// interpreter's native frames; in Debian's python3 (CPython linked into
/// the executable) and in a program that embeds Debian's libpython3.11.
#[test]
fn leak_stacks_show_the_python_functions_files_and_lines() {
    let _root = require_root();
    let dir = scratch("python_frames");
    let main = root_dir().join("tests/python/leaky/main.py");
    let embed = build_embed_python(&dir);
    let through_runpy = format!("import runpy; runpy.run_path({:?}, run_name='__main__')", main.display().to_string());
    let leak = ("leaky_cache_insert".to_string(), "cache.py".to_string(), line_of("cache.py", "# leak"));
    for (name, argv) in [
        ("python3", vec![PYTHON.to_string(), main.display().to_string()]),
        ("embedded", vec![embed.display().to_string(), through_runpy]),
    ] {
        let traced = Memtrace::run().json(dir.join(format!("{name}.json"))).target(&argv).traced();
        let t = &traced.trace;
        assert!(t.runtime.as_ref().is_some_and(|r| r.frames.starts_with("read in eBPF")), "{name}: {:?}", t.runtime);
        for (count, caller, module_marker) in
            [(300, ("load_index", "# load"), "# module: load"), (100, ("warm_up", "# warm"), "# module: warm")]
        {
            // The cache's blocks, with (merged in, from the same line) the
            // list's item array that append grew: at most a couple more.
            let group = group_called_from(t, caller.0);
            assert!((count..=count + 2).contains(&group.count) && group.bytes >= count * 4033, "{name}: {group:#?}");
            let frames = python_frames(group);
            let expected = [
                leak.clone(),
                (caller.0.to_string(), "main.py".to_string(), line_of("main.py", caller.1)),
                ("<module>".to_string(), "main.py".to_string(), line_of("main.py", module_marker)),
            ];
            assert!(frames.len() >= 3 && frames[..3] == expected[..], "{name}, group of {count}: {frames:#?}");
            // Interleaved: the Python frames come just before the native
            // frame of the interpreter that ran them.
            let stack = &group.stack;
            let first = stack.iter().position(|f| f.module.as_deref() == Some("[python]")).unwrap();
            assert!(first > 0, "native allocator frames come first: {stack:#?}");
        }
        assert_eq!(t.counters.python_stacks_cut, 0, "{name}");
        let report = traced.report();
        assert!(report.contains(&format!("leaky_cache_insert (leaky/cache.py:{})", leak.2)), "{name}:\n{report}");
    }
    // Turned off, the same stacks are the interpreter's C frames only.
    let traced = Memtrace::run()
        .arg("--no-python-frames")
        .json(dir.join("off.json"))
        .target([PYTHON, main.to_str().unwrap()])
        .traced();
    let t = &traced.trace;
    assert!(
        t.runtime.as_ref().is_some_and(|r| r.frames.starts_with("not read (--no-python-frames")),
        "{:?}",
        t.runtime
    );
    let python_frames =
        t.leaks.iter().flat_map(|l| &l.stack).filter(|f| f.module.as_deref() == Some("[python]")).count();
    assert_eq!(python_frames, 0);
    assert!(
        t.leaks.iter().any(|l| l.count == 400 && l.bytes == 400 * 4033),
        "one group: the stacks differ only in Python: {:#?}",
        t.leaks
    );
}

/// One line of Python leaking through two native paths of the interpreter
/// (a direct call, and one through functools.partial): one group by
/// default, keyed by its Python frames; two with --group-by-native-stack.
#[test]
fn python_groups_differing_only_in_interpreter_frames_are_one_unless_asked() {
    let _root = require_root();
    let dir = scratch("python_groups");
    let mixed = root_dir().join("tests/python/leaky/mixed.py");
    // The groups whose Python frames are fill's (the cache's blocks, and
    // the list's item array append grew, from the same line).
    let groups_of_fill = |flags: &[&str], name: &str| -> Vec<(u64, u64)> {
        let traced =
            Memtrace::run().args(flags).json(dir.join(name)).target([PYTHON, mixed.to_str().unwrap()]).traced();
        let mut groups: Vec<(u64, u64)> = traced
            .trace
            .leaks
            .iter()
            .filter(|l| python_frames(l).get(1).is_some_and(|f| f.0 == "fill"))
            .map(|l| (l.count, l.bytes))
            .collect();
        groups.sort_unstable();
        groups
    };
    let merged = groups_of_fill(&[], "merged.json");
    assert!(
        merged.len() == 1 && (100..=102).contains(&merged[0].0) && merged[0].1 >= 100 * 4033,
        "one line of Python, one group: {merged:?}"
    );
    let split = groups_of_fill(&["--group-by-native-stack"], "split.json");
    let cache_blocks: Vec<_> = split.iter().filter(|(count, bytes)| *bytes == count * 4033).collect();
    assert_eq!(cache_blocks, [&(50, 50 * 4033), &(50, 50 * 4033)], "{split:?}");
}
