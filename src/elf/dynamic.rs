//! The dynamic array: which tables exist, where and how big.

use goblin::elf::dynamic::*;

use super::records::Dyn;
use super::Memory;
use crate::error::{Error, Result};

// Not in goblin's constants: packed relative relocations (gABI 2022).
pub const DT_RELRSZ: u64 = 35;
pub const DT_RELR: u64 = 36;
pub const DT_RELRENT: u64 = 37;

/// A table the dynamic section names: address and size in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub vaddr: u64,
    pub size: u64,
}

/// The entries of the dynamic array this loader acts on.
#[derive(Clone, Debug, Default)]
pub struct Dynamic {
    /// `DT_NEEDED` string-table offsets, in order.
    pub needed: Vec<u64>,
    pub soname: Option<u64>,
    /// `DT_RUNPATH` and `DT_RPATH` string-table offsets.
    pub runpath: Option<u64>,
    pub rpath: Option<u64>,
    pub strtab: Option<u64>,
    pub strsz: u64,
    pub symtab: Option<u64>,
    pub syment: Option<u64>,
    pub rela: Option<Table>,
    pub relaent: Option<u64>,
    pub rel: Option<Table>,
    pub relent: Option<u64>,
    pub relr: Option<Table>,
    pub relrent: Option<u64>,
    pub jmprel: Option<Table>,
    /// `DT_RELCOUNT`, `DT_RELACOUNT`: how many `R_*_RELATIVE` entries
    /// the linker put first in `DT_REL`, `DT_RELA` (a hint, unchecked).
    pub relcount: u64,
    pub relacount: u64,
    /// `DT_PLTREL`: `DT_RELA` or `DT_REL`.
    pub pltrel: Option<u64>,
    pub hash: Option<u64>,
    pub gnu_hash: Option<u64>,
    pub versym: Option<u64>,
    pub verdef: Option<u64>,
    pub verdefnum: u64,
    pub verneed: Option<u64>,
    pub verneednum: u64,
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub init_array: Option<Table>,
    pub fini_array: Option<Table>,
    pub flags: u64,
    pub flags_1: u64,
    pub textrel: bool,
}

fn bad(reason: &'static str) -> Error {
    Error::BadDynamic { reason }
}

fn set(slot: &mut Option<u64>, value: u64, reason: &'static str) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(bad(reason));
    }
    Ok(())
}

impl Dynamic {
    /// Reads the dynamic array at `vaddr` (`size` bytes, already checked to
    /// lie in a loaded segment) up to its `DT_NULL`.
    pub fn parse(mem: &Memory<'_>, vaddr: u64, size: u64, max_needed: u64) -> Result<Dynamic> {
        let entries = mem.table("dynamic section", vaddr, size)?.array::<Dyn>();
        let mut d = Dynamic::default();
        let (mut init_array, mut init_arraysz) = (None, None);
        let (mut fini_array, mut fini_arraysz) = (None, None);
        let (mut rela, mut relasz, mut rel, mut relsz) = (None, None, None, None);
        let (mut relr, mut relrsz, mut jmprel, mut pltrelsz) = (None, None, None, None);
        let mut terminated = false;
        for Dyn { tag, val } in entries.iter() {
            match tag {
                DT_NULL => {
                    terminated = true;
                    break;
                }
                DT_NEEDED => {
                    if d.needed.len() as u64 >= max_needed {
                        return Err(Error::LimitExceeded {
                            what: "DT_NEEDED entries",
                            value: d.needed.len() as u64 + 1,
                            limit: max_needed,
                        });
                    }
                    d.needed.push(val);
                }
                DT_SONAME => d.soname = Some(val),
                DT_RUNPATH => d.runpath = Some(val),
                DT_RPATH => d.rpath = Some(val),
                DT_STRTAB => set(&mut d.strtab, val, "DT_STRTAB appears twice")?,
                DT_STRSZ => d.strsz = val,
                DT_SYMTAB => set(&mut d.symtab, val, "DT_SYMTAB appears twice")?,
                DT_SYMENT => d.syment = Some(val),
                DT_RELA => set(&mut rela, val, "DT_RELA appears twice")?,
                DT_RELASZ => relasz = Some(val),
                DT_RELAENT => d.relaent = Some(val),
                DT_REL => set(&mut rel, val, "DT_REL appears twice")?,
                DT_RELSZ => relsz = Some(val),
                DT_RELENT => d.relent = Some(val),
                DT_RELR => set(&mut relr, val, "DT_RELR appears twice")?,
                DT_RELRSZ => relrsz = Some(val),
                DT_RELRENT => d.relrent = Some(val),
                DT_JMPREL => set(&mut jmprel, val, "DT_JMPREL appears twice")?,
                DT_PLTRELSZ => pltrelsz = Some(val),
                DT_PLTREL => d.pltrel = Some(val),
                DT_RELCOUNT => d.relcount = val,
                DT_RELACOUNT => d.relacount = val,
                DT_HASH => d.hash = Some(val),
                DT_GNU_HASH => d.gnu_hash = Some(val),
                DT_VERSYM => d.versym = Some(val),
                DT_VERDEF => d.verdef = Some(val),
                DT_VERDEFNUM => d.verdefnum = val,
                DT_VERNEED => d.verneed = Some(val),
                DT_VERNEEDNUM => d.verneednum = val,
                DT_INIT => d.init = Some(val),
                DT_FINI => d.fini = Some(val),
                DT_INIT_ARRAY => init_array = Some(val),
                DT_INIT_ARRAYSZ => init_arraysz = Some(val),
                DT_FINI_ARRAY => fini_array = Some(val),
                DT_FINI_ARRAYSZ => fini_arraysz = Some(val),
                DT_FLAGS => d.flags |= val,
                DT_FLAGS_1 => d.flags_1 |= val,
                DT_TEXTREL => d.textrel = true,
                _ => {}
            }
        }
        if !terminated {
            return Err(bad("no DT_NULL terminator"));
        }
        if d.flags & DF_TEXTREL != 0 {
            d.textrel = true;
        }
        let pair = |a: Option<u64>, s: Option<u64>, name: &'static str| match (a, s) {
            (Some(vaddr), Some(size)) => Ok(Some(Table { vaddr, size })),
            (Some(_), None) => Err(bad(name)),
            _ => Ok(None),
        };
        d.rela = pair(rela, relasz, "DT_RELA without DT_RELASZ")?;
        d.rel = pair(rel, relsz, "DT_REL without DT_RELSZ")?;
        d.relr = pair(relr, relrsz, "DT_RELR without DT_RELRSZ")?;
        d.jmprel = pair(jmprel, pltrelsz, "DT_JMPREL without DT_PLTRELSZ")?;
        d.init_array = pair(
            init_array,
            init_arraysz,
            "DT_INIT_ARRAY without DT_INIT_ARRAYSZ",
        )?;
        d.fini_array = pair(
            fini_array,
            fini_arraysz,
            "DT_FINI_ARRAY without DT_FINI_ARRAYSZ",
        )?;
        if d.jmprel.is_some() && !matches!(d.pltrel, Some(DT_RELA) | Some(DT_REL)) {
            return Err(bad("DT_PLTREL is neither DT_RELA nor DT_REL"));
        }
        Ok(d)
    }
}
