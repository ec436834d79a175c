//! The file's DWARF, rebased to the image's runtime addresses.
//!
//! gdb adds a JIT object with every section at its own address and
//! relocates nothing, so the addresses in `.debug_info`, `.debug_line`,
//! `.debug_addr`, range and location lists (link-time addresses of an
//! `ET_DYN` linked at 0) must already be runtime addresses. gimli reads
//! the whole set and writes it again with each address moved by the load
//! bias. Only files with a `.debug_info` pay for it (see the README's
//! "Debugging and profiling" for the cost); the feature `debug-info`
//! (default) brings gimli in.

use gimli::write::{Address, EndianVec, Sections as WriteSections};
use gimli::{EndianSlice, LittleEndian, SectionId};

use super::file::Sections;
use super::ImageView;

/// The sections read (what `gimli::read::Dwarf::load` asks for).
const READ: &[SectionId] = &[
    SectionId::DebugAbbrev,
    SectionId::DebugAddr,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugLineStr,
    SectionId::DebugLoc,
    SectionId::DebugLocLists,
    SectionId::DebugRanges,
    SectionId::DebugRngLists,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugTypes,
];

/// Largest DWARF set converted at load (all sections together): beyond,
/// the image is described without it (symbols and unwinding still work).
const MAX_DWARF: usize = 32 << 20;

/// The rebased `.debug_*` sections (name, bytes); empty when the file's
/// DWARF is missing, too large, or does not parse.
pub(crate) fn rebased(sections: &Sections, view: &ImageView<'_>) -> Vec<(&'static str, Vec<u8>)> {
    let mut data: Vec<(SectionId, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    for &id in READ {
        if let Some(bytes) = sections.section(view.file_len, view.read_file, id.name().as_bytes()) {
            total = total.saturating_add(bytes.len());
            data.push((id, bytes));
        }
    }
    if total > MAX_DWARF {
        return Vec::new();
    }
    let bias = view.mem.bias() as u64;
    // gimli reports malformed input as errors; the unwind guard is only a
    // second line of defence, so that a bug there can never fail a load.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| convert(&data, bias)))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn convert(data: &[(SectionId, Vec<u8>)], bias: u64) -> Option<Vec<(&'static str, Vec<u8>)>> {
    let get = |id: SectionId| {
        let bytes = data
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(&[][..], |(_, d)| d.as_slice());
        Ok::<_, gimli::Error>(EndianSlice::new(bytes, LittleEndian))
    };
    let dwarf = gimli::read::Dwarf::load(get).ok()?;
    // Address 0 is the ELF header of a shared object, never code: it marks
    // functions the linker discarded, and stays 0.
    let rebase = |addr: u64| {
        Some(Address::Constant(if addr == 0 {
            0
        } else {
            addr.wrapping_add(bias)
        }))
    };
    let mut out = gimli::write::Dwarf::from(&dwarf, &rebase).ok()?;
    let mut sections = WriteSections::new(EndianVec::new(LittleEndian));
    out.write(&mut sections).ok()?;
    let mut result = Vec::new();
    sections
        .for_each(|id, w| {
            if !w.slice().is_empty() {
                result.push((id.name(), w.slice().to_vec()));
            }
            Ok::<(), gimli::Error>(())
        })
        .ok()?;
    Some(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn debugvis_converts() {
        let bytes = std::fs::read(memdl_test_dylibs::path("debugvis")).unwrap();
        let read = crate::runtime::debug::file::tests::reader(&bytes);
        let table = crate::elf::SectionTable::read(&bytes);
        let s = super::Sections::read(bytes.len() as u64, &read, table).unwrap();
        assert!(s.has_debug_info());
        let mut data = Vec::new();
        for &id in super::READ {
            if let Some(b) = s.section(bytes.len() as u64, &read, id.name().as_bytes()) {
                data.push((id, b));
            }
        }
        let out = super::convert(&data, 0x7000_0000_0000).unwrap();
        let names: Vec<_> = out.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&".debug_info"), "{names:?}");
        assert!(names.contains(&".debug_line"), "{names:?}");
    }
}
