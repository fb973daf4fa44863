//! Unwind tables for stacks without frame pointers: each executable file's
//! `.eh_frame` (or `.debug_frame`) compiled into compact rows
//! ([`memtrace_common::UnwindRow`]: per address range, how to find the
//! caller's stack pointer and rbp) that the eBPF side can search. Reads ELF
//! files only; knows nothing of processes or the kernel.
mod compile;

use std::{fmt, path::Path, time::Duration};

use memtrace_common::{CfaBase, UnwindRow};

pub use compile::compile;

/// A file's compiled unwind table, sorted by `pc`, adjacent equal rules merged.
#[derive(Clone, Debug, Default)]
pub struct UnwindTable {
    pub rows: Vec<UnwindRow>,
    pub stats: TableStats,
}

/// What compiling one file found: the figures `memtrace unwind-table` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// ".eh_frame" or ".debug_frame".
    pub section: &'static str,
    pub fdes: usize,
    /// FDEs gimli could not parse or evaluate: their code has no rows.
    pub bad_fdes: usize,
    /// Rows as the CFI programs produce them, before merging.
    pub raw_rows: usize,
    pub plt_rows: usize,
    /// Rows the unwinder cannot follow: the CFA from another register or a
    /// general expression, the return address elsewhere than CFA - 8.
    pub unsupported_cfa_rows: usize,
    /// Rows where rbp is restored by a rule the unwinder cannot follow.
    pub unsupported_rbp_rows: usize,
    pub build_time: Duration,
}

impl UnwindTable {
    /// Compiles the unwind information of the ELF file at `path`.
    pub fn read(path: &Path) -> Result<UnwindTable, TableError> {
        let data = std::fs::read(path).map_err(TableError::Read)?;
        compile(&data)
    }

    /// The row in force at `pc` (a file virtual address), if any: the last
    /// row starting at or below it.
    pub fn lookup(&self, pc: u64) -> Option<&UnwindRow> {
        let after = self.rows.partition_point(|r| r.pc <= pc);
        after.checked_sub(1).map(|i| &self.rows[i]).filter(|r| r.cfa != CfaBase::None as u8)
    }

    /// Bytes the rows take in a BPF map.
    pub fn bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<UnwindRow>()
    }
}

/// One loadable segment of an ELF file (PT_LOAD): where its bytes are in
/// the file and at which virtual address the rows' `pc` put them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub file_size: u64,
    /// PF_X: the segment an executable mapping holds.
    pub executable: bool,
}

/// The loadable segments of the ELF file in `data`.
pub fn segments(data: &[u8]) -> Result<Vec<Segment>, TableError> {
    use object::{Object, ObjectSegment, SegmentFlags};
    const PF_X: u32 = 1;
    let elf = object::File::parse(data).map_err(TableError::NotElf)?;
    Ok(elf
        .segments()
        .map(|s| {
            let (offset, file_size) = s.file_range();
            let executable = matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0);
            Segment { vaddr: s.address(), offset, file_size, executable }
        })
        .collect())
}

/// An executable mapping's load bias (runtime address minus file virtual
/// address), from the executable segment it maps. The kernel maps a segment
/// from its offset rounded down to a page, so the mapping's offset can lie
/// before the segment's, inside the previous segment's last page (Rust's
/// executables: text at file 0xe40b0, vaddr 0xe50b0, mapped from 0xe4000);
/// matching the offset alone picks that previous segment, 0x1000 off.
pub fn bias(segments: &[Segment], map_start: u64, map_offset: u64) -> Option<u64> {
    const PAGE: u64 = 4096;
    let s = segments
        .iter()
        .find(|s| s.executable && s.offset & !(PAGE - 1) <= map_offset && map_offset < s.offset + s.file_size)?;
    // p_vaddr is mapped at map_start + (p_offset - map_offset).
    Some(map_start.wrapping_add(s.offset).wrapping_sub(map_offset).wrapping_sub(s.vaddr))
}

/// One line on a table: `memtrace unwind-table`'s output.
pub fn describe(t: &UnwindTable) -> String {
    let s = &t.stats;
    format!(
        "{}: {} FDEs ({} unreadable), {} rows from the CFI programs, {} after merging ({} KiB of map), {} PLT rows, rules not followed: CFA {} rows, rbp {} rows; built in {:.1} ms",
        s.section,
        s.fdes,
        s.bad_fdes,
        s.raw_rows,
        t.rows.len(),
        t.bytes().div_ceil(1024),
        s.plt_rows,
        s.unsupported_cfa_rows,
        s.unsupported_rbp_rows,
        s.build_time.as_secs_f64() * 1e3
    )
}

/// Why a file has no unwind table.
#[derive(Debug)]
pub enum TableError {
    Read(std::io::Error),
    NotElf(object::Error),
    /// Neither `.eh_frame` nor `.debug_frame`.
    NoUnwindInfo,
    /// The section itself could not be walked.
    Parse(gimli::Error),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            TableError::Read(e) => write!(f, "cannot read it: {e}"),
            TableError::NotElf(e) => write!(f, "not an ELF file: {e}"),
            TableError::NoUnwindInfo => f.write_str("no .eh_frame or .debug_frame section"),
            TableError::Parse(e) => write!(f, "unreadable call frame information: {e}"),
        }
    }
}

impl std::error::Error for TableError {}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use memtrace_common::RbpRule;

    use super::*;

    /// Every row `readelf --debug-dump=frames-interp` (binutils, an
    /// independent CFI interpreter) prints for `path`, as (pc, CFA column,
    /// rbp column or "u", ra column).
    fn readelf_rows(path: &str) -> Vec<(u64, String, String, String)> {
        let out =
            Command::new("readelf").args(["--debug-dump=frames-interp", path]).output().expect("readelf (binutils)");
        // readelf exits 1 on glibc with a complete dump and no message: judge by the output.
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Contents of the .eh_frame section"), "readelf {path}: {out:?}");
        let mut rows = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() == Some(&"LOC") {
                columns = fields.iter().map(|f| f.to_string()).collect();
            } else if line.contains(" CIE") {
                columns.clear(); // the CIE's own table is no code's
            } else if !columns.is_empty() && fields.len() == columns.len() && fields[0].len() == 16 {
                // pc 0: FDEs of code the linker discarded, which memtrace skips.
                let Ok(pc @ 1..) = u64::from_str_radix(fields[0], 16) else { continue };
                let column = |name: &str| columns.iter().position(|c| c == name).map(|i| fields[i].to_string());
                rows.push((pc, fields[1].to_string(), column("rbp").unwrap_or("u".into()), column("ra").unwrap()));
            }
        }
        rows
    }

    /// What our row says, in readelf's notation.
    fn as_readelf(row: Option<&UnwindRow>) -> (String, String, String) {
        let Some(r) = row else { return ("none".into(), "-".into(), "-".into()) };
        let cfa = match r.cfa {
            c if c == CfaBase::Rsp as u8 => format!("rsp+{}", r.cfa_offset),
            c if c == CfaBase::Rbp as u8 => format!("rbp+{}", r.cfa_offset),
            c if c == CfaBase::Plt as u8 => "exp".into(),
            c if c == CfaBase::Outermost as u8 => "outermost".into(),
            _ => "unsupported".into(),
        };
        let rbp = if r.rbp == RbpRule::AtCfa as u8 { format!("c{}", r.rbp_offset) } else { "u".into() };
        (cfa, rbp, "c-8".into())
    }

    /// The address ranges of the file's PLT sections, where "exp" is the PLT expression.
    fn plt_ranges(path: &str) -> Vec<std::ops::Range<u64>> {
        use object::{Object, ObjectSection};
        let data = std::fs::read(path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        elf.sections()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with(".plt")))
            .map(|s| s.address()..s.address() + s.size())
            .collect()
    }

    fn agrees_with_readelf(path: &str) -> UnwindTable {
        let table = UnwindTable::read(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let expected = readelf_rows(path);
        assert!(expected.len() > 1000, "{path}: readelf printed {} rows", expected.len());
        let plt = plt_ranges(path);
        let simple = |cfa: &str| cfa.starts_with("rsp+") || cfa.starts_with("rbp+");
        let mut unsupported = 0;
        let mismatches: Vec<String> = expected
            .iter()
            .filter_map(|(pc, cfa, rbp, ra)| {
                let have = as_readelf(table.lookup(*pc));
                let want = match (cfa.as_str(), ra.as_str()) {
                    (_, "u") => ("outermost".into(), rbp.clone(), "c-8".into()),
                    (cfa, "c-8") if simple(cfa) => (cfa.to_string(), rbp.clone(), ra.clone()),
                    ("exp", "c-8") if plt.iter().any(|r| r.contains(pc)) => ("exp".into(), rbp.clone(), ra.clone()),
                    // Signal trampolines, setcontext: rules the unwinder
                    // does not follow, and says so.
                    _ => {
                        unsupported += 1;
                        return (have.0 != "unsupported")
                            .then(|| format!("{pc:#x}: readelf {cfa} {rbp} {ra}, memtrace {have:?}"));
                    }
                };
                (have != want).then(|| format!("{pc:#x}: readelf {want:?}, memtrace {have:?}"))
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{path}: {} of {} rows differ:\n{}",
            mismatches.len(),
            expected.len(),
            mismatches[..mismatches.len().min(10)].join("\n")
        );
        assert!(table.stats.unsupported_cfa_rows >= unsupported.min(1), "{:?}", table.stats);
        table
    }

    #[test]
    fn the_bias_comes_from_the_executable_segment_the_mapping_holds() {
        let seg = |vaddr, offset, file_size, executable| Segment { vaddr, offset, file_size, executable };
        // glibc: r-- at 0, r-x text at file 0x26000 = vaddr 0x26000.
        let libc = [seg(0, 0, 0x25388, false), seg(0x26000, 0x26000, 0x1550fc, true)];
        assert_eq!(bias(&libc, 0x7f00_0002_6000, 0x26000), Some(0x7f00_0000_0000));
        // A Rust executable: text at file 0xe40b0, vaddr 0xe50b0, mapped from
        // file 0xe4000 (inside the r-- segment's last page) at base + 0xe5000.
        let rust = [seg(0, 0, 0xe40a4, false), seg(0xe50b0, 0xe40b0, 0x256b70, true)];
        assert_eq!(bias(&rust, 0x5500_000e_5000, 0xe4000), Some(0x5500_0000_0000));
        // A non-PIE executable: mapped at its own addresses.
        let exe = [seg(0x401000, 0x1000, 0x2000, true)];
        assert_eq!(bias(&exe, 0x401000, 0x1000), Some(0));
        assert_eq!(bias(&exe, 0x401000, 0x9000), None);
    }

    #[test]
    fn glibcs_table_agrees_with_readelf_row_by_row() {
        let t = agrees_with_readelf("/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!((t.stats.section, t.stats.bad_fdes), (".eh_frame", 0));
        assert!(t.stats.plt_rows > 0, "glibc's .plt has the PLT expression: {:?}", t.stats);
    }

    #[test]
    fn a_large_cxx_librarys_table_agrees_with_readelf_row_by_row() {
        agrees_with_readelf("/usr/lib/x86_64-linux-gnu/libstdc++.so.6");
    }

    /// Debian's python3 links libpython statically and has no frame pointers.
    #[test]
    fn debians_python_interpreters_table_agrees_with_readelf_row_by_row() {
        let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
        agrees_with_readelf(python.to_str().unwrap());
    }

    #[test]
    fn addresses_outside_every_fde_have_no_row() {
        let t = UnwindTable::read(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
        assert!(t.lookup(0).is_none(), "below the first function");
        assert!(t.lookup(u64::MAX).is_none(), "past the last function");
        assert!(matches!(UnwindTable::read(Path::new("/etc/hostname")), Err(TableError::NotElf(_))));
    }
}
