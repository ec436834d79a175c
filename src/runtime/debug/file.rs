//! What the file holds outside its loaded segments: the section headers,
//! `.symtab` with its strings, and the `.debug_*` sections.
//!
//! None of it is needed to load, so nothing here is an error: a file
//! without section headers, or with headers that do not make sense, simply
//! gives nothing. Every offset and size is checked against the file's
//! length before it is read, and every table is capped in size.

use crate::elf::{u32_at, u64_at};

/// Appends the `len` bytes at offset `at` of the ELF to a vector (without
/// zero-filling them first); `false`, and the vector unchanged, when they
/// cannot be read.
pub(crate) type ReadAt<'a> = &'a dyn Fn(u64, u64, &mut Vec<u8>) -> bool;

const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOBITS: u32 = 8;
const SHF_COMPRESSED: u64 = 0x800;
/// More section headers than any real library has (GCC's own `-ffunction-
/// sections` objects are linked into far fewer output sections).
const MAX_SECTIONS: u64 = 4096;
/// How far before the section headers their names are looked for in the
/// same read.
const NAMES_BEFORE: u64 = 1024;
/// Largest `.symtab`, `.strtab` or debug section read (a large C++
/// library's symbol table is a few MiB).
pub(crate) const MAX_TABLE: u64 = 64 << 20;

use crate::elf::symbols::Sym;
use crate::elf::SectionTable;

/// One section header's fields that matter here.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Section {
    pub name: u32,
    pub kind: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub entsize: u64,
}

/// The section headers and their names, when present and sane.
pub(crate) struct Sections {
    pub headers: Vec<Section>,
    names: Vec<u8>,
}

/// `size` bytes at `offset` of the file, if they lie inside it and the
/// size is below [`MAX_TABLE`].
pub(crate) fn read_range(
    file_len: u64,
    read: ReadAt<'_>,
    offset: u64,
    size: u64,
) -> Option<Vec<u8>> {
    let end = offset.checked_add(size)?;
    if end > file_len || size > MAX_TABLE {
        return None;
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(size as usize).ok()?;
    read(offset, size, &mut buf).then_some(buf)
}

impl Sections {
    /// The section headers `table` (from the ELF header) locates, with
    /// their names: one read when the names lie in the KiB before the
    /// headers (where linkers put `.shstrtab`), else two.
    pub(crate) fn read(file_len: u64, read: ReadAt<'_>, table: SectionTable) -> Option<Sections> {
        let (shoff, shnum) = (table.offset, u64::from(table.count));
        let shstrndx = usize::from(table.names_index);
        // shnum 0 is either no headers or the extended-numbering escape;
        // either way there is nothing worth the trouble.
        if shoff == 0 || table.entry_size != 64 || shnum == 0 || shnum > MAX_SECTIONS {
            return None;
        }
        let start = shoff.saturating_sub(NAMES_BEFORE);
        let both = read_range(file_len, read, start, shoff - start + shnum * 64)?;
        let (before, table) = both.split_at((shoff - start) as usize);
        let headers: Vec<Section> = table
            .chunks_exact(64)
            .map(|h| Section {
                name: u32_at(h, 0),
                kind: u32_at(h, 4),
                flags: u64_at(h, 8),
                addr: u64_at(h, 16),
                offset: u64_at(h, 24),
                size: u64_at(h, 32),
                link: u32_at(h, 40),
                entsize: u64_at(h, 56),
            })
            .collect();
        let names = headers
            .get(shstrndx)
            .filter(|s| s.kind == SHT_STRTAB)
            .and_then(|s| {
                let at = s.offset.checked_sub(start);
                let end = at.and_then(|at| at.checked_add(s.size));
                match at
                    .zip(end)
                    .and_then(|(a, e)| before.get(a as usize..e as usize))
                {
                    Some(names) => Some(names.to_vec()),
                    None => read_range(file_len, read, s.offset, s.size),
                }
            })
            .unwrap_or_default();
        Some(Sections { headers, names })
    }

    /// The name of `s`, if its offset lies in the names and ends there.
    pub(crate) fn name(&self, s: &Section) -> Option<&[u8]> {
        let tail = self.names.get(s.name as usize..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(&tail[..end])
    }

    /// `.symtab` and its string table, if the file has them and they
    /// total at most `limit` bytes.
    pub(crate) fn symtab(
        &self,
        file_len: u64,
        read: ReadAt<'_>,
        limit: u64,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let sym = self
            .headers
            .iter()
            .find(|s| s.kind == SHT_SYMTAB && s.entsize == 24 && s.size % 24 == 0)?;
        let strings = self
            .headers
            .get(sym.link as usize)
            .filter(|s| s.kind == SHT_STRTAB)?;
        if sym.size.saturating_add(strings.size) > limit {
            return None;
        }
        let syms = read_range(file_len, read, sym.offset, sym.size)?;
        let strs = read_range(file_len, read, strings.offset, strings.size)?;
        Some((syms, strs))
    }

    /// Whether the file has a (non-empty, uncompressed) `.debug_info`.
    pub(crate) fn has_debug_info(&self) -> bool {
        self.headers.iter().any(|s| {
            s.kind != SHT_NOBITS
                && s.size > 0
                && s.flags & SHF_COMPRESSED == 0
                && self.name(s) == Some(b".debug_info")
        })
    }

    /// The total size of the `.debug_*` sections in the file.
    pub(crate) fn debug_info_size(&self) -> u64 {
        let debug = |s: &&Section| {
            s.kind != SHT_NOBITS && self.name(s).is_some_and(|n| n.starts_with(b".debug_"))
        };
        self.headers
            .iter()
            .filter(debug)
            .fold(0u64, |sum, s| sum.saturating_add(s.size))
    }

    /// The bytes of section `name` (uncompressed, in the file), if present.
    #[cfg_attr(not(feature = "debug-info"), allow(dead_code))]
    pub(crate) fn section(&self, file_len: u64, read: ReadAt<'_>, name: &[u8]) -> Option<Vec<u8>> {
        let s = self.headers.iter().find(|s| {
            s.kind != SHT_NOBITS && s.flags & SHF_COMPRESSED == 0 && self.name(s) == Some(name)
        })?;
        read_range(file_len, read, s.offset, s.size)
    }
}

/// The symbols of a `.symtab` table (whole entries only).
pub(crate) fn symbols(table: &[u8]) -> impl Iterator<Item = Sym> + '_ {
    table
        .chunks_exact(24)
        .skip(1)
        .filter_map(|e| e.try_into().ok())
        .map(Sym::from_bytes)
}

/// The NUL-terminated string at `offset` of `strings`.
pub(crate) fn string(strings: &[u8], offset: u32) -> Option<&[u8]> {
    let tail = strings.get(offset as usize..)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(&tail[..end])
}

#[cfg(test)]
pub(in crate::runtime::debug) mod tests {
    use super::*;

    /// A reader of the file's bytes as the loader's sources give them.
    pub(in crate::runtime::debug) fn reader(
        bytes: &[u8],
    ) -> impl Fn(u64, u64, &mut Vec<u8>) -> bool + '_ {
        move |at, len, out| {
            let at = at as usize;
            match bytes.get(at..at + len as usize) {
                Some(src) => {
                    out.extend_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    /// A file of `len` bytes whose two section headers (null, `.shstrtab`)
    /// are at `shoff`, their names at `names_at`.
    fn two_sections(len: usize, shoff: usize, names_at: usize) -> Vec<u8> {
        let names = b"\0.shstrtab\0";
        let mut f = vec![0u8; len];
        f[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&2u16.to_le_bytes());
        f[62..64].copy_from_slice(&1u16.to_le_bytes());
        f[names_at..names_at + names.len()].copy_from_slice(names);
        let h = shoff + 64;
        f[h..h + 4].copy_from_slice(&1u32.to_le_bytes());
        f[h + 4..h + 8].copy_from_slice(&SHT_STRTAB.to_le_bytes());
        f[h + 24..h + 32].copy_from_slice(&(names_at as u64).to_le_bytes());
        f[h + 32..h + 40].copy_from_slice(&(names.len() as u64).to_le_bytes());
        f
    }

    #[test]
    fn names_are_found_next_to_the_headers_and_far_from_them() {
        // Right before the headers (one read), and 8 KiB before (two).
        for names_at in [0x3f00, 0x2000] {
            let bytes = two_sections(0x4100, 0x4000, names_at);
            let read = reader(&bytes);
            let table = SectionTable::read(&bytes);
            let s = Sections::read(bytes.len() as u64, &read, table).expect("sections");
            assert_eq!(s.name(&s.headers[1]), Some(&b".shstrtab"[..]));
        }
        // Headers past the end of the file: nothing.
        let bytes = two_sections(0x4100, 0x4000, 0x3f00);
        let read = reader(&bytes[..0x4050]);
        let table = SectionTable::read(&bytes);
        assert!(Sections::read(0x4050, &read, table).is_none());
    }

    #[test]
    fn garbage_gives_nothing() {
        let bytes = vec![0xffu8; 4096];
        let read = reader(&bytes);
        let table = crate::elf::SectionTable::read(&bytes);
        assert!(Sections::read(bytes.len() as u64, &read, table).is_none());
        assert!(read_range(10, &read, u64::MAX, 2).is_none());
        assert!(read_range(10, &read, 8, 4).is_none());
        assert_eq!(string(b"ab\0c", 0), Some(&b"ab"[..]));
        assert_eq!(string(b"ab\0c", 3), None);
        assert_eq!(string(b"ab\0c", 9), None);
    }
}
