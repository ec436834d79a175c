//! Writes the in-memory ELF object that describes a loaded image to a
//! debugger, at the image's runtime addresses.
//!
//! gdb's JIT reader (`jit.c`) hands the object to BFD and adds it with each
//! allocated section at its own `sh_addr`: nothing is relocated. So every
//! address in the object is a runtime address: the sections that cover the
//! segments, the symbols, and `.eh_frame`, whose `sh_addr` is the address
//! of the image's own, so its PC-relative pointers hold. Its bytes are the
//! image's, in place (the object lies right under the image and names them
//! by their offset from its start), or a copy of them ([`Layout`]).
//!
//! Segments are described by `SHT_NOBITS` sections: the debugger reads code
//! and data from the process's memory (`trust-readonly-sections` is off by
//! default), so nothing of the image is copied. Sections never overlap (gdb
//! drops one of two overlapping sections from its address map): a segment
//! that holds `.eh_frame` is split around it.

use goblin::elf::sym::{STB_LOCAL, STT_FILE, STT_SECTION, STT_TLS};

use crate::elf::symbols::Sym;

/// One allocated section of the object: a runtime address range.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub start: u64,
    pub end: u64,
    pub kind: PieceKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceKind {
    /// `SHT_NOBITS`, executable.
    Text,
    /// `SHT_NOBITS`, read-only data.
    ReadOnly,
    /// `SHT_NOBITS`, writable data.
    Data,
    /// `.eh_frame`: `SHT_PROGBITS` with the section's bytes.
    EhFrame,
}

/// A symbol for `.symtab`: name, runtime value, size, `st_info`,
/// `st_other`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ObjSym<'a> {
    pub name: Name<'a>,
    pub value: u64,
    pub size: u64,
    pub info: u8,
    pub other: u8,
}

/// A symbol's name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Name<'a> {
    /// At this offset of the dynamic string table, which the object's
    /// `.strtab` is or starts with: no name is looked for.
    Dynamic(u32),
    /// These bytes (a name from the file's `.symtab`).
    Bytes(&'a [u8]),
}

/// Whether a debugger wants dynamic symbol `sym` (of a table whose
/// strings are `strsz` bytes): defined, global, named, not thread-local,
/// a section or a file (a `.dynsym`'s locals are section symbols). The
/// name itself is not read: for a big library that is a cache miss per
/// symbol (libLLVM: 39,000 symbols over 2.6 MB of names, 4 ms); an empty
/// name only makes a nameless symbol.
#[inline]
pub(crate) fn wanted_dynamic(sym: &Sym, strsz: usize) -> bool {
    sym.in_section()
        && sym.bind() != STB_LOCAL
        && !matches!(sym.kind(), STT_TLS | STT_SECTION | STT_FILE)
        && sym.name > 0
        && (sym.name as usize) < strsz
}

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_NOBITS: u32 = 8;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const ET_EXEC: u16 = 2;
/// Size of the ELF header, where `.eh_frame` starts (8-aligned).
pub(crate) const EHDR: usize = 64;
const SHDR: usize = 64;
const SYM: usize = 24;

/// A non-allocated section carried in the object (DWARF).
pub(crate) struct Extra<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Index of the piece (section index minus one) holding `addr`; `size`
/// zero symbols may sit at a piece's start.
pub(crate) fn piece_of(pieces: &[Piece], addr: u64) -> Option<usize> {
    // Sorted and disjoint: the last piece starting at or before `addr`.
    // Counted without branches: a handful of pieces, and a binary search's
    // mispredictions cost more (it is asked once per symbol).
    let starting_before = pieces
        .iter()
        .map(|p| usize::from(p.start <= addr))
        .sum::<usize>();
    let i = starting_before.checked_sub(1)?;
    (addr < pieces[i].end).then_some(i)
}

struct Shdr {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

/// The capacity [`build`] needs for at most `pieces` pieces, `eh_frame`
/// bytes of `.eh_frame`, a copied dynamic string table of `dynstr` bytes,
/// `extra`, and at most `symbols` symbols whose own names (`Name::Bytes`)
/// total `names` bytes (an upper bound: symbols outside every piece are
/// left out).
pub(crate) fn size(
    pieces: usize,
    eh_frame: usize,
    dynstr: usize,
    extra: &[Extra<'_>],
    (symbols, names): (usize, usize),
) -> usize {
    let extra_size: usize = extra.iter().map(|e| e.data.len() + e.name.len() + 1).sum();
    let sections = pieces + extra.len() + 4;
    EHDR + eh_frame
        + 8
        + extra_size
        + 8
        + (symbols + 1) * SYM
        + dynstr + 2 + names + symbols
        // Section names: ".rodata.NN" and the fixed ones.
        + sections * 12
        + 64
        + 8
        + sections * SHDR
}

/// Where the object's `.eh_frame` and `.strtab` bytes are, as offsets
/// from the object's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout<'a> {
    /// `.eh_frame`'s offset and length, if a piece is `EhFrame`.
    pub eh_frame: (u64, u64),
    pub strings: Strings<'a>,
}

/// The object's `.strtab`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Strings<'a> {
    /// Built in the object: a NUL, these bytes (the dynamic string table,
    /// whole), a NUL, then the names of `Name::Bytes` symbols.
    Copied(&'a [u8]),
    /// The image's own dynamic string table, this far from the object's
    /// start and this long (it starts and ends with a NUL); `Name::Bytes`
    /// symbols go unnamed.
    InPlace { offset: u64, len: u64 },
}

/// Where [`build`] writes: a vector, or the room reserved under the image.
pub(crate) trait Out {
    fn len(&self) -> usize;
    fn extend_from_slice(&mut self, bytes: &[u8]);
    fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }
    /// Zero bytes up to `len`.
    fn pad_to(&mut self, len: usize);
    /// The next `len` bytes, made room for (zeroed, or anything when they
    /// will all be written); `None` if there is no room.
    fn tail(&mut self, len: usize) -> Option<&mut [u8]>;
    /// Gives back what was made room for past `len`.
    fn truncate(&mut self, len: usize);
    /// The first [`EHDR`] bytes.
    fn header(&mut self) -> Option<&mut [u8]>;
}

impl Out for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
    fn tail(&mut self, len: usize) -> Option<&mut [u8]> {
        let at = Vec::len(self);
        self.resize(at.checked_add(len)?, 0);
        Some(&mut self[at..])
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    fn pad_to(&mut self, len: usize) {
        self.resize(len.max(Vec::len(self)), 0);
    }
    fn header(&mut self) -> Option<&mut [u8]> {
        self.get_mut(..EHDR)
    }
}

/// A fixed buffer written from its start; what does not fit is dropped
/// and remembered ([`SliceOut::overflowed`]).
pub(crate) struct SliceOut<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflowed: bool,
}

impl<'a> SliceOut<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceOut {
            buf,
            len: 0,
            overflowed: false,
        }
    }
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl Out for SliceOut<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflowed = true,
        }
    }
    fn pad_to(&mut self, len: usize) {
        match self.buf.get_mut(self.len..len) {
            Some(dst) => {
                dst.fill(0);
                self.len = self.len.max(len);
            }
            None if len <= self.len => {}
            None => self.overflowed = true,
        }
    }
    fn tail(&mut self, len: usize) -> Option<&mut [u8]> {
        let end = self.len.checked_add(len)?;
        let at = self.len;
        match self.buf.get_mut(at..end) {
            Some(dst) => {
                self.len = end;
                Some(dst)
            }
            None => {
                self.overflowed = true;
                None
            }
        }
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    fn header(&mut self) -> Option<&mut [u8]> {
        self.buf.get_mut(..EHDR)
    }
}

/// The object. `out` holds the ELF header's [`EHDR`] bytes (written
/// here) and whatever `layout` says lies in it already (a copied
/// `.eh_frame`); `pieces` sorted by address and disjoint. Its `.symtab`
/// holds `locals` (named by their own bytes, which go to a copied
/// `.strtab`), then the wanted symbols of `dynamic`
/// ([`wanted_dynamic`]); of both, those whose value lies in a piece.
/// Appends everything else to `out` (sized by [`size`]).
pub(crate) fn build(
    out: &mut impl Out,
    machine: u16,
    pieces: &[Piece],
    extra: &[Extra<'_>],
    layout: Layout<'_>,
    locals: &[ObjSym<'_>],
    dynamic: DynamicTable<'_>,
) {
    let (eh_frame_at, eh_frame_len) = layout.eh_frame;
    let mut shstrtab: Vec<u8> = Vec::with_capacity(64 + 12 * (pieces.len() + extra.len()));
    shstrtab.push(0);
    let name = |s: &str, shstrtab: &mut Vec<u8>| {
        let at = shstrtab.len() as u32;
        shstrtab.extend_from_slice(s.as_bytes());
        shstrtab.push(0);
        at
    };
    let mut shdrs: Vec<Shdr> = Vec::with_capacity(pieces.len() + extra.len() + 4);
    shdrs.push(Shdr {
        name: 0,
        kind: 0,
        flags: 0,
        addr: 0,
        offset: 0,
        size: 0,
        link: 0,
        info: 0,
        align: 0,
        entsize: 0,
    });
    let (mut texts, mut ros, mut datas) = (0, 0, 0);
    // ".text", ".text.1", ...
    let numbered = |base: &str, n: &mut u32, shstrtab: &mut Vec<u8>| {
        *n += 1;
        let at = shstrtab.len() as u32;
        shstrtab.extend_from_slice(base.as_bytes());
        if *n > 1 {
            shstrtab.push(b'.');
            shstrtab.extend_from_slice((*n - 1).to_string().as_bytes());
        }
        shstrtab.push(0);
        at
    };
    for p in pieces {
        let (sname, kind, flags, offset, size, align) = match p.kind {
            PieceKind::Text => (
                numbered(".text", &mut texts, &mut shstrtab),
                SHT_NOBITS,
                SHF_ALLOC | SHF_EXECINSTR,
                EHDR as u64,
                p.end - p.start,
                16,
            ),
            PieceKind::ReadOnly => (
                numbered(".rodata", &mut ros, &mut shstrtab),
                SHT_NOBITS,
                SHF_ALLOC,
                EHDR as u64,
                p.end - p.start,
                8,
            ),
            PieceKind::Data => (
                numbered(".data", &mut datas, &mut shstrtab),
                SHT_NOBITS,
                SHF_ALLOC | SHF_WRITE,
                EHDR as u64,
                p.end - p.start,
                8,
            ),
            PieceKind::EhFrame => (
                name(".eh_frame", &mut shstrtab),
                SHT_PROGBITS,
                SHF_ALLOC,
                eh_frame_at,
                eh_frame_len,
                8,
            ),
        };
        shdrs.push(Shdr {
            name: sname,
            kind,
            flags,
            addr: p.start,
            offset,
            size,
            link: 0,
            info: 0,
            align,
            entsize: 0,
        });
    }
    for e in extra {
        let at = out.len() as u64;
        out.extend_from_slice(e.data);
        shdrs.push(Shdr {
            name: name(e.name, &mut shstrtab),
            kind: SHT_PROGBITS,
            flags: 0,
            addr: 0,
            offset: at,
            size: e.data.len() as u64,
            link: 0,
            info: 0,
            align: 1,
            entsize: 0,
        });
    }

    // .symtab: the null symbol, locals, then the rest (sh_info: the first
    // non-local). Each symbol goes to the section of the piece holding it.
    // Names: offsets in the image's dynamic string table, in place or
    // copied after a leading NUL into .strtab, which then gets the names
    // of the other symbols, gathered here.
    let (dynamic_shift, own_names_at) = match layout.strings {
        Strings::Copied(dynstr) => (1, Some(dynstr.len() as u32 + 2)),
        Strings::InPlace { .. } => (0, None),
    };
    let mut own_names: Vec<u8> = Vec::new();
    let symtab_index = shdrs.len() as u32;
    out.pad_to(out.len().next_multiple_of(8));
    let symtab_at = out.len();
    out.extend_from_slice(&[0u8; SYM]);
    // Room for every symbol, written in place and cut to what was written.
    let most = locals.len() + dynamic.entries.len() / SYM;
    let (mut written, mut locals_written) = (0, 0);
    if let Some(room) = most.checked_mul(SYM).and_then(|len| out.tail(len)) {
        let mut hint = 0;
        for s in locals {
            let Some(piece) = piece_hinted(pieces, &mut hint, s.value) else {
                continue;
            };
            let name_at = match (s.name, own_names_at) {
                // After the leading NUL of a copy.
                (Name::Dynamic(offset), _) => offset + dynamic_shift,
                (Name::Bytes(name), Some(at)) => {
                    let this = at + own_names.len() as u32;
                    own_names.extend_from_slice(name);
                    own_names.push(0);
                    this
                }
                (Name::Bytes(_), None) => 0,
            };
            let Some(e) = room.get_mut(written * SYM..(written + 1) * SYM) else {
                break;
            };
            e[0..4].copy_from_slice(&name_at.to_le_bytes());
            e[4] = s.info;
            e[5] = s.other;
            e[6..8].copy_from_slice(&(piece as u16 + 1).to_le_bytes());
            e[8..16].copy_from_slice(&s.value.to_le_bytes());
            e[16..24].copy_from_slice(&s.size.to_le_bytes());
            written += 1;
        }
        locals_written = written;
        let rest = room.get_mut(written * SYM..).unwrap_or_default();
        written += write_dynamic(rest, dynamic, pieces, dynamic_shift);
    }
    // sh_info: the first non-local symbol.
    let first_global = 1 + locals_written as u32;
    out.truncate(symtab_at + (1 + written) * SYM);
    let count = (out.len() - symtab_at) / SYM;

    // .strtab: the dynamic string table, whole (after a leading NUL, and
    // with a NUL in case it lacks its last), then the other names; or the
    // image's own dynamic string table, where it is.
    let (strtab_at, strtab_size) = match layout.strings {
        Strings::Copied(dynstr) => {
            let strtab_at = out.len();
            out.push(0);
            out.extend_from_slice(dynstr);
            out.push(0);
            out.extend_from_slice(&own_names);
            (strtab_at as u64, (out.len() - strtab_at) as u64)
        }
        Strings::InPlace { offset, len } => (offset, len),
    };
    let symtab_name = name(".symtab", &mut shstrtab);
    let strtab_name = name(".strtab", &mut shstrtab);
    let shstrtab_name = name(".shstrtab", &mut shstrtab);
    shdrs.push(Shdr {
        name: symtab_name,
        kind: SHT_SYMTAB,
        flags: 0,
        addr: 0,
        offset: symtab_at as u64,
        size: (count * SYM) as u64,
        link: symtab_index + 1,
        info: first_global,
        align: 8,
        entsize: SYM as u64,
    });
    shdrs.push(Shdr {
        name: strtab_name,
        kind: SHT_STRTAB,
        flags: 0,
        addr: 0,
        offset: strtab_at,
        size: strtab_size,
        link: 0,
        info: 0,
        align: 1,
        entsize: 0,
    });
    let shstrtab_at = out.len() as u64;
    out.extend_from_slice(&shstrtab);
    let shstrndx = shdrs.len() as u16;
    shdrs.push(Shdr {
        name: shstrtab_name,
        kind: SHT_STRTAB,
        flags: 0,
        addr: 0,
        offset: shstrtab_at,
        size: shstrtab.len() as u64,
        link: 0,
        info: 0,
        align: 1,
        entsize: 0,
    });

    out.pad_to(out.len().next_multiple_of(8));
    let shoff = out.len() as u64;
    for s in &shdrs {
        out.extend_from_slice(&s.name.to_le_bytes());
        out.extend_from_slice(&s.kind.to_le_bytes());
        out.extend_from_slice(&s.flags.to_le_bytes());
        out.extend_from_slice(&s.addr.to_le_bytes());
        out.extend_from_slice(&s.offset.to_le_bytes());
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.link.to_le_bytes());
        out.extend_from_slice(&s.info.to_le_bytes());
        out.extend_from_slice(&s.align.to_le_bytes());
        out.extend_from_slice(&s.entsize.to_le_bytes());
    }

    // The ELF header.
    let Some(h) = out.header() else { return };
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[40..48].copy_from_slice(&shoff.to_le_bytes());
    h[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
    h[58..60].copy_from_slice(&(SHDR as u16).to_le_bytes());
    h[60..62].copy_from_slice(&(shdrs.len() as u16).to_le_bytes());
    h[62..64].copy_from_slice(&shstrndx.to_le_bytes());
}

/// A dynamic symbol table as it lies in the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DynamicTable<'a> {
    /// The entries after the null symbol, [`SYM`] bytes each.
    pub entries: &'a [u8],
    /// The size of its string table (names at or past it are left out).
    pub strsz: usize,
    /// The load bias: runtime address = `bias` + value.
    pub bias: u64,
}

/// Writes into `records` the `.symtab` record of each symbol of `table` a
/// debugger wants ([`wanted_dynamic`]) whose runtime address lies in a
/// piece; returns how many. A record is the entry itself with its value
/// made a runtime address, its section the piece's, and its name's offset
/// moved by `name_shift`. One pass of a few instructions an entry:
/// libLLVM has 39,000.
fn write_dynamic(
    records: &mut [u8],
    table: DynamicTable<'_>,
    pieces: &[Piece],
    name_shift: u32,
) -> usize {
    let mut records = records.chunks_exact_mut(SYM);
    let mut written = 0;
    // The piece last found for a section index (by its low bits): the
    // symbols of one section lie in one piece, and the table mixes them
    // (functions, vtables, data), so one hint for all would often miss.
    // Only a hint: every answer is checked against the address.
    let mut piece_of_section = [0u8; 32];
    for entry in table.entries.chunks_exact(SYM) {
        let Ok(e) = <&[u8; SYM]>::try_from(entry) else {
            continue;
        };
        let sym = Sym::from_bytes(e);
        if !wanted_dynamic(&sym, table.strsz) {
            continue;
        }
        let value = table.bias.wrapping_add(sym.value);
        let hint = &mut piece_of_section[usize::from(sym.shndx) % 32];
        let piece = match pieces.get(usize::from(*hint)) {
            Some(p) if p.start <= value && value < p.end => usize::from(*hint),
            _ => {
                let Some(i) = piece_of(pieces, value) else {
                    continue;
                };
                *hint = u8::try_from(i).unwrap_or(0);
                i
            }
        };
        let Some(r) = records.next() else { break };
        r.copy_from_slice(e);
        r[0..4].copy_from_slice(&sym.name.wrapping_add(name_shift).to_le_bytes());
        r[6..8].copy_from_slice(&(piece as u16 + 1).to_le_bytes());
        r[8..16].copy_from_slice(&value.to_le_bytes());
        written += 1;
    }
    written
}

/// The piece holding `addr`, trying the `hint`'s first (symbols come in
/// runs in one piece: code, then data); updates the hint.
#[inline]
fn piece_hinted(pieces: &[Piece], hint: &mut usize, addr: u64) -> Option<usize> {
    let piece = match pieces.get(*hint) {
        Some(p) if p.start <= addr && addr < p.end => *hint,
        _ => piece_of(pieces, addr)?,
    };
    *hint = piece;
    Some(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_found_by_address() {
        let p = |start, end| Piece {
            start,
            end,
            kind: PieceKind::Text,
        };
        let pieces = [p(0x1000, 0x2000), p(0x3000, 0x3010)];
        assert_eq!(piece_of(&pieces, 0xfff), None);
        assert_eq!(piece_of(&pieces, 0x1000), Some(0));
        assert_eq!(piece_of(&pieces, 0x1fff), Some(0));
        assert_eq!(piece_of(&pieces, 0x2000), None);
        assert_eq!(piece_of(&pieces, 0x300f), Some(1));
        assert_eq!(piece_of(&pieces, 0x3010), None);
    }

    /// A page of code, then 16 bytes of `.eh_frame`.
    fn code_and_eh_frame() -> [Piece; 2] {
        [
            Piece {
                start: 0x7000_0000,
                end: 0x7000_1000,
                kind: PieceKind::Text,
            },
            Piece {
                start: 0x7000_1000,
                end: 0x7000_1010,
                kind: PieceKind::EhFrame,
            },
        ]
    }

    /// `Elf64_Sym` entries as they lie in an image.
    fn dynsym(entries: &[(u32, u8, u16, u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(name, info, shndx, value, size) in entries {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&[info, 0]);
            out.extend_from_slice(&shndx.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        }
        out
    }

    #[test]
    fn object_parses_back() {
        let pieces = code_and_eh_frame();
        let locals = [ObjSym {
            name: Name::Bytes(b"local_fn"),
            value: 0x7000_0010,
            size: 16,
            info: 2, // LOCAL FUNC
            other: 0,
        }];
        // At bias 0x7000_0000: a global function; one outside every piece,
        // an undefined one, a section symbol, a name past the strings:
        // left out.
        let entries = dynsym(&[
            (1, 0x12, 7, 0x100, 32),
            (1, 0x12, 7, 0x1_0000, 1),
            (1, 0x12, 0, 0, 0),
            (0, 0x03, 7, 0x200, 0),
            (99, 0x12, 7, 0x300, 4),
        ]);
        let dynstr = b"\0global_fn\0";
        let dynamic = DynamicTable {
            entries: &entries,
            strsz: dynstr.len(),
            bias: 0x7000_0000,
        };
        let mut obj = vec![0u8; EHDR];
        obj.extend_from_slice(&[0u8; 16]);
        let capacity = size(pieces.len(), 16, dynstr.len(), &[], (6, 9));
        let layout = Layout {
            eh_frame: (EHDR as u64, 16),
            strings: Strings::Copied(dynstr),
        };
        build(&mut obj, 62, &pieces, &[], layout, &locals, dynamic);
        assert!(obj.len() <= capacity);
        let elf = goblin::elf::Elf::parse(&obj).expect("parses");
        let names: Vec<_> = elf
            .section_headers
            .iter()
            .map(|s| elf.shdr_strtab.get_at(s.sh_name).unwrap_or("?"))
            .collect();
        assert_eq!(
            names,
            ["", ".text", ".eh_frame", ".symtab", ".strtab", ".shstrtab"]
        );
        assert_eq!(elf.section_headers[1].sh_addr, 0x7000_0000);
        let syms: Vec<_> = elf
            .syms
            .iter()
            .map(|s| {
                (
                    elf.strtab.get_at(s.st_name).unwrap_or("?"),
                    s.st_value,
                    s.st_shndx,
                )
            })
            .collect();
        assert_eq!(
            syms,
            [
                ("", 0, 0),
                ("local_fn", 0x7000_0010, 1),
                ("global_fn", 0x7000_0100, 1)
            ]
        );
        // Globals after the locals: sh_info is the first of them.
        assert_eq!(elf.section_headers[3].sh_info, 2);
        assert_eq!(elf.syms.get(2).map(|s| s.st_size), Some(32));
    }

    #[test]
    fn object_in_place_refers_to_the_bytes_above_it() {
        // The object in the first page, "the image" above it: its
        // `.eh_frame` at 0x1000 and its dynamic string table at 0x1100.
        let mut buf = vec![0u8; 0x1200];
        let dynstr = b"\0exported_fn\0";
        buf[0x1100..0x1100 + dynstr.len()].copy_from_slice(dynstr);
        let pieces = code_and_eh_frame();
        let entries = dynsym(&[(1, 0x12, 7, 0x40, 8)]);
        let dynamic = DynamicTable {
            entries: &entries,
            strsz: dynstr.len(),
            bias: 0x7000_0000,
        };
        let layout = Layout {
            eh_frame: (0x1000, 16),
            strings: Strings::InPlace {
                offset: 0x1100,
                len: dynstr.len() as u64,
            },
        };
        let (room, _) = buf.split_at_mut(0x1000);
        let mut out = SliceOut::new(room);
        out.pad_to(EHDR);
        build(&mut out, 62, &pieces, &[], layout, &[], dynamic);
        assert!(!out.overflowed());
        let elf = goblin::elf::Elf::parse(&buf).expect("parses");
        let eh = &elf.section_headers[2];
        assert_eq!((eh.sh_offset, eh.sh_addr), (0x1000, 0x7000_1000));
        let names: Vec<_> = elf
            .syms
            .iter()
            .map(|s| elf.strtab.get_at(s.st_name))
            .collect();
        assert_eq!(names, [Some(""), Some("exported_fn")]);

        // A room too small is noticed, not overrun.
        let mut small = [0u8; 100];
        let mut out = SliceOut::new(&mut small);
        out.pad_to(EHDR);
        build(&mut out, 62, &pieces, &[], layout, &[], dynamic);
        assert!(out.overflowed());
    }
}
