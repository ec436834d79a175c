//! x86_64: relocation semantics from the System V AMD64 psABI, table 4.9.

use goblin::elf::reloc::*;

use super::RelocKind;

/// `EM_X86_64`.
pub const EM_CURRENT: u16 = goblin::elf::header::EM_X86_64;

/// The psABI meaning of each dynamic relocation type.
pub fn classify(r_type: u32) -> RelocKind {
    match r_type {
        R_X86_64_NONE => RelocKind::None,
        R_X86_64_64 => RelocKind::Absolute,
        R_X86_64_GLOB_DAT | R_X86_64_JUMP_SLOT => RelocKind::Slot { with_addend: false },
        R_X86_64_RELATIVE => RelocKind::Relative,
        R_X86_64_IRELATIVE => RelocKind::IRelative,
        R_X86_64_DTPMOD64 => RelocKind::TlsModule,
        R_X86_64_DTPOFF64 => RelocKind::TlsOffset,
        R_X86_64_TPOFF64 => RelocKind::TlsTpOffset,
        R_X86_64_TLSDESC => RelocKind::TlsDesc,
        _ => RelocKind::Unsupported,
    }
}

/// Calls an ifunc resolver. glibc on x86_64 passes no arguments; resolvers
/// query the CPU themselves (`__builtin_cpu_supports`).
///
/// # Safety
/// `addr` must be the address of an ifunc resolver in an executable page.
pub unsafe fn call_ifunc_resolver(addr: usize) -> usize {
    // SAFETY: the caller guarantees `addr` is a resolver with this ABI.
    let resolver: extern "C" fn() -> usize = unsafe { std::mem::transmute(addr) };
    resolver()
}

/// x86 keeps instruction and data caches coherent: nothing to do.
pub fn flush_icache(_start: usize, _len: usize) {}
