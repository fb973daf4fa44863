//! The live view while tracing, once a second on stderr (stdout is the
//! report's): on a terminal a few lines redrawn in place, otherwise one
//! plain line per second. `--quiet` turns it off.
use crate::output::report::{bytes, signed_bytes, thousands};

/// What the view shows, read from the session at each refresh.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub elapsed_s: f64,
    pub phase: String,
    pub rss_file: u64,
    pub rss_anon: u64,
    pub rss_shmem: u64,
    pub heap_live: Option<i64>,
    /// Faults seen so far (measured), to turn into a rate.
    pub faults_total: u64,
    pub ringbuf_drops: u64,
    /// (path, loaded bytes), most loaded first.
    pub top_files: Vec<(String, u64)>,
    /// Traced processes running now, and traced in all (a tree's figures are their sums).
    pub processes_running: u32,
    pub processes_traced: u32,
}

/// Files shown on a terminal.
const FILES_SHOWN: usize = 3;

pub struct LiveView {
    tty: bool,
    /// Lines drawn last time (a terminal redraw moves up over them).
    drawn: usize,
    last: Option<(f64, u64)>,
}

impl LiveView {
    pub fn new(tty: bool) -> LiveView {
        // From the start: the first line's rate is over the time traced so far.
        LiveView { tty, drawn: 0, last: Some((0.0, 0)) }
    }

    /// The text for this refresh (with the escape codes that replace the
    /// previous one on a terminal).
    pub fn render(&mut self, s: &Status) -> String {
        let rate = match self.last {
            Some((t, f)) if s.elapsed_s > t => (s.faults_total.saturating_sub(f)) as f64 / (s.elapsed_s - t),
            _ => 0.0,
        };
        self.last = Some((s.elapsed_s, s.faults_total));
        let phase = if s.phase.is_empty() { "-" } else { &s.phase };
        let heap = s.heap_live.map_or_else(|| "not traced".into(), signed_bytes);
        // A tree: how many processes the sums cover.
        let tree = match s.processes_traced {
            0 | 1 => String::new(),
            n => format!("  processes {} running of {n}", s.processes_running),
        };
        let head = format!(
            "{:.1} s{tree}  phase {phase}  RSS (rss_stat) file {} anon {} shmem {}  heap (measured) {heap}  faults/s (measured) {}  drops {}",
            s.elapsed_s,
            bytes(s.rss_file),
            bytes(s.rss_anon),
            bytes(s.rss_shmem),
            thousands(rate.round() as u64),
            thousands(s.ringbuf_drops)
        );
        if !self.tty {
            let top = s
                .top_files
                .first()
                .map_or_else(String::new, |(p, b)| format!("  top file loaded (measured) {} {p}", bytes(*b)));
            return format!("memtrace: {head}{top}\n");
        }
        let mut lines = vec![format!("memtrace live: {head}")];
        for (path, loaded) in s.top_files.iter().take(FILES_SHOWN) {
            lines.push(format!("  loaded (measured) {:>10}  {path}", bytes(*loaded)));
        }
        let mut out = self.clear();
        for l in &lines {
            out.push_str(l);
            out.push_str("\x1b[K\n");
        }
        self.drawn = lines.len();
        out
    }

    /// On a terminal: the escape codes that erase the last drawing (before
    /// the report is printed).
    pub fn clear(&mut self) -> String {
        let out = if self.tty && self.drawn > 0 { format!("\x1b[{}A\x1b[J", self.drawn) } else { String::new() };
        self.drawn = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(t: f64, faults: u64) -> Status {
        Status {
            elapsed_s: t,
            phase: "search".into(),
            rss_file: 2 << 20,
            heap_live: Some(4096),
            faults_total: faults,
            top_files: vec![("/data/a.arrow".into(), 1 << 20), ("/lib/libc.so.6".into(), 4096)],
            ..Status::default()
        }
    }

    #[test]
    fn without_a_terminal_each_refresh_is_one_plain_line() {
        let mut v = LiveView::new(false);
        let first = v.render(&status(1.0, 100));
        assert!(first.contains("faults/s (measured) 100"), "the first line's rate is since the start: {first}");
        let line = v.render(&status(2.0, 1100));
        assert_eq!(line.lines().count(), 1);
        assert!(!line.contains('\x1b'));
        assert!(
            line.contains("phase search")
                && line.contains("faults/s (measured) 1,000")
                && line.contains("heap (measured) +4.0 KiB")
        );
        assert!(line.contains("top file loaded (measured) 1.0 MiB /data/a.arrow"), "{line}");
        assert!(!line.contains("processes"), "one process: no count");
        assert_eq!(v.clear(), "");
        let tree = v.render(&Status { processes_running: 3, processes_traced: 5, ..status(3.0, 1100) });
        assert!(tree.contains("3.0 s  processes 3 running of 5  phase search"), "{tree}");
    }

    #[test]
    fn on_a_terminal_it_redraws_over_its_last_drawing() {
        let mut v = LiveView::new(true);
        let first = v.render(&status(1.0, 0));
        assert!(!first.starts_with("\x1b["), "nothing to erase yet");
        assert_eq!(first.lines().count(), 3, "{first:?}");
        let second = v.render(&status(2.0, 0));
        assert!(second.starts_with("\x1b[3A\x1b[J"), "{second:?}");
        assert_eq!(v.clear(), "\x1b[3A\x1b[J");
        assert_eq!(v.clear(), "", "erased once");
    }
}
