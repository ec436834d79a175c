//! AArch64: relocation semantics from the ELF for the Arm 64-bit
//! Architecture psABI, section 5.7 (dynamic relocations).

use goblin::elf::reloc::*;

use super::RelocKind;

/// `EM_AARCH64`.
pub const EM_CURRENT: u16 = goblin::elf::header::EM_AARCH64;

/// The psABI meaning of each dynamic relocation type.
pub fn classify(r_type: u32) -> RelocKind {
    match r_type {
        // 256 is the psABI's other spelling of "no relocation".
        R_AARCH64_NONE | 256 => RelocKind::None,
        R_AARCH64_ABS64 => RelocKind::Absolute,
        R_AARCH64_GLOB_DAT | R_AARCH64_JUMP_SLOT => RelocKind::Slot { with_addend: true },
        R_AARCH64_RELATIVE => RelocKind::Relative,
        R_AARCH64_IRELATIVE => RelocKind::IRelative,
        R_AARCH64_TLS_DTPMOD => RelocKind::TlsModule,
        R_AARCH64_TLS_DTPREL => RelocKind::TlsOffset,
        R_AARCH64_TLS_TPREL => RelocKind::TlsTpOffset,
        R_AARCH64_TLSDESC => RelocKind::TlsDesc,
        _ => RelocKind::Unsupported,
    }
}

/// Marks the `hwcap` argument as followed by a pointer to the full
/// `__ifunc_arg_t` (glibc's `_IFUNC_ARG_HWCAP`).
const IFUNC_ARG_HWCAP: u64 = 1 << 62;

/// glibc's `__ifunc_arg_t`.
#[repr(C)]
struct IfuncArg {
    size: u64,
    hwcap: u64,
    hwcap2: u64,
}

/// Calls an ifunc resolver the way glibc does on AArch64:
/// `resolver(hwcap | _IFUNC_ARG_HWCAP, &__ifunc_arg_t)`.
///
/// # Safety
/// `addr` must be the address of an ifunc resolver in an executable page.
pub unsafe fn call_ifunc_resolver(addr: usize) -> usize {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (hwcap, hwcap2) = unsafe {
        (
            libc::getauxval(libc::AT_HWCAP),
            libc::getauxval(libc::AT_HWCAP2),
        )
    };
    let arg = IfuncArg {
        size: std::mem::size_of::<IfuncArg>() as u64,
        hwcap,
        hwcap2,
    };
    // SAFETY: the caller guarantees `addr` is a resolver with this ABI.
    let resolver: extern "C" fn(u64, *const IfuncArg) -> usize =
        unsafe { std::mem::transmute(addr) };
    resolver(hwcap | IFUNC_ARG_HWCAP, &arg)
}

/// Makes code the loader wrote visible to instruction fetch (what
/// `__clear_cache` does): clean the data cache to the point of unification,
/// invalidate the instruction cache, and synchronise.
pub fn flush_icache(start: usize, len: usize) {
    if len == 0 {
        return;
    }
    let ctr: u64;
    // SAFETY: reading CTR_EL0 is permitted at EL0 on Linux (SCTLR_EL1.UCT).
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let dline = 4usize << ((ctr >> 16) & 0xf);
    let iline = 4usize << (ctr & 0xf);
    let end = start + len;
    let mut addr = start & !(dline - 1);
    while addr < end {
        // SAFETY: cache maintenance by VA on mapped memory of the image.
        unsafe { core::arch::asm!("dc cvau, {}", in(reg) addr, options(nostack)) };
        addr += dline;
    }
    // SAFETY: barrier instructions have no memory-safety preconditions.
    unsafe { core::arch::asm!("dsb ish", options(nostack)) };
    let mut addr = start & !(iline - 1);
    while addr < end {
        // SAFETY: cache maintenance by VA on mapped memory of the image.
        unsafe { core::arch::asm!("ic ivau, {}", in(reg) addr, options(nostack)) };
        addr += iline;
    }
    // SAFETY: barrier instructions have no memory-safety preconditions.
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack)) };
}
