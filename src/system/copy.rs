//! Copying a range of one file into another, inside the kernel where it
//! can.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{Error, Result};

/// Appends `len` bytes of `src` from `offset` to `dst` (at its file
/// position), leaving `src`'s position alone. The kernel copies:
/// `copy_file_range` where both file systems support it, otherwise
/// `sendfile`; only if both are refused (an fd kind neither handles) does
/// the copy go through a user-space buffer.
pub(super) fn copy_range(src: BorrowedFd<'_>, offset: u64, len: u64, dst: &File) -> Result<()> {
    let io_err = |source| Error::Io {
        op: "copy into file",
        source,
    };
    let truncated = |done: u64| Error::Truncated {
        what: "file range",
        offset,
        size: len,
        len: offset + done,
    };
    // Errors that mean "this method does not apply to these fds".
    #[cfg_attr(
        not(any(target_os = "linux", target_os = "android")),
        allow(unused_variables)
    )]
    let unsupported = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::EBADF)
        )
    };
    let mut done = 0u64;
    let chunk = |left: u64| left.min(1 << 30) as usize;

    #[cfg(target_os = "linux")]
    while done < len {
        let mut off_in = (offset + done) as libc::loff_t;
        // SAFETY: both fds are valid for the call; `off_in` is a live local
        // the kernel updates; a null output offset uses dst's position.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                chunk(len - done),
                0,
            )
        };
        match n {
            0 => return Err(truncated(done)),
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if done == 0 && unsupported(&e) {
                    break;
                }
                return Err(io_err(e));
            }
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let mut sendfile_works = true;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    while done < len && sendfile_works {
        let mut off_in = (offset + done) as libc::off_t;
        // SAFETY: as above; sendfile reads at `off_in` without moving
        // src's position and writes at dst's position.
        let n = unsafe {
            libc::sendfile(
                dst.as_raw_fd(),
                src.as_raw_fd(),
                &mut off_in,
                chunk(len - done),
            )
        };
        match n {
            0 => return Err(truncated(done)),
            n if n > 0 => done += n as u64,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if done == 0 && unsupported(&e) {
                    sendfile_works = false;
                } else {
                    return Err(io_err(e));
                }
            }
        }
    }
    let mut buf = vec![0u8; chunk(len - done).min(1 << 20)];
    let mut out = dst;
    while done < len {
        let want = buf.len().min(chunk(len - done));
        // SAFETY: `buf` has at least `want` writable bytes.
        let n = unsafe {
            libc::pread(
                src.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                want,
                (offset + done) as libc::off_t,
            )
        };
        match n {
            0 => return Err(truncated(done)),
            n if n > 0 => {
                out.write_all(&buf[..n as usize]).map_err(io_err)?;
                done += n as u64;
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(io_err(e));
                }
            }
        }
    }
    Ok(())
}
