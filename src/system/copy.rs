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
/// Which way the bytes went (the last method that moved any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) enum Method {
    CopyFileRange,
    Sendfile,
    ReadWrite,
}

pub(super) fn copy_range(src: BorrowedFd<'_>, offset: u64, len: u64, dst: &File) -> Result<Method> {
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
    let mut method = Method::ReadWrite;
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
            n if n > 0 => {
                done += n as u64;
                method = Method::CopyFileRange;
            }
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
            n if n > 0 => {
                done += n as u64;
                method = Method::Sendfile;
            }
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
                method = Method::ReadWrite;
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(io_err(e));
                }
            }
        }
    }
    Ok(method)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsFd;

    fn source() -> (File, Vec<u8>) {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = tempfile_in_tmp();
        f.write_all(&data).unwrap();
        (f, data)
    }

    fn tempfile_in_tmp() -> File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(std::env::temp_dir())
            .unwrap()
    }

    #[test]
    fn file_to_memfd_is_copied_in_the_kernel_exactly() {
        let (mut src, data) = source();
        src.seek(SeekFrom::Start(123)).unwrap();
        let dst = crate::system::linux::memfd_empty().unwrap();
        let method = copy_range(src.as_fd(), 1000, 150_000, &dst).unwrap();
        assert_ne!(method, Method::ReadWrite);
        // The source position is untouched, the destination's advanced.
        assert_eq!(src.stream_position().unwrap(), 123);
        let mut d = &dst;
        assert_eq!(d.stream_position().unwrap(), 150_000);
        let mut copy = Vec::new();
        d.seek(SeekFrom::Start(0)).unwrap();
        d.read_to_end(&mut copy).unwrap();
        assert_eq!(copy, &data[1000..151_000]);
    }

    #[test]
    fn memfd_to_memfd_and_short_sources() {
        let src = crate::system::linux::memfd_with(b"0123456789").unwrap();
        let dst = crate::system::linux::memfd_empty().unwrap();
        assert_ne!(
            copy_range(src.as_fd(), 2, 5, &dst).unwrap(),
            Method::ReadWrite
        );
        let mut copy = String::new();
        let mut d = &dst;
        d.seek(SeekFrom::Start(0)).unwrap();
        d.read_to_string(&mut copy).unwrap();
        assert_eq!(copy, "23456");
        // Past the end of the source: the range is truncated.
        let dst = crate::system::linux::memfd_empty().unwrap();
        assert!(matches!(
            copy_range(src.as_fd(), 8, 5, &dst),
            Err(Error::Truncated { .. })
        ));
    }
}
