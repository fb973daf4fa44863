//! Warnings: what memtrace could not do and what the trace lacks because of
//! it. Each is printed on stderr when it happens and kept for the trace's
//! `warnings`, so a saved trace says what its run said.
#[derive(Debug, Default)]
pub struct Warnings {
    messages: Vec<String>,
    /// Processes that ended before their probes were in: a failure for
    /// each is no fault of theirs or memtrace's (a fork storm of short
    /// processes), so they are counted in one line, not warned of each.
    ended_early: std::collections::BTreeSet<u32>,
}

impl Warnings {
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        eprintln!("memtrace: warning: {message}");
        self.messages.push(message);
    }

    /// A warning about process `pid`, unless it has ended by now (gone, or
    /// a zombie): then it is counted among those that ended too early.
    pub fn warn_for(&mut self, pid: u32, message: impl Into<String>) {
        if has_ended(pid) {
            self.ended_early.insert(pid);
        } else {
            self.warn(message);
        }
    }

    pub fn into_vec(mut self) -> Vec<String> {
        if !self.ended_early.is_empty() {
            self.messages.push(format!(
                "{} processes ended before memtrace's probes for them were in (short-lived: their \
                 allocations and phase markers were not all seen)",
                self.ended_early.len()
            ));
        }
        self.messages
    }
}

/// Process `pid` is gone or a zombie.
pub fn has_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_for_processes_that_ended_are_counted_in_one_line() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        while !has_ended(pid) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut w = Warnings::default();
        w.warn_for(pid, "not shown");
        w.warn_for(pid, "not shown either");
        w.warn_for(std::process::id(), "about a live process");
        child.wait().unwrap();
        let all = w.into_vec();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], "about a live process");
        assert!(all[1].starts_with("1 processes ended before"), "{all:?}");
    }
}
