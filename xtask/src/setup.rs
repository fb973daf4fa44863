//! `cargo xtask setup`: makes the machine able to build and test memtrace.
//! Idempotent: each step checks first and says whether it acted.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{as_root, status};

/// bpf-linker release known to build against the nightly toolchain's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and benchmarks use: (command, or absolute
/// path, that proves it is there; package). setpriv: the no-privilege test;
/// gcc, g++: the C and C++ test programs; binutils (readelf) and libstdc++6: the unwind-table tests; bpftrace: the heap benchmark's peer; jemalloc:
/// the `--alloc-lib` test; python3-jsonschema: validating traces against
/// the JSON Schema; chromium: rendering the HTML report headless;
/// python3-pip, -setuptools, -wheel: installing memtrace's Python module
/// with pip (its test builds the marker library as pip would);
/// python3-numpy: the README's Python example (a numpy.memmap'd file);
/// libpython3.11-dev: a test program that embeds CPython from its shared library.
const DEBIAN_PACKAGES: [(&str, &str); 16] = [
    ("setpriv", "util-linux"),
    ("gcc", "gcc"),
    ("g++", "g++"),
    // Debian's own CPython (no frame pointers): the unwinding test through an interpreter.
    ("/usr/bin/python3", "python3"),
    ("/usr/lib/python3/dist-packages/pip/__init__.py", "python3-pip"),
    ("/usr/lib/python3/dist-packages/setuptools/__init__.py", "python3-setuptools"),
    ("/usr/lib/python3/dist-packages/wheel/__init__.py", "python3-wheel"),
    ("/usr/lib/python3/dist-packages/numpy/__init__.py", "python3-numpy"),
    ("/usr/include/python3.11/Python.h", "libpython3.11-dev"),
    // The unwind-table tests: readelf is the independent CFI interpreter,
    // libstdc++ the large C++ library they compile.
    ("readelf", "binutils"),
    ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "libstdc++6"),
    ("bpftrace", "bpftrace"),
    ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "libjemalloc2"),
    ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    ("/usr/lib/python3/dist-packages/jsonschema/__init__.py", "python3-jsonschema"),
    ("chromium", "chromium"),
];

fn is_there(proof: &str) -> bool {
    if proof.starts_with('/') {
        Path::new(proof).exists()
    } else {
        has_command(proof)
    }
}

pub fn run() -> Result<()> {
    nightly_with_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nightly_with_rust_src() -> Result<()> {
    if output(Command::new("rustup").arg("--version")).is_none() {
        bail!("rustup is not installed: memtrace's eBPF half needs the nightly toolchain; install rustup from https://rustup.rs");
    }
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: nightly toolchain: already installed");
    } else {
        eprintln!("xtask: nightly toolchain: installing");
        status(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("installing the nightly toolchain (needed for -Z build-std on bpfel-unknown-none)")?;
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: nightly rust-src: already installed");
    } else {
        eprintln!("xtask: nightly rust-src: installing");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"))
}

/// The nightly sysroot's libLLVM.so.<major>.<minor>-rust-... file.
fn nightly_libllvm() -> Result<(PathBuf, u32)> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("cannot ask the nightly rustc for its sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("libLLVM.so.") {
            let major = rest.split('.').next().and_then(|m| m.parse().ok());
            if let Some(major) = major {
                return Ok((lib.join(&name), major));
            }
        }
    }
    bail!("the nightly toolchain ships no libLLVM.so.* in {} (bpf-linker needs an LLVM library)", lib.display())
}

fn bpf_linker() -> Result<()> {
    if output(Command::new("bpf-linker").arg("--version")).is_some() {
        eprintln!("xtask: bpf-linker: already installed and working");
        return Ok(());
    }
    eprintln!(
        "xtask: bpf-linker: missing or broken; building it against the nightly toolchain's LLVM (about a minute)"
    );
    let (libllvm, major) = nightly_libllvm()?;
    // bpf-linker's build looks for <prefix>/lib/libLLVM.so; its rpath then
    // points at <prefix>/lib, so the prefix lives under CARGO_HOME, not /tmp.
    let prefix = cargo_home().join("memtrace-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for link in [lib.join("libLLVM.so"), lib.join(libllvm.file_name().unwrap())] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--force", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker")?;
    if output(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: is {} on PATH?",
            cargo_home().join("bin").display()
        );
    }
    Ok(())
}

/// `cargo xtask fuzz` runs cargo-fuzz (with the nightly toolchain above).
fn cargo_fuzz() -> Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_some() {
        eprintln!("xtask: cargo-fuzz: already installed");
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz: installing (a minute or two)");
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"])).context("installing cargo-fuzz")
}

fn has_command(name: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().filter(|(proof, _)| !is_there(proof)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        eprintln!("xtask: Debian packages ({}): already installed", DEBIAN_PACKAGES.map(|p| p.1).join(", "));
        return Ok(());
    }
    if !has_command("apt-get") {
        bail!("missing packages {} and no apt-get to install them: install them by hand", missing.join(", "));
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(", "));
    let apt_get = || {
        let mut cmd = as_root("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    // Only reached with something missing (checked above): `apt-get update`
    // alone takes tens of seconds, so a set-up machine never pays for it.
    status(apt_get().args(["update", "-q"]))?;
    status(apt_get().args(["install", "-y", "-q", "--no-install-recommends"]).args(missing))
}
