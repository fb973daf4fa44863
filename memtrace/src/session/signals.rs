//! SIGINT, SIGTERM and SIGHUP, caught from memtrace's start (before the
//! command line is acted on): one arriving at any moment stops the trace
//! instead of killing memtrace mid-way. During attach it is kept until the
//! loop starts, which then stops at once; while the report and the files
//! are written nobody reads it, so they are finished whole first.
//!
//! One mechanism for the whole life: a handler that writes the signal's
//! number to a pipe (write(2) is async-signal-safe), which the session
//! loop polls. Handlers do not survive an exec, so the traced command
//! starts with the default dispositions.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicI32, Ordering},
};

use tokio::io::unix::AsyncFd;

/// The signals that stop a trace.
const STOPPING: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The pipe's write end, for the handler.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn record(signal: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) of one byte from the stack; non-blocking pipe
        // (a storm of signals past its 64 KiB drops the extras).
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// The caught signals, not yet read.
pub struct Caught {
    read_end: OwnedFd,
}

/// Installs the handlers (once, at memtrace's start).
pub fn catch() -> io::Result<Caught> {
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both ends were just opened and are owned here.
    let read_end = unsafe { OwnedFd::from_raw_fd(pipe[0]) };
    WRITE_END.store(pipe[1], Ordering::Relaxed);
    for signal in STOPPING {
        // SAFETY: a zeroed sigaction with a plain handler and SA_RESTART
        // (interrupted reads and writes go on).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(Caught { read_end })
}

/// The session's side: the next caught signal.
pub struct Signals {
    pipe: AsyncFd<OwnedFd>,
}

impl Signals {
    pub fn new(caught: Caught) -> io::Result<Signals> {
        Ok(Signals { pipe: super::readable(caught.read_end)? })
    }

    /// The next one, as its number (one that arrived before the loop
    /// started is returned at once).
    pub async fn recv(&mut self) -> i32 {
        loop {
            let Ok(mut guard) = self.pipe.readable().await else {
                return std::future::pending().await;
            };
            let mut byte = 0u8;
            // SAFETY: a one-byte read into the stack from our non-blocking pipe.
            let n = unsafe { libc::read(guard.get_inner().as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            if n == 1 {
                return i32::from(byte);
            }
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_caught_before_anyone_listens_is_read_later_and_memtrace_lives() {
        let caught = catch().unwrap();
        // SAFETY: raise(3) of a signal whose handler was just installed.
        unsafe { libc::raise(libc::SIGHUP) };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = runtime.block_on(async {
            let mut signals = Signals::new(caught).unwrap();
            signals.recv().await
        });
        assert_eq!(got, libc::SIGHUP);
    }
}
