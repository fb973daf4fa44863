//! Dropping probe links while tracing goes on. The kernel unregisters a
//! uprobe in tens of milliseconds (an RCU grace period each, one after
//! another), so the links of a traced process that has ended are dropped
//! here, on a thread of their own, rather than all at the stop: a tree of
//! short-lived processes (a shell wrapper, a DAG runner) leaves little to
//! detach at the end.
use std::{sync::mpsc, thread::JoinHandle};

/// Links to drop (aya's owned link types, boxed).
pub type Links = Vec<Box<dyn Send>>;

pub struct Retirer {
    to_thread: mpsc::Sender<Links>,
    thread: JoinHandle<()>,
}

impl Default for Retirer {
    fn default() -> Retirer {
        let (to_thread, links) = mpsc::channel::<Links>();
        let thread = std::thread::spawn(move || {
            // One at a time: the kernel serialises them anyway (measured,
            // AMD EPYC VM: 15 links in 1.3-1.6 s, from 15 threads or from one).
            for batch in links {
                drop(batch);
            }
        });
        Retirer { to_thread, thread }
    }
}

impl Retirer {
    pub fn retire(&self, links: Links) {
        if !links.is_empty() {
            // The thread lives as long as this sender: the send cannot fail
            // but for a panic there, and then dropping them here is the fallback.
            if let Err(mpsc::SendError(links)) = self.to_thread.send(links) {
                drop(links);
            }
        }
    }

    /// Waits until every link handed over is gone.
    pub fn finish(self) {
        drop(self.to_thread);
        let _ = self.thread.join();
    }
}
