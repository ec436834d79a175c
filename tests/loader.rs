//! The custom loader on real libraries of the machine: protections, cleanup,
//! the resolver chain and symbol lookup rules.

use std::ffi::{c_char, c_ulong, c_void, CStr};

use memdl::{ElfImage, Error, Library, Options};

mod common;
use common::{assert_no_wx, machine_lib as multiarch_lib, mappings_in};

/// `drop_unmaps_everything` checks an address range is free after a drop:
/// no other test of this file may map an image meanwhile (the kernel would
/// happily reuse the range).
static ADDRESS_SPACE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ADDRESS_SPACE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    ADDRESS_SPACE.write().unwrap_or_else(|e| e.into_inner())
}

type CrcFn = unsafe extern "C" fn(c_ulong, *const u8, u32) -> c_ulong;

#[test]
fn zlib_loads_runs_and_honours_protections() {
    let _address_space = shared();
    let bytes = multiarch_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    assert_eq!(img.soname(), Some("libz.so.1"));
    // SAFETY: zlib's crc32 is uLong crc32(uLong, const Bytef *, uInt), as CrcFn.
    let crc: memdl::Symbol<'_, CrcFn> = unsafe { img.get("crc32") }.unwrap();
    // SAFETY: crc32 of the image alive here, on a 5-byte buffer with its length.
    assert_eq!(unsafe { crc(0, b"hello".as_ptr(), 5) }, 0x3610_a686);
    // SAFETY: zlib's zlibVersion is const char *zlibVersion(void).
    let version: memdl::Symbol<'_, unsafe extern "C" fn() -> *const c_char> =
        unsafe { img.get(b"zlibVersion") }.unwrap();
    // SAFETY: zlibVersion returns a static NUL-terminated string of the live image.
    let v = unsafe { CStr::from_ptr(version()) }.to_str().unwrap();
    assert!(v.starts_with("1."), "{v}");

    assert_no_wx();
    // The code is executable and read-only; RELRO is read-only.
    let text = region::query(crc.as_ptr() as *const u8).unwrap();
    assert!(text.is_executable() && !text.is_writable());
    let f = *crc as usize;
    let maps = mappings_in(f, f + 1);
    assert_eq!(maps.len(), 1);
    assert_eq!(&maps[0].perms[..3], "r-x");
}

#[test]
fn sqlite_resolves_its_imports_with_versions() {
    let _address_space = shared();
    let bytes = multiarch_lib("libsqlite3.so.0");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: sqlite's sqlite3_libversion is const char *sqlite3_libversion(void).
    let v: memdl::Symbol<'_, unsafe extern "C" fn() -> *const c_char> =
        unsafe { img.get("sqlite3_libversion") }.unwrap();
    // SAFETY: it returns a static NUL-terminated string of the live image.
    assert!(unsafe { CStr::from_ptr(v()) }
        .to_str()
        .unwrap()
        .starts_with("3."));
    // SAFETY: sqlite's sqlite3_libversion_number is int sqlite3_libversion_number(void).
    let n: memdl::Symbol<'_, unsafe extern "C" fn() -> i32> =
        unsafe { img.get("sqlite3_libversion_number") }.unwrap();
    // SAFETY: a function of the image alive here, taking no arguments.
    assert!(unsafe { n() } >= 3_000_000);
    assert_no_wx();
}

#[test]
fn drop_unmaps_everything() {
    // In a forked child: the harness's other threads map stacks and arenas
    // at any time, and the kernel may reuse the freed range for them. The
    // write lock keeps this file's tests out of the loader while forking.
    let _address_space = exclusive();
    let bytes = multiarch_lib("libz.so.1");
    let (_, status) = common::run_in_child(|_| {
        let (lo, hi) = {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load(&bytes) }.unwrap();
            let lo = img.base_address();
            let hi = img.exports().map(|(_, a)| a).max().unwrap() + 1;
            assert!(!mappings_in(lo, hi).is_empty());
            assert_no_wx();
            (lo, hi)
        };
        i32::from(!mappings_in(lo, hi).is_empty())
    });
    assert!(
        common::exited_cleanly(status),
        "image memory still mapped after drop (child status {status:#x})"
    );
}

#[test]
fn denied_host_lookups_report_every_missing_import_and_run_nothing() {
    let _address_space = shared();
    let bytes = multiarch_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { Options::new().deny_host_lookups().load(&bytes) }.unwrap_err();
    let Error::UnresolvedSymbols { names } = err else {
        panic!("expected UnresolvedSymbols, got {err:?}");
    };
    // zlib imports memcpy, malloc, free, ... with glibc versions, and all of
    // them are listed, not only the first.
    assert!(names.len() > 10, "{names:?}");
    for want in ["malloc@GLIBC_2.", "free@GLIBC_2.", "memcpy@GLIBC_2."] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} in {names:?}"
        );
    }
}

#[test]
fn host_symbols_come_before_the_global_scope() {
    let _address_space = shared();
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn counting_malloc(n: usize) -> *mut c_void {
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: plain libc allocation.
        unsafe { libc::malloc(n) }
    }
    let bytes = multiarch_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .symbol("malloc", counting_malloc as *const c_void)
            .load(&bytes)
    }
    .unwrap();
    type Compress = unsafe extern "C" fn(*mut u8, *mut c_ulong, *const u8, c_ulong) -> i32;
    // SAFETY: zlib's int compress(Bytef *, uLongf *, const Bytef *, uLong), as Compress.
    let compress: memdl::Symbol<'_, Compress> = unsafe { img.get("compress") }.unwrap();
    let src = vec![7u8; 4096];
    let mut dst = vec![0u8; 8192];
    let mut len = dst.len() as c_ulong;
    // SAFETY: dst is writable for len bytes and src readable for src.len(); both
    // outlive the call, and the image is alive.
    let rc = unsafe {
        compress(
            dst.as_mut_ptr(),
            &mut len,
            src.as_ptr(),
            src.len() as c_ulong,
        )
    };
    assert_eq!(rc, 0);
    assert!(
        CALLS.load(Ordering::SeqCst) > 0,
        "zlib allocated through the host's malloc"
    );
    assert_no_wx();
}

#[test]
fn lookups_find_exports_only() {
    let _address_space = shared();
    let bytes = multiarch_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // Imports are not exports.
    assert!(matches!(
        img.symbol_address(b"malloc"),
        Err(Error::SymbolNotFound { .. })
    ));
    assert!(matches!(
        img.symbol_address(b"no_such_symbol"),
        Err(Error::SymbolNotFound { .. })
    ));
    assert!(matches!(
        img.symbol_address(b""),
        Err(Error::SymbolNotFound { .. })
    ));
    assert_no_wx();
    // Every listed export is found at its listed address.
    let mut n = 0;
    for (name, addr) in img.exports() {
        assert_eq!(img.symbol_address(name).unwrap() as usize, addr);
        n += 1;
    }
    assert!(n > 50);
    // A versioned lookup names a version zlib defines; a plain lookup finds
    // the default (`@@`) version at the same address.
    let plain = img.symbol_address(b"crc32_z").unwrap();
    // SAFETY: a pointer type: get_versioned yields the address, which is never
    // dereferenced or called.
    let versioned: memdl::Symbol<'_, *const c_void> =
        unsafe { img.get_versioned("crc32_z", "ZLIB_1.2.9") }.unwrap();
    assert_eq!(versioned.as_ptr(), plain);
    // SAFETY: as above: only the lookup's result is inspected.
    assert!(unsafe { img.get_versioned::<*const c_void>("crc32_z", "ZLIB_1.2.0") }.is_err());
    // Symbol<T> must be pointer-sized.
    // SAFETY: the lookup is refused on the type's size; nothing is read.
    assert!(matches!(
        unsafe { img.get::<u8>("crc32") },
        Err(Error::SymbolTypeSize { size: 1 })
    ));
}

#[test]
fn images_are_send_and_sync_and_usable_across_threads() {
    let _address_space = shared();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ElfImage>();
    let bytes = multiarch_lib("libz.so.1");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                // SAFETY: zlib's crc32 is uLong crc32(uLong, const Bytef *, uInt), as CrcFn.
                let crc: memdl::Symbol<'_, CrcFn> = unsafe { img.get("crc32") }.unwrap();
                // SAFETY: the image outlives the scope; a 5-byte buffer with its length.
                assert_eq!(unsafe { crc(0, b"hello".as_ptr(), 5) }, 0x3610_a686);
            });
        }
    });
    assert_no_wx();
    // Dropped on another thread.
    std::thread::spawn(move || drop(img)).join().unwrap();
}

#[test]
fn relro_is_read_only_after_load() {
    // Alone: it reads /proc/self/maps page by page, which qemu-user (the
    // aarch64 lane) rebuilds from its own page table and has been seen to
    // miss a page while another test maps or unmaps at the same time.
    let _address_space = exclusive();
    // zlib's PT_GNU_RELRO covers its init/fini arrays, .dynamic and GOT:
    // written by relocation, then sealed. Its whole pages are read-only,
    // and the data after it stays writable.
    let bytes = multiarch_lib("libz.so.1");
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let relro = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_GNU_RELRO)
        .expect("zlib has PT_GNU_RELRO");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let page = common::page_size() as usize;
    let bias = img.base_address();
    let start = (bias + relro.p_vaddr as usize) & !(page - 1);
    let end = (bias + (relro.p_vaddr + relro.p_memsz) as usize) & !(page - 1);
    assert!(end > start, "RELRO covers at least one whole page");
    for addr in (start..end).step_by(page) {
        let r = region::query(addr as *const u8).unwrap();
        assert!(
            r.is_readable() && !r.is_writable() && !r.is_executable(),
            "RELRO page {addr:#x}: {:?}",
            r.protection()
        );
    }
    let data = img
        .segments()
        .find(|s| s.flags & 2 != 0)
        .expect("a writable segment");
    let last = (data.address + data.size as usize - 1) & !(page - 1);
    assert!(last >= end, "zlib has data pages past RELRO");
    assert!(region::query(last as *const u8).unwrap().is_writable());
    assert_no_wx();
}

extern "C" {
    /// libgcc's lookup of the unwind entry covering `pc` (registered
    /// sections included).
    fn _Unwind_Find_FDE(pc: *const c_void, bases: *mut [usize; 3]) -> *const c_void;
}

#[test]
fn unwind_tables_of_a_valid_image_are_registered() {
    let _address_space = shared();
    // The .eh_frame check in front of __register_frame accepts real
    // libraries: libgcc finds zlib's and libexample's frames.
    for bytes in [multiarch_lib("libz.so.1"), common::test_lib("example")] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        let name = if img.soname().is_some() {
            "crc32"
        } else {
            "add"
        };
        let f = img.symbol_address(name.as_bytes()).unwrap();
        let mut bases = [0usize; 3];
        // SAFETY: a lookup by address; `bases` is writable.
        let fde = unsafe { _Unwind_Find_FDE(f.cast::<u8>().wrapping_add(1).cast(), &mut bases) };
        assert!(!fde.is_null(), "no FDE for {name}");
    }
}
