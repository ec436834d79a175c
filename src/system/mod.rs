//! [`SystemImage`]: the platform's own loader, fed from memory without a
//! file on disk.
//!
//! Layout: this module owns the type and, for Linux, chooses a strategy;
//! `android` and `freebsd` do the same with `android_dlopen_ext` and
//! `fdlopen`. `linux` makes memfds (also for Android), `copy` moves a file
//! range into one, `tempfile` makes the last-resort temporary files, `dl`
//! talks to the dynamic loader.
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

#[cfg(target_os = "android")]
mod android;
#[cfg(unix)]
mod copy;
#[cfg(unix)]
mod dl;
#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod linux;
#[cfg(unix)]
mod tempfile;

// Sealed memfds for `SealedElf`, from whichever module makes them here.
#[cfg(target_os = "freebsd")]
pub(crate) use freebsd::{memfd_with, SEALS};
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use linux::{memfd_with, SEALS};

use std::ffi::c_void;
use std::fs::File;
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd};

use crate::error::{Error, Result};
use crate::options::{Options, SystemStrategy};
use crate::symbol::{Library, Symbol};

/// How a [`SystemImage`] was handed to the platform loader (what
/// [`SystemStrategy::Auto`] ended up using, for instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemStrategyUsed {
    /// The caller's own file ([`SystemImage::load_fd`] of a whole file),
    /// opened as `/proc/self/fd/N` of a duplicate of its descriptor: no copy
    /// at all.
    ProcFd,
    /// An anonymous memory file, opened as `/proc/self/fd/N`.
    Memfd,
    /// Android: `android_dlopen_ext` reading the caller's descriptor at its
    /// (page-aligned) offset, no copy.
    AndroidFd,
    /// Android: `android_dlopen_ext` reading a sealed memfd copy.
    AndroidMemfd,
    /// FreeBSD: `fdlopen` of the caller's descriptor, no copy.
    Fdlopen,
    /// FreeBSD: `fdlopen` of a sealed memfd copy.
    FdlopenMemfd,
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
            SystemStrategyUsed::ProcFd => "fd+dlopen",
            SystemStrategyUsed::Memfd => "memfd+dlopen",
            SystemStrategyUsed::AndroidFd => "fd+android_dlopen_ext",
            SystemStrategyUsed::AndroidMemfd => "memfd+android_dlopen_ext",
            SystemStrategyUsed::Fdlopen => "fdlopen",
            SystemStrategyUsed::FdlopenMemfd => "memfd+fdlopen",
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
    /// The file the loader read: opened by `/proc/self/fd/N` on Linux, a
    /// memfd or unnamed temporary file elsewhere (`None` for a named
    /// temporary file, which the loader knows by its unique path, and for
    /// the caller's own descriptor on Android and FreeBSD).
    _file: Option<File>,
}

impl SystemImage {
    /// Loads `bytes` through the system loader with default [`Options`]
    /// ([`SystemStrategy::Auto`]).
    ///
    /// # Safety
    /// As [`crate::ElfImage::load`]: the platform loader runs the library's
    /// initialisers now and its finalisers at drop.
    pub unsafe fn load(bytes: &[u8]) -> Result<Self> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { Self::load_with(bytes, &Options::default()) }
    }

    /// Loads `bytes` under `options`; only [`Options::system_strategy`]
    /// applies to this backend.
    ///
    /// With [`SystemStrategy::Auto`], Linux takes a sealed memfd, then (if
    /// memfds are unavailable: `ENOSYS`, a seccomp filter, no `/proc`) a
    /// temporary file in [`std::env::temp_dir`]; Android a memfd handed to
    /// `android_dlopen_ext`; FreeBSD a memfd handed to `fdlopen`. A forced
    /// strategy is that strategy or an error: [`Error::Unsupported`] where
    /// it does not exist (`Fdlopen` on Linux, `ProcFd` for bytes).
    ///
    /// A loader refusal is [`Error::Dlopen`] with the `dlerror()` text; no
    /// file descriptor or file is left behind on any error.
    ///
    /// # Safety
    /// As [`SystemImage::load`].
    pub unsafe fn load_with(bytes: &[u8], options: &Options) -> Result<Self> {
        #[cfg(unix)]
        return Self::load_source(Source::Bytes(bytes), &options.system_strategy);
        #[cfg(not(unix))]
        return Err(Error::Unsupported("system backend on this platform"));
    }

    /// Loads the library that lies at `offset` in `fd` and is `len` bytes
    /// long, with default [`Options`].
    ///
    /// Where the platform loader can read the caller's file directly, it
    /// does, without a copy: on Linux when the library is the whole file
    /// (`offset` 0, `len` its size: `dlopen("/proc/self/fd/N")` of a
    /// close-on-exec duplicate kept open for the image's lifetime), on
    /// Android at any page-aligned offset (`android_dlopen_ext` with
    /// `ANDROID_DLEXT_USE_LIBRARY_FD_OFFSET`), on FreeBSD for a whole file
    /// (`fdlopen`). Otherwise (and for a file on a `noexec` mount, whose
    /// code the loader cannot map) the range is copied inside the kernel
    /// (`copy_file_range`, `sendfile`) into a sealed memfd, and failing
    /// that into a temporary file. [`SystemImage::strategy`] says which.
    /// A second load of a file the loader already has (same device and
    /// inode) shares that object, as `dlopen` of one path twice does.
    ///
    /// The loader maps the caller's file directly in the first case: the
    /// file must not change or shrink while the image lives (a sealed memfd,
    /// see [`crate::SealedElf`], cannot).
    ///
    /// # Safety
    /// As [`SystemImage::load`]; and the file must not change or shrink
    /// while the image lives.
    #[cfg(unix)]
    pub unsafe fn load_fd(fd: impl AsFd, offset: u64, len: u64) -> Result<Self> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { Self::load_fd_with(fd, offset, len, &Options::default()) }
    }

    /// [`SystemImage::load_fd`] under `options`: a forced strategy is that
    /// strategy or an error. [`SystemStrategy::ProcFd`] takes only a whole
    /// file (anything else is [`Error::Unsupported`]);
    /// [`SystemStrategy::AndroidDlopenExt`] and [`SystemStrategy::Fdlopen`]
    /// read the caller's file where their loader can, and a sealed memfd
    /// copy otherwise.
    ///
    /// # Safety
    /// As [`SystemImage::load_fd`].
    #[cfg(unix)]
    pub unsafe fn load_fd_with(
        fd: impl AsFd,
        offset: u64,
        len: u64,
        options: &Options,
    ) -> Result<Self> {
        let source = Source::file(fd.as_fd(), offset, len)?;
        Self::load_source(source, &options.system_strategy)
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

    /// Assembles an image from a loaded handle, or undoes the load.
    #[cfg(unix)]
    fn from_parts(
        handle: dl::Handle,
        info: Result<dl::ObjectInfo>,
        file: Option<File>,
        strategy: SystemStrategyUsed,
    ) -> Result<Self> {
        match info {
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

    /// A uniquely named temporary file in `dir` holding the library, opened
    /// by its path and unlinked as soon as `dlopen` returned.
    #[cfg(unix)]
    fn load_named(dir: &std::path::Path, source: Source<'_>) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::named_with(dir, |f| source.fill(f))?;
        let path = std::ffi::CString::new(tmp.path.as_os_str().as_bytes())
            .map_err(|_| Error::Unsupported("temporary file path contains a NUL byte"))?;
        #[cfg(not(target_os = "linux"))]
        let before = dl::loaded_objects();
        let opened = dl::Handle::open(&path);
        // Unlink now, whatever dlopen said: the mapping keeps the inode.
        drop(tmp);
        let handle = opened?;
        #[cfg(target_os = "linux")]
        let info = dl::object_info(&handle);
        #[cfg(not(target_os = "linux"))]
        let info = dl::object_info_since(&before);
        Self::from_parts(handle, info, None, SystemStrategyUsed::NamedTempFile)
    }
}

/// The library to hand to the loader: bytes in memory, or a range of a
/// file the caller owns.
#[cfg(unix)]
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    Bytes(&'a [u8]),
    File {
        fd: BorrowedFd<'a>,
        offset: u64,
        len: u64,
        /// The range is the whole file (offset 0, length = file size).
        #[cfg_attr(target_os = "android", allow(dead_code))]
        whole: bool,
    },
}

#[cfg(unix)]
impl<'a> Source<'a> {
    /// Checks that `offset..offset + len` is a non-empty range of the file.
    fn file(fd: BorrowedFd<'a>, offset: u64, len: u64) -> Result<Self> {
        let size = crate::map::checked_file_range(fd, offset, len)?;
        Ok(Source::File {
            fd,
            offset,
            len,
            whole: offset == 0 && len == size,
        })
    }

    /// Writes the library into `dst` at its file position.
    fn fill(&self, dst: &File) -> Result<()> {
        use std::io::Write;
        match *self {
            Source::Bytes(bytes) => {
                let mut dst = dst;
                dst.write_all(bytes).map_err(|source| Error::Io {
                    op: "write to file",
                    source,
                })
            }
            Source::File {
                fd, offset, len, ..
            } => copy::copy_range(fd, offset, len, dst).map(|_| ()),
        }
    }
}

#[cfg(target_os = "linux")]
impl SystemImage {
    fn load_source(source: Source<'_>, strategy: &SystemStrategy) -> Result<Self> {
        match strategy {
            SystemStrategy::Auto => Self::load_auto(source),
            SystemStrategy::ProcFd => Self::load_proc_fd(source),
            SystemStrategy::Memfd => Self::load_memfd(source),
            SystemStrategy::TempFile(dir) => Self::load_temp(dir, source),
            SystemStrategy::AndroidDlopenExt => Err(Error::Unsupported(
                "android_dlopen_ext exists only on Android",
            )),
            SystemStrategy::Fdlopen => Err(Error::Unsupported("fdlopen exists only on FreeBSD")),
        }
    }

    fn load_auto(source: Source<'_>) -> Result<Self> {
        let direct = match source {
            // On a noexec mount the loader cannot map the file's code.
            Source::File {
                fd, whole: true, ..
            } => !crate::map::on_noexec_mount(fd),
            _ => false,
        };
        if direct && proc_fd_usable() {
            match Self::load_proc_fd(source) {
                // E.g. the file's mount is `noexec`: a memfd copy can work.
                Err(Error::Dlopen { .. }) => {}
                result => return result,
            }
        }
        if let Ok(file) = Self::memfd(source) {
            match Self::from_proc_fd(file, SystemStrategyUsed::Memfd) {
                // /proc is missing: the path cannot work, a named file can.
                Err(Error::Dlopen { .. }) if !proc_fd_usable() => {}
                result => return result,
            }
        }
        Self::load_temp(&std::env::temp_dir(), source)
    }

    fn load_proc_fd(source: Source<'_>) -> Result<Self> {
        let Source::File {
            fd, whole: true, ..
        } = source
        else {
            return Err(Error::Unsupported(
                "SystemStrategy::ProcFd needs a whole file (load_fd with offset 0 and the file's size)",
            ));
        };
        // A close-on-exec duplicate (F_DUPFD_CLOEXEC) that the image owns:
        // the caller may close theirs, and the path stays this file's while
        // the image lives.
        let dup = fd.try_clone_to_owned().map_err(|source| Error::Io {
            op: "duplicate file descriptor",
            source,
        })?;
        Self::from_proc_fd(File::from(dup), SystemStrategyUsed::ProcFd)
    }

    fn memfd(source: Source<'_>) -> Result<File> {
        match source {
            Source::Bytes(bytes) => linux::memfd_with(bytes),
            Source::File {
                fd, offset, len, ..
            } => linux::memfd_from_fd(fd, offset, len),
        }
    }

    fn load_memfd(source: Source<'_>) -> Result<Self> {
        let file = Self::memfd(source)?;
        Self::from_proc_fd(file, SystemStrategyUsed::Memfd)
    }

    fn load_temp(dir: &std::path::Path, source: Source<'_>) -> Result<Self> {
        if proc_fd_usable() {
            // Failing to create it mostly means "no O_TMPFILE on this file
            // system"; anything else recurs, and is reported, on the named
            // path. Failing to fill it is an error of its own.
            if let Ok(file) = tempfile::unnamed(dir) {
                source.fill(&file)?;
                return Self::from_proc_fd(file, SystemStrategyUsed::UnnamedTempFile);
            }
        }
        Self::load_named(dir, source)
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
                    let info = dl::object_info(&handle);
                    return Self::from_parts(handle, info, Some(file), strategy);
                }
                // The loader also recognises a file by device and inode:
                // the object may be this very file, loaded before (another
                // image of it, or the process's own copy). Share it, as
                // dlopen of one file twice does.
                Some(known) if is_this_file(&known, &file) => {
                    drop(known);
                    let handle = dl::Handle::open(&path)?;
                    let info = dl::object_info(&handle);
                    return Self::from_parts(handle, info, Some(file), strategy);
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
}

#[cfg(target_os = "linux")]
fn proc_fd_path(fd: std::os::fd::RawFd) -> std::ffi::CString {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(b"/proc/self/fd/");
    buf.extend_from_slice(fd.to_string().as_bytes());
    // "/proc/self/fd/" and decimal digits contain no NUL byte.
    std::ffi::CString::new(buf).unwrap_or_default()
}

/// Whether the loaded object behind `handle` is mapped from `file`.
#[cfg(target_os = "linux")]
fn is_this_file(handle: &dl::Handle, file: &File) -> bool {
    let Ok(info) = dl::object_info(handle) else {
        return false;
    };
    let id = crate::map::file_id(file);
    id.is_some() && crate::map::mapped_file_id(info.start) == id
}

/// Whether `/proc/self/fd/N` paths can work at all (`/proc` is mounted).
#[cfg(target_os = "linux")]
fn proc_fd_usable() -> bool {
    std::path::Path::new("/proc/self/fd").is_dir()
}

#[cfg(all(
    unix,
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd"))
))]
impl SystemImage {
    fn load_source(_source: Source<'_>, _strategy: &SystemStrategy) -> Result<Self> {
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
        let img = SystemImage::load_named(&dir, Source::Bytes(&bytes)).expect("load");
        assert_eq!(img.strategy(), SystemStrategyUsed::NamedTempFile);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(img.symbol_address(b"crc32").is_ok());
        assert!(img.symbol_address(b"malloc").is_err());
        assert!(SystemImage::load_named(&dir, Source::Bytes(b"not an elf")).is_err());
        drop(img);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
