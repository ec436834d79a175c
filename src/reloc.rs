//! The generic relocation walk over `DT_RELR`, `DT_REL`, `DT_RELA` and
//! `DT_JMPREL`; what each type means comes from [`crate::arch`].
//!
//! Two passes keep "nothing of the library runs before everything is
//! known" true:
//! 1. [`Relocations::apply`] resolves each symbol a relocation names (once,
//!    on first use), writes every relocation that needs no code of the
//!    library, reports all missing imports at once, and returns the
//!    relocations that need an ifunc resolver;
//! 2. [`apply_deferred`] calls those resolvers once the code is executable
//!    (and before RELRO is sealed).
//!
//! One walk over the tables, not one to resolve and one to write: a large
//! library has thousands of entries (SQLite: 3,000, 70 KiB), and reading
//! them once is most of the cost.

use goblin::elf::dynamic::{DT_REL, DT_RELA};
use goblin::elf::sym::{STB_GNU_UNIQUE, STB_WEAK, STT_GNU_IFUNC, STT_TLS};

use crate::arch::{self, RelocKind};
use crate::elf::dynamic::{Dynamic, Table};
use crate::elf::symbols::SymbolTable;
use crate::elf::{read, Memory, Segment};
use crate::error::{Error, Result};
use crate::options::Limits;
use crate::resolve::{Resolver, TlsDefinition};
use crate::symbol::lossy;
use crate::tls::ImageTls;
use crate::tls_static::ForeignTls;

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
    /// A thread-local symbol of another module.
    ForeignTls(ForeignTls),
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

    /// The highest symbol index any relocation names.
    pub fn max_symbol(&self) -> u32 {
        let mut max = 0;
        let _ = self.for_each_entry(|_, e| {
            max = max.max(e.symbol);
            Ok(())
        });
        max
    }

    /// Calls `f` with every REL/RELA entry in application order, numbered
    /// across tables; stops at the first error.
    fn for_each_entry(&self, mut f: impl FnMut(usize, Entry) -> Result<()>) -> Result<()> {
        let mut index = 0;
        for t in &self.tables {
            let size = if t.has_addend { RELA_SIZE } else { REL_SIZE } as usize;
            for i in 0..t.count {
                let at = t.addr + i * size;
                // SAFETY: entry i of a table checked at parse (count entries
                // of `size` bytes in a read-only segment); RELA entries are
                // 24 bytes.
                let (offset, info, addend): (u64, u64, Option<i64>) =
                    unsafe { (read(at), read(at + 8), t.has_addend.then(|| read(at + 16))) };
                let entry = Entry {
                    offset,
                    r_type: info as u32,
                    symbol: (info >> 32) as u32,
                    addend,
                };
                f(index, entry)?;
                index += 1;
            }
        }
        Ok(())
    }

    /// Resolves the symbols the relocations name, through the image
    /// itself first and then the resolver chain, and writes every
    /// relocation that needs no library code to run. Returns the
    /// relocations that wait for an ifunc resolver, or every missing strong
    /// import in one error.
    pub fn apply(
        &self,
        mem: &Memory<'_>,
        symbols: &SymbolTable,
        resolver: &Resolver<'_>,
        tls: &mut ImageTls,
    ) -> Result<Vec<Deferred>> {
        let targets = Targets::new(mem);
        if let Some((addr, count)) = self.relr {
            apply_relr(
                &targets,
                addr,
                count,
                self.tables.iter().map(|t| t.count).sum(),
            )?;
        }
        let bias = mem.bias as u64;
        let mut symbol_values = SymbolValues {
            resolved: vec![Resolved::Unused; symbols.len() as usize],
            missing: Vec::new(),
            mem,
            symbols,
            resolver,
        };
        let mut deferred = Vec::new();
        self.for_each_entry(|index, e| {
            let kind = arch::classify(e.r_type);
            if kind == RelocKind::Relative {
                let target = targets.get(index, e.offset, 8)?;
                // SAFETY: `target` is 8 bytes inside a writable segment of
                // the image, mapped read-write during relocation.
                let addend = e
                    .addend
                    .map_or_else(|| unsafe { read::<u64>(target) }, |a| a as u64);
                // SAFETY: as above.
                unsafe { std::ptr::write_unaligned(target as *mut u64, bias.wrapping_add(addend)) };
                return Ok(());
            }
            if kind == RelocKind::None {
                return Ok(());
            }
            let size = if kind == RelocKind::TlsDesc { 16 } else { 8 };
            let target = targets.get(index, e.offset, size)?;
            // SAFETY: `target` is 8 bytes inside a writable segment of the
            // image, mapped read-write during relocation.
            let addend = e
                .addend
                .map_or_else(|| unsafe { read::<u64>(target) }, |a| a as u64);
            let symbol = if e.symbol != 0 && needs_symbol(kind) {
                symbol_values.get(index, e.symbol)?
            } else {
                Resolved::Address(0)
            };
            let value = match (kind, symbol) {
                (RelocKind::IRelative, _) => {
                    let resolver = mem.code(addend, "IRELATIVE resolver")?;
                    deferred.push(Deferred {
                        target,
                        resolver,
                        addend: 0,
                    });
                    return Ok(());
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
                    return Ok(());
                }
                (
                    RelocKind::Absolute | RelocKind::Slot { with_addend: true },
                    Resolved::Address(s),
                ) => (s as u64).wrapping_add(addend),
                (RelocKind::Slot { with_addend: false }, Resolved::Address(s)) => s as u64,
                (
                    RelocKind::TlsModule
                    | RelocKind::TlsOffset
                    | RelocKind::TlsTpOffset
                    | RelocKind::TlsDesc,
                    sym,
                ) => {
                    // The variable: its module, its offset in that module's
                    // block and, for a block in static TLS, its offset from
                    // the thread pointer.
                    let (module, offset, tp_offset) = match sym {
                        Resolved::ForeignTls(f) => (
                            f.module,
                            f.offset.wrapping_add(addend),
                            f.tp_offset.map(|t| t.wrapping_add(addend as i64)),
                        ),
                        Resolved::Tls(_) | Resolved::Address(0) => {
                            let value = match sym {
                                Resolved::Tls(value) => value,
                                _ if e.symbol == 0 => 0,
                                _ => return Err(unsupported(index, e.r_type)),
                            };
                            let offset = value.wrapping_add(addend);
                            if tls.static_pending {
                                if kind == RelocKind::TlsOffset {
                                    // SAFETY: 8 bytes at `target` were checked above.
                                    unsafe {
                                        std::ptr::write_unaligned(target as *mut u64, offset)
                                    };
                                } else {
                                    tls.waiting.push((target, kind, offset));
                                }
                                return Ok(());
                            }
                            let own = tls.own.as_ref().ok_or(Error::BadDynamic {
                                reason: "TLS relocation in an object without PT_TLS",
                            })?;
                            let tp = own.tp_offset().map(|t| t.wrapping_add(offset as i64));
                            (own.module(), offset, tp)
                        }
                        _ => return Err(unsupported(index, e.r_type)),
                    };
                    match kind {
                        RelocKind::TlsModule => module,
                        RelocKind::TlsOffset => offset,
                        RelocKind::TlsTpOffset => match tp_offset {
                            Some(tp) => tp as u64,
                            None if matches!(sym, Resolved::ForeignTls(_)) => {
                                return Err(Error::ImportedTls {
                                    name: symbol_values.name_of(e.symbol),
                                    reason: "initial-exec access to a variable in dynamic TLS",
                                })
                            }
                            None => {
                                return Err(Error::StaticTls {
                                    size: 0,
                                    align: 0,
                                    reason: format!(
                                        "{} without DF_STATIC_TLS",
                                        arch::relocation_name(e.r_type)
                                    ),
                                })
                            }
                        },
                        _ => {
                            arch::prepare_tls_descriptors()?;
                            let desc = tls.descriptor(module, offset) as u64;
                            // SAFETY: 16 bytes at `target` were checked above.
                            unsafe { std::ptr::write_unaligned((target + 8) as *mut u64, desc) };
                            arch::tlsdesc_dynamic as *const () as u64
                        }
                    }
                }
                (RelocKind::Unsupported, _) | (_, _) => return Err(unsupported(index, e.r_type)),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write_unaligned(target as *mut u64, value) };
            Ok(())
        })?;
        if !symbol_values.missing.is_empty() {
            return Err(Error::UnresolvedSymbols {
                names: symbol_values.missing,
            });
        }
        Ok(deferred)
    }
}

/// What each symbol relocations name resolves to, found on first use.
struct SymbolValues<'a> {
    /// One entry per symbol index.
    resolved: Vec<Resolved>,
    /// Strong imports no resolver knows (`name` or `name@version`).
    missing: Vec<String>,
    mem: &'a Memory<'a>,
    symbols: &'a SymbolTable,
    resolver: &'a Resolver<'a>,
}

/// `name` or `name@version`, for errors.
fn full_name(name: &[u8], version: Option<&[u8]>) -> String {
    let mut full = lossy(name);
    if let Some(v) = version {
        full.push('@');
        full.push_str(&lossy(v));
    }
    full
}

impl SymbolValues<'_> {
    /// Symbol `symbol`'s name, for errors.
    fn name_of(&self, symbol: u32) -> String {
        self.symbols
            .get(symbol)
            .and_then(|s| self.symbols.name(&s).ok())
            .map_or_else(|| format!("#{symbol}"), lossy)
    }

    /// Symbol `symbol`, named by relocation `index`: the image's own
    /// definition, else the resolver chain's; a missing strong import is
    /// recorded (and reads as 0) so that all of them are reported together.
    fn get(&mut self, index: usize, symbol: u32) -> Result<Resolved> {
        let symbols = self.symbols;
        let sym = symbols
            .get(symbol)
            .ok_or_else(|| Error::SymbolIndexOutOfRange {
                index,
                symbol: symbol.into(),
                count: symbols.len().into(),
            })?;
        // The image's own plain definitions cost less to work out again
        // than to remember (SQLite's 1,300 PLT entries each name a
        // different one of its functions).
        if sym.is_defined()
            && !matches!(sym.kind(), STT_TLS | STT_GNU_IFUNC)
            && sym.bind() != STB_GNU_UNIQUE
        {
            return Ok(Resolved::Address(if sym.is_absolute() {
                sym.value as usize
            } else {
                self.mem.bias.wrapping_add(sym.value as usize)
            }));
        }
        // In range: `symbols.get` found it.
        let slot = &mut self.resolved[symbol as usize];
        if *slot != Resolved::Unused {
            return Ok(*slot);
        }
        *slot = if sym.kind() == STT_TLS {
            if sym.is_defined() {
                Resolved::Tls(sym.value)
            } else {
                let name = symbols.name(&sym)?;
                let version = symbols.required_version(symbol)?;
                match self.resolver.resolve_tls(name, version) {
                    Some(TlsDefinition::Variable(variable)) => Resolved::ForeignTls(variable),
                    Some(TlsDefinition::Address(addr)) => {
                        Resolved::ForeignTls(crate::tls_static::system_tls_at(addr).ok_or_else(
                            || Error::ImportedTls {
                                name: lossy(name),
                                reason: "its definition lies in no module's TLS block",
                            },
                        )?)
                    }
                    None => {
                        self.missing.push(full_name(name, version));
                        Resolved::Address(0)
                    }
                }
            }
        } else if sym.is_defined() {
            let value = if sym.is_absolute() {
                sym.value as usize
            } else {
                self.mem.bias.wrapping_add(sym.value as usize)
            };
            if sym.kind() == STT_GNU_IFUNC {
                self.mem.code(sym.value, "ifunc resolver")?;
                Resolved::Ifunc(value)
            } else if sym.bind() == STB_GNU_UNIQUE {
                let name = symbols.name(&sym)?;
                // Whether this image's definition satisfies a reference
                // requiring `version` (glibc's rule: an unversioned or
                // global definition does; a named one only by that name).
                let ndx = symbols.version_index(symbol) & 0x7fff;
                let accepts = |version: Option<&[u8]>| {
                    ndx <= 1 || version.is_none() || symbols.defined_version(ndx) == version
                };
                Resolved::Address(crate::unique::bind(
                    name,
                    value,
                    || self.resolver.resolve_global(name),
                    self.resolver.objects_added_before(),
                    accepts,
                ))
            } else {
                Resolved::Address(value)
            }
        } else {
            let name = symbols.name(&sym)?;
            let version = symbols.required_version(symbol)?;
            match self.resolver.resolve(name, version) {
                Some(addr) => Resolved::Address(addr),
                None if sym.bind() == STB_WEAK => Resolved::Address(0),
                None => {
                    self.missing.push(full_name(name, version));
                    Resolved::Address(0)
                }
            }
        };
        Ok(*slot)
    }
}

fn unsupported(index: usize, r_type: u32) -> Error {
    Error::UnsupportedRelocation {
        index,
        r_type,
        name: arch::relocation_name(r_type),
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

/// Where relocations may write: the image's writable segments.
struct Targets<'a> {
    bias: usize,
    /// The writable segments (usually one), checked first and alone on
    /// the path every relocation takes.
    writable: Vec<&'a Segment>,
    /// Every segment, to tell the two errors apart.
    loads: &'a [Segment],
}

impl<'a> Targets<'a> {
    fn new(mem: &Memory<'a>) -> Targets<'a> {
        Targets {
            bias: mem.bias,
            writable: mem.loads.iter().filter(|s| s.writable()).collect(),
            loads: mem.loads,
        }
    }

    /// The runtime address of relocation `index`'s target of `size` bytes
    /// at `offset`, which must lie in a writable segment of the image.
    fn get(&self, index: usize, offset: u64, size: u64) -> Result<usize> {
        if self.writable.iter().any(|s| s.contains(offset, size)) {
            return Ok(self.bias.wrapping_add(offset as usize));
        }
        Err(if self.loads.iter().any(|s| s.contains(offset, size)) {
            Error::RelocationInReadOnly { index, offset }
        } else {
            Error::RelocationOutOfBounds { index, offset }
        })
    }
}

/// `DT_RELR`: an even word is the address of a relative relocation; an odd
/// word is a bitmap of the 63 words that follow the last address.
fn apply_relr(targets: &Targets<'_>, addr: usize, count: usize, first_index: usize) -> Result<()> {
    let bias = targets.bias as u64;
    let relocate = |index: usize, offset: u64| -> Result<()> {
        let target = targets.get(index, offset, 8)?;
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
