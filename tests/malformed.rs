//! Malformed input: a valid library of the machine (zlib) patched one field
//! at a time. Each case must fail with the specific `Error` variant
//! expected, never panic, and leave the address space and the fd table
//! exactly as they were.
//!
//! All cases run from one test function, one after the other, so that no
//! other test thread maps or unmaps memory while mappings are counted.

use std::panic::{catch_unwind, AssertUnwindSafe};

use goblin::elf::dynamic::*;
use goblin::elf::program_header::*;
use memdl::{Error, Limits, Options};

mod common;
use common::{machine_lib as multiarch_lib, maps_count as maps_lines, open_fds};

/// The base library with helpers that find fields by meaning.
#[derive(Clone)]
struct Elf {
    bytes: Vec<u8>,
}

impl Elf {
    fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes(self.bytes[off..off + 2].try_into().unwrap())
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().unwrap())
    }
    fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.bytes[off..off + 8].try_into().unwrap())
    }
    fn set16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set64(&mut self, off: usize, v: u64) {
        self.bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// File offsets of every program header.
    fn phdrs(&self) -> Vec<usize> {
        let phoff = self.u64(32) as usize;
        (0..self.u16(56) as usize).map(|i| phoff + i * 56).collect()
    }
    fn phdrs_of(&self, p_type: u32) -> Vec<usize> {
        self.phdrs()
            .into_iter()
            .filter(|&p| self.u32(p) == p_type)
            .collect()
    }
    /// Converts a virtual address to a file offset through the PT_LOADs.
    fn file_offset(&self, vaddr: u64) -> usize {
        for p in self.phdrs_of(PT_LOAD) {
            let (off, va, filesz) = (self.u64(p + 8), self.u64(p + 16), self.u64(p + 32));
            if vaddr >= va && vaddr < va + filesz {
                return (vaddr - va + off) as usize;
            }
        }
        panic!("vaddr {vaddr:#x} not in file")
    }
    /// File offsets of the dynamic entries (up to and including DT_NULL).
    fn dyn_entries(&self) -> Vec<usize> {
        let p = self.phdrs_of(PT_DYNAMIC)[0];
        let (off, size) = (self.u64(p + 8) as usize, self.u64(p + 32) as usize);
        let mut out = Vec::new();
        for e in (off..off + size).step_by(16) {
            out.push(e);
            if self.u64(e) == DT_NULL {
                break;
            }
        }
        out
    }
    /// File offset of the entry with `tag`.
    fn dyn_entry(&self, tag: u64) -> usize {
        *self
            .dyn_entries()
            .iter()
            .find(|&&e| self.u64(e) == tag)
            .unwrap_or_else(|| panic!("no dynamic tag {tag:#x}"))
    }
    fn dyn_value(&self, tag: u64) -> u64 {
        self.u64(self.dyn_entry(tag) + 8)
    }
    fn set_dyn(&mut self, tag: u64, value: u64) {
        let e = self.dyn_entry(tag);
        self.set64(e + 8, value);
    }
    /// File offset of the `i`-th RELA entry of the table at `tag`.
    fn rela(&self, tag: u64, i: usize) -> usize {
        self.file_offset(self.dyn_value(tag)) + i * 24
    }
    /// File offset of the first RELA entry of `tag`'s table whose type is `r_type`.
    fn rela_of_type(&self, tag: u64, size_tag: u64, r_type: u32) -> usize {
        let n = self.dyn_value(size_tag) as usize / 24;
        (0..n)
            .map(|i| self.rela(tag, i))
            .find(|&e| self.u32(e + 8) == r_type)
            .expect("relocation of that type")
    }
    /// File offset of the `Elf64_Sym` of the first undefined symbol a
    /// JUMP_SLOT relocation names (an import).
    fn imported_symbol(&self) -> usize {
        let n = self.dyn_value(DT_PLTRELSZ) as usize / 24;
        (0..n)
            .map(|i| {
                let index = self.u32(self.rela(DT_JMPREL, i) + 12) as u64;
                self.file_offset(self.dyn_value(DT_SYMTAB) + index * 24)
            })
            .find(|&sym| self.u16(sym + 6) == 0)
            .expect("an imported function")
    }
    /// Highest end address of the PT_LOADs: anything at or past it is outside.
    fn image_end(&self) -> u64 {
        self.phdrs_of(PT_LOAD)
            .iter()
            .map(|&p| self.u64(p + 16) + self.u64(p + 40))
            .max()
            .unwrap()
    }
    /// Address of the first byte of the executable segment.
    fn text_vaddr(&self) -> u64 {
        let p = *self
            .phdrs_of(PT_LOAD)
            .iter()
            .find(|&&p| self.u32(p + 4) & PF_X != 0)
            .unwrap();
        self.u64(p + 16)
    }
}

#[cfg(target_arch = "x86_64")]
const R_RELATIVE: u32 = goblin::elf::reloc::R_X86_64_RELATIVE;
#[cfg(target_arch = "aarch64")]
const R_RELATIVE: u32 = goblin::elf::reloc::R_AARCH64_RELATIVE;

type Patch = Box<dyn Fn(&mut Elf)>;
type Expect = Box<dyn Fn(&Error) -> bool>;

struct Case {
    name: &'static str,
    patch: Patch,
    expect: Expect,
    options: Options,
}

fn case(
    name: &'static str,
    patch: impl Fn(&mut Elf) + 'static,
    expect: impl Fn(&Error) -> bool + 'static,
) -> Case {
    Case {
        name,
        patch: Box::new(patch),
        expect: Box::new(expect),
        options: Options::new(),
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        case(
            "truncated inside the ELF header",
            |e| e.bytes.truncate(40),
            |err| {
                matches!(
                    err,
                    Error::Truncated {
                        what: "ELF header",
                        ..
                    }
                )
            },
        ),
        case(
            "truncated inside the program headers",
            |e| e.bytes.truncate(100),
            |err| {
                matches!(
                    err,
                    Error::Truncated {
                        what: "program header table",
                        ..
                    }
                )
            },
        ),
        case(
            "truncated inside a segment",
            |e| {
                let len = e.bytes.len();
                e.bytes.truncate(len / 2)
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        kind: "PT_LOAD",
                        ..
                    }
                )
            },
        ),
        case(
            "empty input",
            |e| e.bytes.clear(),
            |err| matches!(err, Error::BadMagic),
        ),
        case(
            "bad magic",
            |e| e.bytes[1] = b'X',
            |err| matches!(err, Error::BadMagic),
        ),
        case(
            "32-bit class",
            |e| e.bytes[4] = 1,
            |err| matches!(err, Error::UnsupportedClass(1)),
        ),
        case(
            "big-endian",
            |e| e.bytes[5] = 2,
            |err| matches!(err, Error::UnsupportedEncoding(2)),
        ),
        case(
            "ident version 0",
            |e| e.bytes[6] = 0,
            |err| matches!(err, Error::UnsupportedVersion(0)),
        ),
        case(
            "e_version 2",
            |e| e.set32(20, 2),
            |err| matches!(err, Error::UnsupportedVersion(2)),
        ),
        case(
            "executable, not shared object",
            |e| e.set16(16, 2),
            |err| matches!(err, Error::NotSharedObject(2)),
        ),
        case(
            "wrong machine",
            |e| e.set16(18, 40),
            |err| matches!(err, Error::WrongMachine { found: 40, .. }),
        ),
        case(
            "e_phentsize 32",
            |e| e.set16(54, 32),
            |err| matches!(err, Error::BadProgramHeaderSize(32)),
        ),
        case(
            "e_phnum 0",
            |e| e.set16(56, 0),
            |err| matches!(err, Error::BadProgramHeaderCount(0)),
        ),
        case(
            "e_phnum extended-numbering escape",
            |e| e.set16(56, 0xffff),
            |err| matches!(err, Error::BadProgramHeaderCount(0xffff)),
        ),
        case(
            "e_phnum past the end of the file",
            |e| e.set16(56, 4000),
            |err| {
                matches!(
                    err,
                    Error::Truncated {
                        what: "program header table",
                        ..
                    }
                )
            },
        ),
        case(
            "e_phoff past the end",
            |e| e.set64(32, 1 << 40),
            |err| {
                matches!(
                    err,
                    Error::Truncated {
                        what: "program header table",
                        ..
                    }
                )
            },
        ),
        case(
            "e_phoff wraps around",
            |e| e.set64(32, u64::MAX - 8),
            |err| {
                matches!(
                    err,
                    Error::Truncated {
                        what: "program header table",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOAD offset past the end",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                e.set64(p + 8, 1 << 40);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        kind: "PT_LOAD",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOAD p_filesz > p_memsz",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                let memsz = e.u64(p + 40);
                e.set64(p + 32, memsz + 8);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        reason: "p_filesz is larger than p_memsz",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOAD p_memsz huge",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                e.set64(p + 40, 1 << 52);
            },
            |err| {
                matches!(
                    err,
                    Error::LimitExceeded {
                        what: "image span",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOAD address wraps",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                e.set64(p + 16, u64::MAX - 0xfff);
                e.set64(p + 8, 0);
            },
            |err| matches!(err, Error::BadSegment { .. }),
        ),
        case(
            "PT_LOAD offset and address not congruent",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                let va = e.u64(p + 16);
                e.set64(p + 16, va + 8);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        reason: "p_vaddr and p_offset are not congruent modulo the page size",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOAD p_align not a power of two",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                e.set64(p + 48, 0x3000);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        reason: "p_align is not a power of two",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_LOADs overlap",
            |e| {
                let p = e.phdrs_of(PT_LOAD);
                let (va, off) = (e.u64(p[0] + 16), e.u64(p[0] + 8));
                e.set64(p[1] + 16, va);
                e.set64(p[1] + 8, off);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        reason: "overlaps or precedes the previous PT_LOAD",
                        ..
                    }
                )
            },
        ),
        case(
            "no PT_LOAD",
            |e| {
                for p in e.phdrs_of(PT_LOAD) {
                    e.set32(p, PT_NULL);
                }
            },
            |err| matches!(err, Error::NoLoadSegments),
        ),
        case(
            "no PT_DYNAMIC",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                e.set32(p, PT_NULL);
            },
            |err| matches!(err, Error::NoDynamicSegment),
        ),
        case(
            "PT_DYNAMIC outside the file",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                e.set64(p + 8, 1 << 40);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        kind: "PT_DYNAMIC",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_DYNAMIC outside the loaded image",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let end = e.image_end();
                e.set64(p + 16, end + 0x10000);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "PT_DYNAMIC",
                        ..
                    }
                )
            },
        ),
        case(
            "PT_DYNAMIC size not a multiple of 16",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let sz = e.u64(p + 40);
                e.set64(p + 40, sz - 4);
            },
            |err| {
                matches!(
                    err,
                    Error::BadSegment {
                        kind: "PT_DYNAMIC",
                        ..
                    }
                )
            },
        ),
        case(
            "dynamic array without DT_NULL",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let (off, size) = (e.u64(p + 8) as usize, e.u64(p + 32) as usize);
                for at in (off..off + size).step_by(16) {
                    if e.u64(at) == DT_NULL {
                        e.set64(at, DT_DEBUG);
                    }
                }
            },
            |err| {
                matches!(
                    err,
                    Error::BadDynamic {
                        reason: "no DT_NULL terminator"
                    }
                )
            },
        ),
        case(
            "writable and executable segment",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                e.set32(p + 4, PF_R | PF_W | PF_X);
            },
            |err| matches!(err, Error::WritableAndExecutable { .. }),
        ),
        case(
            "DT_TEXTREL",
            |e| {
                let at = e.dyn_entry(DT_SONAME);
                e.set64(at, DT_TEXTREL);
            },
            |err| matches!(err, Error::TextRelocations),
        ),
        case(
            "huge PT_TLS",
            |e| {
                let p = e.phdrs_of(PT_GNU_STACK)[0];
                e.set32(p, PT_TLS);
                e.set64(p + 40, 1 << 40);
            },
            |err| {
                matches!(
                    err,
                    Error::LimitExceeded {
                        what: "PT_TLS size",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_STRTAB outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_STRTAB, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_STRTAB",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_STRSZ past the segment",
            |e| e.set_dyn(DT_STRSZ, 1 << 40),
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_STRTAB",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_SYMTAB outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_SYMTAB, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_SYMTAB",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_SYMTAB in a writable segment",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                let va = e.u64(p + 16);
                e.set_dyn(DT_SYMTAB, va);
            },
            |err| {
                matches!(
                    err,
                    Error::TableInWritableSegment {
                        table: "DT_SYMTAB",
                        ..
                    } | Error::TableOutOfBounds {
                        table: "DT_SYMTAB",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_SYMENT wrong",
            |e| e.set_dyn(DT_SYMENT, 16),
            |err| {
                matches!(
                    err,
                    Error::BadEntrySize {
                        table: "DT_SYMENT",
                        size: 16,
                        ..
                    }
                )
            },
        ),
        case(
            "DT_RELA outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_RELA, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_RELA",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_JMPREL outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_JMPREL, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_JMPREL",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_RELASZ not a multiple of DT_RELAENT",
            |e| {
                let sz = e.dyn_value(DT_RELASZ);
                e.set_dyn(DT_RELASZ, sz - 8);
            },
            |err| {
                matches!(
                    err,
                    Error::BadTableSize {
                        table: "DT_RELA",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_RELAENT wrong",
            |e| e.set_dyn(DT_RELAENT, 16),
            |err| {
                matches!(
                    err,
                    Error::BadEntrySize {
                        table: "DT_RELAENT",
                        size: 16,
                        ..
                    }
                )
            },
        ),
        case(
            "DT_PLTREL neither REL nor RELA",
            |e| e.set_dyn(DT_PLTREL, 99),
            |err| matches!(err, Error::BadDynamic { .. }),
        ),
        case(
            "DT_GNU_HASH outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_GNU_HASH, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_GNU_HASH",
                        ..
                    }
                )
            },
        ),
        case(
            "GNU hash with zero buckets",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at, 0);
            },
            |err| {
                matches!(
                    err,
                    Error::BadHashTable {
                        reason: "zero buckets",
                        ..
                    }
                )
            },
        ),
        case(
            "GNU hash with zero bloom words",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at + 8, 0);
            },
            |err| matches!(err, Error::BadHashTable { .. }),
        ),
        case(
            "GNU hash bucket past the chains",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let bloom = e.u32(at + 8) as usize;
                e.set32(at + 16 + bloom * 8, 1_000_000);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_GNU_HASH",
                        ..
                    }
                )
            },
        ),
        case(
            "GNU hash chain never ends (symbol limit)",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let bloom = e.u32(at + 8) as usize;
                e.set32(at + 16 + bloom * 8, 0x7fff_0000);
            },
            |err| {
                matches!(
                    err,
                    Error::LimitExceeded {
                        what: "dynamic symbols",
                        ..
                    }
                )
            },
        ),
        case(
            "relocation symbol index out of range",
            |e| {
                let rel = e.rela(DT_JMPREL, 0);
                e.set32(rel + 12, 0x00ff_ffff);
            },
            |err| matches!(err, Error::SymbolIndexOutOfRange { .. }),
        ),
        case(
            "relocation target outside the image",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let end = e.image_end();
                e.set64(rel, end + 0x1000);
            },
            |err| matches!(err, Error::RelocationOutOfBounds { .. }),
        ),
        case(
            "relocation target in a read-only segment",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let text = e.text_vaddr();
                e.set64(rel, text);
            },
            |err| matches!(err, Error::RelocationInReadOnly { .. }),
        ),
        case(
            "relocation target straddles the image end",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let end = e.image_end();
                e.set64(rel, end - 4);
            },
            |err| matches!(err, Error::RelocationOutOfBounds { .. }),
        ),
        case(
            "unknown relocation type",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                e.set32(rel + 8, 999);
            },
            |err| matches!(err, Error::UnsupportedRelocation { r_type: 999, .. }),
        ),
        case(
            "import name past DT_STRSZ",
            |e| {
                let sym = e.imported_symbol();
                e.set32(sym, 0x00ff_ffff);
            },
            |err| matches!(err, Error::BadStringOffset { .. }),
        ),
        case(
            "string table without a final NUL",
            |e| {
                // Cut the table in the middle of the first import's name.
                let sym = e.imported_symbol();
                let name = e.u32(sym) as u64;
                e.set_dyn(DT_STRSZ, name + 2);
            },
            |err| matches!(err, Error::BadStringOffset { .. }),
        ),
        case(
            "DT_NEEDED name past DT_STRSZ",
            |e| e.set_dyn(DT_NEEDED, 1 << 30),
            |err| matches!(err, Error::BadStringOffset { .. }),
        ),
        case(
            "DT_NEEDED library that does not exist",
            |e| {
                // Point the needed name at the SONAME string "libz.so.1".
                let soname = e.dyn_value(DT_SONAME);
                e.set_dyn(DT_NEEDED, soname);
                let strtab = e.file_offset(e.dyn_value(DT_STRTAB));
                e.bytes[strtab + soname as usize + 3] = b'Q';
            },
            |err| matches!(err, Error::NeededLibrary { .. }),
        ),
        case(
            "DT_VERNEED outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_VERNEED, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_VERNEED",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_VERSYM outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_VERSYM, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_VERSYM",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_INIT_ARRAY misaligned",
            |e| {
                let v = e.dyn_value(DT_INIT_ARRAY);
                e.set_dyn(DT_INIT_ARRAY, v + 1);
            },
            |err| {
                matches!(
                    err,
                    Error::BadTableSize {
                        table: "DT_INIT_ARRAY",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_INIT_ARRAY outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_INIT_ARRAY, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_INIT_ARRAY",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_FINI_ARRAYSZ past the image",
            |e| e.set_dyn(DT_FINI_ARRAYSZ, 1 << 32),
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_FINI_ARRAY",
                        ..
                    }
                )
            },
        ),
        case(
            "DT_INIT outside the code",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_INIT, end + 0x100);
            },
            |err| {
                matches!(
                    err,
                    Error::TableOutOfBounds {
                        table: "DT_INIT",
                        ..
                    }
                )
            },
        ),
        case(
            "missing import (symbol renamed)",
            |e| {
                let sym = e.imported_symbol();
                let strtab = e.file_offset(e.dyn_value(DT_STRTAB));
                let name = strtab + e.u32(sym) as usize;
                e.bytes[name] = b'Q';
            },
            |err| matches!(err, Error::UnresolvedSymbols { names } if names.len() == 1 && names[0].starts_with('Q')),
        ),
    ];
    let limit = |name, limits: Limits, what: &'static str| Case {
        name,
        patch: Box::new(|_| {}),
        expect: Box::new(
            move |err| matches!(err, Error::LimitExceeded { what: w, .. } if *w == what),
        ),
        options: Options::new().limits(limits),
    };
    v.push(limit(
        "relocation count over the limit",
        Limits {
            max_relocations: 10,
            ..Limits::default()
        },
        "relocations",
    ));
    v.push(limit(
        "symbol count over the limit",
        Limits {
            max_symbols: 10,
            ..Limits::default()
        },
        "dynamic symbols",
    ));
    v.push(limit(
        "span over the limit",
        Limits {
            max_span: 0x10000,
            ..Limits::default()
        },
        "image span",
    ));
    v.push(limit(
        "program headers over the limit",
        Limits {
            max_program_headers: 2,
            ..Limits::default()
        },
        "program header count",
    ));
    v
}

#[test]
fn every_malformed_case_is_a_specific_error_and_leaks_nothing() {
    let base = Elf {
        bytes: multiarch_lib("libz.so.1"),
    };
    // The unpatched library loads: the patches, not the base, cause the errors.
    drop(memdl::ElfImage::load(&base.bytes).expect("unpatched zlib loads"));

    let cases = cases();
    assert!(cases.len() >= 30, "at least 30 named cases");
    let mut failures = Vec::new();
    for c in &cases {
        let mut elf = base.clone();
        (c.patch)(&mut elf);
        let (maps, fds) = (maps_lines(), open_fds());
        let result = catch_unwind(AssertUnwindSafe(|| c.options.load(&elf.bytes).map(drop)));
        let (maps_after, fds_after) = (maps_lines(), open_fds());
        match result {
            Err(_) => failures.push(format!("{}: panicked", c.name)),
            Ok(Ok(())) => failures.push(format!("{}: loaded successfully", c.name)),
            Ok(Err(e)) if !(c.expect)(&e) => {
                failures.push(format!("{}: unexpected error {e:?} ({e})", c.name))
            }
            Ok(Err(_)) => {}
        }
        if maps_after != maps || fds_after != fds {
            failures.push(format!(
                "{}: leaked (maps {maps} -> {maps_after}, fds {fds} -> {fds_after})",
                c.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
