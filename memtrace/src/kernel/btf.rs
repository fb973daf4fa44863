//! A minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux): just
//! enough to find the byte offset of a struct member, which the eBPF side
//! needs to follow kernel pointers (Rust eBPF has no CO-RE relocations).
use anyhow::{bail, Context, Result};

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    /// (name_off, type id, offset field) of struct/union members.
    members: Vec<(u32, u32, u32)>,
}

pub struct Btf {
    types: Vec<Type>, // index = type id - 1
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let bytes = b.get(at..at + 4).context("BTF is truncated")?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap()))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux")?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF types truncated")?;
        let strings =
            data.get(hdr_len + str_off..hdr_len + str_off + str_len).context("BTF strings truncated")?.to_vec();
        let mut types = Vec::new();
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let (vlen, kind, kind_flag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31 == 1);
            at += 12;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push((u32_at(types_data, m)?, u32_at(types_data, m + 4)?, u32_at(types_data, m + 8)?));
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,        // ENUM, FUNC_PROTO
                15 | 19 => vlen * 12,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                other => bail!("unknown BTF kind {other}"),
            };
            at += extra;
            types.push(Type { name_off, kind, kind_flag, members });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Byte offset of `member` in `struct name`, looking into anonymous
    /// structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && !t.members.is_empty() && self.name(t.name_off) == name.as_bytes())
            .with_context(|| format!("kernel BTF has no struct {name}"))?;
        let bits = self
            .find(id, member.as_bytes())
            .with_context(|| format!("kernel BTF: struct {name} has no member {member}"))?;
        if bits % 8 != 0 {
            bail!("kernel BTF: {name}.{member} is a bit field");
        }
        Ok(bits / 8)
    }

    fn find(&self, index: usize, member: &[u8]) -> Option<u32> {
        let t = &self.types[index];
        for &(name_off, type_id, offset) in &t.members {
            let bits = if t.kind_flag { offset & 0xff_ffff } else { offset };
            if self.name(name_off) == member {
                return Some(bits);
            }
            // An anonymous struct or union: its members belong to this one.
            let inner = type_id as usize;
            let nested = inner > 0
                && inner <= self.types.len()
                && matches!(self.types[inner - 1].kind, KIND_STRUCT | KIND_UNION);
            if name_off == 0 && nested {
                if let Some(b) = self.find(inner - 1, member) {
                    return Some(bits + b);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_members_memtrace_reads_in_this_kernels_btf() {
        // Every machine memtrace supports has BTF (checked at start-up too).
        let btf = Btf::from_sys_fs().unwrap();
        let f_inode = btf.member_offset("file", "f_inode").unwrap();
        let i_ino = btf.member_offset("inode", "i_ino").unwrap();
        assert!(f_inode > 0 && i_ino > 0);
        assert!(btf.member_offset("file", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
    }
}
