//! `SystemImage::load_fd`: every strategy forced, the automatic choice for
//! whole files and for ranges inside a container, and the fallback when
//! memfds are unavailable (a child process under a seccomp filter).

#![cfg(target_os = "linux")]

use std::ffi::{c_uint, c_ulong};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use memdl::{Error, Library, Options, SystemImage, SystemStrategy, SystemStrategyUsed};

mod common;
use common::{
    fresh_dir, machine_lib, machine_lib_path, maps, open_fds, page_size, serial, zlib_container,
};

// Why these tests take serial() (tests/common): tests here count file
// descriptors: one at a time.

type Crc32 = unsafe extern "C" fn(c_ulong, *const u8, c_uint) -> c_ulong;

fn crc_hello(img: &SystemImage) -> c_ulong {
    // SAFETY: zlib's crc32(uLong, const Bytef *, uInt).
    let crc32: memdl::Symbol<'_, Crc32> = unsafe { img.get("crc32") }.expect("crc32");
    // SAFETY: a 5-byte buffer.
    unsafe { crc32(0, b"hello".as_ptr(), 5) }
}

fn with(strategy: SystemStrategy) -> Options {
    Options::new().system_strategy(strategy)
}

/// The `/proc/self/maps` name of the mapping holding `addr`.
fn mapping_name(addr: usize) -> String {
    maps()
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| m.name)
        .unwrap_or_default()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn whole_file_is_opened_through_a_duplicate_of_the_callers_fd() {
    let _g = serial();
    let before = open_fds();
    let file = File::open(machine_lib_path("libz.so.1")).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load_fd(&file, 0, len) }.expect("load");
    assert_eq!(img.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(img.backend(), "fd+dlopen");
    // The caller's fd and the image's duplicate.
    assert_eq!(open_fds(), before + 2);
    // The caller may close its own: the image holds the duplicate.
    drop(file);
    assert_eq!(crc_hello(&img), 0x3610_a686);
    // No copy: the code is mapped from the library file itself.
    let crc = img.symbol_address(b"crc32").unwrap() as usize;
    // (/usr/lib/.../libz.so.1.2.13: the loader resolved the symlink.)
    assert!(
        mapping_name(crc).contains("/libz.so.1"),
        "{}",
        mapping_name(crc)
    );
    // Close-on-exec, as the image's private fd must be.
    let dup_fd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("/libz.so.1"))
        })
        .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .expect("the image's duplicate fd");
    // SAFETY: F_GETFD on an fd number we just saw open.
    let flags = unsafe { libc::fcntl(dup_fd, libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    drop(img);
    assert_eq!(open_fds(), before);
}

#[test]
fn two_whole_files_at_once_stay_themselves() {
    let _g = serial();
    let z = File::open(machine_lib_path("libz.so.1")).unwrap();
    let s = File::open(machine_lib_path("libsqlite3.so.0")).unwrap();
    let (zl, sl) = (z.metadata().unwrap().len(), s.metadata().unwrap().len());
    // SAFETY: a trusted test or machine library (its initialisers run).
    let zi = unsafe { SystemImage::load_fd(&z, 0, zl) }.unwrap();
    drop(z);
    // SAFETY: a trusted test or machine library (its initialisers run).
    let si = unsafe { SystemImage::load_fd(&s, 0, sl) }.unwrap();
    assert_eq!(crc_hello(&zi), 0x3610_a686);
    assert!(si.symbol_address(b"sqlite3_libversion").is_ok());
    assert!(si.symbol_address(b"crc32").is_err());
    assert!(zi.symbol_address(b"sqlite3_libversion").is_err());
}

#[test]
fn one_file_loaded_twice_is_one_shared_object() {
    let _g = serial();
    let before = open_fds();
    let file = File::open(machine_lib_path("libz.so.1")).unwrap();
    let len = file.metadata().unwrap().len();
    // The loader recognises the file by device and inode, as a second
    // dlopen of one path would: both images are the same object.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let a = unsafe { SystemImage::load_fd(&file, 0, len) }.expect("first");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let b = unsafe { SystemImage::load_fd(&file, 0, len) }.expect("second, same file");
    assert_eq!(a.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(b.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(a.base_address(), b.base_address());
    drop(a);
    // The object stays while the other image holds its reference.
    assert_eq!(crc_hello(&b), 0x3610_a686);
    // A memfd copy of the same bytes is a different file: its own object.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let c =
        unsafe { SystemImage::load_with(&machine_lib("libz.so.1"), &with(SystemStrategy::Memfd)) }
            .expect("memfd copy");
    assert_ne!(c.base_address(), b.base_address());
    drop((b, c, file));
    assert_eq!(open_fds(), before);
}

#[test]
fn range_inside_a_container_is_copied_into_a_sealed_memfd() {
    let _g = serial();
    for head in [1000usize, page_size() as usize * 2] {
        let (path, offset, len) = zlib_container(head);
        let file = File::open(&path).unwrap();
        let before = open_fds();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load_fd(&file, offset, len) }.expect("load");
        assert_eq!(img.strategy(), SystemStrategyUsed::Memfd);
        assert_eq!(open_fds(), before + 1);
        assert_eq!(crc_hello(&img), 0x3610_a686);
        let crc = img.symbol_address(b"crc32").unwrap() as usize;
        assert!(mapping_name(crc).starts_with("/memfd:memdl:"));
        // The container can go: the memfd holds its own copy.
        drop(file);
        drop(path);
        assert_eq!(crc_hello(&img), 0x3610_a686);
        drop(img);
        assert_eq!(open_fds(), before - 1);
    }
}

#[test]
fn each_strategy_forced() {
    let _g = serial();
    let (path, offset, len) = zlib_container(1000);
    let boxed = File::open(&path).unwrap();
    let whole = File::open(machine_lib_path("libz.so.1")).unwrap();
    let whole_len = whole.metadata().unwrap().len();
    let bytes = machine_lib("libz.so.1");
    let dir = fresh_dir("forced");
    let before = open_fds();

    // ProcFd: the whole file only.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img =
        unsafe { SystemImage::load_fd_with(&whole, 0, whole_len, &with(SystemStrategy::ProcFd)) }
            .expect("ProcFd");
    assert_eq!(img.strategy(), SystemStrategyUsed::ProcFd);
    assert_eq!(crc_hello(&img), 0x3610_a686);
    drop(img);
    for err in [
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe { SystemImage::load_fd_with(&boxed, offset, len, &with(SystemStrategy::ProcFd)) }
            .unwrap_err(),
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe {
            SystemImage::load_fd_with(&whole, 0, whole_len - 1, &with(SystemStrategy::ProcFd))
        }
        .unwrap_err(),
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe { SystemImage::load_with(&bytes, &with(SystemStrategy::ProcFd)) }.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::Unsupported(m) if m.contains("whole file")),
            "{err:?}"
        );
    }

    // Memfd: even for a whole file, a copy.
    for (fd, o, l) in [(&whole, 0, whole_len), (&boxed, offset, len)] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load_fd_with(fd, o, l, &with(SystemStrategy::Memfd)) }
            .expect("Memfd");
        assert_eq!(img.strategy(), SystemStrategyUsed::Memfd);
        assert_eq!(crc_hello(&img), 0x3610_a686);
    }

    // TempFile: nothing visible in the directory, before or after.
    let tmp = with(SystemStrategy::TempFile(dir.clone()));
    for (fd, o, l) in [(&whole, 0, whole_len), (&boxed, offset, len)] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load_fd_with(fd, o, l, &tmp) }.expect("TempFile");
        assert!(matches!(
            img.strategy(),
            SystemStrategyUsed::UnnamedTempFile | SystemStrategyUsed::NamedTempFile
        ));
        assert_eq!(entries(&dir), 0);
        assert_eq!(crc_hello(&img), 0x3610_a686);
    }

    // The other platforms' strategies do not exist here.
    for s in [SystemStrategy::AndroidDlopenExt, SystemStrategy::Fdlopen] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = unsafe { SystemImage::load_fd_with(&boxed, offset, len, &with(s.clone())) }
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = unsafe { SystemImage::load_with(&bytes, &with(s)) }.unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    }
    assert_eq!(open_fds(), before, "a strategy leaked an fd");
    assert_eq!(entries(&dir), 0);
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn bad_ranges_and_garbage_leave_nothing_behind() {
    let _g = serial();
    let (path, offset, len) = zlib_container(1000);
    let file = File::open(&path).unwrap();
    let dir = fresh_dir("bad");
    let before = open_fds();
    for (o, l) in [(offset, len + 10_000), (u64::MAX - 10, 100), (offset, 0)] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = unsafe { SystemImage::load_fd(&file, o, l) }.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    what: "file range",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // Not an ELF at that offset: the loader refuses, on every path.
    for s in [
        SystemStrategy::Auto,
        SystemStrategy::Memfd,
        SystemStrategy::TempFile(dir.clone()),
    ] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err =
            unsafe { SystemImage::load_fd_with(&file, offset + 1, len - 1, &with(s)) }.unwrap_err();
        assert!(matches!(err, Error::Dlopen { .. }), "{err:?}");
    }
    // The whole container is not an ELF either (junk head).
    let size = file.metadata().unwrap().len();
    for s in [SystemStrategy::Auto, SystemStrategy::ProcFd] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = unsafe { SystemImage::load_fd_with(&file, 0, size, &with(s)) }.unwrap_err();
        assert!(matches!(err, Error::Dlopen { .. }), "{err:?}");
    }
    assert_eq!(open_fds(), before);
    assert_eq!(entries(&dir), 0);
    std::fs::remove_dir(&dir).unwrap();
}

/// Set in the re-executed test binary that runs the child's half.
const CHILD: &str = "MEMDL_SYSTEM_FD_CHILD";

/// Makes `memfd_create` fail with `ENOSYS` for the whole process, as an old
/// kernel or a sandbox's seccomp policy would.
fn deny_memfd_create() {
    // BPF: load the syscall number; memfd_create → ERRNO(ENOSYS), else allow.
    // (No architecture check: the test runs natively.)
    let nr = libc::SYS_memfd_create as u32;
    let filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0, // offsetof(struct seccomp_data, nr)
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; the seccomp call
    // reads `prog` (and the filter it points to), both alive for the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_TSYNC,
                &prog as *const libc::sock_fprog,
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Unnamed (O_TMPFILE) where TMPDIR's file system has it, named otherwise.
fn is_temp(s: SystemStrategyUsed) -> bool {
    matches!(
        s,
        SystemStrategyUsed::UnnamedTempFile | SystemStrategyUsed::NamedTempFile
    )
}

fn child_without_memfd() {
    deny_memfd_create();
    // SAFETY: a plain system call with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), 0) };
    assert_eq!(fd, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS)
    );

    let bytes = machine_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load(&bytes) }.expect("Auto falls back");
    assert!(is_temp(img.strategy()), "{:?}", img.strategy());
    assert_eq!(crc_hello(&img), 0x3610_a686);

    let (path, offset, len) = zlib_container(1000);
    let file = File::open(&path).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load_fd(&file, offset, len) }.expect("Auto falls back (fd)");
    assert!(is_temp(img.strategy()), "{:?}", img.strategy());
    assert_eq!(crc_hello(&img), 0x3610_a686);

    // Forcing the memfd is an error naming the call, not a fallback.
    // SAFETY: a trusted test or machine library (its initialisers run).
    match unsafe { SystemImage::load_with(&bytes, &with(SystemStrategy::Memfd)) } {
        Err(Error::Io {
            op: "memfd_create",
            source,
        }) => assert_eq!(source.raw_os_error(), Some(libc::ENOSYS)),
        other => panic!("expected memfd_create ENOSYS, got {other:?}"),
    }
    println!("child: memfd denied, temp file used");
}

#[test]
fn memfd_unavailable_falls_back_to_a_temp_file() {
    if std::env::var_os(CHILD).is_some() {
        return child_without_memfd();
    }
    let _g = serial();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memfd_unavailable_falls_back_to_a_temp_file",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The child really ran the test (not zero tests by a name mismatch).
    assert!(
        stdout.contains("child: memfd denied, temp file used"),
        "{stdout}"
    );
}

/// Set (to the directory with the noexec mount) in the re-executed child.
const NOEXEC_CHILD: &str = "MEMDL_NOEXEC_DIR";

fn child_on_noexec(dir: &Path) {
    use memdl::{ElfImage, Placement};
    let path = dir.join("libz.so");
    std::fs::write(&path, machine_lib("libz.so.1")).unwrap();
    let file = File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: fstatvfs into a zeroed struct, on an open fd.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs on an open fd, writing into a statvfs we own.
    assert_eq!(unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) }, 0);
    assert_ne!(st.f_flag & libc::ST_NOEXEC, 0, "the mount is not noexec");

    // The loader cannot map this file's code: Auto copies into a memfd...
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load_fd(&file, 0, len) }.expect("Auto");
    assert_eq!(img.strategy(), SystemStrategyUsed::Memfd);
    assert_eq!(crc_hello(&img), 0x3610_a686);
    // ...and forcing the file itself is the loader's refusal.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { SystemImage::load_fd_with(&file, 0, len, &with(SystemStrategy::ProcFd)) }
        .unwrap_err();
    assert!(matches!(err, Error::Dlopen { .. }), "{err:?}");

    // memdl's loader copies the code and still maps everything else.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.expect("ElfImage");
    for s in img.segments() {
        let want = if s.flags & 1 != 0 {
            Placement::Copied
        } else {
            Placement::Mapped
        };
        assert_eq!(s.placement, want, "{s:?}");
    }
    // SAFETY: zlib's crc32.
    let crc: memdl::Symbol<'_, Crc32> = unsafe { img.get("crc32") }.unwrap();
    // SAFETY: a 5-byte buffer.
    assert_eq!(unsafe { crc(0, b"hello".as_ptr(), 5) }, 0x3610_a686);
    println!("child: noexec mount handled");
}

/// Writes `data` to `path` with raw system calls (safe between fork and
/// exec, where nothing may allocate).
fn write_proc_file(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: NUL-terminated path; the buffer is valid for its length; the
    // fd is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

#[test]
fn noexec_mount_falls_back_from_the_file_to_a_copy() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    if let Some(dir) = std::env::var_os(NOEXEC_CHILD) {
        return child_on_noexec(Path::new(&dir));
    }
    let _g = serial();
    let dir = fresh_dir("noexec");
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let uid_map = format!("0 {uid} 1");
    let gid_map = format!("0 {gid} 1");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "noexec_mount_falls_back_from_the_file_to_a_copy",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(NOEXEC_CHILD, &dir);
    // SAFETY: between fork and exec only system calls run, on buffers
    // prepared before the fork; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            // The child gets its own mount namespace, so the noexec mount is
            // invisible to everyone else and disappears with it. As root
            // that is enough; otherwise a user namespace grants the right.
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                write_proc_file(c"/proc/self/setgroups", b"deny")?;
                write_proc_file(c"/proc/self/uid_map", uid_map.as_bytes())?;
                write_proc_file(c"/proc/self/gid_map", gid_map.as_bytes())?;
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ) != 0
                || libc::mount(
                    c"memdl-noexec".as_ptr(),
                    cdir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_NODEV,
                    none.cast(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .expect("a child in its own mount namespace (needs CAP_SYS_ADMIN or user namespaces)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("child: noexec mount handled"), "{stdout}");
    // The mount died with the child: the directory here is empty.
    assert_eq!(entries(&dir), 0);
    std::fs::remove_dir(&dir).unwrap();
}
