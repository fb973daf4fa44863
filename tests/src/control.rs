//! The stdin/stdout protocol the e2e tests drive: `--pause-after` and `--hold`.
//! Replies go to stdout (flushed at once); progress stays on stderr.

use std::io::{BufRead, Write};

use anyhow::{bail, Context, Result};
use memmap2::MmapMut;

use crate::phases::Phase;

fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush().context("cannot flush stdout")
}

/// Announces the pause and blocks until a line (or EOF) arrives on stdin.
pub fn pause_after(phase: Phase) -> Result<()> {
    say(&format!("paused after {} pid={}", phase.name(), std::process::id()))?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read stdin")?;
    Ok(())
}

/// Serves `fault N` requests until EOF on stdin.
pub fn hold() -> Result<()> {
    say(&format!("holding pid={}", std::process::id()))?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("cannot read stdin")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_fault(line) {
            Some(n) => {
                fault_anon_pages(n)?;
                say(&format!("done fault {n}"))?;
            }
            None => eprintln!("memtrace-workload: ignoring unknown command `{line}`"),
        }
    }
    Ok(())
}

fn parse_fault(line: &str) -> Option<usize> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("fault"), Some(n), None) => n.parse().ok(),
        _ => None,
    }
}

/// Maps `n` anonymous pages, writes one byte per page (one page fault each),
/// and unmaps them: page faults outside any file and outside the heap.
fn fault_anon_pages(n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let page = crate::page_size() as usize;
    let Some(len) = n.checked_mul(page) else {
        bail!("fault {n}: too many pages");
    };
    let mut map = MmapMut::map_anon(len).with_context(|| format!("mmap of {n} pages failed"))?;
    for i in 0..n {
        // Volatile so the writes (and thus the faults) are not optimized away.
        // SAFETY: i * page < len, inside the live mapping.
        unsafe { std::ptr::write_volatile(map.as_mut_ptr().add(i * page), 1) };
    }
    drop(map);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_lines() {
        assert_eq!(parse_fault("fault 10"), Some(10));
        assert_eq!(parse_fault("fault  3"), Some(3));
        assert_eq!(parse_fault("fault"), None);
        assert_eq!(parse_fault("fault x"), None);
        assert_eq!(parse_fault("fault 1 2"), None);
        assert_eq!(parse_fault("quit"), None);
    }

    #[test]
    fn faults_pages() {
        fault_anon_pages(4).unwrap();
        fault_anon_pages(0).unwrap();
    }
}
