//! `memtrace -p PID`: attach to a running workload, see its activity, detach
//! cleanly. It counts memtrace's programs loaded in the kernel, so it holds
//! the kernel alone: no other test of this binary runs memtrace meanwhile.
use std::{
    io::Write,
    time::{Duration, Instant},
};

use crate::common::*;

/// Names of memtrace's programs as the kernel stores them (15 bytes at most:
/// sched_process_exec and sched_process_exit are both "sched_process_e",
/// so it is listed twice).
const OUR_PROGRAMS: [&str; 29] = [
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

fn our_loaded_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| OUR_PROGRAMS.contains(&n)))
        .count()
}

/// The uprobe events defined in tracefs now.
fn uprobe_events() -> String {
    std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap()
}

/// memtrace's detacher process closes the last references after memtrace
/// exited, and the kernel detaches (tens of ms a probe) and frees programs
/// after an RCU grace period: poll.
fn wait_for_no_programs_of_ours() -> usize {
    let start = Instant::now();
    loop {
        let n = our_loaded_programs();
        if n == 0 || start.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The uprobe events still defined in `group` once its helper had time to
/// remove them (after the detacher's perf events are closed).
fn uprobe_events_left(group: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        let left: Vec<String> = uprobe_events().lines().filter(|l| l.contains(group)).map(String::from).collect();
        if left.is_empty() || start.elapsed() > Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn attaches_sees_activity_and_detaches_without_leaving_probes() {
    let _root = require_root_alone();
    assert_eq!(wait_for_no_programs_of_ours(), 0, "another memtrace is running; this test needs the kernel to itself");
    let dir = scratch("attach_mode");
    let mut w =
        spawn_until(&mut Workload::in_dir(&dir).size_mib(16).heap_mib(4).arg("--hold").command(), "holding pid=");
    let pid: u32 = w.ready.trim().rsplit('=').next().unwrap().parse().unwrap();
    assert_eq!(pid, w.child.id());

    let mut memtrace = Memtrace::attach(pid).json(dir.join("trace.json")).spawn();
    // The workload exports the phase markers, so the two uprobes load too.
    assert_eq!(our_loaded_programs(), OUR_PROGRAMS.len(), "all our programs are loaded while tracing");
    let group = format!("memtrace_{}", memtrace.child.id());
    assert!(uprobe_events().contains(&group), "its uprobes are tracefs events in {group}");

    // Activity after attach: 300 fresh anonymous pages, written once each.
    writeln!(w.stdin, "fault 300").unwrap();
    read_line_with_text(&mut w.out, "done fault 300");

    // Ctrl-C: memtrace stops, reports and writes the trace.
    memtrace.interrupt();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = memtrace.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "memtrace did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut memtrace.child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}\n{stdout}");
    assert!(stdout.contains("attach mode"), "{stdout}");

    let trace = memtrace.trace();
    assert_eq!(trace.mode, memtrace::trace::Mode::Attach);
    assert_eq!(trace.target.pid, pid);
    assert_eq!(trace.stop_reason, "interrupted (SIGINT)");
    let c = &trace.counters;
    assert!(c.page_faults >= 300, "{c:#?}");
    assert!(c.mmap_calls >= 1 && c.munmap_calls >= 1, "{c:#?}");
    let anon = trace.regions.iter().find(|r| r.region == "[anon]").expect("[anon] region");
    assert!(anon.faults.write >= 300, "{anon:#?}");

    assert_eq!(wait_for_no_programs_of_ours(), 0, "memtrace left programs loaded after it exited");
    let left = uprobe_events_left(&group);
    assert!(left.is_empty(), "memtrace left uprobe events defined: {left:?}");
    assert!(w.child.try_wait().unwrap().is_none(), "detaching must not disturb the target");
    drop(w.stdin); // EOF: the workload exits
    assert!(w.child.wait().unwrap().success());
}

/// memtrace killed with SIGKILL while attached: its programs and links go
/// with its file descriptors, the definitions of its uprobe events are
/// removed by the helper it started, and the target finishes as if never
/// traced (its own ground truth complete, exit 0).
#[test]
fn sigkill_leaves_nothing_in_the_kernel_and_the_target_finishes_right() {
    let _root = require_root_alone();
    assert_eq!(wait_for_no_programs_of_ours(), 0, "another memtrace is running; this test needs the kernel to itself");
    let dir = scratch("attach_sigkill");
    let workload = Workload::in_dir(&dir).size_mib(8).touch(0.3).heap_mib(4).pause_after("load").truth();
    let mut w = spawn_until(&mut workload.command(), "paused after load");
    let mut memtrace = Memtrace::attach(w.child.id()).json(dir.join("trace.json")).spawn();
    let group = format!("memtrace_{}", memtrace.child.id());
    assert!(uprobe_events().contains(&group));
    memtrace.child.kill().unwrap();
    memtrace.wait();
    let left = uprobe_events_left(&group);
    assert!(left.is_empty(), "uprobe events left after SIGKILL: {left:?}");
    assert_eq!(wait_for_no_programs_of_ours(), 0, "programs left after SIGKILL");
    writeln!(w.stdin,).unwrap();
    drop(w.stdin);
    assert!(w.child.wait().unwrap().success(), "the target finishes");
    let truth = workload.read_truth();
    assert!(truth.complete, "its ground truth is whole");
    assert!(!dir.join("trace.json").exists(), "no half-written trace");
}
