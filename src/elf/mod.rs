//! A validated view of an ELF shared object.
//!
//! [`Layout::parse`] checks the file header and program headers against the
//! raw bytes and produces everything needed to map the image. The tables the
//! dynamic section points at live in loaded memory; [`dynamic`] and
//! [`symbols`] read them from there, through [`Memory`], which checks every
//! range against the loaded segments before handing out a typed,
//! bounds-checked [`view`] of it. The readers are safe code; [`view`] is
//! where their reads of the image's memory are proven sound, once.

pub mod dynamic;
pub mod ehframe;
pub mod index;
pub mod records;
pub mod symbols;
pub mod view;

use goblin::elf::header::{
    EI_CLASS, EI_DATA, EI_VERSION, ELFCLASS64, ELFDATA2LSB, ET_DYN, EV_CURRENT,
};
use goblin::elf::program_header::{
    PF_R, PF_W, PF_X, PT_DYNAMIC, PT_GNU_EH_FRAME, PT_GNU_RELRO, PT_LOAD, PT_TLS,
};

use crate::arch;
use crate::error::{Error, Result};
use crate::options::Limits;
pub use view::Memory;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Reads a little-endian integer at `offset` of `bytes`, or `None` when out of range.
pub(crate) fn read_le<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}
/// The little-endian integer at `o` of `b`, 0 when out of range (for
/// fields whose range the caller checked).
fn u16_at(b: &[u8], o: usize) -> u16 {
    read_le::<2>(b, o).map_or(0, u16::from_le_bytes)
}
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    read_le::<4>(b, o).map_or(0, u32::from_le_bytes)
}
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    read_le::<8>(b, o).map_or(0, u64::from_le_bytes)
}

/// One `PT_LOAD` segment, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the program header in the file.
    pub index: usize,
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// `PF_R | PF_W | PF_X`.
    pub flags: u32,
}

impl Segment {
    /// End of the segment's memory image (`vaddr + memsz`, checked at parse).
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }
    pub fn readable(&self) -> bool {
        self.flags & PF_R != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }
    /// Whether `[vaddr, vaddr + size)` lies inside this segment's memory.
    pub fn contains(&self, vaddr: u64, size: u64) -> bool {
        vaddr >= self.vaddr && vaddr.checked_add(size).is_some_and(|end| end <= self.end())
    }
}

/// The `PT_TLS` template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsTemplate {
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// What the program headers say, checked against the file and the page size.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `PT_LOAD`s in ascending address order, non-overlapping.
    pub loads: Vec<Segment>,
    /// Page-aligned start of the lowest segment.
    pub span_start: u64,
    /// Page-aligned end of the highest segment.
    pub span_end: u64,
    /// Alignment the load bias must have (largest `p_align`, at least a page).
    pub align: u64,
    /// `PT_DYNAMIC`: address and size.
    pub dynamic: (u64, u64),
    /// `PT_GNU_RELRO`: address and size, if any.
    pub relro: Option<(u64, u64)>,
    pub tls: Option<TlsTemplate>,
    /// `PT_GNU_EH_FRAME`: address of `.eh_frame_hdr`, if any.
    pub eh_frame_hdr: Option<u64>,
    /// Every program header as the file has it, for `dl_iterate_phdr`.
    pub phdrs: Vec<Phdr>,
    /// Where the ELF header says the section headers are (unchecked:
    /// loading needs none of them; the debuggers' view reads them).
    pub section_table: SectionTable,
    /// Whether `EI_OSABI` is `ELFOSABI_GNU`, which the GNU linkers set in
    /// a file using GNU extensions such as unique symbols (a hint only).
    pub gnu_osabi: bool,
}

/// `EI_OSABI` of a file using GNU extensions.
const ELFOSABI_GNU: u8 = 3;

/// The ELF header's `e_shoff`, `e_shentsize`, `e_shnum` and
/// `e_shstrndx`, as the file has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionTable {
    pub offset: u64,
    pub entry_size: u16,
    pub count: u16,
    pub names_index: u16,
}

impl SectionTable {
    /// The fields of the ELF header `ehdr` (its first 64 bytes, checked).
    pub fn read(ehdr: &[u8]) -> SectionTable {
        SectionTable {
            offset: u64_at(ehdr, 40),
            entry_size: u16_at(ehdr, 58),
            count: u16_at(ehdr, 60),
            names_index: u16_at(ehdr, 62),
        }
    }
}

/// `Elf64_Phdr`, as `dl_iterate_phdr` callers expect it in memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phdr {
    /// Segment type (`PT_LOAD`, `PT_DYNAMIC`, `PT_TLS`, ...).
    pub p_type: u32,
    /// `PF_R | PF_W | PF_X`.
    pub p_flags: u32,
    /// Offset of the segment's first byte in the file.
    pub p_offset: u64,
    /// Address of the segment's first byte, relative to the load bias.
    pub p_vaddr: u64,
    /// Physical address (unused for shared objects; usually `p_vaddr`).
    pub p_paddr: u64,
    /// Bytes of the segment in the file.
    pub p_filesz: u64,
    /// Bytes of the segment in memory (at least `p_filesz`; the rest is zero).
    pub p_memsz: u64,
    /// Alignment of the segment in memory and in the file (a power of two, or 0 or 1).
    pub p_align: u64,
}

fn bad(index: usize, kind: &'static str, reason: &'static str) -> Error {
    Error::BadSegment {
        index,
        kind,
        reason,
    }
}

fn check_limit(what: &'static str, value: u64, limit: u64) -> Result<()> {
    if value > limit {
        return Err(Error::LimitExceeded { what, value, limit });
    }
    Ok(())
}

impl Layout {
    /// Validates the ELF header and program headers of `bytes`.
    pub fn parse(bytes: &[u8], page: u64, limits: &Limits) -> Result<Layout> {
        let len = bytes.len() as u64;
        let table = Self::program_header_table(bytes, len, limits)?;
        // In bounds: the range was checked against `len`.
        let table = &bytes[table.start as usize..table.end as usize];
        let layout = Self::from_program_headers(table, len, page, limits)?;
        Ok(layout.with_section_table(bytes))
    }

    /// Notes where the section headers are, from the ELF header (`ehdr`,
    /// checked by `program_header_table`).
    fn with_section_table(mut self, ehdr: &[u8]) -> Layout {
        self.section_table = SectionTable::read(ehdr);
        self.gnu_osabi = ehdr.get(7) == Some(&ELFOSABI_GNU);
        self
    }

    /// Validates `read_at`'s ELF of `len` bytes, reading only its headers:
    /// the first KiB, and the program header table if it lies beyond.
    /// `read_at(offset, buf)` fills `buf` from that offset of the ELF.
    pub fn parse_headers(
        len: u64,
        page: u64,
        limits: &Limits,
        read_at: impl Fn(u64, &mut [u8]) -> Result<()>,
    ) -> Result<Layout> {
        // Linkers put the program headers right after the ELF header: the
        // first KiB holds both for up to 17 program headers (usually 8 to
        // 12). Read into the stack: a heap buffer is a fresh page to fault
        // in on a first load.
        let mut buf = [0u8; 1024];
        let head = &mut buf[..len.min(1024) as usize];
        read_at(0, head)?;
        let head = &*head;
        let table = Self::program_header_table(head, len, limits)?;
        if table.end <= head.len() as u64 {
            let table = &head[table.start as usize..table.end as usize];
            let layout = Self::from_program_headers(table, len, page, limits)?;
            return Ok(layout.with_section_table(head));
        }
        // Bounded by the program header count limit.
        let mut table_bytes = vec![0u8; (table.end - table.start) as usize];
        read_at(table.start, &mut table_bytes)?;
        let layout = Self::from_program_headers(&table_bytes, len, page, limits)?;
        Ok(layout.with_section_table(head))
    }

    /// Checks the ELF header, which `bytes` (the first bytes of an ELF of
    /// `len` bytes, or all of it when shorter than a header) holds, and
    /// returns where the program header table lies.
    fn program_header_table(
        bytes: &[u8],
        len: u64,
        limits: &Limits,
    ) -> Result<std::ops::Range<u64>> {
        if bytes.len() < EHDR_SIZE {
            if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
                return Err(Error::BadMagic);
            }
            return Err(Error::Truncated {
                what: "ELF header",
                offset: 0,
                size: EHDR_SIZE as u64,
                len,
            });
        }
        if &bytes[..4] != b"\x7fELF" {
            return Err(Error::BadMagic);
        }
        if bytes[EI_CLASS] != ELFCLASS64 {
            return Err(Error::UnsupportedClass(bytes[EI_CLASS]));
        }
        if bytes[EI_DATA] != ELFDATA2LSB {
            return Err(Error::UnsupportedEncoding(bytes[EI_DATA]));
        }
        let e_version = u32_at(bytes, 20);
        if bytes[EI_VERSION] != EV_CURRENT || e_version != u32::from(EV_CURRENT) {
            return Err(Error::UnsupportedVersion(
                if bytes[EI_VERSION] != EV_CURRENT {
                    u32::from(bytes[EI_VERSION])
                } else {
                    e_version
                },
            ));
        }
        let e_type = u16_at(bytes, 16);
        if e_type != ET_DYN {
            return Err(Error::NotSharedObject(e_type));
        }
        let e_machine = u16_at(bytes, 18);
        if e_machine != arch::EM_CURRENT {
            return Err(Error::WrongMachine {
                found: e_machine,
                expected: arch::EM_CURRENT,
            });
        }
        let phoff = u64_at(bytes, 32);
        let phentsize = u16_at(bytes, 54);
        let phnum = u16_at(bytes, 56);
        if usize::from(phentsize) != PHDR_SIZE {
            return Err(Error::BadProgramHeaderSize(phentsize));
        }
        // 0xffff is the extended-numbering escape (count in a section header),
        // which no shared object needs.
        if phnum == 0 || phnum == 0xffff {
            return Err(Error::BadProgramHeaderCount(phnum));
        }
        check_limit(
            "program header count",
            u64::from(phnum),
            limits.max_program_headers,
        )?;
        let table_size = u64::from(phnum) * PHDR_SIZE as u64;
        let table_end = phoff.checked_add(table_size).filter(|&end| end <= len);
        let Some(table_end) = table_end else {
            return Err(Error::Truncated {
                what: "program header table",
                offset: phoff,
                size: table_size,
                len,
            });
        };
        Ok(phoff..table_end)
    }

    fn from_program_headers(
        table: &[u8],
        file_len: u64,
        page: u64,
        limits: &Limits,
    ) -> Result<Layout> {
        let mut loads: Vec<Segment> = Vec::new();
        let mut dynamic = None;
        let mut relro = None;
        let mut tls = None;
        let mut eh_frame_hdr = None;
        let mut align = page;
        let mut phdrs = Vec::with_capacity(table.len() / PHDR_SIZE);
        for (index, ph) in table.chunks_exact(PHDR_SIZE).enumerate() {
            let p_type = u32_at(ph, 0);
            let flags = u32_at(ph, 4);
            let offset = u64_at(ph, 8);
            let vaddr = u64_at(ph, 16);
            let filesz = u64_at(ph, 32);
            let memsz = u64_at(ph, 40);
            let p_align = u64_at(ph, 48);
            phdrs.push(Phdr {
                p_type,
                p_flags: flags,
                p_offset: offset,
                p_vaddr: vaddr,
                p_paddr: u64_at(ph, 24),
                p_filesz: filesz,
                p_memsz: memsz,
                p_align,
            });
            let kind = goblin::elf::program_header::pt_to_str(p_type);
            let in_file = offset.checked_add(filesz).is_some_and(|e| e <= file_len);
            let addr_ok = vaddr.checked_add(memsz).is_some();
            match p_type {
                PT_LOAD => {
                    if !in_file {
                        return Err(bad(
                            index,
                            kind,
                            "file range lies past the end of the input",
                        ));
                    }
                    if filesz > memsz {
                        return Err(bad(index, kind, "p_filesz is larger than p_memsz"));
                    }
                    if !addr_ok {
                        return Err(bad(index, kind, "p_vaddr + p_memsz overflows"));
                    }
                    if p_align > 1 && !p_align.is_power_of_two() {
                        return Err(bad(index, kind, "p_align is not a power of two"));
                    }
                    if vaddr % page != offset % page {
                        return Err(bad(
                            index,
                            kind,
                            "p_vaddr and p_offset are not congruent modulo the page size",
                        ));
                    }
                    if flags & (PF_W | PF_X) == PF_W | PF_X {
                        return Err(Error::WritableAndExecutable { index });
                    }
                    if let Some(prev) = loads.last() {
                        if vaddr < prev.end() {
                            return Err(bad(
                                index,
                                kind,
                                "overlaps or precedes the previous PT_LOAD",
                            ));
                        }
                    }
                    align = align.max(p_align);
                    loads.push(Segment {
                        index,
                        vaddr,
                        memsz,
                        offset,
                        filesz,
                        flags,
                    });
                }
                PT_DYNAMIC => {
                    // Two would leave it open which one the loader and the
                    // code reading `dl_iterate_phdr` each believe.
                    if dynamic.is_some() {
                        return Err(bad(index, kind, "a second PT_DYNAMIC"));
                    }
                    if !in_file || !addr_ok {
                        return Err(bad(index, kind, "lies outside the input"));
                    }
                    if !memsz.is_multiple_of(16) || memsz == 0 {
                        return Err(bad(index, kind, "size is not a whole number of entries"));
                    }
                    dynamic = Some((vaddr, memsz));
                }
                PT_GNU_RELRO => {
                    if !addr_ok {
                        return Err(bad(index, kind, "p_vaddr + p_memsz overflows"));
                    }
                    relro = Some((vaddr, memsz));
                }
                PT_TLS => {
                    if tls.is_some() {
                        return Err(bad(index, kind, "a second PT_TLS"));
                    }
                    if !in_file || !addr_ok || filesz > memsz {
                        return Err(bad(index, kind, "inconsistent sizes"));
                    }
                    if p_align > 1 && !p_align.is_power_of_two() {
                        return Err(bad(index, kind, "p_align is not a power of two"));
                    }
                    check_limit("PT_TLS size", memsz, limits.max_tls_size)?;
                    tls = Some(TlsTemplate {
                        vaddr,
                        filesz,
                        memsz,
                        align: p_align.max(1),
                    });
                }
                PT_GNU_EH_FRAME => eh_frame_hdr = Some(vaddr),
                _ => {}
            }
        }
        let (first, last) = match (loads.first(), loads.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => return Err(Error::NoLoadSegments),
        };
        let span_start = first.vaddr & !(page - 1);
        let span_end = last
            .end()
            .checked_add(page - 1)
            .map(|e| e & !(page - 1))
            .ok_or_else(|| {
                bad(
                    last.index,
                    "PT_LOAD",
                    "end address overflows when page-rounded",
                )
            })?;
        check_limit("image span", span_end - span_start, limits.max_span)?;
        // An alignment above the span limit cannot be honoured sensibly.
        check_limit("segment alignment", align, limits.max_span)?;
        let Some(dynamic) = dynamic else {
            return Err(Error::NoDynamicSegment);
        };
        let in_loads = |vaddr: u64, size: u64| loads.iter().any(|s| s.contains(vaddr, size));
        if !in_loads(dynamic.0, dynamic.1) {
            return Err(Error::TableOutOfBounds {
                table: "PT_DYNAMIC",
                addr: dynamic.0,
                size: dynamic.1,
            });
        }
        if let Some((addr, size)) = relro {
            if size != 0 && !loads.iter().any(|s| s.writable() && s.contains(addr, size)) {
                return Err(Error::TableOutOfBounds {
                    table: "PT_GNU_RELRO",
                    addr,
                    size,
                });
            }
        }
        if let Some(t) = tls {
            if !in_loads(t.vaddr, t.filesz) {
                return Err(Error::TableOutOfBounds {
                    table: "PT_TLS",
                    addr: t.vaddr,
                    size: t.filesz,
                });
            }
        }
        Ok(Layout {
            loads,
            span_start,
            span_end,
            align,
            dynamic,
            relro,
            tls,
            eh_frame_hdr,
            phdrs,
            section_table: SectionTable::default(),
            gnu_osabi: false,
        })
    }

    /// Bytes of address space the image needs.
    pub fn span(&self) -> u64 {
        self.span_end - self.span_start
    }
}
