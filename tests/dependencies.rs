//! `DT_NEEDED` libraries (issue #12): supplied from memory by the caller
//! (a container of libraries that need one another), and found through
//! `DT_RUNPATH` with `$ORIGIN` as the system loader finds them.
//!
//! The test libraries (test-dylibs/deps_*.c): deps_a needs deps_b and
//! deps_c, deps_b needs deps_c; each reports its initialiser and finaliser
//! through `memdl_test_host_trace`, which this test executable exports.

mod common;

use std::ffi::{c_int, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{serial, take_trace, test_lib};
use memdl::{Dependency, ElfImage, Error, Library, Options};

fn a_value(lib: &impl Library) -> c_int {
    // SAFETY: int a_value(void).
    let f = unsafe { lib.get::<unsafe extern "C" fn() -> c_int>("a_value") }.unwrap();
    // SAFETY: as above.
    unsafe { f() }
}

const INITS: [&str; 3] = ["init c", "init b", "init a"];
const FINIS: [&str; 3] = ["fini a", "fini b", "fini c"];

/// A container whose libraries need one another loads from memory alone:
/// the provider is asked once per library, each is loaded once (deps_c,
/// needed by both others, initialised once), dependencies are initialised
/// first and finalised last.
#[test]
fn a_container_of_libraries_loads_from_memory_only() {
    let _g = serial();
    take_trace();
    let (b, c) = (test_lib("deps_b"), test_lib("deps_c"));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let options = Options::new().dependencies(move |name| {
        log.lock().unwrap().push(name.to_owned());
        match name {
            "libdeps_b.so" => Some(Dependency::Bytes(b.clone())),
            "libdeps_c.so" => Some(Dependency::Bytes(c.clone())),
            _ => None,
        }
    });
    // SAFETY: trusted test libraries (their initialisers run).
    let img = unsafe { options.load(&test_lib("deps_a")) }.unwrap();
    assert_eq!(a_value(&img), 126);
    assert_eq!(take_trace(), INITS);
    let mut asked_for = asked.lock().unwrap().clone();
    asked_for.sort();
    assert_eq!(asked_for, ["libdeps_b.so", "libdeps_c.so"]);
    // Nothing was opened by the system loader.
    for soname in ["libdeps_b.so", "libdeps_c.so"] {
        assert!(!dlopen_noload(soname), "{soname} went to the system loader");
    }
    drop(img);
    assert_eq!(take_trace(), FINIS);
}

/// A dependency supplied as a range of a file loads with `load_fd`.
#[test]
fn a_dependency_can_be_a_range_of_a_file() {
    let _g = serial();
    take_trace();
    let mut container = tempfile::tempfile().unwrap();
    let (b, c) = (test_lib("deps_b"), test_lib("deps_c"));
    use std::io::Write;
    container.write_all(&[0u8; 100]).unwrap();
    container.write_all(&b).unwrap();
    container.write_all(&c).unwrap();
    let file = Arc::new(container);
    let (b_len, c_len) = (b.len() as u64, c.len() as u64);
    let options = Options::new().dependencies(move |name| {
        let (offset, len) = match name {
            "libdeps_b.so" => (100, b_len),
            "libdeps_c.so" => (100 + b_len, c_len),
            _ => return None,
        };
        Some(Dependency::File {
            file: file.clone(),
            offset,
            len,
        })
    });
    // SAFETY: trusted test libraries (their initialisers run).
    let img = unsafe { options.load(&test_lib("deps_a")) }.unwrap();
    assert_eq!(a_value(&img), 126);
    drop(img);
    assert_eq!(take_trace(), [&INITS[..], &FINIS[..]].concat());
}

/// A provider's library that fails to load is the needing library's
/// failure, named.
#[test]
fn a_bad_supplied_dependency_is_named() {
    let _g = serial();
    let options = Options::new().dependencies(|name| {
        (name == "libdeps_b.so").then(|| Dependency::Bytes(b"not an ELF".to_vec()))
    });
    // SAFETY: trusted test libraries (their initialisers run).
    let err = unsafe { options.load(&test_lib("deps_a")) }.unwrap_err();
    let Error::NeededLibrary { name, message } = &err else {
        panic!("expected NeededLibrary, got {err:?}");
    };
    assert_eq!(name, "libdeps_b.so");
    assert!(
        message.contains("magic") || message.contains("ELF"),
        "{message}"
    );
    take_trace();
}

/// Whether the system loader has `soname` loaded.
fn dlopen_noload(soname: &str) -> bool {
    let name = CString::new(soname).unwrap();
    // SAFETY: RTLD_NOLOAD only looks; a handle it returns is closed.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if !h.is_null() {
        // SAFETY: the handle RTLD_NOLOAD returned took a reference.
        unsafe { libc::dlclose(h) };
    }
    !h.is_null()
}

/// The layout `DT_RUNPATH $ORIGIN/deps` expects: libdeps_origin.so in a
/// directory, its needs in `deps/` below it.
fn origin_layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("deps")).unwrap();
    std::fs::write(
        dir.path().join("libdeps_origin.so"),
        test_lib("deps_origin"),
    )
    .unwrap();
    for lib in ["deps_b", "deps_c"] {
        std::fs::write(dir.path().join(format!("deps/lib{lib}.so")), test_lib(lib)).unwrap();
    }
    dir
}

/// `DT_RUNPATH` with `$ORIGIN`: loaded from a descriptor naming the file,
/// the needed libraries are found next to it, as `dlopen` of the path
/// finds them; same values, same initialiser and finaliser order.
#[test]
fn origin_runpath_finds_dependencies_like_the_system_loader() {
    let _g = serial();
    take_trace();
    let dir = origin_layout();
    let path = dir.path().join("libdeps_origin.so");
    let file = std::fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    assert!(!dlopen_noload("libdeps_b.so") && !dlopen_noload("libdeps_c.so"));
    let misses = ElfImage::__noload_misses();
    // SAFETY: trusted test libraries (their initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    // Nothing is loaded under the needed names: the system loader was not
    // asked (it would have searched the file system for each).
    assert_eq!(ElfImage::__noload_misses(), misses);
    assert_eq!(a_value(&img), 126);
    drop(img);
    let memdl_trace = take_trace();
    assert_eq!(memdl_trace, [&INITS[..], &FINIS[..]].concat());

    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: dlopen of a trusted test library by path.
    let h = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null());
    // SAFETY: int a_value(void), from a live handle.
    let value = unsafe {
        let f = libc::dlsym(h, c"a_value".as_ptr());
        std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn() -> c_int>(f)()
    };
    // SAFETY: the handle from dlopen above, closed once.
    unsafe { libc::dlclose(h) };
    assert_eq!(value, 126);
    assert_eq!(take_trace(), memdl_trace);
}

/// Bytes have no `$ORIGIN`: the needed libraries are not found (as they
/// are not for the system loader without the search path), unless
/// `Options::origin` names the directory.
#[test]
fn bytes_need_an_origin_from_the_options() {
    let _g = serial();
    take_trace();
    let dir = origin_layout();
    let bytes = std::fs::read(dir.path().join("libdeps_origin.so")).unwrap();
    // SAFETY: trusted test libraries (their initialisers run).
    let err = unsafe { ElfImage::load(&bytes) }.unwrap_err();
    assert!(
        matches!(&err, Error::NeededLibrary { name, .. } if name == "libdeps_b.so"),
        "{err:?}"
    );
    assert!(take_trace().is_empty(), "nothing of the library ran");
    let options = Options::new().origin(dir.path());
    // SAFETY: as above.
    let img = unsafe { options.load(&bytes) }.unwrap();
    assert_eq!(a_value(&img), 126);
    drop(img);
    take_trace();
}

/// The provider is asked per name, not per library that needs it.
#[test]
fn each_supplied_library_is_asked_for_once() {
    let _g = serial();
    take_trace();
    static ASKED: AtomicUsize = AtomicUsize::new(0);
    ASKED.store(0, Ordering::SeqCst);
    let c = test_lib("deps_c");
    let b = test_lib("deps_b");
    let options = Options::new().dependencies(move |name| {
        ASKED.fetch_add(1, Ordering::SeqCst);
        Some(Dependency::Bytes(if name == "libdeps_c.so" {
            c.clone()
        } else {
            b.clone()
        }))
    });
    // SAFETY: trusted test libraries (their initialisers run).
    let img = unsafe { options.load(&test_lib("deps_a")) }.unwrap();
    assert_eq!(ASKED.load(Ordering::SeqCst), 2);
    drop(img);
    // A second load asks again: what was supplied belongs to one load.
    // SAFETY: as above.
    let img = unsafe { options.load(&test_lib("deps_a")) }.unwrap();
    assert_eq!(ASKED.load(Ordering::SeqCst), 4);
    drop(img);
    take_trace();
}

/// A `DT_NEEDED` name the system loader already has loaded is that
/// library, whatever the image's search path holds, as it is for the
/// system loader: needs_z needs libz.so.1 and searches `$ORIGIN` first,
/// where a decoy of that name lies; with zlib loaded, both loaders bind
/// `zlibVersion` to zlib's.
#[test]
fn a_loaded_library_wins_over_a_file_of_its_name_in_the_search_path() {
    let _g = serial();
    a_loaded_zlib_wins(&common::machine_lib_path("libz.so.1"));
}

/// The same, with zlib loaded by its file's own name (`libz.so.1.2.13`):
/// the needed name is only its soname.
#[test]
fn a_library_loaded_under_another_file_name_wins_by_its_soname() {
    let _g = serial();
    let file = std::fs::canonicalize(common::machine_lib_path("libz.so.1")).unwrap();
    assert_ne!(file.file_name().unwrap(), "libz.so.1");
    a_loaded_zlib_wins(&file);
}

/// The path the system loader has for the object holding `symbol` of
/// `handle` (`dladdr`'s file name: the link map's name).
fn loaded_path(handle: *mut libc::c_void, symbol: &std::ffi::CStr) -> std::path::PathBuf {
    // SAFETY: a lookup in a live handle; dladdr fills the zeroed struct
    // with pointers into the system loader's own strings.
    unsafe {
        let addr = libc::dlsym(handle, symbol.as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        assert!(libc::dladdr(addr, &mut info) != 0);
        let name = std::ffi::CStr::from_ptr(info.dli_fname);
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()))
    }
}

/// needs_z loaded with zlib loaded from `zlib_path` and a decoy
/// `libz.so.1` in needs_z's `$ORIGIN`: both loaders take the loaded zlib.
fn a_loaded_zlib_wins(zlib_path: &std::path::Path) {
    let zlib = CString::new(zlib_path.as_os_str().as_bytes()).unwrap();
    // SAFETY: the machine's zlib, kept loaded for the test.
    let z = unsafe { libc::dlopen(zlib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!z.is_null());
    // Loaded under that path (not an earlier one), so that a needed name
    // matches it only as the path's file name would, or its soname.
    assert_eq!(loaded_path(z, c"zlibVersion"), zlib_path);
    // SAFETY: const char *zlibVersion(void), from a live handle.
    let expected = unsafe {
        let f = libc::dlsym(z, c"zlibVersion".as_ptr());
        let f: unsafe extern "C" fn() -> *const libc::c_char = std::mem::transmute(f);
        std::ffi::CStr::from_ptr(f()).to_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libneeds_z.so");
    std::fs::write(&path, test_lib("needs_z")).unwrap();
    std::fs::write(dir.path().join("libz.so.1"), test_lib("zstub")).unwrap();
    let version = |lib: &dyn Fn() -> *const libc::c_char| {
        // SAFETY: needs_z_version returns zlibVersion()'s static string.
        unsafe { std::ffi::CStr::from_ptr(lib()) }.to_owned()
    };

    let file = std::fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: trusted test libraries (their initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    // SAFETY: const char *needs_z_version(void).
    let f = unsafe { img.get::<unsafe extern "C" fn() -> *const libc::c_char>("needs_z_version") }
        .unwrap();
    // SAFETY: as above.
    assert_eq!(version(&|| unsafe { f() }), expected);
    drop(img);

    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: dlopen of a trusted test library by path.
    let h = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null());
    // SAFETY: const char *needs_z_version(void), from a live handle.
    let f: unsafe extern "C" fn() -> *const libc::c_char =
        unsafe { std::mem::transmute(libc::dlsym(h, c"needs_z_version".as_ptr())) };
    // SAFETY: as above.
    assert_eq!(version(&|| unsafe { f() }), expected);
    // SAFETY: the handles opened above, each closed once.
    unsafe {
        libc::dlclose(h);
        libc::dlclose(z);
    }
}
