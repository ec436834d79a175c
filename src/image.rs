//! `ElfImage`: the custom loader's pipeline, symbol lookup and drop.
//!
//! [`ElfImage::load_with`] reads top to bottom like the steps it performs:
//! validate → reserve → copy → relocate → protect → ifuncs → RELRO → init.
//! Everything acquired along the way is owned by a value whose drop releases
//! it, so an error at any step leaves nothing mapped and nothing open.

use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use goblin::elf::dynamic::{DF_1_NODELETE, DF_STATIC_TLS};
use goblin::elf::sym::{STB_GNU_UNIQUE, STT_GNU_IFUNC, STT_TLS};

use crate::arch;
use crate::elf::dynamic::{Dynamic, Table};
use crate::elf::index::{has_nul, ExportIndex, Probe};
use crate::elf::symbols::{Sym, SymbolTable};
use crate::elf::{read, Layout, Memory, Phdr, Segment};
use crate::error::{Error, Result};
use crate::map::{
    checked_file_range, page_size, prot_of, protection_plan, read_exact_at, with_read_only,
    Mapping, ProtectedRange,
};
use crate::options::Options;
use crate::registry;
use crate::reloc::{apply_deferred, Relocations};
use crate::resolve::{NeededLibrary, Resolver};
use crate::symbol::{lossy, Library, Symbol};
use crate::tls::{ImageTls, OwnTls, TlsModule};
use crate::unwind::FrameRegistration;

/// A shared object loaded by memdl's own loader.
///
/// Dropping it runs the finalisers (`DT_FINI_ARRAY` in reverse, then
/// `DT_FINI`), unmaps the image and closes the libraries it needed; an image
/// marked `DF_1_NODELETE` stays mapped, as with the system loader. While a
/// thread-exit destructor the image registered is pending, its code stays
/// mapped (and its finalisers wait) until that destructor has run.
pub struct ElfImage {
    core: Arc<Loaded>,
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
    exports: OnceLock<ExportIndex>,
    /// Plain-name lookups answered by the hash table before the index existed.
    plain_lookups: AtomicU64,
    /// `DT_SONAME`, or a made-up `memdl:<address>` name.
    pub name: CString,
    pub phdrs: Vec<Phdr>,
    fini: Option<Table>,
    fini_fn: Option<u64>,
    pub nodelete: bool,
    // Dropped in this order after the finalisers ran: unwind information,
    // thread-local storage, the memory, then the libraries it called into.
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

impl ElfImage {
    /// Loads an ELF shared object from `bytes` with default [`Options`].
    ///
    /// The segments are copied; `bytes` may be dropped afterwards.
    ///
    /// # Safety
    ///
    /// Loading runs the library's code: its ifunc resolvers and initialisers
    /// (`DT_INIT`, `DT_INIT_ARRAY`) now, its finalisers when the image is
    /// dropped. That is calling unknown foreign functions, which may impose
    /// any requirement on the caller: the library must be one you trust to
    /// run in this process, bound to the imports the resolver chain gives it.
    /// memdl checks the file's structure before any of its code runs (a
    /// malformed file is an [`Error`], never undefined behaviour), but it
    /// cannot check what that code does.
    ///
    /// ```compile_fail
    /// // Loading outside `unsafe` does not compile:
    /// let img = memdl::ElfImage::load(b"\x7fELF");
    /// ```
    pub unsafe fn load(bytes: &[u8]) -> Result<Self> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { Self::load_with(bytes, &Options::default()) }
    }

    /// Loads `bytes` under `options`.
    ///
    /// # Safety
    /// As [`ElfImage::load`].
    pub unsafe fn load_with(bytes: &[u8], options: &Options) -> Result<Self> {
        let page = page_size() as u64;
        let layout = Layout::parse(bytes, page, &options.limits)?;
        let mapping = reserve(&layout, RW)?;
        let bias = mapping.base().wrapping_sub(layout.span_start as usize);
        // Counted until the load returns (see `populate_and_copy`).
        let in_flight = LoadInFlight::enter();
        populate_and_copy(&mapping, bytes, bias, &layout.loads, page, in_flight.alone);
        let placed = Placed {
            placements: vec![Placement::Copied; layout.loads.len()],
            reserved: RW,
            mapped: Vec::new(),
        };
        Self::link(mapping, layout, placed, Source::Bytes(bytes), options)
    }

    /// Loads the ELF that lies at `offset` in `fd` and is `len` bytes long
    /// (a library inside a larger container file), with default [`Options`].
    ///
    /// Where the file offset of a segment and its address agree modulo the
    /// page size, the segment is mapped straight from the file (private:
    /// the page cache pages are shared, only pages the loader writes become
    /// private copies); otherwise it is copied. Code on a `noexec` mount,
    /// and a page two segments share, are copied too.
    /// [`ElfImage::segments`] reports which path each segment took.
    ///
    /// The file must not change or shrink while the image lives: pages of a
    /// private mapping that were never written still show later writes to
    /// the file, and truncation turns them into `SIGBUS`. A sealed memfd
    /// ([`crate::SealedElf`]) guarantees both.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), memdl::Error> {
    /// let container = std::fs::File::open("model.bin").unwrap();
    /// // SAFETY: model.bin is ours and nothing writes to it while loaded.
    /// let img = unsafe { memdl::ElfImage::load_fd(&container, 4096, 81_920)? };
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    /// As [`ElfImage::load`]; and the file must not change or shrink while
    /// the image lives (see above).
    pub unsafe fn load_fd(fd: impl AsFd, offset: u64, len: u64) -> Result<Self> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { Self::load_fd_with(fd, offset, len, &Options::default()) }
    }

    /// [`ElfImage::load_fd`] under `options`.
    ///
    /// # Safety
    /// As [`ElfImage::load_fd`].
    pub unsafe fn load_fd_with(
        fd: impl AsFd,
        offset: u64,
        len: u64,
        options: &Options,
    ) -> Result<Self> {
        let fd = fd.as_fd();
        checked_file_range(fd, offset, len)?;
        // Only the headers are read (`pread`): mapping the whole range to
        // parse it would cost a mapping, an unmapping and a page fault more.
        // `at` lies inside the range just checked, so `offset + at` fits.
        let layout = Layout::parse_headers(len, page_size() as u64, &options.limits, |at, buf| {
            read_exact_at(fd, buf, offset + at)
        })?;
        let source = Source::File { fd, offset };
        let in_flight = LoadInFlight::enter();
        let (mapping, placed) = place_from_file(&layout, fd, offset, source, in_flight.alone)?;
        Self::link(mapping, layout, placed, source, options)
    }

    /// Loads an ELF whose `bytes` the caller has mapped from a file (a
    /// `memmap2::Mmap` of a library or of a container holding one, a mapped
    /// memfd), with default [`Options`].
    ///
    /// The mapping is found in `/proc/self/smaps` and its file opened
    /// again; then segments are placed as by [`ElfImage::load_fd`]: mapped
    /// from the file where the offsets allow (sharing the page cache with
    /// the caller's mapping), copied from `bytes` otherwise. When the bytes
    /// are not file-backed, or may differ from the file (a private mapping
    /// written to), or the file cannot be reopened, every segment is copied
    /// from `bytes`, exactly as [`ElfImage::load`]: where the bytes live
    /// never makes this fail. [`ElfImage::segments`] tells which happened.
    ///
    /// As with [`ElfImage::load_fd`], the file must not change while the
    /// image lives (a shared writable mapping written to later would change
    /// the loaded code).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), memdl::Error> {
    /// let file = std::fs::File::open("bundle.bin").unwrap();
    /// // SAFETY (of the map): nobody truncates bundle.bin while mapped.
    /// let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    /// // SAFETY: the library in bundle.bin is trusted (its initialisers run).
    /// let img = unsafe { memdl::ElfImage::load_mapped(&map[65536..65536 + 81_920])? };
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    /// As [`ElfImage::load_fd`]: the library is trusted, and its file does
    /// not change while the image lives.
    pub unsafe fn load_mapped(bytes: &[u8]) -> Result<Self> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { Self::load_mapped_with(bytes, &Options::default()) }
    }

    /// [`ElfImage::load_mapped`] under `options`.
    ///
    /// # Safety
    /// As [`ElfImage::load_mapped`].
    pub unsafe fn load_mapped_with(bytes: &[u8], options: &Options) -> Result<Self> {
        let Some(backing) = crate::map::file_backing(bytes.as_ptr() as usize, bytes.len()) else {
            // SAFETY: the caller's promise, forwarded.
            return unsafe { Self::load_with(bytes, options) };
        };
        let layout = Layout::parse(bytes, page_size() as u64, &options.limits)?;
        let source = Source::Bytes(bytes);
        let in_flight = LoadInFlight::enter();
        let (mapping, placed) = place_from_file(
            &layout,
            backing.file.as_fd(),
            backing.offset,
            source,
            in_flight.alone,
        )?;
        drop(backing);
        Self::link(mapping, layout, placed, source, options)
    }

    /// Everything after the segments are in place: dynamic section,
    /// symbols, imports, relocation, protections, initialisers.
    fn link(
        mapping: Mapping,
        layout: Layout,
        placed: Placed,
        source: Source<'_>,
        options: &Options,
    ) -> Result<Self> {
        let page = page_size() as u64;
        let limits = &options.limits;

        let bias = mapping.base().wrapping_sub(layout.span_start as usize);
        let mem = Memory {
            bias,
            loads: &layout.loads,
        };

        // Read the dynamic section and the tables it names.
        let dynamic = Dynamic::parse(&mem, layout.dynamic.0, layout.dynamic.1, limits.max_needed)?;
        if dynamic.textrel {
            return Err(Error::TextRelocations);
        }
        let mut symbols = SymbolTable::parse(&mem, &dynamic, limits)?;
        let relocations = Relocations::parse(&mem, &dynamic, limits)?;
        if symbols.size_unknown() {
            symbols.cover(&mem, relocations.max_symbol().saturating_add(1), limits)?;
        }
        let init = dynamic.init.map(|v| mem.code(v, "DT_INIT")).transpose()?;
        let fini_fn = dynamic
            .fini
            .map(|v| mem.code(v, "DT_FINI").map(|_| v))
            .transpose()?;
        let init_array = function_array(&mem, dynamic.init_array, "DT_INIT_ARRAY")?;
        function_array(&mem, dynamic.fini_array, "DT_FINI_ARRAY")?;
        // Resolve every import, then relocate.
        let needed_names = dynamic
            .needed
            .iter()
            .map(|&o| symbols.strings.get(o))
            .collect::<Result<Vec<_>>>()?;
        let path_list = |offset: Option<u64>| offset.map(|o| symbols.strings.get(o)).transpose();
        let (runpath, rpath) = (path_list(dynamic.runpath)?, path_list(dynamic.rpath)?);
        // `$ORIGIN` is only worked out when a search path uses it.
        let uses_origin = [runpath, rpath]
            .iter()
            .flatten()
            .any(|p| p.windows(7).any(|w| w == b"$ORIGIN" || w == b"{ORIGIN"));
        let origin = match (&options.origin, source) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Source::File { fd, .. }) if uses_origin && !needed_names.is_empty() => {
                crate::search::origin_of_fd(fd)
            }
            _ => None,
        };
        let search = crate::search::SearchPaths {
            origin: origin.as_deref(),
            runpath,
            rpath,
        };
        let resolver = Resolver::new(options, &needed_names, &search)?;
        let mut tls = ImageTls::default();
        let mut static_tls = None;
        if let Some(t) = layout.tls {
            let data = mem.table("PT_TLS", t.vaddr, t.filesz)?;
            // An empty block needs no static space: nothing to place.
            if dynamic.flags & DF_STATIC_TLS != 0 && t.memsz > 0 {
                // Placed once relocated: the system loader copies the
                // template into every thread when it takes the block.
                tls.static_pending = true;
                static_tls = Some((data, t));
            } else {
                tls.own = Some(OwnTls::Dynamic(TlsModule::register(
                    data, t.filesz, t.memsz, t.align, t.vaddr,
                )?));
            }
        }
        let deferred = relocations.apply(&mem, &symbols, &resolver, &mut tls)?;
        if let Some((data, t)) = static_tls {
            // SAFETY: `mem.table` checked the template lies in a loaded
            // segment, readable until the mapping is dropped.
            let template =
                unsafe { std::slice::from_raw_parts(data as *const u8, t.filesz as usize) };
            tls.place_static(template, t.memsz, t.align, t.vaddr % t.align.max(1))?;
        }
        let needed = resolver.into_needed();
        // Init/fini arrays hold relocated pointers now: all must be code.
        check_function_array(&mem, init_array)?;
        check_function_array(
            &mem,
            function_array(&mem, dynamic.fini_array, "DT_FINI_ARRAY")?,
        )?;

        // Final protections: code becomes executable (never while writable),
        // writable segments stay writable.
        let mut plan = protection_plan(&layout, page)?;
        let relro = layout
            .relro
            .map(|(addr, size)| (addr & !(page - 1), (addr + size) & !(page - 1)))
            .filter(|(start, end)| end > start);
        // Without ifunc resolvers to run first, RELRO is sealed in the same
        // pass (usually merged with the read-only segment before it: one
        // mprotect fewer); otherwise after the resolvers, below.
        let relro_in_plan = deferred.is_empty();
        if let (true, Some((start, end))) = (relro_in_plan, relro) {
            plan = with_read_only(&plan, start, end);
        }
        for r in &plan {
            let start = bias.wrapping_add(r.start as usize);
            let len = (r.end - r.start) as usize;
            if r.prot & libc::PROT_EXEC != 0 {
                arch::flush_icache(start, len);
            }
            if !already_protected(&placed, r) {
                mapping.protect(start, len, r.prot)?;
            }
        }

        // From here on the library's own code runs: ifunc resolvers first,
        // while RELRO is still writable, then seal RELRO.
        // SAFETY: code is executable, targets are in writable segments and
        // each resolver was checked to lie in an executable segment.
        unsafe { apply_deferred(&deferred) };
        if let (false, Some((start, end))) = (relro_in_plan, relro) {
            mapping.protect(
                bias.wrapping_add(start as usize),
                (end - start) as usize,
                libc::PROT_READ,
            )?;
        }

        let span = (
            bias.wrapping_add(layout.span_start as usize),
            bias.wrapping_add(layout.span_end as usize),
        );
        let soname = dynamic
            .soname
            .and_then(|o| symbols.strings.get(o).ok())
            .map(lossy);
        let name = CString::new(
            soname
                .clone()
                .unwrap_or_else(|| format!("memdl:{:#x}", span.0)),
        )
        .unwrap_or_default();
        // What a read-only segment mapped from the file holds can be read
        // from the source instead of faulting its pages in (up to a size
        // worth copying; beyond, or if memory is short, the mapping is read).
        const MAX_COPY: u64 = 16 << 20;
        let unmapped = |vaddr: u64, len: u64| -> Option<Vec<u8>> {
            if len > MAX_COPY {
                return None;
            }
            let (seg, _) = layout
                .loads
                .iter()
                .zip(&placed.placements)
                .find(|(s, &p)| {
                    p == Placement::Mapped
                        && !s.writable()
                        && vaddr >= s.vaddr
                        && vaddr
                            .checked_add(len)
                            .is_some_and(|end| end <= s.vaddr + s.filesz)
                })?;
            let len = usize::try_from(len).ok()?;
            source.read_vec(seg.offset + (vaddr - seg.vaddr), len).ok()
        };
        let frames = layout
            .eh_frame_hdr
            .and_then(|hdr| FrameRegistration::new(&mem, hdr, &unmapped));
        let core = Arc::new(Loaded {
            bias,
            range: span,
            loads: layout.loads.clone(),
            symbols,
            exports: OnceLock::new(),
            plain_lookups: AtomicU64::new(0),
            name,
            phdrs: layout.phdrs,
            fini: dynamic.fini_array,
            fini_fn,
            nodelete: dynamic.flags_1 & DF_1_NODELETE != 0,
            _frames: frames,
            tls,
            _mapping: mapping,
            _needed: needed,
        });
        // Visible to dladdr, dl_iterate_phdr and find_symbol before any of
        // its initialisers run, as the system loader does.
        registry::register(&core);
        let image = ElfImage {
            core,
            placements: placed.placements,
            soname,
        };

        // Initialisers: DT_INIT, then DT_INIT_ARRAY in order.
        let args = process_args();
        if let Some(f) = init {
            // SAFETY: checked to lie in an executable segment; the image is
            // fully relocated and protected, as its initialisers expect.
            unsafe { call_init(f, args) };
        }
        if let Some((addr, count)) = init_array {
            for i in 0..count {
                // SAFETY: entry i of an array checked to lie in the image.
                let f: usize = unsafe { read(addr + i * 8) };
                if image.core.is_code(f) {
                    // SAFETY: as for DT_INIT.
                    unsafe { call_init(f, args) };
                }
            }
        }
        Ok(image)
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

    /// The address a lookup through the file's hash table gives, without
    /// the export index and without counting towards building it: the
    /// reference the index is tested against.
    #[doc(hidden)]
    pub fn __hash_table_address(
        &self,
        name: impl AsRef<[u8]>,
        version: Option<&[u8]>,
    ) -> Result<usize> {
        self.core.hash_table_address(name.as_ref(), version)
    }

    /// Builds the export index now, if it is not built yet (tests use it
    /// where forcing it by lookups would take too long).
    #[doc(hidden)]
    pub fn __build_export_index(&self) {
        self.core.build_index();
    }

    /// The export index's state: `None` before it is built, `Some(None)`
    /// when building it was given up, else its number of names and whether
    /// it is complete (answers misses itself).
    #[doc(hidden)]
    pub fn __export_index(&self) -> Option<Option<(usize, bool)>> {
        self.core
            .exports
            .get()
            .map(|i| (!i.given_up()).then(|| (i.len(), i.is_complete())))
    }

    /// The runtime address of export `name` (at `version`), for images
    /// that need this one.
    pub(crate) fn export_address(&self, name: &[u8], version: Option<&[u8]>) -> Option<usize> {
        self.core.address_of(name, version).ok()
    }

    /// Where exported thread-local variable `name` lives, for images that
    /// need this one.
    pub(crate) fn tls_variable(
        &self,
        name: &[u8],
        version: Option<&[u8]>,
    ) -> Option<crate::tls_static::ForeignTls> {
        let (_, sym) = self.core.symbols.lookup(name, version)?;
        let own = self.core.tls.own.as_ref()?;
        (sym.kind() == STT_TLS && sym.is_defined()).then(|| crate::tls_static::ForeignTls {
            module: own.module(),
            offset: sym.value,
            tp_offset: own.tp_offset().map(|t| t.wrapping_add(sym.value as i64)),
        })
    }

    /// The `DT_SONAME`, if the image has one.
    pub fn soname(&self) -> Option<&str> {
        self.soname.as_deref()
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
    fn build_index(&self) {
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
            Place::Unique(own) => Ok(crate::unique::definition(name).unwrap_or(own)),
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
        crate::unique::forget(self.range.0, self.range.1);
        if let Some(t) = self.fini {
            let addr = self.bias.wrapping_add(t.vaddr as usize);
            for i in (0..(t.size / 8) as usize).rev() {
                // SAFETY: the array was checked at load to lie in the image.
                let f: usize = unsafe { read(addr + i * 8) };
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
    pub placement: Placement,
}

fn page_start(addr: u64, page: u64) -> u64 {
    addr & !(page - 1)
}

/// Page-rounded end; the layout checked that segment ends round without overflow.
fn page_end(addr: u64, page: u64) -> u64 {
    (addr + page - 1) & !(page - 1)
}

/// Where the ELF's bytes can be read without touching the image: what a
/// segment that is not mapped from the file is copied from, and what the
/// `.eh_frame` check reads.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The ELF's bytes, in memory.
    Bytes(&'a [u8]),
    /// `fd` from `offset` on (`pread`).
    File { fd: BorrowedFd<'a>, offset: u64 },
}

impl Source<'_> {
    /// Fills `buf` from `at` of the ELF (a range inside it: `Layout`
    /// checked every segment's file range).
    fn read(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        match *self {
            Source::Bytes(bytes) => {
                let range = usize::try_from(at)
                    .ok()
                    .and_then(|at| bytes.get(at..at.checked_add(buf.len())?));
                let src = range.ok_or(Error::Truncated {
                    what: "file range",
                    offset: at,
                    size: buf.len() as u64,
                    len: bytes.len() as u64,
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            // `at` lies inside the range checked against the file size.
            Source::File { fd, offset } => read_exact_at(fd, buf, offset + at),
        }
    }

    /// `len` bytes from `at` of the ELF, as [`Source::read`].
    fn read_vec(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        match *self {
            Source::Bytes(_) => {
                let mut buf = vec![0u8; len];
                self.read(at, &mut buf)?;
                Ok(buf)
            }
            Source::File { fd, offset } => crate::map::read_vec_at(fd, len, offset + at),
        }
    }
}

/// Read and write: what copying into memory needs.
const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

/// How the segments were put in place: each segment's [`Placement`], and
/// the protection of every page (for the final protections to skip what is
/// already right).
struct Placed {
    placements: Vec<Placement>,
    /// The protection the span was reserved with.
    reserved: libc::c_int,
    /// Disjoint page ranges mapped over the reservation, with theirs.
    mapped: Vec<ProtectedRange>,
}

/// Reserves the span of `layout` (an ELF that lies at `offset` of `fd`) and
/// puts each segment in place: mapped from the file where its offset allows
/// (see [`ElfImage::load_fd`]), copied otherwise.
///
/// Runs of read-only segments that follow each other in the file as in
/// memory (headers, code, read-only data under `-z separate-code`) are
/// mapped by one `mmap`, read-only; the final protections then make the
/// code executable with one `mprotect`, which costs less than a mapping.
fn place_from_file(
    layout: &Layout,
    fd: BorrowedFd<'_>,
    offset: u64,
    source: Source<'_>,
    alone: bool,
) -> Result<(Mapping, Placed)> {
    let page = page_size() as u64;
    let loads = &layout.loads;
    // On a noexec mount the kernel refuses executable mappings of the file:
    // code is copied, the rest is still mapped.
    let exec_allowed = !crate::map::on_noexec_mount(fd);
    // Cannot overflow: the range was checked against the file size (or lies
    // in this process's memory) and every segment inside it.
    let file_offset = |seg: &Segment| offset + seg.offset;
    let zero_copy = |i: usize| {
        let seg = &loads[i];
        // Whether `seg` has its pages to itself: a page also holding part of
        // a neighbour (possible when the kernel's page is larger than the
        // link's max-page-size) needs both segments' bytes, so it is built
        // by copying.
        let own_pages = |other: Option<&Segment>, before: bool| match other {
            None => true,
            Some(o) if before => page_end(o.end(), page) <= page_start(seg.vaddr, page),
            Some(o) => page_end(seg.end(), page) <= page_start(o.vaddr, page),
        };
        seg.filesz > 0
            && (exec_allowed || !seg.executable())
            && file_offset(seg) % page == seg.vaddr % page
            && own_pages(i.checked_sub(1).and_then(|p| loads.get(p)), true)
            && own_pages(loads.get(i + 1), false)
    };
    let file_end = |seg: &Segment| page_end(seg.vaddr + seg.filesz, page);
    // The bss that shares the last file page must read as zero, so that
    // page is written (and becomes private).
    let bss_in_page =
        |seg: &Segment| seg.memsz > seg.filesz && file_end(seg) > seg.vaddr + seg.filesz;
    // Mapped read-only, never written by the loader.
    let read_only = |seg: &Segment| !seg.writable() && !bss_in_page(seg);

    // When every segment is mapped from the file, nothing is copied into
    // the reservation: reserved inaccessible, the gaps between segments
    // (64 KiB-aligned links have them) need no mprotect later.
    let reserved = if (0..loads.len()).all(zero_copy) {
        libc::PROT_NONE
    } else {
        RW
    };
    let mapping = reserve(layout, reserved)?;
    let bias = mapping.base().wrapping_sub(layout.span_start as usize);
    let mut placed = Placed {
        placements: Vec::with_capacity(loads.len()),
        reserved,
        mapped: Vec::new(),
    };
    let mut i = 0;
    while i < loads.len() {
        let seg = &loads[i];
        if !zero_copy(i) {
            let dest = bias.wrapping_add(seg.vaddr as usize);
            if alone {
                // As `load` does (see `populate_and_copy`).
                let start = page_start(seg.vaddr, page);
                let len = (file_end(seg) - start) as usize;
                mapping.populate(bias.wrapping_add(start as usize), len);
            }
            // SAFETY: the destination lies inside the reservation (the span
            // covers every segment's memory and filesz <= memsz), which is
            // read-write and referenced by nothing else yet.
            let buf =
                unsafe { std::slice::from_raw_parts_mut(dest as *mut u8, seg.filesz as usize) };
            source.read(seg.offset, buf)?;
            placed.placements.push(Placement::Copied);
            i += 1;
            continue;
        }
        // The run of segments one mapping covers: this one, and while it is
        // read-only, the read-only segments right after it in memory whose
        // file offsets keep the same distance to their addresses.
        let mut last = i;
        while read_only(&loads[last])
            && loads.get(last + 1).is_some_and(|next| {
                zero_copy(last + 1)
                    && read_only(next)
                    && page_start(next.vaddr, page) == file_end(&loads[last])
                    && file_offset(next).wrapping_sub(next.vaddr)
                        == file_offset(seg).wrapping_sub(seg.vaddr)
            })
        {
            last += 1;
        }
        let start = page_start(seg.vaddr, page);
        let end = file_end(&loads[last]);
        // A segment the loader never writes is mapped with its final
        // protection at once (never writable, so W^X holds), which spares
        // its mprotect later; a run of several is mapped read-only.
        let prot = if !read_only(seg) {
            RW
        } else if last == i {
            prot_of(seg.flags)
        } else {
            libc::PROT_READ
        };
        mapping.map_file(
            bias.wrapping_add(start as usize),
            (end - start) as usize,
            prot,
            fd,
            file_offset(seg) - (seg.vaddr - start),
        )?;
        // Bss pages past the file's are zero pages of the reservation: they
        // must be accessible before the final protections, since the loader
        // writes a writable segment's and may read tables in a read-only
        // one's (they read as zeros), unless the reservation already is.
        for s in &loads[i..=last] {
            let (data_end, bss_end) = (file_end(s), page_end(s.end(), page));
            if bss_end > data_end && reserved != RW {
                let len = (bss_end - data_end) as usize;
                mapping.protect(bias.wrapping_add(data_end as usize), len, RW)?;
                placed.mapped.push(ProtectedRange {
                    start: data_end,
                    end: bss_end,
                    prot: RW,
                });
            }
        }
        if bss_in_page(seg) {
            let zero_from = seg.vaddr + seg.filesz;
            let zero_to = end.min(seg.end());
            // SAFETY: inside the segment's pages, just mapped read-write.
            unsafe {
                std::ptr::write_bytes(
                    bias.wrapping_add(zero_from as usize) as *mut u8,
                    0,
                    (zero_to - zero_from) as usize,
                )
            };
        }
        placed.mapped.push(ProtectedRange { start, end, prot });
        placed
            .placements
            .extend((i..=last).map(|_| Placement::Mapped));
        i = last + 1;
    }
    Ok((mapping, placed))
}

/// Whether every page of `r` already has protection `r.prot`: where
/// `placed.mapped` says, else the reservation's.
fn already_protected(placed: &Placed, r: &ProtectedRange) -> bool {
    let mut at = r.start;
    while at < r.end {
        match placed.mapped.iter().find(|m| m.start <= at && at < m.end) {
            Some(m) if m.prot == r.prot => at = m.end,
            Some(_) => return false,
            None if placed.reserved == r.prot => {
                // Up to the next mapped range.
                at = placed
                    .mapped
                    .iter()
                    .filter(|m| m.start > at)
                    .map(|m| m.start)
                    .min()
                    .unwrap_or(r.end);
            }
            None => return false,
        }
    }
    true
}

/// One range for the whole image, aligned as its segments require.
fn reserve(layout: &Layout, prot: libc::c_int) -> Result<Mapping> {
    Mapping::reserve(
        layout.span() as usize,
        layout.align as usize,
        layout.span_start as usize,
        prot,
    )
}

/// Counts the loads in progress; see [`populate_and_copy`].
struct LoadInFlight {
    /// Whether no other load was in progress when this one started.
    alone: bool,
}

static LOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

impl LoadInFlight {
    fn enter() -> LoadInFlight {
        LoadInFlight {
            alone: LOADS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed) == 0,
        }
    }
}

impl Drop for LoadInFlight {
    fn drop(&mut self) {
        LOADS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies the segments' file bytes into the reservation. When no other load
/// is in progress (`alone`), the pages are pre-faulted just
/// before, one `madvise(MADV_POPULATE_WRITE)` per 256 KiB instead of a page
/// fault per page: less than half the cost of a large library's copy, and
/// the chunk just zeroed is still in cache when it is copied to. But the
/// `madvise` holds the process's mm lock while it allocates, which stalls
/// every other thread's `mmap`, `munmap` and `mprotect` meanwhile, whereas
/// page faults take per-VMA locks: with another load in progress, faulting
/// gives more loads per second (SQLite on two threads: 505 instead of 600
/// µs per load, the floor's 507). The bss needs nothing: anonymous memory
/// is zero.
fn populate_and_copy(
    mapping: &Mapping,
    bytes: &[u8],
    bias: usize,
    loads: &[Segment],
    page: u64,
    alone: bool,
) {
    const CHUNK: u64 = 256 * 1024;
    // The file pages of every segment, page-rounded; adjacent segments
    // (the usual layout) make one run, so a small library takes one call.
    let pages = |s: &Segment| {
        (
            page_start(s.vaddr, page),
            page_end(s.vaddr + s.filesz, page),
        )
    };
    let with_data = || loads.iter().filter(|s| s.filesz > 0);
    let mut runs: Vec<(u64, u64)> = Vec::with_capacity(loads.len());
    for (start, end) in with_data().map(pages) {
        match runs.last_mut() {
            Some(run) if start <= run.1 => run.1 = run.1.max(end),
            _ => runs.push((start, end)),
        }
    }
    for (run_start, run_end) in runs {
        let mut at = run_start;
        while at < run_end {
            let chunk_end = (at + CHUNK).min(run_end);
            if alone {
                mapping.populate(bias.wrapping_add(at as usize), (chunk_end - at) as usize);
            }
            for seg in with_data() {
                let (from, to) = (at.max(seg.vaddr), chunk_end.min(seg.vaddr + seg.filesz));
                if from >= to {
                    continue;
                }
                let src =
                    &bytes[(seg.offset + (from - seg.vaddr)) as usize..][..(to - from) as usize];
                // SAFETY: the destination lies inside the reservation (the
                // span covers every segment's memory and filesz <= memsz)
                // and is read-write; the source range was bounds-checked by
                // Layout::parse.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        bias.wrapping_add(from as usize) as *mut u8,
                        src.len(),
                    )
                };
            }
            at = chunk_end;
        }
    }
}

/// Checks an init/fini array's place and shape: (address, entries).
fn function_array(
    mem: &Memory<'_>,
    table: Option<Table>,
    name: &'static str,
) -> Result<Option<(usize, usize)>> {
    let Some(t) = table else { return Ok(None) };
    if t.size % 8 != 0 || t.vaddr % 8 != 0 {
        return Err(Error::BadTableSize {
            table: name,
            size: t.size,
            entsize: 8,
        });
    }
    let addr = mem.table(name, t.vaddr, t.size)?;
    Ok(Some((addr, (t.size / 8) as usize)))
}

/// Every entry of a relocated init/fini array must be this image's code
/// (0 and -1 are tolerated and skipped, as old toolchains emit them).
fn check_function_array(mem: &Memory<'_>, array: Option<(usize, usize)>) -> Result<()> {
    let Some((addr, count)) = array else {
        return Ok(());
    };
    for i in 0..count {
        // SAFETY: entry i of an array checked by `function_array`.
        let f: usize = unsafe { read(addr + i * 8) };
        if f == 0 || f == usize::MAX {
            continue;
        }
        mem.code(f.wrapping_sub(mem.bias) as u64, "init/fini array entry")?;
    }
    Ok(())
}

/// argc, argv and envp as glibc passes them to initialisers.
#[derive(Clone, Copy)]
struct ProcessArgs {
    argc: c_int,
    argv: *const *const c_char,
}

// SAFETY: the pointers refer to a process-lifetime allocation never mutated.
unsafe impl Send for ProcessArgs {}
// SAFETY: as above.
unsafe impl Sync for ProcessArgs {}

fn process_args() -> ProcessArgs {
    static ARGS: OnceLock<(Vec<CString>, Vec<usize>)> = OnceLock::new();
    let (strings, ptrs) = ARGS.get_or_init(|| {
        use std::os::unix::ffi::OsStringExt;
        let strings: Vec<CString> = std::env::args_os()
            .filter_map(|a| CString::new(a.into_vec()).ok())
            .collect();
        let mut ptrs: Vec<usize> = strings.iter().map(|s| s.as_ptr() as usize).collect();
        ptrs.push(0);
        (strings, ptrs)
    });
    ProcessArgs {
        argc: strings.len() as c_int,
        argv: ptrs.as_ptr().cast(),
    }
}

extern "C" {
    static environ: *const *const c_char;
}

/// Calls an initialiser as glibc does: `f(argc, argv, envp)`.
///
/// # Safety
/// `f` must be an initialiser of a loaded image.
unsafe fn call_init(f: usize, args: ProcessArgs) {
    // SAFETY: the caller guarantees `f` is an initialiser; extra arguments
    // are harmless to a `void (*)(void)` under the C calling convention.
    let init: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
        unsafe { std::mem::transmute(f) };
    // SAFETY: reading the process's environment pointer.
    let envp = unsafe { environ };
    init(args.argc, args.argv, envp);
}

/// Calls a finaliser: `f()`.
///
/// # Safety
/// `f` must be a finaliser of a loaded image.
unsafe fn call_fini(f: usize) {
    // SAFETY: the caller guarantees `f` is a finaliser.
    let fini: extern "C" fn() = unsafe { std::mem::transmute(f) };
    fini();
}
