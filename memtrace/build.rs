//! Builds memtrace's eBPF object (memtrace-ebpf) with the nightly toolchain and
//! bpf-linker, so that a plain `cargo build` never yields a binary without it.
//! When the toolchain is missing, the build fails and says to run `cargo xtask setup`.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("memtrace-ebpf");
    let common_dir = root.join("memtrace-common");
    // The workspace's Cargo.toml and Cargo.lock hold memtrace-ebpf's profile and dependencies.
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("build.rs"),
        common_dir.join("src"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=MEMTRACE_EBPF_OBJECT");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let object = match env::var_os("MEMTRACE_EBPF_OBJECT") {
        // A pre-built object (for packaging); must exist.
        Some(path) => PathBuf::from(path),
        None => build_ebpf(&ebpf_dir, &root.join("target").join("ebpf")),
    };
    fs::copy(&object, out_dir.join("memtrace.bpf.o"))
        .unwrap_or_else(|e| fail(&format!("cannot copy eBPF object {}: {e}", object.display())));
    build_marker_library(&root.join("python/memtrace/_markers.c"), &out_dir.join("libmemtrace-markers.so"));
}

/// The phase-marker library memtrace embeds and writes out for the programs
/// it runs (the Python module loads it): built with the C compiler cargo
/// links with. The flags are the ones the source's comment explains.
fn build_marker_library(source: &Path, library: &Path) {
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CC");
    let cc = env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O0", "-fno-omit-frame-pointer", "-s"])
        .args(["-Wl,-soname,libmemtrace-markers.so", "-Wl,--build-id", "-o"])
        .arg(library)
        .arg(source)
        .status()
        .unwrap_or_else(|e| fail_cc(&format!("cannot run the C compiler {} ({e})", cc.to_string_lossy())));
    if !status.success() {
        fail_cc(&format!("building {} failed (see the errors above)", source.display()));
    }
}

fn fail_cc(cause: &str) -> ! {
    eprintln!("error: {cause}.\nmemtrace embeds its phase-marker library, built with the C compiler (`cc`, or $CC): install gcc.");
    std::process::exit(1);
}

fn build_ebpf(ebpf_dir: &Path, target_dir: &Path) -> PathBuf {
    let mut cmd = Command::new("rustup");
    // Run in memtrace-ebpf's directory, cargo builds that member only (not
    // the default members), with the workspace's lock and profiles. LTO
    // cannot be set per package in the profile (see the root Cargo.toml).
    cmd.args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--config", "profile.release.lto=true"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(ebpf_dir);
    // The outer cargo (or clippy) exports its own toolchain and flags; none of
    // them apply to a nightly build for the BPF target.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTUP_TOOLCHAIN")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // BPF cpu v3 (kernel 5.12+ for its atomics): phase numbers are taken
    // with an atomic fetch-and-add, which "generic" (v1) cannot express.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", ["-Cdebuginfo=2", "-Clink-arg=--btf", "-Ctarget-cpu=v3"].join("\x1f"));
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run `rustup run nightly cargo` ({e})")));
    if !status.success() {
        fail("building the eBPF object failed (see the errors above)");
    }
    target_dir.join("bpfel-unknown-none/release/memtrace")
}

fn fail(cause: &str) -> ! {
    eprintln!(
        "error: {cause}.\n\
         memtrace embeds its eBPF object, built with the nightly toolchain (rust-src) and bpf-linker.\n\
         Run `cargo xtask setup` once to install them, then `cargo xtask build`."
    );
    std::process::exit(1);
}
