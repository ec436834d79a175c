//! Anonymous memory files (Linux, Android): creating them under the kernel's
//! `vm.memfd_noexec` policy, filling them without a copy through user space
//! where the kernel allows, and sealing them.

use std::ffi::{c_uint, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

// Spelled out because not every libc target module has them.
const MFD_CLOEXEC: c_uint = 0x0001;
const MFD_ALLOW_SEALING: c_uint = 0x0002;
const MFD_NOEXEC_SEAL: c_uint = 0x0008;
const MFD_EXEC: c_uint = 0x0010;

/// The seals that make a memfd's contents immutable for good: no write, no
/// truncation (which would turn every mapping of the cut pages into
/// SIGBUS), no growth, and no way to remove any of these seals.
pub(crate) const SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// `vm.memfd_noexec` (Linux 6.3+, per pid namespace) as read from
/// `/proc/sys/vm/memfd_noexec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoexecPolicy {
    /// The file does not exist: a kernel before 6.3, which rejects
    /// `MFD_EXEC` and `MFD_NOEXEC_SEAL` with `EINVAL`.
    Absent,
    /// 0: both flags allowed; a memfd without either is executable.
    Allowed,
    /// 1: both flags allowed; a memfd without either gets `MFD_NOEXEC_SEAL`.
    NoexecByDefault,
    /// 2: only `MFD_NOEXEC_SEAL` is accepted (`EACCES` otherwise).
    NoexecEnforced,
    /// Unreadable or unexpected contents.
    Unknown,
}

impl NoexecPolicy {
    pub(crate) fn read() -> NoexecPolicy {
        match std::fs::read_to_string("/proc/sys/vm/memfd_noexec") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => NoexecPolicy::Absent,
            Err(_) => NoexecPolicy::Unknown,
            Ok(s) => match s.trim() {
                "0" => NoexecPolicy::Allowed,
                "1" => NoexecPolicy::NoexecByDefault,
                "2" => NoexecPolicy::NoexecEnforced,
                _ => NoexecPolicy::Unknown,
            },
        }
    }

    /// The flag sets to try, in order, for a memfd that will hold code.
    ///
    /// `MFD_EXEC` states the intent (the file is mapped executable) and
    /// keeps kernels from warning about a memfd created without either
    /// flag. Under policy 2 only `MFD_NOEXEC_SEAL` is accepted; it forbids
    /// `execve` of the file only, `mmap(PROT_EXEC)` (hence `dlopen`) still
    /// works. Kernels before 6.3 know neither flag, so the last set has
    /// none. Where the policy cannot be read, all three are tried.
    pub(crate) fn attempts(self) -> &'static [c_uint] {
        const BASE: c_uint = MFD_CLOEXEC | MFD_ALLOW_SEALING;
        match self {
            NoexecPolicy::Absent => &[BASE],
            NoexecPolicy::NoexecEnforced => &[BASE | MFD_NOEXEC_SEAL],
            NoexecPolicy::Allowed | NoexecPolicy::NoexecByDefault | NoexecPolicy::Unknown => {
                &[BASE | MFD_EXEC, BASE | MFD_NOEXEC_SEAL, BASE]
            }
        }
    }
}

/// Runs `create` with each flag set of `attempts` until one succeeds.
/// `EINVAL` (a flag this kernel does not know) and `EACCES` (a flag the
/// policy refuses) move on to the next set; any other error, e.g. `ENOSYS`
/// or `EMFILE`, is final. Returns the fd and the flags that worked.
pub(crate) fn create_with(
    attempts: &[c_uint],
    mut create: impl FnMut(c_uint) -> io::Result<RawFd>,
) -> io::Result<(RawFd, c_uint)> {
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for &flags in attempts {
        match create(flags) {
            Ok(fd) => return Ok((fd, flags)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn memfd_create(name: &CString, flags: c_uint) -> io::Result<RawFd> {
    // The raw system call: bionic only has the wrapper from API 30 on.
    // SAFETY: `name` is NUL-terminated; the call has no other inputs.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd as RawFd)
    }
}

/// An empty close-on-exec memfd that allows sealing, named `memdl:<n>` (the
/// name shows in `/proc/<pid>/maps` as `/memfd:memdl:<n> (deleted)`; the
/// loader goes by the fd, so it need not be unique).
pub(crate) fn memfd_empty() -> Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(format!("memdl:{n}")).map_err(|_| Error::Unsupported("memfd name"))?;
    let (fd, _flags) = create_with(NoexecPolicy::read().attempts(), |f| memfd_create(&name, f))
        .map_err(|source| Error::Io {
            op: "memfd_create",
            source,
        })?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody
    // else; the File closes it exactly once.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A sealed memfd holding `bytes`.
pub(crate) fn memfd_with(bytes: &[u8]) -> Result<File> {
    let mut file = memfd_empty()?;
    // write_all retries short writes and EINTR.
    file.write_all(bytes).map_err(|source| Error::Io {
        op: "write to memfd",
        source,
    })?;
    seal(&file)?;
    Ok(file)
}

/// A sealed memfd holding `len` bytes of `src` from `offset`, copied inside
/// the kernel.
pub(crate) fn memfd_from_fd(src: BorrowedFd<'_>, offset: u64, len: u64) -> Result<File> {
    let file = memfd_empty()?;
    super::copy::copy_range(src, offset, len, &file)?;
    seal(&file)?;
    Ok(file)
}

/// Adds [`SEALS`]: from now on nobody, not even a writer through
/// `/proc/<pid>/fd/N`, can change the contents under the loader's mappings.
pub(crate) fn seal(file: &File) -> Result<()> {
    // SAFETY: F_ADD_SEALS on an fd we own; the argument is an int bit set.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(Error::last_os("seal memfd (F_ADD_SEALS)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: c_uint = MFD_CLOEXEC | MFD_ALLOW_SEALING;

    /// A fake memfd_create: `accepts` says which flag sets succeed, the
    /// others fail with `errno`; records what was tried.
    fn run(
        policy: NoexecPolicy,
        accepts: impl Fn(c_uint) -> bool,
        errno: i32,
    ) -> (io::Result<(RawFd, c_uint)>, Vec<c_uint>) {
        let mut tried = Vec::new();
        let r = create_with(policy.attempts(), |f| {
            tried.push(f);
            if accepts(f) {
                Ok(42)
            } else {
                Err(io::Error::from_raw_os_error(errno))
            }
        });
        (r, tried)
    }

    #[test]
    fn exec_flag_first_where_the_policy_allows_it() {
        for p in [NoexecPolicy::Allowed, NoexecPolicy::NoexecByDefault] {
            let (r, tried) = run(p, |_| true, 0);
            assert_eq!(r.unwrap().1, BASE | MFD_EXEC);
            assert_eq!(tried, [BASE | MFD_EXEC]);
        }
    }

    #[test]
    fn policy_2_asks_for_noexec_seal_only() {
        let (r, tried) = run(
            NoexecPolicy::NoexecEnforced,
            |f| f & MFD_NOEXEC_SEAL != 0,
            libc::EACCES,
        );
        assert_eq!(r.unwrap().1, BASE | MFD_NOEXEC_SEAL);
        assert_eq!(tried, [BASE | MFD_NOEXEC_SEAL]);
    }

    #[test]
    fn unknown_policy_enforcing_falls_to_noexec_seal() {
        // E.g. /proc/sys unreadable in a container whose namespace says 2.
        let (r, tried) = run(
            NoexecPolicy::Unknown,
            |f| f & MFD_NOEXEC_SEAL != 0,
            libc::EACCES,
        );
        assert_eq!(r.unwrap().1, BASE | MFD_NOEXEC_SEAL);
        assert_eq!(tried, [BASE | MFD_EXEC, BASE | MFD_NOEXEC_SEAL]);
    }

    #[test]
    fn old_kernel_rejecting_new_flags_gets_neither() {
        let old = |f: c_uint| f & (MFD_EXEC | MFD_NOEXEC_SEAL) == 0;
        let (r, tried) = run(NoexecPolicy::Unknown, old, libc::EINVAL);
        assert_eq!(r.unwrap().1, BASE);
        assert_eq!(tried.len(), 3);
        // Without the sysctl file the new flags are not even tried.
        let (r, tried) = run(NoexecPolicy::Absent, old, libc::EINVAL);
        assert_eq!(r.unwrap().1, BASE);
        assert_eq!(tried, [BASE]);
    }

    #[test]
    fn other_errors_are_final() {
        let (r, tried) = run(NoexecPolicy::Allowed, |_| false, libc::ENOSYS);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSYS));
        assert_eq!(tried.len(), 1);
        let (r, tried) = run(NoexecPolicy::Allowed, |_| false, libc::EACCES);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert_eq!(tried.len(), 3);
    }

    #[test]
    fn real_memfd_follows_this_kernels_policy_and_seals() {
        let file = memfd_with(b"\x7fELF sealed").unwrap();
        // SAFETY: F_GET_SEALS on an fd we own.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & SEALS, SEALS);
        const F_SEAL_EXEC: libc::c_int = 0x20;
        match NoexecPolicy::read() {
            // MFD_EXEC was accepted: no exec seal.
            NoexecPolicy::Allowed | NoexecPolicy::NoexecByDefault => {
                assert_eq!(seals & F_SEAL_EXEC, 0)
            }
            // MFD_NOEXEC_SEAL adds F_SEAL_EXEC.
            NoexecPolicy::NoexecEnforced => assert_ne!(seals & F_SEAL_EXEC, 0),
            NoexecPolicy::Absent | NoexecPolicy::Unknown => {}
        }
        let mut f = &file;
        assert_eq!(f.write(b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
