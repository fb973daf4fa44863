//! The kernel's own counters of a process: faults (/proc/PID/stat), RSS
//! (/proc/PID/status), and its command line.
use procfs::process::Process;

/// Minor and major faults the kernel counted for `pid` so far (/proc/PID/stat).
pub fn kernel_faults(pid: u32) -> Option<(u64, u64)> {
    let stat = Process::new(pid as i32).ok()?.stat().ok()?;
    Some((stat.minflt, stat.majflt))
}

/// The thread group (process) a PID belongs to: itself for a process, the
/// process for one of its threads (/proc/PID/status Tgid).
pub fn thread_group(pid: u32) -> Option<u32> {
    Some(Process::new(pid as i32).ok()?.status().ok()?.tgid as u32)
}

/// The threads of process `pid`, its main thread first.
pub fn thread_ids(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != pid)
        .collect();
    tids.sort_unstable();
    tids.insert(0, pid);
    Ok(tids)
}

/// The processes `pid` created that are still running, recursively
/// (from each thread's `children` file), parents before their children:
/// (pid, parent).
pub fn descendants(pid: u32) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(parent) = queue.pop_front() {
        for tid in thread_ids(parent).unwrap_or_default() {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{parent}/task/{tid}/children")) else { continue };
            for child in text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if !out.iter().any(|(p, _)| *p == child) {
                    out.push((child, parent));
                    queue.push_back(child);
                }
            }
        }
    }
    out
}

/// The parent of process `pid` (its `PPid`).
pub fn parent_of(pid: u32) -> Option<u32> {
    Some(Process::new(pid as i32).ok()?.stat().ok()?.ppid as u32)
}

/// The command line, arguments joined by spaces (none for a kernel thread).
pub fn command_line(pid: u32) -> Option<String> {
    let cmdline = Process::new(pid as i32).ok()?.cmdline().ok()?;
    (!cmdline.is_empty()).then(|| cmdline.join(" "))
}

/// The kernel's RSS counters of `pid` from /proc/PID/status (kB granularity).
pub fn rss_counters(pid: u32) -> Option<crate::model::loading::RssCounters> {
    let st = Process::new(pid as i32).ok()?.status().ok()?;
    Some(crate::model::loading::RssCounters {
        file: st.rssfile? * 1024,
        anon: st.rssanon? * 1024,
        shmem: st.rssshmem.unwrap_or(0) * 1024,
        swap: st.vmswap.unwrap_or(0) * 1024,
    })
}

/// memtrace's own cost so far: getrusage(RUSAGE_SELF) (all its threads),
/// with the ring-buffer records it read in `traced_s` seconds.
pub fn own_cost(ring_records: u64, traced_s: f64) -> crate::trace::OwnCost {
    // SAFETY: rusage is plain data filled by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    crate::trace::OwnCost {
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        cpu_user_s: seconds(usage.ru_utime),
        cpu_system_s: seconds(usage.ru_stime),
        ring_records,
        ring_records_per_s: if traced_s > 0.0 { ring_records as f64 / traced_s } else { 0.0 },
    }
}
