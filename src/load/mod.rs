//! The load pipeline: [`ElfImage::load`] and its siblings, one named
//! function per phase, reading top to bottom like the steps it performs:
//!
//! parse → reserve → place (copy / map from the file) → read the dynamic
//! tables → bind imports → relocate → protect → ifuncs and RELRO → register
//! frames → register with debuggers → publish → init.
//!
//! Everything acquired along the way is owned by a value whose drop
//! releases it, so an error at any step leaves nothing mapped and nothing
//! open. What a loaded image is (and what stays once loading is done) is
//! [`crate::runtime`]'s; this module uses it, never the reverse.

mod helper;
mod place;
pub(crate) mod reloc;
pub(crate) mod resolve;
mod scope;
pub(crate) mod search;

use std::ffi::CString;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use goblin::elf::dynamic::{DF_1_NODELETE, DF_STATIC_TLS};

use crate::elf::dynamic::{Dynamic, Table};
use crate::elf::symbols::SymbolTable;
use crate::elf::view::{Array, Targets};
use crate::elf::{Layout, Memory};
use crate::error::{Error, Result};
use crate::map::{
    checked_file_range, page_size, protection_plan, read_exact_at, with_read_only, Mapping,
};
use crate::options::Options;
use crate::runtime::debug::{DebugRegistration, Description, ImageView};
use crate::runtime::image::{ElfImage, Linked};
use crate::runtime::init::{call_init, process_args};
use crate::runtime::needed::NeededLibrary;
use crate::runtime::tls::{ImageTls, OwnTls, TlsModule};
use crate::runtime::unwind::{self, CheckedFrames, FrameRegistration};
use crate::symbol::lossy;
use helper::HelperThread;
use place::{already_protected, place_copies, place_from_file, LoadInFlight, Placed, Source};
use reloc::{Deferred, Relocations};
use resolve::Resolver;
use search::SearchPaths;

impl ElfImage {
    /// Loads an ELF shared object from `bytes` with default [`Options`].
    ///
    /// The segments are copied; `bytes` may be dropped afterwards.
    ///
    /// Every load runs on the calling thread, but for one part of a big
    /// image's (an `.eh_frame` of 10,000 FDEs or more, as libcrypto's or
    /// LLVM's): checking that section and building the debuggers'
    /// description of the image run on a short-lived helper thread while
    /// the image is relocated. The helper is started with every signal
    /// blocked, on another CPU than the caller's, and joined before the
    /// load returns; what it has not begun by the time relocation is done,
    /// the calling thread does (all of it when the caller may use one CPU
    /// only or no thread can be started).
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
        let layout = Layout::parse(bytes, page_size() as u64, &options.limits)?;
        // Counted until the load returns (see `populate_and_copy`).
        let in_flight = LoadInFlight::enter();
        let below = debug_room(&layout, options);
        let (mapping, placed) = place_copies(&layout, bytes, in_flight.alone, below)?;
        link(mapping, layout, placed, Source::Bytes(bytes), options)
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
        let source = Source::File { fd, offset, len };
        let in_flight = LoadInFlight::enter();
        let below = debug_room(&layout, options);
        let (mapping, placed) =
            place_from_file(&layout, fd, offset, source, in_flight.alone, below)?;
        link(mapping, layout, placed, source, options)
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
            debug_room(&layout, options),
        )?;
        drop(backing);
        link(mapping, layout, placed, source, options)
    }
}

/// Address space reserved under the image for the debuggers' description
/// of it (see `runtime::debug`): reserved, not used, unless registration
/// is on.
fn debug_room(layout: &Layout, options: &Options) -> usize {
    crate::runtime::debug::room_below(layout.span(), &options.debug)
}

/// A load whose segments are in place: the state every later phase reads.
struct Load<'a> {
    layout: Layout,
    mapping: Mapping,
    placed: Placed,
    /// Where the ELF's bytes can be read again.
    source: Source<'a>,
    options: &'a Options,
    /// The load bias: runtime address = `bias + vaddr`.
    bias: usize,
}

/// What the dynamic section names, read and checked before anything of
/// the library runs or any import is looked up.
struct Tables {
    dynamic: Dynamic,
    symbols: SymbolTable,
    relocations: Relocations,
    /// `DT_INIT`'s runtime address.
    init: Option<usize>,
    /// `DT_FINI`'s address in the file's terms.
    fini: Option<u64>,
    init_array: Option<Array<usize>>,
    fini_array: Option<Array<usize>>,
}

/// What [`Load::complete`] leaves for the image to keep.
struct Completed {
    frames: Option<FrameRegistration>,
    debug: Option<DebugRegistration>,
    tls: ImageTls,
    needed: Vec<NeededLibrary>,
}

/// Images whose `.eh_frame` has at least this many FDEs are described (the
/// section checked, the debuggers' object built) on a helper thread while
/// the image is relocated. Starting a thread costs a fresh process 70 to
/// 150 µs, and the two threads slow each other down: measured (first
/// loads, two vCPUs, the helper kept off the loading thread's CPU), it
/// pays for the LLVMs (161,000 FDEs: Rust's libLLVM 11.7 -> 8.7 ms against
/// the helper before, which often began 3 ms late on the loading thread's
/// CPU; 98,000: Debian's libLLVM-15) and for libcrypto (10,900 FDEs:
/// 5-10% faster), not for x265 (5,200 FDEs: 24% slower), sqlite3 or
/// libxml2 (2,500: 12-50% slower). libstdc++ (4,900) gained 20% in one
/// run: the FDE count is a rough guide to what the helper saves. With the
/// other CPU kept busy (a spinning process pinned to it), libcrypto was
/// 6% slower than without a helper, Rust's libLLVM still 6% faster.
const DESCRIBE_ASIDE_FDES: u32 = 10_000;

/// The helper thread describing a big image, and what it may claim.
struct Helper<'a> {
    thread: HelperThread<'a, Parts>,
    claims: &'a Claims,
}

/// Which parts of describing an image (see [`Load::describe`]) a thread
/// has begun: each is done once, by whichever thread claims it first.
#[derive(Default)]
struct Claims {
    frames: AtomicBool,
    debug: AtomicBool,
}

impl Claims {
    /// Claims a part; true if no thread had.
    fn take(part: &AtomicBool) -> bool {
        // Who does a part is all this decides: the result travels through
        // the join, which orders it.
        !part.swap(true, Ordering::Relaxed)
    }
}

/// The parts a helper did (`None`: not claimed by it).
#[derive(Default)]
struct Parts {
    frames: Option<Option<CheckedFrames>>,
    debug: Option<Option<Description>>,
}

/// What tells the unwinder and debuggers of an image, built before either
/// is told (see [`Load::describe`]).
struct Descriptions {
    frames: Option<CheckedFrames>,
    debug: Option<Description>,
}

/// Everything after the segments are in place: one call per phase.
fn link(
    mapping: Mapping,
    layout: Layout,
    placed: Placed,
    source: Source<'_>,
    options: &Options,
) -> Result<ElfImage> {
    let bias = mapping.base().wrapping_sub(layout.span_start as usize);
    let load = Load {
        layout,
        mapping,
        placed,
        source,
        options,
        bias,
    };
    let tables = load.read_tables()?;
    // A big image's descriptions are built on a helper thread while its
    // imports are bound and relocations written (they read only what
    // relocation does not change); other images' once relocated. The
    // helper's work comes in two parts, each claimed by one thread.
    let completed = match load.describe_aside() {
        true => {
            let claims = Claims::default();
            let thread = HelperThread::spawn(|| load.describe_claimed(&claims, &tables.symbols));
            #[cfg(feature = "test-hooks")]
            if thread.is_some() {
                crate::hooks::DESCRIBED_ASIDE.fetch_add(1, Ordering::Relaxed);
            }
            let helper = thread.map(|thread| Helper {
                thread,
                claims: &claims,
            });
            load.complete(&tables, helper)
        }
        false => load.complete(&tables, None),
    }?;
    let (init, init_array) = (tables.init, tables.init_array);
    let image = load.publish(tables, completed);
    run_initialisers(&image, init, init_array);
    Ok(image)
}

impl Load<'_> {
    /// The image's memory, through which its tables are read.
    fn memory(&self) -> Memory<'_> {
        // SAFETY: every segment was placed at `bias + vaddr` in `mapping`,
        // readable (read-write, or mapped with its final protection when
        // read-only); the views read through it end with the load or live
        // in the runtime image, which owns `mapping` and drops them first.
        unsafe { Memory::new(self.bias, &self.layout.loads) }
    }

    /// Where relocations write.
    fn targets(&self) -> Targets<'_> {
        // SAFETY: the writable segments are mapped read-write, and nothing
        // but relocation and the ifunc phase touches them while the targets
        // live (`link` drops them before sealing RELRO; the final
        // protections keep writable segments writable).
        unsafe { Targets::new(self.bias, &self.layout.loads) }
    }

    /// Binds the imports, applies the relocations and the final
    /// protections, and tells the unwinder and debuggers of the image
    /// (described by `helper`, or here): the image is complete but for its
    /// initialisers.
    fn complete(&self, tables: &Tables, helper: Option<Helper<'_>>) -> Result<Completed> {
        let resolver = self.bind_imports(tables)?;
        let mut tls = self.register_tls(tables)?;
        let targets = self.targets();
        let deferred = self.relocate(&targets, tables, &resolver, &mut tls)?;
        let needed = resolver.into_needed();
        // Without ifunc resolvers to run first, RELRO is sealed in the same
        // pass as the final protections (usually merged with the read-only
        // segment before it: one mprotect fewer); otherwise after them.
        let relro = self.relro_pages();
        let (relro_now, relro_after_ifuncs) = match deferred.is_empty() {
            true => (relro, None),
            false => (None, relro),
        };
        self.protect(relro_now)?;
        run_ifuncs(&deferred);
        drop(targets);
        if let Some(pages) = relro_after_ifuncs {
            self.seal_relro(pages)?;
        }
        let descriptions = match helper {
            Some(helper) => self.describe_with(helper, &tables.symbols),
            None => self.describe(&tables.symbols),
        };
        // The unwinder and debuggers learn of the image once it is final
        // and before any of its initialisers runs (a breakpoint in a
        // constructor is hit).
        let frames = descriptions.frames.and_then(CheckedFrames::register);
        let debug = descriptions.debug.map(Description::register);
        Ok(Completed {
            frames,
            debug,
            tls,
            needed,
        })
    }

    /// Reads the dynamic section and the tables it names: symbols (with
    /// hash and version tables), relocations, initialisers and finalisers.
    fn read_tables(&self) -> Result<Tables> {
        let (mem, limits) = (self.memory(), &self.options.limits);
        let (vaddr, size) = self.layout.dynamic;
        let dynamic = Dynamic::parse(&mem, vaddr, size, limits.max_needed)?;
        if dynamic.textrel {
            return Err(Error::TextRelocations);
        }
        let mut symbols = SymbolTable::parse(&mem, &dynamic, limits)?;
        let relocations = Relocations::parse(&mem, &dynamic, limits)?;
        if symbols.size_unknown() {
            symbols.cover(&mem, relocations.max_symbol().saturating_add(1), limits)?;
        }
        let init = dynamic.init.map(|v| mem.code(v, "DT_INIT")).transpose()?;
        let fini = dynamic
            .fini
            .map(|v| mem.code(v, "DT_FINI").map(|_| v))
            .transpose()?;
        let init_array = function_array(&mem, dynamic.init_array, "DT_INIT_ARRAY")?;
        let fini_array = function_array(&mem, dynamic.fini_array, "DT_FINI_ARRAY")?;
        Ok(Tables {
            dynamic,
            symbols,
            relocations,
            init,
            fini,
            init_array,
            fini_array,
        })
    }

    /// The resolver chain imports are bound through; opens the `DT_NEEDED`
    /// libraries (unless host lookups are denied), found through the
    /// image's `DT_RPATH`/`DT_RUNPATH` (see `search.rs`).
    fn bind_imports<'t>(&'t self, tables: &'t Tables) -> Result<Resolver<'t>> {
        let strings = &tables.symbols.strings;
        let needed_names = tables
            .dynamic
            .needed
            .iter()
            .map(|&o| strings.get(o))
            .collect::<Result<Vec<_>>>()?;
        let path_list = |offset: Option<u64>| offset.map(|o| strings.get(o)).transpose();
        let (runpath, rpath) = (
            path_list(tables.dynamic.runpath)?,
            path_list(tables.dynamic.rpath)?,
        );
        // `$ORIGIN` is only worked out when a search path uses it.
        let uses_origin = [runpath, rpath]
            .iter()
            .flatten()
            .any(|p| p.windows(7).any(|w| w == b"$ORIGIN" || w == b"{ORIGIN"));
        let origin = match (&self.options.origin, self.source) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Source::File { fd, .. }) if uses_origin && !needed_names.is_empty() => {
                search::origin_of_fd(fd)
            }
            _ => None,
        };
        let search = SearchPaths {
            origin: origin.as_deref(),
            runpath,
            rpath,
        };
        // Names a lookup may find nowhere: weak imports, and the unique
        // symbols the image defines, each first looked for in the global
        // scope (`unique::bind`), where a C++ library loaded first finds
        // none. Unique symbols are looked for in a file marked as using
        // GNU extensions only (linkers mark those that have them): the
        // scan costs every other file for nothing.
        let symbols = &tables.symbols;
        let mut maybe_nowhere: Vec<&[u8]> = symbols.weak_imports().collect();
        if self.layout.gnu_osabi {
            maybe_nowhere.extend(symbols.unique_definitions());
        }
        Resolver::new(self.options, &needed_names, &search, &maybe_nowhere)
    }

    /// The image's thread-local storage (`PT_TLS`): a module of memdl's
    /// dynamic TLS, or (initial-exec code) a block the system loader places
    /// in static TLS once the image is relocated. Initial-exec code is
    /// `DF_STATIC_TLS`, or, where the linker does not set that flag (GNU
    /// ld for aarch64), a thread-pointer-offset relocation against the
    /// image's own block.
    fn register_tls(&self, tables: &Tables) -> Result<ImageTls> {
        let mut tls = ImageTls::default();
        let Some(t) = self.layout.tls else {
            return Ok(tls);
        };
        let data = self.memory().table("PT_TLS", t.vaddr, t.filesz)?;
        let initial_exec = tables.dynamic.flags & DF_STATIC_TLS != 0
            || tables.relocations.offsets_own_tls(&tables.symbols);
        // An empty block needs no static space: nothing to place.
        if initial_exec && t.memsz > 0 {
            tls.static_pending = true;
        } else {
            let module = TlsModule::register(data.addr(), t.filesz, t.memsz, t.align, t.vaddr)?;
            tls.own = Some(OwnTls::Dynamic(module));
        }
        Ok(tls)
    }

    /// Applies every relocation that needs none of the library's code;
    /// returns those that wait for an ifunc resolver. A static TLS block is
    /// placed now, from the relocated template (the system loader copies
    /// it into every thread), and the relocations that need it written.
    /// The init/fini arrays hold relocated pointers afterwards: all must be
    /// the image's code.
    fn relocate<'t>(
        &self,
        targets: &'t Targets<'_>,
        tables: &Tables,
        resolver: &Resolver<'_>,
        tls: &mut ImageTls,
    ) -> Result<Vec<Deferred<'t>>> {
        let mem = self.memory();
        // RELRO holds what relocation writes (vtables, GOT): nearly every
        // page of a mapped one becomes a private copy. One madvise makes
        // them all at once instead of a write fault each (C++ libraries:
        // hundreds). Copied segments were populated when copied.
        if let (Some((start, end)), Some((relro, _))) = (self.relro_pages(), self.layout.relro) {
            let mapped = self
                .layout
                .loads
                .iter()
                .zip(&self.placed.placements)
                .any(|(s, p)| {
                    *p == crate::runtime::image::Placement::Mapped && s.contains(relro, 1)
                });
            if mapped {
                let len = (end - start) as usize;
                self.mapping
                    .populate(self.bias.wrapping_add(start as usize), len);
            }
        }
        let applied = tables
            .relocations
            .apply(&mem, targets, &tables.symbols, resolver, tls)?;
        if let (true, Some(t)) = (tls.static_pending, self.layout.tls) {
            let template = mem.table("PT_TLS", t.vaddr, t.filesz)?;
            let first_byte = t.vaddr % t.align.max(1);
            let block = crate::runtime::tls_static::StaticTlsBlock::new(
                template.bytes(),
                t.memsz,
                t.align,
                first_byte,
            )?;
            let (module, tp_offset) = (block.module, block.tp_offset);
            tls.own = Some(OwnTls::Static(block));
            tls.static_pending = false;
            reloc::apply_static_tls(&applied.static_tls, tls, module, tp_offset);
        }
        check_function_array(&mem, tables.init_array)?;
        check_function_array(&mem, tables.fini_array)?;
        Ok(applied.ifuncs)
    }

    /// `PT_GNU_RELRO`'s whole pages, if it has any.
    fn relro_pages(&self) -> Option<(u64, u64)> {
        let page = page_size() as u64;
        self.layout
            .relro
            .map(|(addr, size)| (addr & !(page - 1), (addr + size) & !(page - 1)))
            .filter(|(start, end)| end > start)
    }

    /// The final protections: code becomes executable (never while
    /// writable), writable segments stay writable but for `relro`, sealed
    /// read-only in the same pass when given.
    fn protect(&self, relro: Option<(u64, u64)>) -> Result<()> {
        let mut plan = protection_plan(&self.layout, page_size() as u64)?;
        if let Some((start, end)) = relro {
            plan = with_read_only(&plan, start, end);
        }
        for r in &plan {
            let start = self.bias.wrapping_add(r.start as usize);
            let len = (r.end - r.start) as usize;
            if r.prot & libc::PROT_EXEC != 0 {
                crate::arch::flush_icache(start, len);
            }
            if !already_protected(&self.placed, self.mapping.reserved_prot(), r) {
                self.mapping.protect(start, len, r.prot)?;
            }
        }
        Ok(())
    }

    /// Seals RELRO's pages `[start, end)` read-only, after the ifunc
    /// resolvers.
    fn seal_relro(&self, (start, end): (u64, u64)) -> Result<()> {
        self.mapping.protect(
            self.bias.wrapping_add(start as usize),
            (end - start) as usize,
            libc::PROT_READ,
        )
    }

    /// Whether the image's descriptions are worth building on a helper
    /// thread (its `.eh_frame` has [`DESCRIBE_ASIDE_FDES`] FDEs or more) and
    /// can be (the section is fixed before relocation).
    fn describe_aside(&self) -> bool {
        let Some(hdr) = self.layout.eh_frame_hdr else {
            return false;
        };
        let mem = self.memory();
        #[cfg(feature = "test-hooks")]
        let from =
            match crate::hooks::DESCRIBE_ASIDE_FROM.load(std::sync::atomic::Ordering::Relaxed) {
                u64::MAX => DESCRIBE_ASIDE_FDES,
                n => n as u32,
            };
        #[cfg(not(feature = "test-hooks"))]
        let from = DESCRIBE_ASIDE_FDES;
        unwind::fde_count(&mem, hdr).is_some_and(|n| n >= from)
            && unwind::fixed_before_relocation(&mem, hdr)
    }

    /// The image's `.eh_frame`, checked for the unwinder, and its
    /// description for debuggers and profilers (as the options ask).
    ///
    /// The section is checked through the image's mapping, where libgcc
    /// will read it: a mapped segment is the file's bytes, which the caller
    /// keeps unchanged while the image lives. (Reading it from the file
    /// instead, as memdl did, cost a `pread` into fresh anonymous memory:
    /// for libLLVM's 7.7 MB section 2,000 page faults and a copy, 10 ms of
    /// a 22 ms first load; for a small one two system calls and a copy on
    /// top of the fault `__register_frame` takes anyway, reading the
    /// section's first word through the mapping.)
    fn describe(&self, symbols: &SymbolTable) -> Descriptions {
        Descriptions {
            frames: self.check_frames(),
            debug: self.describe_for_debuggers(symbols),
        }
    }

    /// The image's `.eh_frame`, checked for the unwinder (see
    /// [`Load::describe`]).
    fn check_frames(&self) -> Option<CheckedFrames> {
        let hdr = self.layout.eh_frame_hdr?;
        CheckedFrames::new(&self.memory(), hdr)
    }

    /// The helper's side of [`Load::describe_with`]: the parts nobody has
    /// claimed yet, the frames first.
    fn describe_claimed(&self, claims: &Claims, symbols: &SymbolTable) -> Parts {
        #[cfg(feature = "test-hooks")]
        crate::hooks::helper_waits(&claims.debug);
        Parts {
            frames: Claims::take(&claims.frames).then(|| self.check_frames()),
            debug: Claims::take(&claims.debug).then(|| self.describe_for_debuggers(symbols)),
        }
    }

    /// [`Load::describe`], shared with `helper`: the loading thread, done
    /// relocating, does what the helper has not begun (the debuggers' part
    /// first: the helper begins with the frames), then takes the helper's
    /// parts. The helper may start late (the scheduler can queue a new
    /// thread behind its creator for a few milliseconds): its parts are
    /// then done here and it finds nothing left. A part it claimed but did
    /// not finish (it panicked) is done here too.
    fn describe_with(&self, helper: Helper<'_>, symbols: &SymbolTable) -> Descriptions {
        let claims = helper.claims;
        let debug = Claims::take(&claims.debug).then(|| self.describe_for_debuggers(symbols));
        let frames = Claims::take(&claims.frames).then(|| self.check_frames());
        let theirs = helper.thread.join().unwrap_or_default();
        Descriptions {
            frames: frames
                .or(theirs.frames)
                .unwrap_or_else(|| self.check_frames()),
            debug: debug
                .or(theirs.debug)
                .unwrap_or_else(|| self.describe_for_debuggers(symbols)),
        }
    }

    /// The image's description for debuggers and profilers, as the options
    /// ask (see [`Load::describe`]).
    fn describe_for_debuggers(&self, symbols: &SymbolTable) -> Option<Description> {
        let source = self.source;
        let view = ImageView {
            mem: self.memory(),
            eh_frame_hdr: self.layout.eh_frame_hdr,
            dynsym: symbols,
            file_len: source.len(),
            read_file: &|at, len, out| source.append(at, len, out),
            mapping: &self.mapping,
            section_table: self.layout.section_table,
        };
        crate::runtime::debug::describe(&view, &self.options.debug)
    }

    /// Hands the image to the runtime, which makes it visible to `dladdr`,
    /// `dl_iterate_phdr` and `find_symbol` before its initialisers run.
    fn publish(self, tables: Tables, completed: Completed) -> ElfImage {
        let Completed {
            frames,
            debug,
            tls,
            needed,
        } = completed;
        let start = self.bias.wrapping_add(self.layout.span_start as usize);
        let soname = tables
            .dynamic
            .soname
            .and_then(|o| tables.symbols.strings.get(o).ok())
            .map(lossy);
        let name = soname
            .clone()
            .unwrap_or_else(|| format!("memdl:{start:#x}"));
        ElfImage::publish(Linked {
            bias: self.bias,
            range: (start, self.bias.wrapping_add(self.layout.span_end as usize)),
            name: CString::new(name).unwrap_or_default(),
            soname,
            loads: self.layout.loads,
            phdrs: self.layout.phdrs,
            placements: self.placed.placements,
            symbols: tables.symbols,
            fini_array: tables.fini_array,
            fini: tables.fini,
            nodelete: tables.dynamic.flags_1 & DF_1_NODELETE != 0,
            debug,
            frames,
            tls,
            mapping: self.mapping,
            needed,
        })
    }
}

/// From here on the library's own code runs: its ifunc resolvers, while
/// RELRO is still writable.
fn run_ifuncs(deferred: &[Deferred<'_>]) {
    for d in deferred {
        // SAFETY: the image's code is executable now (final protections),
        // and the resolver was checked to lie in an executable segment of
        // it; dlopen calls resolvers the same way.
        let value = unsafe { crate::arch::call_ifunc_resolver(d.resolver) } as u64;
        d.target.write(0, value.wrapping_add(d.addend));
    }
}

/// Initialisers: `DT_INIT`, then `DT_INIT_ARRAY` in order.
fn run_initialisers(image: &ElfImage, init: Option<usize>, init_array: Option<Array<usize>>) {
    let args = process_args();
    if let Some(f) = init {
        // SAFETY: checked to lie in an executable segment; the image is
        // fully relocated and protected, as its initialisers expect.
        unsafe { call_init(f, args) };
    }
    for f in init_array.iter().flat_map(Array::iter) {
        if image.is_code(f) {
            // SAFETY: as for DT_INIT.
            unsafe { call_init(f, args) };
        }
    }
}

/// Checks an init/fini array's place and shape.
fn function_array(
    mem: &Memory<'_>,
    table: Option<Table>,
    name: &'static str,
) -> Result<Option<Array<usize>>> {
    let Some(t) = table else { return Ok(None) };
    if t.size % 8 != 0 || t.vaddr % 8 != 0 {
        return Err(Error::BadTableSize {
            table: name,
            size: t.size,
            entsize: 8,
        });
    }
    Ok(Some(mem.table(name, t.vaddr, t.size)?.array()))
}

/// Every entry of a relocated init/fini array must be this image's code
/// (0 and -1 are tolerated and skipped, as old toolchains emit them).
fn check_function_array(mem: &Memory<'_>, array: Option<Array<usize>>) -> Result<()> {
    for f in array.iter().flat_map(Array::iter) {
        if f == 0 || f == usize::MAX {
            continue;
        }
        mem.code(f.wrapping_sub(mem.bias()) as u64, "init/fini array entry")?;
    }
    Ok(())
}
