//! A focused reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! nettune needs three things from BTF, all at start-up: byte offsets of fields
//! (possibly nested inside anonymous structs and unions), the values of an enum
//! (`enum skb_drop_reason` names drop reasons), and how many arguments a BTF
//! tracepoint takes. aya-obj parses BTF but keeps members and enum variants private;
//! btf-rs is LGPL. The format is small (a header, a type section, a string section;
//! see <https://docs.kernel.org/bpf/btf.html>), so this module reads just that.
//!
//! Parsing all of vmlinux holds the file and a few words per type (about 8 MB);
//! callers resolve what they need and drop the [`Btf`].

use std::path::Path;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

/// Deepest nesting of anonymous structs and unions searched for a member; real
/// kernels nest a handful deep.
const MAX_ANONYMOUS_DEPTH: usize = 16;
/// Members one lookup may look at: depth alone does not bound a search that
/// fans out (16 levels of 64 anonymous members are 64^16 visits); the kernel's
/// own structs need a few hundred.
const MAX_MEMBERS_VISITED: usize = 1 << 16;

/// Errors reading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file cannot be read.
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not valid BTF.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No type of that kind and name.
    #[error("BTF has no {kind} named `{name}`")]
    NoSuchType {
        /// `struct`, `enum`, ….
        kind: &'static str,
        /// The name looked for.
        name: String,
    },
    /// The type has no such member (renamed or absent on this kernel).
    #[error("BTF type `{ty}` has no member `{member}`")]
    NoSuchMember {
        /// The type searched.
        ty: String,
        /// The member looked for.
        member: String,
    },
    /// The member is a bitfield: the programs read whole bytes.
    #[error("BTF member `{member}` of `{ty}` is a bitfield, not byte-addressable")]
    Bitfield {
        /// The type.
        ty: String,
        /// The member path.
        member: String,
    },
}

/// BTF type kinds (`BTF_KIND_*`) that this reader distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BtfKind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl BtfKind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Whether a type of this kind only qualifies or names another type.
    fn is_alias(self) -> bool {
        matches!(
            self,
            Self::Typedef | Self::Volatile | Self::Const | Self::Restrict | Self::TypeTag
        )
    }
}

/// One type's record: where it starts in the type section and what its header
/// says. Members, variants and parameters are decoded from the bytes when asked
/// for, so a parse of all of vmlinux holds the file and one of these per type.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: BtfKind,
    name_off: u32,
    /// The referenced type for aliases, pointers, funcs and typedefs (the size
    /// for structs, unions and enums).
    type_id: u32,
    kind_flag: bool,
    vlen: usize,
    /// Offset of the record's body (after its 12-byte header) in the type section.
    body: usize,
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

/// Parsed BTF: the file, each type's record by id (id 0 is `void`), and the
/// named types' ids sorted by a hash of (kind, name).
///
/// A first version kept every name as a `String`, every member and variant in
/// its own vector, and a map by owned name: parsing vmlinux took about 40 MB,
/// most of the agent's peak memory. This keeps about 8 MB (the file and a few
/// words per type).
pub struct Btf {
    bytes: Vec<u8>,
    types_at: std::ops::Range<usize>,
    strings_at: std::ops::Range<usize>,
    types: Vec<Type>,
    by_name: Vec<(u64, u32)>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

/// The NUL-terminated bytes at `off` in the string section.
fn str_bytes(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
    let tail = strings
        .get(off as usize..)
        .ok_or(BtfError::Malformed("string offset out of range"))?;
    let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
    Ok(&tail[..end])
}

fn kind_label(kind: BtfKind) -> &'static str {
    match kind {
        BtfKind::Struct => "struct",
        BtfKind::Union => "union",
        BtfKind::Enum | BtfKind::Enum64 => "enum",
        BtfKind::Typedef => "typedef",
        BtfKind::Func => "func",
        _ => "type",
    }
}

/// The index key of a (kind label, name) pair.
fn name_hash(kind: &str, name: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a file (raw BTF, as in `/sys/kernel/btf/vmlinux`).
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// Parses raw little-endian BTF.
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        Self::from_bytes(bytes.to_vec())
    }

    /// Parses raw little-endian BTF, keeping the bytes.
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, BtfError> {
        if u16_at(&bytes, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF?)"));
        }
        let field = |at| u32_at(&bytes, at).map(|v| v as usize);
        let (hdr_len, type_off, type_len) = (field(4)?, field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        let section = |off: usize, len: usize, what| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::Malformed(what))?;
            let end = start.checked_add(len).ok_or(BtfError::Malformed(what))?;
            bytes
                .get(start..end)
                .map(|_| start..end)
                .ok_or(BtfError::Malformed(what))
        };
        let types_at = section(type_off, type_len, "type section out of range")?;
        let strings_at = section(str_off, str_len, "string section out of range")?;
        let void = Type {
            kind: BtfKind::Int,
            name_off: 0,
            type_id: 0,
            kind_flag: false,
            vlen: 0,
            body: 0,
        };
        let mut types = vec![void];
        {
            let (b, strings) = (&bytes[types_at.clone()], &bytes[strings_at.clone()]);
            let mut at = 0;
            while at < b.len() {
                let (ty, len) = Self::parse_type(b, at)?;
                // Every name must be readable: checked once here, trusted after.
                str_bytes(strings, ty.name_off)?;
                types.push(ty);
                at += len;
            }
        }
        let strings = &bytes[strings_at.clone()];
        let mut by_name = Vec::new();
        for (id, ty) in types.iter().enumerate().skip(1) {
            let name = str_bytes(strings, ty.name_off)?;
            if !name.is_empty() {
                let id = u32::try_from(id).map_err(|_| BtfError::Malformed("too many types"))?;
                by_name.push((name_hash(kind_label(ty.kind), name), id));
            }
        }
        // Stable: the first type of a name wins, as the kernel's lookups do.
        by_name.sort_by_key(|(hash, _)| *hash);
        Ok(Self {
            bytes,
            types_at,
            strings_at,
            types,
            by_name,
        })
    }

    /// Reads the type record at `at`; returns it and its length in bytes.
    fn parse_type(b: &[u8], at: usize) -> Result<(Type, usize), BtfError> {
        let name_off = u32_at(b, at)?;
        let info = u32_at(b, at + 4)?;
        let type_id = u32_at(b, at + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind =
            BtfKind::from_raw((info >> 24) & 0x1f).ok_or(BtfError::Malformed("unknown kind"))?;
        let body = at + 12;
        let extra = match kind {
            BtfKind::Int | BtfKind::Var | BtfKind::DeclTag => 4,
            BtfKind::Array => 12,
            BtfKind::Struct | BtfKind::Union | BtfKind::Enum64 | BtfKind::Datasec => vlen * 12,
            BtfKind::Enum | BtfKind::FuncProto => vlen * 8,
            BtfKind::Ptr
            | BtfKind::Fwd
            | BtfKind::Typedef
            | BtfKind::Volatile
            | BtfKind::Const
            | BtfKind::Restrict
            | BtfKind::Func
            | BtfKind::Float
            | BtfKind::TypeTag => 0,
        };
        if b.len() < body + extra {
            return Err(BtfError::Malformed("truncated"));
        }
        let ty = Type {
            kind,
            name_off,
            type_id,
            kind_flag: info >> 31 == 1,
            vlen,
            body,
        };
        Ok((ty, 12 + extra))
    }

    fn type_section(&self) -> &[u8] {
        &self.bytes[self.types_at.clone()]
    }

    fn strings(&self) -> &[u8] {
        &self.bytes[self.strings_at.clone()]
    }

    /// A name checked at parse time.
    fn name(&self, off: u32) -> &[u8] {
        str_bytes(self.strings(), off).unwrap_or_default()
    }

    fn name_string(&self, off: u32) -> String {
        String::from_utf8_lossy(self.name(off)).into_owned()
    }

    fn get(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<&Type, BtfError> {
        // BTF may not contain cycles through aliases, but a malformed file could:
        // a fixed bound keeps this loop finite.
        for _ in 0..32 {
            let ty = self.get(id)?;
            if !ty.kind.is_alias() {
                return Ok(ty);
            }
            id = ty.type_id;
        }
        Err(BtfError::Malformed("alias chain too long"))
    }

    fn named(&self, kind: &'static str, name: &str) -> Result<&Type, BtfError> {
        let hash = name_hash(kind, name.as_bytes());
        let first = self.by_name.partition_point(|(h, _)| *h < hash);
        self.by_name[first..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .filter_map(|(_, id)| self.get(*id).ok())
            .find(|ty| kind_label(ty.kind) == kind && self.name(ty.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoSuchType {
                kind,
                name: name.to_owned(),
            })
    }

    /// The members of a struct or union.
    fn members(&self, ty: &Type) -> impl Iterator<Item = Member> + '_ {
        let (b, kind_flag, body) = (self.type_section(), ty.kind_flag, ty.body);
        (0..ty.vlen).filter_map(move |i| {
            let m = body + i * 12;
            let raw_offset = u32_at(b, m + 8).ok()?;
            let (bit_offset, bitfield_size) = if kind_flag {
                (raw_offset & 0x00ff_ffff, raw_offset >> 24)
            } else {
                (raw_offset, 0)
            };
            Some(Member {
                name_off: u32_at(b, m).ok()?,
                type_id: u32_at(b, m + 4).ok()?,
                bit_offset,
                bitfield_size,
            })
        })
    }

    /// Byte offset of `path` (member names, outermost first) inside `struct strukt`.
    ///
    /// Members of anonymous structs and unions are found as if they were direct
    /// members, as in C: `["__sk_common", "skc_net", "net"]` in `sock` works even
    /// though `skc_net` sits in an anonymous union on some kernels.
    pub fn member_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut ty = self
            .named("struct", strukt)
            .or_else(|_| self.named("union", strukt))?;
        let mut offset_bits = 0;
        let mut ty_name = strukt.to_owned();
        for member in path {
            let (bits, member_ty) = self
                .find_member(ty, member, 0, &mut { MAX_MEMBERS_VISITED })?
                .ok_or_else(|| BtfError::NoSuchMember {
                    ty: ty_name.clone(),
                    member: (*member).to_owned(),
                })?;
            offset_bits += bits;
            ty = self.resolve(member_ty)?;
            ty_name.clone_from(&(*member).to_owned());
        }
        if offset_bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                ty: strukt.to_owned(),
                member: path.join("."),
            });
        }
        Ok(offset_bits / 8)
    }

    /// Finds `name` among `ty`'s members, descending into anonymous members (at
    /// most [`MAX_ANONYMOUS_DEPTH`] deep: a malformed file may nest a type in
    /// itself), looking at no more than `budget` members in all. Returns the
    /// member's bit offset relative to `ty` and its type id.
    fn find_member(
        &self,
        ty: &Type,
        name: &str,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        if depth > MAX_ANONYMOUS_DEPTH {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        for m in self.members(ty) {
            *budget = budget
                .checked_sub(1)
                .ok_or(BtfError::Malformed("too many anonymous members to search"))?;
            let member_name = self.name(m.name_off);
            if member_name == name.as_bytes() {
                if m.bitfield_size != 0 {
                    return Err(BtfError::Bitfield {
                        ty: self.name_string(ty.name_off),
                        member: name.to_owned(),
                    });
                }
                return Ok(Some((m.bit_offset, m.type_id)));
            }
            if member_name.is_empty() {
                let inner = self.resolve(m.type_id)?;
                if matches!(inner.kind, BtfKind::Struct | BtfKind::Union)
                    && let Some((bits, id)) = self.find_member(inner, name, depth + 1, budget)?
                {
                    return Ok(Some((m.bit_offset + bits, id)));
                }
            }
        }
        Ok(None)
    }

    /// The variants of `enum name` (or `enum64`), in declaration order.
    pub fn enum_variants(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let ty = self.named("enum", name)?;
        let b = self.type_section();
        (0..ty.vlen)
            .map(|i| {
                let (name_off, value) = if ty.kind == BtfKind::Enum64 {
                    let v = ty.body + i * 12;
                    let value = u64::from(u32_at(b, v + 4)?) | (u64::from(u32_at(b, v + 8)?) << 32);
                    (u32_at(b, v)?, value.cast_signed())
                } else {
                    let v = ty.body + i * 8;
                    let raw = u32_at(b, v + 4)?;
                    // kind_flag marks a signed enum; otherwise values are unsigned.
                    let value = if ty.kind_flag {
                        i64::from(raw.cast_signed())
                    } else {
                        i64::from(raw)
                    };
                    (u32_at(b, v)?, value)
                };
                Ok((
                    String::from_utf8_lossy(str_bytes(self.strings(), name_off)?).into_owned(),
                    value,
                ))
            })
            .collect()
    }

    /// Number of arguments a BTF tracepoint passes to a `tp_btf` program: the
    /// parameters of `btf_trace_<event>`'s prototype minus its leading `void *`.
    pub fn tracepoint_arg_count(&self, event: &str) -> Result<u32, BtfError> {
        let typedef = self.named("typedef", &format!("btf_trace_{event}"))?;
        let ptr = self.get(typedef.type_id)?;
        let proto = self.get(ptr.type_id)?;
        if proto.kind != BtfKind::FuncProto {
            return Err(BtfError::Malformed("btf_trace_* is not a function pointer"));
        }
        let params = u32::try_from(proto.vlen).unwrap_or(u32::MAX);
        Ok(params.saturating_sub(1))
    }
}

mod writer;
pub use writer::BtfWriter;

#[cfg(test)]
mod tests;
