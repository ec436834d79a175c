//! Linux (and, later, Android): the bytes go into an anonymous memory file.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A sealed memfd holding `bytes`, named `memdl:<n>` (the name only shows up
/// in `/proc/<pid>/maps` as `/memfd:memdl:<n> (deleted)`; it need not be
/// unique for correctness, the fd number is what the loader sees).
pub(super) fn memfd_with(bytes: &[u8]) -> Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(format!("memdl:{n}")).map_err(|_| Error::Unsupported("memfd name"))?;

    // MFD_NOEXEC_SEAL (Linux 6.3+) only forbids execve of the file: mmap
    // with PROT_EXEC, hence dlopen, still works, and it keeps the backend
    // working under vm.memfd_noexec=2 (and quiet on kernels that warn about
    // memfds created without MFD_EXEC/MFD_NOEXEC_SEAL). Older kernels reject
    // unknown flags with EINVAL, so fall back step by step.
    const ATTEMPTS: [libc::c_uint; 3] = [
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_NOEXEC_SEAL,
        libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        libc::MFD_CLOEXEC,
    ];
    let mut fd = -1;
    for flags in ATTEMPTS {
        // SAFETY: `name` is NUL-terminated; the call has no other inputs.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody
    // else; the File closes it exactly once.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // write_all retries short writes and EINTR.
    file.write_all(bytes).map_err(|source| Error::Io {
        op: "write to memfd",
        source,
    })?;

    // Freeze the contents: nobody (not even a write through
    // /proc/<pid>/fd/N) can change or truncate the file under the loader's
    // mappings (truncation would turn them into SIGBUS). Best effort: a
    // memfd created without MFD_ALLOW_SEALING simply stays unsealed.
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on an fd we own; the argument is an int bit set.
    let _ = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    Ok(file)
}
