//! `ElfImage::load_fd`: an ELF inside a larger file, mapped zero-copy where
//! the file offset allows it and copied where it does not.

use std::ffi::c_ulong;
use std::io::Write;
use std::path::PathBuf;

use memdl::{ElfImage, Error, Placement};

mod common;
use common::page_size as page;

fn zlib_path() -> PathBuf {
    common::machine_lib_path("libz.so.1")
}

type CrcFn = unsafe extern "C" fn(c_ulong, *const u8, u32) -> c_ulong;

/// Runs zlib's crc32 and audits W^X (every test here loads through it).
fn check_crc(img: &ElfImage) {
    let crc: memdl::Symbol<'_, CrcFn> = unsafe { img.get("crc32") }.unwrap();
    assert_eq!(unsafe { crc(0, b"hello".as_ptr(), 5) }, 0x3610_a686);
    common::assert_no_wx();
}

/// A container file: `head` junk bytes, the library, then a junk tail.
fn container(head: usize) -> (tempfile::TempPath, u64, u64) {
    let lib = std::fs::read(zlib_path()).unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&vec![0xa5; head]).unwrap();
    f.write_all(&lib).unwrap();
    f.write_all(&[0x5a; 777]).unwrap();
    (f.into_temp_path(), head as u64, lib.len() as u64)
}

#[test]
fn whole_file_maps_every_segment_from_the_file() {
    let file = std::fs::File::open(zlib_path()).unwrap();
    let len = file.metadata().unwrap().len();
    let img = ElfImage::load_fd(&file, 0, len).unwrap();
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
    let (path, offset, len) = container(page() as usize * 3);
    let file = std::fs::File::open(&path).unwrap();
    let img = ElfImage::load_fd(&file, offset, len).unwrap();
    check_crc(&img);
    assert!(img.segments().all(|s| s.placement == Placement::Mapped));
}

#[test]
fn unaligned_offset_is_copied() {
    let (path, offset, len) = container(1000);
    let file = std::fs::File::open(&path).unwrap();
    let img = ElfImage::load_fd(&file, offset, len).unwrap();
    check_crc(&img);
    assert!(img.segments().all(|s| s.placement == Placement::Copied));
    // The file can go away: nothing refers to it any more.
    drop(file);
    drop(path);
    check_crc(&img);
}

#[test]
fn range_past_the_end_of_the_file_is_an_error() {
    let (path, offset, len) = container(1000);
    let file = std::fs::File::open(&path).unwrap();
    for (o, l) in [(offset, len + 10_000), (u64::MAX - 10, 100), (offset, 0)] {
        let err = ElfImage::load_fd(&file, o, l).unwrap_err();
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
        ElfImage::load_fd(&file, offset + 1, len - 1),
        Err(Error::BadMagic)
    ));
}

#[test]
fn bss_sharing_the_last_file_page_reads_as_zero() {
    // sqlite's data segment ends in bss inside its last file page.
    let dir = zlib_path().parent().unwrap().to_owned();
    let file = std::fs::File::open(dir.join("libsqlite3.so.0")).unwrap();
    let len = file.metadata().unwrap().len();
    let img = ElfImage::load_fd(&file, 0, len).unwrap();
    let v: memdl::Symbol<'_, unsafe extern "C" fn() -> i32> =
        unsafe { img.get("sqlite3_libversion_number") }.unwrap();
    assert!(unsafe { v() } >= 3_000_000);
    let data = img
        .segments()
        .find(|s| s.flags & 2 != 0)
        .expect("a writable segment");
    assert_eq!(data.placement, Placement::Mapped);
    common::assert_no_wx();
}
