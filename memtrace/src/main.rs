//! memtrace: per-process memory tracing with eBPF. See README.md.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;

use memtrace::{
    cli::{Cli, Command, TraceArgs},
    kernel::preflight,
    output::{chrome_trace, html, report},
    session::{self, Options, Target},
    target::{self, child::Launch, control},
    trace, unwind,
    uprobes::{allocator, marker_library, phase_fn},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A tracing run catches its stopping signals from here on; the other
    // commands keep the default (Ctrl-C ends `memtrace report` at once).
    let tracing = matches!(cli.command, None | Some(Command::Run { .. }));
    let signals = match tracing.then(session::signals::catch).transpose() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("memtrace: error: installing signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli, signals) {
        Ok(code) => code,
        Err(err) => {
            // One line: the cause chain joined with ": ".
            eprintln!("memtrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, signals: Option<session::signals::Caught>) -> Result<ExitCode> {
    let mut cgroup = None;
    let (args, target) = match (cli.command, cli.pid) {
        (Some(Command::Mark { name, end, pid }), _) => {
            let pid = control::send(Path::new(control::DIR), pid, !end, &name)?;
            eprintln!("memtrace: {} phase `{name}` in the trace of PID {pid}", if end { "ended" } else { "began" });
            return Ok(ExitCode::SUCCESS);
        }
        (Some(Command::UnwindTable { files }), _) => {
            for file in files {
                match unwind::UnwindTable::read(&file) {
                    Ok(table) => println!("{}: {}", file.display(), unwind::describe(&table)),
                    Err(e) => bail!("{}: {e}", file.display()),
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        (Some(Command::RemoveUprobeEvents { group }), _) => {
            memtrace::kernel::uprobe_events::remove_when_orphaned(&group);
            return Ok(ExitCode::SUCCESS);
        }
        (Some(Command::Schema), _) => {
            println!("{}", serde_json::to_string_pretty(&trace::json_schema())?);
            return Ok(ExitCode::SUCCESS);
        }
        (Some(Command::Report { trace, chrome_trace, html }), _) => {
            // No kernel, no privileges: a saved trace, rendered as the run did.
            let saved = trace::read_json(&trace)?;
            print!("{}", report::render(&saved));
            if let Some(path) = chrome_trace {
                chrome_trace::write(&path, &saved)?;
                eprintln!("memtrace: Chrome trace written to {}", path.display());
            }
            if let Some(path) = html {
                html::write(&path, &saved)?;
                eprintln!("memtrace: HTML report written to {}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        (Some(Command::Run { trace, .. }), _) if trace.cgroup.is_some() => {
            bail!("--cgroup traces processes already running: use it instead of `run` (`sudo memtrace --cgroup DIR`)")
        }
        (Some(Command::Run { trace, .. }), _) if trace.children => {
            bail!("--children is for attach mode (-p PID): `memtrace run` follows the command's children already (--no-follow to stop that)")
        }
        (Some(Command::Run { trace, command, as_root }), _) => {
            let program = target::child::resolve_command(&command[0])?;
            let phase_fns = resolve_phase_fns(&trace, &program)?;
            let user = if as_root { None } else { target::user::User::invoking()? };
            (trace, Err((Launch { argv: command, user, ..Launch::default() }, phase_fns)))
        }
        (None, None) if cli.trace.cgroup.is_some() => {
            let dir = cli.trace.cgroup.clone().unwrap_or_default();
            let scope = target::cgroup::resolve(&dir)?;
            let pid = scope.members[0];
            let command = target::child::check_pid(pid)?;
            let phase_fns = resolve_phase_fns(&cli.trace, Path::new(&format!("/proc/{pid}/exe")))?;
            cgroup = Some(scope);
            (cli.trace, Ok((pid, command, phase_fns)))
        }
        (_, Some(_)) if cli.trace.cgroup.is_some() => bail!("--cgroup names the scope itself: give it without -p PID"),
        (None, Some(_)) if cli.trace.phase_truth => {
            bail!("--phase-truth needs run mode (memtrace must be the target's ptrace tracer): use `memtrace run --phase-truth -- CMD`")
        }
        (None, Some(pid)) => {
            let command = target::child::check_pid(pid)?;
            let phase_fns = resolve_phase_fns(&cli.trace, Path::new(&format!("/proc/{pid}/exe")))?;
            (cli.trace, Ok((pid, command, phase_fns)))
        }
        (None, None) => bail!("nothing to trace: give `-p PID` to attach, or `run -- CMD ARGS` to spawn (see --help)"),
    };
    preflight::check_privileges()?;
    preflight::check_kernel_version()?;
    preflight::check_btf()?;
    if let Some(path) = &args.json {
        trace::check_writable("--json", path)?;
    }
    if let Some(path) = &args.events {
        trace::check_writable("--events", path)?;
    }
    if let Some(path) = &args.chrome_trace {
        trace::check_writable("--chrome-trace", path)?;
    }
    for lib in &args.alloc_libs {
        allocator::check_alloc_lib(lib)?;
    }
    let (target, phase_fns) = match target {
        Ok((pid, command, phase_fns)) => (Target::Attach { pid, command }, phase_fns),
        Err((launch, phase_fns)) => (Target::Run(Box::new(spawn(launch)?)), phase_fns),
    };
    let signals = signals.context("signal handlers not installed")?;
    trace_and_report(target, &args, phase_fns, cgroup, signals)
}

/// Spawns the command held before its exec, with the phase-marker library
/// written out and named to it (see uprobes::marker_library).
fn spawn(mut launch: Launch) -> Result<target::child::HeldChild> {
    let library = marker_library::install();
    if let Ok(path) = &library {
        launch.env.push((marker_library::ENV.into(), path.display().to_string()));
    }
    let mut child = target::child::HeldChild::spawn(&launch)?;
    match library {
        Ok(path) => child.marker_library = Some(path),
        Err(e) => child.warnings.push(format!(
            "the phase-marker library was not written ({e:#}): phases marked through it (the Python module) are seen only once its mapping is read, the first ones may be missed"
        )),
    }
    Ok(child)
}

/// Checks each `--phase-fn` against the file that must define it.
fn resolve_phase_fns(args: &TraceArgs, executable: &Path) -> Result<Vec<phase_fn::PhaseFn>> {
    args.phase_fns.iter().map(|spec| phase_fn::resolve(spec, executable)).collect()
}

fn trace_and_report(
    target: Target,
    args: &TraceArgs,
    phase_fns: Vec<phase_fn::PhaseFn>,
    cgroup: Option<target::cgroup::Cgroup>,
    signals: session::signals::Caught,
) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let opts = Options {
        duration: args.duration.map(Duration::from_secs_f64),
        phase_truth: args.phase_truth,
        follow: !args.no_follow,
        children: args.children,
        cgroup,
        leak_age: args.leak_age.map(Duration::from_secs_f64),
        explain_probes: args.explain_probes,
        probe_at_entry: args.probe_at_entry,
        no_python_frames: args.no_python_frames,
        group_by_native_stack: args.group_by_native_stack,
        unwind: args.unwind,
        alloc_libs: args.alloc_libs.clone(),
        events: args.events.clone(),
        growth_window: args.growth_window.into(),
        phase_fns,
        interval: Duration::from_secs_f64(args.interval),
        quiet: args.quiet,
        max_processes: args.max_processes as usize,
        max_phases: args.max_phases as usize,
        map_sizes: memtrace::kernel::probes::MapSizes {
            ring_bytes: args.ring_buffer_kib * 1024,
            live_allocs: args.max_live_allocs,
            stacks: args.max_stacks,
        },
    };
    let (trace, detaching) = runtime.block_on(session::trace(target, opts, signals))?;
    runtime.shutdown_background();
    print!("{}", report::render(&trace));
    let written = args.json.as_ref().map(|path| trace::write_json(path, &trace).map(|_| path));
    let chrome = args.chrome_trace.as_ref().map(|path| chrome_trace::write(path, &trace).map(|_| path));
    // memtrace's references to its probes are dropped (cheap: the
    // detacher process holds the last ones and the kernel's detaching
    // happens at its exit, after memtrace's).
    let _ = detaching.join();
    if let Some(written) = written {
        eprintln!("memtrace: trace written to {}", written?.display());
    }
    if let Some(chrome) = chrome {
        eprintln!("memtrace: Chrome trace written to {} (open it in ui.perfetto.dev)", chrome?.display());
    }
    let code = match (trace.mode, trace.target.exit_code) {
        (trace::Mode::Run, Some(code)) => code.clamp(0, 255) as u8,
        _ => 0,
    };
    Ok(ExitCode::from(code))
}
