//! `memtrace report --html`: the page renders in headless Chromium (Debian's
//! `chromium`, installed by `cargo xtask setup`) without script errors and
//! shows the timeline's series, the files table and the leak flame graph.
use std::{path::Path, process::Command};

use crate::common::*;

/// The <body ...> start tag of the page after its scripts ran.
fn rendered_body(html: &Path, profile: &Path) -> String {
    let out = run(Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", html.display())));
    assert!(out.status.success(), "chromium (`cargo xtask setup` installs it): {}", describe(&out));
    let dom = stdout(&out);
    let start = dom.find("<body").expect("a body");
    dom[start..start + dom[start..].find('>').unwrap() + 1].to_string()
}

#[test]
fn the_html_report_renders_its_charts_without_script_errors() {
    let _root = require_root();
    let dir = scratch("html_report");
    let workload = Workload::in_dir(&dir).size_mib(32).touch(0.5).heap_mib(16).leak(100);
    workload.traced(["--interval", "20ms"]);
    let html = dir.join("report.html");
    Memtrace::report(&workload.trace_path()).arg("--html").arg(&html).succeeds();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script src") && !page.contains("<link"), "self-contained");
    // The anonymous-memory table's data: the workload's heap among the origins.
    assert!(page.contains("\"origin\":\"malloc heap"), "anonymous origins in the page's trace");

    let body = rendered_body(&html, &dir.join("chromium-profile"));
    assert!(!body.contains("data-error"), "script error: {body}");
    assert!(body.contains(r#"data-rendered="timeline,files,anon,flame""#), "{body}");
    for series in ["RSS file (kernel truth)", "RSS anon (kernel truth)", "heap live (measured)", "leak flame graph"] {
        assert!(body.contains(series), "{series} in {body}");
    }
}
