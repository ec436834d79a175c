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

/// Where the `.eh_frame` that the `.eh_frame_hdr` at `hdr_vaddr` points to
/// starts, in the file's terms, and whether the pointer is relative (not
/// a relocated absolute address). The unwinder's registration and the
/// debuggers' object find the section this one way.
pub(crate) fn locate(mem: &Memory<'_>, hdr_vaddr: u64) -> Option<(u64, bool)> {
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
    match enc & 0x70 {
        DW_EH_PE_PCREL => Some((field.wrapping_add(value), true)),
        DW_EH_PE_DATAREL => Some((hdr_vaddr.wrapping_add(value), true)),
        0 => Some((value.wrapping_sub(mem.bias() as u64), false)),
        _ => None,
    }
}

/// Whether the `.eh_frame_hdr` at `hdr_vaddr`, and the `.eh_frame` it
/// points to, are what they will be once the image is relocated: both in
/// read-only segments whose pages no writable segment shares, the section
/// named by a relative pointer. They can then be read (checked, described
/// to debuggers) while relocation writes elsewhere.
pub fn fixed_before_relocation(mem: &Memory<'_>, hdr_vaddr: u64) -> bool {
    let unchanging = |vaddr: u64, len: u64| {
        let page = crate::map::page_size() as u64;
        let Some(seg) = mem.loads().iter().find(|s| s.contains(vaddr, len)) else {
            return false;
        };
        let (start, end) = (seg.vaddr & !(page - 1), seg.end().next_multiple_of(page));
        !seg.writable()
            && mem.loads().iter().all(|w| {
                !w.writable()
                    || w.end().next_multiple_of(page) <= start
                    || w.vaddr & !(page - 1) >= end
            })
    };
    locate(mem, hdr_vaddr)
        .is_some_and(|(at, relative)| relative && unchanging(hdr_vaddr, 12) && unchanging(at, 4))
}

/// The number of FDEs the `.eh_frame_hdr` at `hdr_vaddr` says its
/// section has (its binary search table's length), if it says so as a
/// 4-byte number.
pub fn fde_count(mem: &Memory<'_>, hdr_vaddr: u64) -> Option<u32> {
    let h = mem.table(".eh_frame_hdr", hdr_vaddr, 12).ok()?;
    // `fde_count_enc`: DW_EH_PE_udata4, the only one linkers write.
    (h.read::<u8>(2)? == 0x03).then(|| h.read::<u32>(8))?
}

/// An image's `.eh_frame`, checked and not yet registered.
#[derive(Debug)]
pub struct CheckedFrames {
    eh_frame: usize,
}

impl CheckedFrames {
    /// Finds and checks the `.eh_frame` that the `.eh_frame_hdr` at
    /// `hdr_vaddr` points to. `None` when the header is malformed.
    ///
    /// Everything is read through the image's memory, where libgcc reads
    /// it (see `Load::describe` for why not from the file).
    pub fn new(mem: &Memory<'_>, hdr_vaddr: u64) -> Option<CheckedFrames> {
        let (eh_frame_vaddr, _) = locate(mem, hdr_vaddr)?;
        // The section starts with a CIE length word; an empty one has 0.
        let eh_frame = mem.table(".eh_frame", eh_frame_vaddr, 4).ok()?.addr();
        // libgcc trusts what it is given: a malformed section would crash
        // the next unwind anywhere in the process.
        crate::elf::ehframe::check(mem, eh_frame_vaddr).ok()?;
        Some(CheckedFrames { eh_frame })
    }

    /// Registers the section with libgcc's unwinder. `None` when the
    /// process has no libgcc unwinder to register with (unwinding through
    /// the image then stops at its frames, nothing else changes).
    pub fn register(self) -> Option<FrameRegistration> {
        let (register, deregister) = frame_functions()?;
        // SAFETY: `eh_frame` is the start of the image's checked .eh_frame
        // section (zero-terminated by crtend), mapped until the registration
        // is dropped.
        unsafe { register(self.eh_frame as *const c_void) };
        Some(FrameRegistration {
            eh_frame: self.eh_frame,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Segment;

    /// An `.eh_frame_hdr` at 0x100 whose pointer (encoding `enc`) names
    /// `eh_frame`, in an image of `loads` held by a buffer.
    fn fixed(loads: &[Segment], enc: u8, eh_frame: u64) -> bool {
        let size = loads.iter().map(|s| s.end()).max().unwrap() as usize;
        let mut image = vec![0u8; size];
        let pointer = match enc & 0x70 {
            DW_EH_PE_PCREL => eh_frame.wrapping_sub(0x104),
            _ => eh_frame,
        };
        image[0x100..0x108].copy_from_slice(&[1, enc, 0x03, 0x3b, 0, 0, 0, 0]);
        image[0x104..0x108].copy_from_slice(&(pointer as u32).to_le_bytes());
        // SAFETY: the buffer holds every segment at `bias + vaddr` and
        // outlives `mem`; nothing writes it meanwhile.
        let mem = unsafe { Memory::new(image.as_ptr() as usize, loads) };
        fixed_before_relocation(&mem, 0x100)
    }

    fn segment(vaddr: u64, memsz: u64, flags: u32) -> Segment {
        Segment {
            index: 0,
            vaddr,
            memsz,
            offset: vaddr,
            filesz: memsz,
            flags,
        }
    }

    #[test]
    fn only_sections_relocation_cannot_touch_are_fixed_before_it() {
        const R: u32 = 4;
        const RW: u32 = 6;
        // Far apart at any page size up to 64 KiB.
        let apart = [segment(0, 0x1000, R), segment(0x2_0000, 0x100, RW)];
        let pcrel = DW_EH_PE_PCREL | 0x0b;
        assert!(fixed(&apart, pcrel, 0x200));
        assert!(fixed(&apart, DW_EH_PE_DATAREL | 0x0b, 0x100));
        // An absolute pointer is relocated.
        assert!(!fixed(&apart, 0x03, 0x200));
        // The section in the writable segment.
        assert!(!fixed(&apart, pcrel, 0x2_0010));
        // A writable segment sharing the read-only segment's last page.
        let sharing = [segment(0, 0xf00, R), segment(0xf80, 0x100, RW)];
        assert!(!fixed(&sharing, pcrel, 0x200));
        // The header itself in a writable segment.
        let writable = [segment(0, 0x1000, RW)];
        assert!(!fixed(&writable, pcrel, 0x200));
    }
}
