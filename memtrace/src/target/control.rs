//! `memtrace mark`: phases marked from outside the target, through a Unix
//! socket the tracing memtrace owns, `/run/memtrace/PID.sock`. Only root
//! gets in: the directory is mode 0700, the socket 0600, and each peer's
//! credentials are checked (uid 0) before a line is read.
//!
//! The protocol is one line per mark, so a shell or Python program can
//! write it directly: `begin NAME` or `end NAME`; the reply is `ok` or
//! `error: WHY`.
use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::AsRawFd,
        unix::{
            fs::{DirBuilderExt, PermissionsExt},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc::UnboundedSender;

pub const DIR: &str = "/run/memtrace";

/// A mark received from a client, stamped on arrival (CLOCK_MONOTONIC, the
/// clock of the eBPF timestamps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub begin: bool,
    pub name: String,
    pub ts_ns: u64,
}

pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.sock"))
}

/// `begin NAME` or `end NAME`.
pub fn parse_line(line: &str) -> Result<(bool, String), String> {
    let (verb, name) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let begin = match verb {
        "begin" => true,
        "end" => false,
        _ => return Err(format!("expected `begin NAME` or `end NAME`, got `{}`", line.trim())),
    };
    let name = name.trim();
    if name.is_empty() || name.len() >= memtrace_common::PHASE_NAME_MAX || name.contains('/') {
        return Err(format!("a phase name is 1 to {} bytes, without `/`", memtrace_common::PHASE_NAME_MAX - 1));
    }
    Ok((begin, name.to_string()))
}

/// The listening socket; removed when dropped.
pub struct ControlSocket {
    pub path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Listens on `DIR/PID.sock`; marks go to `marks`. `now` stamps them.
    pub fn open(dir: &Path, pid: u32, marks: UnboundedSender<Mark>, now: fn() -> u64) -> Result<ControlSocket> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = socket_path(dir, pid);
        if UnixStream::connect(&path).is_ok() {
            bail!("{} is in use: another memtrace traces PID {pid}", path.display());
        }
        let _ = std::fs::remove_file(&path); // left by a memtrace that died
        let listener = UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::thread::Builder::new().name("memtrace-control".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                let marks = marks.clone();
                // One thread per client: a slow client cannot hold up others.
                let _ = std::thread::Builder::new().spawn(move || serve(stream, &marks, now));
            }
        })?;
        Ok(ControlSocket { path })
    }
}

/// The uid of the process at the other end.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the size given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve(stream: UnixStream, marks: &UnboundedSender<Mark>, now: fn() -> u64) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    if peer_uid(&stream) != Some(0) {
        let _ = writeln!(out, "error: only root may mark phases");
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let ts_ns = now();
        let reply = match parse_line(&line) {
            Ok((begin, name)) => match marks.send(Mark { begin, name, ts_ns }) {
                Ok(()) => "ok".to_string(),
                Err(_) => "error: tracing has stopped".to_string(),
            },
            Err(e) => format!("error: {e}"),
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// `memtrace mark`: sends one mark to the memtrace tracing `pid` (or the
/// only one running).
pub fn send(dir: &Path, pid: Option<u32>, begin: bool, name: &str) -> Result<u32> {
    parse_line(&format!("begin {name}")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pid = match pid {
        Some(p) => p,
        None => only_session(dir)?,
    };
    let path = socket_path(dir, pid);
    let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("cannot connect to {}: permission denied; marking phases needs root (sudo)", path.display())
        }
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::anyhow!("no memtrace is tracing PID {pid} ({} does not answer)", path.display())
        }
        _ => anyhow::anyhow!("cannot connect to {}: {e}", path.display()),
    })?;
    let mut out = stream.try_clone()?;
    writeln!(out, "{} {name}", if begin { "begin" } else { "end" })?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    match reply.trim() {
        "ok" => Ok(pid),
        other => bail!("memtrace (PID {pid}) refused the mark: {}", other.trim_start_matches("error: ")),
    }
}

/// The PID of the only session with a socket in `dir`.
fn only_session(dir: &Path) -> Result<u32> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("cannot read {}: permission denied; marking phases needs root (sudo)", dir.display())
        }
        Err(_) => bail!("no memtrace is tracing (no {} directory)", dir.display()),
    };
    let pids: Vec<u32> =
        entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".sock")?.parse().ok()).collect();
    match pids.as_slice() {
        [pid] => Ok(*pid),
        [] => bail!("no memtrace is tracing (no socket in {})", dir.display()),
        many => bail!(
            "several memtrace sessions are tracing (PIDs {}): give -p PID",
            many.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_begin_or_end_with_a_name() {
        assert_eq!(parse_line("begin load index\n"), Ok((true, "load index".into())));
        assert_eq!(parse_line("end search"), Ok((false, "search".into())));
        assert!(parse_line("start x").is_err());
        assert!(parse_line("begin").is_err());
        assert!(parse_line("begin a/b").is_err(), "`/` separates nested phases");
        assert!(parse_line(&format!("begin {}", "x".repeat(40))).is_err());
    }

    #[test]
    fn marks_travel_from_client_to_session_and_the_socket_goes_away() {
        let dir = std::env::temp_dir().join(format!("memtrace-control-{}", std::process::id()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = ControlSocket::open(&dir, 4242, tx, || 7).unwrap();
        let mode = std::fs::metadata(&socket.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "only its owner (root) may even look in the directory");
        // `cargo xtask test` runs as root, and under CI=true this part must
        // run (a non-root CI fails here); a developer's plain `cargo test`
        // as another user gets the refusal the end-to-end test covers.
        if unsafe { libc::geteuid() } == 0 || std::env::var_os("CI").is_some() {
            assert_eq!(send(&dir, None, true, "warmup").unwrap(), 4242);
            assert_eq!(rx.try_recv().unwrap(), Mark { begin: true, name: "warmup".into(), ts_ns: 7 });
            let e = send(&dir, Some(4242), false, "").unwrap_err();
            assert!(format!("{e:#}").contains("1 to 39 bytes"), "{e:#}");
        }
        assert!(ControlSocket::open(&dir, 4242, tokio::sync::mpsc::unbounded_channel().0, || 0).is_err());
        drop(socket);
        let e = send(&dir, None, true, "x").unwrap_err();
        assert!(format!("{e:#}").contains("no memtrace is tracing"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
