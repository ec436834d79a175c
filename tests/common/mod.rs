//! What the integration tests share: where the libraries are, and what the
//! process's address space and fd table look like.
//!
//! Each test file includes it with `mod common;`; not every file uses every
//! helper.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The machine's multiarch library directory for the target architecture.
pub const MULTIARCH_DIR: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu"
} else {
    "/usr/lib/x86_64-linux-gnu"
};

/// Path of a library of the machine, e.g. `libz.so.1`.
pub fn machine_lib_path(name: &str) -> PathBuf {
    Path::new(MULTIARCH_DIR).join(name)
}

/// Bytes of a library of the machine. `.ci/run` installs every library the
/// tests read: a missing one is a failure, never a skip.
pub fn machine_lib(name: &str) -> Vec<u8> {
    let path = machine_lib_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Path of a test library built from `test-dylibs/` (by the
/// `memdl-test-dylibs` dev-dependency), by its short name (`"example"` is
/// `libexample.so`).
pub fn test_lib_path(name: &str) -> PathBuf {
    memdl_test_dylibs::path(name)
}

/// Bytes of a test library built from `test-dylibs/`.
pub fn test_lib(name: &str) -> Vec<u8> {
    let path = test_lib_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: usize,
    pub end: usize,
    /// `rwxp` / `r-xs` ...
    pub perms: String,
    /// Path or pseudo-name (`[heap]`, `/memfd:x (deleted)`), possibly empty.
    pub name: String,
}

/// Every mapping of this process.
pub fn maps() -> Vec<MapEntry> {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let name = f.nth(3).unwrap_or("").to_owned();
            let (s, e) = range.split_once('-')?;
            Some(MapEntry {
                start: usize::from_str_radix(s, 16).ok()?,
                end: usize::from_str_radix(e, 16).ok()?,
                perms: perms.to_owned(),
                name,
            })
        })
        .collect()
}

/// Mappings overlapping `[lo, hi)`.
pub fn mappings_in(lo: usize, hi: usize) -> Vec<MapEntry> {
    maps()
        .into_iter()
        .filter(|m| m.start < hi && m.end > lo)
        .collect()
}

/// Number of mappings of this process.
pub fn maps_count() -> usize {
    maps().len()
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The W^X audit: no mapping of the process is writable and executable.
pub fn assert_no_wx() {
    for m in maps() {
        assert!(
            !(m.perms.contains('w') && m.perms.contains('x')),
            "writable and executable mapping: {m:?}"
        );
    }
}

/// Runs `f` in a forked child that writes its report to the pipe `f` is
/// given, and returns that report and the child's wait status. The child
/// exits with the code `f` returns, or 101 if it panics, and never returns
/// into the test harness. Callers fork while no other thread of theirs is
/// inside memdl or holds a lock the child needs.
pub fn run_in_child(f: impl FnOnce(&mut std::fs::File) -> i32) -> (String, libc::c_int) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: freshly created descriptors, owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child runs `f` and leaves with _exit; it never returns
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(rd);
        let mut out = std::fs::File::from(wr);
        // A panic must not unwind into the forked copy of the harness.
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut out))).unwrap_or(101);
        drop(out);
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    let mut report = String::new();
    std::fs::File::from(rd)
        .read_to_string(&mut report)
        .expect("read the child's report");
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    (report, status)
}

/// Whether a wait status says the child exited normally with code 0.
pub fn exited_cleanly(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Takes this test binary's lock: tests of one file that must not overlap
/// (they count fds or mappings, or share process-wide state) hold it while
/// they run. Each test file is its own binary, so its lock is its own.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The function `name` of `lib`, typed `T`: every caller names a function
/// of the test library whose signature is `T`.
pub fn sym<T: Copy>(lib: &impl memdl::Library, name: &str) -> T {
    // SAFETY: the caller names a function of `lib` with signature `T`.
    unsafe { *lib.get::<T>(name).unwrap() }
}

/// A temporary container file: `head` bytes, the machine's zlib, then 777
/// bytes of trailer. Returns its path, zlib's offset and length.
pub fn zlib_container(head: usize) -> (tempfile::TempPath, u64, u64) {
    use std::io::Write;
    let lib = machine_lib("libz.so.1");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&vec![0xa5; head]).unwrap();
    f.write_all(&lib).unwrap();
    f.write_all(&[0x5a; 777]).unwrap();
    (f.into_temp_path(), head as u64, lib.len() as u64)
}

/// An empty directory of this process's under the temporary directory.
pub fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memdl-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// Events test libraries report through `memdl_test_host_trace` (the
/// deps_* libraries' initialisers and finalisers, import_only's).
static TRACE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Imported by test libraries (test executables export it: the root
/// build.rs links them with `--export-dynamic-symbol=memdl_test_host_*`).
///
/// # Safety
/// `event` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn memdl_test_host_trace(event: *const std::ffi::c_char) {
    // SAFETY: the caller's promise (the libraries pass string literals).
    let event = unsafe { std::ffi::CStr::from_ptr(event) };
    let mut trace = TRACE.lock().unwrap_or_else(|e| e.into_inner());
    trace.push(event.to_string_lossy().into_owned());
}

/// The events traced so far, which are forgotten.
pub fn take_trace() -> Vec<String> {
    std::mem::take(&mut *TRACE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The biggest `libLLVM*.so*` of the installed Rust toolchains.
pub fn rust_libllvm() -> Option<PathBuf> {
    let home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".rustup")))?;
    std::fs::read_dir(home.join("toolchains"))
        .ok()?
        .flatten()
        .filter_map(|tc| std::fs::read_dir(tc.path().join("lib")).ok())
        .flat_map(|d| d.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with("libLLVM"))
        .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
        .max()
        .map(|(_, p)| p)
}

type FindFde =
    unsafe extern "C" fn(*mut std::ffi::c_void, *mut [usize; 3]) -> *const std::ffi::c_void;

/// libgcc's FDE lookup, the one every unwinder step does.
pub fn find_fde(pc: usize) -> *const std::ffi::c_void {
    // SAFETY: a lookup of a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_Unwind_Find_FDE".as_ptr()) };
    assert!(!f.is_null(), "no libgcc unwinder in the process");
    // SAFETY: _Unwind_Find_FDE(void *pc, struct dwarf_eh_bases *) with a
    // three-pointer bases struct.
    let f: FindFde = unsafe { std::mem::transmute::<*mut std::ffi::c_void, FindFde>(f) };
    let mut bases = [0usize; 3];
    // SAFETY: as above; `pc` is only looked up, never run.
    unsafe { f(pc as *mut std::ffi::c_void, &mut bases) }
}
