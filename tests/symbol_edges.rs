//! Symbol-table edge cases real libraries have (issue #12): a GNU hash
//! table that hashes no symbol, and symbols whose value is 0.

mod common;

use common::{machine_lib, take_trace, test_lib};
use memdl::{ElfImage, SystemImage};

/// A library that only imports has a GNU hash table with every bucket
/// empty, which implies no symbol count; its relocations name symbols past
/// the hash table's symbol offset. It loads and runs its initialiser, as
/// with the system loader, and exports nothing.
#[test]
fn a_gnu_hash_table_that_hashes_nothing() {
    let bytes = test_lib("import_only");
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    assert!(
        elf.dynamic.as_ref().unwrap().info.hash.is_none(),
        "no DT_HASH"
    );
    assert!(
        elf.dynsyms
            .iter()
            .all(|s| s.st_bind() == goblin::elf::sym::STB_LOCAL || s.st_shndx == 0),
        "imports only"
    );
    // SAFETY: a trusted test library (its initialiser runs).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    assert_eq!(img.exports().count(), 0);
    // SAFETY: as above.
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_eq!(take_trace(), ["import only", "import only"]);
    drop((img, sys));
}

/// A defined symbol whose value is 0, neither absolute nor thread-local,
/// is no definition for glibc (it skips it); nor for memdl. (zlib's own
/// code does not call zlibCompileFlags, so both loaders still load it.)
#[test]
fn a_symbol_at_value_zero_is_not_exported() {
    let mut bytes = machine_lib("libz.so.1");
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let index = elf
        .dynsyms
        .iter()
        .position(|s| elf.dynstrtab.get_at(s.st_name) == Some("zlibCompileFlags"))
        .unwrap();
    let dynsym = elf
        .section_headers
        .iter()
        .find(|s| s.sh_type == goblin::elf::section_header::SHT_DYNSYM)
        .unwrap()
        .sh_offset as usize;
    let value_at = dynsym + index * 24 + 8;
    bytes[value_at..value_at + 8].fill(0);
    // SAFETY: zlib (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: only the address is asked for.
    assert!(unsafe { img.get::<*const u8>("zlibCompileFlags") }.is_err());
    assert!(img.exports().all(|(name, _)| name != b"zlibCompileFlags"));
    // SAFETY: as above.
    assert!(unsafe { img.get::<*const u8>("adler32") }.is_ok());
    // SAFETY: as above.
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    // SAFETY: as above.
    assert!(unsafe { sys.get::<*const u8>("zlibCompileFlags") }.is_err());
}
