//! The sandbox import policy: `Options::new().symbol(..).deny_host_lookups()`
//! lets imports come only from the caller's allowlist. A library importing
//! anything else is refused before any of its code runs; memdl's own loader
//! services that could reach the host (`dlsym`, `dladdr`, `dl_iterate_phdr`)
//! are not granted silently; `DT_NEEDED` libraries are never opened.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicI32, Ordering};

use memdl::{Error, Options};

mod common;
use common::{assert_no_wx, open_fds, serial, test_lib};

extern "C" fn host_hook(x: i32) -> i32 {
    x * 2
}

// Why these tests take serial() (tests/common): the tests of this file load
// and unload images; one checks the fd count, so they run one at a time.

fn addr<T>(p: &T) -> *const c_void {
    p as *const T as *const c_void
}

fn unresolved(err: Error) -> Vec<String> {
    match err {
        Error::UnresolvedSymbols { mut names } => {
            names.sort();
            names
        }
        other => panic!("expected UnresolvedSymbols, got {other:?} ({other})"),
    }
}

#[test]
fn an_import_outside_the_allowlist_is_refused_before_the_constructor_runs() {
    let _serial = serial();
    // The constructor increments `host_counter`: a run would be visible here.
    static COUNTER: AtomicI32 = AtomicI32::new(0);
    let bytes = test_lib("sandboxed");
    let fds = open_fds();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe {
        Options::new()
            .symbol("host_counter", addr(&COUNTER))
            .deny_host_lookups()
            .load(&bytes)
    }
    .unwrap_err();
    assert_eq!(unresolved(err), ["host_hook"]);
    assert_eq!(COUNTER.load(Ordering::SeqCst), 0, "the constructor ran");
    // (Mapping counts are compared in tests/malformed.rs, which runs alone:
    // here the harness's threads map stacks concurrently.)
    assert_eq!(open_fds(), fds, "nothing left open");

    // Granting the import: it loads, the constructor runs once, the import
    // is the host's function.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .symbol("host_counter", addr(&COUNTER))
            .symbol("host_hook", host_hook as *const c_void)
            .deny_host_lookups()
            .load(&bytes)
    }
    .unwrap();
    assert_no_wx();
    assert_eq!(
        COUNTER.load(Ordering::SeqCst),
        1,
        "the constructor ran once"
    );
    // SAFETY: int call_hook(int) of test-dylibs/sandboxed.c.
    let call: memdl::Symbol<'_, unsafe extern "C" fn(i32) -> i32> =
        unsafe { img.get("call_hook") }.unwrap();
    // SAFETY: the image is alive and its host_hook import is bound to host_hook.
    assert_eq!(unsafe { call(20) }, 41);
}

#[test]
fn the_default_policy_refuses_the_same_library_before_its_constructor_too() {
    let _serial = serial();
    // host_hook is in no scope of this process: the resolver chain fails
    // the same way, and still nothing of the library ran.
    static COUNTER: AtomicI32 = AtomicI32::new(0);
    let bytes = test_lib("sandboxed");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe {
        Options::new()
            .symbol("host_counter", addr(&COUNTER))
            .load(&bytes)
    }
    .unwrap_err();
    assert_eq!(unresolved(err), ["host_hook"]);
    assert_eq!(COUNTER.load(Ordering::SeqCst), 0);
}

type FindFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;

#[test]
fn loader_services_that_reach_the_host_are_not_granted_silently() {
    let _serial = serial();
    let bytes = test_lib("sandboxdl");
    // Default policy: memdl's dlsym finds host symbols.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { memdl::ElfImage::load(&bytes) }.unwrap();
    // SAFETY: void *find_host_symbol(const char *) of test-dylibs/sandboxdl.c.
    let find: memdl::Symbol<'_, FindFn> = unsafe { img.get("find_host_symbol") }.unwrap();
    // SAFETY: a NUL-terminated string; the image is alive.
    let getpid = unsafe { find(c"getpid".as_ptr()) };
    assert_eq!(getpid as usize, libc::getpid as *const () as usize);
    drop(img);

    // Deny: dlsym and dladdr are refused (dlerror, which only reports
    // memdl's own errors, is kept).
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { Options::new().deny_host_lookups().load(&bytes) }.unwrap_err();
    assert_eq!(unresolved(err), ["dladdr", "dlsym"]);

    // The host may grant them explicitly, with its own implementations.
    unsafe extern "C" fn no_dlsym(_: *mut c_void, _: *const c_char) -> *mut c_void {
        std::ptr::null_mut()
    }
    unsafe extern "C" fn no_dladdr(_: *const c_void, _: *mut c_void) -> i32 {
        0
    }
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .symbol("dlsym", no_dlsym as *const c_void)
            .symbol("dladdr", no_dladdr as *const c_void)
            .deny_host_lookups()
            .load(&bytes)
    }
    .unwrap();
    // SAFETY: void *find_host_symbol(const char *) of test-dylibs/sandboxdl.c.
    let find: memdl::Symbol<'_, FindFn> = unsafe { img.get("find_host_symbol") }.unwrap();
    // SAFETY: a NUL-terminated string; the image and the granted dlsym are alive.
    assert!(unsafe { find(c"getpid".as_ptr()) }.is_null());
    // SAFETY: int own_base_known(void) of test-dylibs/sandboxdl.c.
    let known: memdl::Symbol<'_, unsafe extern "C" fn() -> i32> =
        unsafe { img.get("own_base_known") }.unwrap();
    // SAFETY: the image and the granted dladdr are alive; no arguments.
    assert_eq!(unsafe { known() }, 0);
    // dlerror is memdl's: nothing pending.
    // SAFETY: const char *last_error(void) of test-dylibs/sandboxdl.c.
    let err: memdl::Symbol<'_, unsafe extern "C" fn() -> *const c_char> =
        unsafe { img.get("last_error") }.unwrap();
    // SAFETY: the image is alive; only the returned pointer is inspected.
    assert!(unsafe { err() }.is_null());
}

#[test]
fn thread_local_storage_stays_available_to_a_sandbox() {
    let _serial = serial();
    // __tls_get_addr acts on the image's own TLS block only.
    let bytes = test_lib("sandboxtls");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { Options::new().deny_host_lookups().load(&bytes) }.unwrap();
    // SAFETY: int count_call(void) of test-dylibs/sandboxtls.c.
    let count: memdl::Symbol<'_, unsafe extern "C" fn() -> i32> =
        unsafe { img.get("count_call") }.unwrap();
    // SAFETY: the image is alive; no arguments.
    assert_eq!(unsafe { count() }, 1);
    // SAFETY: as above.
    assert_eq!(unsafe { count() }, 2);
    std::thread::scope(|s| {
        // SAFETY: the image outlives the scope and its threads.
        s.spawn(|| assert_eq!(unsafe { count() }, 1));
    });
}

/// The undefined symbols a library imports (names only).
fn imports(bytes: &[u8]) -> Vec<String> {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    elf.dynsyms
        .iter()
        .filter(|s| s.is_import())
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .map(str::to_owned)
        .collect()
}

#[test]
fn needed_libraries_are_never_opened_and_every_import_comes_from_the_allowlist() {
    let _serial = serial();
    // libuselibc needs libc.so.6; rename it to a library that does not
    // exist. The default policy fails to open it; the sandbox never tries.
    let mut bytes = test_lib("uselibc");
    let at = bytes
        .windows(10)
        .position(|w| w == b"libc.so.6\0")
        .expect("DT_NEEDED libc.so.6 string");
    bytes[at + 3] = b'Q';
    assert!(matches!(
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe { memdl::ElfImage::load(&bytes) },
        Err(Error::NeededLibrary { .. })
    ));
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { Options::new().deny_host_lookups().load(&bytes) }.unwrap_err();
    let missing = unresolved(err);
    for want in ["malloc", "free", "qsort", "snprintf"] {
        assert!(
            missing.iter().any(|m| m.split('@').next() == Some(want)),
            "{want} in {missing:?}"
        );
    }

    // With every import granted by the host, it loads and works.
    let mut options = Options::new();
    for name in imports(&bytes) {
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: a lookup of a NUL-terminated name in the global scope.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        if !p.is_null() {
            options = options.symbol(&name, p);
        }
    }
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { options.deny_host_lookups().load(&bytes) }.unwrap();
    type Format = unsafe extern "C" fn(*mut c_char, usize, i32, f64, *const c_char) -> i32;
    // SAFETY: int format_point(char *, unsigned long, int, double, const char *)
    // of test-dylibs/uselibc.c.
    let format: memdl::Symbol<'_, Format> = unsafe { img.get("format_point") }.unwrap();
    let mut buf = [0 as c_char; 64];
    // SAFETY: buf is writable for buf.len() bytes, the label is NUL-terminated and
    // the image is alive.
    let n = unsafe { format(buf.as_mut_ptr(), buf.len(), 3, 0.5, c"p".as_ptr()) };
    assert!(n > 0);
    // SAFETY: format_point NUL-terminated buf (n > 0, within its size).
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert!(s.contains('3'), "{s}");
}
