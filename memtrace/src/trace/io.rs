//! Traces on disk: written whole or not at all (temporary file, mode 0600,
//! renamed into place), and read back with a one-line cause for each way a
//! file can fail to be a trace.
use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, Result};

use super::{Trace, FORMAT, VERSION};

/// Writes the trace to `path` atomically (temp file + rename), mode 0600.
pub fn write_json(path: &Path, trace: &Trace) -> Result<()> {
    write_atomically("--json", path, |file| {
        serde_json::to_writer_pretty(&mut *file, trace)?;
        Ok(file.write_all(b"\n")?)
    })
}

/// Writes an output file (given as `flag`) whole or not at all: into a
/// temporary file beside it, mode 0600, then renamed into place.
pub fn write_atomically(
    flag: &str,
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{flag} {}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("{flag}: cannot create {}", tmp.display()))?;
        give_to_invoking_user(&file);
        // Buffered: serde writes a trace a few bytes at a time (a 41-process
        // tree's trace took 2 s of write calls unbuffered).
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The user who ran `sudo memtrace ...` (SUDO_UID, SUDO_GID), when memtrace
/// runs as root through sudo: the owner of the files it writes.
pub fn invoking_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |var| std::env::var(var).ok()?.parse::<u32>().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

/// Makes a file memtrace created (mode 0600) the invoking user's under sudo,
/// so who asked for it can read it. Best effort: a failure leaves it root's.
pub fn give_to_invoking_user(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    if let Some((uid, gid)) = invoking_user() {
        // SAFETY: fchown on a file descriptor we own.
        unsafe { libc::fchown(file.as_raw_fd(), uid, gid) };
    }
}

/// Checks before tracing that the output file `path`, given as `flag`, can
/// be created, so a long run does not end with nowhere to put its result.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        anyhow::bail!("{flag} {}: directory {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        anyhow::bail!("{flag} {}: is a directory; give a file name", path.display());
    }
    Ok(())
}

/// Reads a saved trace back. Each way a file can fail to be a trace gets its
/// own one-line cause: unreadable, not JSON (with line and column; "ends
/// early" for a truncated file), another format, a newer version, or a
/// field missing or of the wrong type.
pub fn read_json(path: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_json(text.as_bytes(), &path.display().to_string())
}

/// Parses a saved trace from its bytes, with the causes of [`read_json`];
/// `name` stands for the file in them. Bytes that are not UTF-8 are "not
/// JSON" (read_json's own reading refuses them first).
pub fn parse_json(bytes: &[u8], name: &str) -> Result<Trace> {
    let shown = name;
    let text = std::str::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{shown} is not JSON: not UTF-8 text at byte {}", e.valid_up_to()))?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Eof => anyhow::anyhow!(
            "{shown} ends early at line {} column {}: the trace is truncated (was memtrace stopped while writing it?)",
            e.line(),
            e.column()
        ),
        _ => anyhow::anyhow!("{shown} is not JSON: {e}"),
    })?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => anyhow::bail!("{shown} is a `{other}` file, not a memtrace trace (format `{FORMAT}`)"),
        None => anyhow::bail!("{shown} is not a memtrace trace: it has no \"format\": \"{FORMAT}\" field"),
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v <= VERSION as u64 => {}
        Some(v) => anyhow::bail!(
            "{shown} is trace version {v}, written by a newer memtrace; this one reads version {VERSION}: upgrade memtrace"
        ),
        None => anyhow::bail!("{shown} is not a memtrace trace: \"version\" is missing or not a number"),
    }
    // Parse again from the text, not the Value: serde_json then names the
    // line and column of a missing or mistyped field.
    serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{shown} is a damaged memtrace trace: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::trace::tests::sample;

    #[test]
    fn writes_whole_files_with_mode_0600_and_reads_them_back() {
        let dir = std::env::temp_dir().join(format!("memtrace-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        write_json(&path, &sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_json(&path).unwrap(), sample());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_a_damaged_trace_names_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("memtrace-trace-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        let good = serde_json::to_string_pretty(&sample()).unwrap();
        let error = |text: &str| {
            std::fs::write(&path, text).unwrap();
            format!("{:#}", read_json(&path).unwrap_err())
        };
        assert!(error(&good[..good.len() / 2]).contains("ends early at line"), "truncated");
        assert!(error("{ nope").contains("is not JSON"));
        assert!(error(r#"{"format": "chrome-trace"}"#).contains("is a `chrome-trace` file"));
        assert!(error(r#"{"traceEvents": []}"#).contains("no \"format\""));
        assert!(error(&good.replace("\"version\": 1", "\"version\": 9")).contains("upgrade memtrace"));
        let e = error(&good.replace("\"duration_s\": 1.5", "\"duration_s\": \"long\""));
        assert!(e.contains("damaged memtrace trace") && e.contains("line"), "{e}");
        let e = error(&good.replace("\"stop_reason\"", "\"stop_reasn\""));
        assert!(e.contains("missing field `stop_reason`"), "{e}");
        assert!(format!("{:#}", read_json(&dir.join("absent.json")).unwrap_err()).contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_paths_it_could_not_write() {
        assert!(check_writable("--json", Path::new("/nonexistent-dir/t.json")).is_err());
        assert!(check_writable("--json", Path::new("/tmp")).is_err());
        assert!(check_writable("--json", Path::new("t.json")).is_ok());
    }
}
