//! The filter the corruption test and the fuzz target share: whether
//! loading a (corrupted) image would legitimately run code of the file.
//!
//! memdl runs a file's code only through its initialisers and finalisers
//! (`DT_INIT`, `DT_FINI`, `DT_INIT_ARRAY`, `DT_FINI_ARRAY`; `DT_PREINIT_ARRAY`
//! too, to be safe), IRELATIVE relocations and ifunc (`STT_GNU_IFUNC`)
//! symbols. Random bytes in those places crash by design, so inputs that
//! have any are not loaded. [`runs_code`] replays what the loader reads:
//! the program headers, the dynamic array through the `PT_LOAD`s, every
//! relocation table and every symbol the hash tables count.
#![allow(dead_code)]

const DT_NULL: u64 = 0;
const DT_PLTRELSZ: u64 = 2;
const DT_HASH: u64 = 4;
const DT_SYMTAB: u64 = 6;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_INIT: u64 = 12;
const DT_FINI: u64 = 13;
const DT_REL: u64 = 17;
const DT_RELSZ: u64 = 18;
const DT_JMPREL: u64 = 23;
const DT_INIT_ARRAY: u64 = 25;
const DT_FINI_ARRAY: u64 = 26;
const DT_PREINIT_ARRAY: u64 = 32;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_NODELETE: u64 = 0x8;
const STT_GNU_IFUNC: u8 = 10;
#[cfg(target_arch = "x86_64")]
const R_IRELATIVE: u32 = 37; // R_X86_64_IRELATIVE
#[cfg(target_arch = "aarch64")]
const R_IRELATIVE: u32 = 1032; // R_AARCH64_IRELATIVE

/// The image as the loader would lay it out: `PT_LOAD` (vaddr, memsz,
/// offset, filesz) of the mutated file.
struct Sim<'a> {
    bytes: &'a [u8],
    loads: Vec<(u64, u64, u64, u64)>,
}

impl Sim<'_> {
    /// The byte at `vaddr` after loading: file bytes, zero past `p_filesz`,
    /// `None` outside every `PT_LOAD` (the loader refuses tables there).
    fn byte(&self, vaddr: u64) -> Option<u8> {
        for &(va, memsz, off, filesz) in &self.loads {
            if vaddr >= va && vaddr - va < memsz {
                let rel = vaddr - va;
                if rel >= filesz {
                    return Some(0);
                }
                return self
                    .bytes
                    .get(usize::try_from(off.checked_add(rel)?).ok()?)
                    .copied();
            }
        }
        None
    }
    /// Whether `vaddr` is backed by file bytes (past that, memory is zero).
    fn file_backed(&self, vaddr: u64) -> bool {
        self.loads
            .iter()
            .any(|&(va, _, _, filesz)| vaddr >= va && vaddr - va < filesz)
    }
    fn word<const N: usize>(&self, vaddr: u64) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..N as u64 {
            v |= u64::from(self.byte(vaddr.checked_add(i)?)?) << (8 * i);
        }
        Some(v)
    }
}

fn le(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = bytes.get(at..at.checked_add(n)?)?;
    Some(s.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b)))
}

/// Whether loading `bytes` (and looking symbols up) could run code of the
/// file: an initialiser or finaliser, an IRELATIVE resolver or an ifunc
/// resolver. Also true for `DF_1_NODELETE`, which keeps the image mapped
/// on purpose. Conservative: every value a duplicated tag could take is
/// considered.
pub fn runs_code(bytes: &[u8]) -> bool {
    let (Some(phoff), Some(phnum)) = (le(bytes, 32, 8), le(bytes, 56, 2)) else {
        return false;
    };
    if le(bytes, 54, 2) != Some(56) {
        return false; // refused before any table is read
    }
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let Some(at) = phoff
            .checked_add(i * 56)
            .and_then(|a| usize::try_from(a).ok())
        else {
            return false;
        };
        let Some(ph) = bytes.get(at..at.saturating_add(56)) else {
            return false; // table out of the file: refused
        };
        let f = |o: usize| le(ph, o, 8).unwrap();
        phdrs.push((le(ph, 0, 4).unwrap() as u32, f(8), f(16), f(32), f(40)));
    }
    let sim = Sim {
        bytes,
        loads: phdrs
            .iter()
            .filter(|p| p.0 == 1)
            .map(|&(_, off, va, filesz, memsz)| (va, memsz, off, filesz))
            .collect(),
    };
    // The loader refuses unsorted or overlapping PT_LOADs before reading
    // any table (this also keeps the replay below cheap).
    if sim
        .loads
        .windows(2)
        .any(|w| w[1].0 < w[0].0.saturating_add(w[0].1))
    {
        return false;
    }
    // Every entry of every PT_DYNAMIC up to its DT_NULL.
    let mut dynamic = Vec::new();
    for &(_, _, va, _, memsz) in phdrs.iter().filter(|p| p.0 == 2) {
        for i in 0..memsz / 16 {
            let at = va.wrapping_add(i * 16);
            let (Some(tag), Some(val)) = (sim.word::<8>(at), sim.word::<8>(at.wrapping_add(8)))
            else {
                break;
            };
            if tag == DT_NULL {
                break;
            }
            dynamic.push((tag, val));
        }
    }
    let values = |tag: u64| dynamic.iter().filter(move |d| d.0 == tag).map(|d| d.1);
    if dynamic.iter().any(|&(tag, val)| {
        matches!(
            tag,
            DT_INIT | DT_FINI | DT_INIT_ARRAY | DT_FINI_ARRAY | DT_PREINIT_ARRAY
        ) || (tag == DT_FLAGS_1 && val & DF_1_NODELETE != 0)
    }) {
        return true;
    }
    // IRELATIVE anywhere in a relocation table the loader could walk.
    let tables = [
        (DT_RELA, DT_RELASZ, &[24u64][..]),
        (DT_REL, DT_RELSZ, &[16][..]),
        (DT_JMPREL, DT_PLTRELSZ, &[16, 24][..]),
    ];
    for (tag, size_tag, strides) in tables {
        let size = values(size_tag).max().unwrap_or(0);
        for start in values(tag) {
            for &stride in strides {
                let mut at = start;
                for _ in 0..size / stride {
                    // Past the file bytes the table is zeros (type NONE) or
                    // not inside one segment (refused).
                    if !sim.file_backed(at) {
                        break;
                    }
                    match sim.word::<4>(at.wrapping_add(8)) {
                        Some(t) if t as u32 == R_IRELATIVE => return true,
                        Some(_) => {}
                        None => break,
                    }
                    at = at.wrapping_add(stride);
                }
            }
        }
    }
    // Ifunc symbols among the ones the loader's symbol count covers.
    let mut count = 0u64;
    for h in values(DT_HASH) {
        count = count.max(sim.word::<4>(h.wrapping_add(4)).unwrap_or(0));
    }
    for g in values(DT_GNU_HASH) {
        count = count.max(gnu_count(&sim, g));
    }
    for symtab in values(DT_SYMTAB) {
        for i in 0..count.min(1 << 20) {
            let at = symtab.wrapping_add(i * 24);
            // Past the file bytes symbols are zeros, or the table leaves
            // its segment (refused).
            if !sim.file_backed(at.wrapping_add(4)) {
                break;
            }
            if sim
                .byte(at.wrapping_add(4))
                .is_some_and(|info| info & 0xf == STT_GNU_IFUNC)
            {
                return true;
            }
        }
    }
    false
}

/// The symbol count a GNU hash table implies (as the loader computes it),
/// or as far as the chains can be read.
fn gnu_count(sim: &Sim<'_>, at: u64) -> u64 {
    let r = |a: u64| sim.word::<4>(a);
    let (Some(nbuckets), Some(symoffset), Some(bloom)) =
        (r(at), r(at.wrapping_add(4)), r(at.wrapping_add(8)))
    else {
        return 0;
    };
    // Wrapping arithmetic: the fields are arbitrary, and an address that
    // wraps reads nothing (as the loader refuses it).
    let buckets = at.wrapping_add(16).wrapping_add(bloom.wrapping_mul(8));
    let mut last = 0;
    for b in 0..nbuckets.min(1 << 20) {
        let at = buckets.wrapping_add(b * 4);
        // Zeros from here to the end of the segment (or refused past it).
        if !sim.file_backed(at) {
            break;
        }
        last = last.max(r(at).unwrap_or(0));
    }
    if last < symoffset {
        return symoffset;
    }
    let chains = buckets.wrapping_add(nbuckets * 4);
    while last < 1 << 24 {
        let at = chains.wrapping_add((last - symoffset) * 4);
        // Past the file bytes the chain is zeros and never ends: the loader
        // refuses it (symbol limit), so the count no longer matters.
        if !sim.file_backed(at) {
            return last + 1;
        }
        match r(at) {
            Some(c) if c & 1 == 0 => last += 1,
            _ => return last + 1,
        }
    }
    last + 1
}
