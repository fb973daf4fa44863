//! `memtrace run -- CMD`: the bundled workload traced from its first instruction.
use std::os::unix::fs::PermissionsExt;

use memtrace::trace::PhaseEntry;

use crate::common::*;

#[test]
fn traces_the_workload_and_agrees_with_the_kernels_fault_count() {
    let _root = require_root();
    let dir = scratch("run_mode");
    let workload = Workload::in_dir(&dir).size_mib(32).touch(0.5).heap_mib(8).truth();
    let run = workload.under().traced();
    let report = run.report();
    assert!(report.contains("memtrace report: PID"), "{report}");

    let trace = run.trace;
    let truth = workload.read_truth();
    assert_eq!(trace.format, "memtrace-trace");
    assert_eq!(trace.version, 1);
    assert_eq!(trace.mode, memtrace::trace::Mode::Run);
    assert_eq!(trace.target.pid, truth.pid, "the traced PID is the workload's own");
    assert_eq!(trace.target.exit_code, Some(0));
    let mode = std::fs::metadata(workload.trace_path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "traces are private to root");

    // Our count against the kernel's own (/proc/PID/stat at the exit stop):
    // user-mode faults plus those the kernel took on the target's memory in
    // kernel mode. The kernel also counts faults taken through
    // get_user_pages (execve copying the arguments), which raise no fault
    // tracepoint: ours may be a little lower, never higher.
    let c = &trace.counters;
    let measured = c.page_faults + c.page_faults_kernel_mode;
    let k = trace.kernel.as_ref().expect("the kernel's fault counts");
    let kernel = k.minor_faults + k.major_faults;
    assert!(c.page_faults > 100, "{c:#?}");
    assert!(
        measured <= kernel && (kernel - measured) * 50 <= kernel,
        "measured {measured} faults, kernel counted {kernel}"
    );
    assert_eq!(c.ringbuf_drops, 0, "{c:#?}");
    assert_eq!(c.page_faults_seen, measured, "every counted fault reached userspace");
    assert!(c.mmap_calls >= 1 && c.munmap_calls >= 1, "{c:#?}");

    // The Arrow file is among the mapped files with its real size, and the
    // search phase's reads faulted inside its mapping.
    let path = truth.file.path.as_str();
    let f = file_entry(&trace, path);
    assert_eq!(f.size_bytes, Some(truth.file.size_bytes));
    assert_eq!(f.inode, truth.file.inode);
    assert!(f.mapped_bytes >= truth.file.size_bytes, "{f:#?}");
    assert!(f.mmap_calls >= 1, "{f:#?}");
    assert!(f.page_faults.total > 0, "{f:#?}");
    assert_eq!(f.mapped_at_end_bytes, 0, "teardown unmapped it: {f:#?}");
    // The kernel truth was read at the exit stop, mappings intact: the
    // workload's own binary is still mapped there, and measured agrees.
    assert!(trace.final_truth.contains("at the target's exit"), "{}", trace.final_truth);
    assert_eq!(f.kernel_rss_bytes, Some(0), "unmapped at teardown, so nothing resident at exit: {f:#?}");
    assert_eq!(f.estimates.reference, "peak_resident_bytes", "an unmapped file is judged by its peak");
    assert_eq!(f.peak_resident_bytes, f.measured_loaded_bytes, "{f:#?}");

    // Phases from the marker uprobes: the workload's, in order, with its own
    // CLOCK_MONOTONIC times within 5 ms.
    assert!(trace.phase_markers.starts_with("attached"), "{}", trace.phase_markers);
    let phases = &trace.phases;
    let names: Vec<_> = phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["write", "load", "build", "search", "leak", "teardown"]);
    for (p, t) in phases.iter().zip(&truth.phases) {
        assert_eq!(p.name, t.name);
        assert!(!p.open);
        let ms = |a: u64, b: u64| a.abs_diff(b) as f64 / 1e6;
        assert!(ms(p.start_monotonic_ns, t.start_ns) < 5.0, "{p:#?} vs {t:#?}");
        assert!(ms(p.end_monotonic_ns, t.end_ns) < 5.0, "{p:#?} vs {t:#?}");
    }
    // The Arrow file is only read inside phases: the per-phase loaded bytes
    // add up to the total, and the search phase loaded some.
    let in_phase = |p: &PhaseEntry| p.files.iter().find(|f| f.path == path).map_or(0, |f| f.measured_loaded_bytes);
    let per_phase: u64 = phases.iter().map(in_phase).sum();
    assert_eq!(per_phase, f.measured_loaded_bytes, "{phases:#?}");
    assert!(in_phase(&phases[3]) > 0, "search loaded nothing: {:#?}", phases[3]);
    assert_eq!(in_phase(&phases[2]), 0, "build does not touch the file: {:#?}", phases[2]);
}

#[test]
fn markers_of_a_program_started_through_a_wrapper_are_probed_at_its_exec() {
    // `env` is what memtrace spawns; the workload's markers (in its own
    // executable) are probed at the exec stop, so even the first phase,
    // which begins at once, is seen.
    let _root = require_root();
    let dir = scratch("run_through_env");
    let workload = Workload::in_dir(&dir).size_mib(4).touch(0.3).truth().through(["env", "MEMTRACE_TEST=1"]);
    let trace = workload.traced(["-q"]).trace;
    let truth = workload.read_truth();
    let markers = &trace.phase_markers;
    assert!(
        markers.starts_with("attached") && markers.ends_with(&format!(" in {}", workload_bin().display())),
        "{markers}"
    );
    let names: Vec<&str> = trace.phases.iter().map(|p| p.name.as_str()).collect();
    let truth_names: Vec<&str> = truth.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, truth_names);
}

#[test]
fn propagates_the_commands_exit_code_and_still_reports() {
    let _root = require_root();
    let dir = scratch("run_exit_code");
    let memtrace = Memtrace::run().json(dir.join("t.json")).target(["sh", "-c", "exit 3"]);
    let out = memtrace.output();
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let trace = memtrace.read_json();
    assert_eq!(trace.target.exit_code, Some(3));
    assert!(trace.counters.page_faults > 0);
}

#[test]
fn phase_truth_reads_smaps_at_every_marker_and_each_phase_matches_it() {
    let _root = require_root();
    let dir = scratch("run_phase_truth");
    let workload = Workload::in_dir(&dir).size_mib(32).touch(0.4).heap_mib(8).truth();
    let memtrace = workload.under().arg("--phase-truth");
    let out = memtrace.output();
    assert!(out.status.success(), "the SIGSTOPs at the markers must not reach the workload: {}", describe(&out));
    let trace = memtrace.read_json();
    let truth = workload.read_truth();
    assert!(trace.phase_truth.starts_with("smaps read at 12 phase boundaries"), "{trace:#?}");
    let path = truth.file.path.as_str();
    let phases = &trace.phases;
    assert_eq!(phases.len(), 6, "{phases:#?}");
    let mut arrow_change = 0i64;
    for p in phases {
        assert!(p.kernel_truth_at_boundaries, "{p:#?}");
        for f in &p.files {
            let measured = f.measured_rss_change_bytes;
            let kernel = f.kernel_rss_change_bytes.unwrap_or_else(|| panic!("phase {}: {f:#?}", p.name));
            // The bound: 1 % or 64 KiB, whichever is larger.
            let bound = (kernel.unsigned_abs() / 100).max(64 * 1024);
            assert!(measured.abs_diff(kernel) <= bound, "phase {}: {f:#?}", p.name);
            if f.path == path {
                arrow_change += kernel;
            }
        }
    }
    // load and search loaded the Arrow file, teardown released all of it.
    let in_phase = |i: usize| phases[i].files.iter().find(|f| f.path == path);
    let search = in_phase(3).expect("search loaded the Arrow file");
    assert!(search.kernel_rss_change_bytes.unwrap() > 0, "{search:#?}");
    assert!(in_phase(2).is_none(), "build does not touch the file: {:#?}", phases[2]);
    assert_eq!(arrow_change, 0, "the file ends unmapped: what phases loaded, teardown released");
}

#[test]
fn through_sudo_the_command_runs_as_the_invoking_user_unless_as_root() {
    let _root = require_root();
    let u = unprivileged("run_sudo_user");
    let out_dir = u.dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let made = |name: &str| out_dir.join(name);
    let script = |name: &str| format!("id -u -n > {0}; echo $HOME >> {0}", made(name).display());
    use std::os::unix::fs::MetadataExt;
    // SUDO_UID/SUDO_GID are what sudo tells memtrace about who typed it.
    Memtrace::run().arg("-q").target(["sh", "-c", &script("user")]).through_sudo_by(65534, 65534).succeeds();
    let owner = std::fs::metadata(made("user")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (65534, 65534), "the file the command created is the user's");
    assert_eq!(std::fs::read_to_string(made("user")).unwrap(), "nobody\n/nonexistent\n", "as `sudo -u nobody`");

    Memtrace::run()
        .args(["-q", "--as-root"])
        .target(["sh", "-c", &script("root")])
        .through_sudo_by(65534, 65534)
        .succeeds();
    assert_eq!(std::fs::metadata(made("root")).unwrap().uid(), 0, "--as-root keeps root");
    assert!(std::fs::read_to_string(made("root")).unwrap().starts_with("root\n"));

    // A program only root may run: one line that names the way out.
    let private = u.dir.join("private.sh");
    std::fs::write(&private, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = Memtrace::run().target([&private]).through_sudo_by(65534, 65534).one_line_error();
    assert!(err.contains("as user nobody (uid 65534)") && err.contains("--as-root"), "{err}");
}
