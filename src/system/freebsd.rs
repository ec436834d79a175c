//! FreeBSD: `fdlopen` loads from a file descriptor. It reads from the start
//! of the file (no offset), so only a whole file is handed over as is; a
//! range, or bytes, go into a sealed memfd first (FreeBSD 13+).

use std::ffi::{c_int, c_void, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{dl, Source, SystemImage, SystemStrategy, SystemStrategyUsed};
use crate::error::{Error, Result};

extern "C" {
    // In FreeBSD's libc (rtld); the `libc` crate does not declare it.
    fn fdlopen(fd: c_int, mode: c_int) -> *mut c_void;
}

impl SystemImage {
    pub(super) fn load_source(source: Source<'_>, strategy: &SystemStrategy) -> Result<Self> {
        match strategy {
            SystemStrategy::Auto => match Self::load_fdlopen(source) {
                Err(Error::Io {
                    op: "memfd_create", ..
                }) => Self::load_named(&std::env::temp_dir(), source),
                result => result,
            },
            SystemStrategy::Fdlopen => Self::load_fdlopen(source),
            SystemStrategy::Memfd => Self::load_fdlopen_memfd(source),
            SystemStrategy::TempFile(dir) => Self::load_named(dir, source),
            SystemStrategy::ProcFd => Err(Error::Unsupported(
                "SystemStrategy::ProcFd is Linux's; FreeBSD uses fdlopen",
            )),
            SystemStrategy::AndroidDlopenExt => Err(Error::Unsupported(
                "android_dlopen_ext exists only on Android",
            )),
        }
    }

    fn load_fdlopen(source: Source<'_>) -> Result<Self> {
        match source {
            // fdlopen duplicates the descriptor it keeps; the caller's stays
            // the caller's.
            Source::File {
                fd, whole: true, ..
            } => Self::fdlopen(fd, None, SystemStrategyUsed::Fdlopen),
            _ => Self::load_fdlopen_memfd(source),
        }
    }

    fn load_fdlopen_memfd(source: Source<'_>) -> Result<Self> {
        let file = memfd(source)?;
        let fd = file.as_raw_fd();
        // SAFETY: `file` stays open (moved into the image) while this
        // borrow is used, during the call below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Self::fdlopen(borrowed, Some(file), SystemStrategyUsed::FdlopenMemfd)
    }

    fn fdlopen(
        fd: BorrowedFd<'_>,
        keep: Option<File>,
        strategy: SystemStrategyUsed,
    ) -> Result<Self> {
        let before = dl::loaded_objects();
        // SAFETY: `fd` is open for the call; the library's initialisers run
        // here (trusting the bytes is this backend's precondition).
        let raw = unsafe { fdlopen(fd.as_raw_fd(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        let handle = dl::Handle::from_raw(raw)?;
        let object = dl::object_info_since(&before);
        Self::from_parts(handle, object, keep, strategy)
    }
}

/// The seals that make a memfd's contents immutable for good.
pub(crate) const SEALS: c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// A sealed memfd holding `bytes`.
pub(crate) fn memfd_with(bytes: &[u8]) -> Result<File> {
    memfd(Source::Bytes(bytes))
}

/// A sealed anonymous memory file holding the library.
fn memfd(source: Source<'_>) -> Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(format!("memdl:{n}")).map_err(|_| Error::Unsupported("memfd name"))?;
    // SAFETY: `name` is NUL-terminated; the call has no other inputs.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody
    // else; the File closes it exactly once.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match source {
        Source::Bytes(bytes) => file.write_all(bytes).map_err(|source| Error::Io {
            op: "write to memfd",
            source,
        })?,
        Source::File { .. } => source.fill(&file)?,
    }
    // SAFETY: F_ADD_SEALS on an fd we own; the argument is an int bit set.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(Error::last_os("seal memfd (F_ADD_SEALS)"));
    }
    Ok(file)
}
