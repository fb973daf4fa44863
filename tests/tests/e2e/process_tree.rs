//! Process trees in run mode: every process the command forks is traced
//! from its first instruction, with its own figures in `processes[]`.
use std::ffi::OsStr;

use memtrace::trace::Trace;

use crate::common::*;

/// Debian's python3 runs 4 multiprocessing workers (each start method) that
/// map one 32 MiB file and each read a different quarter of it: each
/// worker's measured loaded bytes match the smaps Rss it read itself while
/// the file was mapped, the tree's total is the sum, and each worker's heap
/// was traced in its own process.
#[test]
fn multiprocessing_workers_are_each_traced_with_their_own_file_pages_and_heap() {
    let _root = require_root();
    let dir = scratch("process_tree");
    let file = dir.join("shared.bin");
    std::fs::write(&file, vec![7u8; 32 << 20]).unwrap();
    let file = std::fs::canonicalize(&file).unwrap();
    let script = root_dir().join("tests/python/pool_quarters.py");
    for method in ["fork", "spawn", "forkserver"] {
        let json = dir.join(format!("{method}.json"));
        let run = Memtrace::run()
            .json(&json)
            .target([OsStr::new("/usr/bin/python3"), script.as_ref(), file.as_ref(), OsStr::new(method)])
            .traced();
        let t = &run.trace;
        let reported: Vec<(u32, u64)> = stdout(&run.out)
            .lines()
            .filter_map(|l| l.strip_prefix("worker "))
            .map(|l| {
                let (pid, rss) = l.split_once(' ').unwrap();
                (pid.parse().unwrap(), rss.parse().unwrap())
            })
            .collect();
        assert_eq!(reported.len(), 4, "{method}: {}", stdout(&run.out));
        let path = file.to_str().unwrap();
        let mut tree_loaded = 0;
        for (pid, smaps_rss) in &reported {
            let p = t
                .processes
                .iter()
                .find(|p| p.pid == *pid)
                .unwrap_or_else(|| panic!("{method}: worker {pid} not traced: {:?}", pids(t)));
            assert!(p.parent.is_some(), "{method}: worker {pid} has its parent");
            assert!(p.exit_code == Some(0) && p.ended_s.is_some(), "{method}: worker {pid} ended: {p:?}");
            let loaded = p.files.iter().find(|f| f.path == path).map_or(0, |f| f.measured_loaded_bytes);
            let off = loaded.abs_diff(*smaps_rss);
            assert!(off * 100 <= *smaps_rss, "{method}: worker {pid} loaded {loaded} B, its smaps said {smaps_rss} B");
            tree_loaded += loaded;
            let heap = p.heap.as_ref().expect("heap traced");
            assert!(heap.totals.allocs >= 100, "{method}: worker {pid}'s own allocations: {heap:?}");
            let kernel = p.kernel.as_ref().expect("its own fault count").minor_faults;
            let seen = p.counters.page_faults_seen;
            assert!(
                seen <= kernel && kernel - seen <= kernel / 50 + 5,
                "{method}: {pid} saw {seen} of {kernel} faults"
            );
        }
        let tree = t.files.iter().find(|f| f.path == path).expect("the file at the top level");
        assert_eq!(tree.measured_loaded_bytes, tree_loaded, "{method}: the tree's figure is the workers' sum");
        assert!(tree_loaded >= 32 << 20, "{method}: every quarter was read: {tree_loaded}");
        let root = t.processes.iter().find(|p| p.pid == t.target.pid).expect("the command itself");
        assert_eq!(root.parent, None);
        let heap = t.heap.as_ref().unwrap();
        let processes_allocs: u64 = t.processes.iter().filter_map(|p| p.heap.as_ref()).map(|h| h.totals.allocs).sum();
        assert_eq!(heap.totals.allocs, processes_allocs, "{method}: the scope's heap is the processes' sum");
    }
}

/// `--no-follow`: only the command's own process.
#[test]
fn no_follow_traces_the_command_alone() {
    let _root = require_root();
    let dir = scratch("process_tree_no_follow");
    let t = Memtrace::run()
        .arg("--no-follow")
        .json(dir.join("t.json"))
        .target(["/bin/sh", "-c", "/bin/true; /bin/true"])
        .traced()
        .trace;
    assert_eq!(pids(&t), [t.target.pid]);
    let t = Memtrace::run().json(dir.join("f.json")).target(["/bin/sh", "-c", "/bin/true; /bin/true"]).traced().trace;
    assert_eq!(t.processes.len(), 3, "sh and its two children: {:?}", pids(&t));
    assert!(
        t.processes.iter().filter(|p| p.pid != t.target.pid).all(|p| p.command == "/bin/true"),
        "{:?}",
        t.processes.iter().map(|p| &p.command).collect::<Vec<_>>()
    );
}

fn pids(t: &Trace) -> Vec<u32> {
    t.processes.iter().map(|p| p.pid).collect()
}
