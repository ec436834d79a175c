//! The generic relocation walk over `DT_RELR`, `DT_REL`, `DT_RELA` and
//! `DT_JMPREL`; what each type means comes from [`crate::arch`].
//!
//! Three passes keep "nothing of the library runs before everything is
//! known" true:
//! 1. [`Relocations::resolve`] resolves every symbol a relocation names and
//!    reports all missing imports at once;
//! 2. [`Relocations::apply`] writes every relocation that needs no code of
//!    the library, and returns the ones that need an ifunc resolver;
//! 3. [`apply_deferred`] calls those resolvers once the code is executable
//!    (and before RELRO is sealed).

use goblin::elf::dynamic::{DT_REL, DT_RELA};
use goblin::elf::sym::{STB_WEAK, STT_GNU_IFUNC, STT_TLS};

use crate::arch::{self, RelocKind};
use crate::elf::dynamic::{Dynamic, Table};
use crate::elf::symbols::SymbolTable;
use crate::elf::{read, Memory};
use crate::error::{Error, Result};
use crate::options::Limits;
use crate::resolve::Resolver;
use crate::symbol::lossy;
use crate::tls::TlsModule;

const RELA_SIZE: u64 = 24;
const REL_SIZE: u64 = 16;
const RELR_SIZE: u64 = 8;

/// A validated relocation table: runtime address and entry count.
#[derive(Clone, Copy, Debug)]
struct RelocTable {
    addr: usize,
    count: usize,
    has_addend: bool,
}

/// One relocation entry, REL or RELA.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub offset: u64,
    pub r_type: u32,
    pub symbol: u32,
    /// `None` for REL: the addend is the word already at the target.
    pub addend: Option<i64>,
}

/// What a symbol a relocation names resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Not named by any relocation.
    Unused,
    /// An address (0 for an undefined weak symbol).
    Address(usize),
    /// A `STT_GNU_IFUNC` symbol of the image: its resolver's address.
    Ifunc(usize),
    /// A thread-local symbol of the image: its offset in the TLS block.
    Tls(u64),
}

/// A relocation that waits for an ifunc resolver: `*target = resolver() + addend`.
#[derive(Clone, Copy, Debug)]
pub struct Deferred {
    target: usize,
    resolver: usize,
    addend: u64,
}

/// The image's validated relocation tables.
#[derive(Debug, Default)]
pub struct Relocations {
    tables: Vec<RelocTable>,
    relr: Option<(usize, usize)>,
}

fn table(
    mem: &Memory<'_>,
    name: &'static str,
    ent_name: &'static str,
    t: Table,
    entsize: Option<u64>,
    expected: u64,
) -> Result<(usize, usize)> {
    if let Some(size) = entsize.filter(|&e| e != expected) {
        return Err(Error::BadEntrySize {
            table: ent_name,
            size,
            expected,
        });
    }
    if t.size % expected != 0 {
        return Err(Error::BadTableSize {
            table: name,
            size: t.size,
            entsize: expected,
        });
    }
    let addr = mem.readonly_table(name, t.vaddr, t.size)?;
    Ok((addr, (t.size / expected) as usize))
}

impl Relocations {
    /// Checks every relocation table named by the dynamic section.
    pub fn parse(mem: &Memory<'_>, d: &Dynamic, limits: &Limits) -> Result<Relocations> {
        let mut r = Relocations::default();
        if let Some(t) = d.rel {
            let (addr, count) = table(mem, "DT_REL", "DT_RELENT", t, d.relent, REL_SIZE)?;
            r.tables.push(RelocTable {
                addr,
                count,
                has_addend: false,
            });
        }
        if let Some(t) = d.rela {
            let (addr, count) = table(mem, "DT_RELA", "DT_RELAENT", t, d.relaent, RELA_SIZE)?;
            r.tables.push(RelocTable {
                addr,
                count,
                has_addend: true,
            });
        }
        if let Some(t) = d.jmprel {
            let has_addend = d.pltrel == Some(DT_RELA);
            let (entsize, ent) = if d.pltrel == Some(DT_REL) {
                (REL_SIZE, d.relent)
            } else {
                (RELA_SIZE, d.relaent)
            };
            let (addr, count) = table(mem, "DT_JMPREL", "DT_PLTREL entry", t, ent, entsize)?;
            r.tables.push(RelocTable {
                addr,
                count,
                has_addend,
            });
        }
        if let Some(t) = d.relr {
            r.relr = Some(table(
                mem,
                "DT_RELR",
                "DT_RELRENT",
                t,
                d.relrent,
                RELR_SIZE,
            )?);
        }
        let total = r.tables.iter().map(|t| t.count as u64).sum::<u64>()
            + r.relr.map_or(0, |(_, n)| n as u64);
        if total > limits.max_relocations {
            return Err(Error::LimitExceeded {
                what: "relocations",
                value: total,
                limit: limits.max_relocations,
            });
        }
        Ok(r)
    }

    /// Every REL/RELA entry in application order, numbered across tables.
    pub fn entries(&self) -> impl Iterator<Item = (usize, Entry)> + '_ {
        self.tables
            .iter()
            .flat_map(|t| {
                let size = if t.has_addend { RELA_SIZE } else { REL_SIZE } as usize;
                (0..t.count).map(move |i| {
                    let at = t.addr + i * size;
                    // SAFETY: entry i of a table checked at parse (count
                    // entries of `size` bytes in a read-only segment).
                    let (offset, info): (u64, u64) = unsafe { (read(at), read(at + 8)) };
                    let addend = t.has_addend.then(|| {
                        // SAFETY: as above; RELA entries are 24 bytes.
                        unsafe { read::<i64>(at + 16) }
                    });
                    Entry {
                        offset,
                        r_type: info as u32,
                        symbol: (info >> 32) as u32,
                        addend,
                    }
                })
            })
            .enumerate()
    }

    /// Pass 1: resolves every symbol a relocation names, through the image
    /// itself first and then the resolver chain. Returns one entry per
    /// symbol index, or every missing strong import in one error.
    pub fn resolve(
        &self,
        mem: &Memory<'_>,
        symbols: &SymbolTable,
        resolver: &Resolver<'_>,
    ) -> Result<Vec<Resolved>> {
        let mut resolved = vec![Resolved::Unused; symbols.len() as usize];
        let mut missing = Vec::new();
        for (index, e) in self.entries() {
            if e.symbol == 0 || !needs_symbol(arch::classify(e.r_type)) {
                continue;
            }
            let slot = resolved.get_mut(e.symbol as usize).ok_or_else(|| {
                Error::SymbolIndexOutOfRange {
                    index,
                    symbol: e.symbol.into(),
                    count: symbols.len().into(),
                }
            })?;
            if *slot != Resolved::Unused {
                continue;
            }
            let sym = symbols.get(e.symbol).expect("index checked against len");
            *slot = if sym.kind() == STT_TLS {
                if !sym.is_defined() {
                    return Err(Error::ImportedTls {
                        name: lossy(symbols.name(&sym)?),
                    });
                }
                Resolved::Tls(sym.value)
            } else if sym.is_defined() {
                let value = if sym.is_absolute() {
                    sym.value as usize
                } else {
                    mem.bias.wrapping_add(sym.value as usize)
                };
                if sym.kind() == STT_GNU_IFUNC {
                    mem.code(sym.value, "ifunc resolver")?;
                    Resolved::Ifunc(value)
                } else {
                    Resolved::Address(value)
                }
            } else {
                let name = symbols.name(&sym)?;
                let version = symbols.required_version(e.symbol)?;
                match resolver.resolve(name, version) {
                    Some(addr) => Resolved::Address(addr),
                    None if sym.bind() == STB_WEAK => Resolved::Address(0),
                    None => {
                        let mut full = lossy(name);
                        if let Some(v) = version {
                            full.push('@');
                            full.push_str(&lossy(v));
                        }
                        missing.push(full);
                        Resolved::Address(0)
                    }
                }
            };
        }
        if !missing.is_empty() {
            return Err(Error::UnresolvedSymbols { names: missing });
        }
        Ok(resolved)
    }

    /// Pass 2: applies every relocation that needs no library code to run.
    /// Returns the relocations that wait for an ifunc resolver.
    pub fn apply(
        &self,
        mem: &Memory<'_>,
        resolved: &[Resolved],
        mut tls: Option<&mut TlsModule>,
    ) -> Result<Vec<Deferred>> {
        if let Some((addr, count)) = self.relr {
            apply_relr(mem, addr, count, self.tables.iter().map(|t| t.count).sum())?;
        }
        let bias = mem.bias as u64;
        let mut deferred = Vec::new();
        for (index, e) in self.entries() {
            let kind = arch::classify(e.r_type);
            if kind == RelocKind::None {
                continue;
            }
            let size = if kind == RelocKind::TlsDesc { 16 } else { 8 };
            let target = writable_target(mem, index, e.offset, size)?;
            // SAFETY: `target` is 8 bytes inside a writable segment of the
            // image, mapped read-write during relocation.
            let addend = e
                .addend
                .map_or_else(|| unsafe { read::<u64>(target) }, |a| a as u64);
            let symbol = match resolved.get(e.symbol as usize) {
                Some(&r) if e.symbol != 0 => r,
                _ => Resolved::Address(0),
            };
            let value = match (kind, symbol) {
                (RelocKind::Relative, _) => bias.wrapping_add(addend),
                (RelocKind::IRelative, _) => {
                    let resolver = mem.code(addend, "IRELATIVE resolver")?;
                    deferred.push(Deferred {
                        target,
                        resolver,
                        addend: 0,
                    });
                    continue;
                }
                (RelocKind::Absolute | RelocKind::Slot { .. }, Resolved::Ifunc(resolver)) => {
                    let addend = if kind == (RelocKind::Slot { with_addend: false }) {
                        0
                    } else {
                        addend
                    };
                    deferred.push(Deferred {
                        target,
                        resolver,
                        addend,
                    });
                    continue;
                }
                (
                    RelocKind::Absolute | RelocKind::Slot { with_addend: true },
                    Resolved::Address(s),
                ) => (s as u64).wrapping_add(addend),
                (RelocKind::Slot { with_addend: false }, Resolved::Address(s)) => s as u64,
                (RelocKind::TlsTpOffset, _) => {
                    return Err(Error::StaticTls {
                        what: arch::relocation_name(e.r_type),
                    })
                }
                (RelocKind::TlsModule | RelocKind::TlsOffset | RelocKind::TlsDesc, sym) => {
                    let module = tls.as_deref_mut().ok_or(Error::BadDynamic {
                        reason: "TLS relocation in an object without PT_TLS",
                    })?;
                    let offset = match sym {
                        Resolved::Tls(value) => value.wrapping_add(addend),
                        _ if e.symbol == 0 => addend,
                        _ => {
                            return Err(Error::UnsupportedRelocation {
                                index,
                                r_type: e.r_type,
                                name: arch::relocation_name(e.r_type),
                            })
                        }
                    };
                    match kind {
                        RelocKind::TlsModule => module.id(),
                        RelocKind::TlsOffset => offset,
                        _ => {
                            arch::prepare_tls_descriptors()?;
                            let desc = module.descriptor(offset) as u64;
                            // SAFETY: 16 bytes at `target` were checked above.
                            unsafe { std::ptr::write_unaligned((target + 8) as *mut u64, desc) };
                            arch::tlsdesc_dynamic as *const () as u64
                        }
                    }
                }
                (RelocKind::Unsupported, _) | (_, _) => {
                    return Err(Error::UnsupportedRelocation {
                        index,
                        r_type: e.r_type,
                        name: arch::relocation_name(e.r_type),
                    })
                }
            };
            // SAFETY: as above.
            unsafe { std::ptr::write_unaligned(target as *mut u64, value) };
        }
        Ok(deferred)
    }
}

/// Kinds whose value depends on a symbol.
fn needs_symbol(kind: RelocKind) -> bool {
    matches!(
        kind,
        RelocKind::Absolute
            | RelocKind::Slot { .. }
            | RelocKind::TlsModule
            | RelocKind::TlsOffset
            | RelocKind::TlsTpOffset
            | RelocKind::TlsDesc
    )
}

/// The runtime address of a relocation target of `size` bytes, which must lie in a
/// writable segment of the image.
fn writable_target(mem: &Memory<'_>, index: usize, offset: u64, size: u64) -> Result<usize> {
    let mut inside = false;
    // Segments do not overlap, so at most one contains the target; the
    // writable ones usually come last, so look from the end.
    for s in mem.loads.iter().rev() {
        if s.contains(offset, size) {
            if s.writable() {
                return Ok(mem.bias.wrapping_add(offset as usize));
            }
            inside = true;
        }
    }
    Err(if inside {
        Error::RelocationInReadOnly { index, offset }
    } else {
        Error::RelocationOutOfBounds { index, offset }
    })
}

/// `DT_RELR`: an even word is the address of a relative relocation; an odd
/// word is a bitmap of the 63 words that follow the last address.
fn apply_relr(mem: &Memory<'_>, addr: usize, count: usize, first_index: usize) -> Result<()> {
    let bias = mem.bias as u64;
    let relocate = |index: usize, offset: u64| -> Result<()> {
        let target = writable_target(mem, index, offset, 8)?;
        // SAFETY: 8 bytes in a writable segment, mapped read-write now.
        unsafe {
            let p = target as *mut u64;
            p.write_unaligned(p.read_unaligned().wrapping_add(bias));
        }
        Ok(())
    };
    let mut next: Option<u64> = None;
    for i in 0..count {
        let index = first_index + i;
        // SAFETY: word i of the RELR table checked at parse.
        let word: u64 = unsafe { read(addr + i * 8) };
        if word & 1 == 0 {
            relocate(index, word)?;
            next = word.checked_add(8);
        } else {
            let Some(base) = next else {
                return Err(Error::BadDynamic {
                    reason: "DT_RELR bitmap without a preceding address",
                });
            };
            let mut bits = word >> 1;
            let mut offset = base;
            while bits != 0 {
                if bits & 1 != 0 {
                    relocate(index, offset)?;
                }
                bits >>= 1;
                offset = offset.wrapping_add(8);
            }
            next = base.checked_add(63 * 8);
        }
    }
    Ok(())
}

/// Pass 3: calls the ifunc resolvers and writes their results.
///
/// # Safety
/// The image's code must be mapped executable, every target still writable,
/// and every resolver address checked by [`Memory::code`](crate::elf::Memory::code).
pub unsafe fn apply_deferred(deferred: &[Deferred]) {
    for d in deferred {
        // SAFETY: the caller guarantees the resolver is the image's code.
        let value = unsafe { arch::call_ifunc_resolver(d.resolver) } as u64;
        // SAFETY: the target was checked to lie in a writable segment.
        unsafe { std::ptr::write_unaligned(d.target as *mut u64, value.wrapping_add(d.addend)) };
    }
}
