//! Loader services from inside loaded code: a library importing dladdr,
//! dlsym, dlerror, dl_iterate_phdr and __tls_get_addr gets memdl's versions,
//! which know memdl's images and hand the rest to the system; and
//! `memdl::find_symbol` / `memdl::images` for Rust callers.

#![cfg(target_os = "linux")]

use std::ffi::{c_char, c_int, c_void, CStr};

use memdl::{ElfImage, Library, SystemImage};

mod common;
use common::{assert_no_wx, serial, sym, test_lib};

// Why these tests take serial() (tests/common): `images()` is process-wide:
// tests that check its contents run alone.

type DlsymFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type DladdrFn = unsafe extern "C" fn(
    *const c_void,
    *mut *const c_char,
    *mut *mut c_void,
    *mut *const c_char,
    *mut *mut c_void,
) -> c_int;
type IterateFn =
    unsafe extern "C" fn(*mut usize, *mut *const c_char, *mut c_int, *mut c_int) -> c_int;

fn cstr(p: *const c_char) -> Option<String> {
    // SAFETY: the loaders return NUL-terminated names that outlive the call.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The system loader's own definition of `name`.
fn system_symbol(name: &CStr) -> usize {
    // SAFETY: a lookup of a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// The object the system loader says `addr` belongs to (its base).
fn system_object_base(addr: usize) -> usize {
    // SAFETY: Dl_info is plain data; dladdr fills it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    assert_ne!(unsafe { libc::dladdr(addr as *const c_void, &mut info) }, 0);
    info.dli_fbase as usize
}

fn here() {}

/// memdl binds the imports to its own services (code of this test binary,
/// where memdl is linked); the system loader binds them to libc/ld.so.
#[test]
fn imports_are_bound_to_memdls_services() {
    let _g = serial();
    let bytes = test_lib("dlsvc");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_no_wx();
    let names = [
        c"dladdr",
        c"dlsym",
        c"dlerror",
        c"dl_iterate_phdr",
        c"__tls_get_addr",
    ];
    let this_binary = system_object_base(here as fn() as usize);
    let bound = |lib: &dyn Fn(&str) -> unsafe extern "C" fn(*mut usize)| {
        let mut out = [0usize; 5];
        // SAFETY: dlsvc_bound writes five pointers.
        unsafe { lib("dlsvc_bound")(out.as_mut_ptr()) };
        out
    };
    let ours = bound(&|n| sym(&img, n));
    let theirs = bound(&|n| sym(&sys, n));
    for (i, name) in names.iter().enumerate() {
        assert_ne!(ours[i], system_symbol(name), "{name:?} not interposed");
        assert_eq!(system_object_base(ours[i]), this_binary, "{name:?}");
        assert!(memdl::find_symbol(ours[i] as *const c_void).is_none());
        assert_eq!(
            theirs[i],
            system_symbol(name),
            "{name:?} on the system loader"
        );
    }
}

/// dladdr from inside: the library's own functions by name, and addresses
/// of other objects forwarded to the system's dladdr.
#[test]
fn dladdr_from_loaded_code() {
    let _g = serial();
    let bytes = test_lib("dlsvc");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    for (backend, base, self_fn, dladdr_fn) in [
        (
            "memdl",
            img.base_address(),
            sym::<unsafe extern "C" fn(*mut *const c_char, *mut *mut c_void) -> c_int>(
                &img,
                "dlsvc_dladdr_self",
            ),
            sym::<DladdrFn>(&img, "dlsvc_dladdr"),
        ),
        (
            "system",
            sys.base_address(),
            sym(&sys, "dlsvc_dladdr_self"),
            sym::<DladdrFn>(&sys, "dlsvc_dladdr"),
        ),
    ] {
        let (mut sname, mut fbase) = (std::ptr::null(), std::ptr::null_mut());
        // SAFETY: out-pointers to locals.
        assert_eq!(unsafe { self_fn(&mut sname, &mut fbase) }, 1, "{backend}");
        assert_eq!(cstr(sname).as_deref(), Some("dlsvc_marker"), "{backend}");
        assert_eq!(fbase as usize, base, "{backend}");

        // An address of libc: the system's answer.
        let malloc = system_symbol(c"malloc");
        let (mut f, mut b, mut s, mut a) = (
            std::ptr::null(),
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null_mut(),
        );
        // SAFETY: out-pointers to locals.
        let r = unsafe { dladdr_fn(malloc as *const c_void, &mut f, &mut b, &mut s, &mut a) };
        assert_eq!(r, 1, "{backend}");
        assert!(
            cstr(f).unwrap().contains("libc.so"),
            "{backend}: {:?}",
            cstr(f)
        );
        assert_eq!(a as usize, malloc, "{backend}");
        assert_eq!(b as usize, system_object_base(malloc), "{backend}");
        // An address nobody loaded: 0.
        // SAFETY: as above.
        let r = unsafe { dladdr_fn(16 as *const c_void, &mut f, &mut b, &mut s, &mut a) };
        assert_eq!(r, 0, "{backend}");
    }
}

/// dlsym from inside finds the library's own exports through RTLD_DEFAULT,
/// RTLD_NEXT and the global handle, its thread-local variables per thread,
/// and still everything the system knows.
#[test]
fn dlsym_from_loaded_code_finds_its_own_exports() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("dlsvc")) }.unwrap();
    let marker = img.symbol_address(b"dlsvc_marker").unwrap() as usize;
    for f in [
        "dlsvc_dlsym_default",
        "dlsvc_dlsym_next",
        "dlsvc_dlsym_global_handle",
    ] {
        let dlsym: DlsymFn = sym(&img, f);
        // SAFETY: NUL-terminated names.
        unsafe {
            assert_eq!(dlsym(c"dlsvc_marker".as_ptr()) as usize, marker, "{f}");
            assert_eq!(
                dlsym(c"malloc".as_ptr()) as usize,
                system_symbol(c"malloc"),
                "{f}"
            );
        }
    }
    // The handle of one system library searches that library only.
    let dlsym_in: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut c_void =
        sym(&img, "dlsvc_dlsym_in");
    // SAFETY: NUL-terminated names.
    unsafe {
        assert!(dlsym_in(c"libc.so.6".as_ptr(), c"dlsvc_marker".as_ptr()).is_null());
        assert_eq!(
            dlsym_in(c"libc.so.6".as_ptr(), c"malloc".as_ptr()) as usize,
            system_symbol(c"malloc")
        );
    }
    // A thread-local variable: the calling thread's instance.
    let dlsym: DlsymFn = sym(&img, "dlsvc_dlsym_default");
    let tls_addr: unsafe extern "C" fn() -> *mut c_int = sym(&img, "dlsvc_tls_addr");
    let in_thread =
        |f: &(dyn Fn() -> usize + Sync)| std::thread::scope(|s| s.spawn(f).join().unwrap());
    // SAFETY: NUL-terminated names; functions of the live image.
    unsafe {
        let mine = dlsym(c"dlsvc_tls".as_ptr()) as usize;
        assert_eq!(mine, tls_addr() as usize);
        assert_eq!(*(mine as *const c_int), 11);
        let theirs = in_thread(&|| dlsym(c"dlsvc_tls".as_ptr()) as usize);
        assert_ne!(mine, theirs);
    }
    // The function is found through a call of the library itself.
    let marker_fn: unsafe extern "C" fn(c_int) -> c_int =
        // SAFETY: int dlsvc_marker(int), found by the library's dlsym.
        unsafe { std::mem::transmute(dlsym(c"dlsvc_marker".as_ptr())) };
    assert_eq!(unsafe { marker_fn(14) }, 42);
}

/// dlerror after a failed lookup: the message once, then NULL; the same
/// on both backends.
#[test]
fn dlerror_reports_a_failed_lookup_once() {
    let _g = serial();
    let bytes = test_lib("dlsvc");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    for (backend, dlsym, dlerror) in [
        (
            "memdl",
            sym::<DlsymFn>(&img, "dlsvc_dlsym_default"),
            sym::<unsafe extern "C" fn() -> *const c_char>(&img, "dlsvc_dlerror"),
        ),
        (
            "system",
            sym(&sys, "dlsvc_dlsym_default"),
            sym(&sys, "dlsvc_dlerror"),
        ),
    ] {
        // SAFETY: NUL-terminated names; functions of live images.
        unsafe {
            dlerror();
            assert!(
                dlsym(c"dlsvc_no_such_symbol".as_ptr()).is_null(),
                "{backend}"
            );
            let msg = cstr(dlerror());
            assert!(
                msg.as_deref()
                    .is_some_and(|m| m.contains("dlsvc_no_such_symbol")),
                "{backend}: {msg:?}"
            );
            assert_eq!(cstr(dlerror()), None, "{backend}: error reported twice");
            // A successful lookup leaves no error behind.
            assert!(!dlsym(c"malloc".as_ptr()).is_null(), "{backend}");
            assert_eq!(cstr(dlerror()), None, "{backend}: error after success");
        }
    }
}

/// dl_iterate_phdr from inside lists the memdl image (its base, name and
/// program headers, as `memdl::images()` reports them) and the system's
/// objects after it.
#[test]
fn dl_iterate_phdr_from_loaded_code_sees_the_image() {
    let _g = serial();
    let bytes = test_lib("dlsvc");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    let info = memdl::images()
        .into_iter()
        .find(|i| i.base == img.base_address())
        .expect("images() lists the image");
    assert_eq!(info.name, "libdlsvc.so");
    for (backend, lib) in [
        ("memdl", &img as &dyn Library),
        ("system", &sys as &dyn Library),
    ] {
        // SAFETY: dlsvc_iterate's signature.
        let iterate: IterateFn = unsafe {
            std::mem::transmute::<*const c_void, IterateFn>(
                lib.symbol_address(b"dlsvc_iterate").unwrap(),
            )
        };
        let (mut base, mut name, mut phnum, mut objects) = (0usize, std::ptr::null(), 0, 0);
        // SAFETY: out-pointers to locals.
        let at = unsafe { iterate(&mut base, &mut name, &mut phnum, &mut objects) };
        assert!(at > 0, "{backend}: the image was not listed");
        assert_eq!(base, lib.base_address(), "{backend}");
        assert_eq!(phnum as usize, info.program_headers.len(), "{backend}");
        // libc, ld.so, the test binary, ... come too.
        assert!(objects > 3, "{backend}: {objects} objects");
        if backend == "memdl" {
            assert_eq!(cstr(name).as_deref(), Some("libdlsvc.so"));
        }
    }
}

/// `find_symbol` names the symbol around an address of a loaded image, and
/// `images()` follows loads and drops.
#[test]
fn find_symbol_and_images_for_rust_callers() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("dlsvc")) }.unwrap();
    let marker = img.symbol_address(b"dlsvc_marker").unwrap() as usize;
    let info = memdl::find_symbol((marker + 3) as *const c_void).unwrap();
    assert_eq!(info.symbol.as_deref(), Some("dlsvc_marker"));
    assert_eq!(info.symbol_address, marker);
    assert_eq!(info.offset, 3);
    assert_eq!(info.image_base, img.base_address());
    assert_eq!(info.image_name, "libdlsvc.so");
    // Not a memdl image: None.
    assert!(memdl::find_symbol(here as fn() as *const c_void).is_none());

    // SAFETY: a trusted test or machine library (its initialisers run).
    let second = unsafe { ElfImage::load(&test_lib("example")) }.unwrap();
    let bases: Vec<usize> = memdl::images().iter().map(|i| i.base).collect();
    let (a, b) = (
        bases.iter().position(|&x| x == img.base_address()),
        bases.iter().position(|&x| x == second.base_address()),
    );
    assert!(a.unwrap() < b.unwrap(), "load order: {bases:x?}");
    drop(img);
    assert!(memdl::find_symbol(marker as *const c_void).is_none());
    assert!(!memdl::images().iter().any(|i| i.base == bases[a.unwrap()]));
    assert!(memdl::images()
        .iter()
        .any(|i| i.base == second.base_address()));
}

/// An interposer that defines `dlopen` and finds the next one with
/// `dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34")` in its constructor (as
/// gprofng's libgp-collector.so does) gets the system's `dlopen` and can
/// forward to it, as under the system loader.
#[test]
fn an_interposer_finds_the_next_definition_with_dlvsym() {
    let _g = serial();
    let bytes = test_lib("interposer");
    type Found = unsafe extern "C" fn() -> c_int;
    type Dlopen = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
    // SAFETY: a trusted test library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    for found in [
        sym::<Found>(&img, "found_next_dlopen"),
        sym::<Found>(&sys, "found_next_dlopen"),
    ] {
        // SAFETY: int found_next_dlopen(void).
        assert_eq!(unsafe { found() }, 1);
    }
    let dlopen: Dlopen = sym(&img, "dlopen");
    // SAFETY: the interposer's dlopen forwards to the system's; the main
    // program's handle needs no dlclose.
    assert!(!unsafe { dlopen(std::ptr::null(), libc::RTLD_NOW) }.is_null());
}
