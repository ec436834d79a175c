//! Architecture specifics, one file per architecture (as musl keeps them in
//! `arch/*/reloc.h`): the machine number, which relocation type means what,
//! how an ifunc resolver is called, and instruction-cache maintenance.
//!
//! Each file maps its relocation numbers onto [`RelocKind`]; the generic
//! relocation walk in `load/reloc.rs` only deals in kinds.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("memdl supports x86_64 and aarch64");

/// What a relocation type asks the loader to write (S = symbol value,
/// A = addend, B = load bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelocKind {
    /// Nothing.
    None,
    /// S + A.
    Absolute,
    /// S, the GOT and PLT slots (plus A where the psABI says so).
    Slot { with_addend: bool },
    /// B + A.
    Relative,
    /// The result of calling the resolver at B + A.
    IRelative,
    /// TLS module id of the symbol's object.
    TlsModule,
    /// Offset of the symbol in its module's TLS block (S + A).
    TlsOffset,
    /// Offset of the symbol from the thread pointer (static TLS).
    TlsTpOffset,
    /// A TLS descriptor: resolver function and argument.
    TlsDesc,
    /// Anything else: the loader refuses it.
    Unsupported,
}

/// Name of relocation type `r_type` for this architecture, for errors.
pub fn relocation_name(r_type: u32) -> &'static str {
    goblin::elf::reloc::r_to_str(r_type, EM_CURRENT)
}

#[cfg(test)]
mod tests;
