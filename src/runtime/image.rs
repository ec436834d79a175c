//! What a loaded image is: [`ElfImage`] and the [`Loaded`] state its code
//! relies on while it may run, the symbol lookup (hash tables and the
//! export index) and the finalisers at drop. The load pipeline (`load/`)
//! builds one and hands it over ([`ElfImage::publish`]); nothing here knows
//! how it was built.

use std::ffi::{c_void, CString};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use goblin::elf::sym::{STB_GNU_UNIQUE, STT_GNU_IFUNC, STT_TLS};

use crate::arch;
use crate::elf::index::{has_nul, ExportIndex, Probe};
use crate::elf::symbols::{Sym, SymbolTable};
use crate::elf::view::Array;
use crate::elf::{Phdr, Segment};
use crate::error::{Error, Result};
use crate::map::Mapping;
use crate::runtime::debug::DebugRegistration;
use crate::runtime::init::call_fini;
use crate::runtime::needed::NeededLibrary;
use crate::runtime::registry;
use crate::runtime::tls::ImageTls;
use crate::runtime::tls_static::ForeignTls;
use crate::runtime::unwind::FrameRegistration;
use crate::symbol::{lossy, Library, Symbol};

/// A shared object loaded by memdl's own loader.
///
/// Dropping it runs the finalisers (`DT_FINI_ARRAY` in reverse, then
/// `DT_FINI`), unmaps the image and closes the libraries it needed; an image
/// marked `DF_1_NODELETE` stays mapped, as with the system loader. While a
/// thread-exit destructor the image registered is pending, its code stays
/// mapped (and its finalisers wait) until that destructor has run.
pub struct ElfImage {
    pub(crate) core: Arc<Loaded>,
    placements: Vec<Placement>,
    soname: Option<String>,
}

/// Everything that must live as long as the image's code may run: shared
/// by the [`ElfImage`], the registry of loaded images, and thread-exit
/// destructors the image registered.
pub(crate) struct Loaded {
    pub bias: usize,
    /// Lowest and one-past-highest address of the image.
    pub range: (usize, usize),
    pub loads: Vec<Segment>,
    pub symbols: SymbolTable,
    /// The export index, built once `plain_lookups` reaches
    /// [`Loaded::index_threshold`].
    pub(crate) exports: OnceLock<ExportIndex>,
    /// Plain-name lookups answered by the hash table before the index existed.
    plain_lookups: AtomicU64,
    /// `DT_SONAME`, or a made-up `memdl:<address>` name.
    pub name: CString,
    pub phdrs: Vec<Phdr>,
    /// `DT_FINI_ARRAY`.
    fini: Option<Array<usize>>,
    fini_fn: Option<u64>,
    pub nodelete: bool,
    // Dropped in this order after the finalisers ran: the debuggers' view
    // of the image, unwind information, thread-local storage, the memory,
    // then the libraries it called into.
    _debug: Option<DebugRegistration>,
    _frames: Option<FrameRegistration>,
    pub tls: ImageTls,
    _mapping: Mapping,
    _needed: Vec<NeededLibrary>,
}

// SAFETY: after load the image's metadata is immutable and lookups only read
// read-only pages; TLS state is behind its own lock, and the export index is
// built once, behind an atomic counter and a `OnceLock`. Dropping on another
// thread runs the finalisers there, as dlclose on another thread would.
unsafe impl Send for Loaded {}
// SAFETY: see above; shared references only allow lookups.
unsafe impl Sync for Loaded {}

impl fmt::Debug for ElfImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElfImage")
            .field("base", &format_args!("{:#x}", self.core.bias))
            .field("soname", &self.soname)
            .field("segments", &self.core.loads.len())
            .finish()
    }
}

/// What the load pipeline hands over once an image is linked, protected
/// and its frames registered: everything [`ElfImage::publish`] needs.
pub(crate) struct Linked {
    pub bias: usize,
    pub range: (usize, usize),
    pub name: CString,
    pub soname: Option<String>,
    pub loads: Vec<Segment>,
    pub phdrs: Vec<Phdr>,
    pub placements: Vec<Placement>,
    pub symbols: SymbolTable,
    pub fini_array: Option<Array<usize>>,
    pub fini: Option<u64>,
    pub nodelete: bool,
    pub debug: Option<DebugRegistration>,
    pub frames: Option<FrameRegistration>,
    pub tls: ImageTls,
    pub mapping: Mapping,
    pub needed: Vec<NeededLibrary>,
}

impl ElfImage {
    /// The image `linked` describes, made visible to `dladdr`,
    /// `dl_iterate_phdr` and [`crate::find_symbol`] before any of its
    /// initialisers run, as the system loader does.
    pub(crate) fn publish(linked: Linked) -> ElfImage {
        let core = Arc::new(Loaded {
            bias: linked.bias,
            range: linked.range,
            loads: linked.loads,
            symbols: linked.symbols,
            exports: OnceLock::new(),
            plain_lookups: AtomicU64::new(0),
            name: linked.name,
            phdrs: linked.phdrs,
            fini: linked.fini_array,
            fini_fn: linked.fini,
            nodelete: linked.nodelete,
            _debug: linked.debug,
            _frames: linked.frames,
            tls: linked.tls,
            _mapping: linked.mapping,
            _needed: linked.needed,
        });
        registry::register(&core);
        ElfImage {
            core,
            placements: linked.placements,
            soname: linked.soname,
        }
    }

    /// Whether `addr` lies in an executable segment of this image.
    pub(crate) fn is_code(&self, addr: usize) -> bool {
        self.core.is_code(addr)
    }

    /// Looks up an exported symbol and types it as `T`.
    ///
    /// Only symbols the image exports are found: defined, global or weak,
    /// default or protected visibility, and the default version (`foo@@V2`
    /// for `foo`; `foo@V1` is hidden from a plain-name lookup).
    ///
    /// An image that has answered many lookups (about two per symbol it
    /// has) builds an index of its exports once, which answers the later
    /// ones in a few nanoseconds, exactly as its hash table would.
    ///
    /// # Safety
    /// `T` must be the symbol's true type (see [`Library::get`]).
    pub unsafe fn get<T>(&self, name: impl AsRef<[u8]>) -> Result<Symbol<'_, T>> {
        // SAFETY: forwarded caller promise.
        unsafe { Library::get(self, name) }
    }

    /// Looks up `name` at a specific version this image defines
    /// (e.g. `("foo", "V1")` for `foo@V1`).
    ///
    /// # Safety
    /// As [`ElfImage::get`].
    pub unsafe fn get_versioned<T>(
        &self,
        name: impl AsRef<[u8]>,
        version: impl AsRef<[u8]>,
    ) -> Result<Symbol<'_, T>> {
        let addr = self
            .core
            .address_of(name.as_ref(), Some(version.as_ref()))?;
        // SAFETY: forwarded caller promise.
        unsafe { Symbol::from_addr(addr) }
    }

    /// The `DT_SONAME`, if the image has one.
    pub fn soname(&self) -> Option<&str> {
        self.soname.as_deref()
    }

    /// The runtime address of export `name` (at `version`), for images
    /// that need this one.
    pub(crate) fn export_address(&self, name: &[u8], version: Option<&[u8]>) -> Option<usize> {
        self.core.address_of(name, version).ok()
    }

    /// Where exported thread-local variable `name` lives, for images that
    /// need this one.
    pub(crate) fn tls_variable(&self, name: &[u8], version: Option<&[u8]>) -> Option<ForeignTls> {
        let (_, sym) = self.core.symbols.lookup(name, version)?;
        let own = self.core.tls.own.as_ref()?;
        (sym.kind() == STT_TLS && sym.is_defined()).then(|| ForeignTls {
            module: own.module(),
            offset: sym.value,
            tp_offset: own.tp_offset().map(|t| t.wrapping_add(sym.value as i64)),
        })
    }

    /// How many threads currently hold a block of this image's thread-local
    /// storage (0 without `PT_TLS`). Blocks are allocated on a thread's first
    /// access and freed when the thread exits or the image is dropped.
    pub fn live_tls_blocks(&self) -> usize {
        self.core.tls.live_blocks()
    }

    /// The loaded segments, in address order, with how each was placed.
    pub fn segments(&self) -> impl Iterator<Item = SegmentInfo> + '_ {
        self.core
            .loads
            .iter()
            .zip(&self.placements)
            .map(|(s, &placement)| SegmentInfo {
                address: self.core.bias.wrapping_add(s.vaddr as usize),
                size: s.memsz,
                flags: s.flags,
                placement,
            })
    }

    /// Every exported symbol (default versions) and its runtime address
    /// (thread-local symbols are left out: they have one per thread).
    pub fn exports(&self) -> impl Iterator<Item = (&[u8], usize)> + '_ {
        self.core
            .symbols
            .exports()
            .filter(|(_, sym, _)| sym.kind() != STT_TLS)
            .map(|(_, sym, name)| (name, self.core.value_of(sym.value, sym.is_absolute())))
    }
}

impl Loaded {
    fn value_of(&self, value: u64, absolute: bool) -> usize {
        if absolute {
            value as usize
        } else {
            self.bias.wrapping_add(value as usize)
        }
    }

    /// Whether `addr` lies in an executable segment of this image.
    pub fn is_code(&self, addr: usize) -> bool {
        let vaddr = addr.wrapping_sub(self.bias) as u64;
        self.loads
            .iter()
            .any(|s| s.executable() && s.contains(vaddr, 1))
    }

    /// Whether `addr` lies inside the image's address range.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.range.0 && addr < self.range.1
    }

    /// Runtime address of the exported symbol `name` (for a thread-local
    /// symbol: the calling thread's instance, as `dlsym` gives it).
    ///
    /// Plain-name lookups go through the export index once it exists; it
    /// answers exactly as [`Loaded::hash_table_address`] does.
    #[inline]
    pub fn address_of(&self, name: &[u8], version: Option<&[u8]>) -> Result<usize> {
        let indexed = match version {
            None => self.indexed(name),
            Some(_) => Indexed::Unknown,
        };
        match indexed {
            Indexed::Address(addr) => Ok(addr),
            _ => self.address_of_slow(name, version, indexed),
        }
    }

    /// What the export index says about `name`. Out of line, and small
    /// enough to return in registers, so that callers' code stays small and
    /// the probe's code does not depend on theirs.
    #[inline(never)]
    fn indexed(&self, name: &[u8]) -> Indexed {
        let Some(index) = self.exports.get() else {
            return Indexed::Unknown;
        };
        match index.probe(name) {
            Probe::Address(addr) => Indexed::Address(addr),
            Probe::Symbol(i) => Indexed::Symbol(i as usize),
            Probe::Absent if index.is_complete() => Indexed::Missing,
            Probe::Absent => Indexed::Unknown,
        }
    }

    /// Everything but an index hit: thread-local and ifunc symbols, misses,
    /// versioned lookups, and every lookup before the index exists (which
    /// counts towards building it).
    #[inline(never)]
    fn address_of_slow(
        &self,
        name: &[u8],
        version: Option<&[u8]>,
        indexed: Indexed,
    ) -> Result<usize> {
        match indexed {
            Indexed::Address(addr) => Ok(addr),
            Indexed::Symbol(i) => {
                let sym = u32::try_from(i)
                    .ok()
                    .and_then(|i| self.symbols.get(i))
                    .ok_or_else(|| not_found(name))?;
                self.address_of_symbol(name, &sym)
            }
            // A name with a NUL can still match in the hash table (see
            // `ExportIndex::is_complete`).
            Indexed::Missing if !has_nul(name) => Err(not_found(name)),
            Indexed::Missing | Indexed::Unknown => {
                if version.is_none() && self.exports.get().is_none() {
                    self.count_plain_lookup();
                }
                self.hash_table_address(name, version)
            }
        }
    }

    /// When to build the export index, in plain-name lookups.
    ///
    /// Ski rental: each lookup without the index costs a lookup, building
    /// it costs about as much as looking up every export twice (measured on
    /// zlib, SQLite, GMP and a 10^4-export library: 1.4 to 2.1 lookups per
    /// symbol, the walk of the hash table plus the insertion), and each
    /// later lookup saves most of a lookup. Building once the lookups paid
    /// so far equal the price of building never costs more than twice what
    /// the best choice in hindsight would have. The symbol count stands for
    /// the exports (it also counts imports, which building skips cheaply),
    /// and the constant covers the allocation and keeps "load, look up a
    /// few symbols" free of any building (the load benchmarks do one).
    fn index_threshold(&self) -> u64 {
        u64::from(self.symbols.len())
            .saturating_mul(2)
            .saturating_add(16)
    }

    fn count_plain_lookup(&self) {
        let seen = self
            .plain_lookups
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        // Exactly one caller sees the threshold itself, so one thread builds
        // while the others keep using the hash table (`exports.get()` does
        // not wait for it).
        if seen == self.index_threshold() {
            self.build_index();
        }
    }

    /// Builds the export index unless it exists (or is being built).
    pub(crate) fn build_index(&self) {
        self.exports.get_or_init(|| {
            ExportIndex::build(&self.symbols, |sym| match self.place(sym) {
                Place::Fixed(addr) => Some(addr),
                Place::ThreadLocal | Place::Ifunc(_) | Place::Unique(_) | Place::OutOfBounds => {
                    None
                }
            })
        });
    }

    /// The lookup through the file's hash table: the authoritative answer.
    pub fn hash_table_address(&self, name: &[u8], version: Option<&[u8]>) -> Result<usize> {
        let (_, sym) = self
            .symbols
            .lookup(name, version)
            .ok_or_else(|| not_found(name))?;
        self.address_of_symbol(name, &sym)
    }

    /// Where a found symbol's address comes from.
    fn place(&self, sym: &Sym) -> Place {
        if sym.kind() == STT_TLS {
            return Place::ThreadLocal;
        }
        if sym.is_absolute() {
            return Place::Fixed(sym.value as usize);
        }
        // The end is inclusive: zero-sized markers like `_end` sit there.
        let inside = self
            .loads
            .iter()
            .any(|s| sym.value >= s.vaddr && sym.value <= s.end());
        if !inside {
            return Place::OutOfBounds;
        }
        let addr = self.value_of(sym.value, false);
        if sym.kind() == STT_GNU_IFUNC {
            Place::Ifunc(addr)
        } else if sym.bind() == STB_GNU_UNIQUE {
            Place::Unique(addr)
        } else {
            Place::Fixed(addr)
        }
    }

    /// The address a lookup of `name` that found `sym` gives.
    fn address_of_symbol(&self, name: &[u8], sym: &Sym) -> Result<usize> {
        let out_of_bounds = || Error::SymbolOutOfBounds {
            name: lossy(name),
            value: sym.value,
        };
        match self.place(sym) {
            Place::Fixed(addr) => Ok(addr),
            Place::Unique(own) => Ok(crate::runtime::unique::definition(name).unwrap_or(own)),
            Place::OutOfBounds => Err(out_of_bounds()),
            Place::ThreadLocal => {
                let own = self.tls.own.as_ref().ok_or_else(|| not_found(name))?;
                // The offset must lie in the image's TLS block (the end is
                // inclusive, as for other symbols): the address handed out
                // is the block's plus the offset.
                let tls_size = self
                    .phdrs
                    .iter()
                    .find(|p| p.p_type == goblin::elf::program_header::PT_TLS)
                    .map_or(0, |p| p.p_memsz);
                if sym.value > tls_size {
                    return Err(out_of_bounds());
                }
                own.address(sym.value).ok_or_else(|| not_found(name))
            }
            Place::Ifunc(addr) => {
                if !self.is_code(addr) {
                    return Err(out_of_bounds());
                }
                // SAFETY: the resolver lies in an executable segment of this
                // loaded, initialised image; dlsym calls it the same way.
                Ok(unsafe { arch::call_ifunc_resolver(addr) })
            }
        }
    }
}

/// What the export index says about a plain-name lookup.
#[derive(Clone, Copy)]
enum Indexed {
    /// The symbol's address, the same for every thread and lookup.
    Address(usize),
    /// The symbol (by index) the hash table finds, whose address is worked
    /// out at each lookup.
    Symbol(usize),
    /// No symbol of that name (the index is complete).
    Missing,
    /// The index cannot tell (not built yet, incomplete, or given up).
    Unknown,
}

/// Where the address of a symbol a lookup found comes from.
enum Place {
    /// The same address for every thread and every lookup.
    Fixed(usize),
    /// Thread-local: the calling thread's instance.
    ThreadLocal,
    /// An ifunc: what its resolver (at this address) returns, asked anew
    /// at each lookup as `dlsym` does.
    Ifunc(usize),
    /// `STB_GNU_UNIQUE` (defined here at this address): the process-wide
    /// definition, which may be another object's.
    Unique(usize),
    /// Outside every segment: an error.
    OutOfBounds,
}

/// The error for a name no lookup finds (kept out of line: it allocates).
#[cold]
#[inline(never)]
fn not_found(name: &[u8]) -> Error {
    Error::SymbolNotFound { name: lossy(name) }
}

impl Library for ElfImage {
    #[inline]
    fn symbol_address(&self, name: &[u8]) -> Result<*const c_void> {
        self.core.address_of(name, None).map(|a| a as *const c_void)
    }
    fn base_address(&self) -> usize {
        self.core.bias
    }
    fn backend(&self) -> &'static str {
        "memdl"
    }
}

impl Drop for ElfImage {
    fn drop(&mut self) {
        // A DF_1_NODELETE image is never unloaded, as with the system
        // loader: the registry keeps it (and its memory) alive for good.
        if !self.core.nodelete {
            registry::unregister(&self.core);
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        crate::runtime::unique::forget(self.range.0, self.range.1);
        if let Some(array) = self.fini {
            for f in array.iter().rev() {
                if self.is_code(f) {
                    // SAFETY: a finaliser of this image, in its own code.
                    unsafe { call_fini(f) };
                }
            }
        }
        if let Some(v) = self.fini_fn {
            let f = self.bias.wrapping_add(v as usize);
            // SAFETY: checked at load to lie in an executable segment.
            unsafe { call_fini(f) };
        }
    }
}

/// How a segment got into memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// Copied into anonymous memory.
    Copied,
    /// Mapped privately from the file (zero-copy until written).
    Mapped,
}

/// One loaded segment, as [`ElfImage::segments`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Runtime address of the segment's first byte.
    pub address: usize,
    /// Bytes in memory (`p_memsz`).
    pub size: u64,
    /// `PF_R | PF_W | PF_X` of the program header.
    pub flags: u32,
    /// Whether the segment was copied or mapped from the file.
    pub placement: Placement,
}
