//! What memtrace writes as root: mode 0600, owned by the user who ran it
//! through sudo, and never through a symlink planted at the path.
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::common::*;

/// `sudo memtrace run --json ... --chrome-trace ... --html ... --events ...`
/// as user 65534: every file is that user's, mode 0600.
#[test]
fn files_written_through_sudo_belong_to_the_user_who_ran_it() {
    let _root = require_root();
    let dir = scratch("security_owner");
    let [json, chrome, html, events] =
        ["trace.json", "trace.chrome.json", "report.html", "events.jsonl"].map(|f| dir.join(f));
    let memtrace =
        Memtrace::run().arg("--chrome-trace").arg(&chrome).arg("--events").arg(&events).json(&json).target(["true"]);
    let as_sudo = |memtrace: &Memtrace| {
        let out = run(memtrace.command().env("SUDO_UID", "65534").env("SUDO_GID", "65534"));
        assert!(out.status.success(), "{}", describe(&out));
    };
    as_sudo(&memtrace);
    as_sudo(&Memtrace::report(&json).arg("--html").arg(&html));
    for file in [&json, &chrome, &html, &events] {
        let meta = std::fs::metadata(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{}", file.display());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", file.display());
    }
}

/// A symlink at the --events path (as another user could plant in /tmp)
/// is refused in one line, and the file it points to is left as it was.
#[test]
fn a_symlink_at_an_output_path_is_never_followed() {
    let _root = require_root();
    let dir = scratch("security_symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let link = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let err = Memtrace::run().arg("--events").arg(&link).target(["true"]).one_line_error();
    assert!(err.contains("--events"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}
