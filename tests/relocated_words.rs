//! Every word the dynamic relocations write, as memdl's `load_fd` writes it
//! and as the system loader's `dlopen` does, for libraries of the machine
//! and the crate's own: the same offset into the library where the value
//! points into it, the same address where it points elsewhere (an import,
//! an ifunc's choice, 0 for a missing weak one).
//!
//! This pins the relocation walk's fast paths (relative entries, and slots
//! and absolute words naming the image's own plain definitions, written
//! without the general walk) to the general rules, entry by entry.

use std::ffi::{c_void, CString};
use std::fs::File;
use std::path::Path;

use goblin::elf::program_header::PT_LOAD;
use goblin::elf::Elf;
use memdl::{ElfImage, Library};

mod common;
use common::{machine_lib_path, test_lib_path};

#[cfg(target_arch = "x86_64")]
const WORD_TYPES: [u32; 4] = {
    use goblin::elf::reloc::*;
    [
        R_X86_64_RELATIVE,
        R_X86_64_GLOB_DAT,
        R_X86_64_JUMP_SLOT,
        R_X86_64_64,
    ]
};
#[cfg(target_arch = "aarch64")]
const WORD_TYPES: [u32; 4] = {
    use goblin::elf::reloc::*;
    [
        R_AARCH64_RELATIVE,
        R_AARCH64_GLOB_DAT,
        R_AARCH64_JUMP_SLOT,
        R_AARCH64_ABS64,
    ]
};

/// Where a word points: into the library (offset from its base) or
/// elsewhere (the address itself).
#[derive(Debug, PartialEq, Eq)]
enum Points {
    Inside(usize),
    Elsewhere(usize),
}

fn points(word: usize, base: usize, span: usize) -> Points {
    match word.wrapping_sub(base) {
        offset if offset < span => Points::Inside(offset),
        _ => Points::Elsewhere(word),
    }
}

/// The start of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
}

/// The system loader's load bias of a `dlopen` handle.
fn system_bias(handle: *mut c_void) -> usize {
    let mut map: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: a live handle; RTLD_DI_LINKMAP stores a link_map pointer.
    let rc = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut map as *mut *mut LinkMap).cast(),
        )
    };
    assert_eq!(rc, 0, "dlinfo");
    // SAFETY: glibc's link_map of the handle, valid while it is open.
    unsafe { (*map).l_addr }
}

/// Whether `addr` lies in the running executable (where memdl's own code
/// is).
fn in_this_executable(addr: usize) -> bool {
    let base = |addr: usize| {
        // SAFETY: Dl_info is plain data (null pointers are valid), and
        // dladdr only fills it in for the address it is given.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            (libc::dladdr(addr as *const c_void, &mut info) != 0).then_some(info.dli_fbase)
        }
    };
    base(addr).is_some_and(|b| Some(b) == base(in_this_executable as *const () as usize))
}

/// Compares the words and returns how many of each type were compared.
fn compare(path: &Path) -> [usize; 4] {
    let bytes = std::fs::read(path).unwrap();
    let elf = Elf::parse(&bytes).unwrap();
    let span = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .map(|p| (p.p_vaddr + p.p_memsz) as usize)
        .max()
        .unwrap();
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    // SAFETY: trusted libraries (the machine's and the crate's own); the
    // files do not change while loaded.
    let image = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    let cpath = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: as above.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", path.display());
    let (ours, theirs) = (image.base_address(), system_bias(handle));
    let mut counts = [0; 4];
    let mut differ = Vec::new();
    for r in elf.dynrelas.iter().chain(elf.pltrelocs.iter()) {
        let Some(kind) = WORD_TYPES.iter().position(|&t| t == r.r_type) else {
            continue;
        };
        let at = r.r_offset as usize;
        // SAFETY: the relocation's 8-byte target inside each loaded copy
        // (both loaders checked it lies in a writable, now possibly
        // read-only, segment of the image).
        let (mine, system) = unsafe {
            (
                std::ptr::read_unaligned((ours + at) as *const usize),
                std::ptr::read_unaligned((theirs + at) as *const usize),
            )
        };
        // Imports memdl binds to its own loader services (`dlopen`,
        // `dlsym`, ...: see `runtime::services`) lie in this executable.
        if mine != system && in_this_executable(mine) {
            continue;
        }
        let (mine, system) = (points(mine, ours, span), points(system, theirs, span));
        if mine != system {
            differ.push((at, r.r_type, r.r_sym, mine, system));
        }
        counts[kind] += 1;
    }
    // SAFETY: the handle opened above, closed once.
    unsafe { libc::dlclose(handle) };
    drop(image);
    assert!(
        differ.is_empty(),
        "{}: {} words differ (offset, type, symbol, memdl, dlopen), first: {:x?}",
        path.display(),
        differ.len(),
        &differ[..differ.len().min(8)]
    );
    counts
}

#[test]
fn every_relocated_word_is_the_system_loaders() {
    let mut total = [0; 4];
    for path in ["libz.so.1", "libsqlite3.so.0", "libgmp.so.10"]
        .map(machine_lib_path)
        .into_iter()
        .chain(["pointers", "uselibc", "example", "ifunc"].map(test_lib_path))
    {
        let counts = compare(&path);
        assert!(counts[0] > 0, "{}: no relative entry", path.display());
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    // Each kind was seen (SQLite: 1,300 slots naming its own functions).
    assert!(total.iter().all(|&c| c > 0), "kinds compared: {total:?}");
    assert!(total[2] > 1000, "PLT slots compared: {}", total[2]);
}
