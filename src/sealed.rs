//! [`SealedElf`]: a library in a sealed memory file, for handing code to a
//! sandboxed process that must not be able to change it, nor see it change.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::options::Options;
use crate::system::{memfd_with, SEALS};
use crate::{ElfImage, SystemImage};

/// An ELF shared object in an anonymous memory file (`memfd`) sealed with
/// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`: nobody, not
/// even its creator, can change, truncate or unseal it any more, so every
/// process that maps it sees the same bytes, and shares the same physical
/// pages. The descriptor is close-on-exec.
///
/// One process makes it from bytes and sends it over a Unix socket; the
/// receiver checks the seals and loads it with either backend, without a
/// copy ([`ElfImage`] maps the segments from it, [`SystemImage`] hands it
/// to `dlopen`):
///
/// ```no_run
/// # fn main() -> Result<(), memdl::Error> {
/// use std::os::unix::net::UnixStream;
/// let (host, sandbox) = UnixStream::pair().unwrap();
/// // Host:
/// let code = memdl::SealedElf::new(&std::fs::read("libkernel.so").unwrap())?;
/// code.send(&host)?;
/// // Sandbox (usually another process, holding the other end):
/// let code = memdl::SealedElf::recv(&sandbox)?;
/// // SAFETY: libkernel.so is trusted; the seals keep it unchanged.
/// let img = unsafe { code.load()? };
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SealedElf {
    file: File,
    len: u64,
}

impl SealedElf {
    /// Copies `bytes` into a new sealed memfd. The bytes are not parsed
    /// here: loading validates them.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let file = memfd_with(bytes)?;
        Ok(SealedElf {
            file,
            len: bytes.len() as u64,
        })
    }

    /// Takes a descriptor from elsewhere (another process) after checking
    /// that it carries every seal; a file whose contents could still change
    /// is refused with [`Error::NotSealed`].
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        // SAFETY: F_GET_SEALS on a descriptor we own; it takes no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        // Negative (EINVAL): not a memfd, or a file system without seals.
        if seals < 0 || seals & SEALS != SEALS {
            return Err(Error::NotSealed { seals });
        }
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                op: "fstat sealed file",
                source,
            })?
            .len();
        Ok(SealedElf { file, len })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (it can never load).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Loads it with memdl's loader, segments mapped from the memfd
    /// ([`ElfImage::load_fd`]).
    ///
    /// # Safety
    /// As [`ElfImage::load`]: the library's code runs.
    pub unsafe fn load(&self) -> Result<ElfImage> {
        // SAFETY: the caller's promise; the seals keep the file unchanged.
        unsafe { ElfImage::load_fd(&self.file, 0, self.len) }
    }

    /// [`SealedElf::load`] under `options`.
    ///
    /// # Safety
    /// As [`ElfImage::load`]: the library's code runs.
    pub unsafe fn load_with(&self, options: &Options) -> Result<ElfImage> {
        // SAFETY: the caller's promise; the seals keep the file unchanged.
        unsafe { ElfImage::load_fd_with(&self.file, 0, self.len, options) }
    }

    /// Loads it with the system loader ([`SystemImage::load_fd`]: the memfd
    /// itself, through a duplicate of its descriptor, on Linux).
    ///
    /// # Safety
    /// As [`SystemImage::load`]: the library's code runs.
    pub unsafe fn load_system(&self) -> Result<SystemImage> {
        // SAFETY: the caller's promise; the seals keep the file unchanged.
        unsafe { SystemImage::load_fd(&self.file, 0, self.len) }
    }

    /// [`SealedElf::load_system`] under `options`.
    ///
    /// # Safety
    /// As [`SystemImage::load`]: the library's code runs.
    pub unsafe fn load_system_with(&self, options: &Options) -> Result<SystemImage> {
        // SAFETY: the caller's promise; the seals keep the file unchanged.
        unsafe { SystemImage::load_fd_with(&self.file, 0, self.len, options) }
    }

    /// Another descriptor of the same sealed file (close-on-exec).
    pub fn try_clone(&self) -> Result<Self> {
        let file = self.file.try_clone().map_err(|source| Error::Io {
            op: "duplicate file descriptor",
            source,
        })?;
        Ok(SealedElf {
            file,
            len: self.len,
        })
    }

    /// Sends the descriptor over a connected Unix socket (`SCM_RIGHTS`,
    /// with one byte of data, as some systems require). The receiving
    /// process gets its own descriptor of the same file.
    pub fn send(&self, socket: impl AsFd) -> Result<()> {
        send_fd(socket.as_fd(), self.file.as_fd()).map_err(|source| Error::Io {
            op: "send sealed file (SCM_RIGHTS)",
            source,
        })
    }

    /// Receives a descriptor sent by [`SealedElf::send`] and checks its
    /// seals ([`SealedElf::from_fd`]). A message without exactly one
    /// descriptor is an error; any descriptors it did carry are closed.
    pub fn recv(socket: impl AsFd) -> Result<Self> {
        let fd = recv_fd(socket.as_fd()).map_err(|source| Error::Io {
            op: "receive sealed file (SCM_RIGHTS)",
            source,
        })?;
        Self::from_fd(fd)
    }
}

impl AsFd for SealedElf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for SealedElf {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl From<SealedElf> for OwnedFd {
    fn from(sealed: SealedElf) -> OwnedFd {
        sealed.file.into()
    }
}

/// Room for a few descriptors' control message: a peer sending more than
/// one gets them closed rather than leaked.
const MAX_FDS: usize = 4;

/// Control buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [b'E'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 128]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `buf`, which has room for one cmsghdr with
    // one fd (`space` <= 128), so CMSG_FIRSTHDR is non-null and its data
    // area holds a RawFd; the writes stay inside `buf`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    loop {
        // SAFETY: `msg` and everything it points to live across the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n == 1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(if n < 0 {
            e
        } else {
            io::Error::new(io::ErrorKind::WriteZero, "message not sent")
        });
    }
}

fn recv_fd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 128]);
    // SAFETY: a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = (space as usize).min(buf.0.len()) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers of the sizes it states.
        // MSG_CMSG_CLOEXEC: received fds are close-on-exec from the start.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // Take ownership of every received fd first, so each is closed on any
    // error below.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: the kernel filled `msg` and `buf`; the CMSG macros walk the
    // control messages it wrote, within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // The kernel installed this fd in our table for us.
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the socket was closed before a descriptor arrived",
        ));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors than expected (control message truncated)",
        ));
    }
    match fds.len() {
        1 => Ok(fds.pop().expect("one fd")),
        0 => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried no file descriptor",
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried more than one file descriptor",
        )),
    }
}
