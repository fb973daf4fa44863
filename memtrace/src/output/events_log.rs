//! `--events PATH`: the full allocation stream, one JSON object per line,
//! written as the events arrive. At the end, one `stack` line per stack id
//! the stream used, symbolized, so the file stands alone.
//!
//! Lines:
//!   {"op":"alloc","t_s":0.012,"tid":42,"address":140..,"size":64,"stack_id":..,"phase_seq":0}
//!   {"op":"free","t_s":0.013,"tid":42,"address":140..,"size":64,"stack_id":..}
//!   (a free of an address never seen allocated has "size":0,"stack_id":0)
//!   {"op":"stack","stack_id":..,"stack":[{"function":..,"file":..,"line":..,"module":..,"offset":..}]}
use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::symbolize::Frame;

pub struct EventLog {
    path: PathBuf,
    out: BufWriter<File>,
    start_ns: u64,
    pub allocs: u64,
    pub frees: u64,
    stacks: BTreeSet<u64>,
    /// The first write error: later events are not written, the trace says so.
    error: Option<String>,
}

#[derive(Serialize)]
struct StackLine<'a> {
    op: &'static str,
    stack_id: u64,
    stack: &'a [Frame],
}

impl EventLog {
    pub fn create(path: &Path, start_ns: u64) -> Result<EventLog> {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW: as root, a symlink planted at the path is never followed.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("--events {}", path.display()))?;
        crate::trace::give_to_invoking_user(&file);
        Ok(EventLog {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            start_ns,
            allocs: 0,
            frees: 0,
            stacks: BTreeSet::new(),
            error: None,
        })
    }

    fn t_s(&self, ts_ns: u64) -> f64 {
        ts_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }

    fn line(&mut self, text: std::fmt::Arguments) {
        if self.error.is_none() {
            if let Err(e) = self.out.write_fmt(text).and_then(|_| self.out.write_all(b"\n")) {
                self.error = Some(format!("writing {}: {e}", self.path.display()));
            }
        }
    }

    pub fn on_alloc(&mut self, ts_ns: u64, tid: u32, address: u64, size: u64, stack_id: u64, phase_seq: u32) {
        self.allocs += 1;
        self.stacks.insert(stack_id);
        let t = self.t_s(ts_ns);
        self.line(format_args!(
            r#"{{"op":"alloc","t_s":{t:.9},"tid":{tid},"address":{address},"size":{size},"stack_id":{stack_id},"phase_seq":{phase_seq}}}"#
        ));
    }

    pub fn on_free(&mut self, ts_ns: u64, tid: u32, address: u64, size: u64, stack_id: u64) {
        self.frees += 1;
        let t = self.t_s(ts_ns);
        self.line(format_args!(
            r#"{{"op":"free","t_s":{t:.9},"tid":{tid},"address":{address},"size":{size},"stack_id":{stack_id}}}"#
        ));
    }

    /// Stack ids the stream used (0, "no stack", left out).
    pub fn stack_ids(&self) -> Vec<u64> {
        self.stacks.iter().copied().filter(|&id| id != 0).collect()
    }

    /// Appends the symbolized stacks and flushes. Returns the summary for
    /// the trace; a write error is in it, not fatal (the trace still gets written).
    pub fn finish(mut self, stacks: &[(u64, Vec<Frame>)]) -> crate::trace::HeapEvents {
        for (id, frames) in stacks {
            if self.error.is_some() {
                break;
            }
            match serde_json::to_string(&StackLine { op: "stack", stack_id: *id, stack: frames }) {
                Ok(json) => self.line(format_args!("{json}")),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(format!("writing {}: {e}", self.path.display()));
            }
        }
        crate::trace::HeapEvents {
            path: self.path.display().to_string(),
            allocs: self.allocs,
            frees: self.frees,
            stacks: stacks.len() as u64,
            error: self.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_object_per_line_and_the_stacks_at_the_end() {
        let path = std::env::temp_dir().join(format!("memtrace-events-{}.ndjson", std::process::id()));
        let mut log = EventLog::create(&path, 1_000).unwrap();
        log.on_alloc(1_500, 7, 0x1000, 64, 99, 2);
        log.on_free(2_000, 7, 0x1000, 64, 99);
        log.on_free(3_000, 7, 0x2000, 0, 0);
        assert_eq!(log.stack_ids(), vec![99]);
        let frame = Frame { function: Some("f".into()), ..Frame::default() };
        let summary = log.finish(&[(99, vec![frame])]);
        assert_eq!((summary.allocs, summary.frees, summary.stacks, summary.error), (1, 2, 1, None));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            (lines[0]["op"].as_str(), lines[0]["size"].as_u64(), lines[0]["t_s"].as_f64()),
            (Some("alloc"), Some(64), Some(5e-7))
        );
        assert_eq!(lines[2]["stack_id"], 0);
        assert_eq!((lines[3]["op"].as_str(), lines[3]["stack"][0]["function"].as_str()), (Some("stack"), Some("f")));
        std::fs::remove_file(path).unwrap();
    }
}
