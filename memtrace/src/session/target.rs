//! The traced process as the loop sees it: a spawned child (memtrace is its
//! ptrace tracer, so it stops at exit, at exec and at phase markers) or an
//! attached process (only its exit is seen, through a pidfd). One enum
//! instead of optional channels: every place that differs says so by a match.
use std::{os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};

use crate::{
    target::child::{pidfd, ChildExit, HeldChild, Hooks},
    trace::Mode,
};

/// How long the child may be held at a stop while the session reads /proc.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after forwarding a signal to a spawned child memtrace waits for it.
const CHILD_GRACE: Duration = Duration::from_secs(5);

pub use crate::target::child::ChildStop;

/// Lets the held child go on.
pub type Resume = std::sync::mpsc::SyncSender<()>;

/// A stop the session acts on: which process, what it is, when it stopped
/// (the session may take a moment to get to it), and how to let it go on.
pub struct HeldStop {
    pub pid: u32,
    pub stop: ChildStop,
    pub since: std::time::Instant,
    pub resume: Resume,
}

/// What the target did.
pub enum TargetEvent {
    Stopped(HeldStop),
    /// A traced process other than the first ended (run mode).
    Ended(u32, ChildExit),
    /// Tracing is over: run mode, every traced process has ended (the
    /// first one's exit); attach mode, the process exited.
    Exited(Option<ChildExit>),
}

/// Why tracing stopped.
#[derive(Debug)]
pub enum Stop {
    Exited(Option<ChildExit>),
    Duration(Duration),
    Signal(&'static str),
}

impl Stop {
    /// The trace's `stop_reason`.
    pub fn reason(&self) -> String {
        match self {
            Stop::Exited(_) => "target exited".into(),
            Stop::Duration(d) => format!("--duration {} s elapsed", d.as_secs_f64()),
            Stop::Signal(s) => s.to_string(),
        }
    }
}

pub enum TargetHandle {
    /// `memtrace run`: the child, its stops and its exit.
    Spawned {
        pid: u32,
        stops: mpsc::UnboundedReceiver<HeldStop>,
        ended: mpsc::UnboundedReceiver<(u32, ChildExit)>,
        exit: oneshot::Receiver<Result<ChildExit>>,
        /// Set when a signal was forwarded: tracing ends by then at the latest.
        grace: Option<tokio::time::Instant>,
        /// The child's own fault counters (/proc/PID/stat) at its exit stop:
        /// wait4's rusage adds those of the children it reaped.
        own_faults: Option<(u64, u64)>,
    },
    /// `memtrace -p PID`: readable once the process has exited.
    Attached {
        exit: AsyncFd<OwnedFd>,
        /// The kernel's fault counters (/proc/PID/stat) when tracing began,
        /// and re-read while tracing: the change up to the last reading
        /// before the target exits is what the trace shows.
        stat_faults_at_start: Option<(u64, u64)>,
        stat_faults: Option<(u64, u64)>,
    },
}

impl TargetHandle {
    /// Lets the held child exec and supervises it until it exits.
    /// Lets the held child exec and supervises it (and with `follow` the
    /// processes it forks) until it exits.
    pub fn spawned(mut child: HeldChild, follow: bool) -> Result<TargetHandle> {
        child.release()?;
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let hooks = Hooks {
            at_stop: hold_at(stop_tx),
            ended: Box::new(move |pid, exit| {
                let _ = ended_tx.send((pid, exit));
            }),
            follow,
        };
        let exit = child.supervise(hooks)?;
        Ok(TargetHandle::Spawned { pid: child.pid, stops, ended, exit, grace: None, own_faults: None })
    }

    pub fn attached(pid: u32) -> Result<TargetHandle> {
        let exit = super::readable(pidfd(pid)?).context("polling the target's pidfd")?;
        let now = crate::procfs::kernel_faults(pid);
        Ok(TargetHandle::Attached { exit, stat_faults_at_start: now, stat_faults: now })
    }

    pub fn mode(&self) -> Mode {
        match self {
            TargetHandle::Spawned { .. } => Mode::Run,
            TargetHandle::Attached { .. } => Mode::Attach,
        }
    }

    /// The next stop or the exit. A child's stops come before its exit.
    pub async fn next(&mut self) -> TargetEvent {
        match self {
            TargetHandle::Spawned { stops, ended, exit, .. } => tokio::select! {
                biased;
                Some(held) = stops.recv() => TargetEvent::Stopped(held),
                Some((pid, exit)) = ended.recv() => TargetEvent::Ended(pid, exit),
                result = exit => TargetEvent::Exited(result.ok().and_then(|r| r.ok())),
            },
            TargetHandle::Attached { exit, .. } => {
                let _ = exit.readable().await;
                TargetEvent::Exited(None)
            }
        }
    }

    /// When tracing must end without the target's exit: the grace period
    /// after a forwarded signal, else the `--duration` deadline.
    pub fn deadline(&self, duration: Option<tokio::time::Instant>) -> Option<tokio::time::Instant> {
        match self {
            TargetHandle::Spawned { grace: Some(g), .. } => Some(*g),
            _ => duration,
        }
    }

    /// A signal to memtrace. Attach mode stops at once. Run mode forwards
    /// it to the child and keeps tracing until it exits (or the grace
    /// period ends), so its last events and its exit stop are not lost.
    pub fn on_signal(&mut self, sig: i32) -> Option<Stop> {
        let name = match sig {
            libc::SIGINT => "interrupted (SIGINT)",
            libc::SIGHUP => "hung up (SIGHUP)",
            _ => "terminated (SIGTERM)",
        };
        match self {
            TargetHandle::Spawned { pid, grace: grace @ None, .. } => {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(*pid as i32, sig) };
                *grace = Some(tokio::time::Instant::now() + CHILD_GRACE);
                None
            }
            _ => Some(Stop::Signal(name)),
        }
    }

    /// What the deadline meant when it passed.
    pub fn deadline_stop(&self, duration: Option<Duration>) -> Stop {
        match (self, duration) {
            (TargetHandle::Spawned { grace: Some(_), .. }, _) | (_, None) => {
                Stop::Signal("signal (target did not exit in time)")
            }
            (_, Some(d)) => Stop::Duration(d),
        }
    }
}

/// The hook the tracer thread runs at a stop: tell the session, wait until
/// it has read what it needs (bounded), then let the process go on.
fn hold_at(to_session: mpsc::UnboundedSender<HeldStop>) -> Box<dyn FnMut(u32, ChildStop) + Send> {
    Box::new(move |pid, stop| {
        let (resume, resumed) = std::sync::mpsc::sync_channel(1);
        if to_session.send(HeldStop { pid, stop, since: std::time::Instant::now(), resume }).is_ok() {
            let _ = resumed.recv_timeout(CHILD_STOP_TIMEOUT);
        }
    })
}

impl TargetHandle {
    /// Re-reads the kernel's fault counters while the target lives (attach
    /// mode), or at the child's exit stop (run mode).
    pub fn refresh_stat_faults(&mut self, pid: u32) {
        match self {
            TargetHandle::Attached { stat_faults, .. } => {
                *stat_faults = crate::procfs::kernel_faults(pid).or(*stat_faults)
            }
            TargetHandle::Spawned { own_faults, .. } => *own_faults = crate::procfs::kernel_faults(pid),
        }
    }

    /// The kernel's count of the target's own faults over what was traced:
    /// (minor, major, where it comes from).
    pub fn own_faults(&self) -> Option<(u64, u64, &'static str)> {
        match self {
            TargetHandle::Spawned { own_faults, .. } => own_faults.map(|(minor, major)| {
                (
                    minor,
                    major,
                    "/proc/PID/stat at the exit stop: the process's own faults, its reaped children's not included",
                )
            }),
            TargetHandle::Attached { stat_faults_at_start: Some(start), stat_faults: Some(last), .. } => Some((
                last.0.saturating_sub(start.0),
                last.1.saturating_sub(start.1),
                "/proc/PID/stat: the change while traced (last read before the stop)",
            )),
            TargetHandle::Attached { .. } => None,
        }
    }
}
