//! Detaching in the background. The kernel unregisters each uprobe and
//! syscall tracepoint in tens of milliseconds (an RCU grace period each),
//! and it does that work when the last reference to a link's file goes.
//! A process holding the only references pays it at its exit, before its
//! parent (the user's shell) gets the prompt back: about 2 s for a run.
//!
//! So at the end of a trace memtrace forks a child that shares every file
//! descriptor and does nothing but wait for memtrace to exit; memtrace's
//! own closes then drop references and return at once, and the kernel's
//! work happens when the child exits after it, in the background. Nothing
//! stays in the kernel: the child lives only until memtrace has exited,
//! and a kill of the child does the same detaching.
use std::io;

/// Forks the child. It runs no Rust code that could take a lock another
/// thread held at the fork (allocation, stdio): only async-signal-safe
/// calls (close, sigaction, prctl, read, _exit).
pub fn hand_over() -> io::Result<()> {
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = pipe;
    // SAFETY: fork; the child below only makes async-signal-safe calls.
    match unsafe { libc::fork() } {
        -1 => {
            let err = io::Error::last_os_error();
            // SAFETY: closing the pipe this function opened.
            unsafe { (libc::close(read_end), libc::close(write_end)) };
            Err(err)
        }
        0 => {
            // SAFETY: async-signal-safe calls only, then _exit.
            unsafe {
                libc::close(write_end);
                // Not the user's terminal or pipe: a reader of memtrace's
                // output sees its end when memtrace exits.
                for fd in 0..=2 {
                    libc::close(fd);
                }
                // Ctrl-C or a hangup reaches the whole process group: dying
                // early would only move the work back to memtrace's exit.
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                    libc::signal(signal, libc::SIG_IGN);
                }
                libc::prctl(libc::PR_SET_NAME, c"memtrace-detach".as_ptr() as libc::c_ulong, 0, 0, 0);
                // EOF once memtrace (the only other holder of the write end) exited.
                let mut byte = 0u8;
                while libc::read(read_end, (&mut byte as *mut u8).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                libc::_exit(0)
            }
        }
        _ => {
            // The write end stays open until memtrace exits.
            // SAFETY: closing this side's copy of the read end.
            unsafe { libc::close(read_end) };
            Ok(())
        }
    }
}
