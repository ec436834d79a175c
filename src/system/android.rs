//! Android: bionic's `android_dlopen_ext` reads the library from a file
//! descriptor, at an offset if it is page-aligned
//! (`ANDROID_DLEXT_USE_LIBRARY_FD_OFFSET`), so no `/proc` path is needed.
//!
//! Bionic recognises an already loaded library by name first, and by the
//! file's device, inode and offset second. Every load gets a unique name,
//! and `ANDROID_DLEXT_FORCE_LOAD` skips the file check, so each load is an
//! object of its own, as on Linux.

use std::ffi::{c_int, c_void, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{dl, linux, tempfile, Source, SystemImage, SystemStrategy, SystemStrategyUsed};
use crate::error::{Error, Result};
use crate::map::page_size;

// `android_dlextinfo.flags` bits, from bionic's <android/dlext.h>.
const ANDROID_DLEXT_USE_LIBRARY_FD: u64 = 0x10;
const ANDROID_DLEXT_USE_LIBRARY_FD_OFFSET: u64 = 0x20;
const ANDROID_DLEXT_FORCE_LOAD: u64 = 0x40;

/// `android_dlextinfo` as bionic lays it out (API 21 added the first five
/// fields, API 23 the offset, API 24 the namespace); the `libc` crate does
/// not declare it.
#[repr(C)]
struct AndroidDlextInfo {
    flags: u64,
    reserved_addr: *mut c_void,
    reserved_size: libc::size_t,
    relro_fd: c_int,
    library_fd: c_int,
    library_fd_offset: libc::off64_t,
    library_namespace: *mut c_void,
}

extern "C" {
    fn android_dlopen_ext(
        filename: *const libc::c_char,
        flags: c_int,
        extinfo: *const AndroidDlextInfo,
    ) -> *mut c_void;
}

impl SystemImage {
    pub(super) fn load_source(source: Source<'_>, strategy: &SystemStrategy) -> Result<Self> {
        match strategy {
            SystemStrategy::Auto => match Self::load_dlext(source) {
                // memfd_create unavailable (old kernel, seccomp): a file.
                Err(Error::Io {
                    op: "memfd_create", ..
                }) => Self::load_temp(&std::env::temp_dir(), source),
                result => result,
            },
            SystemStrategy::AndroidDlopenExt => Self::load_dlext(source),
            SystemStrategy::Memfd => Self::load_dlext_memfd(source),
            SystemStrategy::TempFile(dir) => Self::load_temp(dir, source),
            SystemStrategy::ProcFd => Err(Error::Unsupported(
                "SystemStrategy::ProcFd is Linux's; Android uses android_dlopen_ext",
            )),
            SystemStrategy::Fdlopen => Err(Error::Unsupported("fdlopen exists only on FreeBSD")),
        }
    }

    /// The caller's descriptor where bionic can read it in place (a
    /// page-aligned offset), else a memfd copy.
    fn load_dlext(source: Source<'_>) -> Result<Self> {
        match source {
            Source::File { fd, offset, .. } if offset % page_size() as u64 == 0 => {
                // The loader maps what it needs during the call and keeps
                // no reference to the descriptor afterwards.
                Self::dlext(fd, offset, None, SystemStrategyUsed::AndroidFd)
            }
            _ => Self::load_dlext_memfd(source),
        }
    }

    fn load_dlext_memfd(source: Source<'_>) -> Result<Self> {
        let file = match source {
            Source::Bytes(bytes) => linux::memfd_with(bytes)?,
            Source::File {
                fd, offset, len, ..
            } => linux::memfd_from_fd(fd, offset, len)?,
        };
        let fd = file.as_raw_fd();
        // SAFETY: `file` stays open (moved into the image) while this
        // borrow is used, during the call below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Self::dlext(borrowed, 0, Some(file), SystemStrategyUsed::AndroidMemfd)
    }

    fn load_temp(dir: &std::path::Path, source: Source<'_>) -> Result<Self> {
        // An unnamed file needs no path at all here: bionic reads the fd.
        if let Ok(file) = tempfile::unnamed(dir) {
            source.fill(&file)?;
            let fd = file.as_raw_fd();
            // SAFETY: as in `load_dlext_memfd`.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            return Self::dlext(borrowed, 0, Some(file), SystemStrategyUsed::UnnamedTempFile);
        }
        Self::load_named(dir, source)
    }

    /// `android_dlopen_ext` of the library at `offset` (page-aligned) in
    /// `fd`, under a name no other load uses.
    fn dlext(
        fd: BorrowedFd<'_>,
        offset: u64,
        keep: Option<File>,
        strategy: SystemStrategyUsed,
    ) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = CString::new(format!("memdl-{}-{n}.so", std::process::id()))
            .map_err(|_| Error::Unsupported("library name"))?;
        let mut flags = ANDROID_DLEXT_USE_LIBRARY_FD | ANDROID_DLEXT_FORCE_LOAD;
        if offset != 0 {
            flags |= ANDROID_DLEXT_USE_LIBRARY_FD_OFFSET;
        }
        let info = AndroidDlextInfo {
            flags,
            reserved_addr: std::ptr::null_mut(),
            reserved_size: 0,
            relro_fd: -1,
            library_fd: fd.as_raw_fd(),
            library_fd_offset: offset as libc::off64_t,
            library_namespace: std::ptr::null_mut(),
        };
        let before = dl::loaded_objects();
        // SAFETY: `name` is NUL-terminated, `info` is a valid extinfo whose
        // fd is open for the call; the library's initialisers run here
        // (trusting the bytes is this backend's documented precondition).
        let raw =
            unsafe { android_dlopen_ext(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL, &info) };
        let handle = dl::Handle::from_raw(raw)?;
        let object = dl::object_info_since(&before);
        Self::from_parts(handle, object, keep, strategy)
    }
}
