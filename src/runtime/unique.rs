//! `STB_GNU_UNIQUE`: one definition per process.
//!
//! C++ compilers mark inline static data and template static members
//! unique, and code relies on every library seeing one instance (RTTI
//! comparisons, `std::` facets' ids, inline variables). The system loader
//! binds every reference to the first definition it met. memdl does the
//! same: a unique symbol an image defines is bound to an existing
//! definition (the system loader's, through the resolver chain, else an
//! earlier memdl image's), and otherwise the image's own becomes the one
//! later memdl images bind to, until it is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

/// name → address of the definition memdl images share. (Names are few:
/// one per unique symbol any loaded C++ library defines.)
static DEFINITIONS: Mutex<Option<HashMap<Vec<u8>, usize>>> = Mutex::new(None);

/// The address references to unique symbol `name` (defined by the image
/// at `own`) bind to, as the system loader would have chosen it:
///
/// 1. what an earlier memdl image bound to;
/// 2. `existing()`: a definition in the process's global scope;
/// 3. the entry the system loader's unique table got from another object
///    (see [`system_definition`]) -- unless that object was loaded as
///    this image's dependency during this load (`loaded_since`: the
///    system loader's count of added objects before the load) and its
///    reference accepts this image's definition (`accepts`, given the
///    version it requires): the system loader would have loaded this image
///    with it and found this image's definition first;
/// 4. `own`.
///
/// The choice is remembered for later images.
pub fn bind(
    name: &[u8],
    own: usize,
    existing: impl FnOnce() -> Option<usize>,
    loaded_since: Option<u64>,
    accepts: impl Fn(Option<&[u8]>) -> bool,
) -> usize {
    if let Some(addr) = definition(name) {
        return addr;
    }
    let addr = existing()
        .or_else(|| {
            let found = system_definition(name)?;
            let ours_first = loaded_since.is_some_and(|before| found.added > before);
            (!(ours_first && accepts(found.version.as_deref()))).then_some(found.address)
        })
        .unwrap_or(own);
    let mut defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    *defs
        .get_or_insert_with(HashMap::new)
        .entry(name.to_vec())
        .or_insert(addr)
}

/// How many objects the system loader has added so far (`dlpi_adds`).
pub fn objects_added() -> u64 {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info; `data` is the u64 below.
        unsafe { *data.cast::<u64>() = (*info).dlpi_adds };
        1
    }
    let mut adds = 0u64;
    // SAFETY: `first` matches the callback type; `adds` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut adds as *mut u64).cast()) };
    adds
}

/// The definition of `name` memdl images bound to, if any did: what a
/// lookup of a unique symbol by name gives, as `dlsym` gives glibc's.
pub fn definition(name: &[u8]) -> Option<usize> {
    let defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    defs.as_ref()?.get(name).copied()
}

/// Forgets the definitions that lie in `[start, end)`: an image going away.
pub fn forget(start: usize, end: usize) {
    let mut defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = defs.as_mut() {
        map.retain(|_, &mut addr| !(start..end).contains(&addr));
    }
}

/// A definition of a unique symbol found bound in an object of the system
/// loader.
pub struct SystemDefinition {
    /// What the object's reference was bound to.
    pub address: usize,
    /// The version the object's reference requires (its definition's).
    pub version: Option<Vec<u8>>,
    /// The object's position in the system loader's list, counted like
    /// `dlpi_adds` (1 = the first object ever added).
    pub added: u64,
}

/// The definition of unique symbol `name` that the system loader's own
/// table of unique symbols holds, as far as it can be seen from outside:
/// an object the system loader loaded that defines `name` as unique and
/// has a relocation naming it was bound, when relocated, to the table's
/// entry, which its relocated slot now holds. (glibc's table itself is
/// private; asking with `dlsym` would add an entry where there was none.)
pub fn system_definition(name: &[u8]) -> Option<SystemDefinition> {
    struct Search<'a> {
        name: &'a [u8],
        hash: u32,
        position: u64,
        found: Option<SystemDefinition>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc passes a valid info for the call; `data` is the
        // `Search` below.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search<'_>>()) };
        search.position += 1;
        // SAFETY: the object is loaded and relocated by the system loader
        // and cannot be unloaded during the callback (glibc holds its load
        // lock); its tables are read as glibc reads them.
        if let Some((address, version)) = unsafe { bound_in(info, search.name, search.hash) } {
            // Objects are listed in load order, so the one at `position`
            // was the (position + unloaded so far)-th added, as long as
            // nothing listed before it went away since.
            let added = search.position + info.dlpi_subs;
            search.found = Some(SystemDefinition {
                address,
                version,
                added,
            });
            return 1;
        }
        0
    }
    let mut search = Search {
        name,
        hash: crate::elf::symbols::gnu_hash(name),
        position: 0,
        found: None,
    };
    // SAFETY: `visit` matches the callback type; `search` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search<'_>).cast()) };
    search.found
}

/// What the slot of a relocation naming unique symbol `name` (GNU hash
/// `hash`) holds in the object `info` describes, if the object defines the
/// symbol as unique and refers to it; and the version of its definition
/// (which its reference requires).
///
/// # Safety
/// `info` describes an object the system loader has loaded and relocated,
/// loaded for the duration of the call.
unsafe fn bound_in(
    info: &libc::dl_phdr_info,
    name: &[u8],
    hash: u32,
) -> Option<(usize, Option<Vec<u8>>)> {
    use goblin::elf::dynamic::{
        DT_GNU_HASH, DT_JMPREL, DT_NULL, DT_PLTRELSZ, DT_RELA, DT_RELASZ, DT_STRTAB, DT_SYMTAB,
        DT_VERDEF, DT_VERSYM,
    };
    let base = info.dlpi_addr as usize;
    if info.dlpi_phdr.is_null() {
        return None;
    }
    // SAFETY: glibc's program headers of a loaded object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    let dynamic = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC)?;
    // glibc rewrites the address entries of a writable dynamic section to
    // run-time addresses; a read-only one keeps link-time values.
    let at = |v: u64| {
        if (v as usize) < base {
            base + v as usize
        } else {
            v as usize
        }
    };
    let (mut symtab, mut strtab, mut gnu, mut versym, mut verdef) = (0, 0, 0, 0, 0);
    let mut tables = [(0usize, 0usize); 2];
    let mut entry = (base + dynamic.p_vaddr as usize) as *const [u64; 2];
    loop {
        // SAFETY: the dynamic array of a loaded object, up to DT_NULL.
        let [tag, val] = unsafe { entry.read() };
        match tag {
            DT_NULL => break,
            DT_SYMTAB => symtab = at(val),
            DT_STRTAB => strtab = at(val),
            DT_GNU_HASH => gnu = at(val),
            DT_VERSYM => versym = at(val),
            DT_VERDEF => verdef = at(val),
            DT_RELA => tables[0].0 = at(val),
            DT_RELASZ => tables[0].1 = val as usize,
            DT_JMPREL => tables[1].0 = at(val),
            DT_PLTRELSZ => tables[1].1 = val as usize,
            _ => {}
        }
        entry = entry.wrapping_add(1);
    }
    if symtab == 0 || strtab == 0 || gnu == 0 {
        return None;
    }
    // SAFETY: the object's GNU hash table, symbols and strings, as the
    // system loader validated and uses them.
    let index = unsafe { gnu_lookup(gnu, symtab, strtab, name, hash) }?;
    // SAFETY: symbol `index` of the table (found above).
    let info_byte = unsafe { *((symtab + index as usize * 24 + 4) as *const u8) };
    if info_byte >> 4 != goblin::elf::sym::STB_GNU_UNIQUE {
        return None;
    }
    for (addr, size) in tables.into_iter().filter(|&(a, _)| a != 0) {
        for i in 0..size / 24 {
            // SAFETY: RELA entries of the object's relocation tables.
            let [offset, r_info, _] = unsafe { ((addr + i * 24) as *const [u64; 3]).read() };
            if (r_info >> 32) as u32 == index {
                // SAFETY: the relocated slot, in the object's data.
                let bound = unsafe { ((base + offset as usize) as *const usize).read_unaligned() };
                // SAFETY: the object's version tables, as above.
                let version = unsafe { defined_version(versym, verdef, strtab, index) };
                return Some((bound, version));
            }
        }
    }
    None
}

/// The name of the version symbol `index` is defined at, from a loaded
/// object's `DT_VERSYM` and `DT_VERDEF` (0 when absent); `None` for the
/// base and global versions.
///
/// # Safety
/// The addresses are a loaded object's version and string tables.
unsafe fn defined_version(
    versym: usize,
    verdef: usize,
    strtab: usize,
    index: u32,
) -> Option<Vec<u8>> {
    if versym == 0 || verdef == 0 {
        return None;
    }
    // SAFETY: the caller's promise, for every read below.
    unsafe {
        let ndx = *((versym + index as usize * 2) as *const u16) & 0x7fff;
        if ndx <= 1 {
            return None;
        }
        let mut at = verdef;
        loop {
            // Elf64_Verdef: version, flags, ndx (u16 each), cnt, hash, aux, next.
            let vd_ndx = *((at + 4) as *const u16);
            let vd_aux = *((at + 12) as *const u32);
            let vd_next = *((at + 16) as *const u32);
            if vd_ndx == ndx {
                let vda_name = *((at + vd_aux as usize) as *const u32);
                let name =
                    std::ffi::CStr::from_ptr((strtab + vda_name as usize) as *const libc::c_char);
                return Some(name.to_bytes().to_vec());
            }
            if vd_next == 0 {
                return None;
            }
            at += vd_next as usize;
        }
    }
}

/// A GNU hash table lookup over a loaded object's trusted tables.
///
/// # Safety
/// The three addresses are a loaded object's GNU hash table, symbol table
/// and string table.
unsafe fn gnu_lookup(
    gnu: usize,
    symtab: usize,
    strtab: usize,
    name: &[u8],
    hash: u32,
) -> Option<u32> {
    // SAFETY: the caller's promise, for every read below.
    unsafe {
        let header = gnu as *const u32;
        let (nbuckets, symoffset, bloom_size) = (*header, *header.add(1), *header.add(2));
        if nbuckets == 0 {
            return None;
        }
        let buckets = (gnu + 16 + bloom_size as usize * 8) as *const u32;
        let chains = buckets.add(nbuckets as usize);
        let mut index = *buckets.add((hash % nbuckets) as usize);
        if index < symoffset {
            return None;
        }
        loop {
            let chain = *chains.add((index - symoffset) as usize);
            if chain | 1 == hash | 1 {
                let st_name = *((symtab + index as usize * 24) as *const u32);
                let candidate =
                    std::ffi::CStr::from_ptr((strtab + st_name as usize) as *const libc::c_char);
                if candidate.to_bytes() == name {
                    return Some(index);
                }
            }
            if chain & 1 != 0 {
                return None;
            }
            index += 1;
        }
    }
}
