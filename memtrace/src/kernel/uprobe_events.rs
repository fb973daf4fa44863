//! Uprobes that a traced process's children inherit. aya attaches a uprobe
//! through the perf `uprobe` PMU, one process at a time; a child forked
//! later is not covered until memtrace attaches again, and each of those
//! attachments costs the kernel an unregistration (~90 ms here) when the
//! child ends. A uprobe made as a tracefs event (`uprobe_events`) and
//! opened with perf's `inherit` bit is copied by the kernel into every
//! thread and process the opened one creates, at the fork itself: the
//! children of a traced process run the probes from their first
//! instruction and cost nothing to detach (their copies go with them).
//! (The PMU form cannot be inherited: the kernel re-reads the path from
//! the opener's memory, which is not the forking process's.)
//!
//! Each probe is its own tracefs event in a group named after memtrace's
//! PID, removed when the probe is dropped. Killed with SIGKILL, memtrace
//! cannot remove them (its perf events and programs go with its file
//! descriptors, so no probe keeps firing; only the definitions stay): a
//! helper process it starts waits for it to be gone and removes them; the
//! groups of memtraces that died without it are removed at the next start.
use std::{
    fs::OpenOptions,
    io::Write,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The tracefs group of this memtrace's probes.
fn group_of(pid: u32) -> String {
    format!("memtrace_{pid}")
}

/// One inherited uprobe: the tracefs event, the perf event on the process
/// it was opened for, and the BPF link between them. Dropping it closes the
/// link and the event and removes the tracefs event.
pub struct InheritedUprobe {
    link: Option<OwnedFd>,
    /// The event the program is linked to (not inherited), and those the
    /// children of each thread inherit (no program of their own: see `attach`).
    perf: Option<OwnedFd>,
    inherited: Vec<OwnedFd>,
    uprobe_events: PathBuf,
    /// "GROUP/NAME".
    event: String,
}

impl Drop for InheritedUprobe {
    fn drop(&mut self) {
        drop(self.link.take());
        drop(self.perf.take());
        self.inherited.clear();
        // Busy only while a perf event is open on it (a process that
        // inherited it still runs): then it stays until the next start.
        let _ = append(&self.uprobe_events, &format!("-:{}", self.event));
    }
}

/// Where probe events are defined, and the next event's number.
pub struct UprobeEvents {
    tracefs: PathBuf,
    group: String,
    next: u64,
    /// Children inherit the probes (the scope follows forks).
    pub inherit: bool,
    /// The helper that removes what is left once memtrace is gone (its
    /// stdin is our pipe: it reads EOF when we exit, however we exit).
    remover: Option<std::process::Child>,
}

impl Drop for UprobeEvents {
    fn drop(&mut self) {
        // Not waited for: the detacher (kernel::detacher) holds the pipe
        // too, and the helper's removals can only succeed once the
        // detacher's copies of the perf events are closed.
        if let Some(mut helper) = self.remover.take() {
            drop(helper.stdin.take());
        }
    }
}

/// The helper's work (`memtrace __remove-uprobe-events GROUP`): wait for
/// EOF on stdin (memtrace gone), then remove GROUP's events, retrying while
/// one is still busy (a perf event closing), for a minute at most.
pub fn remove_when_orphaned(group: &str) {
    // Ctrl-C or a hangup reaches the whole process group: outlive them.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal's disposition to ignore.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    let Ok(tracefs) = super::tracefs::ensure_mounted() else { return };
    let path = tracefs.join("uprobe_events");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.split_once(':').map(|(_, e)| e.to_string()))
            .filter(|e| e.split('/').next() == Some(group))
            .collect();
        let removed = left.iter().filter(|e| append(&path, &format!("-:{e}")).is_ok()).count();
        if removed == left.len() || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl UprobeEvents {
    /// Removes the groups of memtraces no longer running.
    pub fn new(tracefs: &Path, inherit: bool) -> Result<UprobeEvents> {
        let path = tracefs.join("uprobe_events");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (the kernel needs CONFIG_UPROBE_EVENTS)", path.display()))?;
        for line in text.lines() {
            // "p:memtrace_123/e4 /usr/lib/libc.so.6:0x0000000000098760"
            let Some(event) = line.split_whitespace().next().and_then(|e| e.split_once(':')).map(|(_, e)| e) else {
                continue;
            };
            let Some(pid) = event.strip_prefix("memtrace_").and_then(|r| r.split('/').next()) else { continue };
            if pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = append(&path, &format!("-:{event}"));
            }
        }
        let group = group_of(std::process::id());
        let remover = std::process::Command::new("/proc/self/exe")
            .args(["__remove-uprobe-events", &group])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        Ok(UprobeEvents { tracefs: tracefs.to_path_buf(), group, next: 0, inherit, remover })
    }

    /// A uprobe (or, with `ret`, a uretprobe) at file offset `offset` of
    /// `file`, running `program` (a loaded kprobe-type program) in the
    /// process of `threads` (its main thread first) and, when inheriting,
    /// everything they create from now on, with `cookie`.
    pub fn attach(
        &mut self,
        program: BorrowedFd,
        file: &Path,
        offset: u64,
        ret: bool,
        threads: &[u32],
        cookie: u64,
    ) -> Result<InheritedUprobe> {
        let tid = *threads.first().context("no thread to probe")?;
        self.next += 1;
        let name = format!("e{}", self.next);
        let event = format!("{}/{name}", self.group);
        // The definition is split at white space: a path with any goes in
        // as this process's open file descriptor of it.
        let opened;
        let target = if file.to_string_lossy().contains(|c: char| c.is_whitespace() || c == ':') {
            opened = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()))
        } else {
            file.to_path_buf()
        };
        let uprobe_events = self.tracefs.join("uprobe_events");
        let kind = if ret { 'r' } else { 'p' };
        append(&uprobe_events, &format!("{kind}:{event} {}:{offset:#x}", target.display()))
            .with_context(|| format!("defining a uprobe at {}+{offset:#x}", file.display()))?;
        // From here on, dropping the probe removes the event.
        let mut probe = InheritedUprobe { link: None, perf: None, inherited: Vec::new(), uprobe_events, event };
        let id_path = self.tracefs.join("events").join(&self.group).join(&name).join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .with_context(|| format!("reading {}", id_path.display()))?
            .trim()
            .parse()
            .context("a tracefs event id")?;
        // The program runs for every process the event's filter admits,
        // from the tracefs event's one list of programs. It is linked to an
        // event of its own: an inherited copy of a linked event carries the
        // program too, and when that copy goes (a thread or child exits)
        // the kernel takes the program off the list for everyone. The
        // inherited event has no program; its copies only admit the
        // threads and children into the filter.
        let perf =
            perf_event_open(id, tid, false).with_context(|| format!("opening the probe's perf event for {tid}"))?;
        let link = bpf_link_create(program, perf.as_raw_fd(), cookie).context("linking the probe's program")?;
        probe.perf = Some(perf);
        probe.link = Some(link);
        if self.inherit {
            for &thread in threads {
                match perf_event_open(id, thread, true) {
                    Ok(fd) => probe.inherited.push(fd),
                    // It ended meanwhile: nothing of it to follow.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e).with_context(|| format!("opening an inherited perf event for {thread}")),
                }
            }
        }
        Ok(probe)
    }
}

/// A software "dummy" perf event on process `pid` (counts nothing, never
/// inherited). Why: perf marks a child's event context as a clone of its
/// parent's when every event in the parent's is inherited, and swaps the
/// contexts of two such clones at a context switch; the uprobe filter goes
/// by each event's target task, so after a swap a sibling's exit frees the
/// events standing for the other sibling and the kernel takes the probes
/// out of that one's memory (measured: `sh -c "A & B"` and forkserver
/// workers lost their last allocations in one run in three). An event that
/// is not inherited makes the context its own: one per traced process.
pub fn own_context(pid: u32) -> std::io::Result<OwnedFd> {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_DUMMY,
        ..PerfEventAttr::default()
    };
    open_event(&attr, pid)
}

/// Writes one line to a tracefs control file (each write is one command).
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// `struct perf_event_attr` up to `config2` and the fields after it that
/// this kernel interface checks (PERF_ATTR_SIZE_VER5 = 112 bytes; the rest
/// are zero).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `perf_event_attr` flag bits: inherited by the threads and processes the
/// task creates.
const ATTR_INHERIT: u64 = 1 << 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// A perf event on tracefs event `id` for thread `tid` on any CPU,
/// inherited by what it creates or not.
fn perf_event_open(id: u64, tid: u32, inherit: bool) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        flags: if inherit { ATTR_INHERIT } else { 0 },
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    open_event(&attr, tid)
}

/// perf_event_open(2) of `attr` on task `pid`, any CPU, no group.
fn open_event(attr: &PerfEventAttr, pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: perf_event_open(2) with a valid attribute; the fd is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `union bpf_attr` for BPF_LINK_CREATE on a perf event.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    bpf_cookie: u64,
    _rest: [u64; 4],
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;

/// Links `program` to perf event `perf`, with the cookie its runs read.
fn bpf_link_create(program: BorrowedFd, perf: i32, cookie: u64) -> Result<OwnedFd> {
    let attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: perf as u32,
        attach_type: BPF_PERF_EVENT,
        bpf_cookie: cookie,
        ..LinkCreateAttr::default()
    };
    // SAFETY: bpf(2) BPF_LINK_CREATE with an attribute of the stated size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>() as u32,
        )
    };
    if fd < 0 {
        bail!("bpf(BPF_LINK_CREATE): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_perf_attribute_has_the_kernels_version_5_size() {
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
    }
}
