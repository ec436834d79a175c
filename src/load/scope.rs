//! What the system loader's objects tell before any import is looked up,
//! from one `dl_iterate_phdr` walk:
//!
//! * a fingerprint of the set of loaded objects, which the import cache is
//!   keyed by (see `resolve.rs`);
//! * which of the image's weak imports no loaded object can define;
//! * (a walk of its own, [`loaded_under`]) which `DT_NEEDED` names a loaded
//!   object goes by.
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

/// The dynamic tags the walks read.
const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_SONAME: i64 = 14;
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
    let mut hasher = NameHasher(0x5eed);
    let mut count = 0u64;
    let hashes: Vec<u32> = names.iter().map(|n| gnu_hash(n)).collect();
    let mut may_define = vec![false; names.len()];
    let mut undecided = names.len();
    each_object(|info| {
        hasher.write_usize(info.dlpi_addr as usize);
        hasher.write_usize(usize::from(info.dlpi_phnum));
        if let Some(path) = object_path(info) {
            hasher.write(path);
        }
        count += 1;
        if undecided > 0 {
            let table = LoadedObject::of(info).and_then(|o| GnuTable::of(&o));
            for (i, &h) in hashes.iter().enumerate() {
                if !may_define[i] && table.as_ref().is_none_or(|t| t.admits(h)) {
                    may_define[i] = true;
                    undecided -= 1;
                }
            }
        }
        false
    });
    Scope {
        generation: (hasher.finish(), count),
        may_define,
    }
}

/// For each of `names` (file names, without a `/`), whether a loaded
/// object goes by it: its `DT_SONAME` is the name, or its path ends in it.
///
/// Only those are worth asking the system loader for with `RTLD_NOLOAD`
/// (as it does for each `DT_NEEDED` name, the library already loaded
/// under the name is the one): for a name no object goes by, that call
/// looks the file up in `ld.so.cache` and the default directories and
/// opens and reads it, to learn it is not loaded (30-70 µs a name in a
/// fresh process). glibc also matches names an object was once asked for
/// that are neither (a bare name that found a loaded file by its inode
/// under another name): those are searched for instead, and the system
/// loader, given the file found, recognises it by its inode.
pub(super) fn loaded_under(names: &[&[u8]]) -> Vec<bool> {
    // Most needed libraries are loaded under their file name (libc, libm,
    // libstdc++): one walk compares paths; a second reads the dynamic
    // sections for the sonames of the names left.
    let mut found = vec![false; names.len()];
    for by_soname in [false, true] {
        if found.iter().all(|&f| f) {
            break;
        }
        each_object(|info| {
            let soname = match by_soname {
                true => match LoadedObject::of(info).and_then(|o| Some((o.dynamic()?, o))) {
                    Some(object) => Some(object),
                    None => return false,
                },
                false => None,
            };
            let file = file_name(info);
            for (name, found) in names.iter().zip(found.iter_mut()) {
                *found = *found
                    || match &soname {
                        Some((dynamic, object)) => object.has_soname(dynamic, name),
                        None => *name == file,
                    };
            }
            found.iter().all(|&f| f)
        });
    }
    found
}

/// The path the system loader has for an object, if it has one.
fn object_path(info: &libc::dl_phdr_info) -> Option<&[u8]> {
    // SAFETY: the system loader passes a name that is null or a
    // NUL-terminated string, valid while the walk's callback runs.
    (!info.dlpi_name.is_null()).then(|| unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes())
}

/// The last component of that path (empty without one).
fn file_name(info: &libc::dl_phdr_info) -> &[u8] {
    let path = object_path(info).unwrap_or_default();
    path.rsplit(|&b| b == b'/').next().unwrap_or_default()
}

/// Calls `f` with each loaded object, in the system loader's order, until
/// it returns `true`.
fn each_object<F: FnMut(&libc::dl_phdr_info) -> bool>(mut f: F) {
    unsafe extern "C" fn each<F: FnMut(&libc::dl_phdr_info) -> bool>(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the closure passed below, and the system
        // loader passes a valid info for the call's duration.
        let (f, info) = unsafe { (&mut *data.cast::<F>(), &*info) };
        c_int::from(f(info))
    }
    // SAFETY: the callback only calls `f`, which outlives the walk.
    unsafe { libc::dl_iterate_phdr(Some(each::<F>), (&mut f as *mut F).cast()) };
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

/// A loaded object as `dl_iterate_phdr` shows it, read only where one of
/// its readable segments lies.
struct LoadedObject<'a> {
    phdrs: &'a [libc::Elf64_Phdr],
    base: u64,
}

/// What an object's dynamic section says, of what the walks read.
#[derive(Default)]
struct DynamicValues {
    gnu_hash: Option<u64>,
    strtab: Option<u64>,
    strsz: Option<u64>,
    soname: Option<u64>,
}

impl<'a> LoadedObject<'a> {
    /// The object `info` describes (during the walk's callback).
    fn of(info: &'a libc::dl_phdr_info) -> Option<LoadedObject<'a>> {
        if info.dlpi_phdr.is_null() {
            return None;
        }
        // SAFETY: the system loader's program headers of a loaded object:
        // `dlpi_phnum` entries at `dlpi_phdr`, valid during the callback.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        Some(LoadedObject {
            phdrs,
            base: info.dlpi_addr,
        })
    }

    /// The end of the readable `PT_LOAD` that `[addr, addr + len)` lies
    /// in, if one does.
    fn readable_end(&self, addr: u64, len: u64) -> Option<u64> {
        self.phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.p_flags & PF_R != 0)
            .find_map(|p| {
                let start = self.base.wrapping_add(p.p_vaddr);
                let end = start.checked_add(p.p_memsz)?;
                (addr >= start && addr.checked_add(len)? <= end).then_some(end)
            })
    }

    fn readable(&self, addr: u64, len: u64) -> bool {
        self.readable_end(addr, len).is_some()
    }

    /// The entries of its dynamic section the walks use, if the section
    /// lies in a readable segment.
    fn dynamic(&self) -> Option<DynamicValues> {
        let dynamic = self.phdrs.iter().find(|p| p.p_type == PT_DYNAMIC)?;
        let (dyn_at, dyn_len) = (self.base.wrapping_add(dynamic.p_vaddr), dynamic.p_memsz);
        if !self.readable(dyn_at, dyn_len) || dyn_at % 8 != 0 {
            return None;
        }
        // SAFETY: `[dyn_at, dyn_at + dyn_len)` lies in a readable segment
        // of the object (checked above) and is 8-aligned.
        let read = |addr: u64| unsafe { std::ptr::read(addr as *const u64) };
        let mut values = DynamicValues::default();
        let entries = (0..dyn_len / 16)
            .map(|i| dyn_at + i * 16)
            .map(|entry| (read(entry) as i64, read(entry + 8)))
            .take_while(|&(tag, _)| tag != DT_NULL);
        for (tag, value) in entries {
            match tag {
                DT_GNU_HASH => values.gnu_hash = Some(value),
                DT_STRTAB => values.strtab = Some(value),
                DT_STRSZ => values.strsz = Some(value),
                DT_SONAME => values.soname = Some(value),
                _ => {}
            }
        }
        Some(values)
    }

    /// The address of `len` bytes a dynamic entry points to. The loader
    /// may have relocated the entry in place (glibc does) or not (bionic,
    /// a read-only dynamic section): whichever lies in the object; neither,
    /// or both, is not plainly right.
    fn pointer(&self, value: u64, len: u64) -> Option<u64> {
        let relocated = self.base.wrapping_add(value);
        match (self.readable(value, len), self.readable(relocated, len)) {
            (true, false) => Some(value),
            (false, true) => Some(relocated),
            (true, true) if self.base == 0 => Some(value),
            _ => None,
        }
    }

    /// Whether its `DT_SONAME` is `name`.
    fn has_soname(&self, values: &DynamicValues, name: &[u8]) -> bool {
        let (Some(strtab), Some(strsz), Some(offset)) =
            (values.strtab, values.strsz, values.soname)
        else {
            return false;
        };
        // The name and its NUL, inside the table.
        let len = name.len() as u64 + 1;
        if offset.checked_add(len).is_none_or(|end| end > strsz) {
            return false;
        }
        let Some(table) = self.pointer(strtab, strsz) else {
            return false;
        };
        // SAFETY: `[table, table + strsz)` lies in a readable segment of
        // the object (checked by `pointer`) and `offset + len <= strsz`.
        let bytes =
            unsafe { std::slice::from_raw_parts((table + offset) as *const u8, len as usize) };
        bytes[..name.len()] == *name && bytes[name.len()] == 0
    }
}

impl GnuTable {
    /// The GNU hash table of `object`, if it has one whose filter and
    /// buckets lie in a readable segment of the object, found through a
    /// dynamic section that does too.
    fn of(object: &LoadedObject<'_>) -> Option<GnuTable> {
        let value = object.dynamic()?.gnu_hash?;
        let header = object.pointer(value, 16)?;
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
        let segment_end = object.readable_end(words, chains_at - words)?;
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
        // The fingerprint does not depend on the names asked about (taken
        // between two equal ones: other tests load and unload libraries).
        let same = (0..100).find_map(|_| {
            let before = walk(&[]).generation;
            let asked = walk(&names).generation;
            (walk(&[]).generation == before).then_some((before, asked))
        });
        let (before, asked) = same.expect("the loaded objects kept changing");
        assert_eq!(asked, before);
    }

    /// An object in a buffer: one readable `PT_LOAD` over all of it, a
    /// dynamic section at 0x100 naming a string table at 0x200 (at its
    /// offset, or `relocated`: at its address) of `strings`, whose soname
    /// is at `soname`.
    fn synthetic(buffer: &mut [u64; 128], strings: &[u8], soname: u64, relocated: bool) -> bool {
        let base = buffer.as_ptr() as u64;
        let strtab = if relocated { base + 0x200 } else { 0x200 };
        let entries = [
            (DT_STRTAB, strtab),
            (DT_STRSZ, strings.len() as u64),
            (DT_SONAME, soname),
            (DT_NULL, 0),
        ];
        for (i, (tag, value)) in entries.iter().enumerate() {
            buffer[0x20 + 2 * i] = *tag as u64;
            buffer[0x21 + 2 * i] = *value;
        }
        // SAFETY: the buffer is 1 KiB of plain words; 0x200 + the strings
        // (at most 0x100 bytes here) stay inside it.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), 1024) };
        bytes[0x200..0x200 + strings.len()].copy_from_slice(strings);
        // SAFETY: plain data.
        let mut phdrs: [libc::Elf64_Phdr; 2] = unsafe { std::mem::zeroed() };
        phdrs[0].p_type = PT_LOAD;
        phdrs[0].p_flags = PF_R;
        phdrs[0].p_memsz = 1024;
        phdrs[1].p_type = PT_DYNAMIC;
        phdrs[1].p_vaddr = 0x100;
        phdrs[1].p_memsz = 64;
        // SAFETY: plain data.
        let mut info: libc::dl_phdr_info = unsafe { std::mem::zeroed() };
        info.dlpi_addr = base;
        info.dlpi_phdr = phdrs.as_ptr();
        info.dlpi_phnum = 2;
        let object = LoadedObject::of(&info).unwrap();
        let values = object.dynamic().unwrap();
        object.has_soname(&values, b"libfoo.so.1")
    }

    #[test]
    fn a_soname_is_read_within_its_string_table() {
        let mut buffer = [0u64; 128];
        let strings = b"\0libfoo.so.1\0libfoo.so.1.2\0";
        for relocated in [false, true] {
            assert!(synthetic(&mut buffer, strings, 1, relocated));
            // Another name, a longer one, a prefix of the one asked.
            assert!(!synthetic(&mut buffer, strings, 13, relocated));
            assert!(!synthetic(&mut buffer, b"\0libfoo.so.1.2\0", 1, relocated));
            assert!(!synthetic(&mut buffer, b"\0libfoo.so\0", 1, relocated));
            // The name would run past the table's end (no NUL inside it),
            // or its offset lies beyond it.
            assert!(!synthetic(&mut buffer, b"\0libfoo.so.1", 1, relocated));
            assert!(!synthetic(&mut buffer, strings, 1 << 40, relocated));
            assert!(!synthetic(&mut buffer, strings, u64::MAX, relocated));
        }
    }

    #[test]
    fn loaded_libraries_are_known_by_soname_and_file_name() {
        // libc by its soname (and file name); the dynamic loader by its
        // soname, which its path (`ld-linux-x86-64.so.2` via /lib64, or a
        // versioned file) need not end in; a name nothing goes by.
        let loader = match cfg!(target_arch = "aarch64") {
            true => &b"ld-linux-aarch64.so.1"[..],
            false => &b"ld-linux-x86-64.so.2"[..],
        };
        let names: [&[u8]; 4] = [b"libc.so.6", loader, b"libmemdl-nowhere.so.1", b"libc.so"];
        assert_eq!(loaded_under(&names), [true, true, false, false]);
        // zlib loaded by its full path: found by its file name.
        let path = match cfg!(target_arch = "aarch64") {
            true => c"/usr/lib/aarch64-linux-gnu/libz.so.1",
            false => c"/usr/lib/x86_64-linux-gnu/libz.so.1",
        };
        // SAFETY: the system's zlib; its initialisers are trusted.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "zlib not found");
        assert_eq!(loaded_under(&[b"libz.so.1"]), [true]);
        // SAFETY: the handle just opened, closed once.
        unsafe { libc::dlclose(handle) };
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
