//! Makes memory-loaded images visible to debuggers and profilers.
//!
//! At load the loader calls [`describe`] once, from what relocation does
//! not change (so for a big image it runs beside relocation, on a helper
//! thread), and, after relocation and final protections and before the
//! initialisers run (so a breakpoint in a constructor is hit),
//! [`Description::register`]. That returns a [`DebugRegistration`] that
//! the image keeps and drops when it is unmapped (after the finalisers
//! ran).
//!
//! * **Debuggers** (on by default, [`crate::Options::debugger_registration`]):
//!   an ELF object describing the image at its runtime addresses (sections
//!   over the segments, `.symtab` from the dynamic symbols and the file's
//!   own `.symtab` when it has one, `.eh_frame` for unwinding) is
//!   registered through the GDB JIT interface ([`gdb_jit`]); see
//!   [`object`] for why every address in it is absolute.
//! * **perf** (`MEMDL_PERF_MAP=1` or [`crate::Options::perf_map`]): the
//!   image's functions are appended to `/tmp/perf-<pid>.map` ([`perf_map`]).
//!
//! Nothing here can fail a load: a file whose extra information is
//! missing or malformed gets a description without it.
//!
//! **Cost.** The debugger reads the object as one range of the process's
//! memory, lazily, so the object can refer to bytes beyond its own: when
//! nothing from outside the segments is carried (a stripped file, or one
//! whose `.symtab` and DWARF are over [`DebugOptions::file_info_limit`]), it
//! is written in the room the load reserved right under the image
//! ([`room_below`]), and its `.eh_frame` and `.strtab` sections are the
//! image's own `.eh_frame` and dynamic string table, named by their offset
//! from the object's start: nothing is copied, nothing of the file read
//! but its section headers (one read), and no symbol name is read. What
//! remains is a `.symtab` entry per exported symbol. An unstripped file's
//! object (its local names need a string table of their own, its DWARF is
//! rebased) is built in an allocation of its own, as before: one
//! allocation sized up front, `.eh_frame` read straight into it.

#[cfg(feature = "debug-info")]
mod dwarf;
pub(crate) mod file;
pub(crate) mod gdb_jit;
pub(crate) mod object;
pub(crate) mod perf_map;

use goblin::elf::sym::{STB_LOCAL, STT_FUNC, STT_GNU_IFUNC, STT_OBJECT};

use crate::elf::symbols::SymbolTable;
use crate::elf::Memory;
use crate::map::Mapping;
use file::{ReadAt, Sections};
use gdb_jit::{JitRegistration, Object};
use object::{Name, ObjSym, Out, Piece, PieceKind, SliceOut, Strings};

/// What [`crate::Options`] says about debugger and profiler visibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DebugOptions {
    /// Register with the GDB JIT interface.
    pub gdb: bool,
    /// Write perf map lines: `None` follows `MEMDL_PERF_MAP`.
    pub perf_map: Option<bool>,
    /// Most bytes of the file's `.symtab` with its strings, and of its
    /// DWARF, carried into the debuggers' object (each).
    pub file_info_limit: u64,
}

/// Default of [`DebugOptions::file_info_limit`].
pub(crate) const FILE_INFO_LIMIT: u64 = 4 << 20;

impl Default for DebugOptions {
    fn default() -> Self {
        DebugOptions {
            gdb: true,
            perf_map: None,
            file_info_limit: FILE_INFO_LIMIT,
        }
    }
}

/// Most address space reserved under an image for its object.
const MAX_ROOM: u64 = 64 << 20;

/// Address space to reserve under an image of `span` bytes, in the same
/// mapping, for the debuggers' object (see [`describe`]): its header,
/// section headers and `.symtab`, whose 24-byte entries are the image's
/// dynamic symbols again, so an eighth of the span is plenty for any real
/// library (an object that does not fit is built elsewhere, copying).
/// Reserved, not used: it costs address space only.
pub(crate) fn room_below(span: u64, options: &DebugOptions) -> usize {
    match options.gdb {
        true => (16 << 10) + (span / 8).min(MAX_ROOM) as usize,
        false => 0,
    }
}

/// What [`describe`] needs to know about a loaded image.
pub(crate) struct ImageView<'a> {
    /// The image's memory (load bias and `PT_LOAD`s).
    pub mem: Memory<'a>,
    /// `PT_GNU_EH_FRAME`'s address.
    pub eh_frame_hdr: Option<u64>,
    /// The validated dynamic symbol table.
    pub dynsym: &'a SymbolTable,
    /// Length of the ELF file, and a reader of its bytes (the section
    /// headers and `.symtab` lie outside the loaded segments).
    pub file_len: u64,
    pub read_file: ReadAt<'a>,
    /// The image's mapping, with room reserved under the image.
    pub mapping: &'a Mapping,
    /// Where the ELF header says the section headers are.
    pub section_table: crate::elf::SectionTable,
}

/// Kept by the loaded image; unregisters on drop.
pub(crate) struct DebugRegistration {
    _gdb: Option<JitRegistration>,
}

/// Where the image's `.eh_frame` is and where its bytes are read from.
#[derive(Clone, Copy)]
struct EhFrame {
    /// Runtime address.
    runtime: u64,
    len: u64,
    from: EhBytes,
}

#[derive(Clone, Copy)]
enum EhBytes {
    /// At this offset of the file.
    File(u64),
    /// In the image's memory, at this address in the file's terms.
    Memory(u64),
}

/// What makes an image visible to debuggers and profilers, built and not
/// yet announced ([`Description::register`]): nothing of it is visible
/// before, so it can be built while the image is still being relocated
/// (from what relocation does not change) and dropped if the load fails.
pub(crate) struct Description {
    /// perf map lines.
    perf_lines: String,
    /// The debuggers' object.
    object: Option<Object>,
}

impl Description {
    /// Appends the perf map lines and announces the object to debuggers.
    pub(crate) fn register(self) -> DebugRegistration {
        perf_map::append(&self.perf_lines);
        DebugRegistration {
            _gdb: self.object.map(JitRegistration::register),
        }
    }
}

/// Describes the image `view` shows as `options` ask; `None` when nothing
/// is to be registered. Reads only the image's read-only segments and the
/// file, and writes only the room under the image.
pub(crate) fn describe(view: &ImageView<'_>, options: &DebugOptions) -> Option<Description> {
    let perf = options.perf_map.unwrap_or_else(perf_map::env_enabled);
    if !options.gdb && !perf {
        return None;
    }
    let bias = view.mem.bias() as u64;
    let sections = Sections::read(view.file_len, view.read_file, view.section_table);
    let limit = options.file_info_limit;
    let symtab = sections
        .as_ref()
        .and_then(|s| s.symtab(view.file_len, view.read_file, limit));
    let eh = if options.gdb {
        view.eh_frame_hdr
            .and_then(|hdr| eh_frame(view, hdr, sections.as_ref()))
    } else {
        None
    };

    let dynsym = view.dynsym;
    // The names stay where they are: the object's .strtab is or starts
    // with the whole dynamic string table, so a symbol keeps its offset
    // and no name is scanned for its end (only perf's map needs the bytes).
    let dynstr = dynsym.strings.bytes();
    // The file's .symtab adds what the dynamic table lacks: local (static
    // and hidden) functions and objects. Its global symbols are the
    // dynamic ones again.
    let locals: &[ObjSym<'_>] = &symtab
        .as_ref()
        .map(|(table, strings)| file_locals(table, strings, bias))
        .unwrap_or_default();
    let table = object::DynamicTable {
        entries: dynsym.entry_bytes(),
        strsz: dynstr.len(),
        bias,
    };

    let mut perf_lines = String::new();
    if perf {
        let pieces = pieces(view, None);
        let symbols = locals.iter().copied().chain(dynamic_symbols(dynsym, bias));
        perf_lines = perf_map::lines(symbols.filter_map(|s| {
            let kind = s.info & 0xf;
            let code = object::piece_of(&pieces, s.value)
                .is_some_and(|i| pieces[i].kind == PieceKind::Text);
            if !(matches!(kind, STT_FUNC | STT_GNU_IFUNC) && s.size > 0 && code) {
                return None;
            }
            let name = match s.name {
                Name::Dynamic(offset) => dynsym.strings.get(offset.into()).ok()?,
                Name::Bytes(name) => name,
            };
            Some((s.value, s.size, name))
        }));
    }
    if !options.gdb {
        return Some(Description {
            perf_lines,
            object: None,
        });
    }
    let debug = match &sections {
        Some(s) if s.has_debug_info() && s.debug_info_size() <= limit => dwarf::rebased(s, view),
        _ => Vec::new(),
    };
    let extra: Vec<object::Extra<'_>> = debug
        .iter()
        .map(|(name, data)| object::Extra { name, data })
        .collect();
    // At most this many symbols, and this many bytes of own names.
    let counts = (
        dynsym.len() as usize + locals.len(),
        locals
            .iter()
            .map(|s| match s.name {
                Name::Bytes(b) => b.len() + 1,
                Name::Dynamic(_) => 0,
            })
            .sum(),
    );
    // Nothing from outside the segments: the object refers to the image's
    // own `.eh_frame` and `.dynstr` where they are, from the room reserved
    // under it; else it is built in an allocation of its own.
    let in_place = match symtab.is_none() && extra.is_empty() {
        // (Without the file's .symtab there are no locals.)
        true => in_image(view, eh, dynstr, counts, table),
        false => None,
    };
    let object = match in_place {
        Some(object) => Some(object),
        None => copied(view, eh, dynstr, &extra, counts, locals, table),
    };
    Some(Description { perf_lines, object })
}

/// The dynamic symbols worth a debugger's while (see
/// [`object::wanted_dynamic`]), at their runtime addresses.
fn dynamic_symbols(dynsym: &SymbolTable, bias: u64) -> impl Iterator<Item = ObjSym<'_>> {
    let strsz = dynsym.strings.bytes().len();
    dynsym
        .entries()
        .filter(move |sym| object::wanted_dynamic(sym, strsz))
        .map(move |sym| ObjSym {
            name: Name::Dynamic(sym.name),
            value: bias.wrapping_add(sym.value),
            size: sym.size,
            info: sym.info,
            other: sym.other,
        })
}

/// The local functions and objects of the file's `.symtab`.
fn file_locals<'a>(table: &'a [u8], strings: &'a [u8], bias: u64) -> Vec<ObjSym<'a>> {
    file::symbols(table)
        .filter_map(|s| {
            let kind = s.kind();
            if s.bind() != STB_LOCAL
                || !s.in_section()
                || !matches!(kind, STT_FUNC | STT_OBJECT | STT_GNU_IFUNC)
            {
                return None;
            }
            let name = file::string(strings, s.name).filter(|n| !n.is_empty())?;
            Some(ObjSym {
                name: Name::Bytes(name),
                value: bias.wrapping_add(s.value),
                size: s.size,
                info: s.info,
                other: s.other,
            })
        })
        .collect()
}

/// The object written in the room under the image: header, `.symtab`,
/// section headers; its `.eh_frame` and `.strtab` sections are the
/// image's `.eh_frame` and dynamic string table, in place, so nothing of
/// the file is read or copied. `None` if there is no room (or no proper
/// string table: it must start and end with a NUL).
fn in_image(
    view: &ImageView<'_>,
    eh: Option<EhFrame>,
    dynstr: &[u8],
    counts: (usize, usize),
    table: object::DynamicTable<'_>,
) -> Option<Object> {
    if dynstr.first() != Some(&0) || dynstr.last() != Some(&0) {
        return None;
    }
    let pieces = pieces(view, eh.map(|e| (e.runtime, e.len)));
    let capacity = object::size(pieces.len(), 0, 0, &[], counts);
    let addr = view.mapping.open_below(capacity)?;
    // SAFETY: `open_below` made `capacity` bytes at `addr` (page-rounded)
    // read-write; they belong to the image's mapping, under the image,
    // and nothing else refers to them.
    let room = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, capacity) };
    let mut out = SliceOut::new(room);
    out.pad_to(object::EHDR);
    // Offsets from the object's start: the image lies above it.
    let offset = |runtime: u64| runtime.wrapping_sub(addr as u64);
    let eh_frame = eh.map_or((0, 0), |e| (offset(e.runtime), e.len));
    let strings_at = offset(dynstr.as_ptr() as u64);
    let strings = Strings::InPlace {
        offset: strings_at,
        len: dynstr.len() as u64,
    };
    let layout = object::Layout { eh_frame, strings };
    let machine = crate::arch::EM_CURRENT;
    object::build(&mut out, machine, &pieces, &[], layout, &[], table);
    if out.overflowed() {
        return None;
    }
    // The debugger reads the object as one range: up to the end of the
    // last thing in it.
    let len = [
        out.len() as u64,
        eh_frame.0 + eh_frame.1,
        strings_at + dynstr.len() as u64,
    ]
    .into_iter()
    .max()?;
    Some(Object::InImage {
        addr,
        len: len as usize,
    })
}

/// The object in one allocation: its header, `.eh_frame` read straight
/// into it, then what `object::build` appends.
fn copied(
    view: &ImageView<'_>,
    mut eh: Option<EhFrame>,
    dynstr: &[u8],
    extra: &[object::Extra<'_>],
    counts: (usize, usize),
    locals: &[ObjSym<'_>],
    table: object::DynamicTable<'_>,
) -> Option<Object> {
    let eh_len = eh.map_or(0, |e| e.len as usize);
    let mut out = Vec::new();
    out.try_reserve_exact(object::size(
        view.mem.loads().len() + 2,
        eh_len,
        dynstr.len(),
        extra,
        counts,
    ))
    .ok()?;
    out.resize(object::EHDR, 0);
    if let Some(e) = eh {
        let read = match e.from {
            EhBytes::File(offset) => (view.read_file)(offset, e.len, &mut out),
            EhBytes::Memory(vaddr) => copy_from_memory(&view.mem, vaddr, e.len, &mut out),
        };
        if !read {
            eh = None;
        }
    }
    let pieces = pieces(view, eh.map(|e| (e.runtime, e.len)));
    let layout = object::Layout {
        eh_frame: (object::EHDR as u64, eh.map_or(0, |e| e.len)),
        strings: Strings::Copied(dynstr),
    };
    let machine = crate::arch::EM_CURRENT;
    object::build(&mut out, machine, &pieces, extra, layout, locals, table);
    Some(Object::Owned(out))
}

/// The sections over the image: one per segment (split around
/// `.eh_frame`, which becomes its own), sorted by address.
fn pieces(view: &ImageView<'_>, eh_frame: Option<(u64, u64)>) -> Vec<Piece> {
    let bias = view.mem.bias() as u64;
    let loads = view.mem.loads();
    let mut out = Vec::with_capacity(loads.len() + 2);
    for seg in loads {
        let kind = if seg.executable() {
            PieceKind::Text
        } else if seg.writable() {
            PieceKind::Data
        } else {
            PieceKind::ReadOnly
        };
        let (start, end) = (bias.wrapping_add(seg.vaddr), bias.wrapping_add(seg.end()));
        let mut push = |start: u64, end: u64, kind| {
            if end > start {
                out.push(Piece { start, end, kind });
            }
        };
        match eh_frame {
            Some((at, len)) if at >= start && at < end => {
                let eh_end = at + len;
                push(start, at, kind);
                push(at, eh_end, PieceKind::EhFrame);
                push(eh_end, end, kind);
            }
            _ => push(start, end, kind),
        }
    }
    out
}

/// Appends the `len` bytes at `vaddr` of the image to `out`.
fn copy_from_memory(mem: &Memory<'_>, vaddr: u64, len: u64, out: &mut Vec<u8>) -> bool {
    let Ok(view) = mem.table(".eh_frame", vaddr, len) else {
        return false;
    };
    if out.try_reserve(view.len()).is_err() {
        return false;
    }
    // A read-only segment (the usual place) can be taken as a slice;
    // otherwise, byte by byte through unaligned reads.
    let read_only = mem
        .loads()
        .iter()
        .any(|s| !s.writable() && s.contains(vaddr, len));
    if read_only {
        out.extend_from_slice(view.bytes());
    } else {
        out.extend(view.array::<u8>().iter());
    }
    true
}

/// The image's `.eh_frame`, found through `.eh_frame_hdr`'s
/// `eh_frame_ptr`. When a section header describes it (same address,
/// inside the segment's file bytes) its bytes are read from the file;
/// otherwise its size is where its records end in memory (the zero
/// terminator, else the segment's end), and they are copied from memory.
fn eh_frame(view: &ImageView<'_>, hdr: u64, sections: Option<&Sections>) -> Option<EhFrame> {
    let mem = &view.mem;
    // The part of a readable segment from `vaddr` to its end.
    let segment_from = |vaddr: u64| {
        let seg = mem
            .loads()
            .iter()
            .find(|s| s.readable() && s.contains(vaddr, 1))?;
        mem.table(".eh_frame", vaddr, seg.end() - vaddr).ok()
    };
    let (vaddr, _) = crate::runtime::unwind::locate(mem, hdr)?;
    let bias = mem.bias() as u64;
    let runtime = bias.wrapping_add(vaddr);
    let from_file = sections.and_then(|s| {
        let sh = s.headers.iter().find(|h| h.addr == vaddr && h.size > 0)?;
        let seg = mem.loads().iter().find(|g| g.contains(vaddr, sh.size))?;
        if vaddr + sh.size > seg.vaddr + seg.filesz || sh.size > file::MAX_TABLE {
            return None;
        }
        Some((seg.offset + (vaddr - seg.vaddr), sh.size))
    });
    if let Some((offset, len)) = from_file {
        return Some(EhFrame {
            runtime,
            len,
            from: EhBytes::File(offset),
        });
    }
    let bytes = segment_from(vaddr)?;
    let mut pos = 0usize;
    while let Some(len) = bytes.read::<u32>(pos) {
        let next = match len {
            0 => {
                pos += 4;
                break;
            }
            u32::MAX => {
                let ext = bytes.read::<u64>(pos + 4)?;
                usize::try_from(ext)
                    .ok()
                    .and_then(|e| e.checked_add(pos + 12))
            }
            n => (pos + 4).checked_add(n as usize),
        };
        match next {
            Some(n) if n <= bytes.len() => pos = n,
            _ => break,
        }
    }
    (pos > 0 && pos as u64 <= file::MAX_TABLE).then_some(EhFrame {
        runtime,
        len: pos as u64,
        from: EhBytes::Memory(vaddr),
    })
}

/// Without the `debug-info` feature: no DWARF in the object.
#[cfg(not(feature = "debug-info"))]
mod dwarf {
    use super::{ImageView, Sections};

    pub(crate) fn rebased(
        _sections: &Sections,
        _view: &ImageView<'_>,
    ) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
}
