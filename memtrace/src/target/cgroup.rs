//! `--cgroup DIR`: a cgroup v2 directory as the scope. The kernel's id of a
//! cgroup (what `bpf_get_current_cgroup_id` returns) is its directory's
//! inode number; the processes in it now are listed in `cgroup.procs`.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
    /// Its processes now, lowest PID first (the first is the report's target).
    pub members: Vec<u32>,
}

/// `statfs` says the cgroup2 filesystem (the only hierarchy whose ids the
/// kernel side can filter by; v1 hierarchies have other ids).
fn on_cgroup2(path: &Path) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) with a NUL-terminated path and a struct to fill.
    unsafe { libc::statfs(c.as_ptr(), &mut fs) == 0 && fs.f_type as i64 == CGROUP2_SUPER_MAGIC }
}

/// Where the cgroup2 filesystem is mounted (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on a hybrid system), from /proc/self/mountinfo.
pub fn mount_point() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

pub fn resolve(dir: &Path) -> Result<Cgroup> {
    let path = std::fs::canonicalize(dir).with_context(|| format!("--cgroup {}: no such directory", dir.display()))?;
    let procs = path.join("cgroup.procs");
    if !on_cgroup2(&path) || !procs.is_file() {
        bail!(
            "--cgroup {}: not a cgroup v2 directory: give one on the cgroup2 filesystem ({}), e.g. {}/system.slice/NAME.service",
            dir.display(),
            mount_point().map_or_else(|| "none is mounted here".to_string(), |m| m.display().to_string()),
            mount_point().map_or_else(|| "/sys/fs/cgroup".to_string(), |m| m.display().to_string()),
        );
    }
    // Only the root cgroup lacks cgroup.events: every process of the machine.
    if !path.join("cgroup.events").is_file() {
        bail!(
            "--cgroup {}: the root cgroup holds every process of the machine: give a container's or a unit's",
            dir.display()
        );
    }
    let id = std::fs::metadata(&path)?.ino();
    let text = std::fs::read_to_string(&procs).with_context(|| format!("reading {}", procs.display()))?;
    let mut members: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        bail!(
            "--cgroup {}: no process in it yet: start the service first (processes that start later are traced too)",
            dir.display()
        );
    }
    Ok(Cgroup { path, id, members })
}
