//! The generic relocation walk over `DT_RELR`, `DT_REL`, `DT_RELA` and
//! `DT_JMPREL`; what each type means comes from [`crate::arch`].
//!
//! Two passes keep "nothing of the library runs before everything is
//! known" true:
//! 1. [`Relocations::apply`] resolves each symbol a relocation names (once,
//!    on first use), writes every relocation that needs no code of the
//!    library, reports all missing imports at once, and returns the
//!    relocations that need an ifunc resolver;
//! 2. the pipeline's ifunc phase calls those resolvers once the code is
//!    executable (and before RELRO is sealed).
//!
//! One walk over the tables, not one to resolve and one to write: a large
//! library has thousands of entries (SQLite: 3,000, 70 KiB), and reading
//! them once is most of the cost.

use goblin::elf::dynamic::{DT_REL, DT_RELA};
use goblin::elf::sym::{STB_GNU_UNIQUE, STB_WEAK, STT_GNU_IFUNC, STT_TLS};

use crate::arch::{self, RelocKind};
use crate::elf::dynamic::{Dynamic, Table};
use crate::elf::records::{Rel, Rela};
use crate::elf::symbols::{Sym, SymbolTable};
use crate::elf::view::{Array, Pod, Target, Targets};
use crate::elf::Memory;
use crate::error::{Error, Result};
use crate::load::resolve::{Resolver, TlsDefinition};
use crate::options::Limits;
use crate::runtime::tls::ImageTls;
use crate::runtime::tls_static::ForeignTls;
use crate::symbol::lossy;

/// A validated relocation table.
#[derive(Clone, Copy, Debug)]
enum RelocTable {
    Rel(Array<Rel>),
    Rela(Array<Rela>),
}

impl RelocTable {
    fn len(&self) -> usize {
        match self {
            RelocTable::Rel(a) => a.len(),
            RelocTable::Rela(a) => a.len(),
        }
    }

    /// Entry `i` (`None` past the end).
    #[inline]
    fn entry(&self, i: usize) -> Option<Entry> {
        let (offset, info, addend) = match self {
            RelocTable::Rel(a) => a.get(i).map(|r| (r.offset, r.info, None))?,
            RelocTable::Rela(a) => a.get(i).map(|r| (r.offset, r.info, Some(r.addend)))?,
        };
        Some(Entry {
            offset,
            r_type: info as u32,
            symbol: (info >> 32) as u32,
            addend,
        })
    }

    /// Writes, from entry `from`, the run of relocations that need nothing
    /// but the image itself, in a loop of their own (a few instructions an
    /// entry instead of the general walk's ~100): relative ones (linkers
    /// put `DT_RELACOUNT` of them first: libLLVM 140,000), and slots and
    /// absolute words naming a plain definition of the image's own (most
    /// of a library's PLT: SQLite's 1,300 entries name its own functions).
    /// The run ends at the first other entry, or one whose target is not
    /// in the first writable segment or whose symbol is not in the table:
    /// the general walk takes that one (with its errors). Returns the
    /// run's length.
    fn apply_plain_run(&self, from: usize, targets: &Targets<'_>, symbols: &SymbolTable) -> usize {
        // One loop per table kind (no per-entry match on it); the addend
        // is the entry's, or for REL the word already at the target.
        fn run<T: Pod>(
            entries: Array<T>,
            from: usize,
            targets: &Targets<'_>,
            symbols: &SymbolTable,
            offset_info: impl Fn(&T) -> (u64, u64),
            addend: impl Fn(&T, &Target<'_>) -> u64,
        ) -> usize {
            let bias = targets.bias() as u64;
            let mut n = 0;
            for r in entries.from(from).iter() {
                let (offset, info) = offset_info(&r);
                if info as u32 == arch::R_RELATIVE {
                    let Some(target) = targets.word(offset) else {
                        break;
                    };
                    target.write(0, bias.wrapping_add(addend(&r, &target)));
                } else {
                    let own = own_slot(info as u32, (info >> 32) as u32, symbols, bias as usize);
                    let Some((s, with_addend)) = own else {
                        break;
                    };
                    let Some(target) = targets.word(offset) else {
                        break;
                    };
                    let value = match with_addend {
                        true => (s as u64).wrapping_add(addend(&r, &target)),
                        false => s as u64,
                    };
                    target.write(0, value);
                }
                n += 1;
            }
            n
        }
        match *self {
            RelocTable::Rela(a) => run(
                a,
                from,
                targets,
                symbols,
                |r| (r.offset, r.info),
                |r, _| r.addend as u64,
            ),
            RelocTable::Rel(a) => run(
                a,
                from,
                targets,
                symbols,
                |r| (r.offset, r.info),
                |_, t| t.read(0),
            ),
        }
    }
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
    /// An address (0 for an undefined weak symbol).
    Address(usize),
    /// A `STT_GNU_IFUNC` symbol of the image: its resolver's address.
    Ifunc(usize),
    /// A thread-local symbol of the image: its offset in the TLS block.
    Tls(u64),
    /// A thread-local symbol of another module.
    ForeignTls(ForeignTls),
}

/// A relocation that needs the image's own TLS block after it is placed in
/// static TLS (its module id, its thread-pointer offset, a descriptor):
/// the block is placed once the image is relocated (its template may hold
/// relocated pointers), so these are written after the walk.
#[derive(Clone, Copy, Debug)]
pub struct WaitingTls<'t> {
    pub target: Target<'t>,
    pub kind: RelocKind,
    /// The variable's offset in the block.
    pub offset: u64,
}

/// What the walk leaves for later phases.
#[derive(Debug, Default)]
pub struct Applied<'t> {
    /// Relocations waiting for their ifunc resolver.
    pub ifuncs: Vec<Deferred<'t>>,
    /// Relocations waiting for the image's static TLS block.
    pub static_tls: Vec<WaitingTls<'t>>,
}

/// A relocation that waits for an ifunc resolver: `*target = resolver() + addend`.
#[derive(Clone, Copy, Debug)]
pub struct Deferred<'t> {
    pub target: Target<'t>,
    /// Checked by [`Memory::code`] to lie in an executable segment.
    pub resolver: usize,
    pub addend: u64,
}

/// The image's validated relocation tables.
#[derive(Debug, Default)]
pub struct Relocations {
    tables: Vec<RelocTable>,
    relr: Option<Array<u64>>,
    /// How many entries the first table starts with that its
    /// `DT_RELCOUNT`/`DT_RELACOUNT` says are `R_*_RELATIVE` (a hint:
    /// only the TLS-model scan skips them, see `offsets_own_tls`).
    leading_relative: usize,
}

fn table<T: Pod>(
    mem: &Memory<'_>,
    name: &'static str,
    ent_name: &'static str,
    t: Table,
    entsize: Option<u64>,
) -> Result<Array<T>> {
    let expected = std::mem::size_of::<T>() as u64;
    if let Some(size) = entsize.filter(|&e| e != expected) {
        return Err(Error::BadEntrySize {
            table: ent_name,
            size,
            expected,
        });
    }
    if !t.size.is_multiple_of(expected) {
        return Err(Error::BadTableSize {
            table: name,
            size: t.size,
            entsize: expected,
        });
    }
    Ok(mem.readonly_table(name, t.vaddr, t.size)?.array())
}

impl Relocations {
    /// Checks every relocation table named by the dynamic section.
    pub fn parse(mem: &Memory<'_>, d: &Dynamic, limits: &Limits) -> Result<Relocations> {
        let mut r = Relocations::default();
        if let Some(t) = d.rel {
            let rel = table(mem, "DT_REL", "DT_RELENT", t, d.relent)?;
            r.leading_relative = usize::try_from(d.relcount).unwrap_or(usize::MAX);
            r.tables.push(RelocTable::Rel(rel));
        }
        if let Some(t) = d.rela {
            let rela = table(mem, "DT_RELA", "DT_RELAENT", t, d.relaent)?;
            if r.tables.is_empty() {
                r.leading_relative = usize::try_from(d.relacount).unwrap_or(usize::MAX);
            }
            r.tables.push(RelocTable::Rela(rela));
        }
        if let Some(t) = d.jmprel {
            const NAME: &str = "DT_JMPREL";
            const ENT: &str = "DT_PLTREL entry";
            r.tables.push(if d.pltrel == Some(DT_REL) {
                RelocTable::Rel(table(mem, NAME, ENT, t, d.relent)?)
            } else {
                debug_assert_eq!(d.pltrel, Some(DT_RELA));
                RelocTable::Rela(table(mem, NAME, ENT, t, d.relaent)?)
            });
        }
        if let Some(t) = d.relr {
            r.relr = Some(table(mem, "DT_RELR", "DT_RELRENT", t, d.relrent)?);
        }
        let total = r.tables.iter().map(|t| t.len() as u64).sum::<u64>()
            + r.relr.map_or(0, |a| a.len() as u64);
        if total > limits.max_relocations {
            return Err(Error::LimitExceeded {
                what: "relocations",
                value: total,
                limit: limits.max_relocations,
            });
        }
        Ok(r)
    }

    /// Whether a relocation asks for the image's own TLS block's offset from
    /// the thread pointer (`TPOFF64`, `TLS_TPREL` against a symbol of the
    /// image's own TLS, or against no symbol): initial-exec code.
    ///
    /// The leading entries `DT_RELACOUNT` calls relative are not looked at
    /// (libLLVM: 130,000 of 140,000 entries). The count is the file's word,
    /// so a wrong one can hide such an entry: the image then gets a
    /// dynamic TLS module, and that entry fails the load
    /// ([`Error::StaticTls`]) when it is applied: never a wrong value.
    pub fn offsets_own_tls(&self, symbols: &SymbolTable) -> bool {
        let own = |e: &Entry| {
            arch::classify(e.r_type) == RelocKind::TlsTpOffset
                && (e.symbol == 0
                    || symbols
                        .get(e.symbol)
                        .is_some_and(|s| s.is_defined() && s.kind() == STT_TLS))
        };
        self.tables.iter().enumerate().any(|(n, t)| {
            let skip = if n == 0 { self.leading_relative } else { 0 };
            (skip..t.len()).map_while(|i| t.entry(i)).any(|e| own(&e))
        })
    }

    /// The highest symbol index any relocation names.
    pub fn max_symbol(&self) -> u32 {
        let mut max = 0;
        let _ = self.for_each_entry(
            |_, _| 0,
            |_, e| {
                max = max.max(e.symbol);
                Ok(false)
            },
        );
        max
    }

    /// Calls `f` with every REL/RELA entry in application order, numbered
    /// across tables; stops at the first error.
    ///
    /// `skip(table, i)` runs at the start of each table and after each
    /// entry for which `f` returns `true`, and returns how many entries
    /// from the next one, `i`, it has dealt with itself. (After entries
    /// `f` answers `false` for, as imports, it is not asked: the next
    /// entry is most often like them.)
    fn for_each_entry(
        &self,
        mut skip: impl FnMut(&RelocTable, usize) -> usize,
        mut f: impl FnMut(usize, Entry) -> Result<bool>,
    ) -> Result<()> {
        let mut index = 0;
        for t in &self.tables {
            let mut i = 0;
            let mut plain = true;
            while i < t.len() {
                if plain {
                    i += skip(t, i);
                }
                // One call site for `f`, so that it is inlined into this loop.
                let Some(entry) = t.entry(i) else { break };
                plain = f(index + i, entry)?;
                i += 1;
            }
            index += t.len();
        }
        Ok(())
    }

    /// Resolves the symbols the relocations name, through the image
    /// itself first and then the resolver chain, and writes every
    /// relocation that needs no library code to run. Returns the
    /// relocations that wait for an ifunc resolver or for the image's
    /// static TLS block, or every missing strong import in one error.
    pub fn apply<'t>(
        &self,
        mem: &Memory<'_>,
        targets: &'t Targets<'_>,
        symbols: &SymbolTable,
        resolver: &Resolver<'_>,
        tls: &mut ImageTls,
    ) -> Result<Applied<'t>> {
        if let Some(relr) = self.relr {
            apply_relr(targets, relr, self.tables.iter().map(|t| t.len()).sum())?;
        }
        let bias = targets.bias() as u64;
        let mut symbol_values = SymbolValues {
            // Zeroed by the allocator (calloc): a large table costs no
            // page until an entry in it is written.
            slots: vec![0; symbols.len() as usize],
            resolved: Vec::new(),
            missing: Vec::new(),
            mem,
            symbols,
            resolver,
        };
        let mut deferred = Vec::new();
        let mut waiting = Vec::new();
        let plain_run = |t: &RelocTable, from| t.apply_plain_run(from, targets, symbols);
        self.for_each_entry(plain_run, |index, e| {
            let kind = arch::classify(e.r_type);
            if kind == RelocKind::Relative {
                let target = targets.get(index, e.offset, 8)?;
                let addend = e.addend.map_or_else(|| target.read(0), |a| a as u64);
                target.write(0, bias.wrapping_add(addend));
                return Ok(true);
            }
            if kind == RelocKind::None {
                return Ok(true);
            }
            let size = if kind == RelocKind::TlsDesc { 16 } else { 8 };
            let target = targets.get(index, e.offset, size)?;
            let addend = e.addend.map_or_else(|| target.read(0), |a| a as u64);
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
                    return Ok(false);
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
                    return Ok(false);
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
                                    target.write(0, offset);
                                } else {
                                    waiting.push(WaitingTls {
                                        target,
                                        kind,
                                        offset,
                                    });
                                }
                                return Ok(false);
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
                            target.write(1, desc);
                            arch::tlsdesc_dynamic as *const () as u64
                        }
                    }
                }
                (RelocKind::Unsupported, _) | (_, _) => return Err(unsupported(index, e.r_type)),
            };
            target.write(0, value);
            // After a slot or word naming the image's own definition, the
            // plain run goes on (after imports, which come in runs, it is
            // not asked).
            let own = || symbols.get(e.symbol).is_some_and(|s| s.is_defined());
            Ok(matches!(symbol, Resolved::Address(_)) && e.symbol != 0 && own())
        })?;
        if !symbol_values.missing.is_empty() {
            return Err(Error::UnresolvedSymbols {
                names: symbol_values.missing,
            });
        }
        Ok(Applied {
            ifuncs: deferred,
            static_tls: waiting,
        })
    }
}

/// Writes the relocations that waited for the image's static TLS block,
/// now at `tp_offset` from the thread pointer as module `module`.
pub fn apply_static_tls(
    waiting: &[WaitingTls<'_>],
    tls: &mut ImageTls,
    module: u64,
    tp_offset: i64,
) {
    for w in waiting {
        let value = match w.kind {
            RelocKind::TlsModule => module,
            RelocKind::TlsTpOffset => tp_offset.wrapping_add(w.offset as i64) as u64,
            _ => {
                w.target.write(1, tls.descriptor(module, w.offset) as u64);
                arch::tlsdesc_dynamic as *const () as u64
            }
        };
        w.target.write(0, value);
    }
}

fn unsupported(index: usize, r_type: u32) -> Error {
    Error::UnsupportedRelocation {
        index,
        r_type,
        name: arch::relocation_name(r_type),
    }
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

/// What each symbol relocations name resolves to, found on first use.
struct SymbolValues<'a> {
    /// One entry per symbol index: 0 while unresolved, else 1 + the
    /// entry's index in `resolved`. Only imports, TLS, ifunc and unique
    /// symbols are remembered (usually a few of a library's symbols, and
    /// libLLVM has 39,000): a table of the values themselves, written
    /// through to mark each unused, cost 1.5 MB of fresh pages per load.
    slots: Vec<u32>,
    /// The values remembered, in the order first resolved.
    resolved: Vec<Resolved>,
    /// Strong imports no resolver knows (`name` or `name@version`).
    missing: Vec<String>,
    mem: &'a Memory<'a>,
    symbols: &'a SymbolTable,
    resolver: &'a Resolver<'a>,
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
        if let Some(addr) = own_definition(&sym, self.mem.bias()) {
            return Ok(Resolved::Address(addr));
        }
        // In range: `symbols.get` found it.
        if let Some(at) = self.slots[symbol as usize].checked_sub(1) {
            return Ok(self.resolved[at as usize]);
        }
        let value = if sym.kind() == STT_TLS {
            if sym.is_defined() {
                Resolved::Tls(sym.value)
            } else {
                let name = symbols.name(&sym)?;
                let version = symbols.required_version(symbol)?;
                match self.resolver.resolve_tls(name, version) {
                    Some(TlsDefinition::Variable(variable)) => Resolved::ForeignTls(variable),
                    Some(TlsDefinition::Address(addr)) => Resolved::ForeignTls(
                        crate::runtime::tls_static::system_tls_at(addr).ok_or_else(|| {
                            Error::ImportedTls {
                                name: lossy(name),
                                reason: "its definition lies in no module's TLS block",
                            }
                        })?,
                    ),
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
                self.mem.bias().wrapping_add(sym.value as usize)
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
                Resolved::Address(crate::runtime::unique::bind(
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
        self.resolved.push(value);
        // At most one entry per symbol index, which is a u32.
        self.slots[symbol as usize] = self.resolved.len() as u32;
        Ok(value)
    }
}

/// For a slot or absolute word (relocation type `r_type`) naming `symbol`,
/// a plain definition of the image's own: its address, and whether the
/// addend is added.
#[inline]
fn own_slot(r_type: u32, symbol: u32, symbols: &SymbolTable, bias: usize) -> Option<(usize, bool)> {
    let with_addend = match arch::classify(r_type) {
        RelocKind::Slot { with_addend } => with_addend,
        RelocKind::Absolute => true,
        _ => return None,
    };
    let sym = symbols.get(symbol).filter(|_| symbol != 0)?;
    Some((own_definition(&sym, bias)?, with_addend))
}

/// The address of a plain definition of the image's own (not thread-local,
/// an ifunc or unique, which need more than this), at load bias `bias`.
#[inline]
fn own_definition(sym: &Sym, bias: usize) -> Option<usize> {
    let plain = sym.is_defined()
        && !matches!(sym.kind(), STT_TLS | STT_GNU_IFUNC)
        && sym.bind() != STB_GNU_UNIQUE;
    plain.then(|| match sym.is_absolute() {
        true => sym.value as usize,
        false => bias.wrapping_add(sym.value as usize),
    })
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

/// `DT_RELR`: an even word is the address of a relative relocation; an odd
/// word is a bitmap of the 63 words that follow the last address.
fn apply_relr(targets: &Targets<'_>, relr: Array<u64>, first_index: usize) -> Result<()> {
    let bias = targets.bias() as u64;
    let relocate = |index: usize, offset: u64| -> Result<()> {
        let target = targets.get(index, offset, 8)?;
        target.write(0, target.read(0).wrapping_add(bias));
        Ok(())
    };
    let mut next: Option<u64> = None;
    for (i, word) in relr.iter().enumerate() {
        let index = first_index + i;
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
