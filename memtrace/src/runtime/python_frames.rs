//! Python frames of an allocation stack, resolved in userspace: the eBPF
//! side copied each frame's code object pointer and instruction index
//! (PYTHON_FRAME words after the native frames); here the code object's
//! qualified name, file and first line are read from /proc/PID/mem, the
//! line from its location table, and the frames are put back among the
//! native ones where the interpreter ran them.
use std::{collections::HashMap, os::unix::fs::FileExt};

use memtrace_common::{PYTHON_CODE_MASK, PYTHON_ENTRY, PYTHON_FRAME, PYTHON_INSTR_MAX, PYTHON_INSTR_SHIFT};

use super::cpython::Layout;
use crate::symbolize::Frame;

/// The module name a Python frame carries (it has no ELF file).
pub const MODULE: &str = "[python]";
/// The native function each C-level run of the interpreter shows as.
const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";

/// One Python frame word, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    pub code: u64,
    pub instr: u64,
    pub entry: bool,
}

pub fn is_python(word: u64) -> bool {
    word & PYTHON_FRAME != 0
}

pub fn decode(word: u64) -> Word {
    Word {
        code: word & PYTHON_CODE_MASK,
        instr: (word >> PYTHON_INSTR_SHIFT) & PYTHON_INSTR_MAX,
        entry: word & PYTHON_ENTRY != 0,
    }
}

/// A code object's name, file, first line and location table.
#[derive(Clone, Debug, Default)]
struct Code {
    qualname: String,
    filename: String,
    firstlineno: i64,
    linetable: Vec<u8>,
}

/// Reads code objects of one process, each once.
pub struct Resolver {
    mem: Option<std::fs::File>,
    layout: &'static Layout,
    codes: HashMap<u64, Option<Code>>,
}

impl Resolver {
    pub fn new(pid: u32, layout: &'static Layout) -> Resolver {
        Resolver { mem: std::fs::File::open(format!("/proc/{pid}/mem")).ok(), layout, codes: HashMap::new() }
    }

    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.mem.as_ref()?.read_at(&mut buf, address).ok()?;
        (n == len).then_some(buf)
    }

    fn u64_at(&self, address: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.read(address, 8)?.try_into().ok()?))
    }

    /// A str object's text (compact ASCII or compact UCS-1/2/4), at most 400 characters.
    fn text(&self, object: u64) -> Option<String> {
        let l = self.layout;
        let length = self.u64_at(object + 16)?.min(400) as usize;
        let state = u32::from_le_bytes(self.read(object + 32, 4)?.try_into().ok()?);
        let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1 == 1, (state >> 6) & 1 == 1);
        if !compact {
            return None;
        }
        if ascii {
            return Some(crate::decode::printable(&self.read(object + l.ascii_data, length)?));
        }
        let width = kind as usize; // 1, 2 or 4 bytes per character
        let raw = self.read(object + l.compact_data, length * width)?;
        let chars: String = raw
            .chunks_exact(width.max(1))
            .map(|c| {
                let mut v = [0u8; 4];
                v[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_le_bytes(v)).unwrap_or('?')
            })
            .collect();
        Some(crate::decode::printable(chars.as_bytes()))
    }

    /// A bytes object's contents, at most 64 KiB.
    fn bytes(&self, object: u64) -> Option<Vec<u8>> {
        let len = self.u64_at(object + 16)?.min(64 * 1024) as usize;
        self.read(object + self.layout.bytes_data, len)
    }

    fn code(&mut self, address: u64) -> Option<&Code> {
        if !self.codes.contains_key(&address) {
            let l = self.layout;
            let code = (|| {
                let first = self.read(address + l.code_firstlineno, 4)?;
                Some(Code {
                    qualname: self.text(self.u64_at(address + l.code_qualname)?)?,
                    filename: self.text(self.u64_at(address + l.code_filename)?)?,
                    firstlineno: i64::from(i32::from_le_bytes(first.try_into().ok()?)),
                    linetable: self.bytes(self.u64_at(address + l.code_linetable)?).unwrap_or_default(),
                })
            })();
            self.codes.insert(address, code);
        }
        self.codes.get(&address)?.as_ref()
    }

    /// The frame a word names; a code object that cannot be read is still
    /// a frame, named by its address.
    pub fn frame(&mut self, word: Word) -> Frame {
        let mut frame = Frame { address: word.code, module: Some(MODULE.into()), ..Frame::default() };
        match self.code(word.code) {
            Some(code) => {
                frame.function = Some(code.qualname.clone());
                frame.file = Some(code.filename.clone());
                frame.line = line_of(&code.linetable, code.firstlineno, word.instr).map(|l| l as u32);
            }
            None => frame.function = Some(format!("[python code at {:#x}, unreadable]", word.code)),
        }
        frame
    }
}

/// The line of code unit `instr` from a 3.11 location table
/// (Objects/locations.md): entries of a first byte `1 CCCC LLL` (code C,
/// L + 1 code units) and the code's operands. None: no location.
pub fn line_of(table: &[u8], firstlineno: i64, instr: u64) -> Option<i64> {
    let mut i = 0usize;
    let mut line = firstlineno;
    let mut at = 0u64;
    let next = |i: &mut usize| -> Option<u8> {
        let b = *table.get(*i)?;
        *i += 1;
        Some(b)
    };
    let varint = |i: &mut usize| -> Option<u64> {
        let mut b = next(i)?;
        let mut value = u64::from(b & 63);
        let mut shift = 6;
        while b & 64 != 0 {
            b = next(i)?;
            value |= u64::from(b & 63) << shift;
            shift += 6;
        }
        Some(value)
    };
    let svarint = |i: &mut usize| -> Option<i64> {
        let v = varint(i)?;
        Some(if v & 1 == 1 { -((v >> 1) as i64) } else { (v >> 1) as i64 })
    };
    while i < table.len() {
        let first = next(&mut i)?;
        let code = (first >> 3) & 15;
        let len = u64::from(first & 7) + 1;
        let located = match code {
            15 => false,
            14 => {
                line += svarint(&mut i)?;
                varint(&mut i)?;
                varint(&mut i)?;
                varint(&mut i)?;
                true
            }
            13 => {
                line += svarint(&mut i)?;
                true
            }
            10..=12 => {
                line += i64::from(code) - 10;
                i += 2;
                true
            }
            _ => {
                i += 1;
                true
            }
        };
        if (at..at + len).contains(&instr) {
            return located.then_some(line);
        }
        at += len;
    }
    None
}

/// Puts the Python frames (innermost first, as the walk read them) among
/// the native ones: each C-level run of the interpreter, a native
/// `_PyEval_EvalFrameDefault` frame, gets the Python frames it ran, up to
/// and including the first one marked as its entry, just before it. Frames
/// left over (the native walk stopped before the interpreter) go last.
pub fn interleave(native: Vec<Frame>, python: Vec<(Frame, bool)>) -> Vec<Frame> {
    let mut out = Vec::with_capacity(native.len() + python.len());
    let mut rest = python.into_iter();
    for frame in native {
        if frame.function.as_deref() == Some(EVAL_FRAME) {
            for (py, entry) in rest.by_ref() {
                out.push(py);
                if entry {
                    break;
                }
            }
        }
        out.push(frame);
    }
    out.extend(rest.map(|(f, _)| f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_decode_to_code_instruction_and_entry() {
        let word = PYTHON_FRAME | PYTHON_ENTRY | (42 << PYTHON_INSTR_SHIFT) | 0x7f12_3456_7890;
        assert!(is_python(word) && !is_python(0x7f12_3456_7890));
        assert_eq!(decode(word), Word { code: 0x7f12_3456_7890, instr: 42, entry: true });
    }

    #[test]
    fn lines_come_from_the_location_table() {
        // def f():        (line 1)
        //     x = 1       (line 2)
        //     return x    (line 3)
        // f.__code__.co_linetable from Debian's python3 3.11.2, whose
        // co_positions() gives lines 1, 2, 2, 3, 3 for its 5 code units.
        let table = [128, 0, 216, 8, 9, 128, 65, 216, 11, 12, 128, 72];
        assert_eq!(line_of(&table, 1, 0), Some(1), "RESUME");
        assert_eq!(line_of(&table, 1, 1), Some(2), "LOAD_CONST 1");
        assert_eq!(line_of(&table, 1, 2), Some(2), "STORE_FAST x");
        assert_eq!(line_of(&table, 1, 3), Some(3), "LOAD_FAST x");
        assert_eq!(line_of(&table, 1, 4), Some(3), "RETURN_VALUE");
        assert_eq!(line_of(&table, 1, 99), None, "past the table");
    }

    #[test]
    fn each_interpreter_run_gets_its_python_frames_before_it() {
        let named = |name: &str| Frame { function: Some(name.into()), ..Frame::default() };
        let native = vec![named("malloc"), named(EVAL_FRAME), named("PyObject_Call"), named(EVAL_FRAME), named("main")];
        let python =
            vec![(named("insert"), false), (named("load"), true), (named("callback"), true), (named("stray"), false)];
        let names: Vec<String> =
            interleave(native, python).into_iter().map(|f| f.function.unwrap_or_default()).collect();
        assert_eq!(
            names,
            ["malloc", "insert", "load", EVAL_FRAME, "PyObject_Call", "callback", EVAL_FRAME, "main", "stray"]
        );
    }
}
