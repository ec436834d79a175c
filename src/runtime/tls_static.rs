//! Thread-local storage that lives with the system loader: variables of
//! modules glibc loaded (libc's `errno`, libstdc++'s `std::call_once`
//! state), and static TLS for memdl's own images.
//!
//! **Other modules' TLS.** A loaded image may import a TLS variable that a
//! module of the system loader defines. Its address in the calling thread
//! (what `dlsym` answers for a TLS symbol) is matched against each module's
//! TLS block (`dl_iterate_phdr`: `dlpi_tls_data` and the `PT_TLS` size),
//! which gives glibc's module id and the variable's offset in the block:
//! what `DTPMOD64`/`DTPOFF64` and TLS descriptors need. A module glibc holds
//! in its static TLS area (every module loaded at start-up, and those
//! loaded with `DF_STATIC_TLS`) also has one fixed offset from the thread
//! pointer, the same in every thread: what `TPOFF64` (aarch64
//! `TLS_TPREL`) needs.
//!
//! **An image's own static TLS.** Initial-exec code reaches its variables
//! at a fixed offset from the thread pointer, in every thread, including
//! threads that existed before the load. Only the system loader can give
//! that: its static TLS area is allocated with each thread, and glibc keeps
//! a surplus for libraries `dlopen`ed later with `DF_STATIC_TLS`, which it
//! initialises in every existing thread at load and in every new thread at
//! creation. memdl borrows it: it generates a tiny shared object with no
//! code whose `PT_TLS` is the image's (same template, size and alignment)
//! and `DF_STATIC_TLS` set, and has the system loader load it from a memfd.
//! The image's TLS then *is* that object's block: every model (initial
//! exec, general/local dynamic, descriptors) reaches the same variables.
//! The surplus is small (glibc's `glibc.rtld.optional_static_tls`, 512
//! bytes by default, plus what start-up left over); when it runs out glibc
//! refuses and so does memdl ([`Error::StaticTls`]), before any of the
//! image's code ran. Unloading the stub returns the space only if it was
//! the last static block glibc handed out (glibc's own rule).

use std::ffi::{c_int, c_void};

use crate::error::{Error, Result};
use crate::system::SystemImage;

/// The thread pointer: `%fs:0` on x86_64 (the TCB points to itself),
/// `TPIDR_EL0` on aarch64.
#[inline]
pub fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the TCB's self pointer, which glibc sets up for every
    // thread before any Rust code runs in it.
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading the EL0 thread-id register has no side effects.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    tp
}

/// Where a TLS variable of another module lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignTls {
    /// The module id its `__tls_get_addr` takes (glibc's or memdl's).
    pub module: u64,
    /// The variable's offset in its module's block.
    pub offset: u64,
    /// The variable's offset from the thread pointer, when its module is
    /// in static TLS (the same in every thread); `None` for dynamic TLS.
    pub tp_offset: Option<i64>,
}

/// glibc's static TLS area of the calling thread: `[tp - size, tp)` on
/// x86_64 (TLS variant II), `[tp + 16, tp + 16 + size)` on aarch64
/// (variant I, after the 16-byte TCB). `None` if glibc does not say.
fn static_area() -> Option<(usize, usize)> {
    type Info = unsafe extern "C" fn(*mut usize, *mut usize);
    use std::sync::OnceLock;
    static SIZE: OnceLock<Option<usize>> = OnceLock::new();
    let size = (*SIZE.get_or_init(|| {
        // SAFETY: a lookup by a NUL-terminated name.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_get_tls_static_info".as_ptr()) };
        if f.is_null() {
            return None;
        }
        // SAFETY: glibc's (GLIBC_PRIVATE) void _dl_get_tls_static_info(size_t *, size_t *).
        let f: Info = unsafe { std::mem::transmute::<*mut c_void, Info>(f) };
        let (mut size, mut align) = (0usize, 0usize);
        // SAFETY: both pointers are to live locals.
        unsafe { f(&mut size, &mut align) };
        Some(size)
    }))?;
    let tp = thread_pointer();
    if cfg!(target_arch = "x86_64") {
        Some((tp.checked_sub(size)?, tp))
    } else {
        Some((tp + 16, (tp + 16).checked_add(size)?))
    }
}

/// The system loader's module whose TLS block in this thread holds `addr`
/// (the answer `dlsym` gave for a TLS symbol), as module id and offset.
pub fn system_tls_at(addr: usize) -> Option<ForeignTls> {
    struct Search {
        addr: usize,
        found: Option<(u64, usize)>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: glibc passes a valid info for the duration of the call,
        // and `data` is the `Search` below.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
        let block = info.dlpi_tls_data as usize;
        if info.dlpi_tls_modid == 0 || block == 0 || search.addr < block {
            return 0;
        }
        let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: glibc's program headers of a loaded object.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) }
        };
        let memsz = phdrs
            .iter()
            .find(|p| p.p_type == libc::PT_TLS)
            .map_or(0, |p| p.p_memsz as usize);
        if search.addr - block < memsz.max(1) {
            search.found = Some((info.dlpi_tls_modid as u64, block));
            return 1;
        }
        0
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` matches the callback type and only reads what glibc
    // hands it; `search` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    let (module, block) = search.found?;
    let offset = (addr - block) as u64;
    let tp_offset = static_area()
        .filter(|&(lo, hi)| block >= lo && block < hi)
        .map(|_| addr.wrapping_sub(thread_pointer()) as i64);
    Some(ForeignTls {
        module,
        offset,
        tp_offset,
    })
}

/// An image's TLS placed in glibc's static TLS area through a generated
/// stub object; unloaded on drop.
#[derive(Debug)]
pub struct StaticTlsBlock {
    /// glibc's module id of the stub.
    pub module: u64,
    /// Offset of the block's start (the `PT_TLS` `p_vaddr` byte) from the
    /// thread pointer: the same in every thread.
    pub tp_offset: i64,
    _stub: SystemImage,
}

impl StaticTlsBlock {
    /// Places a TLS block with this template in static TLS.
    /// `template` is the initialised part (`.tdata`), `memsz` the whole
    /// block, `first_byte` the block start's offset from an
    /// `align`-aligned address (`p_vaddr % p_align`).
    pub fn new(template: &[u8], memsz: u64, align: u64, first_byte: u64) -> Result<Self> {
        let refuse = |reason: String| Error::StaticTls {
            size: memsz,
            align,
            reason,
        };
        let (stub, slot) = stub_object(template, memsz, align, first_byte)
            .ok_or_else(|| refuse("block too large to describe".into()))?;
        // SAFETY: the stub has no code, no initialisers and no
        // relocations: loading it runs nothing.
        let image = unsafe { SystemImage::load(&stub) }.map_err(|e| match e {
            Error::Dlopen { message, .. } => refuse(message),
            other => refuse(other.to_string()),
        })?;
        let (module, tp_offset) = stub_block(&image, slot)
            .ok_or_else(|| refuse("the system loader gave no static TLS block".into()))?;
        Ok(StaticTlsBlock {
            module,
            tp_offset,
            _stub: image,
        })
    }
}

/// The stub's module id and its block's thread-pointer offset, from glibc
/// (`dlinfo`, and the slot the stub's relocation filled).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn stub_block(image: &SystemImage, slot: usize) -> Option<(u64, i64)> {
    // glibc's `dlinfo` requests (`<dlfcn.h>`).
    const RTLD_DI_LINKMAP: c_int = 2;
    const RTLD_DI_TLS_MODID: c_int = 9;
    let handle = image.raw_handle();
    let mut module: usize = 0;
    let mut map: *const usize = std::ptr::null();
    // SAFETY: a live handle; each request writes one value of the type
    // given (size_t, struct link_map *).
    let ok = unsafe {
        libc::dlinfo(
            handle,
            RTLD_DI_TLS_MODID,
            (&mut module as *mut usize).cast(),
        ) == 0
            && libc::dlinfo(
                handle,
                RTLD_DI_LINKMAP,
                (&mut map as *mut *const usize).cast(),
            ) == 0
    };
    if !ok || module == 0 || map.is_null() {
        return None;
    }
    // The relocated slot holds the block's offset from the thread
    // pointer (the link map's first field is the load bias).
    // SAFETY: `l_addr` is the first field of every `struct link_map`;
    // the slot lies in the stub's read-write segment, 8-aligned.
    let tp_offset = unsafe { *((*map).wrapping_add(slot) as *const i64) };
    Some((module as u64, tp_offset))
}

/// Other C libraries' loaders: the custom loader targets glibc's TLS ABI.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn stub_block(_image: &SystemImage, _slot: usize) -> Option<(u64, i64)> {
    None
}

/// A minimal `ET_DYN` for the host machine: one read-write `PT_LOAD`
/// holding the dynamic section, an empty symbol table and hash table, one
/// initial-exec relocation against its own block and the TLS template;
/// `PT_TLS` with the template; `PT_GNU_STACK` (without it glibc would make
/// the stack executable); `DF_STATIC_TLS`. glibc places a module in static
/// TLS when a relocation of the initial-exec kind names it (the flag alone
/// only documents that): the relocation is what asks for it.
/// Returns the object and the address (from its base) of the slot the
/// relocation fills.
fn stub_object(
    template: &[u8],
    memsz: u64,
    align: u64,
    first_byte: u64,
) -> Option<(Vec<u8>, usize)> {
    use goblin::elf::dynamic::{
        DF_STATIC_TLS, DT_FLAGS, DT_HASH, DT_NULL, DT_RELA, DT_RELAENT, DT_RELASZ, DT_STRSZ,
        DT_STRTAB, DT_SYMENT, DT_SYMTAB,
    };
    use goblin::elf::program_header::{PF_R, PF_W, PT_DYNAMIC, PT_GNU_STACK, PT_LOAD, PT_TLS};
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const PHNUM: usize = 4;
    let align = align.max(1);
    if !align.is_power_of_two() || first_byte >= align || (template.len() as u64) > memsz {
        return None;
    }
    let dynamic_at = EHDR + PHNUM * PHDR;
    let dynamic: [(u64, u64); 10] = [
        (DT_HASH, 0),
        (DT_STRTAB, 0),
        (DT_SYMTAB, 0),
        (DT_STRSZ, 1),
        (DT_SYMENT, 24),
        (DT_RELA, 0),
        (DT_RELASZ, 24),
        (DT_RELAENT, 24),
        (DT_FLAGS, DF_STATIC_TLS),
        (DT_NULL, 0),
    ];
    let symtab_at = dynamic_at + dynamic.len() * 16;
    let hash_at = symtab_at + 24; // one (null) symbol
    let rela_at = hash_at + 16; // nbucket, nchain, bucket[0], chain[0]
    let slot_at = rela_at + 24; // the relocation's target
    let strtab_at = slot_at + 8;
    let end = (strtab_at + 1) as u64;
    // The template keeps its alignment residue, so offsets within the block
    // are the image's own.
    let tls_at = end
        .checked_next_multiple_of(align)?
        .checked_add(first_byte)?;
    let file_len = usize::try_from(tls_at).ok()?.checked_add(template.len())?;
    let mut out = vec![0u8; file_len];
    let put = |out: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes)
    };
    // ELF header.
    put(&mut out, 0, b"\x7fELF\x02\x01\x01");
    put(&mut out, 16, &3u16.to_le_bytes()); // ET_DYN
    put(&mut out, 18, &crate::arch::EM_CURRENT.to_le_bytes());
    put(&mut out, 20, &1u32.to_le_bytes());
    put(&mut out, 32, &(EHDR as u64).to_le_bytes()); // e_phoff
    put(&mut out, 52, &(EHDR as u16).to_le_bytes());
    put(&mut out, 54, &(PHDR as u16).to_le_bytes());
    put(&mut out, 56, &(PHNUM as u16).to_le_bytes());
    put(&mut out, 58, &64u16.to_le_bytes()); // e_shentsize
                                             // Program headers: (type, flags, offset = vaddr, filesz, memsz, align).
    let page = crate::map::page_size() as u64;
    let phdrs: [(u32, u32, u64, u64, u64, u64); PHNUM] = [
        (
            PT_LOAD,
            PF_R | PF_W,
            0,
            file_len as u64,
            file_len as u64,
            page,
        ),
        (
            PT_DYNAMIC,
            PF_R | PF_W,
            dynamic_at as u64,
            (dynamic.len() * 16) as u64,
            (dynamic.len() * 16) as u64,
            8,
        ),
        (PT_TLS, PF_R, tls_at, template.len() as u64, memsz, align),
        (PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 16),
    ];
    for (i, &(p_type, flags, at, filesz, memsz, p_align)) in phdrs.iter().enumerate() {
        let o = EHDR + i * PHDR;
        put(&mut out, o, &p_type.to_le_bytes());
        put(&mut out, o + 4, &flags.to_le_bytes());
        for (k, v) in [at, at, at, filesz, memsz, p_align].iter().enumerate() {
            put(&mut out, o + 8 + k * 8, &v.to_le_bytes());
        }
    }
    for (i, &(tag, val)) in dynamic.iter().enumerate() {
        let val = match tag {
            DT_HASH => hash_at as u64,
            DT_STRTAB => strtab_at as u64,
            DT_SYMTAB => symtab_at as u64,
            DT_RELA => rela_at as u64,
            _ => val,
        };
        put(&mut out, dynamic_at + i * 16, &tag.to_le_bytes());
        put(&mut out, dynamic_at + i * 16 + 8, &val.to_le_bytes());
    }
    put(&mut out, hash_at, &[1, 0, 0, 0, 1, 0, 0, 0]); // nbucket 1, nchain 1
                                                       // The block's offset from the thread pointer, into the slot: symbol 0
                                                       // (the module itself), addend 0.
    put(&mut out, rela_at, &(slot_at as u64).to_le_bytes());
    put(
        &mut out,
        rela_at + 8,
        &u64::from(crate::arch::R_TLS_TPOFF).to_le_bytes(),
    );
    put(&mut out, tls_at as usize, template);
    Some((out, slot_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stub_block_is_initialised_in_every_thread() {
        let template = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let block = StaticTlsBlock::new(&template, 64, 16, 0).unwrap();
        let read = move |tp_offset: i64| {
            let at = thread_pointer().wrapping_add(tp_offset as usize);
            // SAFETY: the block lies at that offset from every thread's
            // thread pointer, 64 bytes long.
            let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, 64) };
            bytes.to_vec()
        };
        let mut want = vec![0u8; 64];
        want[..8].copy_from_slice(&template);
        assert_eq!(read(block.tp_offset), want);
        let off = block.tp_offset;
        assert_eq!(std::thread::spawn(move || read(off)).join().unwrap(), want);
        // The module id and offset name the same bytes for glibc.
        let here = thread_pointer().wrapping_add(block.tp_offset as usize);
        let index = crate::runtime::tls::TlsIndex {
            module: block.module,
            offset: 3,
        };
        assert_eq!(crate::runtime::tls::tls_get_addr(&index) as usize, here + 3);
        let found = system_tls_at(here + 3).unwrap();
        assert_eq!((found.module, found.offset), (block.module, 3));
        assert_eq!(found.tp_offset, Some(block.tp_offset + 3));
    }

    #[test]
    fn errno_is_found_in_libc_static_tls() {
        // glibc exports `errno` only at version GLIBC_PRIVATE.
        // SAFETY: a lookup by NUL-terminated name and version.
        let errno = unsafe {
            libc::dlvsym(
                libc::RTLD_DEFAULT,
                c"errno".as_ptr(),
                c"GLIBC_PRIVATE".as_ptr(),
            )
        } as usize;
        assert_ne!(errno, 0);
        let found = system_tls_at(errno).unwrap();
        let tp = found.tp_offset.expect("libc is in static TLS");
        // SAFETY: __errno_location returns this thread's errno.
        let want = unsafe { libc::__errno_location() } as usize;
        assert_eq!(thread_pointer().wrapping_add(tp as usize), want);
        let in_thread = std::thread::spawn(move || {
            // SAFETY: as above, in another thread.
            let want = unsafe { libc::__errno_location() } as usize;
            thread_pointer().wrapping_add(tp as usize) == want
        });
        assert!(in_thread.join().unwrap());
    }
}
