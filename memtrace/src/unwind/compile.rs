//! `.eh_frame` / `.debug_frame` to unwind rows, with gimli evaluating the
//! CFI programs. Only what an x86_64 unwinder needs is kept: the CFA rule
//! (rsp or rbp plus an offset, or the PLT expression), where rbp is saved,
//! and whether the return address is defined.
use std::time::Instant;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection, UnwindTableRow,
};
use memtrace_common::{CfaBase, RbpRule, UnwindRow};
use object::{Object, ObjectSection};

use super::{TableError, TableStats, UnwindTable};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// DWARF register numbers of x86_64 (System V psABI, figure 3.36).
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// The CFA expression of x86_64 PLT stubs, as GNU ld, gold and lld emit it:
/// rsp + 8 + ((rip & 15) >= 11 ? 8 : 0). (lit10 instead of lit11 in older
/// linkers' lazy PLTs.)
const PLT_EXPRESSIONS: [[u8; 11]; 2] = [
    [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22],
    [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22],
];

/// Holes between FDEs up to this size are the padding that aligns the next
/// function (gcc and clang align functions to 16 bytes on x86_64): no code
/// runs there, so they get no row of their own (the table stays half as
/// long). A larger hole is code without CFI, which must not be unwound with
/// its neighbour's rule.
const FUNCTION_ALIGNMENT: u64 = 15;

/// Compiles the ELF image in `data`. `.eh_frame` is preferred (it is what
/// the runtime unwinds with, and it is never stripped); `.debug_frame`
/// serves files that have only that.
pub fn compile(data: &[u8]) -> Result<UnwindTable, TableError> {
    let started = Instant::now();
    let elf = object::File::parse(data).map_err(TableError::NotElf)?;
    let section = |name: &str| elf.section_by_name(name).filter(|s| s.size() > 0);
    let address = |name: &str| section(name).map_or(0, |s| s.address());
    let bases = BaseAddresses::default()
        .set_eh_frame(address(".eh_frame"))
        .set_eh_frame_hdr(address(".eh_frame_hdr"))
        .set_text(address(".text"))
        .set_got(address(".got"));
    let mut table = if let Some(eh) = section(".eh_frame") {
        let bytes = eh.data().map_err(TableError::NotElf)?;
        let mut eh_frame = EhFrame::new(bytes, LittleEndian);
        eh_frame.set_address_size(8);
        rows_of(&eh_frame, &bases, ".eh_frame")?
    } else if let Some(debug) = section(".debug_frame") {
        let bytes = debug.data().map_err(TableError::NotElf)?;
        let mut debug_frame = DebugFrame::new(bytes, LittleEndian);
        debug_frame.set_address_size(8);
        rows_of(&debug_frame, &bases, ".debug_frame")?
    } else {
        return Err(TableError::NoUnwindInfo);
    };
    table.stats.build_time = started.elapsed();
    Ok(table)
}

/// Every FDE's rows, sorted, with a `CfaBase::None` row wherever an FDE
/// ends and no other begins soon after, so code between functions is never
/// unwound with a neighbour's rule.
fn rows_of<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    name: &'static str,
) -> Result<UnwindTable, TableError> {
    let mut stats = TableStats { section: name, ..TableStats::default() };
    let mut ctx = UnwindContext::new();
    let mut fdes: Vec<(u64, u64, Vec<UnwindRow>)> = Vec::new();
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next().map_err(TableError::Parse)? {
        let CieOrFde::Fde(partial) = entry else { continue };
        stats.fdes += 1;
        let fde = match partial.parse(|s, b, o| s.cie_from_offset(b, o)) {
            Ok(fde) => fde,
            Err(_) => {
                stats.bad_fdes += 1;
                continue;
            }
        };
        // Zero-length FDEs, and those of code the linker discarded (address 0).
        if fde.len() == 0 || fde.initial_address() == 0 {
            continue;
        }
        let mut rows = Vec::new();
        let evaluated = (|| -> gimli::Result<()> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                rows.push(convert(row, section, &mut stats));
            }
            Ok(())
        })();
        match evaluated {
            Ok(()) => fdes.push((fde.initial_address(), fde.end_address(), rows)),
            Err(_) => stats.bad_fdes += 1,
        }
    }
    fdes.sort_by_key(|(start, _, _)| *start);
    let mut all: Vec<UnwindRow> = Vec::with_capacity(fdes.iter().map(|(_, _, r)| r.len() + 1).sum());
    for (i, (_, end, rows)) in fdes.iter().enumerate() {
        stats.raw_rows += rows.len();
        all.extend_from_slice(rows);
        let next_start = fdes.get(i + 1).map(|(start, _, _)| *start);
        if next_start.is_none_or(|next| next > *end + FUNCTION_ALIGNMENT) {
            all.push(UnwindRow { pc: *end, cfa_offset: 0, rbp_offset: 0, cfa: CfaBase::None as u8, rbp: 0 });
        }
    }
    all.sort_by_key(|r| r.pc);
    // Rows at the same address (overlapping FDEs, rare; hand-written
    // assembly): the later one wins.
    all.dedup_by(|later, earlier| {
        let same_pc = later.pc == earlier.pc;
        if same_pc {
            *earlier = *later;
        }
        same_pc
    });
    // Merge rows that repeat the previous rule.
    all.dedup_by(|later, earlier| same_rule(later, earlier));
    Ok(UnwindTable { rows: all, stats })
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.cfa, a.cfa_offset, a.rbp, a.rbp_offset) == (b.cfa, b.cfa_offset, b.rbp, b.rbp_offset)
}

fn convert<'a, S: UnwindSection<Slice<'a>>>(
    row: &UnwindTableRow<usize>,
    section: &S,
    stats: &mut TableStats,
) -> UnwindRow {
    let mut out = UnwindRow { pc: row.start_address(), cfa_offset: 0, rbp_offset: 0, cfa: 0, rbp: 0 };
    let cfa = match (row.register(RA), row.cfa()) {
        (Some(RegisterRule::Undefined), _) => CfaBase::Outermost,
        (ra, _) if !matches!(ra, Some(RegisterRule::Offset(-8))) => CfaBase::Unsupported,
        (_, CfaRule::RegisterAndOffset { register, offset }) => match i32::try_from(*offset) {
            Ok(offset) if *register == RSP || *register == RBP => {
                out.cfa_offset = offset;
                if *register == RSP {
                    CfaBase::Rsp
                } else {
                    CfaBase::Rbp
                }
            }
            _ => CfaBase::Unsupported,
        },
        (_, CfaRule::Expression(e)) => match e.get(section) {
            Ok(expr) if PLT_EXPRESSIONS.iter().any(|p| expr.0.slice() == &p[..]) => {
                stats.plt_rows += 1;
                CfaBase::Plt
            }
            _ => CfaBase::Unsupported,
        },
    };
    if cfa == CfaBase::Unsupported {
        stats.unsupported_cfa_rows += 1;
    }
    let rbp = match row.register(RBP) {
        None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => RbpRule::Unchanged,
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) => {
                out.rbp_offset = offset;
                RbpRule::AtCfa
            }
            Err(_) => RbpRule::Unsupported,
        },
        Some(_) => RbpRule::Unsupported,
    };
    if rbp == RbpRule::Unsupported {
        stats.unsupported_rbp_rows += 1;
    }
    (out.cfa, out.rbp) = (cfa as u8, rbp as u8);
    out
}
