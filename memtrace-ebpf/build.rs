//! Tells the programs which architecture's user registers they read: cfg
//! `bpf_target_arch` (the host's, unless CARGO_CFG_BPF_TARGET_ARCH or
//! AYA_BPF_TARGET_ARCH says otherwise), as aya-ebpf computes it for its own
//! `pt_regs` bindings, so the two always agree.
fn main() {
    if let Err(e) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("cannot determine bpf_target_arch: {e:#}");
    }
}
