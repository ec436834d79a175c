//! Makes a loaded image's unwind tables known to the unwinder.
//!
//! libgcc's unwinder finds frames of system-loaded objects through
//! `_dl_find_object` / `dl_iterate_phdr`, which know nothing of memdl's
//! images; but it searches frames registered with `__register_frame` first.
//! memdl registers the image's `.eh_frame` (found through
//! `PT_GNU_EH_FRAME`) after relocation and deregisters it when the image
//! goes, so C++ exceptions, Rust panics and backtraces cross its frames.

use std::ffi::c_void;

use crate::elf::Memory;

// How `.eh_frame_hdr`'s `eh_frame_ptr` applies (its format is read by
// `ehframe::read_encoded`).
const DW_EH_PE_OMIT: u8 = 0xff;
const DW_EH_PE_PCREL: u8 = 0x10;
const DW_EH_PE_DATAREL: u8 = 0x30;

type FrameFn = unsafe extern "C" fn(*const c_void);

/// libgcc's `__register_frame` and `__deregister_frame`, looked up once
/// (two global-scope `dlsym`s a load otherwise); not remembered while the
/// process has none.
fn frame_functions() -> Option<(FrameFn, FrameFn)> {
    static FUNCTIONS: std::sync::OnceLock<(FrameFn, FrameFn)> = std::sync::OnceLock::new();
    if let Some(&f) = FUNCTIONS.get() {
        return Some(f);
    }
    let f = (lookup(c"__register_frame")?, lookup(c"__deregister_frame")?);
    Some(*FUNCTIONS.get_or_init(|| f))
}

fn lookup(name: &std::ffi::CStr) -> Option<FrameFn> {
    // SAFETY: a lookup of a NUL-terminated name in the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: libgcc's __register_frame/__deregister_frame take one pointer.
    (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, FrameFn>(p) })
}

/// A registered `.eh_frame`, deregistered on drop.
#[derive(Debug)]
pub struct FrameRegistration {
    eh_frame: usize,
    deregister: FrameFn,
}

impl FrameRegistration {
    /// Registers the `.eh_frame` that the `.eh_frame_hdr` at `hdr_vaddr`
    /// points to. `None` when the header is malformed or the process has no
    /// libgcc unwinder to register with (unwinding through the image then
    /// stops at its frames, nothing else changes).
    ///
    /// Everything is read through the image's memory, where libgcc reads
    /// it (see `Load::register_frames` for why not from the file).
    pub fn new(mem: &Memory<'_>, hdr_vaddr: u64) -> Option<FrameRegistration> {
        // `len` bytes at `vaddr`.
        let bytes = |vaddr: u64, len: u64| -> Option<Vec<u8>> {
            Some(
                mem.table(".eh_frame_hdr", vaddr, len)
                    .ok()?
                    .bytes()
                    .to_vec(),
            )
        };
        // The 4-byte header and the pointer after it, in one read if the
        // segment holds 8 bytes more.
        let head = bytes(hdr_vaddr, 12).or_else(|| bytes(hdr_vaddr, 4))?;
        let (version, enc) = (head[0], head[1]);
        if version != 1 || enc == DW_EH_PE_OMIT {
            return None;
        }
        let field = hdr_vaddr + 4;
        let pointer = match head.get(4..) {
            Some(p) if p.len() >= 8 => p.to_vec(),
            _ => bytes(field, 8).or_else(|| bytes(field, 4))?,
        };
        let value = crate::elf::ehframe::read_encoded(&pointer, enc).ok()?;

        // The result is an address in the file's terms (pcrel/datarel are
        // relative to vaddrs), except for an absolute pointer, which the
        // relocations already turned into a runtime address.
        let eh_frame_vaddr = match enc & 0x70 {
            DW_EH_PE_PCREL => field.wrapping_add(value),
            DW_EH_PE_DATAREL => hdr_vaddr.wrapping_add(value),
            0 => value.wrapping_sub(mem.bias() as u64),
            _ => return None,
        };
        // The section starts with a CIE length word; an empty one has 0.
        let eh_frame = mem.table(".eh_frame", eh_frame_vaddr, 4).ok()?.addr();
        // libgcc trusts what it is given: a malformed section would crash
        // the next unwind anywhere in the process.
        crate::elf::ehframe::check(mem, eh_frame_vaddr).ok()?;
        let (register, deregister) = frame_functions()?;
        // SAFETY: `eh_frame` is the start of the image's .eh_frame section
        // (zero-terminated by crtend), mapped until this value is dropped.
        unsafe { register(eh_frame as *const c_void) };
        Some(FrameRegistration {
            eh_frame,
            deregister,
        })
    }
}

impl Drop for FrameRegistration {
    fn drop(&mut self) {
        // SAFETY: the same pointer registered in `new`, still mapped.
        unsafe { (self.deregister)(self.eh_frame as *const c_void) };
    }
}
