//! # memdl-preload: a program's `dlopen` family, routed through memdl
//!
//! `LD_PRELOAD=libmemdl_preload.so PROGRAM` makes the libraries PROGRAM
//! opens with `dlopen` load with memdl's custom loader ([`memdl::ElfImage`])
//! instead of the system's, with the system loader's semantics where
//! programs rely on them:
//!
//! * one handle per library, however it is named (path, or the name it was
//!   found by, or its `DT_SONAME`; a path is matched by device and inode),
//!   with a reference count; `dlclose` of the last reference runs the
//!   finalisers and unmaps it (not with `RTLD_NODELETE`/`DF_1_NODELETE`);
//! * `RTLD_NOLOAD`; `RTLD_GLOBAL` (later loads bind to the library's
//!   exports where the system's global scope has no definition, and
//!   `dlsym(RTLD_DEFAULT)` and `dlsym(dlopen(NULL))` find them; a later
//!   `dlopen` with `RTLD_GLOBAL` promotes it); `RTLD_LAZY` binds now;
//! * `dlsym` through a handle searches the library, then its `DT_NEEDED`
//!   libraries; `RTLD_NEXT` from a memdl library searches its `DT_NEEDED`
//!   libraries, the global scope, then memdl's global libraries loaded
//!   after it; `dlvsym` honours versions;
//! * `dlerror` per thread, once per failure, for memdl's failures and the
//!   system's alike, with glibc's texts (`<path>: undefined symbol: <name>`,
//!   `<name>: cannot open shared object file: No such file or directory`);
//! * `dladdr`, `dladdr1`, `dlinfo` and `dl_iterate_phdr` know memdl's
//!   libraries as well as the system's.
//!
//! What stays with the system loader: `dlopen(NULL)`; libraries it already
//! has (libc, the program's own dependencies, and the `DT_NEEDED`
//! libraries of memdl's images, which memdl opens with the system loader);
//! `dlmopen` into a namespace other than `LM_ID_BASE` and `RTLD_DEEPBIND`
//! (refusals, see below). Calls from system code whose answer cannot
//! involve memdl's libraries (a system handle; `RTLD_NEXT` from a system
//! library; `RTLD_DEFAULT` while no memdl library is global) are handed to
//! the system unchanged, with the caller's own return address.
//!
//! Where memdl refuses a library the system loader loads it instead and
//! `MEMDL_PRELOAD_LOG` says why; with `MEMDL_PRELOAD_STRICT=1` that is a
//! `dlopen` failure instead. `MEMDL_PRELOAD_LOG=FILE` gets one line per
//! library opened: `custom <path>` or `system <path>: <reason>`; under
//! strict mode a refusal is `refused <path>: <reason>` (nothing loaded).
//!
//! Libraries still open at exit have their finalisers run (not unmapped),
//! as glibc does. Not done: `RTLD_DI_SERINFO`; `$LIB`/`$PLATFORM` and
//! `glibc-hwcaps` in the search by name (see `search.rs`); `RTLD_DEFAULT`
//! from a system library does not search that library's own local scope
//! once any memdl library is global (the lookup is then made from here).

#![deny(unsafe_op_in_unsafe_fn)]
// glibc's dlopen family on x86_64 and aarch64 (the entry points are
// per-architecture assembly; the real functions are found through glibc's
// `_r_debug`). Elsewhere the crate is empty.
#![cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

mod real;
mod search;
mod stubs;

use std::cell::{RefCell, UnsafeCell};
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memdl::{ElfImage, Library, Options, ProgramHeader};

use real::{reals, LinkMap};
use stubs::which;

pub(crate) type PhdrCallback =
    unsafe extern "C" fn(*mut libc::dl_phdr_info, libc::size_t, *mut c_void) -> c_int;

// ---- configuration and the log ---------------------------------------------

struct Config {
    strict: bool,
    log: Option<CString>,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let strict =
            std::env::var_os("MEMDL_PRELOAD_STRICT").is_some_and(|v| !v.is_empty() && v != "0");
        // A relative name is taken against the working directory at the
        // first dlopen and kept (`memdl run` passes an absolute one).
        let log = std::env::var_os("MEMDL_PRELOAD_LOG")
            .filter(|v| !v.is_empty())
            .map(|v| {
                let p = Path::new(&v);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    std::env::current_dir().unwrap_or_default().join(p)
                }
            })
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        Config { strict, log }
    })
}

/// Appends `line` and a newline to the log with one `write` (`O_APPEND`:
/// lines of concurrent processes do not interleave).
fn log_line(line: &str) {
    let Some(path) = &config().log else { return };
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.retain(|&c| c != b'\n');
    buf.push(b'\n');
    // SAFETY: open/write/close of a file we own for the call, with a
    // buffer we own. Opened each time: the program may close descriptors.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        );
        if fd >= 0 {
            libc::write(fd, buf.as_ptr().cast(), buf.len());
            libc::close(fd);
        }
    }
}

// ---- dlerror ----------------------------------------------------------------

thread_local! {
    /// This thread's memdl-side error: (pending, last returned by dlerror).
    static ERROR: RefCell<(Option<CString>, Option<CString>)> = const { RefCell::new((None, None)) };
}

fn set_error(message: String) {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = ERROR.try_with(|e| e.borrow_mut().0 = Some(message));
}

fn clear_ours() {
    let _ = ERROR.try_with(|e| e.borrow_mut().0 = None);
}

fn ours_pending() -> bool {
    ERROR.try_with(|e| e.borrow().0.is_some()).unwrap_or(false)
}

/// Takes the system's pending error (so that it cannot surface later), as text.
fn consume_real() -> Option<String> {
    // SAFETY: the real dlerror has no preconditions; its result is null or
    // a C string valid until the next dl call on this thread.
    unsafe {
        let f: unsafe extern "C" fn() -> *mut c_char = std::mem::transmute(reals().dlerror);
        let m = f();
        (!m.is_null()).then(|| CStr::from_ptr(m).to_string_lossy().into_owned())
    }
}

/// Every call of the family replaces the previous call's error, as glibc's
/// do: ours and the system's.
fn begin() {
    clear_ours();
    consume_real();
}

/// Runs an entry point's body; a panic becomes a failure with a message,
/// never an unwind into C.
fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            set_error("memdl-preload: internal error".to_owned());
            fallback
        }
    }
}

// ---- the real functions, typed ----------------------------------------------

fn real_dlopen(file: *const c_char, mode: c_int) -> *mut c_void {
    // SAFETY: the C library's dlopen, with a NUL-terminated name (or null).
    unsafe {
        let f: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void =
            std::mem::transmute(reals().dlopen);
        f(file, mode)
    }
}

fn real_dlclose(handle: usize) -> c_int {
    // SAFETY: the C library's dlclose of a handle it gave us.
    unsafe {
        let f: unsafe extern "C" fn(*mut c_void) -> c_int = std::mem::transmute(reals().dlclose);
        f(handle as *mut c_void)
    }
}

/// The system's `dlsym`/`dlvsym` of `name` (0 if absent; its error consumed).
fn real_lookup(handle: usize, name: &CStr, version: Option<&CStr>) -> usize {
    let r = reals();
    // SAFETY: the C library's dlsym/dlvsym, with a handle it gave us (or a
    // pseudo-handle) and NUL-terminated strings.
    let found = unsafe {
        match version {
            None => {
                let f: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void =
                    std::mem::transmute(r.dlsym);
                f(handle as *mut c_void, name.as_ptr())
            }
            Some(v) => {
                let f: unsafe extern "C" fn(
                    *mut c_void,
                    *const c_char,
                    *const c_char,
                ) -> *mut c_void = std::mem::transmute(r.dlvsym);
                f(handle as *mut c_void, name.as_ptr(), v.as_ptr())
            }
        }
    };
    if found.is_null() {
        consume_real();
    }
    found as usize
}

// ---- handles and records ----------------------------------------------------

/// A recursive lock around `dlopen`/`dlclose` (a library's initialiser or
/// finaliser may open or close another), as glibc's `dl_load_lock`.
struct DlLock(UnsafeCell<libc::pthread_mutex_t>);
// SAFETY: a pthread mutex is made to be shared between threads.
unsafe impl Sync for DlLock {}
static DL_LOCK: DlLock = DlLock(UnsafeCell::new(
    libc::PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP,
));

struct DlGuard;
fn dl_lock() -> DlGuard {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registering a child handler that takes no arguments.
        unsafe { libc::pthread_atfork(None, None, Some(reset_dl_lock)) };
    });
    // SAFETY: a statically initialised recursive mutex, unlocked by the guard.
    unsafe { libc::pthread_mutex_lock(DL_LOCK.0.get()) };
    DlGuard
}
/// In a forked child only the forking thread exists: a lock another thread
/// held at the fork would never be released, so the child starts afresh.
extern "C" fn reset_dl_lock() {
    // SAFETY: the child is single-threaded here; nobody else uses the lock.
    unsafe {
        DL_LOCK
            .0
            .get()
            .write(libc::PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP)
    };
}

impl Drop for DlGuard {
    fn drop(&mut self) {
        // SAFETY: locked by this thread in `dl_lock`.
        unsafe { libc::pthread_mutex_unlock(DL_LOCK.0.get()) };
    }
}

/// memdl handles are addresses in a reserved, inaccessible range: they can
/// never equal a glibc handle (a live heap address) and are never reused
/// (a closed handle stays invalid, and answers cached by handle stay right).
const HANDLE_SPAN: usize = 1 << 30;
const HANDLE_STEP: usize = 16;

fn handle_base() -> usize {
    static BASE: OnceLock<usize> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: a fresh PROT_NONE reservation; nothing is ever mapped or
        // accessed there, only its addresses are used.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HANDLE_SPAN,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            usize::MAX - HANDLE_SPAN
        } else {
            p as usize
        }
    })
}

fn is_our_handle(h: usize) -> bool {
    let base = handle_base();
    h >= base && h < base + HANDLE_SPAN
}

fn new_handle() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (HANDLE_SPAN / HANDLE_STEP);
    handle_base() + n * HANDLE_STEP
}

/// What the dynamic section of a loaded image says, read from its memory.
#[derive(Default)]
struct DynInfo {
    needed: Vec<Vec<u8>>,
    soname: Option<Vec<u8>>,
    flags_1: u64,
    symtab: usize,
    strtab: usize,
    strsz: usize,
    /// `DT_RPATH` and `DT_RUNPATH` (unexpanded).
    rpath: Option<Vec<u8>>,
    runpath: Option<Vec<u8>>,
    /// `DT_FINI_ARRAY` (runtime address), its size, `DT_FINI` (runtime address).
    fini_array: usize,
    fini_arraysz: usize,
    fini: usize,
}

/// One library memdl loaded for the program.
struct Record {
    handle: usize,
    image: Arc<ElfImage>,
    /// The name as opened (a path), as `dli_fname`, `dlpi_name`, `l_name`.
    path: CString,
    /// Names without a slash it answers to: `DT_SONAME` and names it was
    /// opened by.
    names: Mutex<Vec<Vec<u8>>>,
    dev: u64,
    ino: u64,
    refs: AtomicUsize,
    global: AtomicBool,
    nodelete: AtomicBool,
    /// Load order (for `RTLD_NEXT` among global libraries).
    seq: u64,
    map_start: usize,
    bias: usize,
    ranges: Vec<(usize, usize)>,
    /// The executable ones among them.
    code: Vec<(usize, usize)>,
    phdrs: Vec<ProgramHeader>,
    dyn_info: DynInfo,
    /// Handles of its `DT_NEEDED` libraries (one reference each), in order.
    deps: Vec<usize>,
    /// Libraries of ours it may have bound to (global when it was loaded,
    /// or found by its `dlsym(RTLD_DEFAULT/RTLD_NEXT)`): one reference each,
    /// as glibc keeps a library another one bound to.
    reldeps: Mutex<Vec<usize>>,
    link_map: Box<UnsafeCell<LinkMap>>,
    /// Exports the system's global scope does not define (for later loads).
    global_syms: OnceLock<Vec<(Vec<u8>, usize)>>,
}

// SAFETY: the raw pointers (in `link_map`) point into the record itself;
// everything mutable is atomic or behind a lock; ElfImage is Send + Sync.
unsafe impl Send for Record {}
// SAFETY: see above.
unsafe impl Sync for Record {}

impl Record {
    fn contains(&self, addr: usize) -> bool {
        self.ranges.iter().any(|&(s, e)| addr >= s && addr < e)
    }

    fn answers_to(&self, name: &[u8]) -> bool {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|n| n == name)
    }

    /// The image's own export `name` (at `version`), if any.
    fn own(&self, name: &CStr, version: Option<&CStr>) -> Option<usize> {
        match version {
            None => self
                .image
                .symbol_address(name.to_bytes())
                .ok()
                .map(|p| p as usize),
            // SAFETY: only the address is taken, never called or read here.
            Some(v) => unsafe {
                self.image
                    .get_versioned::<*const c_void>(name.to_bytes(), v.to_bytes())
            }
            .ok()
            .map(|s| s.as_ptr() as usize),
        }
    }

    /// Exports of this library the system's global scope does not have:
    /// what later loads may bind to while it is global.
    fn global_syms(&self) -> &[(Vec<u8>, usize)] {
        self.global_syms.get_or_init(|| {
            self.image
                .exports()
                .filter(|(name, _)| {
                    CString::new(*name).is_ok_and(|c| real_lookup(0, &c, None) == 0)
                })
                .map(|(name, addr)| (name.to_vec(), addr))
                .collect()
        })
    }
}

/// The libraries memdl loaded, in load order.
static RECORDS: Mutex<Vec<Arc<Record>>> = Mutex::new(Vec::new());
/// How many there are (read without the lock on fast paths).
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many are global.
static GLOBALS: AtomicUsize = AtomicUsize::new(0);
/// Added and removed, for `dlpi_adds`/`dlpi_subs`.
static ADDS: AtomicU64 = AtomicU64::new(0);
static SUBS: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

fn records() -> std::sync::MutexGuard<'static, Vec<Arc<Record>>> {
    RECORDS.lock().unwrap_or_else(|p| p.into_inner())
}

fn snapshot() -> Vec<Arc<Record>> {
    records().clone()
}

fn find_record(handle: usize) -> Option<Arc<Record>> {
    records().iter().find(|r| r.handle == handle).cloned()
}

fn record_containing(addr: usize) -> Option<Arc<Record>> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    records().iter().find(|r| r.contains(addr)).cloned()
}

fn file_id(path: &CStr) -> Option<(u64, u64)> {
    // SAFETY: stat of a NUL-terminated path into a zeroed struct we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::stat(path.as_ptr(), &mut st) == 0).then_some((st.st_dev, st.st_ino))
    }
}

/// The record a `dlopen` name refers to: a path by text or by file
/// identity, a bare name by the names the library answers to.
fn find_by_name(name: &CStr) -> Option<Arc<Record>> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let bytes = name.to_bytes();
    if bytes.contains(&b'/') {
        let all = snapshot();
        if let Some(r) = all.iter().find(|r| r.path.as_bytes() == bytes) {
            return Some(Arc::clone(r));
        }
        let id = file_id(name)?;
        all.into_iter().find(|r| (r.dev, r.ino) == id)
    } else {
        snapshot().into_iter().find(|r| r.answers_to(bytes))
    }
}

// ---- routing ----------------------------------------------------------------

/// Who answers a call of the family (see `stubs.rs`): the address of the
/// system's function (the entry jumps there), or 0 for ours.
extern "C" fn route(which: usize, ra: usize, args: *const usize) -> usize {
    std::panic::catch_unwind(|| {
        // SAFETY: `args` is the entry point's saved argument registers (six
        // on x86_64, eight on aarch64).
        let arg = |i: usize| unsafe { *args.add(i) };
        route_inner(which, ra, arg)
    })
    .unwrap_or(0)
}

fn route_inner(which: usize, ra: usize, arg: impl Fn(usize) -> usize) -> usize {
    let r = reals();
    let own = r.is_own(ra);
    // A forwarded call replaces our pending error as the system's own
    // calls replace each other's.
    let forward = |f: usize| {
        if !own {
            clear_ours();
        }
        f
    };
    match which {
        which::DLOPEN => {
            let file = arg(0) as *const c_char;
            // SAFETY: a non-null dlopen name is a NUL-terminated string.
            if file.is_null() || unsafe { *file } == 0 {
                return forward(r.dlopen);
            }
            if !own {
                return 0;
            }
            // memdl opening a DT_NEEDED library: ours if it is one of ours.
            // SAFETY: as above.
            match find_by_name(unsafe { CStr::from_ptr(file) }) {
                Some(_) => 0,
                None => r.dlopen,
            }
        }
        which::DLMOPEN if own => r.dlmopen,
        which::DLMOPEN => 0,
        which::DLSYM | which::DLVSYM => {
            let real = if which == which::DLSYM {
                r.dlsym
            } else {
                r.dlvsym
            };
            let h = arg(0);
            if is_our_handle(h) {
                0
            } else if own {
                real
            } else if h == libc::RTLD_NEXT as usize {
                if record_containing(ra).is_some() {
                    0
                } else {
                    forward(real)
                }
            } else if h == 0 || h == r.main_handle {
                if GLOBALS.load(Ordering::Relaxed) > 0 || record_containing(ra).is_some() {
                    0
                } else {
                    forward(real)
                }
            } else {
                forward(real)
            }
        }
        which::DLCLOSE | which::DLINFO => {
            let real = if which == which::DLCLOSE {
                r.dlclose
            } else {
                r.dlinfo
            };
            if is_our_handle(arg(0)) {
                0
            } else {
                forward(real)
            }
        }
        which::DLERROR => {
            if !own && ours_pending() {
                0
            } else {
                r.dlerror
            }
        }
        which::DLADDR | which::DLADDR1 => {
            let real = if which == which::DLADDR {
                r.dladdr
            } else {
                r.dladdr1
            };
            if record_containing(arg(0)).is_some() {
                0
            } else {
                real
            }
        }
        which::DL_ITERATE_PHDR if own || COUNT.load(Ordering::Relaxed) == 0 => r.dl_iterate_phdr,
        which::DL_ITERATE_PHDR => 0,
        _ => 0,
    }
}

// ---- dlopen -----------------------------------------------------------------

const RTLD_NOLOAD: c_int = libc::RTLD_NOLOAD;
const RTLD_GLOBAL: c_int = libc::RTLD_GLOBAL;
const RTLD_NODELETE: c_int = libc::RTLD_NODELETE;
const RTLD_DEEPBIND: c_int = 0x8;

pub(crate) unsafe extern "C" fn imp_dlopen(
    file: *const c_char,
    mode: c_int,
    ra: usize,
) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        let _lock = dl_lock();
        begin();
        // SAFETY: `route` sends only non-null names here.
        open(unsafe { CStr::from_ptr(file) }, mode, ra)
    })
}

pub(crate) unsafe extern "C" fn imp_dlmopen(
    lmid: c_long,
    file: *const c_char,
    mode: c_int,
    ra: usize,
) -> *mut c_void {
    if lmid == 0 {
        if file.is_null() {
            return real_dlopen(file, mode);
        }
        // SAFETY: forwarded arguments.
        return unsafe { imp_dlopen(file, mode, ra) };
    }
    guard(std::ptr::null_mut(), || {
        let _lock = dl_lock();
        begin();
        let name = if file.is_null() {
            "(null)".to_owned()
        } else {
            // SAFETY: a non-null name is NUL-terminated.
            unsafe { CStr::from_ptr(file) }
                .to_string_lossy()
                .into_owned()
        };
        let reason =
            "dlmopen into a namespace other than LM_ID_BASE: memdl has no link-map namespaces";
        if config().strict {
            log_line(&format!("refused {name}: {reason}"));
            set_error(strict_message(&name, reason));
            return std::ptr::null_mut();
        }
        log_line(&format!("system {name}: {reason}"));
        // SAFETY: the C library's dlmopen with the caller's arguments.
        unsafe {
            let f: unsafe extern "C" fn(c_long, *const c_char, c_int) -> *mut c_void =
                std::mem::transmute(reals().dlmopen);
            f(lmid, file, mode)
        }
    })
}

fn strict_message(name: &str, reason: &str) -> String {
    format!("{name}: memdl cannot load it ({reason}) and MEMDL_PRELOAD_STRICT=1 forbids the system loader")
}

/// Another reference to one of ours (with flags that may promote it).
fn reopen(rec: &Record, mode: c_int, name: &CStr) -> *mut c_void {
    rec.refs.fetch_add(1, Ordering::AcqRel);
    if mode & RTLD_NODELETE != 0 {
        rec.nodelete.store(true, Ordering::Release);
    }
    let bytes = name.to_bytes();
    if !bytes.contains(&b'/') && !rec.answers_to(bytes) {
        rec.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(bytes.to_vec());
    }
    if mode & RTLD_GLOBAL != 0 && !rec.global.swap(true, Ordering::AcqRel) {
        rec.global_syms();
        GLOBALS.fetch_add(1, Ordering::Relaxed);
    }
    rec.handle as *mut c_void
}

/// `dlopen` of a non-empty name, under the lock.
fn open(name: &CStr, mode: c_int, ra: usize) -> *mut c_void {
    let shown = name.to_string_lossy().into_owned();
    if let Some(rec) = find_by_name(name) {
        return reopen(&rec, mode, name);
    }
    // A library the system loader has (libc, the program's dependencies,
    // memdl's DT_NEEDED libraries) stays with it: its handle, one more
    // reference, as the system's dlopen would give.
    let system = real_dlopen(
        name.as_ptr(),
        (mode & (RTLD_GLOBAL | RTLD_NODELETE)) | RTLD_NOLOAD | libc::RTLD_LAZY,
    );
    if !system.is_null() {
        return system;
    }
    let noload_error = consume_real();
    if mode & RTLD_DEEPBIND != 0 {
        return refuse(
            &shown,
            name,
            mode,
            "RTLD_DEEPBIND is not supported by memdl's loader",
        );
    }
    let bytes = name.to_bytes();
    let path = if bytes.contains(&b'/') {
        name.to_owned()
    } else {
        let (rpath, runpath) = caller_paths(ra);
        match search::find(bytes, &rpath, &runpath)
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
        {
            Some(p) => p,
            None if mode & RTLD_NOLOAD != 0 => return std::ptr::null_mut(),
            None => return not_found(&shown, name, mode),
        }
    };
    // SAFETY: open of a NUL-terminated path; the descriptor is owned below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        if mode & RTLD_NOLOAD != 0 {
            if let Some(m) = noload_error {
                set_error(m);
            }
            return std::ptr::null_mut();
        }
        let err = std::io::Error::last_os_error();
        set_error(format!(
            "{shown}: cannot open shared object file: {}",
            strerror(&err)
        ));
        return std::ptr::null_mut();
    }
    // SAFETY: a descriptor we just opened and own.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: fstat of a live descriptor into a zeroed struct we own.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st);
        st
    };
    // The same file under another name is the same library.
    if let Some(rec) = snapshot()
        .into_iter()
        .find(|r| (r.dev, r.ino) == (st.st_dev, st.st_ino))
    {
        return reopen(&rec, mode, name);
    }
    if mode & RTLD_NOLOAD != 0 {
        if let Some(m) = noload_error {
            set_error(m);
        }
        return std::ptr::null_mut();
    }
    let options = load_options();
    // SAFETY: the program asked for this library to be loaded and run, as
    // it would with the system's dlopen; the file is not ours to change.
    let loaded = unsafe { ElfImage::load_fd_with(&file, 0, st.st_size as u64, &options) };
    drop(file);
    let path_text = path.to_string_lossy().into_owned();
    match loaded {
        Ok(image) => {
            let rec = make_record(image, path, name, mode, (st.st_dev, st.st_ino));
            log_line(&format!("custom {path_text}"));
            rec.handle as *mut c_void
        }
        Err(e) => refuse(&path_text, &path, mode, &e.to_string()),
    }
}

/// memdl cannot load it: the system loader does (logged), or, strict, a failure.
fn refuse(shown: &str, file: &CStr, mode: c_int, reason: &str) -> *mut c_void {
    if config().strict {
        log_line(&format!("refused {shown}: {reason}"));
        set_error(strict_message(shown, reason));
        return std::ptr::null_mut();
    }
    log_line(&format!("system {shown}: {reason}"));
    real_dlopen(file.as_ptr(), mode)
}

/// A name no directory of memdl's search has: the system loader may still
/// find it (`$LIB` in a path, `glibc-hwcaps`, ...), except in strict mode.
fn not_found(shown: &str, name: &CStr, mode: c_int) -> *mut c_void {
    let message = format!("{shown}: cannot open shared object file: No such file or directory");
    if config().strict {
        set_error(message);
        return std::ptr::null_mut();
    }
    let h = real_dlopen(name.as_ptr(), mode);
    if !h.is_null() {
        log_line(&format!(
            "system {}: not found in memdl's search path (LD_LIBRARY_PATH, ld.so.cache, default directories)",
            system_name(h).unwrap_or_else(|| shown.to_owned())
        ));
    }
    h
}

/// The system's name of a library it loaded (`l_name`).
fn system_name(handle: *mut c_void) -> Option<String> {
    let mut map: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: the C library's dlinfo with a handle it gave us and a
    // pointer-sized out argument.
    let ok = unsafe {
        let f: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void) -> c_int =
            std::mem::transmute(reals().dlinfo);
        f(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut map as *mut *mut LinkMap).cast(),
        )
    } == 0;
    // SAFETY: a link map of a loaded object and its NUL-terminated name.
    (ok && !map.is_null() && unsafe { !(*map).l_name.is_null() }).then(|| {
        // SAFETY: as above.
        unsafe { CStr::from_ptr((*map).l_name) }
            .to_string_lossy()
            .into_owned()
    })
}

fn strerror(err: &std::io::Error) -> String {
    let s = err.to_string();
    // "No such file or directory (os error 2)" -> glibc's text.
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Options of every load: our entry points bound in place of memdl's own
/// loader services, then the exports of the global libraries.
fn load_options() -> Options {
    let mut options = Options::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for (name, f) in stubs::bindings() {
        options = options.symbol(name, f);
        seen.insert(name.as_bytes().to_vec());
    }
    if GLOBALS.load(Ordering::Relaxed) > 0 {
        for rec in snapshot()
            .iter()
            .filter(|r| r.global.load(Ordering::Acquire))
        {
            for (name, addr) in rec.global_syms() {
                if seen.insert(name.clone()) {
                    options = options.symbol(name, *addr as *const c_void);
                }
            }
        }
    }
    options
}

/// Reads the dynamic section of a loaded image from its memory (its values
/// are link-time addresses; memdl does not rewrite them).
fn read_dynamic(bias: usize, dynamic: usize, rec_ranges: &[(usize, usize)]) -> DynInfo {
    let inside = |a: usize, len: usize| {
        rec_ranges
            .iter()
            .any(|&(s, e)| a >= s && a.checked_add(len).is_some_and(|end| end <= e))
    };
    let mut info = DynInfo::default();
    if dynamic == 0 {
        return info;
    }
    let mut needed = Vec::new();
    let mut soname = None;
    let (mut rpath, mut runpath) = (None, None);
    let mut at = dynamic;
    while inside(at, 16) {
        // SAFETY: inside a loaded segment of the image (checked above).
        let (tag, val) = unsafe { (*(at as *const i64), *((at + 8) as *const u64)) };
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => info.strtab = bias.wrapping_add(val as usize),
            6 => info.symtab = bias.wrapping_add(val as usize),
            10 => info.strsz = val as usize,
            13 => info.fini = bias.wrapping_add(val as usize),
            26 => info.fini_array = bias.wrapping_add(val as usize),
            28 => info.fini_arraysz = val as usize,
            14 => soname = Some(val),
            15 => rpath = Some(val),
            29 => runpath = Some(val),
            0x6fff_fffb => info.flags_1 = val,
            _ => {}
        }
        at += 16;
    }
    if !inside(info.strtab, info.strsz) {
        return DynInfo::default();
    }
    let string = |off: u64| -> Option<Vec<u8>> {
        let off = usize::try_from(off).ok().filter(|&o| o < info.strsz)?;
        // SAFETY: the string table lies in the image (checked above).
        let table = unsafe { std::slice::from_raw_parts(info.strtab as *const u8, info.strsz) };
        let s = &table[off..];
        Some(s[..s.iter().position(|&c| c == 0)?].to_vec())
    };
    info.needed = needed.into_iter().filter_map(string).collect();
    info.soname = soname.and_then(string);
    info.rpath = rpath.and_then(string);
    info.runpath = runpath.and_then(string);
    info
}

/// The search path lists of the object that called `dlopen` (return
/// address `ra`): its `DT_RPATH` (used only without a `DT_RUNPATH`, as
/// glibc does) and its `DT_RUNPATH`, with `$ORIGIN` expanded.
fn caller_paths(ra: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (origin, rpath, runpath) = match record_containing(ra) {
        Some(rec) => (
            Path::new(std::ffi::OsStr::from_bytes(rec.path.as_bytes()))
                .parent()
                .map(Path::to_path_buf),
            rec.dyn_info.rpath.clone(),
            rec.dyn_info.runpath.clone(),
        ),
        None => match system_caller_paths(ra) {
            Some(x) => x,
            None => return (Vec::new(), Vec::new()),
        },
    };
    let expand = |list: Option<Vec<u8>>| -> Vec<PathBuf> {
        let Some(list) = list else { return Vec::new() };
        list.split(|&c| c == b':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| {
                let d = String::from_utf8_lossy(d);
                let d = if d.contains("$ORIGIN") || d.contains("${ORIGIN}") {
                    let o = origin.as_ref()?.to_string_lossy().into_owned();
                    d.replace("${ORIGIN}", &o).replace("$ORIGIN", &o)
                } else {
                    d.into_owned()
                };
                // $LIB and $PLATFORM are not expanded: such entries are skipped.
                (!d.contains('$')).then(|| PathBuf::from(d))
            })
            .collect()
    };
    if runpath.is_some() {
        (Vec::new(), expand(runpath))
    } else {
        (expand(rpath), Vec::new())
    }
}

type CallerPaths = (Option<PathBuf>, Option<Vec<u8>>, Option<Vec<u8>>);

/// [`caller_paths`] for an object of the system loader: its link map's
/// dynamic section (glibc has relocated the table addresses in it).
fn system_caller_paths(ra: usize) -> Option<CallerPaths> {
    // SAFETY: dl_info and the link map pointer are plain data we own.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut map: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: the C library's dladdr1 with RTLD_DL_LINKMAP and out pointers.
    let ok = unsafe {
        let f: unsafe extern "C" fn(
            *const c_void,
            *mut libc::Dl_info,
            *mut *mut c_void,
            c_int,
        ) -> c_int = std::mem::transmute(reals().dladdr1);
        f(
            ra as *const c_void,
            &mut info,
            (&mut map as *mut *mut LinkMap).cast(),
            RTLD_DL_LINKMAP,
        )
    };
    if ok == 0 || map.is_null() {
        return None;
    }
    // SAFETY: a live link map (the caller's object is loaded: it called us).
    let (l_addr, l_name, l_ld) = unsafe { ((*map).l_addr, (*map).l_name, (*map).l_ld as usize) };
    // SAFETY: l_name is null or NUL-terminated.
    let name = (!l_name.is_null()).then(|| unsafe { CStr::from_ptr(l_name) }.to_bytes().to_vec());
    let origin = match name.filter(|n| !n.is_empty()) {
        Some(n) => Path::new(std::ffi::OsStr::from_bytes(&n))
            .parent()
            .map(Path::to_path_buf),
        // The main program.
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    };
    let (mut strtab, mut rpath, mut runpath) = (0usize, None, None);
    let mut at = l_ld;
    for _ in 0..4096 {
        if at == 0 {
            break;
        }
        // SAFETY: the dynamic section of a loaded object, up to DT_NULL.
        let (tag, val) = unsafe { (*(at as *const i64), *((at + 8) as *const u64)) };
        match tag {
            0 => break,
            5 => strtab = val as usize,
            15 => rpath = Some(val as usize),
            29 => runpath = Some(val as usize),
            _ => {}
        }
        at += 16;
    }
    if strtab == 0 {
        return Some((origin, None, None));
    }
    if strtab < l_addr {
        strtab = strtab.wrapping_add(l_addr);
    }
    // SAFETY: offsets into the object's string table of NUL-terminated names.
    let string = |off: usize| unsafe {
        CStr::from_ptr((strtab + off) as *const c_char)
            .to_bytes()
            .to_vec()
    };
    Some((origin, rpath.map(string), runpath.map(string)))
}

fn make_record(
    image: ElfImage,
    path: CString,
    name: &CStr,
    mode: c_int,
    (dev, ino): (u64, u64),
) -> Arc<Record> {
    let bias = image.base_address();
    let page = 4096usize.max(
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize,
    );
    let ranges: Vec<(usize, usize)> = image
        .segments()
        .map(|s| (s.address, s.address + s.size as usize))
        .collect();
    let code: Vec<(usize, usize)> = image
        .segments()
        .filter(|s| s.flags & libc::PF_X != 0)
        .map(|s| (s.address, s.address + s.size as usize))
        .collect();
    let map_start = ranges.iter().map(|r| r.0).min().unwrap_or(bias) & !(page - 1);
    let phdrs = memdl::images()
        .into_iter()
        .find(|i| i.base == bias)
        .map(|i| i.program_headers)
        .unwrap_or_default();
    let dynamic = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_DYNAMIC)
        .map_or(0, |p| bias.wrapping_add(p.p_vaddr as usize));
    let dyn_info = read_dynamic(bias, dynamic, &ranges);
    // References to its DT_NEEDED libraries, for dlsym through its handle.
    let mut deps = Vec::new();
    for needed in &dyn_info.needed {
        let Ok(c) = CString::new(needed.clone()) else {
            continue;
        };
        if let Some(dep) = find_by_name(&c) {
            dep.refs.fetch_add(1, Ordering::AcqRel);
            deps.push(dep.handle);
        } else {
            let h = real_dlopen(c.as_ptr(), RTLD_NOLOAD | libc::RTLD_LAZY);
            if h.is_null() {
                consume_real();
            } else {
                deps.push(h as usize);
            }
        }
    }
    let mut names = Vec::new();
    if let Some(s) = &dyn_info.soname {
        names.push(s.clone());
    }
    let bytes = name.to_bytes();
    if !bytes.contains(&b'/') && !names.iter().any(|n| n == bytes) {
        names.push(bytes.to_vec());
    }
    // Global libraries it may have bound to stay while it is loaded.
    let reldeps: Vec<usize> = snapshot()
        .into_iter()
        .filter(|g| g.global.load(Ordering::Acquire) && !g.global_syms().is_empty())
        .map(|g| {
            g.refs.fetch_add(1, Ordering::AcqRel);
            g.handle
        })
        .collect();
    let nodelete = mode & RTLD_NODELETE != 0 || dyn_info.flags_1 & 0x8 != 0;
    let global = mode & RTLD_GLOBAL != 0;
    let rec = Arc::new(Record {
        handle: new_handle(),
        image: Arc::new(image),
        path,
        names: Mutex::new(names),
        dev,
        ino,
        refs: AtomicUsize::new(1),
        global: AtomicBool::new(global),
        nodelete: AtomicBool::new(nodelete),
        seq: SEQ.fetch_add(1, Ordering::Relaxed),
        map_start,
        bias,
        ranges,
        code,
        phdrs,

        dyn_info,
        deps,
        reldeps: Mutex::new(reldeps),
        link_map: Box::new(UnsafeCell::new(LinkMap {
            l_addr: bias,
            l_name: std::ptr::null(),
            l_ld: dynamic as *mut c_void,
            l_next: std::ptr::null_mut(),
            l_prev: std::ptr::null_mut(),
        })),
        global_syms: OnceLock::new(),
    });
    // SAFETY: the record is not shared yet; l_name points into its own path.
    unsafe { (*rec.link_map.get()).l_name = rec.path.as_ptr() };
    if global {
        rec.global_syms();
    }
    records().push(Arc::clone(&rec));
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registering a function that takes no arguments.
        unsafe { libc::atexit(finalise_at_exit) };
    });
    COUNT.fetch_add(1, Ordering::Relaxed);
    ADDS.fetch_add(1, Ordering::Relaxed);
    if global {
        GLOBALS.fetch_add(1, Ordering::Relaxed);
    }
    rec
}

// ---- exit ---------------------------------------------------------------------

/// Set once the libraries still loaded at exit were finalised.
static EXITING: AtomicBool = AtomicBool::new(false);

/// At exit glibc runs the finalisers of every library still loaded, without
/// unmapping anything (other threads may still be inside them); so does
/// this, for ours, newest first. Registered with `atexit` at the first
/// load, it runs after the handlers registered later (those of the
/// libraries themselves) and before glibc's own finalisers.
extern "C" fn finalise_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let _lock = dl_lock();
        EXITING.store(true, Ordering::Release);
        for rec in snapshot().iter().rev() {
            let d = &rec.dyn_info;
            let is_code = |f: usize| rec.code.iter().any(|&(s, e)| f >= s && f < e);
            let count = d.fini_arraysz / 8;
            if d.fini_array != 0
                && rec.contains(d.fini_array)
                && rec.contains(d.fini_array + count * 8 - 1)
            {
                for i in (0..count).rev() {
                    // SAFETY: an entry of the image's DT_FINI_ARRAY, inside
                    // the image (checked above).
                    let f = unsafe { *((d.fini_array + i * 8) as *const usize) };
                    if is_code(f) {
                        // SAFETY: a finaliser of the image, in its code, run
                        // once, as glibc runs it at exit.
                        unsafe { std::mem::transmute::<usize, extern "C" fn()>(f)() };
                    }
                }
            }
            if d.fini != 0 && is_code(d.fini) {
                // SAFETY: as above, for DT_FINI.
                unsafe { std::mem::transmute::<usize, extern "C" fn()>(d.fini)() };
            }
        }
    });
}

// ---- dlclose ----------------------------------------------------------------

pub(crate) unsafe extern "C" fn imp_dlclose(handle: *mut c_void, _ra: usize) -> c_int {
    guard(-1, || {
        let _lock = dl_lock();
        begin();
        match find_record(handle as usize) {
            Some(rec) => {
                close(rec);
                0
            }
            None => {
                set_error(format!(
                    "invalid handle {handle:p}: no library opened by dlopen has it (closed already?)"
                ));
                -1
            }
        }
    })
}

/// Drops one reference; the last one unloads (finalisers, then unmapping),
/// then releases its `DT_NEEDED` libraries. Under the lock.
fn close(rec: Arc<Record>) {
    let left = rec.refs.fetch_sub(1, Ordering::AcqRel) - 1;
    if left > 0 || rec.nodelete.load(Ordering::Acquire) {
        return;
    }
    records().retain(|r| !Arc::ptr_eq(r, &rec));
    COUNT.fetch_sub(1, Ordering::Relaxed);
    SUBS.fetch_add(1, Ordering::Relaxed);
    if rec.global.load(Ordering::Acquire) {
        GLOBALS.fetch_sub(1, Ordering::Relaxed);
    }
    if EXITING.load(Ordering::Acquire) {
        // Its finalisers ran at exit already: it stays as it is.
        std::mem::forget(rec);
        return;
    }
    let mut deps = rec.deps.clone();
    deps.extend(rec.reldeps.lock().unwrap_or_else(|p| p.into_inner()).iter());
    // The image unloads when the last user lets go (now, unless another
    // thread is inside a lookup in it).
    drop(rec);
    for h in deps {
        if is_our_handle(h) {
            if let Some(dep) = find_record(h) {
                close(dep);
            }
        } else {
            real_dlclose(h);
            consume_real();
        }
    }
}

// ---- dlsym, dlvsym ----------------------------------------------------------

pub(crate) unsafe extern "C" fn imp_dlsym(
    handle: *mut c_void,
    name: *const c_char,
    ra: usize,
) -> *mut c_void {
    // SAFETY: the caller passes a NUL-terminated name.
    guard(std::ptr::null_mut(), || unsafe {
        lookup(handle as usize, CStr::from_ptr(name), None, ra) as *mut c_void
    })
}

pub(crate) unsafe extern "C" fn imp_dlvsym(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    ra: usize,
) -> *mut c_void {
    // SAFETY: the caller passes NUL-terminated strings.
    guard(std::ptr::null_mut(), || unsafe {
        lookup(
            handle as usize,
            CStr::from_ptr(name),
            Some(CStr::from_ptr(version)),
            ra,
        ) as *mut c_void
    })
}

fn undefined(object: &str, name: &CStr, version: Option<&CStr>) -> String {
    match version {
        None => format!("{object}: undefined symbol: {}", name.to_string_lossy()),
        Some(v) => format!(
            "{object}: undefined symbol: {}, version {}",
            name.to_string_lossy(),
            v.to_string_lossy()
        ),
    }
}

/// `name` in the library behind handle `h` (ours: the image only; the
/// system's: its dlsym).
fn in_handle(h: usize, name: &CStr, version: Option<&CStr>) -> Option<usize> {
    if is_our_handle(h) {
        find_record(h)?.own(name, version)
    } else {
        Some(real_lookup(h, name, version)).filter(|&a| a != 0)
    }
}

/// `caller` found a symbol of `found` through the global scope: glibc then
/// keeps `found` as long as the caller (for good, if the caller is not a
/// library that can be unloaded).
fn bound(caller: Option<&Record>, found: &Record) {
    match caller {
        Some(c) if c.handle == found.handle => {}
        Some(c) => {
            let mut reldeps = c.reldeps.lock().unwrap_or_else(|p| p.into_inner());
            if !reldeps.contains(&found.handle) {
                found.refs.fetch_add(1, Ordering::AcqRel);
                reldeps.push(found.handle);
            }
        }
        None => found.nodelete.store(true, Ordering::Release),
    }
}

fn lookup(handle: usize, name: &CStr, version: Option<&CStr>, ra: usize) -> usize {
    begin();
    let r = reals();
    if is_our_handle(handle) {
        let Some(rec) = find_record(handle) else {
            set_error(format!("invalid handle {handle:#x}: closed already?"));
            return 0;
        };
        if let Some(a) = rec.own(name, version) {
            return a;
        }
        if let Some(a) = rec.deps.iter().find_map(|&d| in_handle(d, name, version)) {
            return a;
        }
        set_error(undefined(&rec.path.to_string_lossy(), name, version));
        return 0;
    }
    let caller = record_containing(ra);
    let globals = || {
        snapshot()
            .into_iter()
            .filter(|x| x.global.load(Ordering::Acquire))
    };
    if handle == libc::RTLD_NEXT as usize {
        let Some(c) = caller else {
            // Not from one of ours (route sends those to the system).
            return real_lookup(libc::RTLD_DEFAULT as usize, name, version);
        };
        let found = c
            .deps
            .iter()
            .find_map(|&d| in_handle(d, name, version))
            .or_else(|| Some(real_lookup(0, name, version)).filter(|&a| a != 0))
            .or_else(|| {
                globals().filter(|g| g.seq > c.seq).find_map(|g| {
                    let a = g.own(name, version)?;
                    bound(Some(&c), &g);
                    Some(a)
                })
            });
        return found.unwrap_or_else(|| {
            set_error(undefined(&c.path.to_string_lossy(), name, version));
            0
        });
    }
    if handle == 0 || handle == r.main_handle {
        let a = real_lookup(handle, name, version);
        if a != 0 {
            return a;
        }
        let found = globals()
            .find_map(|g| {
                let a = g.own(name, version)?;
                bound(caller.as_deref(), &g);
                Some(a)
            })
            .or_else(|| {
                let c = caller.as_ref()?;
                c.own(name, version)
                    .or_else(|| c.deps.iter().find_map(|&d| in_handle(d, name, version)))
            });
        return found.unwrap_or_else(|| {
            set_error(undefined(
                if handle == 0 {
                    "RTLD_DEFAULT"
                } else {
                    "main program"
                },
                name,
                version,
            ));
            0
        });
    }
    // A system handle (only our own calls get here): the system's answer,
    // its error left for dlerror.
    // SAFETY: the C library's dlsym/dlvsym with the caller's arguments.
    unsafe {
        match version {
            None => {
                let f: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void =
                    std::mem::transmute(r.dlsym);
                f(handle as *mut c_void, name.as_ptr()) as usize
            }
            Some(v) => {
                let f: unsafe extern "C" fn(
                    *mut c_void,
                    *const c_char,
                    *const c_char,
                ) -> *mut c_void = std::mem::transmute(r.dlvsym);
                f(handle as *mut c_void, name.as_ptr(), v.as_ptr()) as usize
            }
        }
    }
}

// ---- dlerror ----------------------------------------------------------------

pub(crate) unsafe extern "C" fn imp_dlerror(_ra: usize) -> *mut c_char {
    let ours = ERROR
        .try_with(|e| {
            let mut e = e.borrow_mut();
            let pending = e.0.take()?;
            // Valid until this thread's next dlerror, as glibc's text.
            e.1 = Some(pending);
            e.1.as_ref().map(|m| m.as_ptr() as *mut c_char)
        })
        .ok()
        .flatten();
    ours.unwrap_or_else(|| {
        // SAFETY: the real dlerror has no preconditions.
        unsafe {
            let f: unsafe extern "C" fn() -> *mut c_char = std::mem::transmute(reals().dlerror);
            f()
        }
    })
}

// ---- dladdr, dladdr1 --------------------------------------------------------

/// Symbol names handed out by `dladdr` for our images when the image's own
/// string table cannot be pointed into: kept for the process's lifetime.
fn intern(name: &str) -> *const c_char {
    static NAMES: Mutex<Option<HashMap<String, Box<CStr>>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let map = names.get_or_insert_with(HashMap::new);
    map.entry(name.to_owned())
        .or_insert_with(|| CString::new(name).unwrap_or_default().into_boxed_c_str())
        .as_ptr()
}

/// The image's `Elf64_Sym` for the symbol at `value` named `name`, found by
/// walking `.dynsym` (which linkers place right before `.dynstr`).
fn symbol_entry(rec: &Record, value: usize, name: &str) -> Option<*const libc::Elf64_Sym> {
    let d = &rec.dyn_info;
    if d.symtab == 0 || d.strtab <= d.symtab {
        return None;
    }
    let count = (d.strtab - d.symtab) / std::mem::size_of::<libc::Elf64_Sym>();
    let vaddr = value.wrapping_sub(rec.bias) as u64;
    (0..count)
        .map(|i| (d.symtab + i * std::mem::size_of::<libc::Elf64_Sym>()) as *const libc::Elf64_Sym)
        .take_while(|&p| rec.contains(p as usize))
        .find(|&p| {
            // SAFETY: `p` lies in the image's symbol table (checked above).
            let sym = unsafe { &*p };
            sym.st_value == vaddr
                && (sym.st_name as usize) < d.strsz
                // SAFETY: a string table offset below DT_STRSZ.
                && unsafe { CStr::from_ptr((d.strtab + sym.st_name as usize) as *const c_char) }
                    .to_bytes()
                    == name.as_bytes()
        })
}

/// Fills `info` for an address in one of ours; the symbol entry, if found.
fn fill_info(
    rec: &Record,
    addr: usize,
    info: *mut libc::Dl_info,
) -> Option<*const libc::Elf64_Sym> {
    let sym = memdl::find_symbol(addr as *const c_void);
    let (sname, saddr, entry) = match sym.as_ref().and_then(|s| Some((s.symbol.as_deref()?, s))) {
        Some((name, s)) => {
            let entry = symbol_entry(rec, s.symbol_address, name);
            let sname = match entry {
                // SAFETY: an entry of the image's symbol table.
                Some(e) => {
                    // SAFETY: an entry of the image's symbol table.
                    (rec.dyn_info.strtab + unsafe { (*e).st_name } as usize) as *const c_char
                }
                None => intern(name),
            };
            (sname, s.symbol_address as *mut c_void, entry)
        }
        None => (std::ptr::null(), std::ptr::null_mut(), None),
    };
    // SAFETY: the caller passes a writable Dl_info.
    unsafe {
        *info = libc::Dl_info {
            dli_fname: rec.path.as_ptr(),
            dli_fbase: rec.map_start as *mut c_void,
            dli_sname: sname,
            dli_saddr: saddr,
        }
    };
    entry
}

pub(crate) unsafe extern "C" fn imp_dladdr(
    addr: *const c_void,
    info: *mut libc::Dl_info,
    _ra: usize,
) -> c_int {
    guard(0, || match record_containing(addr as usize) {
        Some(rec) => {
            fill_info(&rec, addr as usize, info);
            1
        }
        None => {
            // SAFETY: the C library's dladdr with the caller's arguments.
            unsafe {
                let f: unsafe extern "C" fn(*const c_void, *mut libc::Dl_info) -> c_int =
                    std::mem::transmute(reals().dladdr);
                f(addr, info)
            }
        }
    })
}

const RTLD_DL_SYMENT: c_int = 1;
const RTLD_DL_LINKMAP: c_int = 2;

pub(crate) unsafe extern "C" fn imp_dladdr1(
    addr: *const c_void,
    info: *mut libc::Dl_info,
    extra: *mut *mut c_void,
    flags: c_int,
    _ra: usize,
) -> c_int {
    guard(0, || match record_containing(addr as usize) {
        Some(rec) => {
            let entry = fill_info(&rec, addr as usize, info);
            // SAFETY: the caller passes a writable pointer for these flags.
            unsafe {
                match flags {
                    RTLD_DL_SYMENT => {
                        *extra = entry.map_or(std::ptr::null_mut(), |e| e as *mut c_void)
                    }
                    RTLD_DL_LINKMAP => *extra = rec.link_map.get().cast(),
                    _ => {}
                }
            }
            1
        }
        None => {
            // SAFETY: the C library's dladdr1 with the caller's arguments.
            unsafe {
                let f: unsafe extern "C" fn(
                    *const c_void,
                    *mut libc::Dl_info,
                    *mut *mut c_void,
                    c_int,
                ) -> c_int = std::mem::transmute(reals().dladdr1);
                f(addr, info, extra, flags)
            }
        }
    })
}

// ---- dlinfo -----------------------------------------------------------------

pub(crate) unsafe extern "C" fn imp_dlinfo(
    handle: *mut c_void,
    request: c_int,
    arg: *mut c_void,
    _ra: usize,
) -> c_int {
    guard(-1, || {
        begin();
        let Some(rec) = find_record(handle as usize) else {
            set_error(format!("invalid handle {handle:p}: closed already?"));
            return -1;
        };
        let has_tls = rec.phdrs.iter().any(|p| p.p_type == libc::PT_TLS);
        // SAFETY: `arg` points to what `request` says (dlinfo(3)).
        unsafe {
            match request {
                libc::RTLD_DI_LMID => *arg.cast::<c_long>() = 0,
                libc::RTLD_DI_LINKMAP => *arg.cast::<*mut LinkMap>() = rec.link_map.get(),
                libc::RTLD_DI_ORIGIN => {
                    let p = Path::new(std::ffi::OsStr::from_bytes(rec.path.as_bytes()));
                    let dir = p.parent().map_or(&b"."[..], |d| d.as_os_str().as_bytes());
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    std::ptr::copy_nonoverlapping(dir.as_ptr(), arg.cast::<u8>(), dir.len());
                    *arg.cast::<u8>().add(dir.len()) = 0;
                }
                libc::RTLD_DI_TLS_MODID if !has_tls => *arg.cast::<usize>() = 0,
                libc::RTLD_DI_TLS_DATA if !has_tls => {
                    *arg.cast::<*mut c_void>() = std::ptr::null_mut()
                }
                // RTLD_DI_PHDR (glibc 2.35): the program headers; their count.
                11 => {
                    *arg.cast::<*const ProgramHeader>() = rec.phdrs.as_ptr();
                    return rec.phdrs.len() as c_int;
                }
                _ => {
                    set_error(format!(
                        "dlinfo: request {request} is not supported for {} (loaded by memdl)",
                        rec.path.to_string_lossy()
                    ));
                    return -1;
                }
            }
        }
        0
    })
}

// ---- dl_iterate_phdr --------------------------------------------------------

struct IterateContext {
    callback: PhdrCallback,
    data: *mut c_void,
    /// memdl's loads and unloads so far.
    adds: u64,
    subs: u64,
    /// The system's counters, as the last system entry had them.
    system_adds: u64,
    system_subs: u64,
}

/// The system's objects, passed on with memdl's loads and unloads added to
/// the counters (so callers' caches notice them too).
unsafe extern "C" fn system_entry(
    info: *mut libc::dl_phdr_info,
    size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the context `imp_dl_iterate_phdr` passed; glibc
    // passes a valid info of `size` bytes.
    unsafe {
        let ctx = &mut *(data as *mut IterateContext);
        if size < std::mem::size_of::<libc::dl_phdr_info>() {
            return (ctx.callback)(info, size, ctx.data);
        }
        let mut copy = *info;
        ctx.system_adds = copy.dlpi_adds;
        ctx.system_subs = copy.dlpi_subs;
        copy.dlpi_adds += ctx.adds;
        copy.dlpi_subs += ctx.subs;
        (ctx.callback)(&mut copy, size, ctx.data)
    }
}

pub(crate) unsafe extern "C" fn imp_dl_iterate_phdr(
    callback: Option<PhdrCallback>,
    data: *mut c_void,
    _ra: usize,
) -> c_int {
    let Some(callback) = callback else { return 0 };
    let mut ctx = IterateContext {
        callback,
        data,
        adds: ADDS.load(Ordering::Relaxed),
        subs: SUBS.load(Ordering::Relaxed),
        system_adds: 0,
        system_subs: 0,
    };
    // SAFETY: the C library's iteration with our callback and its context.
    let r = unsafe {
        let f: unsafe extern "C" fn(Option<PhdrCallback>, *mut c_void) -> c_int =
            std::mem::transmute(reals().dl_iterate_phdr);
        f(Some(system_entry), (&mut ctx as *mut IterateContext).cast())
    };
    if r != 0 {
        return r;
    }
    // Ours come after the system's: they were loaded later. The snapshot
    // keeps each record's name and headers alive across the callback; no
    // lock is held (an unwinder in another thread must not wait for a
    // dlopen running a long initialiser).
    for rec in snapshot() {
        // SAFETY: dl_phdr_info is plain data; zero is valid for every field.
        let mut info: libc::dl_phdr_info = unsafe { std::mem::zeroed() };
        info.dlpi_addr = rec.bias as _;
        info.dlpi_name = rec.path.as_ptr();
        info.dlpi_phdr = rec.phdrs.as_ptr().cast();
        info.dlpi_phnum = rec.phdrs.len() as _;
        info.dlpi_adds = ctx.system_adds + ctx.adds;
        info.dlpi_subs = ctx.system_subs + ctx.subs;
        // SAFETY: a valid info that lives across the call; `rec` keeps the
        // name and headers alive.
        let r = unsafe { callback(&mut info, std::mem::size_of::<libc::dl_phdr_info>(), data) };
        if r != 0 {
            return r;
        }
    }
    0
}
