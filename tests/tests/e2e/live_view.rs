//! The live view: one plain line a second on stderr when it is not a
//! terminal, a redrawn block on a terminal, nothing with --quiet; stdout
//! keeps only the report.
use std::process::Command;

use crate::common::*;

fn live_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("memtrace: ") && l.contains(" s  phase ")).collect()
}

#[test]
fn plain_lines_without_a_terminal_and_none_with_quiet() {
    let _root = require_root();
    let out = Memtrace::run().target(["sleep", "2.5"]).succeeds();
    let err = stderr(&out);
    let lines = live_lines(&err);
    assert!(lines.len() >= 2, "one a second: {err}");
    assert!(lines[0].starts_with("memtrace: 1.0 s  phase -  RSS (rss_stat) file "), "{}", lines[0]);
    assert!(lines.iter().all(|l| l.contains("drops 0") && !l.contains('\x1b')), "{err}");
    let report = stdout(&out);
    assert!(report.starts_with("memtrace report:") && live_lines(&report).is_empty(), "{report}");

    let quiet = Memtrace::run().arg("--quiet").target(["sleep", "1.5"]).succeeds();
    assert!(live_lines(&stderr(&quiet)).is_empty(), "{}", describe(&quiet));
}

#[test]
fn on_a_terminal_the_view_redraws_in_place_and_is_erased_before_the_report() {
    let _root = require_root();
    // script(1) (util-linux) gives memtrace a pseudo-terminal.
    let cmd = Memtrace::run().target(["sleep", "2.5"]).shell_line();
    let out = run(without_sudo(Command::new("script").args(["-qec", &cmd, "/dev/null"])));
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("memtrace live: 1.0 s") && text.contains("memtrace live: 2.0 s"), "{text:?}");
    let erase_then_report = text.find("\x1b[J").zip(text.rfind("memtrace report:"));
    assert!(erase_then_report.is_some_and(|(erase, report)| erase < report), "{text:?}");
    assert!(text.matches("\x1b[J").count() >= 2, "redrawn, then erased: {text:?}");
}

/// Under load (the workload's build phase faulting ~100,000 pages a second
/// for several seconds), each live line's faults/s agrees with the
/// timeline of the same run: the faults the kernel counted in that second.
#[test]
fn under_load_the_live_faults_per_second_agree_with_the_timeline() {
    let _root = require_root();
    let dir = scratch("live_view_load");
    // A build phase of several seconds on a fast machine too (about 3 s at 1 GiB/s of faults).
    let out = Workload::in_dir(&dir).size_mib(16).heap_mib(3000).traced(Vec::<&str>::new());
    let err = stderr(&out.out);
    let timeline = &out.trace.timeline.samples;
    let rate = |line: &str| -> (f64, u64) {
        let t: f64 = line["memtrace: ".len()..].split(" s ").next().unwrap().parse().unwrap();
        let after = line.split("faults/s (measured) ").nth(1).unwrap();
        (t, after.split_whitespace().next().unwrap().replace(',', "").parse().unwrap())
    };
    let mut compared = 0;
    for line in live_lines(&err).into_iter().filter(|l| l.contains("phase build")) {
        let (t, live) = rate(line);
        // The timeline's faults in the second before the live line.
        let second: u64 = timeline
            .iter()
            .filter(|s| s.t_s > t - 1.0 && s.t_s <= t)
            .map(|s| s.minor_faults.unwrap_or(0) + s.major_faults.unwrap_or(0))
            .sum();
        if second < 10_000 {
            continue; // the phase began or ended within this second
        }
        compared += 1;
        let ratio = live as f64 / second as f64;
        assert!((0.6..1.6).contains(&ratio), "at {t} s: live {live} faults/s, timeline {second}: {line}");
    }
    assert!(compared >= 2, "at least two loaded seconds to compare: {err}");
}
