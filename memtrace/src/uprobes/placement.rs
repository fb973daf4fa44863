//! Where to put an allocator uprobe so it stays cheap.
//!
//! A uprobe traps on one instruction and must then run it. x86 Linux
//! emulates a few instructions in the kernel (push, jmp, call, conditional
//! jumps: arch/x86/kernel/uprobes.c) and single-steps every other one out of
//! line, which costs about 11 µs a hit here instead of 0.6 µs. glibc's `free`
//! starts with `test %rdi,%rdi`, so a probe on its first byte is slow.
//!
//! This module decodes the first instructions of a function and moves the
//! probe forward onto the first emulated one, over straight-line
//! instructions that change nothing the probe reads: they set flags (test,
//! cmp, endbr64) or write a register that is neither the stack pointer nor
//! an argument register this function's entry program reads (jemalloc's
//! `free` computes in %rax, %rcx and %rdx before its first branch; its
//! probe reads only %rdi). Those instructions still run, natively, before
//! the probe fires; the return address at (%rsp), which a uretprobe
//! hijacks, is untouched; no branch is passed (branches are emulated, so
//! the walk stops on the first one). Memory writes and anything the
//! decoder does not know stop the walk: the plain entry is the fallback.
use std::path::Path;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol};

/// The longest prefix walked.
const MAX_SKIP: usize = 64;

/// The stack pointer's index in REG64.
const RSP: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The kernel emulates it: a cheap place for the probe.
    Emulated,
    /// Reads registers/memory, writes only flags: safe to step over.
    FlagsOnly,
    /// Writes this register (REG64 index) and flags, nothing else.
    Writes(usize),
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
        _ => decode_alu(code),
    }
}

/// The register and memory forms of mov, lea and the integer ALU
/// instructions (ModRM encoded, with an optional %fs/%gs prefix and REX),
/// as far as the walk needs them: what each one writes.
fn decode_alu(code: &[u8]) -> Option<Insn> {
    let mut at = 0;
    let segment = match code.first()? {
        0x64 => Some("%fs:"),
        0x65 => Some("%gs:"),
        _ => None,
    };
    at += segment.is_some() as usize;
    let rex = match *code.get(at)? {
        b @ 0x40..=0x4f => {
            at += 1;
            b
        }
        _ => 0,
    };
    let wide = rex & 8 != 0;
    let reg_name = |r: usize| if wide { format!("%{}", REG64[r]) } else { format!("%{}", reg32(r)) };
    let op = *code.get(at)?;
    at += 1;
    if segment.is_none() {
        if let Some(insn) = accumulator_form(code, op, at, &reg_name(0)) {
            return Some(insn);
        }
    }
    let modrm = *code.get(at)?;
    at += 1;
    let (md, reg_field, rm_field) = (modrm >> 6, ((modrm >> 3) & 7) as usize, (modrm & 7) as usize);
    let reg = reg_field + if rex & 4 != 0 { 8 } else { 0 };
    let rm = if md == 3 {
        Some(rm_field + if rex & 1 != 0 { 8 } else { 0 })
    } else {
        at += memory_operand_len(code.get(at..)?, md, rm_field)?;
        None
    };
    if segment.is_some() && rm.is_some() {
        return None; // a segment prefix on a register form: not a form compilers emit
    }
    let operand = |r: Option<usize>| r.map_or_else(|| format!("{}mem", segment.unwrap_or("")), reg_name);
    let imm = |len: usize, at: usize| -> Option<i64> {
        let b = code.get(at..at + len)?;
        Some(if len == 1 { b[0] as i8 as i64 } else { i32::from_le_bytes(b.try_into().unwrap()) as i64 })
    };
    const GROUP1: [&str; 8] = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"];
    if let Some(&(_, mnemonic, to_reg)) = MODRM_OPS.iter().find(|o| o.0 == op) {
        let kind = match (mnemonic, to_reg, rm) {
            ("cmp" | "test", _, _) => Kind::FlagsOnly,
            (_, true, _) => Kind::Writes(reg),
            (_, false, Some(r)) => Kind::Writes(r),
            (_, false, None) => return None, // writes memory
        };
        let (reg, rm) = (reg_name(reg), operand(rm));
        let text = if to_reg { format!("{mnemonic} {rm},{reg}") } else { format!("{mnemonic} {reg},{rm}") };
        return Some(Insn { len: at, kind, text });
    }
    let (len, kind, text) = match op {
        // group 1 with an immediate: 81 /n imm32, 83 /n imm8; /7 is cmp
        0x81 | 0x83 => {
            let n = if op == 0x81 { 4 } else { 1 };
            let value = imm(n, at)?;
            let kind = match (reg_field, rm) {
                (7, _) => Kind::FlagsOnly,
                (2 | 3, _) => return None, // adc/sbb: not in prologues
                (_, Some(r)) => Kind::Writes(r),
                (_, None) => return None,
            };
            (at + n, kind, format!("{} ${value:#x},{}", GROUP1[reg_field], operand(rm)))
        }
        // shifts by an immediate: c1 /4 shl, /5 shr, /7 sar
        0xc1 => {
            let mnemonic = match reg_field {
                4 => "shl",
                5 => "shr",
                7 => "sar",
                _ => return None,
            };
            let r = rm?;
            (at + 1, Kind::Writes(r), format!("{mnemonic} ${:#x},{}", code.get(at)?, reg_name(r)))
        }
        // test r/m, imm32
        0xf7 if reg_field == 0 => (at + 4, Kind::FlagsOnly, format!("test ${:#x},{}", imm(4, at)?, operand(rm))),
        _ => return None,
    };
    Some(Insn { len, kind, text })
}

/// Short forms on %eax/%rax with an imm32 after the opcode at `at`: and
/// (25), add (05), cmp (3d), test (a9).
fn accumulator_form(code: &[u8], op: u8, at: usize, accumulator: &str) -> Option<Insn> {
    let mnemonic = match op {
        0x05 => "add",
        0x25 => "and",
        0x3d => "cmp",
        0xa9 => "test",
        _ => return None,
    };
    let imm = i32::from_le_bytes(code.get(at..at + 4)?.try_into().unwrap());
    let kind = if matches!(op, 0x3d | 0xa9) { Kind::FlagsOnly } else { Kind::Writes(0) };
    Some(Insn { len: at + 4, kind, text: format!("{mnemonic} $0x{imm:x},{accumulator}") })
}

/// Bytes after the ModRM byte that a memory operand takes (SIB and
/// displacement): memory is only read by the forms the walk accepts, so
/// only its length matters.
fn memory_operand_len(after_modrm: &[u8], md: u8, rm_field: usize) -> Option<usize> {
    let mut len = 0;
    let mut base_is_disp32 = md == 0 && rm_field == 5; // disp32(%rip)
    if rm_field == 4 {
        let sib = *after_modrm.first()?;
        len += 1;
        base_is_disp32 = md == 0 && sib & 7 == 5;
    }
    len += match md {
        1 => 1,
        2 => 4,
        _ if base_is_disp32 => 4,
        _ => 0,
    };
    Some(len)
}

/// ModRM-encoded mov, lea and ALU opcodes: (opcode, mnemonic, whether the
/// destination is the reg field; else it is the r/m operand).
const MODRM_OPS: [(u8, &str, bool); 16] = [
    (0x01, "add", false),
    (0x03, "add", true),
    (0x09, "or", false),
    (0x0b, "or", true),
    (0x21, "and", false),
    (0x23, "and", true),
    (0x29, "sub", false),
    (0x2b, "sub", true),
    (0x31, "xor", false),
    (0x33, "xor", true),
    (0x39, "cmp", false),
    (0x3b, "cmp", true),
    (0x85, "test", false),
    (0x89, "mov", false),
    (0x8b, "mov", true),
    (0x8d, "lea", true),
];

/// The 32-bit name of a register (writing it zero-extends into the whole one).
fn reg32(r: usize) -> String {
    match r {
        0..=7 => format!("e{}", &REG64[r][1..]),
        _ => format!("{}d", REG64[r]),
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

/// The first instruction, as `--probe-at-entry` asks.
pub fn at_entry(code: &[u8]) -> Placement {
    let emulated = decode(code).is_some_and(|i| i.kind == Kind::Emulated);
    let how = if emulated { "emulated by the kernel" } else { "single-stepped by the kernel: slow" };
    Placement { offset: 0, emulated, reason: format!("--probe-at-entry: probe at +0 ({how})") }
}

/// Chooses the probe offset for a function starting with `code` whose
/// entry program reads the argument registers `reads` (REG64 indices).
pub fn place(code: &[u8], reads: &[usize]) -> Placement {
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
                        "stepped over {} (they write flags or registers the probe does not read; arguments, stack and return address untouched); +{at} `{}` is emulated by the kernel",
                        skipped.join(", "),
                        insn.text
                    )
                };
                return Placement { offset: at as u64, emulated: true, reason };
            }
            Kind::Writes(r) if r == RSP || reads.contains(&r) => {
                return Placement {
                    offset: 0,
                    emulated: false,
                    reason: format!(
                        "+{at} `{}` writes %{}, which the probe reads; entry probe kept at +0 (single-stepped by the kernel: slow)",
                        insn.text, REG64[r]
                    ),
                };
            }
            Kind::FlagsOnly | Kind::Writes(_) => {
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
    /// The executable segment holding the code at `vaddr`: (start, length).
    pub fn code_segment(&self, vaddr: u64) -> Option<(u64, u64)> {
        use object::{elf::PF_X, Object, ObjectSegment, SegmentFlags};
        let file = object::File::parse(&*self.data).ok()?;
        file.segments()
            .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
            .map(|s| (s.address(), s.size()))
            .find(|(start, len)| (*start..start + len).contains(&vaddr))
    }

    /// Where the byte at virtual address `vaddr` is in the file (what a
    /// tracefs uprobe is placed by): through the loadable segment holding it.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        use object::{Object, ObjectSegment};
        let file = object::File::parse(&*self.data).ok()?;
        file.segments().find_map(|s| {
            let (offset, size) = s.file_range();
            (s.address()..s.address() + size).contains(&vaddr).then(|| vaddr - s.address() + offset)
        })
    }

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

    /// A probe that reads only the first argument (malloc, free).
    const RDI: &[usize] = &[7];

    #[test]
    fn a_push_at_the_entry_is_probed_in_place() {
        let p = place(&[0x55, 0x48, 0x89, 0xe5], RDI);
        assert_eq!((p.offset, p.emulated), (0, true));
        assert!(p.reason.contains("push %rbp"), "{}", p.reason);
    }

    #[test]
    fn glibc_free_moves_past_its_null_test_onto_the_branch() {
        // glibc 2.36 free: test %rdi,%rdi; je rel32; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0x10, 0x01, 0x00, 0x00, 0x55];
        let p = place(&code, RDI);
        assert_eq!((p.offset, p.emulated), (3, true), "{}", p.reason);
        assert!(p.reason.contains("test %rdi,%rdi") && p.reason.contains("je +272"), "{}", p.reason);
    }

    #[test]
    fn rip_relative_compares_and_endbr_are_stepped_over() {
        // endbr64; cmpb $0x0,0x1234(%rip); push %r12
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x80, 0x3d, 0x34, 0x12, 0x00, 0x00, 0x00, 0x41, 0x54];
        let p = place(&code, RDI);
        assert_eq!((p.offset, p.emulated), (11, true), "{}", p.reason);
        assert!(p.reason.contains("push %r12"), "{}", p.reason);
    }

    #[test]
    fn an_unknown_instruction_keeps_the_entry() {
        // movb %al,(%rdi) writes memory: the walk stops, the entry stays.
        let p = place(&[0x88, 0x07, 0x55], RDI);
        assert_eq!((p.offset, p.emulated), (0, false));
        assert!(p.reason.contains("not decoded (88 07 55"), "{}", p.reason);
        // test then an unknown instruction: never skip into the unknown.
        let p = place(&[0x48, 0x85, 0xff, 0x88, 0x07], RDI);
        assert_eq!(p.offset, 0);
        // mov %rdi,(%rsp) writes memory too.
        assert_eq!(place(&[0x48, 0x89, 0x3c, 0x24, 0x55], RDI).offset, 0);
    }

    #[test]
    fn a_write_to_a_register_the_probe_reads_keeps_the_entry() {
        // mov %rax,%rdi; push %rbp: malloc's probe reads %rdi.
        let p = place(&[0x48, 0x89, 0xc7, 0x55], RDI);
        assert_eq!((p.offset, p.emulated), (0, false));
        assert!(p.reason.contains("`mov %rax,%rdi` writes %rdi, which the probe reads"), "{}", p.reason);
        // The same write is harmless to a probe that reads only %rsi.
        assert_eq!(place(&[0x48, 0x89, 0xc7, 0x55], &[6]).offset, 3);
        // Nothing may write the stack pointer (the return address is at (%rsp)).
        assert_eq!(place(&[0x48, 0x83, 0xec, 0x08, 0x55], RDI).offset, 0);
    }

    // The first bytes of Debian's libjemalloc.so.2 (5.3.0) functions.
    #[test]
    fn jemalloc_malloc_steps_over_its_size_compare() {
        // cmp $0x1000,%rdi; ja rel32
        let p = place(&[0x48, 0x81, 0xff, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x87, 0x93, 0x00, 0x00, 0x00], RDI);
        assert_eq!((p.offset, p.emulated), (7, true), "{}", p.reason);
        assert!(p.reason.contains("`cmp $0x1000,%rdi`") && p.reason.contains("ja +147"), "{}", p.reason);
    }

    #[test]
    fn jemalloc_free_walks_its_straight_line_lookup_to_the_first_branch() {
        let code = [
            0x48, 0x89, 0xf8, // mov %rdi,%rax
            0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov 0xa530e(%rip),%rdx
            0x48, 0x89, 0xf9, // mov %rdi,%rcx
            0x48, 0xc1, 0xe8, 0x1a, // shr $0x1a,%rax
            0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and $0xffffffffc0000000,%rcx
            0x25, 0xf0, 0x00, 0x00, 0x00, // and $0xf0,%eax
            0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // add %fs:0x0,%rax
            0x48, 0x01, 0xd0, // add %rdx,%rax
            0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp 0x1b0(%rax),%rcx
            0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne rel32
        ];
        let p = place(&code, RDI);
        assert_eq!((p.offset, p.emulated), (48, true), "{}", p.reason);
        for text in ["`mov %rdi,%rax`", "`mov mem,%rdx`", "`and $0xf0,%eax`", "`add %fs:mem,%rax`", "`cmp mem,%rcx`"] {
            assert!(p.reason.contains(text), "{text}: {}", p.reason);
        }
        // posix_memalign's probe reads %rdx: the same code would stop at +3.
        let p = place(&code, &[7, 2]);
        assert_eq!(p.offset, 0, "{}", p.reason);
        assert!(p.reason.contains("+3 `mov mem,%rdx` writes %rdx"), "{}", p.reason);
    }

    #[test]
    fn jemalloc_rallocx_and_sdallocx_step_over_scratch_register_writes() {
        // rallocx: xor %ecx,%ecx; jmp rel32 (reads %rdi and %rsi)
        let p = place(&[0x31, 0xc9, 0xe9, 0xe9, 0x1c, 0xff, 0xff], &[7, 6]);
        assert_eq!((p.offset, p.emulated), (2, true), "{}", p.reason);
        assert!(p.reason.contains("`xor %ecx,%ecx`"), "{}", p.reason);
        // sdallocx: mov %rdi,%r8; cmp $0x1000,%rsi; ja rel8
        let p = place(&[0x49, 0x89, 0xf8, 0x48, 0x81, 0xfe, 0x00, 0x10, 0x00, 0x00, 0x77, 0x0c], RDI);
        assert_eq!((p.offset, p.emulated), (10, true), "{}", p.reason);
        assert!(p.reason.contains("`mov %rdi,%r8`") && p.reason.contains("`cmp $0x1000,%rsi`"), "{}", p.reason);
    }

    #[test]
    fn memory_operand_lengths_follow_modrm_and_sib() {
        // lea 0x7(%rdi),%rax (disp8); mov (%r8,%rsi,8),%r9 (SIB); test $0xfff,%edi
        assert_eq!(decode(&[0x48, 0x8d, 0x47, 0x07]).map(|i| (i.len, i.kind)), Some((4, Kind::Writes(0))));
        assert_eq!(decode(&[0x4d, 0x8b, 0x0c, 0xf0]).map(|i| (i.len, i.kind)), Some((4, Kind::Writes(9))));
        assert_eq!(decode(&[0xf7, 0xc7, 0xff, 0x0f, 0x00, 0x00]).map(|i| (i.len, i.kind)), Some((6, Kind::FlagsOnly)));
        // mov 0x1b8(%rax),%r8 (disp32)
        assert_eq!(decode(&[0x4c, 0x8b, 0x80, 0xb8, 0x01, 0x00, 0x00]).map(|i| i.len), Some(7));
    }
}
