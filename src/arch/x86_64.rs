//! x86_64: relocation semantics from the System V AMD64 psABI, table 4.9.

use goblin::elf::reloc::*;

use super::RelocKind;

/// `EM_X86_64`.
pub const EM_CURRENT: u16 = goblin::elf::header::EM_X86_64;

/// The initial-exec TLS relocation (offset from the thread pointer).
pub const R_TLS_TPOFF: u32 = R_X86_64_TPOFF64;

/// The relative relocation (`bias + addend`), most of a large library's
/// entries: the walk writes the run of them a table starts with on a path
/// of its own.
pub const R_RELATIVE: u32 = R_X86_64_RELATIVE;

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

/// `__tls_get_addr` as memdl binds it for loaded images. GCC may call it
/// with a stack that is not 16-byte aligned (GCC PR58066), so it realigns
/// before entering Rust.
#[unsafe(naked)]
pub extern "C" fn tls_get_addr(_ti: *const crate::runtime::tls::TlsIndex) -> *mut u8 {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "and rsp, -16",
        "call {imp}",
        "mov rsp, rbp",
        "pop rbp",
        "ret",
        imp = sym crate::runtime::tls::tls_get_addr,
    )
}

/// Bytes `xsave` needs for the state components the OS enabled, rounded to
/// 64; 0 until [`prepare_tls_descriptors`] ran.
static XSAVE_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Checks the CPU can run [`tlsdesc_dynamic`] (it needs `xsave`) and sizes
/// its save area.
pub fn prepare_tls_descriptors() -> crate::Result<()> {
    use std::sync::atomic::Ordering;
    if XSAVE_SIZE.load(Ordering::Relaxed) != 0 {
        return Ok(());
    }
    // `unsafe` for Rust before 1.94, where the CPUID intrinsics were unsafe.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 processor.
    let leaf1 = unsafe { core::arch::x86_64::__cpuid(1) };
    if leaf1.ecx & (1 << 27) == 0 {
        return Err(crate::Error::Unsupported(
            "TLS descriptors on a CPU without OS-enabled XSAVE",
        ));
    }
    // Leaf 0xD exists when OSXSAVE is set.
    #[allow(unused_unsafe)]
    // SAFETY: as above; leaf 0xD exists (OSXSAVE is set).
    let size = unsafe { core::arch::x86_64::__cpuid_count(0xd, 0) }.ebx as usize;
    XSAVE_SIZE.store((size.max(576) + 63) & !63, Ordering::Relaxed);
    Ok(())
}

/// The TLS descriptor function for memdl's dynamic TLS (`-mtls-dialect=gnu2`).
///
/// Called with `rax` = the descriptor, whose second word points to a
/// [`crate::runtime::tls::TlsIndex`]; returns in `rax` the variable's offset from the
/// thread pointer. The descriptor ABI lets it clobber nothing else, so it
/// saves the integer scratch registers and, with `xsave`, every vector and
/// mask register the OS enabled, before calling into Rust.
#[unsafe(naked)]
pub extern "C" fn tlsdesc_dynamic() {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "push rbx",
        "push rdi",
        "push rsi",
        "push rdx",
        "push rcx",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "mov rbx, [rax + 8]",
        "sub rsp, [rip + {xsave_size}]",
        "and rsp, -64",
        // The XSAVE header must start zeroed for xrstor to accept it.
        "xor eax, eax",
        "mov [rsp + 512], rax",
        "mov [rsp + 520], rax",
        "mov [rsp + 528], rax",
        "mov [rsp + 536], rax",
        "mov [rsp + 544], rax",
        "mov [rsp + 552], rax",
        "mov [rsp + 560], rax",
        "mov [rsp + 568], rax",
        "mov eax, -1",
        "mov edx, -1",
        "xsave64 [rsp]",
        "mov rdi, rbx",
        "call {imp}",
        "mov rbx, rax",
        "mov eax, -1",
        "mov edx, -1",
        "xrstor64 [rsp]",
        "mov rax, rbx",
        "sub rax, fs:0",
        "lea rsp, [rbp - 72]",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rcx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "pop rbx",
        "pop rbp",
        "ret",
        xsave_size = sym XSAVE_SIZE,
        imp = sym crate::runtime::tls::tlsdesc_address,
    )
}
