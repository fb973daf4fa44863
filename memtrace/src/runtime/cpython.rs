//! CPython: a file that defines the interpreter's runtime state
//! (`_PyRuntime`) is CPython; its version is `Py_Version` (3.11 and later:
//! the PY_VERSION_HEX the file was built as, in its read-only data).
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

use super::Runtime;

/// What memtrace does with Python frames of a version it has no layout for.
const NO_FRAMES: &str = "not read (no layout of this version's frames): heap stacks show the interpreter's C functions";
const FRAMES: &str =
    "read in eBPF at each allocation from the thread that holds the GIL, interleaved with the native frames";

/// Where one CPython version keeps what the frame walk reads: field
/// offsets, from the DWARF of a build of that version (`gdb -batch -ex
/// 'ptype /o struct _ts' libpython3.11.so.1.0` on pyenv's 3.11.7); stable
/// within a minor version. 3.12 and 3.13 are one more table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `_PyRuntime.gilstate.tstate_current` from `_PyRuntime`.
    pub runtime_tstate_current: u64,
    /// PyThreadState.native_thread_id, .cframe.
    pub tstate_native_thread_id: u32,
    pub tstate_cframe: u32,
    /// _PyCFrame.current_frame.
    pub cframe_current_frame: u32,
    /// _PyInterpreterFrame.f_code, .previous, .prev_instr, .is_entry.
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_prev_instr: u32,
    pub frame_is_entry: u32,
    /// PyCodeObject.co_firstlineno, co_filename, co_qualname, co_linetable, co_code_adaptive.
    pub code_firstlineno: u64,
    pub code_filename: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_adaptive: u32,
    /// Where a compact ASCII str's characters start (sizeof PyASCIIObject),
    /// a compact non-ASCII one's (sizeof PyCompactUnicodeObject), and a
    /// bytes object's (PyBytesObject.ob_sval).
    pub ascii_data: u64,
    pub compact_data: u64,
    pub bytes_data: u64,
}

/// CPython 3.11.
pub const LAYOUT_3_11: Layout = Layout {
    runtime_tstate_current: 576,
    tstate_native_thread_id: 160,
    tstate_cframe: 56,
    cframe_current_frame: 8,
    frame_code: 32,
    frame_previous: 48,
    frame_prev_instr: 56,
    frame_is_entry: 68,
    code_firstlineno: 72,
    code_filename: 112,
    code_qualname: 128,
    code_linetable: 136,
    code_adaptive: 184,
    ascii_data: 48,
    compact_data: 72,
    bytes_data: 32,
};

/// The layout of a version, when memtrace has one.
pub fn layout(major: u32, minor: u32) -> Option<&'static Layout> {
    match (major, minor) {
        (3, 11) => Some(&LAYOUT_3_11),
        _ => None,
    }
}

/// The CPython in the ELF file at `open` (named `path` in the target), if it holds one.
pub fn detect(open: &Path, path: &str) -> Option<Runtime> {
    let file = std::fs::File::open(open).ok()?;
    let cache = object::read::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let defined = |name: &str| {
        elf.dynamic_symbols()
            .chain(elf.symbols())
            .find(|s| s.is_definition() && s.kind() == object::SymbolKind::Data && s.name() == Ok(name))
    };
    let runtime = defined("_PyRuntime")?;
    let hex = defined("Py_Version").and_then(|s| read_u32(&elf, s.address(), s.section_index()?));
    let (version, source) = match hex {
        Some(hex) => (version_text(hex), format!("Py_Version (0x{hex:08x}) in {path}")),
        None => ("before 3.11 (no Py_Version)".to_string(), format!("_PyRuntime in {path}, no Py_Version")),
    };
    let layout = hex.and_then(|hex| layout(hex >> 24, (hex >> 16) & 0xff));
    let from_start = image_start(&elf).and_then(|start| runtime.address().checked_sub(start));
    let cpython = match (layout, from_start) {
        (Some(layout), Some(runtime_from_start)) => Some(super::CPython { layout, runtime_from_start }),
        _ => None,
    };
    let frames = if cpython.is_some() { FRAMES } else { NO_FRAMES };
    Some(Runtime { name: "CPython", version, file: path.to_string(), source, frames: frames.to_string(), cpython })
}

/// The virtual address of the file's offset 0: the first loadable
/// segment's, which maps it (0 for a shared library or a PIE executable).
fn image_start<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Option<u64> {
    use object::ObjectSegment;
    elf.segments().find(|s| s.file_range().0 == 0).map(|s| s.address())
}

/// The little-endian u32 at `address` in section `index` of `elf`.
fn read_u32<'d, R: object::ReadRef<'d>>(
    elf: &object::File<'d, R>,
    address: u64,
    index: object::SectionIndex,
) -> Option<u32> {
    let section = elf.section_by_index(index).ok()?;
    let bytes = section.data_range(address, 4).ok()??;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// PY_VERSION_HEX as CPython prints its version: 0x030B02F0 is "3.11.2",
/// 0x030C00A3 "3.12.0a3".
pub fn version_text(hex: u32) -> String {
    let (major, minor, micro) = (hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
    let (level, serial) = ((hex >> 4) & 0xf, hex & 0xf);
    let suffix = match level {
        0xa => format!("a{serial}"),
        0xb => format!("b{serial}"),
        0xc => format!("rc{serial}"),
        _ => String::new(),
    };
    format!("{major}.{minor}.{micro}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_cpython_prints_them() {
        assert_eq!(version_text(0x030B02F0), "3.11.2");
        assert_eq!(version_text(0x030C00A3), "3.12.0a3");
        assert_eq!(version_text(0x030D00C1), "3.13.0rc1");
    }

    #[test]
    fn debians_python3_is_cpython_with_its_version_and_libc_is_not() {
        // Debian's python3 (cargo xtask setup installs it), linked statically.
        let exe = std::fs::canonicalize("/usr/bin/python3").unwrap();
        let found = detect(&exe, "/usr/bin/python3").expect("CPython in Debian's python3");
        let printed = std::process::Command::new(&exe)
            .args(["-c", "import platform; print(platform.python_version())"])
            .output()
            .unwrap();
        let expected = String::from_utf8(printed.stdout).unwrap();
        assert_eq!((found.name, found.version.as_str()), ("CPython", expected.trim()));
        assert!(found.source.starts_with("Py_Version (0x030b"), "{}", found.source);
        assert_eq!(detect(&crate::uprobes::allocator::own_glibc(), "libc"), None);
        assert_eq!(detect(Path::new("/etc/hostname"), "/etc/hostname"), None);
    }
}
