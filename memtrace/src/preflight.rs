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

pub fn check_btf() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): memtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.8)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_bpf_and_perfmon_or_sys_admin() {
        assert!(!has_tracing_privileges(0));
        assert!(!has_tracing_privileges(1 << CAP_BPF));
        assert!(has_tracing_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(has_tracing_privileges(1 << CAP_SYS_ADMIN));
        assert!(has_tracing_privileges(0x1ff_ffff_ffff)); // root's full set
    }
}
