//! `memdl inspect FILE`: the static view of an ELF shared object (goblin)
//! and the verdict of actually loading it with memdl.

use std::collections::BTreeMap;
use std::io::Write;

use goblin::elf::dynamic::{self, Dyn};
use goblin::elf::program_header::{self, ProgramHeader, PT_LOAD};
use goblin::elf::{header, reloc, sym, Elf};

use crate::input::{Input, Source};
use crate::{elfscan, CliResult, Failure};

/// Exports listed without `--all`.
const EXPORTS_SHOWN: usize = 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub source: Source,
    /// List every export (default: the first 20)
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: &Args, out: &mut dyn Write) -> CliResult {
    let input = Input::open(&args.source)?;
    let bytes = input.bytes();
    let elf = parse(bytes).map_err(|why| {
        Failure::new(format!(
            "{}: not a readable ELF file: {why}",
            input.describe()
        ))
    })?;

    writeln!(out, "{}", input.describe())?;
    let h = &elf.header;
    writeln!(
        out,
        "  type      {}, {}, {} {}",
        type_name(h.e_type),
        machine_name(h.e_machine),
        if elf.is_64 { "ELF64" } else { "ELF32" },
        if elf.little_endian {
            "little-endian"
        } else {
            "big-endian"
        }
    )?;
    writeln!(out, "  soname    {}", elf.soname.unwrap_or("(none)"))?;
    let needed = if elf.libraries.is_empty() {
        "(none)".to_owned()
    } else {
        elf.libraries.join(", ")
    };
    writeln!(out, "  needed    {needed}")?;

    segments(&elf, out)?;
    dynamic_entries(&elf, out)?;
    relocations(&elf, bytes, out)?;
    exports(&elf, args.all, out)?;
    load_verdict(&input, out)
}

/// goblin's view of `bytes`, or why there is none. 64-bit little-endian
/// files pass memdl's own header checks first, so goblin never sees
/// absurd table sizes; a panic inside goblin is caught and reported as an
/// error like any other.
pub fn parse(bytes: &[u8]) -> Result<Elf<'_>, String> {
    if !bytes.starts_with(b"\x7fELF") {
        return Err(
            "no ELF magic (\\x7fELF) at its start (to find ELF images inside it: memdl extract)"
                .to_owned(),
        );
    }
    if bytes.get(4..6) == Some(&[2, 1]) {
        elfscan::probe(bytes)?;
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parsed = std::panic::catch_unwind(|| Elf::parse(bytes));
    std::panic::set_hook(previous_hook);
    match parsed {
        Ok(Ok(elf)) => Ok(elf),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the ELF parser gave up on malformed metadata".to_owned()),
    }
}

fn segments(elf: &Elf<'_>, out: &mut dyn Write) -> CliResult {
    writeln!(out, "\nsegments ({}):", elf.program_headers.len())?;
    writeln!(
        out,
        "  {:<16} {:>10} {:>12} {:>10} {:>10}  {:<5} {:>8}",
        "type", "offset", "vaddr", "filesz", "memsz", "flags", "align"
    )?;
    for ph in &elf.program_headers {
        writeln!(
            out,
            "  {:<16} {:>10} {:>12} {:>10} {:>10}  {:<5} {:>8}",
            segment_type(ph.p_type),
            format!("{:#x}", ph.p_offset),
            format!("{:#x}", ph.p_vaddr),
            format!("{:#x}", ph.p_filesz),
            format!("{:#x}", ph.p_memsz),
            flags_rwx(ph.p_flags),
            format!("{:#x}", ph.p_align),
        )?;
    }
    Ok(())
}

fn segment_type(p_type: u32) -> String {
    match p_type {
        0x6474_e553 => "PT_GNU_PROPERTY".to_owned(),
        t => match program_header::pt_to_str(t) {
            name if name.starts_with("UNKNOWN") => format!("{t:#x}"),
            name => name.to_owned(),
        },
    }
}

/// `ET_DYN`: goblin's names lack the prefix readelf and the gABI use.
pub fn type_name(e_type: u16) -> String {
    match header::et_to_str(e_type) {
        name if name.contains("UNKNOWN") => format!("type {e_type:#x}"),
        name => format!("ET_{name}"),
    }
}

/// `EM_X86_64`, `EM_AARCH64`, ...
pub fn machine_name(machine: u16) -> String {
    match header::machine_to_str(machine) {
        name if name.contains("UNKNOWN") => format!("machine {machine}"),
        name => format!("EM_{name}"),
    }
}

/// `R_X86_64_RELATIVE`, or the number for a type goblin does not know.
fn relocation_name(r_type: u32, machine: u16) -> String {
    match reloc::r_to_str(r_type, machine) {
        name if name.contains("UNKNOWN") => format!("relocation type {r_type}"),
        name if name.starts_with("R_") => name.to_owned(),
        name => format!("R_{name}"),
    }
}

/// `r-x` style flags of a program header.
pub fn flags_rwx(flags: u32) -> String {
    let bit = |mask: u32, c: char| if flags & mask != 0 { c } else { '-' };
    [
        bit(program_header::PF_R, 'r'),
        bit(program_header::PF_W, 'w'),
        bit(program_header::PF_X, 'x'),
    ]
    .iter()
    .collect()
}

const DT_RELRSZ: u64 = 35;
const DT_RELR: u64 = 36;
const DT_RELRENT: u64 = 37;

fn dynamic_entries(elf: &Elf<'_>, out: &mut dyn Write) -> CliResult {
    let Some(dynamic) = &elf.dynamic else {
        writeln!(out, "\ndynamic entries: none (no PT_DYNAMIC)")?;
        return Ok(());
    };
    let entries: Vec<&Dyn> = dynamic
        .dyns
        .iter()
        .filter(|d| d.d_tag != dynamic::DT_NULL)
        .collect();
    writeln!(out, "\ndynamic entries ({}):", entries.len())?;
    for d in entries {
        writeln!(out, "  {:<20} {}", tag_name(d.d_tag), tag_value(elf, d))?;
    }
    Ok(())
}

fn tag_name(tag: u64) -> String {
    let name = match tag {
        DT_RELRSZ => "DT_RELRSZ",
        DT_RELR => "DT_RELR",
        DT_RELRENT => "DT_RELRENT",
        0x6fff_fef6 => "DT_TLSDESC_PLT",
        0x6fff_fef7 => "DT_TLSDESC_GOT",
        0x6fff_fffa => "DT_RELCOUNT",
        0x7fff_fffd => "DT_AUXILIARY",
        0x7fff_ffff => "DT_FILTER",
        t => dynamic::tag_to_str(t),
    };
    if name.starts_with("UNKNOWN") {
        format!("{tag:#x}")
    } else {
        name.to_owned()
    }
}

/// A dynamic entry's value as a reader wants it: names for string and flag
/// entries, decimal for sizes, hex for addresses.
fn tag_value(elf: &Elf<'_>, d: &Dyn) -> String {
    let string = || {
        elf.dynstrtab.get_at(d.d_val as usize).map_or_else(
            || format!("(bad string offset {:#x})", d.d_val),
            str::to_owned,
        )
    };
    match d.d_tag {
        dynamic::DT_NEEDED | dynamic::DT_SONAME | dynamic::DT_RPATH | dynamic::DT_RUNPATH => {
            string()
        }
        dynamic::DT_FLAGS => flag_names(d.d_val, dynamic::df_tag_to_str),
        dynamic::DT_FLAGS_1 => flag_names(d.d_val, dynamic::df_1_tag_to_str),
        dynamic::DT_PLTREL => dynamic::tag_to_str(d.d_val).to_owned(),
        dynamic::DT_PLTRELSZ
        | dynamic::DT_RELASZ
        | dynamic::DT_RELAENT
        | dynamic::DT_RELSZ
        | dynamic::DT_RELENT
        | dynamic::DT_STRSZ
        | dynamic::DT_SYMENT
        | dynamic::DT_INIT_ARRAYSZ
        | dynamic::DT_FINI_ARRAYSZ
        | dynamic::DT_PREINIT_ARRAYSZ
        | DT_RELRSZ
        | DT_RELRENT => format!("{} bytes", d.d_val),
        dynamic::DT_RELACOUNT | 0x6fff_fffa | dynamic::DT_VERDEFNUM | dynamic::DT_VERNEEDNUM => {
            d.d_val.to_string()
        }
        _ => format!("{:#x}", d.d_val),
    }
}

fn flag_names(value: u64, name: fn(u64) -> &'static str) -> String {
    let names: Vec<String> = (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|&mask| value & mask != 0)
        .map(|mask| match name(mask) {
            n if n.starts_with("UNKNOWN") => format!("{mask:#x}"),
            n => n.to_owned(),
        })
        .collect();
    if names.is_empty() {
        "0".to_owned()
    } else {
        names.join(" ")
    }
}

fn relocations(elf: &Elf<'_>, bytes: &[u8], out: &mut dyn Write) -> CliResult {
    let machine = elf.header.e_machine;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = |r_type: u32, n: u64| {
        *counts.entry(relocation_name(r_type, machine)).or_default() += n;
    };
    // Some linkers make DT_RELA's range include DT_JMPREL's: count those
    // entries once, as the PLT relocations they are.
    let (rela, plt) = match &elf.dynamic {
        Some(d) => (
            d.info.rela as u64,
            d.info.jmprel as u64..d.info.jmprel as u64 + d.info.pltrelsz as u64,
        ),
        None => (0, 0..0),
    };
    let entry_size = if elf.is_64 { 24 } else { 12 };
    for (i, r) in elf.dynrelas.iter().enumerate() {
        if !plt.contains(&(rela + i as u64 * entry_size)) {
            count(r.r_type, 1);
        }
    }
    for r in elf.dynrels.iter().chain(elf.pltrelocs.iter()) {
        count(r.r_type, 1);
    }
    let relr = relr_count(elf, bytes);
    let mut rows: Vec<(String, u64)> = counts.into_iter().collect();
    if relr > 0 {
        let relative = match machine {
            header::EM_AARCH64 => "R_AARCH64_RELATIVE (packed, DT_RELR)",
            _ => "R_X86_64_RELATIVE (packed, DT_RELR)",
        };
        rows.push((relative.to_owned(), relr));
    }
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: u64 = rows.iter().map(|r| r.1).sum();
    writeln!(out, "\nrelocations ({total}):")?;
    for (name, n) in rows {
        writeln!(out, "  {name}: {n}")?;
    }
    Ok(())
}

/// Relative relocations packed in `DT_RELR`: an even entry is one address,
/// an odd entry a bitmap of the following 63 words (bit 0 marks it).
fn relr_count(elf: &Elf<'_>, bytes: &[u8]) -> u64 {
    let Some(dynamic) = &elf.dynamic else {
        return 0;
    };
    let value = |tag| {
        dynamic
            .dyns
            .iter()
            .find(|d| d.d_tag == tag)
            .map(|d| d.d_val)
    };
    let (Some(addr), Some(size)) = (value(DT_RELR), value(DT_RELRSZ)) else {
        return 0;
    };
    let Some(table) = file_range(&elf.program_headers, addr, size).and_then(|r| bytes.get(r))
    else {
        return 0;
    };
    table
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        .map(|entry| {
            if entry & 1 == 0 {
                1
            } else {
                u64::from((entry >> 1).count_ones())
            }
        })
        .sum()
}

/// Where `size` bytes at address `vaddr` lie in the file, if one `PT_LOAD`
/// holds them all.
fn file_range(phdrs: &[ProgramHeader], vaddr: u64, size: u64) -> Option<std::ops::Range<usize>> {
    let ph = phdrs.iter().find(|p| {
        p.p_type == PT_LOAD
            && vaddr >= p.p_vaddr
            && vaddr
                .checked_add(size)
                .is_some_and(|end| end <= p.p_vaddr.saturating_add(p.p_filesz))
    })?;
    let start = usize::try_from(ph.p_offset.checked_add(vaddr - ph.p_vaddr)?).ok()?;
    Some(start..start.checked_add(usize::try_from(size).ok()?)?)
}

/// The symbols a plain-name lookup finds: defined, global or weak, default
/// or protected visibility, default version.
pub fn static_exports<'a>(elf: &Elf<'a>) -> Vec<(&'a str, sym::Sym)> {
    let hidden = |i: usize| {
        elf.versym
            .as_ref()
            .and_then(|v| v.get_at(i))
            .is_some_and(|v| v.is_hidden())
    };
    elf.dynsyms
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.st_shndx != 0
                && matches!(
                    s.st_bind(),
                    sym::STB_GLOBAL | sym::STB_WEAK | sym::STB_GNU_UNIQUE
                )
                && matches!(s.st_visibility(), sym::STV_DEFAULT | sym::STV_PROTECTED)
                && !matches!(s.st_type(), sym::STT_SECTION | sym::STT_FILE)
                // foo@V1 (a non-default version) is not found by plain name.
                && !hidden(*i)
        })
        .filter_map(|(_, s)| {
            let name = elf.dynstrtab.get_at(s.st_name)?;
            (!name.is_empty()).then_some((name, s))
        })
        .collect()
}

fn exports(elf: &Elf<'_>, all: bool, out: &mut dyn Write) -> CliResult {
    let mut list = static_exports(elf);
    list.sort_by(|a, b| a.0.cmp(b.0));
    let shown = if all {
        list.len()
    } else {
        list.len().min(EXPORTS_SHOWN)
    };
    if shown < list.len() {
        writeln!(
            out,
            "\nexports ({}, first {shown} shown; --all for all):",
            list.len()
        )?;
    } else {
        writeln!(out, "\nexports ({}):", list.len())?;
    }
    if shown > 0 {
        writeln!(out, "  {:<8} {:>10} {:>8}  name", "type", "value", "size")?;
    }
    for (name, s) in &list[..shown] {
        let place = if s.st_shndx == goblin::elf::section_header::SHN_ABS as usize {
            "absolute".to_owned()
        } else {
            format!("{:#x}", s.st_value)
        };
        writeln!(
            out,
            "  {:<8} {:>10} {:>8}  {name}",
            sym::type_to_str(s.st_type()),
            place,
            s.st_size
        )?;
    }
    Ok(())
}

fn load_verdict(input: &Input, out: &mut dyn Write) -> CliResult {
    match input.load_memdl() {
        Ok(img) => {
            let segs: Vec<memdl::SegmentInfo> = img.segments().collect();
            let mapped = segs
                .iter()
                .filter(|s| s.placement == memdl::Placement::Mapped)
                .count();
            use memdl::Library;
            writeln!(
                out,
                "\nload: yes, memdl loads it (base {:#x}; {} segments: {} mapped from the file, {} copied; {} exports)",
                img.base_address(),
                segs.len(),
                mapped,
                segs.len() - mapped,
                img.exports().count()
            )?;
        }
        Err(e) => writeln!(out, "\nload: no, memdl cannot load it: {e}")?,
    }
    Ok(())
}
