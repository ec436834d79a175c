//! What benches give the peer loader elf_loader 0.9: it resolves a
//! library's references to its own exports only through the scope of
//! already relocated libraries, which cannot include the library itself, or
//! through the caller's closure; the closure gets the library's own exports
//! from this map (built outside any timed section).

use std::collections::HashMap;

/// The library's defined global and weak dynamic symbols by name, with
/// their values (offsets from its base).
pub fn exports(bytes: &[u8]) -> HashMap<String, usize> {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    elf.dynsyms
        .iter()
        .filter(|s| s.st_shndx != 0 && s.st_bind() != goblin::elf::sym::STB_LOCAL)
        .filter_map(|s| {
            Some((
                elf.dynstrtab.get_at(s.st_name)?.to_owned(),
                s.st_value as usize,
            ))
        })
        .collect()
}
