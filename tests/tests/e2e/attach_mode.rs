//! `memtrace -p PID`: attach to a running workload, see its activity, detach
//! cleanly. It counts memtrace's programs loaded in the kernel, so it holds
//! the kernel alone: no other test of this binary runs memtrace meanwhile.

use std::{
    io::{BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::*;

/// Names of memtrace's programs as the kernel stores them (15 bytes at most).
const OUR_PROGRAMS: [&str; 26] = [
    "sched_process_e",
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

fn our_loaded_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| OUR_PROGRAMS.contains(&n)))
        .count()
}

/// The kernel frees programs after an RCU grace period: poll a little.
fn wait_for_no_programs_of_ours() -> usize {
    let start = Instant::now();
    loop {
        let n = our_loaded_programs();
        if n == 0 || start.elapsed() > Duration::from_secs(3) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn attaches_sees_activity_and_detaches_without_leaving_probes() {
    let _root = require_root_alone();
    assert_eq!(wait_for_no_programs_of_ours(), 0, "another memtrace is running; this test needs the kernel to itself");
    let dir = scratch("attach_mode");
    let mut workload = Command::new(workload_bin())
        .arg("--file")
        .arg(dir.join("w.arrow"))
        .args(["--size-mib", "16", "--heap-mib", "4", "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w_out = BufReader::new(workload.stdout.take().unwrap());
    let mut w_in = workload.stdin.take().unwrap();
    let line = read_line_with_text(&mut w_out, "holding pid=");
    let pid: u32 = line.trim().rsplit('=').next().unwrap().parse().unwrap();
    assert_eq!(pid, workload.id());

    let trace_path = dir.join("trace.json");
    let (mut memtrace, _m_err) = attach_memtrace(pid, &trace_path);
    // The workload exports the phase markers, so the two uprobes load too.
    assert_eq!(our_loaded_programs(), OUR_PROGRAMS.len(), "all our programs are loaded while tracing");

    // Activity after attach: 300 fresh anonymous pages, written once each.
    writeln!(w_in, "fault 300").unwrap();
    read_line_with_text(&mut w_out, "done fault 300");

    // Ctrl-C: memtrace stops, reports and writes the trace.
    unsafe { libc::kill(memtrace.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = memtrace.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "memtrace did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut memtrace.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}\n{stdout}");
    assert!(stdout.contains("attach mode"), "{stdout}");

    let trace = read_json(&trace_path);
    assert_eq!(trace["mode"], "attach");
    assert_eq!(trace["target"]["pid"], pid);
    assert_eq!(trace["stop_reason"], "interrupted (SIGINT)");
    let c = &trace["counters"];
    assert!(u(&c["page_faults"]) >= 300, "{c:#}");
    assert!(u(&c["mmap_calls"]) >= 1 && u(&c["munmap_calls"]) >= 1, "{c:#}");
    let anon = trace["regions"].as_array().unwrap().iter().find(|r| r["region"] == "[anon]").expect("[anon] region");
    assert!(u(&anon["faults"]["write"]) >= 300, "{anon:#}");

    assert_eq!(wait_for_no_programs_of_ours(), 0, "memtrace left programs loaded after it exited");
    assert!(workload.try_wait().unwrap().is_none(), "detaching must not disturb the target");
    drop(w_in); // EOF: the workload exits
    assert!(workload.wait().unwrap().success());
}
