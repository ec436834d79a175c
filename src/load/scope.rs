//! What the system loader's objects tell before any import is looked up,
//! from one `dl_iterate_phdr` walk:
//!
//! * a fingerprint of the set of loaded objects, which the import cache is
//!   keyed by (see `resolve.rs`);
//! * which of the image's weak imports no loaded object can define.
//!
//! A lookup that finds nothing is the system loader's dearest: glibc
//! builds an error message for `dlerror` each time. And nearly every
//! library has weak imports that are nowhere (GCC's startup files leave
//! `__gmon_start__`, `_ITM_registerTMCloneTable` and
//! `_ITM_deregisterTMCloneTable` in each), each asked of the global scope
//! and then of every `DT_NEEDED` library: six failing lookups of zlib's 25.
//!
//! An object with a GNU hash table carries a Bloom filter that glibc,
//! bionic and FreeBSD's loader test before anything else when they look a
//! name up in it, then the hash chain of the name's bucket: a name that
//! every loaded object's filter rejects, or whose hash no entry of its
//! chain has, cannot be found by any lookup in any scope, so it is not
//! asked (the filter alone admits a made-up name now and then: zlib's
//! `_ITM_deregisterTMCloneTable` was asked twice, in vain). An object whose
//! GNU hash table cannot be read safely (none, only `DT_HASH`, or fields
//! that are not plainly right) rejects nothing. The filter is read inside
//! the walk's callback, while the system loader holds its lock: no object
//! can be unloaded meanwhile, and every read is checked to lie in a
//! readable segment of the object first.

use std::ffi::{c_int, c_void, CStr};
use std::hash::Hasher;

use goblin::elf::program_header::{PF_R, PT_DYNAMIC, PT_LOAD};

use crate::elf::symbols::{bloom_probe, gnu_hash, gnu_header_fault};
use crate::load::resolve::NameHasher;

/// `DT_NULL` and `DT_GNU_HASH`.
const DT_NULL: i64 = 0;
const DT_GNU_HASH: i64 = 0x6fff_fef5;

/// What one walk found.
pub(super) struct Scope {
    /// (hash of every object's load address, program header count and
    /// name, number of objects).
    pub generation: (u64, u64),
    /// For each name asked about, whether some loaded object may define it.
    pub may_define: Vec<bool>,
}

/// Walks the loaded objects once: their fingerprint, and for each of
/// `names` whether some object's GNU hash table admits it.
///
/// The fingerprint: a library unloaded and loaded again at the same
/// address (as a `DT_NEEDED` like `libm` is, by every load and drop of an
/// image needing it) leaves it, and every address inside it, unchanged;
/// one that comes back elsewhere, or any other object coming or going,
/// changes it and empties the import cache.
pub(super) fn walk(names: &[&[u8]]) -> Scope {
    struct State {
        hasher: NameHasher,
        count: u64,
        hashes: Vec<u32>,
        may_define: Vec<bool>,
        undecided: usize,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the state passed below; the system loader
        // passes a valid info whose name is null or a NUL-terminated string.
        let (state, info) = unsafe { (&mut *data.cast::<State>(), &*info) };
        state.hasher.write_usize(info.dlpi_addr as usize);
        state.hasher.write_usize(usize::from(info.dlpi_phnum));
        if !info.dlpi_name.is_null() {
            // SAFETY: non-null: a NUL-terminated string (see above).
            let name = unsafe { CStr::from_ptr(info.dlpi_name) };
            state.hasher.write(name.to_bytes());
        }
        state.count += 1;
        if state.undecided > 0 {
            let table = GnuTable::of(info);
            for (i, &h) in state.hashes.iter().enumerate() {
                if !state.may_define[i] && table.as_ref().is_none_or(|t| t.admits(h)) {
                    state.may_define[i] = true;
                    state.undecided -= 1;
                }
            }
        }
        0
    }
    let mut state = State {
        hasher: NameHasher(0x5eed),
        count: 0,
        hashes: names.iter().map(|n| gnu_hash(n)).collect(),
        may_define: vec![false; names.len()],
        undecided: names.len(),
    };
    // SAFETY: the callback only updates the state it is handed and reads
    // objects' memory as `GnuTable::of` checks.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut state as *mut State).cast()) };
    Scope {
        generation: (state.hasher.finish(), state.count),
        may_define: state.may_define,
    }
}

/// A loaded object's GNU hash table: its Bloom filter and hash chains, as
/// the system loader reads them before it compares any name.
struct GnuTable {
    /// The filter's 64-bit words, a power of two of them.
    words: *const u64,
    mask: u32,
    shift: u32,
    /// The buckets (`nbuckets` words), then the chains, of which `chains`
    /// words lie in the object's readable segment.
    buckets: *const u32,
    nbuckets: u32,
    symoffset: u32,
    chains: u64,
}

impl GnuTable {
    /// The GNU hash table of the object `info` describes, if it has one
    /// whose filter and buckets lie in a readable segment of the object,
    /// found through a dynamic section that does too.
    fn of(info: &libc::dl_phdr_info) -> Option<GnuTable> {
        if info.dlpi_phdr.is_null() {
            return None;
        }
        // SAFETY: the system loader's program headers of a loaded object:
        // `dlpi_phnum` entries at `dlpi_phdr`, valid during the callback.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let base = info.dlpi_addr;
        // The end of the readable `PT_LOAD` that `[addr, addr + len)` lies
        // in, if one does.
        let readable_end = |addr: u64, len: u64| {
            phdrs
                .iter()
                .filter(|p| p.p_type == PT_LOAD && p.p_flags & PF_R != 0)
                .find_map(|p| {
                    let start = base.wrapping_add(p.p_vaddr);
                    let end = start.checked_add(p.p_memsz)?;
                    (addr >= start && addr.checked_add(len)? <= end).then_some(end)
                })
        };
        let readable = |addr: u64, len: u64| readable_end(addr, len).is_some();
        let dynamic = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC)?;
        let (dyn_at, dyn_len) = (base.wrapping_add(dynamic.p_vaddr), dynamic.p_memsz);
        if !readable(dyn_at, dyn_len) || dyn_at % 8 != 0 {
            return None;
        }
        // SAFETY: `[dyn_at, dyn_at + dyn_len)` lies in a readable segment
        // of the object (checked above) and is 8-aligned.
        let read = |addr: u64| unsafe { std::ptr::read(addr as *const u64) };
        let value = (0..dyn_len / 16)
            .map(|i| dyn_at + i * 16)
            .map(|entry| (read(entry) as i64, read(entry + 8)))
            .take_while(|&(tag, _)| tag != DT_NULL)
            .find(|&(tag, _)| tag == DT_GNU_HASH)?
            .1;
        // The loader may have relocated the entry in place (glibc does) or
        // not (bionic, a read-only dynamic section): whichever lies in the
        // object; neither, or both, is not plainly right.
        let header = match (readable(value, 16), readable(base.wrapping_add(value), 16)) {
            (true, false) => value,
            (false, true) => base.wrapping_add(value),
            (true, true) if base == 0 => value,
            _ => return None,
        };
        if header % 8 != 0 {
            return None;
        }
        // SAFETY: 16 readable bytes at `header` (checked), 8-aligned.
        let [nbuckets, symoffset, maskwords, shift] =
            unsafe { std::ptr::read(header as *const [u32; 4]) };
        let words = header + 16;
        let buckets = words + u64::from(maskwords) * 8;
        let chains_at = buckets + u64::from(nbuckets) * 4;
        if gnu_header_fault(nbuckets, maskwords, shift).is_some() {
            return None;
        }
        // The chains follow the buckets, as far as their segment goes (the
        // table does not say how long they are).
        let segment_end = readable_end(words, chains_at - words)?;
        Some(GnuTable {
            words: words as *const u64,
            mask: maskwords - 1,
            shift,
            buckets: buckets as *const u32,
            nbuckets,
            symoffset,
            chains: (segment_end - chains_at) / 4,
        })
    }

    /// Whether the table may define a name of GNU hash `h`: its filter
    /// admits it (glibc's first test) and an entry of its bucket's chain
    /// has its hash (the second). A chain that runs past the segment, or
    /// a bucket before the hashed symbols, admits it.
    fn admits(&self, h: u32) -> bool {
        let (index, bits) = bloom_probe(h, self.mask, self.shift);
        // SAFETY: `index <= mask`, and the `mask + 1` words were checked
        // to lie in a readable segment of the object, which stays loaded
        // while the walk's callback runs.
        let word = unsafe { std::ptr::read(self.words.add(index)) };
        if word & bits != bits {
            return false;
        }
        // SAFETY: `h % nbuckets < nbuckets`, and the buckets were checked
        // to lie in a readable segment, as the filter.
        let first = unsafe { std::ptr::read(self.buckets.add((h % self.nbuckets) as usize)) };
        if first == 0 {
            return false;
        }
        let Some(mut i) = first.checked_sub(self.symoffset).map(u64::from) else {
            return true;
        };
        // The chain words follow the buckets.
        let chains = self.buckets.wrapping_add(self.nbuckets as usize);
        while i < self.chains {
            // SAFETY: `i < chains`: the word lies in the readable segment
            // holding the buckets (see `of`).
            let entry = unsafe { std::ptr::read(chains.add(i as usize)) };
            if entry | 1 == h | 1 {
                return true;
            }
            if entry & 1 != 0 {
                return false;
            }
            i += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dlsym(name: &[u8]) -> bool {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: a lookup of a NUL-terminated name in the global scope.
        !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) }.is_null()
    }

    #[test]
    fn a_rejected_name_is_nowhere_and_a_defined_one_is_admitted() {
        let made_up: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("memdl_no_such_symbol_{i}").into_bytes())
            .collect();
        let mut names: Vec<&[u8]> = made_up.iter().map(Vec::as_slice).collect();
        let defined: [&[u8]; 4] = [b"malloc", b"dlsym", b"pthread_create", b"__cxa_finalize"];
        names.extend(defined);
        let scope = walk(&names);
        assert_eq!(scope.may_define.len(), names.len());
        for (name, &may) in names.iter().zip(&scope.may_define) {
            if !may {
                assert!(
                    !dlsym(name),
                    "{} rejected but defined",
                    String::from_utf8_lossy(name)
                );
            }
        }
        assert!(
            scope.may_define[200..].iter().all(|&m| m),
            "a defined name was rejected"
        );
        // Every object's filter admits a made-up name now and then (a few
        // per cent each), but its hash chain does not have it: all are
        // rejected (unless a hash collides, one in 2^31).
        let rejected = scope.may_define[..200].iter().filter(|&&m| !m).count();
        assert_eq!(rejected, 200, "made-up names admitted");
        // The fingerprint does not depend on the names asked about.
        assert_eq!(walk(&[]).generation, scope.generation);
    }

    #[test]
    fn objects_outside_the_global_scope_count() {
        // zlib loaded RTLD_LOCAL: not in the global scope, but a lookup in
        // its handle (as of a DT_NEEDED library) finds its symbols, so its
        // filter must admit them.
        let path = match cfg!(target_arch = "aarch64") {
            true => c"/usr/lib/aarch64-linux-gnu/libz.so.1",
            false => c"/usr/lib/x86_64-linux-gnu/libz.so.1",
        };
        // SAFETY: the system's zlib; its initialisers are trusted.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "zlib not found");
        let scope = walk(&[b"deflateInit2_", b"crc32_combine64"]);
        assert_eq!(scope.may_define, [true, true]);
        // SAFETY: the handle just opened, closed once.
        unsafe { libc::dlclose(handle) };
    }
}
