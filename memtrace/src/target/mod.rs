//! The traced process: a command spawned and held until the probes are in
//! place, then supervised with ptrace; or a running process found by PID;
//! the user it runs as; and the control socket through which `memtrace
//! mark` reaches a session.
pub mod cgroup;
pub mod child;
pub mod control;
pub mod user;
