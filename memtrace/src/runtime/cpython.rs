//! CPython: a file that defines the interpreter's runtime state
//! (`_PyRuntime`) is CPython; its version is `Py_Version` (3.11 and later:
//! the PY_VERSION_HEX the file was built as, in its read-only data).
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

use super::Runtime;

/// What memtrace does with Python frames, for every version so far.
const FRAMES: &str =
    "not read yet: heap stacks show the interpreter's C functions (_PyEval_EvalFrameDefault, ...), not Python's";

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
    defined("_PyRuntime")?;
    let (version, source) = match defined("Py_Version").and_then(|s| read_u32(&elf, s.address(), s.section_index()?)) {
        Some(hex) => (version_text(hex), format!("Py_Version (0x{hex:08x}) in {path}")),
        None => ("before 3.11 (no Py_Version)".to_string(), format!("_PyRuntime in {path}, no Py_Version")),
    };
    Some(Runtime { name: "CPython", version, file: path.to_string(), source, frames: FRAMES.to_string() })
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
