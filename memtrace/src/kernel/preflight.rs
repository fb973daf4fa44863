//! Checks that turn "permission denied" deep inside the loader into one clear
//! sentence naming the fix.
use std::path::Path;

use anyhow::{bail, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

pub fn has_tracing_privileges(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn check_privileges() -> Result<()> {
    if !has_tracing_privileges(effective_caps()) {
        bail!("memtrace needs CAP_BPF and CAP_PERFMON (or root) to load eBPF programs: run it with sudo");
    }
    Ok(())
}

/// The oldest kernel with everything the eBPF object uses: the ring buffer
/// (5.8), BPF cpu v3 atomic fetch-and-add (5.12), uprobe cookies (5.15),
/// bpf_loop (5.17: the stack unwinder's loops, which plain bounded loops
/// cannot express within the verifier's instruction limit).
const MIN_KERNEL: (u32, u32) = (5, 17);

pub fn check_btf() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): memtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.17)");
    }
    Ok(())
}

pub fn check_kernel_version() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if let Some(version) = kernel_version(&release) {
        if version < MIN_KERNEL {
            bail!(
                "this kernel is Linux {}.{} ({}); memtrace needs Linux >= {}.{} (BPF ring buffer, atomic fetch-and-add, uprobe cookies, bpf_loop)",
                version.0,
                version.1,
                release.trim(),
                MIN_KERNEL.0,
                MIN_KERNEL.1
            );
        }
    }
    Ok(())
}

/// (major, minor) of a kernel release string such as `6.18.44-fc-v669`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_read_as_major_and_minor() {
        assert_eq!(kernel_version("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert!(kernel_version("5.15.0") < Some(MIN_KERNEL) && kernel_version("5.17.0") >= Some(MIN_KERNEL));
        assert_eq!(kernel_version("garbage"), None);
        check_kernel_version().unwrap(); // the kernel these tests run on
    }

    #[test]
    fn needs_bpf_and_perfmon_or_sys_admin() {
        assert!(!has_tracing_privileges(0));
        assert!(!has_tracing_privileges(1 << CAP_BPF));
        assert!(has_tracing_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(has_tracing_privileges(1 << CAP_SYS_ADMIN));
        assert!(has_tracing_privileges(0x1ff_ffff_ffff)); // root's full set
    }
}
