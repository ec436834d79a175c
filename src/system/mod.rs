//! [`SystemImage`]: the platform's own loader, fed from memory without a
//! file on disk.
//!
//! Layout: this module owns the type and chooses a strategy; `linux` makes
//! memfds, `tempfile` the last-resort temporary files, `dl` talks to the
//! dynamic loader. Android (`android_dlopen_ext` with
//! `ANDROID_DLEXT_USE_LIBRARY_FD`) and FreeBSD (`fdlopen`) are meant to slot
//! in as further strategies next to `linux`.
//!
//! Two properties of glibc shape the code (see the design notes):
//!
//! * It recognises an already loaded library by the *path* passed to
//!   `dlopen`. The memfd therefore stays open for the image's lifetime and
//!   is closed only after `dlclose`, so its `/proc/self/fd/N` cannot be
//!   reused while the image lives. A library can also outlive its
//!   `dlclose` (`DF_1_NODELETE`, a `DT_NEEDED` of another library matched
//!   by soname, musl never unloading), leaving its old name behind; before
//!   each `dlopen` the name is checked with `RTLD_NOLOAD` and a different
//!   fd number is taken if it is still in use.
//! * `dlsym` on a handle also searches the library's dependencies;
//!   [`SystemImage`] only returns symbols defined in the image itself.

#[cfg(unix)]
mod dl;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(unix)]
mod tempfile;

use std::ffi::c_void;
use std::fs::File;

use crate::error::{Error, Result};
use crate::options::{Options, SystemStrategy};
use crate::symbol::{Library, Symbol};

/// How a [`SystemImage`] was handed to the platform loader (what
/// [`SystemStrategy::Auto`] ended up using, for instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemStrategyUsed {
    /// An anonymous memory file, opened as `/proc/self/fd/N`.
    Memfd,
    /// An unnamed (`O_TMPFILE`) file in the temporary directory, opened as
    /// `/proc/self/fd/N`; it never had a name in the directory.
    UnnamedTempFile,
    /// A uniquely named file in the temporary directory, unlinked as soon
    /// as `dlopen` returned.
    NamedTempFile,
}

impl SystemStrategyUsed {
    /// A short name for reports, also [`Library::backend`].
    pub fn name(self) -> &'static str {
        match self {
            SystemStrategyUsed::Memfd => "memfd+dlopen",
            SystemStrategyUsed::UnnamedTempFile => "tmpfile+dlopen",
            SystemStrategyUsed::NamedTempFile => "tempfile+dlopen",
        }
    }
}

/// A shared object loaded by the platform's loader (`dlopen`) from memory.
///
/// The loader runs the object's initialisers during [`SystemImage::load`]
/// and its finalisers when the image is dropped (if it is really unloaded).
/// Unlike [`crate::ElfImage`], the system loader trusts its input: bytes
/// with corrupted metadata may crash it. Give this backend only libraries
/// you would also `dlopen` from disk.
#[derive(Debug)]
pub struct SystemImage {
    // Field order matters: fields drop in declaration order, so the handle
    // is `dlclose`d before the file (the memfd) is closed. Closing first
    // would let a new memfd reuse the fd number, hence the path, while the
    // loader still knows this object by it.
    #[cfg(unix)]
    handle: dl::Handle,
    #[cfg(unix)]
    info: dl::ObjectInfo,
    strategy: SystemStrategyUsed,
    /// The file the loader opened by `/proc/self/fd/N` (`None` for a named
    /// temporary file, which the loader knows by its unique path).
    _file: Option<File>,
}

impl SystemImage {
    /// Loads `bytes` through the system loader with default [`Options`]
    /// ([`SystemStrategy::Auto`]).
    pub fn load(bytes: &[u8]) -> Result<Self> {
        Self::load_with(bytes, &Options::default())
    }

    /// Loads `bytes` under `options`; only [`Options::system_strategy`]
    /// applies to this backend.
    ///
    /// * [`SystemStrategy::Auto`]: a memfd; if memfds are unavailable
    ///   (`ENOSYS`, a seccomp filter, ...) or `/proc` is not mounted, a
    ///   temporary file in [`std::env::temp_dir`].
    /// * [`SystemStrategy::Memfd`]: a memfd or an error.
    /// * [`SystemStrategy::TempFile`]: a temporary file in that directory,
    ///   unnamed (`O_TMPFILE`) where the file system allows, otherwise named
    ///   uniquely and unlinked right after `dlopen`.
    ///
    /// A loader refusal is [`Error::Dlopen`] with the `dlerror()` text; no
    /// file descriptor or file is left behind on any error.
    pub fn load_with(bytes: &[u8], options: &Options) -> Result<Self> {
        match &options.system_strategy {
            SystemStrategy::Auto => Self::load_auto(bytes),
            SystemStrategy::Memfd => Self::load_memfd(bytes),
            SystemStrategy::TempFile(dir) => Self::load_temp(dir, bytes),
        }
    }

    /// Which strategy loaded this image.
    pub fn strategy(&self) -> SystemStrategyUsed {
        self.strategy
    }

    /// The loader's handle, for `dlinfo` and friends. It stays valid while
    /// `self` lives; do not `dlclose` it.
    #[cfg(unix)]
    pub fn raw_handle(&self) -> *mut c_void {
        self.handle.as_ptr()
    }

    /// Looks up a symbol defined in this image and types it as `T`.
    ///
    /// # Safety
    /// `T` must be the symbol's true type (see [`Library::get`]).
    pub unsafe fn get<T>(&self, name: impl AsRef<[u8]>) -> Result<Symbol<'_, T>> {
        // SAFETY: forwarded caller promise.
        unsafe { Library::get(self, name) }
    }

    /// Looks up `name` at a specific version this image defines (e.g.
    /// `("foo", "V1")` for `foo@V1`), like [`crate::ElfImage::get_versioned`]:
    /// `dlvsym`, where the platform has it.
    ///
    /// # Safety
    /// `T` must be the symbol's true type (see [`Library::get`]).
    pub unsafe fn get_versioned<T>(
        &self,
        name: impl AsRef<[u8]>,
        version: impl AsRef<[u8]>,
    ) -> Result<Symbol<'_, T>> {
        let name = name.as_ref();
        #[cfg(unix)]
        let found = dl::lookup_versioned(&self.handle, &self.info, name, version.as_ref());
        #[cfg(not(unix))]
        let found: Option<std::ptr::NonNull<c_void>> = {
            let _ = version;
            None
        };
        let addr = found.ok_or_else(|| Error::SymbolNotFound {
            name: crate::symbol::lossy(name),
        })?;
        // SAFETY: forwarded caller promise.
        unsafe { Symbol::from_addr(addr.as_ptr() as usize) }
    }
}

#[cfg(target_os = "linux")]
impl SystemImage {
    fn load_auto(bytes: &[u8]) -> Result<Self> {
        if let Ok(file) = linux::memfd_with(bytes) {
            match Self::from_proc_fd(file, SystemStrategyUsed::Memfd) {
                // /proc is missing: the path cannot work, a named file can.
                Err(Error::Dlopen { .. }) if !proc_fd_usable() => {}
                result => return result,
            }
        }
        Self::load_temp(&std::env::temp_dir(), bytes)
    }

    fn load_memfd(bytes: &[u8]) -> Result<Self> {
        let file = linux::memfd_with(bytes)?;
        Self::from_proc_fd(file, SystemStrategyUsed::Memfd)
    }

    fn load_temp(dir: &std::path::Path, bytes: &[u8]) -> Result<Self> {
        if proc_fd_usable() {
            // Errors here mostly mean "no O_TMPFILE on this file system";
            // anything else recurs, and is reported, on the named path.
            if let Ok(file) = tempfile::unnamed_with(dir, bytes) {
                return Self::from_proc_fd(file, SystemStrategyUsed::UnnamedTempFile);
            }
        }
        Self::load_named(dir, bytes)
    }

    fn load_named(dir: &std::path::Path, bytes: &[u8]) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::named_with(dir, bytes)?;
        let path = std::ffi::CString::new(tmp.path.as_os_str().as_bytes())
            .map_err(|_| Error::Unsupported("temporary file path contains a NUL byte"))?;
        let opened = dl::Handle::open(&path);
        // Unlink now, whatever dlopen said: the mapping keeps the inode.
        drop(tmp);
        Self::from_handle(opened?, None, SystemStrategyUsed::NamedTempFile)
    }

    /// `dlopen("/proc/self/fd/N")` of `file`, on an `N` no loaded object is
    /// still known by.
    fn from_proc_fd(file: File, strategy: SystemStrategyUsed) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let mut file = file;
        // Fds whose path names a stale object; held open while searching so
        // the next duplicate gets a different number, closed on return.
        let mut retired = Vec::new();
        for _ in 0..16 {
            let path = proc_fd_path(file.as_raw_fd());
            match dl::Handle::already_loaded(&path) {
                None => {
                    let handle = dl::Handle::open(&path)?;
                    return Self::from_handle(handle, Some(file), strategy);
                }
                Some(stale) => {
                    drop(stale);
                    let dup = file.try_clone().map_err(|source| Error::Io {
                        op: "duplicate file descriptor",
                        source,
                    })?;
                    retired.push(std::mem::replace(&mut file, dup));
                }
            }
        }
        Err(Error::Dlopen {
            message: "every /proc/self/fd path tried still names a loaded library".to_owned(),
        })
    }

    fn from_handle(
        handle: dl::Handle,
        file: Option<File>,
        strategy: SystemStrategyUsed,
    ) -> Result<Self> {
        match dl::object_info(&handle) {
            Ok(info) => Ok(SystemImage {
                handle,
                info,
                strategy,
                _file: file,
            }),
            Err(e) => {
                // Same order as dropping an image: dlclose, then close.
                drop(handle);
                drop(file);
                Err(e)
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn proc_fd_path(fd: std::os::fd::RawFd) -> std::ffi::CString {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(b"/proc/self/fd/");
    buf.extend_from_slice(fd.to_string().as_bytes());
    // "/proc/self/fd/" and decimal digits contain no NUL byte.
    std::ffi::CString::new(buf).unwrap_or_default()
}

/// Whether `/proc/self/fd/N` paths can work at all (`/proc` is mounted).
#[cfg(target_os = "linux")]
fn proc_fd_usable() -> bool {
    std::path::Path::new("/proc/self/fd").is_dir()
}

#[cfg(not(target_os = "linux"))]
impl SystemImage {
    fn load_auto(_bytes: &[u8]) -> Result<Self> {
        Err(Error::Unsupported("system backend on this platform"))
    }
    fn load_memfd(_bytes: &[u8]) -> Result<Self> {
        Err(Error::Unsupported("memfd on this platform"))
    }
    fn load_temp(_dir: &std::path::Path, _bytes: &[u8]) -> Result<Self> {
        Err(Error::Unsupported("system backend on this platform"))
    }
}

// `SystemImage` is Send + Sync without an `unsafe impl`: its handle
// (`dl::Handle`, whose `unsafe impl`s carry the argument: the loader locks
// every operation on a handle) and plain data are, and the compiler checks
// the rest. This assertion keeps it so.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SystemImage>();
};

impl Library for SystemImage {
    #[cfg(unix)]
    fn symbol_address(&self, name: &[u8]) -> Result<*const c_void> {
        match dl::lookup(&self.handle, &self.info, name) {
            Some(addr) => Ok(addr.as_ptr().cast_const()),
            None => Err(Error::SymbolNotFound {
                name: crate::symbol::lossy(name),
            }),
        }
    }

    #[cfg(not(unix))]
    fn symbol_address(&self, name: &[u8]) -> Result<*const c_void> {
        Err(Error::SymbolNotFound {
            name: crate::symbol::lossy(name),
        })
    }

    fn base_address(&self) -> usize {
        #[cfg(unix)]
        return self.info.base;
        #[cfg(not(unix))]
        return 0;
    }

    fn backend(&self) -> &'static str {
        self.strategy.name()
    }
}

#[cfg(all(
    test,
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    const ZLIB: &str = "/usr/lib/x86_64-linux-gnu/libz.so.1";
    #[cfg(target_arch = "aarch64")]
    const ZLIB: &str = "/usr/lib/aarch64-linux-gnu/libz.so.1";

    /// The named-file fallback (used where O_TMPFILE is unavailable) loads,
    /// resolves only its own symbols, and unlinks its file at once.
    #[test]
    fn named_temp_file_fallback() {
        let Ok(bytes) = std::fs::read(ZLIB) else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("memdl-unit-named-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let img = SystemImage::load_named(&dir, &bytes).expect("load");
        assert_eq!(img.strategy(), SystemStrategyUsed::NamedTempFile);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(img.symbol_address(b"crc32").is_ok());
        assert!(img.symbol_address(b"malloc").is_err());
        assert!(SystemImage::load_named(&dir, b"not an elf").is_err());
        drop(img);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
