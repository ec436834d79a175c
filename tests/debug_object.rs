//! The object memdl registers through the GDB JIT interface, read back in
//! process (no debugger): where it lies and what it refers to.
//!
//! A stripped library's object is written in the room reserved under the
//! image and refers to the image's own `.eh_frame` and dynamic string
//! table in place (nothing copied, nothing read from the file); a library
//! whose `.symtab` is carried gets an object of its own. `tests/debugger.rs`
//! shows gdb, lldb and perf using both kinds.

mod common;

use common::{machine_lib, serial, test_lib};
use goblin::elf::Elf;
use memdl::{ElfImage, Options};

#[repr(C)]
struct JitCodeEntry {
    next: *const JitCodeEntry,
    prev: *const JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

#[repr(C)]
struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *const JitCodeEntry,
    first_entry: *const JitCodeEntry,
}

extern "C" {
    // memdl's descriptor: the symbol gdb reads.
    static __jit_debug_descriptor: JitDescriptor;
}

/// The object registered last: its address and its bytes.
fn newest_object() -> (usize, &'static [u8]) {
    // SAFETY: read under `serial()`, while no other test registers; the
    // entry and its object live as long as the image the caller holds.
    unsafe {
        let d = &raw const __jit_debug_descriptor;
        let entry = (*d).first_entry;
        assert!(!entry.is_null(), "nothing registered");
        let (addr, len) = ((*entry).symfile_addr, (*entry).symfile_size as usize);
        (addr as usize, std::slice::from_raw_parts(addr, len))
    }
}

fn image_start(img: &ElfImage) -> usize {
    img.segments().map(|s| s.address).min().unwrap()
}

fn section<'a>(elf: &'a Elf<'_>, name: &str) -> &'a goblin::elf::SectionHeader {
    elf.section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(name))
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_stripped_library_is_described_in_place() {
    let _lock = serial();
    let bytes = machine_lib("libz.so.1");
    // SAFETY: the system's zlib, trusted.
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    // Right under the image, and reaching into it.
    assert!(addr < start && addr + object.len() > start);
    assert!(start - addr <= 64 << 10, "object far below the image");
    let elf = Elf::parse(object).expect("the object parses");
    // `.eh_frame` is the image's own, at its runtime address.
    let eh = section(&elf, ".eh_frame");
    assert_eq!(addr as u64 + eh.sh_offset, eh.sh_addr);
    assert!(eh.sh_addr as usize > start && eh.sh_size > 0);
    // `.strtab` is the image's dynamic string table; `crc32` is named
    // through it at the address the image exports.
    let strtab = section(&elf, ".strtab");
    assert!(addr as u64 + strtab.sh_offset >= start as u64);
    // SAFETY: only the address is used; nothing is called or read.
    let crc32 = unsafe { img.get::<usize>("crc32") }.unwrap().as_ptr() as u64;
    let found = elf
        .syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some("crc32"))
        .expect("crc32 in .symtab");
    assert_eq!(found.st_value, crc32);
    drop(img);
}

#[test]
fn a_carried_symtab_gets_an_object_of_its_own_and_the_limit_drops_it() {
    let _lock = serial();
    let bytes = test_lib("debugvis");
    let has_local = |elf: &Elf<'_>| {
        elf.syms
            .iter()
            .any(|s| elf.strtab.get_at(s.st_name) == Some("debugvis_local"))
    };
    // SAFETY (both loads): the crate's own test library.
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    assert!(
        !(addr < start && addr + object.len() > start),
        "not in place"
    );
    let elf = Elf::parse(object).expect("the object parses");
    assert!(has_local(&elf), "the file's local symbol is carried");
    drop(img);

    let options = Options::new().debugger_file_info_limit(0);
    // SAFETY: as above.
    let img = unsafe { ElfImage::load_with(&bytes, &options) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    assert!(addr < start && addr + object.len() > start, "in place");
    let elf = Elf::parse(object).expect("the object parses");
    assert!(!has_local(&elf), "over the limit: exported symbols only");
    assert!(elf
        .syms
        .iter()
        .any(|s| elf.strtab.get_at(s.st_name) == Some("debugvis_compute")));
    drop(img);
}
