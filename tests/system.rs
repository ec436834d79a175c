//! The system backend against libraries of this machine (not the test
//! dylibs): zlib, SQLite, GMP and libuuid, loaded from bytes.

#![cfg(target_os = "linux")]

use std::ffi::{c_char, c_int, c_uint, c_ulong, CStr};
use std::path::Path;

use memdl::{Error, Library, Options, SystemImage, SystemStrategy, SystemStrategyUsed};

mod common;
use common::{fresh_dir, machine_lib as read_lib, machine_lib_path as lib_path, open_fds, serial};

// Why these tests take serial() (tests/common): every test opens file
// descriptors; the ones that count them must not see another test's, so all
// of them run one at a time.

type Crc32 = unsafe extern "C" fn(c_ulong, *const u8, c_uint) -> c_ulong;
type VersionFn = unsafe extern "C" fn() -> *const c_char;

fn zlib_crc32_hello(img: &SystemImage) -> c_ulong {
    // SAFETY: zlib's crc32(uLong crc, const Bytef *buf, uInt len).
    let crc32: memdl::Symbol<'_, Crc32> = unsafe { img.get("crc32") }.expect("crc32");
    // SAFETY: a 5-byte buffer of 5 bytes.
    unsafe { crc32(0, b"hello".as_ptr(), 5) }
}

fn version_string(img: &SystemImage, name: &str) -> String {
    // SAFETY: zlibVersion / sqlite3_libversion return a static C string.
    let f: memdl::Symbol<'_, VersionFn> = unsafe { img.get(name) }.expect(name);
    // SAFETY: see above.
    unsafe { CStr::from_ptr(f()) }
        .to_string_lossy()
        .into_owned()
}

fn gmp_version(img: &SystemImage) -> String {
    // SAFETY: `const char *const __gmp_version`: the symbol is the address
    // of a pointer to a static C string.
    let v: memdl::Symbol<'_, *const *const c_char> =
        unsafe { img.get(b"__gmp_version") }.expect("__gmp_version");
    // SAFETY: see above.
    unsafe { CStr::from_ptr(**v) }
        .to_string_lossy()
        .into_owned()
}

fn uuid_roundtrip(img: &SystemImage) -> String {
    type Parse = unsafe extern "C" fn(*const c_char, *mut u8) -> c_int;
    type Unparse = unsafe extern "C" fn(*const u8, *mut c_char);
    // SAFETY: libuuid's uuid_parse(const char *, uuid_t) and
    // uuid_unparse_lower(const uuid_t, char *).
    let (parse, unparse): (memdl::Symbol<'_, Parse>, memdl::Symbol<'_, Unparse>) = unsafe {
        (
            img.get("uuid_parse").expect("uuid_parse"),
            img.get("uuid_unparse_lower").expect("uuid_unparse_lower"),
        )
    };
    let mut uu = [0u8; 16];
    let mut out = [0 as c_char; 37];
    // SAFETY: a NUL-terminated 36-character UUID, a 16-byte uuid_t and a
    // 37-byte output buffer.
    unsafe {
        assert_eq!(
            parse(
                c"123E4567-E89B-12D3-A456-426614174000".as_ptr(),
                uu.as_mut_ptr()
            ),
            0
        );
        unparse(uu.as_ptr(), out.as_mut_ptr());
        CStr::from_ptr(out.as_ptr()).to_string_lossy().into_owned()
    }
}

fn assert_not_found(img: &SystemImage, name: &[u8]) {
    match img.symbol_address(name) {
        Err(Error::SymbolNotFound { .. }) => {}
        other => panic!(
            "{:?} in {}: expected SymbolNotFound, got {other:?}",
            String::from_utf8_lossy(name),
            img.backend()
        ),
    }
}

#[test]
fn zlib_from_memory() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load(&read_lib("libz.so.1")) }.expect("load zlib");
    assert_eq!(img.strategy(), SystemStrategyUsed::Memfd);
    assert_eq!(img.backend(), "memfd+dlopen");
    assert_eq!(zlib_crc32_hello(&img), 0x3610a686);
    assert!(version_string(&img, "zlibVersion").starts_with("1."));
    let base = img.base_address();
    assert_ne!(base, 0);
    let crc = img.symbol_address(b"crc32").unwrap() as usize;
    assert!(crc > base, "crc32 {crc:#x} below the base {base:#x}");
    // Through Options too.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img2 =
        unsafe { Options::new().load_system(&read_lib("libz.so.1")) }.expect("load zlib again");
    // A second, independent copy: another inode, another name.
    assert_ne!(img2.base_address(), base);
    assert_eq!(zlib_crc32_hello(&img2), 0x3610a686);
}

#[test]
fn other_libraries_work() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sqlite = unsafe { SystemImage::load(&read_lib("libsqlite3.so.0")) }.expect("sqlite");
    assert!(version_string(&sqlite, "sqlite3_libversion").starts_with("3."));
    // SAFETY: a trusted test or machine library (its initialisers run).
    let gmp = unsafe { SystemImage::load(&read_lib("libgmp.so.10")) }.expect("gmp");
    assert!(gmp_version(&gmp).starts_with('6'), "{}", gmp_version(&gmp));
    // SAFETY: a trusted test or machine library (its initialisers run).
    let uuid = unsafe { SystemImage::load(&read_lib("libuuid.so.1")) }.expect("uuid");
    assert_eq!(
        uuid_roundtrip(&uuid),
        "123e4567-e89b-12d3-a456-426614174000"
    );
}

#[test]
fn only_symbols_defined_in_the_image() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let z = unsafe { SystemImage::load(&read_lib("libz.so.1")) }.expect("load zlib");
    // zlib imports these from libc; dlsym(handle) alone would find them.
    for name in [&b"malloc"[..], b"free", b"printf", b"memcpy", b"dlopen"] {
        assert_not_found(&z, name);
    }
    // Malformed or absent names.
    assert_not_found(&z, b"crc32\0");
    assert_not_found(&z, b"crc\x0032");
    assert_not_found(&z, b"");
    assert_not_found(&z, b"no_such_symbol_anywhere");
    let long = vec![b'x'; 300];
    assert_not_found(&z, &long);
    let mut long_crc = b"crc32".to_vec();
    long_crc.resize(256, b'y');
    assert_not_found(&z, &long_crc);
    // Error text names the symbol.
    let err = z.symbol_address(b"malloc").unwrap_err();
    assert!(err.to_string().contains("malloc"), "{err}");
}

/// One library of the rotation: its file, a symbol it defines, a check.
struct Kind {
    file: &'static str,
    own: &'static str,
}

const KINDS: [Kind; 4] = [
    Kind {
        file: "libz.so.1",
        own: "crc32",
    },
    Kind {
        file: "libsqlite3.so.0",
        own: "sqlite3_libversion",
    },
    Kind {
        file: "libgmp.so.10",
        own: "__gmpz_init",
    },
    Kind {
        file: "libuuid.so.1",
        own: "uuid_generate",
    },
];

fn check_kind(kind: usize, img: &SystemImage) {
    // Its own symbol is found, the other libraries' are not.
    for (k, other) in KINDS.iter().enumerate() {
        if k == kind {
            assert!(
                img.symbol_address(other.own.as_bytes()).is_ok(),
                "{} lost {}",
                KINDS[kind].file,
                other.own
            );
        } else {
            assert_not_found(img, other.own.as_bytes());
        }
    }
    match kind {
        0 => assert_eq!(zlib_crc32_hello(img), 0x3610a686),
        1 => assert!(version_string(img, "sqlite3_libversion").starts_with("3.")),
        2 => assert!(gmp_version(img).starts_with('6')),
        _ => assert_eq!(uuid_roundtrip(img), "123e4567-e89b-12d3-a456-426614174000"),
    }
}

#[test]
fn different_libraries_with_fd_reuse() {
    let _g = serial();
    let bytes: Vec<Vec<u8>> = KINDS.iter().map(|k| read_lib(k.file)).collect();
    let fds_before = open_fds();
    // Three slots; each round drops one image (freeing its fd number) and
    // loads the next kind, which then gets that same fd number.
    let mut slots: Vec<Option<(usize, SystemImage)>> = vec![None, None, None];
    for round in 0..40usize {
        let slot = round % slots.len();
        slots[slot] = None;
        let kind = (round * 7 + slot) % KINDS.len();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load(&bytes[kind]) }.expect("load");
        slots[slot] = Some((kind, img));
        for (k, img) in slots.iter().flatten() {
            check_kind(*k, img);
        }
    }
    drop(slots);
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
}

#[test]
fn library_outliving_dlclose_does_not_shadow_later_loads() {
    let _g = serial();
    // libfontenc needs libz.so.1; glibc satisfies that with an already
    // loaded object whose soname matches, here the memfd zlib, which then
    // outlives its own dlclose under the name /proc/self/fd/N.
    let fontenc_path = lib_path("libfontenc.so.1");
    // .ci/run installs libfontenc1; a missing library is a failure, not a skip.
    let fontenc_bytes =
        std::fs::read(&fontenc_path).unwrap_or_else(|e| panic!("{}: {e}", fontenc_path.display()));
    // SAFETY: a trusted test or machine library (its initialisers run).
    let z = unsafe { SystemImage::load(&read_lib("libz.so.1")) }.expect("zlib");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let fontenc = unsafe { SystemImage::load(&fontenc_bytes) }.expect("fontenc");
    assert!(fontenc.symbol_address(b"FontEncFind").is_ok());
    assert_not_found(&fontenc, b"crc32");
    drop(z);
    // Whatever the next loads are numbered, they must be themselves.
    let mut imgs = Vec::new();
    for kind in [2usize, 1, 3, 2, 1, 3] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load(&read_lib(KINDS[kind].file)) }.expect("load");
        check_kind(kind, &img);
        imgs.push((kind, img));
    }
    for (k, img) in &imgs {
        check_kind(*k, img);
    }
    drop(imgs);
    // And after the libraries are gone, zlib again is a working zlib.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let z = unsafe { SystemImage::load(&read_lib("libz.so.1")) }.expect("zlib again");
    check_kind(0, &z);
}

#[test]
fn garbage_is_a_dlopen_error_without_leaks() {
    let _g = serial();
    let zlib = read_lib("libz.so.1");
    let mut bad_header = zlib[..64].to_vec();
    bad_header.extend_from_slice(&[0xAA; 4096]);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"this is not an ELF file at all".repeat(100)),
        ("empty", Vec::new()),
        ("truncated", zlib[..100].to_vec()),
        ("header only", bad_header),
    ];
    let tmpdir = fresh_dir("garbage");
    let before = open_fds();
    for (what, bytes) in &inputs {
        for options in [
            Options::new(),
            Options::new().system_strategy(SystemStrategy::Memfd),
            Options::new().system_strategy(SystemStrategy::TempFile(tmpdir.clone())),
        ] {
            // SAFETY: a trusted test or machine library (its initialisers run).
            match unsafe { SystemImage::load_with(bytes, &options) } {
                Err(Error::Dlopen { message }) => {
                    assert!(!message.is_empty(), "{what}: empty message")
                }
                Err(e) => panic!("{what}: expected Error::Dlopen, got {e}"),
                Ok(img) => panic!("{what}: loaded as {:?}", img.strategy()),
            }
        }
        assert_eq!(open_fds(), before, "{what}: leaked a file descriptor");
    }
    assert_eq!(dir_entries(&tmpdir), 0, "files left behind");
    // Loading and dropping a real library gives its fd back too.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load(&zlib) }.expect("zlib");
    assert_eq!(open_fds(), before + 1);
    drop(img);
    assert_eq!(open_fds(), before);
    std::fs::remove_dir(&tmpdir).unwrap();
}

fn dir_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn tempfile_strategy_leaves_nothing_behind() {
    let _g = serial();
    let dir = fresh_dir("tempfile");
    let options = Options::new().system_strategy(SystemStrategy::TempFile(dir.clone()));
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load_with(&read_lib("libz.so.1"), &options) }.expect("load");
    assert!(matches!(
        img.strategy(),
        SystemStrategyUsed::UnnamedTempFile | SystemStrategyUsed::NamedTempFile
    ));
    assert_eq!(img.backend(), img.strategy().name());
    assert_eq!(dir_entries(&dir), 0, "a file is visible while loaded");
    check_kind(0, &img);
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img2 =
        unsafe { SystemImage::load_with(&read_lib("libsqlite3.so.0"), &options) }.expect("load");
    check_kind(1, &img2);
    check_kind(0, &img);
    drop(img);
    drop(img2);
    assert_eq!(dir_entries(&dir), 0, "a file was left behind");
    std::fs::remove_dir(&dir).unwrap();

    // A directory that does not exist is an I/O error.
    let missing = Options::new().system_strategy(SystemStrategy::TempFile(
        std::env::temp_dir().join("memdl-no-such-dir/sub"),
    ));
    // SAFETY: a trusted test or machine library (its initialisers run).
    match unsafe { SystemImage::load_with(&read_lib("libz.so.1"), &missing) } {
        Err(Error::Io { .. }) => {}
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn memfd_mapping_has_no_disk_path() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        SystemImage::load_with(
            &read_lib("libz.so.1"),
            &Options::new().system_strategy(SystemStrategy::Memfd),
        )
    }
    .expect("load");
    let crc = img.symbol_address(b"crc32").unwrap() as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
            let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
            (lo..hi).contains(&crc)
        })
        .expect("crc32 is mapped");
    assert!(line.contains("/memfd:memdl:"), "{line}");
    assert!(line.contains("r-xp"), "{line}");
    // Every mapping of the image is the memfd's (or anonymous, e.g. bss).
    let base = img.base_address();
    for line in maps.lines() {
        let lo = line
            .split('-')
            .next()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .unwrap_or(0);
        if lo >= base && lo < crc + 0x1000 {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            assert!(
                path.is_empty() || path.starts_with("/memfd:memdl:"),
                "{line}"
            );
        }
    }
}

#[test]
fn send_sync_and_other_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SystemImage>();
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { SystemImage::load(&read_lib("libz.so.1")) }.expect("load");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(zlib_crc32_hello(&img), 0x3610a686);
                    assert_not_found(&img, b"malloc");
                }
            });
        }
    });
    // Moved to another thread and dropped there.
    let handle = std::thread::spawn(move || {
        let v = zlib_crc32_hello(&img);
        drop(img);
        v
    });
    assert_eq!(handle.join().unwrap(), 0x3610a686);
    // As a trait object.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let lib: Box<dyn Library> =
        Box::new(unsafe { SystemImage::load(&read_lib("libuuid.so.1")) }.unwrap());
    assert!(lib.symbol_address(b"uuid_generate").is_ok());
    assert!(lib.symbol_address(b"malloc").is_err());
}
