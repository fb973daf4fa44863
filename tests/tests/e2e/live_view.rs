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
    let out = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("memtrace live: 1.0 s") && text.contains("memtrace live: 2.0 s"), "{text:?}");
    let erase_then_report = text.find("\x1b[J").zip(text.rfind("memtrace report:"));
    assert!(erase_then_report.is_some_and(|(erase, report)| erase < report), "{text:?}");
    assert!(text.matches("\x1b[J").count() >= 2, "redrawn, then erased: {text:?}");
}
