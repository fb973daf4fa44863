//! The traced process: a command spawned and held until the probes are in
//! place, or a running process found by PID.
use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
};

use std::{collections::HashSet, ptr};

use anyhow::{bail, Context, Result};
use tokio::sync::oneshot;

/// Exit of a spawned child, with the kernel's own accounting of it.
#[derive(Clone, Copy, Debug)]
pub struct ChildExit {
    /// Exit code, or 128 + signal number when it was killed.
    pub code: i32,
    pub signal: Option<i32>,
    pub minflt: u64,
    pub majflt: u64,
}

/// Resolves a command like a shell does: a name with a slash is a path,
/// otherwise the first executable match in $PATH.
pub fn resolve_command(name: &str) -> Result<PathBuf> {
    let executable =
        |p: &Path| p.is_file() && p.metadata().map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if name.contains('/') {
        let p = PathBuf::from(name);
        if !p.exists() {
            bail!("command not found: {name} (no such file)");
        }
        if !executable(&p) {
            bail!("cannot execute {name}: not an executable file");
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .with_context(|| format!("command not found: {name} (not in PATH)"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds are fresh and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A forked child blocked before `execve` until `release` is called, so the
/// probes see its very first instruction. Dropping it unreleased kills it.
///
/// Spawn it while memtrace is single-threaded: until exec, the child holds a
/// copy of every fd, including other threads' pipe ends, which could keep
/// their readers from ever seeing EOF.
pub struct HeldChild {
    pub pid: u32,
    pub command: String,
    /// The executable it will run (resolved from PATH).
    pub program: PathBuf,
    /// Who it runs as, when not as memtrace's own user.
    pub user: Option<super::user::User>,
    /// The phase-marker library named to it (MEMTRACE_MARKER_LIB), probed
    /// before it starts.
    pub marker_library: Option<PathBuf>,
    /// What went wrong while preparing it, for the trace's warnings.
    pub warnings: Vec<String>,
    go: Option<OwnedFd>,
    exec_error: OwnedFd,
    /// The thread that forked the child is its ptrace tracer (only the
    /// tracing thread may ptrace it): it waits here for `supervise`.
    supervisor: Option<std::sync::mpsc::Sender<Supervision>>,
    supervisor_thread: Option<std::thread::JoinHandle<()>>,
}

/// A ptrace stop of a traced process that memtrace acts on before the
/// process may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStop {
    /// At its exit, memory still mapped.
    Exit,
    /// Held by memtrace's eBPF (a SIGSTOP it sent, then suppressed): at a
    /// phase marker (`--phase-truth`), or after mapping a file's code (its
    /// unwind table is loaded first).
    Held,
    /// After an execve: the new image is loaded and has not run yet.
    Exec,
    /// A child of a traced process (fork, vfork), before its first
    /// instruction: its probes go in first.
    Forked,
}

/// What the tracer thread reports, on that thread, as it happens. A stop's
/// call returns when the process may go on.
pub struct Hooks {
    pub at_stop: Box<dyn FnMut(u32, ChildStop) + Send>,
    /// A traced process other than the first one ended.
    pub ended: Box<dyn FnMut(u32, ChildExit) + Send>,
    /// Follow fork and vfork children (ptrace's fork options).
    pub follow: bool,
}

impl Hooks {
    pub fn none() -> Hooks {
        Hooks { at_stop: Box::new(|_, _| {}), ended: Box::new(|_, _| {}), follow: false }
    }
}

type Supervision = (Hooks, oneshot::Sender<Result<ChildExit>>);

/// How the command starts: its words, the variables its environment gains
/// (or has replaced), and the user it runs as (None: memtrace's own).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub user: Option<super::user::User>,
}

impl Launch {
    pub fn command(argv: &[String]) -> Launch {
        Launch { argv: argv.to_vec(), ..Launch::default() }
    }

    /// The child's environment: memtrace's, with `env` and the user's own
    /// variables in place of those it had.
    fn environment(&self) -> Result<Vec<CString>> {
        let mut set: Vec<(String, String)> = self.user.iter().flat_map(|u| u.environment()).collect();
        set.extend(self.env.iter().cloned());
        let kept = std::env::vars_os().filter(|(k, _)| !set.iter().any(|(name, _)| k.as_bytes() == name.as_bytes()));
        let mut out = Vec::new();
        for (k, v) in kept {
            out.push(CString::new([k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        for (k, v) in set {
            out.push(CString::new(format!("{k}={v}")).context("environment variable contains a NUL byte")?);
        }
        Ok(out)
    }
}

/// The child's copies of the two pipes' ends (raw: it only closes, reads
/// and writes them).
#[derive(Clone, Copy)]
struct ChildPipes {
    go_read: i32,
    go_write: i32,
    err_read: i32,
    err_write: i32,
}

/// What the child failed at before its program ran (sent with the errno).
const FAILED_EXEC: i32 = 0;
const FAILED_SETGROUPS: i32 = 1;
const FAILED_SETGID: i32 = 2;
const FAILED_SETUID: i32 = 3;

/// The credentials the child takes before exec, prepared before the fork.
#[derive(Clone, Copy)]
struct Credentials<'a> {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: &'a [libc::gid_t],
}

impl HeldChild {
    pub fn spawn(launch: &Launch) -> Result<HeldChild> {
        let argv = &launch.argv;
        let program = resolve_command(&argv[0])?;
        let c_program = CString::new(program.as_os_str().as_bytes()).context("command contains a NUL byte")?;
        let c_args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("argument contains a NUL byte")?;
        let c_env = launch.environment()?;
        let user = launch.user.clone();
        let (go_read, go_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        let (go_write_fd, err_read_fd) = (go_write.as_raw_fd(), err_read.as_raw_fd());
        let (pid_tx, pid_rx) = std::sync::mpsc::channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Supervision>();
        let thread = std::thread::spawn(move || {
            let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
            c_argv.push(ptr::null());
            let mut c_envp: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
            c_envp.push(ptr::null());
            let credentials =
                user.as_ref().map(|u| Credentials { uid: u.uid, gid: u.gid, groups: u.groups.as_slice() });
            // SAFETY: the child only calls async-signal-safe functions (close,
            // read, ptrace, setgroups, setgid, setuid, execve, write, _exit)
            // on memory prepared before the fork.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe {
                    held_child(
                        ChildPipes {
                            go_read: go_read.as_raw_fd(),
                            go_write: go_write_fd,
                            err_read: err_read_fd,
                            err_write: err_write.as_raw_fd(),
                        },
                        &c_program,
                        &c_argv,
                        &c_envp,
                        credentials,
                    )
                }
            }
            drop((go_read, err_write));
            let _ = pid_tx.send(if pid < 0 { Err(std::io::Error::last_os_error()) } else { Ok(pid as u32) });
            if pid < 0 {
                return;
            }
            match cmd_rx.recv() {
                Ok((hooks, result)) => {
                    let _ = result.send(supervise(pid as u32, hooks));
                }
                // Never supervised (memtrace gave up before releasing it): reap it.
                Err(_) => {
                    let _ = supervise(pid as u32, Hooks::none());
                }
            }
        });
        let pid = pid_rx.recv().context("the supervisor thread died")?.context("fork")?;
        Ok(HeldChild {
            user: launch.user.clone(),
            marker_library: None,
            warnings: Vec::new(),
            pid,
            command: argv.join(" "),
            program,
            go: Some(go_write),
            exec_error: err_read,
            supervisor: Some(cmd_tx),
            supervisor_thread: Some(thread),
        })
    }

    /// Runs the child to its end on the tracer thread, calling `hooks` at
    /// its stops. The receiver gets its exit.
    pub fn supervise(&mut self, hooks: Hooks) -> Result<oneshot::Receiver<Result<ChildExit>>> {
        let (tx, rx) = oneshot::channel();
        self.supervisor
            .take()
            .context("child already supervised")?
            .send((hooks, tx))
            .ok()
            .context("the supervisor thread died")?;
        self.supervisor_thread = None; // runs until the child exits; not joined
        Ok(rx)
    }

    /// Blocks until the child exits (for callers without a hook).
    #[cfg(test)]
    pub fn wait(&mut self) -> Result<ChildExit> {
        self.supervise(Hooks::none())?.blocking_recv().context("the supervisor thread died")?
    }

    /// Lets the child exec; fails if exec failed.
    pub fn release(&mut self) -> Result<()> {
        let go = self.go.take().context("child already released")?;
        // SAFETY: writing one byte to our pipe.
        unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        drop(go);
        let mut failed = [0i32; 2];
        // SAFETY: the pipe is CLOEXEC: EOF means exec succeeded, 8 bytes
        // (what failed, errno) mean it did not.
        let n = unsafe { libc::read(self.exec_error.as_raw_fd(), failed.as_mut_ptr().cast(), 8) };
        if n != 8 {
            return Ok(());
        }
        let cause = std::io::Error::from_raw_os_error(failed[1]);
        let user = self.user.as_ref().map_or_else(String::new, |u| format!("user {} (uid {})", u.name, u.uid));
        match failed[0] {
            FAILED_EXEC if self.user.is_some() => {
                bail!("cannot execute {} as {user}: {cause} (--as-root runs it as root)", self.command)
            }
            FAILED_EXEC => bail!("cannot execute {}: {cause}", self.command),
            _ => bail!("cannot run {} as {user}: {cause} (--as-root runs it as root)", self.command),
        }
    }
}

/// Runs the traced child, and with `hooks.follow` every process forked
/// in its tree (ptrace's fork options trace them from their first
/// instruction), to their end (blocking, on the tracer thread): passes
/// their signals on and reports their stops at exit (PTRACE_EVENT_EXIT,
/// memory still mapped), exec, fork and memtrace's holds. Returns the
/// first child's exit once no traced process is left.
fn supervise(root: u32, mut hooks: Hooks) -> Result<ChildExit> {
    let mut tracees: HashSet<u32> = HashSet::from([root]);
    let mut root_exit = None;
    let mut seen_exec = false;
    let cont = |pid: u32, deliver: i32| {
        // SAFETY: ptrace on our stopped tracee; `data` is the signal to deliver.
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid as i32,
                ptr::null_mut::<libc::c_void>(),
                deliver as usize as *mut libc::c_void,
            )
        };
    };
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data filled by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(-1, &mut status, libc::__WALL | libc::__WNOTHREAD, &mut usage) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => break, // no traced process left
                _ => return Err(err).context("wait4"),
            }
        }
        let pid = rc as u32;
        if !libc::WIFSTOPPED(status) {
            let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
            let code = signal.map_or_else(|| libc::WEXITSTATUS(status), |s| 128 + s);
            let exit = ChildExit { code, signal, minflt: usage.ru_minflt as u64, majflt: usage.ru_majflt as u64 };
            tracees.remove(&pid);
            if pid == root {
                root_exit = Some(exit);
            } else {
                (hooks.ended)(pid, exit);
            }
            continue;
        }
        let (sig, event) = (libc::WSTOPSIG(status), status >> 16);
        if tracees.insert(pid) {
            // A new child's first stop (the SIGSTOP of ptrace's
            // auto-attach), possibly before its parent's fork event.
            (hooks.at_stop)(pid, ChildStop::Forked);
            cont(pid, 0);
        } else if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXIT {
            (hooks.at_stop)(pid, ChildStop::Exit);
            cont(pid, 0);
        } else if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXEC {
            // A later execve (`env VAR=x prog`, `sh -c prog`): reported as an
            // event, so no stray SIGTRAP reaches the new program.
            (hooks.at_stop)(pid, ChildStop::Exec);
            cont(pid, 0);
        } else if sig == libc::SIGTRAP
            && matches!(event, libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE)
        {
            cont(pid, 0); // the child reports its own first stop
        } else if sig == libc::SIGTRAP && pid == root && !seen_exec {
            // The stop after the first traced execve: from now on, stop at
            // exit, report further execs as events (without
            // PTRACE_O_TRACEEXEC each would get a SIGTRAP and die of it),
            // and trace forked children (the options pass on to them).
            seen_exec = true;
            let mut options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC;
            if hooks.follow {
                options |= libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
            }
            // SAFETY: ptrace on our stopped tracee.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid as i32,
                    ptr::null_mut::<libc::c_void>(),
                    options as usize as *mut libc::c_void,
                )
            };
            (hooks.at_stop)(pid, ChildStop::Exec);
            cont(pid, 0);
        } else if sig == libc::SIGSTOP && sent_by_kernel(pid) {
            // memtrace's eBPF held it (nobody else sends SIGSTOP with
            // SI_KERNEL): let the session act, swallow the signal.
            (hooks.at_stop)(pid, ChildStop::Held);
            cont(pid, 0);
        } else {
            cont(pid, sig); // the process's own signal: deliver it
        }
    }
    root_exit.context("the traced command's exit was not seen")
}

/// Whether the signal the tracee is stopped with came from the kernel
/// (bpf_send_signal_thread) rather than from kill(2) or a tty.
fn sent_by_kernel(pid: u32) -> bool {
    const SI_KERNEL: i32 = 0x80;
    // SAFETY: siginfo_t is plain data that PTRACE_GETSIGINFO fills.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: ptrace on our tracee in a signal-delivery stop.
    let rc = unsafe {
        libc::ptrace(libc::PTRACE_GETSIGINFO, pid as i32, ptr::null_mut::<libc::c_void>(), &mut info as *mut _)
    };
    rc == 0 && info.si_code == SI_KERNEL
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if self.go.take().is_some() {
            // Never released: closing the pipe makes it _exit(127); the
            // supervisor thread, no longer waited for, reaps it.
            self.supervisor = None;
            if let Some(t) = self.supervisor_thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The child between fork and exec: waits for memtrace's go, asks to be
/// traced, execs. Never returns.
unsafe fn held_child(
    ChildPipes { go_read, go_write, err_read, err_write }: ChildPipes,
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    credentials: Option<Credentials>,
) -> ! {
    unsafe {
        // memtrace's handlers (session::signals) write to memtrace's pipe:
        // the command gets the default dispositions, also before its exec
        // (which would reset them anyway).
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(signal, libc::SIG_DFL);
        }
        // Our copies of the parent's ends: holding go_write would keep the
        // read below from seeing EOF when memtrace gives up.
        libc::close(go_write);
        libc::close(err_read);
        let mut byte = 0u8;
        loop {
            let n = libc::read(go_read, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n == 0 || *libc::__errno_location() != libc::EINTR {
                libc::_exit(127); // memtrace gave up before releasing us
            }
        }
        // Traced by the thread that forked us: we stop at exit with our
        // memory intact, so the kernel truth (smaps) can be read before teardown.
        libc::ptrace(libc::PTRACE_TRACEME, 0, ptr::null_mut::<libc::c_void>(), ptr::null_mut::<libc::c_void>());
        let fail = |what: i32| -> ! {
            let failed = [what, *libc::__errno_location()];
            libc::write(err_write, failed.as_ptr().cast(), 8);
            libc::_exit(127);
        };
        // The user's, as `sudo -u` does: groups first (it needs root), the
        // uid last. The tracer stays root; exec makes the process dumpable again.
        if let Some(c) = credentials {
            if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0 {
                fail(FAILED_SETGROUPS);
            }
            if libc::setgid(c.gid) != 0 {
                fail(FAILED_SETGID);
            }
            if libc::setuid(c.uid) != 0 {
                fail(FAILED_SETUID);
            }
        }
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(FAILED_EXEC);
    }
}

/// Checks that `pid` names a live process memtrace may trace.
pub fn check_pid(pid: u32) -> Result<String> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("no process with PID {pid}");
    }
    if pid == std::process::id() {
        bail!("memtrace cannot trace itself (PID {pid})");
    }
    if pid == std::os::unix::process::parent_id() {
        bail!("PID {pid} is memtrace's own parent (the shell or sudo that started it): trace it from another shell");
    }
    let stat = procfs::process::Process::new(pid as i32).and_then(|p| p.stat());
    let Ok(stat) = stat else { bail!("no process with PID {pid}") };
    // PF_KTHREAD: a kernel thread has no user memory, mappings or heap.
    const PF_KTHREAD: u32 = 0x0020_0000;
    if stat.flags & PF_KTHREAD != 0 {
        bail!("PID {pid} ({}) is a kernel thread: it has no user memory to trace", stat.comm);
    }
    match stat.state {
        'Z' | 'X' => {
            bail!("PID {pid} ({}) has exited (a zombie waiting for its parent): nothing left to trace", stat.comm)
        }
        _ => {}
    }
    let tgid = crate::procfs::thread_group(pid);
    if let Some(tgid) = tgid.filter(|t| *t != pid) {
        bail!("PID {pid} is a thread of process {tgid}: trace the process with -p {tgid}");
    }
    Ok(crate::procfs::command_line(pid).unwrap_or_else(|| format!("[pid {pid}]")))
}

/// A pidfd that becomes readable when `pid` exits (works for non-children).
pub fn pidfd(pid: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            bail!("no process with PID {pid}");
        }
        return Err(err).context("pidfd_open");
    }
    // SAFETY: fresh fd owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn kernel_threads_zombies_threads_and_memtraces_parent_are_refused_with_the_reason() {
        let err = |pid| check_pid(pid).unwrap_err().to_string();
        // kthreadd is PID 2 on every Linux.
        assert!(err(2).contains("is a kernel thread"), "{}", err(2));
        assert!(err(std::os::unix::process::parent_id()).contains("own parent"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", child.id());
        while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(err(child.id()).contains("has exited"), "{}", err(child.id()));
        child.wait().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let tid = rx.recv().unwrap();
        assert!(err(tid).contains(&format!("is a thread of process {}", std::process::id())), "{}", err(tid));
        thread.join().unwrap();
    }

    #[test]
    fn resolves_commands_in_path_and_rejects_missing_ones() {
        assert!(resolve_command("sh").unwrap().is_absolute());
        let err = resolve_command("no-such-command-memtrace").unwrap_err().to_string();
        assert!(err.starts_with("command not found: no-such-command-memtrace"), "{err}");
        assert!(resolve_command("/nonexistent/x").is_err());
        let plain = std::env::temp_dir().join(format!("memtrace-not-executable-{}", std::process::id()));
        std::fs::write(&plain, "data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_command(plain.to_str().unwrap()).unwrap_err().to_string();
        std::fs::remove_file(&plain).unwrap();
        assert!(err.contains("not an executable"), "{err}");
    }

    /// The test harness is multi-threaded: serialise the forks (see HeldChild).
    static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_held_child_runs_only_after_release_and_reports_its_exit() {
        let _one_at_a_time = FORK.lock().unwrap();
        let mut child = HeldChild::spawn(&Launch::command(&["sh".into(), "-c".into(), "exit 7".into()])).unwrap();
        // Still held: it has not exited.
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(child.pid as i32, &mut status, libc::WNOHANG) }, 0);
        child.release().unwrap();
        let exit = child.wait().unwrap();
        assert_eq!((exit.code, exit.signal), (7, None));
        assert!(exit.minflt > 0, "the kernel counts the child's faults");
    }

    #[test]
    fn a_child_launched_as_a_user_runs_with_its_ids_environment_and_groups() {
        let _one_at_a_time = FORK.lock().unwrap();
        let out = std::env::temp_dir().join(format!("memtrace-launch-user-{}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let script = format!("echo $(id -u) $(id -g) $(id -G) $HOME $USER $MEMTRACE_TEST_VAR > {}", out.display());
        let launch = Launch {
            argv: vec!["sh".into(), "-c".into(), script],
            env: vec![("MEMTRACE_TEST_VAR".into(), "given".into())],
            user: Some(crate::target::user::User::lookup(65534, 65534).unwrap()),
        };
        let mut child = HeldChild::spawn(&launch).unwrap();
        child.release().unwrap();
        assert_eq!(child.wait().unwrap().code, 0);
        let seen = std::fs::read_to_string(&out).unwrap();
        let owner = std::fs::metadata(&out).unwrap().uid();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(seen.trim(), "65534 65534 65534 /nonexistent nobody given", "root's groups were dropped too");
        assert_eq!(owner, 65534, "the file the command created is the user's");
    }

    #[test]
    fn dropping_an_unreleased_child_reaps_it() {
        let _one_at_a_time = FORK.lock().unwrap();
        let child = HeldChild::spawn(&Launch::command(&["sh".into(), "-c".into(), "exit 0".into()])).unwrap();
        let pid = child.pid;
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn unknown_pid_is_a_clear_error() {
        assert_eq!(check_pid(999_999_999).unwrap_err().to_string(), "no process with PID 999999999");
    }
}
