//! `SealedElf`: sealed code handed to another process over a Unix socket,
//! loaded there by both backends, its pages shared between the processes;
//! and a sealed file refuses every kind of change.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use memdl::{ElfImage, Error, Library, Placement, SealedElf, SystemStrategyUsed};

mod common;
use common::{open_fds, serial, test_lib};

// Why these tests take serial() (tests/common): tests that count fds or
// spawn children (whose pipes are fds) run one at a time.

type AddFn = unsafe extern "C" fn(i32, i32) -> i32;

fn call_add(lib: &dyn Library, a: i32, b: i32) -> i32 {
    let addr = lib.symbol_address(b"add").expect("add");
    // SAFETY: libexample's `int add(int, int)`.
    let add: AddFn = unsafe { std::mem::transmute(addr) };
    // SAFETY: see above.
    unsafe { add(a, b) }
}

/// Resident kilobytes of the mapping holding `addr`, from /proc/self/smaps:
/// (shared with another mapping, private, copied-on-write into anonymous).
fn residency(addr: usize) -> (u64, u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let (mut shared, mut private, mut anon) = (0, 0, 0);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, e)) = first.split_once('-') {
            if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) {
                if inside {
                    break;
                }
                inside = s <= addr && addr < e;
                continue;
            }
        }
        if !inside {
            continue;
        }
        let kb = |l: &str| -> u64 { l.split_whitespace().nth(1).unwrap().parse().unwrap() };
        if line.starts_with("Shared_Clean:") || line.starts_with("Shared_Dirty:") {
            shared += kb(line);
        } else if line.starts_with("Private_Clean:") || line.starts_with("Private_Dirty:") {
            private += kb(line);
        } else if line.starts_with("Anonymous:") {
            anon = kb(line);
        }
    }
    assert!(inside || shared + private > 0, "{addr:#x} is not mapped");
    (shared, private, anon)
}

fn text_address(img: &ElfImage) -> usize {
    let text = img
        .segments()
        .find(|s| s.flags & 1 != 0)
        .expect("an executable segment");
    assert_eq!(text.placement, Placement::Mapped, "text must be zero-copy");
    text.address
}

const CHILD: &str = "MEMDL_SEALED_CHILD";
/// The fd number the child finds its end of the socket at.
const CHILD_SOCKET_FD: i32 = 3;

/// The child's half: receive, check the seals, load with both backends,
/// call in, report how the text is resident, wait for the parent's look.
fn child() {
    // SAFETY: the parent dup2'ed the socket to this number for us and
    // nothing else in this process owns it.
    let sock = unsafe { UnixStream::from_raw_fd(CHILD_SOCKET_FD) };
    let sealed = SealedElf::recv(&sock).expect("receive");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { sealed.load() }.expect("ElfImage from the sealed fd");
    assert_eq!(call_add(&img, 2, 3), 5);
    let (shared, _, anon) = residency(text_address(&img));
    // The parent maps the same pages: they are shared, nothing was copied.
    assert!(shared > 0, "child: text not shared");
    assert_eq!(anon, 0, "child: text was copied");

    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { sealed.load_system() }.expect("SystemImage from the sealed fd");
    assert_eq!(sys.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(call_add(&sys, 20, 22), 42);

    let mut w = &sock;
    writeln!(w, "ready {shared}").unwrap();
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    println!("child: loaded and called through both backends");
}

#[test]
fn code_sent_to_a_child_is_shared_not_copied() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let _g = serial();
    let sealed = SealedElf::new(&test_lib("example")).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { sealed.load() }.unwrap();
    assert_eq!(call_add(&img, 1, 1), 2);
    let text = text_address(&img);
    // Alone, the parent's text page is private to it.
    let (shared, private, anon) = residency(text);
    assert_eq!((shared, anon), (0, 0));
    assert!(private > 0);

    let (parent_sock, child_sock) = UnixStream::pair().unwrap();
    let child_raw = child_sock.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "code_sent_to_a_child_is_shared_not_copied",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2,
    // fcntl) run, on fds that exist in the child.
    unsafe {
        cmd.pre_exec(move || {
            if child_raw == CHILD_SOCKET_FD {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(child_raw, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(child_raw, CHILD_SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(child_sock);

    sealed.send(&parent_sock).unwrap();
    let mut line = String::new();
    BufReader::new(&parent_sock).read_line(&mut line).unwrap();
    let ready = line.trim().to_owned();
    // While the child holds the pages, the parent's count them as shared.
    let (shared_now, _, anon_now) = residency(text);
    let mut w = &parent_sock;
    writeln!(w, "done").ok();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed ({ready:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("child: loaded and called"), "{stdout}");
    assert!(ready.starts_with("ready "), "{ready:?}");
    assert!(shared_now > 0, "parent: text not shared with the child");
    assert_eq!(anon_now, 0);
}

#[test]
fn a_sealed_file_refuses_every_change() {
    let sealed = SealedElf::new(&test_lib("example")).unwrap();
    let fd = sealed.as_raw_fd();
    let errno = || std::io::Error::last_os_error().raw_os_error();
    // SAFETY: plain system calls on an fd we own, with valid buffers; a
    // refused mmap returns MAP_FAILED and maps nothing.
    unsafe {
        assert_eq!(libc::write(fd, b"x".as_ptr().cast(), 1), -1);
        assert_eq!(errno(), Some(libc::EPERM));
        assert_eq!(libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0), -1);
        assert_eq!(errno(), Some(libc::EPERM));
        assert_eq!(libc::ftruncate(fd, 10), -1);
        assert_eq!(errno(), Some(libc::EPERM));
        assert_eq!(libc::ftruncate(fd, sealed.len() as i64 + 4096), -1);
        assert_eq!(errno(), Some(libc::EPERM));
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_eq!(p, libc::MAP_FAILED);
        assert_eq!(errno(), Some(libc::EPERM));
        // The seals cannot be removed or extended.
        assert_eq!(
            libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_FUTURE_WRITE),
            -1
        );
        assert_eq!(errno(), Some(libc::EPERM));
        // Close-on-exec.
        assert_eq!(
            libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC,
            libc::FD_CLOEXEC
        );
    }
    // Not even through a fresh writable open of /proc/self/fd/N.
    let mut reopened = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .unwrap();
    let err = reopened.write_all(b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    // And the contents are what went in.
    let mut copy = Vec::new();
    std::io::Read::read_to_end(
        &mut File::open(format!("/proc/self/fd/{fd}")).unwrap(),
        &mut copy,
    )
    .unwrap();
    assert_eq!(copy, test_lib("example"));
}

#[test]
fn unsealed_descriptors_are_refused_on_receipt() {
    let _g = serial();
    let before = open_fds();
    // A regular file, and a memfd without seals.
    let file = tempfile::tempfile().unwrap();
    let err = SealedElf::from_fd(OwnedFd::from(file)).unwrap_err();
    assert!(matches!(err, Error::NotSealed { seals: -1 }), "{err:?}");
    // SAFETY: a plain system call with a NUL-terminated name.
    let raw = unsafe { libc::memfd_create(c"open".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: just created, owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // A memfd made without MFD_ALLOW_SEALING reports F_SEAL_SEAL alone.
    assert!(matches!(
        SealedElf::from_fd(memfd),
        Err(Error::NotSealed { seals }) if seals >= 0
    ));
    // Over a socket: a sealed file arrives as a new fd of the same file.
    let (a, b) = UnixStream::pair().unwrap();
    let sealed = SealedElf::new(b"sealed contents").unwrap();
    sealed.send(&a).unwrap();
    let got = SealedElf::recv(&b).unwrap();
    assert_eq!(got.len(), sealed.len());
    assert_ne!(got.as_raw_fd(), sealed.as_raw_fd());
    drop((got, sealed));
    // A message without a descriptor, and a closed socket, are errors.
    (&a).write_all(b"E").unwrap();
    assert!(matches!(SealedElf::recv(&b), Err(Error::Io { .. })));
    drop(a);
    assert!(matches!(SealedElf::recv(&b), Err(Error::Io { .. })));
    drop(b);
    assert_eq!(open_fds(), before, "a descriptor leaked");
}

#[test]
fn both_backends_load_in_process_and_garbage_is_refused() {
    // Opens descriptors: must not run while another test counts them.
    let _g = serial();
    let sealed = SealedElf::new(&test_lib("example")).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { sealed.load() }.unwrap();
    assert!(img.segments().all(|s| s.placement == Placement::Mapped));
    assert_eq!(call_add(&img, 40, 2), 42);
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { sealed.load_system() }.unwrap();
    assert_eq!(sys.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(call_add(&sys, 40, 2), 42);
    // Loading the same sealed file again shares the loader's object.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys2 = unsafe { sealed.load_system() }.unwrap();
    assert_eq!(sys2.base_address(), sys.base_address());
    drop(sys);
    assert_eq!(call_add(&sys2, 1, 2), 3);
    let clone = sealed.try_clone().unwrap();
    drop(sealed);
    // SAFETY: a trusted test or machine library (its initialisers run).
    assert_eq!(call_add(&unsafe { clone.load() }.unwrap(), 1, 2), 3);

    let junk = SealedElf::new(b"definitely not an ELF file").unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    assert!(matches!(unsafe { junk.load() }, Err(Error::BadMagic)));
    // SAFETY: a trusted test or machine library (its initialisers run).
    assert!(matches!(
        unsafe { junk.load_system() },
        Err(Error::Dlopen { .. })
    ));
    let empty = SealedElf::new(b"").unwrap();
    assert!(empty.is_empty());
    // SAFETY: a trusted test or machine library (its initialisers run).
    assert!(matches!(
        unsafe { empty.load() },
        Err(Error::Truncated { .. })
    ));
}
