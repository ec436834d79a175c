//! `ElfImage::load_fd`: an ELF inside a larger file, mapped zero-copy where
//! the file offset allows it and copied where it does not.

use std::ffi::c_ulong;
use std::io::Write;
use std::path::PathBuf;

use memdl::{ElfImage, Error, Placement};

mod common;
use common::page_size as page;
use common::zlib_container;

fn zlib_path() -> PathBuf {
    common::machine_lib_path("libz.so.1")
}

type CrcFn = unsafe extern "C" fn(c_ulong, *const u8, u32) -> c_ulong;

/// Runs zlib's crc32 and audits W^X (every test here loads through it).
fn check_crc(img: &ElfImage) {
    // SAFETY: zlib's crc32 is uLong crc32(uLong, const Bytef *, uInt), as CrcFn.
    let crc: memdl::Symbol<'_, CrcFn> = unsafe { img.get("crc32") }.unwrap();
    // SAFETY: crc32 of the image alive here, on a 5-byte buffer with its length.
    assert_eq!(unsafe { crc(0, b"hello".as_ptr(), 5) }, 0x3610_a686);
    common::assert_no_wx();
}

#[test]
fn whole_file_maps_every_segment_from_the_file() {
    let file = std::fs::File::open(zlib_path()).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    check_crc(&img);
    let segs: Vec<_> = img.segments().collect();
    assert!(segs.len() >= 2);
    assert!(
        segs.iter().all(|s| s.placement == Placement::Mapped),
        "{segs:?}"
    );
    // The text is shared with the file's page cache: /proc/self/maps names
    // the file for the executable mapping.
    let text = segs.iter().find(|s| s.flags & 1 != 0).unwrap().address;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let (s, e) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            let (s, e) = (
                usize::from_str_radix(s, 16).unwrap(),
                usize::from_str_radix(e, 16).unwrap(),
            );
            s <= text && text < e
        })
        .unwrap();
    assert!(line.contains("libz.so"), "{line}");
    assert!(
        line.split_whitespace().nth(1).unwrap().starts_with("r-x"),
        "{line}"
    );
}

#[test]
fn page_aligned_offset_is_zero_copy() {
    let (path, offset, len) = zlib_container(page() as usize * 3);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, offset, len) }.unwrap();
    check_crc(&img);
    assert!(img.segments().all(|s| s.placement == Placement::Mapped));
}

#[test]
fn unaligned_offset_is_copied() {
    let (path, offset, len) = zlib_container(1000);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, offset, len) }.unwrap();
    check_crc(&img);
    assert!(img.segments().all(|s| s.placement == Placement::Copied));
    // The file can go away: nothing refers to it any more.
    drop(file);
    drop(path);
    check_crc(&img);
}

#[test]
fn range_past_the_end_of_the_file_is_an_error() {
    let (path, offset, len) = zlib_container(1000);
    let file = std::fs::File::open(&path).unwrap();
    for (o, l) in [(offset, len + 10_000), (u64::MAX - 10, 100), (offset, 0)] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = unsafe { ElfImage::load_fd(&file, o, l) }.unwrap_err();
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
    // Wrong offset: not an ELF there.
    assert!(matches!(
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe { ElfImage::load_fd(&file, offset + 1, len - 1) },
        Err(Error::BadMagic)
    ));
}

#[test]
fn bss_sharing_the_last_file_page_reads_as_zero() {
    // sqlite's data segment ends in bss inside its last file page.
    let dir = zlib_path().parent().unwrap().to_owned();
    let file = std::fs::File::open(dir.join("libsqlite3.so.0")).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    // SAFETY: sqlite3_libversion_number is int sqlite3_libversion_number(void).
    let v: memdl::Symbol<'_, unsafe extern "C" fn() -> i32> =
        unsafe { img.get("sqlite3_libversion_number") }.unwrap();
    // SAFETY: a function of the image alive here, taking no arguments.
    assert!(unsafe { v() } >= 3_000_000);
    let data = img
        .segments()
        .find(|s| s.flags & 2 != 0)
        .expect("a writable segment");
    assert_eq!(data.placement, Placement::Mapped);
    common::assert_no_wx();
}

fn all_placed(img: &ElfImage, how: Placement) -> bool {
    img.segments().all(|s| s.placement == how)
}

#[test]
fn bytes_in_a_mapped_file_are_mapped_again_not_copied() {
    // The whole library, mapped by the caller; the file closed at once.
    let file = std::fs::File::open(zlib_path()).unwrap();
    // SAFETY: the system's zlib is not truncated while the test runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    drop(file);
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_mapped(&map) }.unwrap();
    check_crc(&img);
    assert!(
        all_placed(&img, Placement::Mapped),
        "{:?}",
        img.segments().collect::<Vec<_>>()
    );
    // The image holds the file itself, not the caller's mapping.
    drop(map);
    check_crc(&img);

    // A library inside a container: page-aligned is zero-copy...
    let (path, offset, len) = zlib_container(page() as usize * 2);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the container is this test's own file.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let slice = &map[offset as usize..(offset + len) as usize];
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_mapped(slice) }.unwrap();
    check_crc(&img);
    assert!(all_placed(&img, Placement::Mapped));

    // ...unaligned is copied from the slice.
    let (path, offset, len) = zlib_container(1000);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: as above.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img =
        unsafe { ElfImage::load_mapped(&map[offset as usize..(offset + len) as usize]) }.unwrap();
    check_crc(&img);
    assert!(all_placed(&img, Placement::Copied));
}

#[test]
fn bytes_that_may_differ_from_any_file_are_copied() {
    // Heap bytes: nothing to map, the same as ElfImage::load.
    let heap = std::fs::read(zlib_path()).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_mapped(&heap) }.unwrap();
    check_crc(&img);
    assert!(all_placed(&img, Placement::Copied));

    // A private mapping the caller wrote to (copy-on-write): its pages no
    // longer show the file, so the file must not be used.
    let (path, offset, len) = zlib_container(page() as usize * 2);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the container is this test's own file.
    let mut map = unsafe { memmap2::MmapOptions::new().map_copy(&file) }.unwrap();
    map[0] ^= 0xff;
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img =
        unsafe { ElfImage::load_mapped(&map[offset as usize..(offset + len) as usize]) }.unwrap();
    check_crc(&img);
    assert!(all_placed(&img, Placement::Copied));

    // Errors are the loader's, whatever the backing.
    assert!(matches!(
        // SAFETY: a trusted test or machine library (its initialisers run).
        unsafe { ElfImage::load_mapped(&map[1..(offset + len) as usize]) },
        Err(Error::BadMagic)
    ));
    // Empty input: the same answer as ElfImage::load gives.
    // SAFETY: a trusted test or machine library (its initialisers run).
    assert!(matches!(
        unsafe { ElfImage::load_mapped(&[]) },
        Err(Error::BadMagic)
    ));
}

#[test]
fn a_mapped_sealed_memfd_is_found_and_shared() {
    let sealed = memdl::SealedElf::new(&std::fs::read(zlib_path()).unwrap()).unwrap();
    // SAFETY: a sealed memfd cannot shrink.
    let map = unsafe { memdl_map(&sealed) };
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_mapped(&map) }.unwrap();
    check_crc(&img);
    assert!(all_placed(&img, Placement::Mapped));
    // Its text is the memfd's pages, not a copy.
    let text = img.segments().find(|s| s.flags & 1 != 0).unwrap().address;
    let m = common::maps()
        .into_iter()
        .find(|m| m.start <= text && text < m.end)
        .unwrap();
    assert!(m.name.starts_with("/memfd:memdl:"), "{m:?}");
}

/// A read-only shared map of a sealed memfd.
///
/// # Safety
/// The file must not shrink while mapped.
unsafe fn memdl_map(sealed: &memdl::SealedElf) -> memmap2::Mmap {
    // SAFETY: forwarded.
    unsafe { memmap2::Mmap::map(sealed) }.unwrap()
}

/// A linker script packing a read-only and a code segment into one page
/// (as a 4 KiB-linked library looks on a 16 KiB kernel), data on the next.
const SHARED_PAGE_LDS: &str = "
PHDRS {
  ro PT_LOAD FILEHDR PHDRS FLAGS(4);
  code PT_LOAD FLAGS(5);
  rw PT_LOAD FLAGS(6);
  dyn PT_DYNAMIC FLAGS(6);
}
SECTIONS {
  . = SIZEOF_HEADERS;
  .hash : { *(.hash) } :ro
  .gnu.hash : { *(.gnu.hash) } :ro
  .dynsym : { *(.dynsym) } :ro
  .dynstr : { *(.dynstr) } :ro
  .rela.dyn : { *(.rela.dyn) } :ro
  .rodata : { *(.rodata*) } :ro
  . = ALIGN(16);
  .text : { *(.text*) } :code
  . = ALIGN(0x10000) + (. & 0xffff);
  .dynamic : { *(.dynamic) } :rw :dyn
  .data : { *(.data.rel.ro*) *(.data*) } :rw
  .bss : { *(.bss*) } :rw
  /DISCARD/ : { *(.note*) *(.eh_frame*) *(.comment) }
}
";

#[test]
fn segments_sharing_a_page_are_copied_the_rest_mapped() {
    // Built here with the C compiler .ci/run installs: the layout needs a
    // linker script no other test library wants.
    let dir = tempfile::tempdir().unwrap();
    let lds = dir.path().join("shared.lds");
    std::fs::write(&lds, SHARED_PAGE_LDS).unwrap();
    let lib = dir.path().join("libshared.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/test-dylibs/example.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = std::process::Command::new(&cc)
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-nostdlib",
            "-fno-stack-protector",
        ])
        .arg(format!("-Wl,-T,{}", lds.display()))
        .args(["-Wl,--hash-style=both", "-Wl,--build-id=none", "-o"])
        .arg(&lib)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success());

    let file = std::fs::File::open(&lib).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    let segs: Vec<_> = img.segments().collect();
    assert_eq!(segs.len(), 3, "{segs:?}");
    // The first two share page 0: both copied. The data has its own pages.
    assert_eq!(
        segs.iter().map(|s| s.placement).collect::<Vec<_>>(),
        [Placement::Copied, Placement::Copied, Placement::Mapped],
        "{segs:?}"
    );
    // SAFETY: int add(int, int) of test-dylibs/example.c.
    let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
        unsafe { img.get("add") }.unwrap();
    // SAFETY: a function of the image alive here, called with two ints.
    assert_eq!(unsafe { add(2, 3) }, 5);
    // Data relocated in the mapped segment: a pointer table of functions.
    // SAFETY: int apply(int, int, int) of test-dylibs/example.c.
    let apply: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32, i32) -> i32> =
        unsafe { img.get("apply") }.unwrap();
    // SAFETY: a function of the image alive here, called with three ints.
    assert_eq!(unsafe { apply(2, 6, 7) }, 42);
    common::assert_no_wx();
}

/// Mappings and descriptors of `path` this process still has.
fn uses_of(path: &std::path::Path) -> (usize, usize) {
    let real = std::fs::canonicalize(path).unwrap();
    let name = real.to_string_lossy().into_owned();
    let maps = common::maps()
        .into_iter()
        .filter(|m| m.name == name)
        .count();
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| *t == real)
        .count();
    (maps, fds)
}

#[test]
fn a_failure_after_segments_are_mapped_leaves_nothing_behind() {
    // zlib with its dynamic section overwritten: the layout is fine, so the
    // segments get mapped from the file, then reading the dynamic section
    // fails.
    let mut lib = std::fs::read(zlib_path()).unwrap();
    let elf = goblin::elf::Elf::parse(&lib).unwrap();
    let dynamic = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_DYNAMIC)
        .unwrap();
    let (off, size) = (dynamic.p_offset as usize, dynamic.p_filesz as usize);
    drop(elf);
    lib[off..off + size].fill(0xff);
    let head = page() as usize * 4;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&vec![0; head]).unwrap();
    f.write_all(&lib).unwrap();
    let path = f.into_temp_path();
    let file = std::fs::File::open(&path).unwrap();
    assert_eq!(uses_of(&path), (0, 1));

    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { ElfImage::load_fd(&file, head as u64, lib.len() as u64) }.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadDynamic { .. } | Error::TableOutOfBounds { .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        uses_of(&path),
        (0, 1),
        "a mapping or fd of the file was left"
    );

    // SAFETY: the file is this test's own.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe { ElfImage::load_mapped(&map[head..]) }.unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadDynamic { .. } | Error::TableOutOfBounds { .. }
        ),
        "{err:?}"
    );
    drop(map);
    assert_eq!(
        uses_of(&path),
        (0, 1),
        "a mapping or fd of the file was left"
    );
}
