//! AArch64: relocation semantics from the ELF for the Arm 64-bit
//! Architecture psABI, section 5.7 (dynamic relocations).

use goblin::elf::reloc::*;

use super::RelocKind;

/// `EM_AARCH64`.
pub const EM_CURRENT: u16 = goblin::elf::header::EM_AARCH64;

/// The initial-exec TLS relocation (offset from the thread pointer).
pub const R_TLS_TPOFF: u32 = R_AARCH64_TLS_TPREL;

/// The relative relocation (`bias + addend`), most of a large library's
/// entries: the walk writes the run of them a table starts with on a path
/// of its own.
pub const R_RELATIVE: u32 = R_AARCH64_RELATIVE;

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
/// invalidate the instruction cache, and synchronise. Called on code pages
/// while they are still readable and writable, before they become
/// executable (an execute-only page could not be cleaned by address).
///
/// `CTR_EL0` says what the hardware already guarantees: with `IDC` the data
/// cache need not be cleaned for coherence with instruction fetch, with
/// `DIC` the instruction cache need not be invalidated; the barriers stay.
pub fn flush_icache(start: usize, len: usize) {
    if len == 0 {
        return;
    }
    let ctr: u64;
    // SAFETY: reading CTR_EL0 is permitted at EL0 on Linux (SCTLR_EL1.UCT).
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let idc = ctr & (1 << 28) != 0;
    let dic = ctr & (1 << 29) != 0;
    // Line sizes are log2 of words (4 bytes).
    let dline = 4usize << ((ctr >> 16) & 0xf);
    let iline = 4usize << (ctr & 0xf);
    let end = start + len;
    if !idc {
        let mut addr = start & !(dline - 1);
        while addr < end {
            // SAFETY: cache maintenance by VA on mapped, readable memory of
            // the image.
            unsafe { core::arch::asm!("dc cvau, {}", in(reg) addr, options(nostack)) };
            addr += dline;
        }
    }
    // SAFETY: barrier instructions have no memory-safety preconditions.
    unsafe { core::arch::asm!("dsb ish", options(nostack)) };
    if !dic {
        let mut addr = start & !(iline - 1);
        while addr < end {
            // SAFETY: cache maintenance by VA on mapped, readable memory of
            // the image.
            unsafe { core::arch::asm!("ic ivau, {}", in(reg) addr, options(nostack)) };
            addr += iline;
        }
        // SAFETY: as above.
        unsafe { core::arch::asm!("dsb ish", options(nostack)) };
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("isb", options(nostack)) };
}

/// `__tls_get_addr` as memdl binds it for loaded images (the traditional
/// dialect, `-mtls-dialect=trad`): a plain AAPCS64 call.
pub extern "C" fn tls_get_addr(ti: *const crate::runtime::tls::TlsIndex) -> *mut u8 {
    crate::runtime::tls::tls_get_addr(ti)
}

/// Nothing to prepare on AArch64: [`tlsdesc_dynamic`] saves registers with
/// plain stores.
pub fn prepare_tls_descriptors() -> crate::Result<()> {
    Ok(())
}

/// The TLS descriptor function for memdl's dynamic TLS (the default dialect
/// on AArch64).
///
/// Called with `x0` = the address of the descriptor (two words: this
/// function, then its argument, a pointer to a [`crate::runtime::tls::TlsIndex`]);
/// returns in `x0` the variable's offset from `tpidr_el0`, which the caller
/// adds to the thread pointer. The descriptor ABI (as GCC and LLVM model
/// the call, and glibc's `_dl_tlsdesc_dynamic` implements it) lets it
/// clobber only `x0`, `x1` (holds the function), `x30` and the flags; all
/// 128 bits of every SIMD register survive, but not SVE state beyond them
/// (compilers treat that as clobbered, since a syscall discards it anyway).
/// So it saves x1-x18 and q0-q31 before calling into Rust, which may use
/// any caller-saved register. `tests/aarch64.rs` checks this with an
/// assembly probe.
#[unsafe(naked)]
pub extern "C" fn tlsdesc_dynamic() {
    core::arch::naked_asm!(
        // A BTI landing pad (`bti c`, a hint: a no-op without BTI): loaded
        // code reaches here with `blr`, and a naked function gets none from
        // the compiler even when the crate is built with branch protection.
        "hint #34",
        "stp x29, x30, [sp, #-16]!",
        "mov x29, sp",
        "stp x1, x2, [sp, #-16]!",
        "stp x3, x4, [sp, #-16]!",
        "stp x5, x6, [sp, #-16]!",
        "stp x7, x8, [sp, #-16]!",
        "stp x9, x10, [sp, #-16]!",
        "stp x11, x12, [sp, #-16]!",
        "stp x13, x14, [sp, #-16]!",
        "stp x15, x16, [sp, #-16]!",
        "stp x17, x18, [sp, #-16]!",
        "sub sp, sp, #512",
        "stp q0, q1, [sp, #0]",
        "stp q2, q3, [sp, #32]",
        "stp q4, q5, [sp, #64]",
        "stp q6, q7, [sp, #96]",
        "stp q8, q9, [sp, #128]",
        "stp q10, q11, [sp, #160]",
        "stp q12, q13, [sp, #192]",
        "stp q14, q15, [sp, #224]",
        "stp q16, q17, [sp, #256]",
        "stp q18, q19, [sp, #288]",
        "stp q20, q21, [sp, #320]",
        "stp q22, q23, [sp, #352]",
        "stp q24, q25, [sp, #384]",
        "stp q26, q27, [sp, #416]",
        "stp q28, q29, [sp, #448]",
        "stp q30, q31, [sp, #480]",
        "ldr x0, [x0, #8]",
        "bl {imp}",
        "mrs x1, tpidr_el0",
        "sub x0, x0, x1",
        "ldp q0, q1, [sp, #0]",
        "ldp q2, q3, [sp, #32]",
        "ldp q4, q5, [sp, #64]",
        "ldp q6, q7, [sp, #96]",
        "ldp q8, q9, [sp, #128]",
        "ldp q10, q11, [sp, #160]",
        "ldp q12, q13, [sp, #192]",
        "ldp q14, q15, [sp, #224]",
        "ldp q16, q17, [sp, #256]",
        "ldp q18, q19, [sp, #288]",
        "ldp q20, q21, [sp, #320]",
        "ldp q22, q23, [sp, #352]",
        "ldp q24, q25, [sp, #384]",
        "ldp q26, q27, [sp, #416]",
        "ldp q28, q29, [sp, #448]",
        "ldp q30, q31, [sp, #480]",
        "add sp, sp, #512",
        "ldp x17, x18, [sp], #16",
        "ldp x15, x16, [sp], #16",
        "ldp x13, x14, [sp], #16",
        "ldp x11, x12, [sp], #16",
        "ldp x9, x10, [sp], #16",
        "ldp x7, x8, [sp], #16",
        "ldp x5, x6, [sp], #16",
        "ldp x3, x4, [sp], #16",
        "ldp x1, x2, [sp], #16",
        "ldp x29, x30, [sp], #16",
        "ret",
        imp = sym crate::runtime::tls::tlsdesc_address,
    )
}
