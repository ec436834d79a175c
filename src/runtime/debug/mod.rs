//! Makes memory-loaded images visible to debuggers and profilers.
//!
//! At load, after relocation and final protections and before the
//! initialisers run (so a breakpoint in a constructor is hit), the loader
//! calls [`register`] once. It returns a [`DebugRegistration`] that the
//! image keeps and drops when it is unmapped (after the finalisers ran).
//!
//! * **Debuggers** (on by default, [`crate::Options::debugger_registration`]):
//!   an ELF object describing the image at its runtime addresses (sections
//!   over the segments, `.symtab` from the dynamic symbols and the file's
//!   own `.symtab` when it has one, a copy of `.eh_frame` for unwinding) is
//!   registered through the GDB JIT interface ([`gdb_jit`]); see
//!   [`object`] for why every address in it is absolute.
//! * **perf** (`MEMDL_PERF_MAP=1` or [`crate::Options::perf_map`]): the
//!   image's functions are appended to `/tmp/perf-<pid>.map` ([`perf_map`]).
//!
//! Nothing here can fail a load: a file whose extra information is
//! missing or malformed gets a description without it.
//!
//! **Cost.** The object is built in one allocation sized up front, and
//! `.eh_frame` (the bulk of it for a stripped library) is copied once,
//! straight into it: from the caller's bytes, or `pread` from the file
//! (never through a mapping of it, whose pages would be faulted in), or,
//! when no section header gives its size, from the image's memory. Nothing
//! is zero-filled first. The object's `.strtab` starts with the whole
//! dynamic string table, so dynamic symbols keep their name offsets and no
//! name is scanned. A stripped file costs its section headers and their
//! names (two small reads), a pass over the dynamic symbols, and the
//! copies of `.eh_frame` and `.dynstr`.

#[cfg(feature = "debug-info")]
mod dwarf;
pub(crate) mod file;
pub(crate) mod gdb_jit;
pub(crate) mod object;
pub(crate) mod perf_map;

use goblin::elf::sym::{STT_FILE, STT_FUNC, STT_GNU_IFUNC, STT_OBJECT, STT_SECTION, STT_TLS};

use crate::elf::symbols::SymbolTable;
use crate::elf::Memory;
use file::{ReadAt, Sections};
use gdb_jit::JitRegistration;
use object::{Name, ObjSym, Piece, PieceKind};

/// What [`crate::Options`] says about debugger and profiler visibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DebugOptions {
    /// Register with the GDB JIT interface.
    pub gdb: bool,
    /// Write perf map lines: `None` follows `MEMDL_PERF_MAP`.
    pub perf_map: Option<bool>,
}

impl Default for DebugOptions {
    fn default() -> Self {
        DebugOptions {
            gdb: true,
            perf_map: None,
        }
    }
}

/// What [`register`] needs to know about a loaded, relocated image.
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

/// Makes the image `view` describes visible as `options` ask; `None` when
/// nothing was registered.
pub(crate) fn register(view: &ImageView<'_>, options: &DebugOptions) -> Option<DebugRegistration> {
    let perf = options.perf_map.unwrap_or_else(perf_map::env_enabled);
    if !options.gdb && !perf {
        return None;
    }
    let bias = view.mem.bias() as u64;
    let sections = Sections::read(view.file_len, view.read_file);
    let symtab = sections
        .as_ref()
        .and_then(|s| s.symtab(view.file_len, view.read_file));
    let mut eh = if options.gdb {
        view.eh_frame_hdr
            .and_then(|hdr| eh_frame(view, hdr, sections.as_ref()))
    } else {
        None
    };

    let dynsym = view.dynsym;
    // The names stay where they are: the object's .strtab starts with the
    // whole dynamic string table, so a symbol keeps its offset and no name
    // is scanned for its end (only perf's map needs the bytes).
    let dynstr = dynsym.strings.bytes();
    let mut symbols: Vec<ObjSym<'_>> = Vec::with_capacity(dynsym.len() as usize);
    let wanted = |kind: u8| !matches!(kind, STT_TLS | STT_SECTION | STT_FILE);
    for i in 1..dynsym.len() {
        let Some(sym) = dynsym.get(i) else { break };
        if !sym.is_defined() || sym.is_absolute() || !wanted(sym.kind()) {
            continue;
        }
        // Inside the table and not empty (the table's last byte is a NUL
        // or, in a malformed one, ended by the NUL the object adds).
        if dynstr.get(sym.name as usize).is_none_or(|&b| b == 0) {
            continue;
        }
        symbols.push(ObjSym {
            name: Name::Dynamic(sym.name),
            value: bias.wrapping_add(sym.value),
            size: sym.size,
            info: sym.info,
            other: sym.other,
        });
    }
    // The file's .symtab adds what the dynamic table lacks: local (static
    // and hidden) functions and objects. Its global symbols are the
    // dynamic ones again.
    if let Some((table, strings)) = &symtab {
        for s in file::symbols(table) {
            let kind = s.info & 0xf;
            let local = s.info >> 4 == 0;
            let defined = s.shndx != 0 && s.shndx < 0xff00;
            if !local || !defined || !matches!(kind, STT_FUNC | STT_OBJECT | STT_GNU_IFUNC) {
                continue;
            }
            let Some(name) = file::string(strings, s.name).filter(|n| !n.is_empty()) else {
                continue;
            };
            symbols.push(ObjSym {
                name: Name::Bytes(name),
                value: bias.wrapping_add(s.value),
                size: s.size,
                info: s.info,
                other: s.other,
            });
        }
    }

    if perf {
        let pieces = pieces(view, None);
        perf_map::write(symbols.iter().filter_map(|s| {
            let kind = s.info & 0xf;
            let code = object::piece_of(&pieces, s.value)
                .is_some_and(|i| pieces[i].kind == PieceKind::Text);
            if !(matches!(kind, STT_FUNC | STT_GNU_IFUNC) && s.size > 0 && code) {
                return None;
            }
            let name = match s.name {
                Name::Dynamic(offset) => dynsym.strings.get(offset.into()).ok()?,
                Name::Bytes(name) => name,
                Name::Strtab(_) => return None,
            };
            Some((s.value, s.size, name))
        }));
    }
    if !options.gdb {
        return Some(DebugRegistration { _gdb: None });
    }
    let debug = match &sections {
        Some(s) if s.has_debug_info() => dwarf::rebased(s, view),
        _ => Vec::new(),
    };
    let extra: Vec<object::Extra<'_>> = debug
        .iter()
        .map(|(name, data)| object::Extra { name, data })
        .collect();
    // The object in one allocation: its header, `.eh_frame` read straight
    // into it, then what `object::build` appends.
    let eh_len = eh.map_or(0, |e| e.len as usize);
    let mut out = Vec::new();
    out.try_reserve_exact(object::size(
        view.mem.loads().len() + 2,
        eh_len,
        dynstr.len(),
        &extra,
        &symbols,
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
    let object = object::build(
        out,
        crate::arch::EM_CURRENT,
        &pieces,
        &extra,
        dynstr,
        &mut symbols,
    );
    Some(DebugRegistration {
        _gdb: Some(JitRegistration::register(object)),
    })
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
    let h = segment_from(hdr)?;
    let (version, enc) = (h.read::<u8>(0)?, h.read::<u8>(1)?);
    if version != 1 {
        return None;
    }
    let value = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => h.read::<u64>(4)?,
        0x03 => u64::from(h.read::<u32>(4)?),
        0x0b => h.read::<u32>(4)? as i32 as i64 as u64,
        _ => return None,
    };
    let bias = mem.bias() as u64;
    let vaddr = match enc & 0x70 {
        0x10 => (hdr + 4).wrapping_add(value),
        0x30 => hdr.wrapping_add(value),
        // Absolute: a runtime address (relocated).
        0x00 => value.wrapping_sub(bias),
        _ => return None,
    };
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
