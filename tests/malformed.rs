//! Malformed input: a valid library of the machine (zlib) patched one field
//! at a time. Each case must fail with the specific `Error` variant
//! expected, never panic, and leave the address space and the fd table
//! exactly as they were, when loaded from bytes and when loaded from a file
//! (`load_fd`, whose segments are mapped rather than copied).
//!
//! All cases run from one test function, one after the other, so that no
//! other test thread maps or unmaps memory while mappings are counted.

use std::panic::{catch_unwind, AssertUnwindSafe};

use goblin::elf::dynamic::*;
use goblin::elf::program_header::*;
use memdl::{ElfImage, Error, Library, Limits, Options};

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
    /// File offset of the dynamic symbol `name` (an export of the library).
    fn symbol(&self, name: &str) -> usize {
        let elf = goblin::elf::Elf::parse(&self.bytes).expect("base parses");
        let index = elf
            .dynsyms
            .iter()
            .position(|s| elf.dynstrtab.get_at(s.st_name) == Some(name))
            .unwrap_or_else(|| panic!("no symbol {name}"));
        self.file_offset(self.dyn_value(DT_SYMTAB)) + index * 24
    }
    /// Rewrites the tag of the dynamic entry `old` (one memdl ignores, such
    /// as DT_PLTGOT or DT_RELACOUNT) into `tag` with `value`: a way to add
    /// entries the base does not have.
    fn retag(&mut self, old: u64, tag: u64, value: u64) {
        let e = self.dyn_entry(old);
        self.set64(e, tag);
        self.set64(e + 8, value);
    }
    /// Turns the program header `old_type` (the `nth` of that type) into a
    /// `PT_TLS` of `memsz` bytes at `vaddr` with no file bytes.
    fn make_tls(&mut self, old_type: u32, nth: usize, vaddr: u64, memsz: u64) {
        let p = self.phdrs_of(old_type)[nth];
        self.set32(p, PT_TLS);
        self.set64(p + 8, 0);
        self.set64(p + 16, vaddr);
        self.set64(p + 32, 0);
        self.set64(p + 40, memsz);
        self.set64(p + 48, 8);
    }
    /// File offset of the first RELATIVE relocation whose target is `vaddr`.
    fn relative_at(&self, vaddr: u64) -> usize {
        let n = self.dyn_value(DT_RELASZ) as usize / 24;
        (0..n)
            .map(|i| self.rela(DT_RELA, i))
            .find(|&e| self.u32(e + 8) == R_RELATIVE && self.u64(e) == vaddr)
            .expect("a RELATIVE relocation of that address")
    }
    /// Address of the first byte of the writable segment: inside the
    /// image, never code (on every architecture's zlib, which need not
    /// have a separate read-only data segment).
    fn data_vaddr(&self) -> u64 {
        let p = *self
            .phdrs_of(PT_LOAD)
            .iter()
            .find(|&&p| self.u32(p + 4) & PF_W != 0)
            .unwrap();
        self.u64(p + 16)
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
#[cfg(target_arch = "x86_64")]
const R_DTPMOD: u32 = goblin::elf::reloc::R_X86_64_DTPMOD64;
#[cfg(target_arch = "aarch64")]
const R_DTPMOD: u32 = goblin::elf::reloc::R_AARCH64_TLS_DTPMOD;
#[cfg(target_arch = "x86_64")]
const R_TPOFF: u32 = goblin::elf::reloc::R_X86_64_TPOFF64;
#[cfg(target_arch = "aarch64")]
const R_TPOFF: u32 = goblin::elf::reloc::R_AARCH64_TLS_TPREL;
/// Not in goblin's constants: packed relative relocations.
const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;

type Patch = Box<dyn Fn(&mut Elf)>;
type Expect = Box<dyn Fn(&Error) -> bool>;

struct Case {
    name: &'static str,
    patch: Patch,
    expect: Expect,
    options: Options,
    /// A test library to patch instead of zlib.
    base: Option<&'static str>,
}

/// A case whose error must match a pattern: `case!(name, patch => pattern)`
/// (`matches!` syntax, an `if` guard allowed).
macro_rules! case {
    ($name:expr, $patch:expr => $pattern:pat $(if $guard:expr)?) => {
        case($name, $patch, |err| matches!(err, $pattern $(if $guard)?))
    };
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
        base: None,
    }
}

impl Case {
    fn on(self, lib: &'static str) -> Case {
        Case {
            base: Some(lib),
            ..self
        }
    }
}

/// `bytes` loaded with `load_fd` from a sealed memfd holding them (closed
/// again before returning).
fn load_fd(bytes: &[u8], options: &Options) -> Result<ElfImage, Error> {
    // SAFETY: a trusted test or machine library (its initialisers run).
    unsafe { memdl::SealedElf::new(bytes)?.load_with(options) }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        case!(
            "truncated inside the ELF header",
            |e| e.bytes.truncate(40)
            => Error::Truncated { what: "ELF header", .. }
        ),
        case!(
            "truncated inside the program headers",
            |e| e.bytes.truncate(100)
            => Error::Truncated { what: "program header table", .. }
        ),
        case!(
            "truncated inside a segment",
            |e| {
                let len = e.bytes.len();
                e.bytes.truncate(len / 2)
            }
            => Error::BadSegment { kind: "PT_LOAD", .. }
        ),
        case!(
            "empty input",
            |e| e.bytes.clear()
            // load_fd refuses the empty range of the file before reading.
            => Error::BadMagic | Error::Truncated { what: "file range", .. }
        ),
        case!("bad magic", |e| e.bytes[1] = b'X' => Error::BadMagic),
        case!("32-bit class", |e| e.bytes[4] = 1 => Error::UnsupportedClass(1)),
        case!("big-endian", |e| e.bytes[5] = 2 => Error::UnsupportedEncoding(2)),
        case!("ident version 0", |e| e.bytes[6] = 0 => Error::UnsupportedVersion(0)),
        case!("e_version 2", |e| e.set32(20, 2) => Error::UnsupportedVersion(2)),
        case!("executable, not shared object", |e| e.set16(16, 2) => Error::NotSharedObject(2)),
        case!("wrong machine", |e| e.set16(18, 40) => Error::WrongMachine { found: 40, .. }),
        case!("e_phentsize 32", |e| e.set16(54, 32) => Error::BadProgramHeaderSize(32)),
        case!("e_phnum 0", |e| e.set16(56, 0) => Error::BadProgramHeaderCount(0)),
        case!(
            "e_phnum extended-numbering escape",
            |e| e.set16(56, 0xffff)
            => Error::BadProgramHeaderCount(0xffff)
        ),
        case!(
            "e_phnum past the end of the file",
            |e| e.set16(56, 4000)
            => Error::Truncated { what: "program header table", .. }
        ),
        case!(
            "e_phoff past the end",
            |e| e.set64(32, 1 << 40)
            => Error::Truncated { what: "program header table", .. }
        ),
        case!(
            "e_phoff wraps around",
            |e| e.set64(32, u64::MAX - 8)
            => Error::Truncated { what: "program header table", .. }
        ),
        case!(
            "PT_LOAD offset past the end",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                e.set64(p + 8, 1 << 40);
            }
            => Error::BadSegment { kind: "PT_LOAD", .. }
        ),
        case!(
            "PT_LOAD p_filesz > p_memsz",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                let memsz = e.u64(p + 40);
                e.set64(p + 32, memsz + 8);
            }
            => Error::BadSegment { reason: "p_filesz is larger than p_memsz", .. }
        ),
        case!(
            "PT_LOAD p_memsz huge",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                e.set64(p + 40, 1 << 52);
            }
            => Error::LimitExceeded { what: "image span", .. }
        ),
        case!(
            "PT_LOAD address wraps",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                e.set64(p + 16, u64::MAX - 0xfff);
                e.set64(p + 8, 0);
            }
            => Error::BadSegment { .. }
        ),
        case!(
            "PT_LOAD offset and address not congruent",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                let va = e.u64(p + 16);
                e.set64(p + 16, va + 8);
            }
            => Error::BadSegment { reason: "p_vaddr and p_offset are not congruent modulo the page size", .. }
        ),
        case!(
            "PT_LOAD p_align not a power of two",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                e.set64(p + 48, 0x3000);
            }
            => Error::BadSegment { reason: "p_align is not a power of two", .. }
        ),
        case!(
            "PT_LOADs overlap",
            |e| {
                let p = e.phdrs_of(PT_LOAD);
                let (va, off) = (e.u64(p[0] + 16), e.u64(p[0] + 8));
                e.set64(p[1] + 16, va);
                e.set64(p[1] + 8, off);
            }
            => Error::BadSegment { reason: "overlaps or precedes the previous PT_LOAD", .. }
        ),
        case!(
            "no PT_LOAD",
            |e| {
                for p in e.phdrs_of(PT_LOAD) {
                    e.set32(p, PT_NULL);
                }
            }
            => Error::NoLoadSegments
        ),
        case!(
            "no PT_DYNAMIC",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                e.set32(p, PT_NULL);
            }
            => Error::NoDynamicSegment
        ),
        case!(
            "PT_DYNAMIC outside the file",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                e.set64(p + 8, 1 << 40);
            }
            => Error::BadSegment { kind: "PT_DYNAMIC", .. }
        ),
        case!(
            "PT_DYNAMIC outside the loaded image",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let end = e.image_end();
                e.set64(p + 16, end + 0x10000);
            }
            => Error::TableOutOfBounds { table: "PT_DYNAMIC", .. }
        ),
        case!(
            "PT_DYNAMIC size not a multiple of 16",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let sz = e.u64(p + 40);
                e.set64(p + 40, sz - 4);
            }
            => Error::BadSegment { kind: "PT_DYNAMIC", .. }
        ),
        case!(
            "dynamic array without DT_NULL",
            |e| {
                let p = e.phdrs_of(PT_DYNAMIC)[0];
                let (off, size) = (e.u64(p + 8) as usize, e.u64(p + 32) as usize);
                for at in (off..off + size).step_by(16) {
                    if e.u64(at) == DT_NULL {
                        e.set64(at, DT_DEBUG);
                    }
                }
            }
            => Error::BadDynamic { reason: "no DT_NULL terminator" }
        ),
        case!(
            "writable and executable segment",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[1];
                e.set32(p + 4, PF_R | PF_W | PF_X);
            }
            => Error::WritableAndExecutable { .. }
        ),
        case!(
            "DT_TEXTREL",
            |e| {
                let at = e.dyn_entry(DT_SONAME);
                e.set64(at, DT_TEXTREL);
            }
            => Error::TextRelocations
        ),
        case!(
            "huge PT_TLS",
            |e| {
                let p = e.phdrs_of(PT_GNU_STACK)[0];
                e.set32(p, PT_TLS);
                e.set64(p + 40, 1 << 40);
            }
            => Error::LimitExceeded { what: "PT_TLS size", .. }
        ),
        case!(
            "DT_STRTAB outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_STRTAB, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_STRTAB", .. }
        ),
        case!(
            "DT_STRSZ past the segment",
            |e| e.set_dyn(DT_STRSZ, 1 << 40)
            => Error::TableOutOfBounds { table: "DT_STRTAB", .. }
        ),
        case!(
            "DT_SYMTAB outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_SYMTAB, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_SYMTAB", .. }
        ),
        case!(
            "DT_SYMTAB in a writable segment",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                let va = e.u64(p + 16);
                e.set_dyn(DT_SYMTAB, va);
            }
            => Error::TableInWritableSegment { table: "DT_SYMTAB", .. } | Error::TableOutOfBounds { table: "DT_SYMTAB", .. }
        ),
        case!(
            "DT_SYMENT wrong",
            |e| e.set_dyn(DT_SYMENT, 16)
            => Error::BadEntrySize { table: "DT_SYMENT", size: 16, .. }
        ),
        case!(
            "DT_RELA outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_RELA, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_RELA", .. }
        ),
        case!(
            "DT_JMPREL outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_JMPREL, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_JMPREL", .. }
        ),
        case!(
            "DT_RELASZ not a multiple of DT_RELAENT",
            |e| {
                let sz = e.dyn_value(DT_RELASZ);
                e.set_dyn(DT_RELASZ, sz - 8);
            }
            => Error::BadTableSize { table: "DT_RELA", .. }
        ),
        case!(
            "DT_RELAENT wrong",
            |e| e.set_dyn(DT_RELAENT, 16)
            => Error::BadEntrySize { table: "DT_RELAENT", size: 16, .. }
        ),
        case!(
            "DT_PLTREL neither REL nor RELA",
            |e| e.set_dyn(DT_PLTREL, 99)
            => Error::BadDynamic { .. }
        ),
        case!(
            "DT_GNU_HASH outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_GNU_HASH, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_GNU_HASH", .. }
        ),
        case!(
            "GNU hash with zero buckets",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at, 0);
            }
            => Error::BadHashTable { reason: "zero buckets", .. }
        ),
        case!(
            "GNU hash with zero bloom words",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at + 8, 0);
            }
            => Error::BadHashTable { .. }
        ),
        case!(
            "GNU hash bucket past the chains",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let bloom = e.u32(at + 8) as usize;
                e.set32(at + 16 + bloom * 8, 1_000_000);
            }
            => Error::TableOutOfBounds { table: "DT_GNU_HASH", .. }
        ),
        case!(
            "GNU hash chain never ends (symbol limit)",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let bloom = e.u32(at + 8) as usize;
                e.set32(at + 16 + bloom * 8, 0x7fff_0000);
            }
            => Error::LimitExceeded { what: "dynamic symbols", .. }
        ),
        case!(
            "relocation symbol index out of range",
            |e| {
                let rel = e.rela(DT_JMPREL, 0);
                e.set32(rel + 12, 0x00ff_ffff);
            }
            => Error::SymbolIndexOutOfRange { .. }
        ),
        case!(
            "relocation target outside the image",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let end = e.image_end();
                e.set64(rel, end + 0x1000);
            }
            => Error::RelocationOutOfBounds { .. }
        ),
        case!(
            "relocation target in a read-only segment",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let text = e.text_vaddr();
                e.set64(rel, text);
            }
            => Error::RelocationInReadOnly { .. }
        ),
        case!(
            "relocation target straddles the image end",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                let end = e.image_end();
                e.set64(rel, end - 4);
            }
            => Error::RelocationOutOfBounds { .. }
        ),
        case!(
            "unknown relocation type",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                e.set32(rel + 8, 999);
            }
            => Error::UnsupportedRelocation { r_type: 999, .. }
        ),
        case!(
            "import name past DT_STRSZ",
            |e| {
                let sym = e.imported_symbol();
                e.set32(sym, 0x00ff_ffff);
            }
            => Error::BadStringOffset { .. }
        ),
        case!(
            "string table without a final NUL",
            |e| {
                // Cut the table in the middle of the first import's name.
                let sym = e.imported_symbol();
                let name = e.u32(sym) as u64;
                e.set_dyn(DT_STRSZ, name + 2);
            }
            => Error::BadStringOffset { .. }
        ),
        case!(
            "DT_NEEDED name past DT_STRSZ",
            |e| e.set_dyn(DT_NEEDED, 1 << 30)
            => Error::BadStringOffset { .. }
        ),
        case!(
            "DT_RUNPATH past DT_STRSZ",
            |e| e.retag(DT_SONAME, DT_RUNPATH, 1 << 30)
            => Error::BadStringOffset { .. }
        ),
        case!(
            "DT_RPATH past DT_STRSZ",
            |e| e.retag(DT_SONAME, DT_RPATH, u64::MAX)
            => Error::BadStringOffset { .. }
        ),
        case!(
            "DT_NEEDED library that does not exist",
            |e| {
                // Point the needed name at the SONAME string "libz.so.1".
                let soname = e.dyn_value(DT_SONAME);
                e.set_dyn(DT_NEEDED, soname);
                let strtab = e.file_offset(e.dyn_value(DT_STRTAB));
                e.bytes[strtab + soname as usize + 3] = b'Q';
            }
            => Error::NeededLibrary { .. }
        ),
        case!(
            "DT_VERNEED outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_VERNEED, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_VERNEED", .. }
        ),
        case!(
            "DT_VERSYM outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_VERSYM, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_VERSYM", .. }
        ),
        case!(
            "DT_INIT_ARRAY misaligned",
            |e| {
                let v = e.dyn_value(DT_INIT_ARRAY);
                e.set_dyn(DT_INIT_ARRAY, v + 1);
            }
            => Error::BadTableSize { table: "DT_INIT_ARRAY", .. }
        ),
        case!(
            "DT_INIT_ARRAY outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_INIT_ARRAY, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_INIT_ARRAY", .. }
        ),
        case!(
            "DT_FINI_ARRAYSZ past the image",
            |e| e.set_dyn(DT_FINI_ARRAYSZ, 1 << 32)
            => Error::TableOutOfBounds { table: "DT_FINI_ARRAY", .. }
        ),
        case!(
            "DT_INIT outside the code",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_INIT, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_INIT", .. }
        ),
        case!(
            "missing import (symbol renamed)",
            |e| {
                let sym = e.imported_symbol();
                let strtab = e.file_offset(e.dyn_value(DT_STRTAB));
                let name = strtab + e.u32(sym) as usize;
                e.bytes[name] = b'Q';
            }
            => Error::UnresolvedSymbols { names } if names.len() == 1 && names[0].starts_with('Q')
        ),
    ];
    v.extend(more_cases());
    let limit = |name, limits: Limits, what: &'static str| Case {
        name,
        patch: Box::new(|_| {}),
        expect: Box::new(
            move |err| matches!(err, Error::LimitExceeded { what: w, .. } if *w == what),
        ),
        options: Options::new().limits(limits),
        base: None,
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
        "DT_NEEDED entries over the limit",
        Limits {
            max_needed: 0,
            ..Limits::default()
        },
        "DT_NEEDED entries",
    ));
    v.push(Case {
        name: "PT_TLS over the configured limit",
        patch: Box::new(|e| e.make_tls(PT_GNU_STACK, 0, 0, 0x2000)),
        expect: Box::new(|err| {
            matches!(
                err,
                Error::LimitExceeded {
                    what: "PT_TLS size",
                    value: 0x2000,
                    limit: 0x1000
                }
            )
        }),
        options: Options::new().limits(Limits {
            max_tls_size: 0x1000,
            ..Limits::default()
        }),
        base: None,
    });
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

/// Cases for the rest of design.md's "Malformed input" list, and the
/// regressions the corruption test and the fuzzer found.
fn more_cases() -> Vec<Case> {
    vec![
        // The fuzzer's first load_fd find: a read-only segment's bss pages
        // lay past its file pages, still inaccessible in the reservation
        // while the loader read a table there (a crash, not an error).
        case!(
            "DT_GNU_HASH in a read-only segment's bss pages",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                let filesz = e.u64(p + 32);
                e.set64(p + 40, filesz + 0x3000);
                let vaddr = e.u64(p + 16);
                e.set_dyn(DT_GNU_HASH, ((vaddr + filesz + 0xfff) & !0xfff) + 0x100);
            }
            => Error::BadHashTable { .. }
        )
        .on("example"),
        case!(
            "PT_LOADs out of address order",
            |e| {
                // The first two: aarch64's zlib has only two PT_LOADs.
                let p = e.phdrs_of(PT_LOAD);
                let (a, b) = (p[0], p[1]);
                let first: Vec<u8> = e.bytes[a..a + 56].to_vec();
                e.bytes.copy_within(b..b + 56, a);
                e.bytes[b..b + 56].copy_from_slice(&first);
            }
            => Error::BadSegment { reason: "overlaps or precedes the previous PT_LOAD", .. }
        ),
        case!(
            "a second PT_DYNAMIC",
            |e| {
                let d = e.phdrs_of(PT_DYNAMIC)[0];
                let s = e.phdrs_of(PT_GNU_STACK)[0];
                e.bytes.copy_within(d..d + 56, s);
            }
            => Error::BadSegment { reason: "a second PT_DYNAMIC", .. }
        ),
        case!(
            "a second PT_TLS",
            |e| {
                e.make_tls(PT_NOTE, 0, 0, 16);
                e.make_tls(PT_GNU_STACK, 0, 0, 16);
            }
            => Error::BadSegment { reason: "a second PT_TLS", .. }
        ),
        case!(
            "PT_TLS outside the loaded image",
            |e| {
                let end = e.image_end();
                e.make_tls(PT_GNU_STACK, 0, end + 0x1000, 16);
                let p = e.phdrs_of(PT_TLS)[0];
                e.set64(p + 32, 16);
            }
            => Error::TableOutOfBounds { table: "PT_TLS", .. }
        ),
        case!(
            "PT_GNU_RELRO outside the writable segment",
            |e| {
                let p = e.phdrs_of(PT_GNU_RELRO)[0];
                e.set64(p + 16, 0);
            }
            => Error::TableOutOfBounds { table: "PT_GNU_RELRO", .. }
        ),
        case!(
            "segment alignment over the span limit",
            |e| {
                let p = e.phdrs_of(PT_LOAD)[0];
                e.set64(p + 48, 1 << 40);
            }
            => Error::LimitExceeded { what: "segment alignment", .. }
        ),
        case!(
            "DT_STRSZ zero",
            |e| e.set_dyn(DT_STRSZ, 0)
            => Error::BadDynamic { reason: "DT_STRSZ is zero" }
        ),
        case!(
            "no DT_SYMTAB",
            |e| {
                let at = e.dyn_entry(DT_SYMTAB);
                e.set64(at, DT_DEBUG);
            }
            => Error::BadDynamic { reason: "no DT_SYMTAB" }
        ),
        case!(
            "DT_SYMTAB twice",
            |e| {
                let symtab = e.dyn_value(DT_SYMTAB);
                e.retag(DT_PLTGOT, DT_SYMTAB, symtab);
            }
            => Error::BadDynamic { reason: "DT_SYMTAB appears twice" }
        ),
        case!(
            "no hash table",
            |e| {
                let at = e.dyn_entry(DT_GNU_HASH);
                e.set64(at, DT_DEBUG);
            }
            => Error::BadDynamic { reason: "neither DT_GNU_HASH nor DT_HASH" }
        ),
        case!(
            "DT_RELA without DT_RELASZ",
            |e| {
                let at = e.dyn_entry(DT_RELASZ);
                e.set64(at, DT_DEBUG);
            }
            => Error::BadDynamic { reason: "DT_RELA without DT_RELASZ" }
        ),
        case!(
            "DT_JMPREL in a writable segment",
            |e| {
                let p = *e.phdrs_of(PT_LOAD).last().unwrap();
                let va = e.u64(p + 16);
                e.set_dyn(DT_JMPREL, va);
                e.set_dyn(DT_PLTRELSZ, 24);
            }
            => Error::TableInWritableSegment { table: "DT_JMPREL", .. }
        ),
        case!(
            "DT_HASH outside the image",
            |e| {
                let end = e.image_end();
                e.retag(DT_PLTGOT, DT_HASH, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_HASH", .. }
        ),
        case!(
            "SysV hash with zero buckets",
            // The ELF header's e_ident padding is zeros: nbucket = nchain = 0.
            |e| e.retag(DT_PLTGOT, DT_HASH, 8)
            => Error::BadHashTable { table: "DT_HASH", reason: "zero buckets" }
        ),
        case!(
            "SysV hash chains past the segment",
            // At 0x10: nbucket = e_type | e_machine << 16, nchain = e_version.
            |e| e.retag(DT_PLTGOT, DT_HASH, 0x10)
            => Error::TableOutOfBounds { table: "DT_HASH", .. }
        ),
        case!(
            "GNU hash bloom shift of 32 (found by tests/corruption.rs)",
            // Shifting the 32-bit hash by 32 overflowed in every lookup.
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at + 12, 32);
            }
            => Error::BadHashTable { table: "DT_GNU_HASH", reason: "bloom shift is 32 or more" }
        ),
        case!(
            "GNU hash symbol offset beyond the symbols",
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                e.set32(at + 4, 0x0100_0000);
            }
            => Error::BadHashTable { table: "DT_GNU_HASH", .. }
        ),
        case!(
            "DT_VERDEF outside the image",
            |e| {
                let end = e.image_end();
                e.set_dyn(DT_VERDEF, end + 0x100);
            }
            => Error::TableOutOfBounds { table: "DT_VERDEF", .. }
        ),
        case!(
            "DT_RELR bitmap before any address",
            // The first word of the file is odd: a bitmap with no base.
            |e| {
                e.retag(DT_PLTGOT, DT_RELR, 0);
                e.retag(DT_RELACOUNT, DT_RELRSZ, 8);
            }
            => Error::BadDynamic { reason: "DT_RELR bitmap without a preceding address" }
        ),
        case!(
            "DT_RELR target in a read-only segment",
            // e_phoff (64) read as a RELR address: inside the R segment.
            |e| {
                e.retag(DT_PLTGOT, DT_RELR, 0x20);
                e.retag(DT_RELACOUNT, DT_RELRSZ, 8);
            }
            => Error::RelocationInReadOnly { offset: 64, .. }
        ),
        case!(
            "DT_RELRSZ not a multiple of 8",
            |e| {
                e.retag(DT_PLTGOT, DT_RELR, 0x20);
                e.retag(DT_RELACOUNT, DT_RELRSZ, 12);
            }
            => Error::BadTableSize { table: "DT_RELR", .. }
        ),
        case!(
            "TLS relocation without PT_TLS",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                e.set32(rel + 8, R_DTPMOD);
            }
            => Error::BadDynamic { reason: "TLS relocation in an object without PT_TLS" }
        ),
        case!(
            "static TLS relocation",
            |e| {
                let rel = e.rela_of_type(DT_RELA, DT_RELASZ, R_RELATIVE);
                e.set32(rel + 8, R_TPOFF);
            }
            => Error::BadDynamic { reason: "TLS relocation in an object without PT_TLS" }
        ),
        case!(
            "DF_STATIC_TLS block beyond the static TLS surplus",
            |e| {
                e.make_tls(PT_GNU_STACK, 0, 0, 8 << 20);
                e.retag(DT_PLTGOT, DT_FLAGS, DF_STATIC_TLS);
            }
            => Error::StaticTls { size: 0x80_0000, .. }
        ),
        case!(
            "DT_INIT_ARRAYSZ not a multiple of 8",
            |e| e.set_dyn(DT_INIT_ARRAYSZ, 12)
            => Error::BadTableSize { table: "DT_INIT_ARRAY", .. }
        ),
        case!(
            "init array entry that is not code",
            // The relocation filling DT_INIT_ARRAY[0] points it at data.
            |e| {
                let rel = e.relative_at(e.dyn_value(DT_INIT_ARRAY));
                let data = e.data_vaddr();
                e.set64(rel + 16, data);
            }
            => Error::TableOutOfBounds { table: "init/fini array entry", .. }
        ),
        case!(
            "DT_FINI outside the code",
            |e| {
                let data = e.data_vaddr();
                e.set_dyn(DT_FINI, data);
            }
            => Error::TableOutOfBounds { table: "DT_FINI", .. }
        ),
    ]
}

type Check = Box<dyn Fn(&ElfImage) -> Result<(), String>>;

/// A corruption the loader may accept (nothing it needs is wrong), after
/// which lookups must still stay inside the image: `check` runs on the
/// loaded image.
struct LookupCase {
    name: &'static str,
    /// `None` for zlib, else a test library's short name.
    base: Option<&'static str>,
    patch: Patch,
    check: Check,
}

fn lookup_case(
    name: &'static str,
    base: Option<&'static str>,
    patch: impl Fn(&mut Elf) + 'static,
    check: impl Fn(&ElfImage) -> Result<(), String> + 'static,
) -> LookupCase {
    LookupCase {
        name,
        base,
        patch: Box::new(patch),
        check: Box::new(check),
    }
}

fn address(img: &ElfImage, name: &str) -> Result<usize, Error> {
    // SAFETY: only the address is taken.
    unsafe { img.get::<*const u8>(name) }.map(|s| s.as_ptr() as usize)
}

fn expect_lookup(
    img: &ElfImage,
    name: &str,
    ok: impl Fn(&Result<usize, Error>) -> bool,
) -> Result<(), String> {
    let r = address(img, name);
    if ok(&r) {
        Ok(())
    } else {
        Err(format!("get({name}) gave {r:?}"))
    }
}

/// Every listed export that `get` finds lies inside the image (or is an
/// absolute zero).
fn exports_inside(img: &ElfImage) -> Result<(), String> {
    let (lo, hi) = (
        img.base_address(),
        img.segments()
            .map(|s| s.address + s.size as usize)
            .max()
            .unwrap(),
    );
    for (name, addr) in img.exports() {
        if let Ok(a) = address(img, &String::from_utf8_lossy(name)) {
            // Version-name symbols (`ZLIB_1.2.2`) are absolute zeros.
            if a != 0 && !(lo..=hi).contains(&a) {
                return Err(format!(
                    "{} at {a:#x} outside {lo:#x}..{hi:#x}",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        std::hint::black_box(addr);
    }
    Ok(())
}

extern "C" {
    /// libgcc's lookup of the unwind entry covering `pc`.
    fn _Unwind_Find_FDE(
        pc: *const std::ffi::c_void,
        bases: *mut [usize; 3],
    ) -> *const std::ffi::c_void;
}

/// Whether libgcc knows unwind information for libexample's `add`.
fn add_has_fde(img: &ElfImage) -> bool {
    let add = img.symbol_address(b"add").unwrap() as *const u8;
    let mut bases = [0usize; 3];
    // SAFETY: a lookup by address; `bases` is writable.
    !unsafe { _Unwind_Find_FDE(add.wrapping_add(1).cast(), &mut bases) }.is_null()
}

/// A corrupted `.eh_frame` must not reach libgcc: the image's frames are
/// not registered, and an unwind in the process (which walks every
/// registered section) still works.
fn frames_not_registered(img: &ElfImage) -> Result<(), String> {
    if add_has_fde(img) {
        return Err("the corrupted .eh_frame was registered".into());
    }
    // resume_unwind: a real unwind, without the panic hook's message.
    let caught = catch_unwind(|| std::panic::resume_unwind(Box::new(7u8)));
    match caught {
        Err(p) if p.downcast_ref::<u8>() == Some(&7) => Ok(()),
        _ => Err("unwinding failed".into()),
    }
}

/// File offsets in libexample's `.eh_frame`: (the first CIE's `R`
/// augmentation byte, the first FDE).
fn eh_frame_fields(e: &Elf) -> (usize, usize) {
    let elf = goblin::elf::Elf::parse(&e.bytes).unwrap();
    let sh = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".eh_frame"))
        .expect(".eh_frame");
    let cie = sh.sh_offset as usize;
    // version 1, "zR", code alignment 1, data alignment -8, RA register,
    // augmentation length: then the R byte.
    assert_eq!(
        &e.bytes[cie + 9..cie + 12],
        b"zR\0",
        "libexample's CIE is zR"
    );
    let fde = cie + 4 + e.u32(cie) as usize;
    (cie + 16, fde)
}

fn lookup_cases() -> Vec<LookupCase> {
    vec![
        lookup_case(
            "eh_frame: FDE whose CIE pointer leaves the section",
            Some("example"),
            |e| {
                let (_, fde) = eh_frame_fields(e);
                e.set32(fde + 4, 0x7fff_fff0);
            },
            frames_not_registered,
        ),
        lookup_case(
            "eh_frame: FDE covering code outside the image",
            Some("example"),
            |e| {
                let (_, fde) = eh_frame_fields(e);
                let begin = e.u32(fde + 8);
                e.set32(fde + 8, begin.wrapping_add(0x4000_0000));
            },
            frames_not_registered,
        ),
        lookup_case(
            "eh_frame: CIE with a pointer encoding libgcc aborts on",
            Some("example"),
            |e| {
                let (r, _) = eh_frame_fields(e);
                e.bytes[r] = 0x0f;
            },
            frames_not_registered,
        ),
        lookup_case(
            "eh_frame: record length past the segment",
            Some("example"),
            |e| {
                let (_, fde) = eh_frame_fields(e);
                e.set32(fde, 0x7fff_0000);
            },
            frames_not_registered,
        ),
        lookup_case(
            "exported symbol value outside the image",
            None,
            |e| {
                let sym = e.symbol("zlibVersion");
                e.set64(sym + 8, 1 << 40);
            },
            |img| {
                expect_lookup(
                    img,
                    "zlibVersion",
                    |r| matches!(r, Err(Error::SymbolOutOfBounds { value, .. }) if *value == 1 << 40),
                )?;
                expect_lookup(img, "crc32", |r| r.is_ok())?;
                exports_inside(img)
            },
        ),
        lookup_case(
            "ifunc symbol whose resolver is not code",
            None,
            |e| {
                let sym = e.symbol("zlibVersion");
                let data = e.data_vaddr();
                e.bytes[sym + 4] =
                    (goblin::elf::sym::STB_GLOBAL << 4) | goblin::elf::sym::STT_GNU_IFUNC;
                e.set64(sym + 8, data);
            },
            |img| {
                expect_lookup(img, "zlibVersion", |r| {
                    matches!(r, Err(Error::SymbolOutOfBounds { .. }))
                })
            },
        ),
        lookup_case(
            "export name past DT_STRSZ",
            None,
            |e| {
                let sym = e.symbol("zlibVersion");
                e.set32(sym, 0x00ff_ffff);
            },
            |img| {
                expect_lookup(img, "zlibVersion", |r| {
                    matches!(r, Err(Error::SymbolNotFound { .. }))
                })?;
                expect_lookup(img, "crc32", |r| r.is_ok())?;
                exports_inside(img)
            },
        ),
        lookup_case(
            "GNU hash chain values corrupted",
            // Every chain entry's hash bits flipped, end-of-chain bits kept:
            // lookups stay within their chains and find nothing.
            None,
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let (nbuckets, symoffset, bloom) = (
                    e.u32(at) as usize,
                    e.u32(at + 4) as usize,
                    e.u32(at + 8) as usize,
                );
                let chains = at + 16 + bloom * 8 + nbuckets * 4;
                let elf = goblin::elf::Elf::parse(&e.bytes).unwrap();
                for i in 0..elf.dynsyms.len() - symoffset {
                    let c = e.u32(chains + i * 4);
                    e.set32(chains + i * 4, c ^ 0xffff_fffe);
                }
            },
            |img| {
                for name in ["crc32", "zlibVersion", "deflate", "no_such_symbol"] {
                    expect_lookup(img, name, |r| {
                        matches!(r, Err(Error::SymbolNotFound { .. }))
                    })?;
                }
                exports_inside(img)
            },
        ),
        lookup_case(
            "GNU hash bloom filter all ones",
            // Every name passes the filter and walks its chain: bounded.
            None,
            |e| {
                let at = e.file_offset(e.dyn_value(DT_GNU_HASH));
                let bloom = e.u32(at + 8) as usize;
                for w in 0..bloom {
                    e.set64(at + 16 + w * 8, u64::MAX);
                }
            },
            |img| {
                expect_lookup(img, "crc32", |r| r.is_ok())?;
                for name in ["no_such_symbol", "", "crc3", "crc32x"] {
                    expect_lookup(img, name, |r| {
                        matches!(r, Err(Error::SymbolNotFound { .. }))
                    })?;
                }
                Ok(())
            },
        ),
        lookup_case(
            "DT_SONAME past DT_STRSZ",
            None,
            |e| e.set_dyn(DT_SONAME, 1 << 30),
            |img| match img.soname() {
                None => Ok(()),
                Some(s) => Err(format!("soname {s}")),
            },
        ),
        lookup_case(
            "symbol version index that no version defines",
            None,
            |e| {
                let elf = goblin::elf::Elf::parse(&e.bytes).unwrap();
                let index = elf
                    .dynsyms
                    .iter()
                    .position(|s| elf.dynstrtab.get_at(s.st_name) == Some("zlibVersion"))
                    .unwrap();
                let versym = e.file_offset(e.dyn_value(DT_VERSYM));
                e.set16(versym + index * 2, 0x7ff0);
            },
            |img| {
                expect_lookup(img, "zlibVersion", |r| r.is_ok())?;
                // SAFETY: only the address is taken.
                match unsafe { img.get_versioned::<*const u8>("zlibVersion", "ZLIB_1.2.0") } {
                    Err(Error::SymbolNotFound { .. }) => Ok(()),
                    r => Err(format!("versioned lookup gave {:?}", r.map(|s| s.as_ptr()))),
                }
            },
        ),
        lookup_case(
            "thread-local symbol offset outside PT_TLS",
            Some("sandboxtls"),
            |e| {
                let sym = e.symbol("tls_calls");
                e.set64(sym + 8, 1 << 20);
            },
            |img| {
                expect_lookup(img, "tls_calls", |r| {
                    matches!(r, Err(Error::SymbolOutOfBounds { .. }))
                })?;
                expect_lookup(img, "count_call", |r| r.is_ok())
            },
        ),
    ]
}

#[test]
fn every_malformed_case_is_a_specific_error_and_leaks_nothing() {
    let base = Elf {
        bytes: multiarch_lib("libz.so.1"),
    };
    // The unpatched library loads: the patches, not the base, cause the errors.
    // SAFETY: a trusted test or machine library (its initialisers run).
    drop(unsafe { memdl::ElfImage::load(&base.bytes) }.expect("unpatched zlib loads"));

    let cases = cases();
    assert!(cases.len() >= 30, "at least 30 named cases");
    let mut failures = Vec::new();
    for c in &cases {
        let mut elf = match c.base {
            None => base.clone(),
            Some(lib) => Elf {
                bytes: common::test_lib(lib),
            },
        };
        (c.patch)(&mut elf);
        for how in ["load", "load_fd"] {
            let (maps, fds) = (maps_lines(), open_fds());
            let result = catch_unwind(AssertUnwindSafe(|| match how {
                // SAFETY: a trusted test or machine library (its initialisers run).
                "load" => unsafe { c.options.load(&elf.bytes) }.map(drop),
                _ => load_fd(&elf.bytes, &c.options).map(drop),
            }));
            let (maps_after, fds_after) = (maps_lines(), open_fds());
            let name = format!("{} ({how})", c.name);
            match result {
                Err(_) => failures.push(format!("{name}: panicked")),
                Ok(Ok(())) => failures.push(format!("{name}: loaded successfully")),
                Ok(Err(e)) if !(c.expect)(&e) => {
                    failures.push(format!("{name}: unexpected error {e:?} ({e})"))
                }
                Ok(Err(_)) => {}
            }
            if maps_after != maps || fds_after != fds {
                failures.push(format!(
                    "{name}: leaked (maps {maps} -> {maps_after}, fds {fds} -> {fds_after})"
                ));
            }
        }
    }

    // Corruptions the loader accepts: lookups must stay inside the image.
    // (The unmodified libexample's frames are registered, so the .eh_frame
    // cases below test the check, not an absent registration.)
    // SAFETY: a trusted test or machine library (its initialisers run).
    let example = unsafe { memdl::ElfImage::load(&common::test_lib("example")) }.unwrap();
    assert!(add_has_fde(&example));
    drop(example);
    let lookups = lookup_cases();
    for c in &lookups {
        let mut elf = match c.base {
            None => base.clone(),
            Some(lib) => Elf {
                bytes: common::test_lib(lib),
            },
        };
        (c.patch)(&mut elf);
        let (maps, fds) = (maps_lines(), open_fds());
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            unsafe { Options::new().load(&elf.bytes) }
                .map_err(|e| format!("did not load: {e:?} ({e})"))
                .and_then(|img| {
                    (c.check)(&img)?;
                    common::assert_no_wx();
                    Ok(())
                })
        }));
        let (maps_after, fds_after) = (maps_lines(), open_fds());
        match result {
            Err(_) => failures.push(format!("{}: panicked", c.name)),
            Ok(Err(why)) => failures.push(format!("{}: {why}", c.name)),
            Ok(Ok(())) => {}
        }
        if maps_after != maps || fds_after != fds {
            failures.push(format!(
                "{}: leaked (maps {maps} -> {maps_after}, fds {fds} -> {fds_after})",
                c.name
            ));
        }
        // A section in a read-only segment mapped from the file is checked
        // through that mapping (`load_fd`): the same verdict.
        if c.name.starts_with("eh_frame:") {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, &elf.bytes).unwrap();
            let len = elf.bytes.len() as u64;
            let result = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: a trusted test library, its file unchanged while loaded.
                unsafe { memdl::ElfImage::load_fd(&file, 0, len) }
                    .map_err(|e| format!("did not load: {e:?} ({e})"))
                    .and_then(|img| (c.check)(&img))
            }));
            match result {
                Err(_) => failures.push(format!("{} (load_fd): panicked", c.name)),
                Ok(Err(why)) => failures.push(format!("{} (load_fd): {why}", c.name)),
                Ok(Ok(())) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + lookups.len(),
        failures.join("\n")
    );
}
