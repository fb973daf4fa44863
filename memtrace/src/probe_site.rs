//! Where to put an allocator uprobe so it stays cheap.
//!
//! A uprobe traps on one instruction and must then run it. x86 Linux
//! emulates a few instructions in the kernel (push, jmp, call, conditional
//! jumps: arch/x86/kernel/uprobes.c) and single-steps every other one out of
//! line, which costs about 11 µs a hit here instead of 0.6 µs. glibc's `free`
//! starts with `test %rdi,%rdi`, so a probe on its first byte is slow.
//!
//! This module decodes the first instructions of a function and moves the
//! probe forward over instructions that only read registers or memory and
//! set flags (test, cmp, endbr64), onto the first emulated one. Skipping
//! them changes nothing the probe reads: the argument registers and the
//! stack pointer (so the return address at (%rsp), which a uretprobe
//! hijacks) are untouched, and no branch is skipped (branches are emulated,
//! so the probe lands on the first one). Anything the decoder does not know
//! stops the walk: the plain entry is the fallback.
use std::path::Path;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol};

/// The longest prefix walked.
const MAX_SKIP: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The kernel emulates it: a cheap place for the probe.
    Emulated,
    /// Reads registers/memory, writes only flags: safe to step over.
    FlagsOnly,
}

/// One decoded instruction: its length, kind and a short description.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Insn {
    len: usize,
    kind: Kind,
    text: String,
}

const REG64: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

/// Decodes the few instruction forms allocator prologues start with.
fn decode(code: &[u8]) -> Option<Insn> {
    let insn = |len, kind, text: String| Some(Insn { len, kind, text });
    let disp32 = |at: usize| code.get(at..at + 4).map(|b| i32::from_le_bytes(b.try_into().unwrap()));
    match *code {
        [0xf3, 0x0f, 0x1e, 0xfa, ..] => insn(4, Kind::FlagsOnly, "endbr64".into()),
        [op @ 0x50..=0x57, ..] => insn(1, Kind::Emulated, format!("push %{}", REG64[(op - 0x50) as usize])),
        [0x41, op @ 0x50..=0x57, ..] => insn(2, Kind::Emulated, format!("push %{}", REG64[(op - 0x50 + 8) as usize])),
        // test r64, r64 (REX.W 85 /r, register form)
        [rex @ (0x48 | 0x49 | 0x4c | 0x4d), 0x85, modrm, ..] if modrm >> 6 == 3 => {
            let reg = ((modrm >> 3) & 7) as usize + if rex & 4 != 0 { 8 } else { 0 };
            let rm = (modrm & 7) as usize + if rex & 1 != 0 { 8 } else { 0 };
            insn(3, Kind::FlagsOnly, format!("test %{},%{}", REG64[reg], REG64[rm]))
        }
        // cmpb $imm8, disp32(%rip)
        [0x80, 0x3d, ..] => {
            let d = disp32(2)?;
            insn(7, Kind::FlagsOnly, format!("cmpb $0x{:x},{d:#x}(%rip)", code.get(6)?))
        }
        // cmpl $imm8, disp32(%rip) and its REX.W (cmpq) form
        [0x83, 0x3d, ..] => insn(7, Kind::FlagsOnly, format!("cmpl $0x{:x},{:#x}(%rip)", code.get(6)?, disp32(2)?)),
        [0x48, 0x83, 0x3d, ..] => {
            insn(8, Kind::FlagsOnly, format!("cmpq $0x{:x},{:#x}(%rip)", code.get(7)?, disp32(3)?))
        }
        [op @ 0x70..=0x7f, rel, ..] => insn(2, Kind::Emulated, format!("j{} {:+}", CC[(op & 15) as usize], rel as i8)),
        [0x0f, op @ 0x80..=0x8f, ..] => {
            insn(6, Kind::Emulated, format!("j{} {:+}", CC[(op & 15) as usize], disp32(2)?))
        }
        [0xeb, rel, ..] => insn(2, Kind::Emulated, format!("jmp {:+}", rel as i8)),
        [0xe9, ..] => insn(5, Kind::Emulated, format!("jmp {:+}", disp32(1)?)),
        [0xe8, ..] => insn(5, Kind::Emulated, format!("call {:+}", disp32(1)?)),
        _ => None,
    }
}

const CC: [&str; 16] = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];

/// The chosen offset into a function, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offset: u64,
    /// The probed instruction is emulated by the kernel (the fast case).
    pub emulated: bool,
    pub reason: String,
}

/// Chooses the probe offset for a function starting with `code`.
pub fn place(code: &[u8]) -> Placement {
    let mut at = 0usize;
    let mut skipped = Vec::new();
    while at < MAX_SKIP {
        let Some(insn) = decode(&code[at.min(code.len())..]) else {
            let first = code.get(at..(at + 8).min(code.len())).unwrap_or_default();
            let hex: Vec<String> = first.iter().map(|b| format!("{b:02x}")).collect();
            let why = format!("+{at}: instruction not decoded ({}...)", hex.join(" "));
            return Placement {
                offset: 0,
                emulated: false,
                reason: format!("{why}; entry probe kept at +0 (single-stepped by the kernel: slow)"),
            };
        };
        match insn.kind {
            Kind::Emulated => {
                let reason = if skipped.is_empty() {
                    format!("+0 `{}` is emulated by the kernel: probe at the entry", insn.text)
                } else {
                    format!(
                        "stepped over {} (flags only; arguments, stack and return address untouched); +{at} `{}` is emulated by the kernel",
                        skipped.join(", "),
                        insn.text
                    )
                };
                return Placement { offset: at as u64, emulated: true, reason };
            }
            Kind::FlagsOnly => {
                skipped.push(format!("+{at} `{}`", insn.text));
                at += insn.len;
            }
        }
    }
    Placement {
        offset: 0,
        emulated: false,
        reason: format!("no emulated instruction in the first {MAX_SKIP} bytes; entry probe kept at +0 (slow)"),
    }
}

/// A function's address and first bytes in an ELF file.
pub struct FunctionCode {
    pub address: u64,
    pub code: Vec<u8>,
}

/// The exported (or local) functions of a library, by name.
pub struct Library {
    data: Vec<u8>,
}

impl Library {
    pub fn open(path: &Path) -> Result<Library> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        object::File::parse(&*data)
            .with_context(|| format!("{} is not an ELF file memtrace can read", path.display()))?;
        Ok(Library { data })
    }

    /// The function `name` (dynamic symbols first, then the symbol table).
    pub fn function(&self, name: &str) -> Result<Option<FunctionCode>> {
        Ok(self.functions(&[name])?.into_iter().next().map(|(_, code)| code))
    }

    /// The functions among `names` this file defines, in the order of
    /// `names`, found in one pass over its symbols (dynamic symbols first,
    /// then the symbol table, so a statically linked allocator is found too).
    pub fn functions(&self, names: &[&str]) -> Result<Vec<(String, FunctionCode)>> {
        let file = object::File::parse(&*self.data)?;
        let mut found: Vec<Option<FunctionCode>> = names.iter().map(|_| None).collect();
        let index: std::collections::HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            if !symbol.is_definition() || symbol.kind() != object::SymbolKind::Text {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            let Some(&i) = index.get(name) else { continue };
            if found[i].is_some() {
                continue;
            }
            let address = symbol.address();
            let Some(section) = symbol.section_index().and_then(|i| file.section_by_index(i).ok()) else {
                bail!("symbol {name} has no section");
            };
            let data = section.data()?;
            let start = (address - section.address()) as usize;
            let code = data.get(start..(start + MAX_SKIP + 8).min(data.len())).unwrap_or_default().to_vec();
            found[i] = Some(FunctionCode { address, code });
        }
        Ok(names.iter().zip(found).filter_map(|(n, f)| f.map(|f| (n.to_string(), f))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_at_the_entry_is_probed_in_place() {
        let p = place(&[0x55, 0x48, 0x89, 0xe5]);
        assert_eq!((p.offset, p.emulated), (0, true));
        assert!(p.reason.contains("push %rbp"), "{}", p.reason);
    }

    #[test]
    fn glibc_free_moves_past_its_null_test_onto_the_branch() {
        // glibc 2.36 free: test %rdi,%rdi; je rel32; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0x10, 0x01, 0x00, 0x00, 0x55];
        let p = place(&code);
        assert_eq!((p.offset, p.emulated), (3, true), "{}", p.reason);
        assert!(p.reason.contains("test %rdi,%rdi") && p.reason.contains("je +272"), "{}", p.reason);
    }

    #[test]
    fn rip_relative_compares_and_endbr_are_stepped_over() {
        // endbr64; cmpb $0x0,0x1234(%rip); push %r12
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x80, 0x3d, 0x34, 0x12, 0x00, 0x00, 0x00, 0x41, 0x54];
        let p = place(&code);
        assert_eq!((p.offset, p.emulated), (11, true), "{}", p.reason);
        assert!(p.reason.contains("push %r12"), "{}", p.reason);
    }

    #[test]
    fn an_unknown_instruction_keeps_the_entry() {
        // mov %rdi,%rax writes a register: the walk stops, the entry stays.
        let p = place(&[0x48, 0x89, 0xf8, 0x55]);
        assert_eq!((p.offset, p.emulated), (0, false));
        assert!(p.reason.contains("not decoded (48 89 f8 55"), "{}", p.reason);
        // test then an unknown instruction: never skip into the unknown.
        let p = place(&[0x48, 0x85, 0xff, 0x48, 0x89, 0xf8]);
        assert_eq!(p.offset, 0);
    }
}
