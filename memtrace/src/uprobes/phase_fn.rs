//! `--phase-fn NAME=SYMBOL[@LIBRARY]`: a phase that lasts while a function
//! of an unmodified program runs (its outermost call, recursion included).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::uprobes::placement::Library;

/// One phase function, resolved before tracing starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseFn {
    /// The phase's name in the trace.
    pub name: String,
    /// The function's symbol as the ELF symbol table spells it (mangled for C++).
    pub symbol: String,
    /// The file that defines it: the target's executable, or `@LIBRARY`.
    pub path: PathBuf,
}

/// Splits `NAME=SYMBOL[@LIBRARY]`.
pub fn parse(spec: &str) -> Result<(String, String, Option<PathBuf>)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--phase-fn {spec}: expected NAME=SYMBOL (or NAME=SYMBOL@LIBRARY), e.g. search=faiss_search");
    };
    let (symbol, library) = match rest.rsplit_once('@') {
        Some((symbol, library)) if library.starts_with('/') => (symbol, Some(PathBuf::from(library))),
        _ => (rest, None),
    };
    if name.is_empty() || symbol.is_empty() {
        bail!("--phase-fn {spec}: NAME and SYMBOL must not be empty");
    }
    if name.len() >= memtrace_common::PHASE_NAME_MAX {
        bail!("--phase-fn {spec}: NAME is longer than {} bytes", memtrace_common::PHASE_NAME_MAX - 1);
    }
    Ok((name.to_string(), symbol.to_string(), library))
}

/// Parses `spec` and checks that the function exists in `LIBRARY`, or in
/// `executable` (the target's) without one.
pub fn resolve(spec: &str, executable: &Path) -> Result<PhaseFn> {
    let (name, symbol, library) = parse(spec)?;
    let path = library.unwrap_or_else(|| executable.to_path_buf());
    let lib = Library::open(&path).with_context(|| format!("--phase-fn {spec}"))?;
    if lib.function(&symbol)?.is_none() {
        bail!(
            "--phase-fn {spec}: {} defines no function `{symbol}`; give the symbol as `nm` prints it \
             (mangled for C++); add @/path/to/library.so when it lives in a library, or @/path/to/program \
             when the command is a wrapper (env, sh -c) that runs the program",
            path.display()
        );
    }
    Ok(PhaseFn { name, symbol, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_into_name_symbol_and_library() {
        assert_eq!(parse("search=faiss_search").unwrap(), ("search".into(), "faiss_search".into(), None));
        assert_eq!(
            parse("q=_ZN5faiss9IndexFlat6searchE@/usr/lib/libfaiss.so").unwrap(),
            ("q".into(), "_ZN5faiss9IndexFlat6searchE".into(), Some(PathBuf::from("/usr/lib/libfaiss.so")))
        );
        assert_eq!(parse("v=f@@GLIBC_2.2").unwrap().1, "f@@GLIBC_2.2", "a version suffix is no library");
        for bad in ["search", "=f", "n=", &format!("{}=f", "x".repeat(40))] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_function_is_refused_with_the_fix() {
        let e = resolve("p=no_such_function_here", Path::new("/proc/self/exe")).unwrap_err();
        assert!(format!("{e:#}").contains("defines no function `no_such_function_here`"), "{e:#}");
        let libc = crate::uprobes::allocator::own_glibc();
        let spec = format!("alloc=malloc@{}", libc.display());
        assert_eq!(resolve(&spec, Path::new("/proc/self/exe")).unwrap().symbol, "malloc");
    }
}
