//! Dynamic symbols: the string table, the symbol table, GNU and SysV hash
//! lookup and symbol versions.
//!
//! Every table is validated once at load (it lies in a read-only loaded
//! segment, its size follows from its header) so that lookups only need
//! cheap index comparisons, never a system call or an allocation.

use goblin::elf::section_header::{SHN_ABS, SHN_LORESERVE, SHN_UNDEF};
use goblin::elf::sym::{STB_GLOBAL, STB_GNU_UNIQUE, STB_WEAK, STT_TLS, STV_DEFAULT, STV_PROTECTED};

use super::dynamic::Dynamic;
use super::records::{Verdaux, Verdef, Vernaux, Verneed};
use super::view::{Array, View};
use super::Memory;
use crate::error::{Error, Result};
use crate::options::Limits;

const SYM_SIZE: u64 = 24;
/// `VER_NDX_LOCAL`: the symbol is not visible outside the object.
const VER_NDX_LOCAL: u16 = 0;
/// Set in a `DT_VERSYM` entry for a non-default (`foo@V1`) version.
const VERSYM_HIDDEN: u16 = 0x8000;

/// One `Elf64_Sym`, as it lies in memory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Sym {
    pub name: u32,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl Sym {
    /// The entry as it lies in a table (`Elf64_Sym`, little-endian).
    #[inline]
    pub fn from_bytes(e: &[u8; 24]) -> Sym {
        let b = |i: usize| e[i];
        Sym {
            name: u32::from_le_bytes([b(0), b(1), b(2), b(3)]),
            info: b(4),
            other: b(5),
            shndx: u16::from_le_bytes([b(6), b(7)]),
            value: u64::from_le_bytes([b(8), b(9), b(10), b(11), b(12), b(13), b(14), b(15)]),
            size: u64::from_le_bytes([b(16), b(17), b(18), b(19), b(20), b(21), b(22), b(23)]),
        }
    }

    pub fn bind(&self) -> u8 {
        self.info >> 4
    }
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
    pub fn visibility(&self) -> u8 {
        self.other & 0x3
    }
    pub fn is_defined(&self) -> bool {
        self.shndx != SHN_UNDEF as u16
    }
    pub fn is_absolute(&self) -> bool {
        self.shndx == SHN_ABS as u16
    }
    /// Defined in one of the file's sections (not undefined, absolute,
    /// common or behind the extended-index escape).
    pub fn in_section(&self) -> bool {
        self.is_defined() && self.shndx < SHN_LORESERVE as u16
    }
    /// Defined, global or weak, and default or protected visibility; and
    /// with a value, unless absolute or thread-local: like glibc, a symbol
    /// at value 0 is no definition (Rust dylibs' `rust_metadata_*`).
    fn is_exported(&self) -> bool {
        self.is_defined()
            && matches!(self.bind(), STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
            && matches!(self.visibility(), STV_DEFAULT | STV_PROTECTED)
            && (self.value != 0 || self.is_absolute() || self.kind() == STT_TLS)
    }
}

/// The dynamic string table.
#[derive(Clone, Copy, Debug)]
pub struct Strings {
    /// `DT_STRSZ` bytes at `DT_STRTAB`, in a read-only segment.
    table: View,
}

impl Strings {
    /// Size of the table in bytes (`DT_STRSZ`).
    pub(super) fn size(&self) -> u64 {
        self.table.len() as u64
    }

    /// The whole table (`DT_STRSZ` bytes).
    pub fn bytes(&self) -> &[u8] {
        self.table.bytes()
    }

    /// The `len` bytes at `offset`, if they lie in the table.
    pub(super) fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.table.bytes().get(offset..offset.checked_add(len)?)
    }

    /// The string at `offset` if it ends (NUL) within `max_len` bytes:
    /// [`Strings::get`] with a bounded scan, for callers that give up on
    /// longer strings anyway.
    pub(super) fn get_short(&self, offset: u64, max_len: usize) -> Option<&[u8]> {
        let tail = self.table.bytes().get(usize::try_from(offset).ok()?..)?;
        // The string and its NUL, or less when the table ends first.
        let window = &tail[..tail.len().min(max_len.saturating_add(1))];
        let n = window.iter().position(|&b| b == 0)?;
        window.get(..n)
    }

    /// The NUL-terminated string at `offset`, without its NUL.
    pub fn get(&self, offset: u64) -> Result<&[u8]> {
        let bad = || Error::BadStringOffset {
            offset,
            size: self.size(),
        };
        let tail = usize::try_from(offset)
            .ok()
            .and_then(|o| self.table.bytes().get(o..))
            .filter(|t| !t.is_empty())
            .ok_or_else(bad)?;
        match tail.iter().position(|&b| b == 0) {
            Some(n) => Ok(&tail[..n]),
            None => Err(bad()),
        }
    }

    /// Whether the string at `offset` is exactly `name` (what [`Strings::get`]
    /// would return, compared without scanning for its end first).
    #[inline]
    pub fn equals(&self, offset: u64, name: &[u8]) -> bool {
        // The name and its NUL must fit.
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|o| self.table.bytes().get(o..o.checked_add(name.len() + 1)?));
        match bytes {
            Some(bytes) => bytes[name.len()] == 0 && &bytes[..name.len()] == name,
            None => false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct GnuHash {
    nbuckets: u32,
    symoffset: u32,
    bloom_mask: u32,
    bloom_shift: u32,
    bloom: Array<u64>,
    buckets: Array<u32>,
    /// Empty until the symbol count is known (see [`SymbolTable::parse`]).
    chains: Array<u32>,
    chains_vaddr: u64,
}

#[derive(Clone, Copy, Debug)]
struct SysvHash {
    nbucket: u32,
    nchain: u32,
    buckets: Array<u32>,
    chains: Array<u32>,
}

/// GNU hash of a symbol name (the `DT_GNU_HASH` function, djb2).
pub fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// Where a GNU hash table's Bloom filter of `mask + 1` words, with shift
/// `shift`, looks for a name of hash `h`: the word's index and the two
/// bits it must have for the name to be in the table (glibc's test, done
/// before anything else of a lookup).
pub fn bloom_probe(h: u32, mask: u32, shift: u32) -> (usize, u64) {
    let bits = (1u64 << (h % 64)) | (1u64 << ((h >> shift) % 64));
    (((h / 64) & mask) as usize, bits)
}

/// Why a GNU hash table header (bucket count, Bloom filter words, Bloom
/// shift) cannot be used as the system loader uses it, if it cannot.
pub fn gnu_header_fault(nbuckets: u32, bloom_size: u32, bloom_shift: u32) -> Option<&'static str> {
    if nbuckets == 0 {
        Some("zero buckets")
    } else if bloom_size == 0 || !bloom_size.is_power_of_two() {
        Some("bloom filter size is not a power of two")
    } else if bloom_shift >= 32 {
        // The shift applies to the 32-bit hash: 32 or more would overflow.
        Some("bloom shift is 32 or more")
    } else {
        None
    }
}

/// SysV ELF hash of a symbol name (the `DT_HASH` function).
pub fn sysv_hash(name: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

/// The validated dynamic symbol table with its hash tables and versions.
#[derive(Clone, Debug)]
pub struct SymbolTable {
    symtab: Array<Sym>,
    /// Symbols relocations may name (checked to lie in the table).
    count: u32,
    /// Symbols the hash tables can answer (`count`, but for a GNU hash
    /// table that hashes nothing: see [`SymbolTable::cover`]).
    hashed: u32,
    /// Where the symbol and version tables start, when the hash table told
    /// nothing of their size (see [`SymbolTable::cover`]).
    size_unknown: Option<(u64, Option<u64>)>,
    pub strings: Strings,
    gnu: Option<GnuHash>,
    sysv: Option<SysvHash>,
    versym: Option<Array<u16>>,
    /// Version index → string-table offset of the version name required by
    /// an import (`DT_VERNEED`), e.g. `GLIBC_2.14`.
    needed_versions: Vec<(u16, u64)>,
    /// Version index → string-table offset of a version this object defines.
    defined_versions: Vec<(u16, u64)>,
}

impl SymbolTable {
    pub fn parse(mem: &Memory<'_>, dynamic: &Dynamic, limits: &Limits) -> Result<SymbolTable> {
        let strtab = dynamic.strtab.ok_or(Error::BadDynamic {
            reason: "no DT_STRTAB",
        })?;
        let strings = Strings {
            table: mem.readonly_table("DT_STRTAB", strtab, dynamic.strsz)?,
        };
        if dynamic.strsz == 0 {
            return Err(Error::BadDynamic {
                reason: "DT_STRSZ is zero",
            });
        }
        let symtab_vaddr = dynamic.symtab.ok_or(Error::BadDynamic {
            reason: "no DT_SYMTAB",
        })?;
        if let Some(ent) = dynamic.syment.filter(|&e| e != SYM_SIZE) {
            return Err(Error::BadEntrySize {
                table: "DT_SYMENT",
                size: ent,
                expected: SYM_SIZE,
            });
        }
        let mut gnu = match dynamic.gnu_hash {
            Some(v) => Some(parse_gnu_hash(mem, v)?),
            None => None,
        };
        let sysv = match dynamic.hash {
            Some(v) => Some(parse_sysv_hash(mem, v)?),
            None => None,
        };
        // The symbol count: nchain is it by definition; without DT_HASH it
        // is one past the last symbol any GNU hash chain reaches.
        let mut size_unknown = None;
        let count = match (sysv, &gnu) {
            (Some(h), _) => h.nchain,
            (None, Some(g)) => {
                let count = gnu_symbol_count(mem, g, limits)?;
                if count.is_none() {
                    size_unknown = Some((symtab_vaddr, dynamic.versym));
                }
                count.unwrap_or(g.symoffset)
            }
            (None, None) => {
                return Err(Error::BadDynamic {
                    reason: "neither DT_GNU_HASH nor DT_HASH",
                })
            }
        };
        if u64::from(count) > limits.max_symbols {
            return Err(Error::LimitExceeded {
                what: "dynamic symbols",
                value: count.into(),
                limit: limits.max_symbols,
            });
        }
        if let Some(g) = &mut gnu {
            if g.symoffset > count {
                return Err(Error::BadHashTable {
                    table: "DT_GNU_HASH",
                    reason: "symbol offset beyond the symbol table",
                });
            }
            // Lookups read chain entries for every symbol from symoffset on.
            g.chains = mem.readonly_array(
                "DT_GNU_HASH",
                g.chains_vaddr,
                u64::from(count - g.symoffset),
            )?;
        }
        let symtab = mem.readonly_array("DT_SYMTAB", symtab_vaddr, count.into())?;
        let versym = match dynamic.versym {
            Some(v) => Some(mem.readonly_array("DT_VERSYM", v, count.into())?),
            None => None,
        };
        let needed_versions = match dynamic.verneed {
            Some(v) => parse_verneed(mem, v, dynamic.verneednum)?,
            None => Vec::new(),
        };
        let defined_versions = match dynamic.verdef {
            Some(v) => parse_verdef(mem, v, dynamic.verdefnum)?,
            None => Vec::new(),
        };
        Ok(SymbolTable {
            symtab,
            count,
            hashed: count,
            size_unknown,
            strings,
            gnu,
            sysv,
            versym,
            needed_versions,
            defined_versions,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the hash table could not tell the table's size (see
    /// [`SymbolTable::cover`]).
    pub fn size_unknown(&self) -> bool {
        self.size_unknown.is_some()
    }

    /// Makes symbols up to `count` readable by index when the hash table
    /// could not tell the table's size: a GNU hash table that hashes no
    /// symbol (a library that only imports, such as a Python build's
    /// `libpython3.so`) says nothing of the imports after its symbol
    /// offset. The relocations name them, so their highest index bounds
    /// the table; it is checked like any table before it is read. Lookups
    /// still see only what the hash table answers.
    pub fn cover(&mut self, mem: &Memory<'_>, count: u32, limits: &Limits) -> Result<()> {
        let Some((symtab, versym)) = self.size_unknown else {
            return Ok(());
        };
        if count <= self.count {
            return Ok(());
        }
        if u64::from(count) > limits.max_symbols {
            return Err(Error::LimitExceeded {
                what: "dynamic symbols",
                value: count.into(),
                limit: limits.max_symbols,
            });
        }
        self.symtab = mem.readonly_array("DT_SYMTAB", symtab, count.into())?;
        if let Some(v) = versym {
            self.versym = Some(mem.readonly_array("DT_VERSYM", v, count.into())?);
        }
        self.count = count;
        Ok(())
    }

    /// Symbol `index`, or `None` past the end.
    #[inline]
    pub fn get(&self, index: u32) -> Option<Sym> {
        self.symtab.get(index as usize)
    }

    /// Every symbol from index 1 (after the null symbol) on, in order.
    pub fn entries(&self) -> impl Iterator<Item = Sym> + '_ {
        self.symtab.iter().take(self.count as usize).skip(1)
    }

    /// Names of the unique symbols (`STB_GNU_UNIQUE`) the image defines.
    pub fn unique_definitions(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries()
            .filter(|s| s.bind() == STB_GNU_UNIQUE && s.is_defined())
            .filter_map(|s| self.name(&s).ok().filter(|n| !n.is_empty()))
    }

    /// The entries after the null symbol as they lie in the image, 24
    /// bytes each.
    pub fn entry_bytes(&self) -> &[u8] {
        let end = (self.count as usize).saturating_mul(SYM_SIZE as usize);
        let bytes = self.symtab.bytes();
        bytes
            .get(SYM_SIZE as usize..end.min(bytes.len()))
            .unwrap_or_default()
    }

    /// Names of the weak imports (undefined weak symbols, not thread-local):
    /// those a load may find nowhere. With a GNU hash table only the
    /// symbols before its first hashed one are looked at, where linkers put
    /// every undefined symbol (one elsewhere is simply not listed).
    pub fn weak_imports(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let end = self.gnu.map_or(self.count, |g| g.symoffset.min(self.count));
        self.entries()
            .take((end as usize).saturating_sub(1))
            .filter(|s| !s.is_defined() && s.bind() == STB_WEAK && s.kind() != STT_TLS)
            .filter_map(|s| self.name(&s).ok().filter(|n| !n.is_empty()))
    }

    /// The `DT_VERSYM` entry of symbol `index` (1, "global", without versions).
    pub fn version_index(&self, index: u32) -> u16 {
        // The versym table has `count` entries, as the symbol table.
        self.versym.and_then(|v| v.get(index as usize)).unwrap_or(1)
    }

    /// Name of the version an import requires, if it has one (`DT_VERNEED`).
    pub fn required_version(&self, index: u32) -> Result<Option<&[u8]>> {
        let ndx = self.version_index(index) & !VERSYM_HIDDEN;
        match self.needed_versions.iter().find(|(i, _)| *i == ndx) {
            Some(&(_, name)) => self.strings.get(name).map(Some),
            None => Ok(None),
        }
    }

    /// Name of a version this object defines (`DT_VERDEF`), by index.
    pub fn defined_version(&self, ndx: u16) -> Option<&[u8]> {
        let &(_, name) = self.defined_versions.iter().find(|(i, _)| *i == ndx)?;
        self.strings.get(name).ok()
    }

    /// Name of symbol `sym`.
    pub fn name(&self, sym: &Sym) -> Result<&[u8]> {
        self.strings.get(sym.name.into())
    }

    /// Whether symbol `index` is visible to a plain-name lookup: exported,
    /// and either unversioned or the default (`@@`) version.
    pub(super) fn visible(&self, index: u32, sym: &Sym, version: Option<&[u8]>) -> bool {
        if !sym.is_exported() {
            return false;
        }
        let v = self.version_index(index);
        if v & !VERSYM_HIDDEN == VER_NDX_LOCAL {
            return false;
        }
        match version {
            None => v & VERSYM_HIDDEN == 0,
            Some(want) => self.defined_version(v & !VERSYM_HIDDEN) == Some(want),
        }
    }

    #[inline]
    fn matches(
        &self,
        index: u32,
        name: &[u8],
        version: Option<&[u8]>,
        work: &mut u64,
    ) -> Option<Sym> {
        let sym = self.get(index)?;
        *work = work.saturating_add(name.len() as u64);
        (self.strings.equals(sym.name.into(), name) && self.visible(index, &sym, version))
            .then_some(sym)
    }

    /// Finds the exported symbol `name` (the default version, or the given
    /// one) through the hash table.
    pub fn lookup(&self, name: &[u8], version: Option<&[u8]>) -> Option<(u32, Sym)> {
        self.find(name, version, &mut 0)
    }

    /// [`SymbolTable::lookup`], adding to `work` what it cost: one per
    /// chain entry visited, and the bytes hashed and compared.
    #[inline]
    pub(super) fn find(
        &self,
        name: &[u8],
        version: Option<&[u8]>,
        work: &mut u64,
    ) -> Option<(u32, Sym)> {
        *work = work.saturating_add(name.len() as u64);
        if let Some(g) = &self.gnu {
            return self.gnu_lookup(g, name, version, work);
        }
        let h = self.sysv.as_ref()?;
        let mut index = self.sysv_bucket(h, sysv_hash(name) % h.nbucket);
        // A chain can visit each symbol once; more steps means a cycle.
        for _ in 0..h.nchain {
            if index == 0 || index >= h.nchain {
                return None;
            }
            *work = work.saturating_add(1);
            if let Some(sym) = self.matches(index, name, version, work) {
                return Some((index, sym));
            }
            index = h.chains.get(index as usize)?;
        }
        None
    }

    fn sysv_bucket(&self, h: &SysvHash, b: u32) -> u32 {
        // b < nbucket, the array's length: 0 (no symbol) is never needed.
        h.buckets.get(b as usize).unwrap_or(0)
    }

    #[inline]
    fn gnu_lookup(
        &self,
        g: &GnuHash,
        name: &[u8],
        version: Option<&[u8]>,
        work: &mut u64,
    ) -> Option<(u32, Sym)> {
        let h = gnu_hash(name);
        let (word_index, bits) = bloom_probe(h, g.bloom_mask, g.bloom_shift);
        // word_index <= bloom_mask < bloom_size words: always present.
        let word = g.bloom.get(word_index)?;
        if word & bits != bits {
            return None;
        }
        // h % nbuckets < nbuckets: always present.
        let mut index = g.buckets.get((h % g.nbuckets) as usize)?;
        if index < g.symoffset {
            return None;
        }
        while index < self.hashed {
            // symoffset <= index < hashed, and the chain array covers
            // hashed - symoffset entries: always present.
            let chain = g.chains.get((index - g.symoffset) as usize)?;
            *work = work.saturating_add(1);
            if chain | 1 == h | 1 {
                if let Some(sym) = self.matches(index, name, version, work) {
                    return Some((index, sym));
                }
            }
            if chain & 1 != 0 {
                break;
            }
            index += 1;
        }
        None
    }

    /// The defined symbol whose range contains `vaddr` (or that sits exactly
    /// at it, for zero-sized symbols), preferring exported ones.
    pub fn containing(&self, vaddr: u64) -> Option<(Sym, &[u8])> {
        let mut best: Option<Sym> = None;
        for i in 1..self.hashed {
            let Some(s) = self.get(i) else { break };
            if !s.is_defined() || s.is_absolute() || s.kind() == goblin::elf::sym::STT_TLS {
                continue;
            }
            let inside =
                vaddr >= s.value && (vaddr - s.value < s.size || (s.size == 0 && vaddr == s.value));
            if inside && best.is_none_or(|b| !b.is_exported() && s.is_exported()) {
                best = Some(s);
            }
        }
        let sym = best?;
        Some((sym, self.name(&sym).ok()?))
    }

    /// Every exported, default-version symbol: (index, symbol, name).
    pub fn exports(&self) -> impl Iterator<Item = (u32, Sym, &[u8])> + '_ {
        (1..self.hashed).filter_map(move |i| {
            let sym = self.get(i)?;
            if !self.visible(i, &sym, None) {
                return None;
            }
            Some((i, sym, self.name(&sym).ok()?))
        })
    }
}

fn hash_error(table: &'static str, reason: &'static str) -> Error {
    Error::BadHashTable { table, reason }
}

fn parse_sysv_hash(mem: &Memory<'_>, vaddr: u64) -> Result<SysvHash> {
    const T: &str = "DT_HASH";
    let [nbucket, nchain] = mem.readonly_record::<[u32; 2]>(T, vaddr)?;
    if nbucket == 0 {
        return Err(hash_error(T, "zero buckets"));
    }
    let words = 2 + u64::from(nbucket) + u64::from(nchain);
    let table = mem.readonly_table(T, vaddr, words * 4)?;
    let (buckets, chains) = (nbucket as usize * 4, nchain as usize * 4);
    // Both inside the table just checked.
    let (Some(buckets), Some(chains)) = (table.range(8, buckets), table.range(8 + buckets, chains))
    else {
        return Err(hash_error(T, "tables past the end"));
    };
    Ok(SysvHash {
        nbucket,
        nchain,
        buckets: buckets.array(),
        chains: chains.array(),
    })
}

fn parse_gnu_hash(mem: &Memory<'_>, vaddr: u64) -> Result<GnuHash> {
    const T: &str = "DT_GNU_HASH";
    let [nbuckets, symoffset, bloom_size, bloom_shift] =
        mem.readonly_record::<[u32; 4]>(T, vaddr)?;
    if let Some(reason) = gnu_header_fault(nbuckets, bloom_size, bloom_shift) {
        return Err(hash_error(T, reason));
    }
    // Header, bloom words and buckets; the chains are checked once the
    // symbol count is known.
    let size = 16 + u64::from(bloom_size) * 8 + u64::from(nbuckets) * 4;
    let table = mem.readonly_table(T, vaddr, size)?;
    let (bloom, buckets) = (bloom_size as usize * 8, nbuckets as usize * 4);
    // Both inside the table just checked.
    let (Some(bloom), Some(buckets)) = (table.range(16, bloom), table.range(16 + bloom, buckets))
    else {
        return Err(hash_error(T, "tables past the end"));
    };
    Ok(GnuHash {
        nbuckets,
        symoffset,
        bloom_mask: bloom_size - 1,
        bloom_shift,
        bloom: bloom.array(),
        buckets: buckets.array(),
        chains: Array::EMPTY,
        chains_vaddr: vaddr + size,
    })
}

/// Number of symbols implied by a GNU hash table: one past the end of the
/// chain that starts at the highest bucket (`None` when every bucket is
/// empty: then it implies nothing). Checks the chain array covers every
/// symbol from `symoffset` to that count.
fn gnu_symbol_count(mem: &Memory<'_>, g: &GnuHash, limits: &Limits) -> Result<Option<u32>> {
    const T: &str = "DT_GNU_HASH";
    let mut last = g.buckets.iter().max().unwrap_or(0);
    if last == 0 {
        return Ok(None);
    }
    if last < g.symoffset {
        return Err(hash_error(T, "bucket below the symbol offset"));
    }
    loop {
        if u64::from(last) >= limits.max_symbols {
            return Err(Error::LimitExceeded {
                what: "dynamic symbols",
                value: u64::from(last) + 1,
                limit: limits.max_symbols,
            });
        }
        let entry = u64::from(last - g.symoffset);
        let chains = mem.readonly_array::<u32>(T, g.chains_vaddr, entry + 1)?;
        let Some(chain) = chains.get(entry as usize) else {
            return Err(hash_error(T, "chain past the end"));
        };
        if chain & 1 != 0 {
            return Ok(Some(last + 1));
        }
        last += 1;
    }
}

/// A small bounded walk over a linked list of version records.
const MAX_VERSION_RECORDS: usize = 1 << 16;

fn too_many_versions() -> Error {
    Error::BadDynamic {
        reason: "version records form a list longer than 65536 entries",
    }
}

fn advance(at: u64, by: u32) -> Result<u64> {
    // Not `ok_or`: an error built eagerly is dropped on every success
    // (its drop glue is a call: 29 for zlib's versions).
    match at.checked_add(u64::from(by)) {
        Some(next) => Ok(next),
        None => Err(Error::BadDynamic {
            reason: "version record offset overflows",
        }),
    }
}

/// `DT_VERNEED`: (version index, name offset) of every required version.
fn parse_verneed(mem: &Memory<'_>, vaddr: u64, count: u64) -> Result<Vec<(u16, u64)>> {
    let mut out = Vec::new();
    let mut at = vaddr;
    for _ in 0..count {
        let Verneed { cnt, aux, next, .. } = mem.readonly_record("DT_VERNEED", at)?;
        let mut aux_at = advance(at, aux)?;
        for _ in 0..cnt {
            let Vernaux {
                other,
                name,
                next: anext,
                ..
            } = mem.readonly_record("DT_VERNEED", aux_at)?;
            if out.len() >= MAX_VERSION_RECORDS {
                return Err(too_many_versions());
            }
            out.push((other & !VERSYM_HIDDEN, u64::from(name)));
            if anext == 0 {
                break;
            }
            aux_at = advance(aux_at, anext)?;
        }
        if next == 0 {
            break;
        }
        at = advance(at, next)?;
    }
    Ok(out)
}

/// `DT_VERDEF`: (version index, name offset) of every defined version.
fn parse_verdef(mem: &Memory<'_>, vaddr: u64, count: u64) -> Result<Vec<(u16, u64)>> {
    let mut out = Vec::new();
    let mut at = vaddr;
    for _ in 0..count {
        let Verdef { ndx, aux, next, .. } = mem.readonly_record("DT_VERDEF", at)?;
        let Verdaux { name, .. } = mem.readonly_record("DT_VERDEF", advance(at, aux)?)?;
        if out.len() >= MAX_VERSION_RECORDS {
            return Err(too_many_versions());
        }
        out.push((ndx & !VERSYM_HIDDEN, u64::from(name)));
        if next == 0 {
            break;
        }
        at = advance(at, next)?;
    }
    Ok(out)
}
