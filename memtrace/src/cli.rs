//! Command-line interface.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "memtrace",
    version,
    about = "Measure what a process's memory really is: mapped files vs heap, from the kernel, with eBPF",
    long_about = "memtrace traces one process with eBPF and reports, per mapped file, how many bytes the kernel \
really mapped into it (kmem:rss_stat changes attributed to the faulting file), how many it read from disk and \
evicted, what /proc/PID/smaps says at the end, and how wrong the usual estimates (80 % of the file, RSS growth) \
are. It also counts page faults by mapping and, when the program exports memtrace_phase_begin/end, splits \
everything by phase. Every figure says where it comes from: measured (eBPF), kernel truth (/proc, rusage) or \
estimate.\n\n\
In run mode the command is held before exec until every probe is attached, and stopped at its exit (ptrace) \
so smaps is read with its mappings intact. Ctrl-C passes the signal on to the command and reports at its exit stop (at most 5 s later; a second Ctrl-C stops at once).\n\n\
It needs root (CAP_BPF + CAP_PERFMON) and a Linux >= 5.17 kernel with BTF.",
    after_help = "Examples:\n  \
sudo memtrace run -- python3 scan.py data.arrow     spawn and trace until it exits\n  \
sudo memtrace -p 4242 --duration 30 --json t.json   attach to a running process for 30 s\n  \
sudo memtrace mark warmup                           from another shell: phase \"warmup\" begins\n  \
sudo memtrace mark --end warmup                     ... and ends\n  \
memtrace report t.json --html t.html                print a saved trace's report again, and a web page\n  \
cargo xtask demo                                    trace the bundled Arrow workload",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Attach to the running process with this PID (all its threads)
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub trace: TraceArgs,
}

/// `--unwind`: how allocation stacks are walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Unwind {
    Fp,
    #[default]
    Dwarf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Internal: started by memtrace itself, waits until that memtrace is
    /// gone (its stdin closes), even by SIGKILL, and removes the tracefs
    /// uprobe events of GROUP it left defined.
    #[command(name = "__remove-uprobe-events", hide = true)]
    RemoveUprobeEvents { group: String },
    /// Spawn CMD and trace it from its first instruction until it exits.
    /// memtrace exits with CMD's exit code.
    Run {
        #[command(flatten)]
        trace: TraceArgs,

        /// Through sudo, CMD runs as the user who typed the command
        /// (SUDO_UID/SUDO_GID, with that user's groups, HOME, USER, LOGNAME
        /// and SHELL, as `sudo -u` does), so the files it creates are theirs;
        /// memtrace itself stays root. --as-root runs CMD as root instead
        #[arg(long)]
        as_root: bool,

        /// The command to run, after `--`. Everything from its first word on
        /// is the command's; an option before it is memtrace's (an unknown
        /// one is refused, with the closest known one suggested)
        #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Mark a phase in a running trace from another shell: `memtrace mark
    /// load` begins phase "load", `memtrace mark --end load` ends it. Talks
    /// to the tracing memtrace over /run/memtrace/PID.sock (root only); a
    /// program can write the line `begin NAME` or `end NAME` there itself
    Mark {
        /// The phase's name (1 to 39 bytes, no `/`)
        #[arg(value_name = "NAME")]
        name: String,

        /// End the phase instead of beginning it
        #[arg(long)]
        end: bool,

        /// The traced PID (needed only when several memtrace sessions run)
        #[arg(short = 'p', long = "pid", value_name = "PID")]
        pid: Option<u32>,
    },
    /// Print the JSON Schema of the trace files --json writes (the same as
    /// schema/memtrace-trace.schema.json in the repository)
    Schema,
    /// Compile the unwind tables of ELF files (executables, shared
    /// libraries) from their .eh_frame and print what they hold: rows, map
    /// memory, rules the unwinder cannot follow, build time. Needs no
    /// privileges. Example: `memtrace unwind-table /lib/x86_64-linux-gnu/libc.so.6`
    UnwindTable {
        /// The files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the report of a trace saved with --json, as the run printed it.
    /// Needs no kernel support and no privileges.
    Report {
        /// The trace file (written by `memtrace ... --json TRACE.json`)
        #[arg(value_name = "TRACE.json")]
        trace: PathBuf,

        /// Also write it in the Chrome Trace Event Format (see --chrome-trace of a run)
        #[arg(long = "chrome-trace", value_name = "PATH")]
        chrome_trace: Option<PathBuf>,

        /// Also write one self-contained HTML file: the timeline plotted with
        /// the phases shaded, estimates against measurement per file, and a
        /// flame graph of the leak stacks
        #[arg(long, value_name = "OUT.html")]
        html: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct TraceArgs {
    /// Stop tracing after SECS seconds (default: until the target exits or Ctrl-C)
    #[arg(long, value_name = "SECS", value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<f64>,

    /// Run mode: trace only the command's own process, not the processes
    /// it forks (by default every process of its tree is traced, from its
    /// first instruction, each with its own figures)
    #[arg(long)]
    pub no_follow: bool,

    /// Attach mode (-p PID): trace the processes PID created that are still
    /// running too, and every process any of them creates while traced
    /// (added in the kernel at the fork, its probes copied at the fork, so
    /// it is traced from its first instruction). Tracing ends when PID exits
    #[arg(long)]
    pub children: bool,

    /// Trace every process of a cgroup v2 (a container, a systemd unit:
    /// e.g. /sys/fs/cgroup/system.slice/nginx.service), those that start in it
    /// later too (filtered in the kernel by cgroup id); instead of -p PID.
    /// The scope's first process (lowest PID) is the report's target; tracing
    /// ends when it exits, or at Ctrl-C or --duration
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,

    /// Run mode: stop the target's main thread at each phase marker for a
    /// moment to read /proc/PID/smaps, so every phase has kernel truth for
    /// its per-file RSS change (adds a few ms per marker to the phase times)
    #[arg(long)]
    pub phase_truth: bool,

    /// A phase named NAME lasts while the function SYMBOL runs (its
    /// outermost call: recursion and nested calls stay one phase), for
    /// programs without marker functions. SYMBOL as `nm` prints it (mangled
    /// for C++); @/path/lib.so when a library defines it. Repeatable
    #[arg(long = "phase-fn", value_name = "NAME=SYMBOL[@LIBRARY]")]
    pub phase_fns: Vec<String>,

    /// Leak candidates are live allocations at least SECS old when tracing
    /// stops (default: every allocation still live at the stop)
    #[arg(long, value_name = "SECS", value_parser = parse_duration, allow_negative_numbers = true)]
    pub leak_age: Option<f64>,

    /// Print, for each allocator function, where its uprobe was placed and
    /// why (an instruction the kernel emulates costs ~0.6 µs a hit, one it
    /// must single-step ~11 µs)
    #[arg(long)]
    pub explain_probes: bool,

    /// Put every allocator uprobe on the function's first instruction, as
    /// other tools do, instead of the cheaper place --explain-probes shows
    /// (for comparing costs, or to rule the placement out)
    #[arg(long)]
    pub probe_at_entry: bool,

    /// Do not read CPython's frames at allocations: heap stacks of a Python
    /// program show only the interpreter's C functions (by default, for
    /// CPython 3.11, each stack also has the Python functions, files and
    /// lines it ran, read from the interpreter's memory)
    #[arg(long)]
    pub no_python_frames: bool,

    /// Group a Python program's leak candidates by their whole stack, the
    /// interpreter's own C frames included (by default groups whose stacks
    /// differ only in those frames are one: the Python frames and the
    /// native frames outside the interpreter decide)
    #[arg(long)]
    pub group_by_native_stack: bool,

    /// How allocation stacks are walked. `dwarf` (default): unwind tables
    /// compiled from each executable file's .eh_frame, searched in eBPF,
    /// with a frame-pointer step in code whose file has none, so stacks
    /// through libraries built without frame pointers (glibc, CPython, most
    /// C++ libraries) are whole. `memtrace run` holds the target's main
    /// thread after each exec and each mapping of a file's code until that
    /// file's table is in (a few ms: glibc 4 ms, libpython3.11 15 ms);
    /// `-p PID` loads the tables before its allocator probes go in, and a
    /// library loaded later is walked with frame pointers until its table
    /// is in (tens of ms). `fp`: frame pointers only (the kernel's walk:
    /// cheaper per allocation; stacks end early in code built without them)
    #[arg(long, value_enum, default_value_t = Unwind::Dwarf, value_name = "HOW")]
    pub unwind: Unwind,

    /// Also probe the allocator functions this library (or executable)
    /// defines: a jemalloc, mimalloc or tcmalloc the target loads, e.g.
    /// /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (repeatable). glibc and an
    /// allocator linked statically into the target are found without it
    #[arg(long = "alloc-lib", value_name = "PATH")]
    pub alloc_libs: Vec<PathBuf>,

    /// Also write every allocation and free, as one JSON object per line, to
    /// PATH (the full stream; without it only aggregates leave the kernel)
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Growth suspects: allocation stacks whose live bytes grew in each of
    /// the last K samples (taken every 0.5 s)
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=600))]
    pub growth_window: u16,

    /// Timeline sampling interval: RSS split, heap, per-file loaded bytes,
    /// faults and allocator calls, and the phase, every INTERVAL (e.g. 100ms,
    /// 0.5s; a bare number is milliseconds; at least 10ms)
    #[arg(long, value_name = "INTERVAL", default_value = "100ms", value_parser = parse_interval)]
    pub interval: f64,

    /// Size of the ring buffer that carries events from the kernel to
    /// memtrace, in KiB (a power of two, at least 4). When it is full the
    /// kernel side drops events and counts them ("ring-buffer drops" in the
    /// report; per-mapping figures are then incomplete); heap totals and
    /// leak candidates, kept in kernel maps, stay exact
    #[arg(long, value_name = "KIB", default_value_t = 16384, value_parser = parse_ring_kib)]
    pub ring_buffer_kib: u32,

    /// Most allocations tracked as live at once. Past it, allocations are
    /// counted as "dropped allocations (live map full)" and left out of
    /// live bytes and leaks (their frees count as unknown frees); kernel
    /// memory grows with use (about 100 bytes an allocation)
    #[arg(long, value_name = "N", default_value_t = memtrace_common::DEFAULT_MAX_LIVE_ALLOCS,
          value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub max_live_allocs: u32,

    /// Most distinct allocation stacks kept. Past it, allocations are
    /// recorded without a stack ("allocations without stack" in the report)
    #[arg(long, value_name = "N", default_value_t = memtrace_common::DEFAULT_MAX_STACKS,
          value_parser = clap::value_parser!(u32).range(1..=1 << 22))]
    pub max_stacks: u32,

    /// Most processes listed one by one in the trace (`processes[]`). A
    /// process that ends after that many are listed is read whole (its heap
    /// at its end, its files' figures), then folded into one summed entry
    /// (`processes_folded`: how many, their commands, their sums), so a
    /// tree of thousands of short processes keeps memtrace's memory and
    /// the trace bounded. Every process counts in the scope's figures
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_processes: u32,

    /// Most finished phases listed one by one (`phases[]`), in the scope
    /// and in each process. Later ones are summed by path
    /// (`phases_folded`: how many, their durations, faults, heap growth and
    /// files), so a program that marks a phase per request keeps memtrace's
    /// memory and the trace bounded. Phases open at the stop are always listed
    #[arg(long, value_name = "N", default_value_t = crate::model::phases::DEFAULT_MAX_LISTED as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_phases: u32,

    /// No live view while tracing (by default, once a second on stderr:
    /// redrawn in place on a terminal, one plain line otherwise)
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Also write the trace in the Chrome Trace Event Format to PATH, for
    /// ui.perfetto.dev or chrome://tracing: phases as slices, RSS, heap and
    /// per-file loaded bytes as counters, leaks and losses as instants
    #[arg(long = "chrome-trace", value_name = "PATH")]
    pub chrome_trace: Option<PathBuf>,

    /// Also write the trace as JSON to PATH (written whole at the end, mode 0600)
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v >= 4 && v.is_power_of_two() && v <= 1 << 22 => Ok(v),
        _ => Err(format!("`{s}` is not a power of two from 4 to 4194304 (KiB)")),
    }
}

fn parse_duration(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// "100ms", "0.5s" or "250" (milliseconds) as seconds; at least 10 ms.
fn parse_interval(s: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1e-3)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v * scale >= 0.010 => Ok(v * scale),
        Ok(_) => Err(format!("`{s}` is below the 10ms minimum")),
        Err(_) => Err(format!("`{s}` is not an interval like 100ms or 0.5s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_the_whole_command_line_after_the_separator() {
        let cli = Cli::try_parse_from(["memtrace", "run", "--json", "t.json", "--", "ls", "-l", "--color"]).unwrap();
        let Some(Command::Run { trace, command, .. }) = cli.command else { panic!() };
        assert_eq!(command, ["ls", "-l", "--color"]);
        assert_eq!(trace.json.unwrap().to_str(), Some("t.json"));
    }

    #[test]
    fn mark_takes_a_name_and_optionally_end_and_a_pid() {
        let cli = Cli::try_parse_from(["memtrace", "mark", "--end", "load", "-p", "7"]).unwrap();
        let Some(Command::Mark { name, end, pid }) = cli.command else { panic!() };
        assert_eq!((name.as_str(), end, pid), ("load", true, Some(7)));
    }

    #[test]
    fn intervals_take_units_and_a_minimum() {
        assert_eq!(parse_interval("100ms"), Ok(0.1));
        assert_eq!(parse_interval("0.5s"), Ok(0.5));
        assert_eq!(parse_interval("250"), Ok(0.25));
        assert!(parse_interval("5ms").unwrap_err().contains("10ms minimum"));
        assert!(parse_interval("fast").is_err());
        let cli = Cli::try_parse_from(["memtrace", "-p", "1"]).unwrap();
        assert_eq!(cli.trace.interval, 0.1);
    }

    #[test]
    fn report_takes_a_trace_file() {
        let cli = Cli::try_parse_from(["memtrace", "report", "t.json"]).unwrap();
        let Some(Command::Report { trace, .. }) = cli.command else { panic!() };
        assert_eq!(trace.to_str(), Some("t.json"));
        assert!(Cli::try_parse_from(["memtrace", "report"]).is_err());
    }

    #[test]
    fn attach_mode_takes_a_pid_and_duration() {
        let cli = Cli::try_parse_from(["memtrace", "-p", "42", "--duration", "1.5"]).unwrap();
        assert_eq!(cli.pid, Some(42));
        assert_eq!(cli.trace.duration, Some(1.5));
        assert!(Cli::try_parse_from(["memtrace", "-p", "x"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "-p", "1", "--duration", "-3"]).is_err());
    }
}
