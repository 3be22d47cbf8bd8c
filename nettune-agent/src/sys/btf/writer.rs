//! Writing raw BTF, one type at a time, the way the kernel lays it out: for tests
//! and fuzzing, which need BTF the running kernel does not have (a struct nested
//! in itself, offsets that point nowhere).

/// BTF under construction. Type ids start at 1 (0 is `void`).
#[derive(Debug)]
pub struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// The id the next type will get.
    pub next_id: u32,
}

impl Default for BtfWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BtfWriter {
    /// Empty BTF.
    pub fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    /// Adds `s` to the string section; returns its offset (0 for "").
    pub fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    /// Adds a type header (`kind` is `BTF_KIND_*`); returns the type's id. The
    /// kind's extra words follow with [`Self::words`].
    pub fn push(
        &mut self,
        name: &str,
        kind: u32,
        vlen: u32,
        kind_flag: bool,
        size_or_type: u32,
    ) -> u32 {
        let name = self.str(name);
        let info = (kind << 24) | vlen | (u32::from(kind_flag) << 31);
        for word in [name, info, size_or_type] {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }

    /// Appends raw words to the type section.
    pub fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// An unsigned integer type of `size` bytes.
    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.push(name, 1, 0, false, size);
        self.words(&[size * 8]);
        id
    }

    /// A struct (`kind` 4) or union (5) with (name, type id, bit offset) members.
    pub fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        members: &[(&str, u32, u32)],
    ) -> u32 {
        let vlen = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let id = self.push(name, kind, vlen, false, size);
        for (m, ty, bits) in members {
            let m = self.str(m);
            self.words(&[m, *ty, *bits]);
        }
        id
    }

    /// A pointer to type `to`.
    pub fn pointer(&mut self, to: u32) -> u32 {
        self.push("", 2, 0, false, to)
    }

    /// The finished BTF blob (header, types, strings).
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let type_len = u32::try_from(self.types.len()).unwrap_or(u32::MAX);
        let str_len = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&super::MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for word in [24, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&u32::to_le_bytes(word));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}
