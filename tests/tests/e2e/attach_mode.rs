//! `memtrace -p PID`: attach to a running workload, see its activity, detach
//! cleanly. It counts memtrace's programs loaded in the kernel, so it holds
//! the kernel alone: no other test of this binary runs memtrace meanwhile.
//! (memtrace killed while attached: kill.rs.)
use std::{
    io::Write,
    time::{Duration, Instant},
};

use crate::common::*;

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
