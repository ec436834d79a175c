//! Load options: the resolver chain, the host-lookup policy, limits and the
//! system backend's strategy.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;

/// Upper bounds on what a file may make the loader do. Exceeding one is
/// [`crate::Error::LimitExceeded`]. The defaults are far above any real
/// library and far below what would exhaust the machine.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of address space the image may span (all `PT_LOAD`s).
    pub max_span: u64,
    /// Program headers.
    pub max_program_headers: u64,
    /// Relocations of all kinds together (RELR words count one each).
    pub max_relocations: u64,
    /// Dynamic symbols. Relocation allocates a slot per symbol, and a
    /// symbol table can lie in zero-filled memory that costs the file
    /// nothing, so this bounds memory a small file can make the loader use.
    pub max_symbols: u64,
    /// Bytes of thread-local storage (`PT_TLS` memory size).
    pub max_tls_size: u64,
    /// `DT_NEEDED` entries.
    pub max_needed: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_span: 4 << 30,
            max_program_headers: 4096,
            max_relocations: 64 << 20,
            // Large C++ libraries export some 10^5 symbols.
            max_symbols: 1 << 20,
            max_tls_size: 64 << 20,
            max_needed: 256,
        }
    }
}

/// How [`crate::SystemImage`] hands the library to the platform loader.
///
/// `Auto` takes the best path the platform has and falls back in order;
/// every other variant forces one path, and a path the platform or the
/// input cannot take is an [`crate::Error::Unsupported`], never a silent
/// substitute. [`crate::SystemImage::strategy`] reports what was used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemStrategy {
    /// Linux: the caller's file itself for a whole-file `load_fd`, else a
    /// sealed memfd, else a temporary file. Android: `android_dlopen_ext`
    /// (the caller's file at a page-aligned offset, else a memfd), else a
    /// temporary file. FreeBSD: `fdlopen` (the caller's whole file, else a
    /// memfd), else a temporary file.
    #[default]
    Auto,
    /// Linux: `dlopen("/proc/self/fd/N")` of a duplicate of the caller's
    /// descriptor; only for [`crate::SystemImage::load_fd`] of a whole file
    /// (offset 0, length = file size).
    ProcFd,
    /// A sealed `memfd_create` copy: `dlopen("/proc/self/fd/N")` on Linux,
    /// `android_dlopen_ext` on Android, `fdlopen` on FreeBSD.
    Memfd,
    /// Android: `android_dlopen_ext` with `ANDROID_DLEXT_USE_LIBRARY_FD`:
    /// the caller's descriptor at a page-aligned offset, otherwise (bytes,
    /// unaligned offset) a sealed memfd copy.
    AndroidDlopenExt,
    /// FreeBSD: `fdlopen` of the caller's descriptor for a whole file,
    /// otherwise of a sealed memfd copy.
    Fdlopen,
    /// A temporary file in the given directory (the last resort): unnamed
    /// (`O_TMPFILE`) where the file system allows, otherwise uniquely named
    /// and unlinked as soon as `dlopen` returned.
    TempFile(PathBuf),
}

/// Options for loading an image; build with [`Options::new`] and chain.
///
/// ```no_run
/// # fn f(bytes: &[u8]) -> Result<(), memdl::Error> {
/// extern "C" fn host_log(x: i32) -> i32 { x }
/// let options = memdl::Options::new()
///     .symbol("host_log", host_log as *const std::ffi::c_void)
///     .deny_host_lookups(); // imports may only come from `symbol`
/// // SAFETY: the library is trusted to run with only `host_log` bound.
/// let img = unsafe { options.load(bytes)? };
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub(crate) host_symbols: HashMap<Vec<u8>, usize>,
    pub(crate) deny_host_lookups: bool,
    pub(crate) limits: Limits,
    pub(crate) system_strategy: SystemStrategy,
    pub(crate) origin: Option<PathBuf>,
    pub(crate) dependencies: Option<DependencyProvider>,
    pub(crate) debug: crate::runtime::debug::DebugOptions,
}

/// A `DT_NEEDED` library the caller supplies itself (see
/// [`Options::dependencies`]).
#[derive(Debug)]
pub enum Dependency {
    /// The library's bytes, loaded as by [`crate::ElfImage::load`].
    Bytes(Vec<u8>),
    /// `len` bytes at `offset` of a file, loaded as by
    /// [`crate::ElfImage::load_fd`] (the file must not change while loaded).
    File {
        /// The file (a container holding the library, or the library).
        file: std::sync::Arc<std::fs::File>,
        /// Where the library starts in it.
        offset: u64,
        /// Its length.
        len: u64,
    },
}

type ProviderFn = dyn Fn(&str) -> Option<Dependency> + Send + Sync;

/// The caller's answer to "where is `DT_NEEDED` library X?".
#[derive(Clone)]
pub(crate) struct DependencyProvider(pub(crate) std::sync::Arc<ProviderFn>);

impl std::fmt::Debug for DependencyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DependencyProvider")
    }
}

impl Options {
    /// Default options: no host symbols, host lookups allowed, default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Provides `name` to the image's imports at `addr`. Host symbols are
    /// looked up first, before the process's global scope.
    pub fn symbol(mut self, name: impl AsRef<[u8]>, addr: *const c_void) -> Self {
        self.host_symbols
            .insert(name.as_ref().to_vec(), addr as usize);
        self
    }

    /// Imports may only be satisfied by [`Options::symbol`]: no lookups in
    /// the process's global scope and no `DT_NEEDED` libraries are opened.
    /// A library importing anything else is refused
    /// ([`crate::Error::UnresolvedSymbols`], naming every such import)
    /// before any of its code runs.
    ///
    /// Of memdl's own loader services only those that act on the image's
    /// own state stay available (the table in `runtime/services.rs` says
    /// which): `__tls_get_addr`, `__cxa_thread_atexit`,
    /// `__cxa_thread_atexit_impl` and `dlerror`. `dlsym` (which would find
    /// any host symbol), `dladdr` and `dl_iterate_phdr` (which reveal the
    /// host's libraries, and through them every host function) are not:
    /// provide them with [`Options::symbol`] if the image may have them.
    pub fn deny_host_lookups(mut self) -> Self {
        self.deny_host_lookups = true;
        self
    }

    /// The directory `$ORIGIN` stands for in the image's `DT_RUNPATH` and
    /// `DT_RPATH`. Without it, an image loaded from a descriptor that
    /// names a file gets that file's directory, and bytes get none (search
    /// path entries with `$ORIGIN` are then skipped).
    pub fn origin(mut self, dir: impl Into<PathBuf>) -> Self {
        self.origin = Some(dir.into());
        self
    }

    /// Supplies `DT_NEEDED` libraries from memory: for each needed name
    /// (say `libkernel_common.so`) `provider` is asked first; a
    /// [`Dependency`] it returns is loaded by memdl's own loader (under
    /// these options, so its own needs are asked for too), and `None`
    /// sends the name on to the usual search. A container of libraries that
    /// need one another thus loads from memory alone. Within one load each
    /// supplied library is loaded once, however many of the libraries need
    /// it, and they are dropped after the libraries that need them.
    ///
    /// ```no_run
    /// # fn f(kernel: &[u8], common: Vec<u8>) -> Result<(), memdl::Error> {
    /// let options = memdl::Options::new().dependencies(move |name| {
    ///     (name == "libcommon.so").then(|| memdl::Dependency::Bytes(common.clone()))
    /// });
    /// // SAFETY: both libraries are trusted (their initialisers run).
    /// let img = unsafe { options.load(kernel)? };
    /// # Ok(()) }
    /// ```
    pub fn dependencies(
        mut self,
        provider: impl Fn(&str) -> Option<Dependency> + Send + Sync + 'static,
    ) -> Self {
        self.dependencies = Some(DependencyProvider(std::sync::Arc::new(provider)));
        self
    }

    /// Whether [`crate::ElfImage`] registers each image with debuggers
    /// through the GDB JIT interface (default: on). It costs a `.symtab`
    /// entry per exported symbol: 15–25 µs for a small library's first
    /// load, 1–2 ms for one exporting 40,000 symbols (see the README's
    /// "Debugging and profiling").
    pub fn debugger_registration(mut self, on: bool) -> Self {
        self.debug.gdb = on;
        self
    }

    /// How much of what lies outside the loaded segments the debuggers'
    /// view carries: the file's `.symtab` (local functions) with its
    /// strings, and its DWARF, each only if at most `bytes` long (default
    /// 4 MiB). Both are read from the file at load; beyond the limit the
    /// debugger sees the exported symbols and unwinds through `.eh_frame`,
    /// as for a stripped library.
    ///
    /// ```
    /// // A large unstripped plugin, debugged with its local symbols.
    /// let options = memdl::Options::new().debugger_file_info_limit(256 << 20);
    /// # let _ = options;
    /// ```
    pub fn debugger_file_info_limit(mut self, bytes: u64) -> Self {
        self.debug.file_info_limit = bytes;
        self
    }

    /// Whether [`crate::ElfImage`] appends the image's functions to
    /// `/tmp/perf-<pid>.map` for Linux perf. Without this call, the
    /// environment decides: `MEMDL_PERF_MAP=1` turns it on.
    pub fn perf_map(mut self, on: bool) -> Self {
        self.debug.perf_map = Some(on);
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Chooses how the system backend hands bytes to the platform loader.
    pub fn system_strategy(mut self, strategy: SystemStrategy) -> Self {
        self.system_strategy = strategy;
        self
    }

    /// Loads `bytes` with the custom loader under these options.
    ///
    /// # Safety
    /// As [`crate::ElfImage::load`].
    pub unsafe fn load(&self, bytes: &[u8]) -> crate::Result<crate::ElfImage> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { crate::ElfImage::load_with(bytes, self) }
    }

    /// Loads `bytes` with the system backend under these options.
    ///
    /// # Safety
    /// As [`crate::SystemImage::load`].
    pub unsafe fn load_system(&self, bytes: &[u8]) -> crate::Result<crate::SystemImage> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { crate::SystemImage::load_with(bytes, self) }
    }
}
