//! The exported `dlopen` family: naked entry points that know their caller.
//!
//! Each entry saves its argument registers and asks [`crate::route`]
//! (which, where the arguments are, and the caller's return address) who
//! answers the call:
//!
//! * the system (a non-zero answer: the real function's address): the
//!   entry restores the arguments and *jumps* there, so the real function
//!   sees the original caller's return address, as it would without us
//!   (glibc uses it for `RTLD_NEXT`, the caller's namespace and `$ORIGIN`).
//!   Calls from this library's own code (memdl and std linked in here)
//!   always go there: that is what breaks the recursion.
//! * memdl (zero): the entry jumps to the `imp_*` function with the return
//!   address appended as one more argument.
//!
//! No stack frame of ours stays between the caller and the function that
//! answers, and nothing here can unwind (`route` and the `imp_*` functions
//! catch panics).

use std::ffi::{c_char, c_int, c_long, c_void};

use crate::PhdrCallback;

/// Indexes [`crate::route`] dispatches on.
pub mod which {
    pub const DLOPEN: usize = 0;
    pub const DLMOPEN: usize = 1;
    pub const DLSYM: usize = 2;
    pub const DLVSYM: usize = 3;
    pub const DLCLOSE: usize = 4;
    pub const DLERROR: usize = 5;
    pub const DLADDR: usize = 6;
    pub const DLADDR1: usize = 7;
    pub const DLINFO: usize = 8;
    pub const DL_ITERATE_PHDR: usize = 9;
}

#[cfg(target_arch = "x86_64")]
macro_rules! stub {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $which:path, $imp:path, $x86:literal, $a64:literal) => {
        $(#[$m])*
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // Entry: rsp = 8 mod 16. Six pushes keep that; `sub` aligns the
            // call. The saved registers form the argument array (rdi first).
            core::arch::naked_asm!(
                "push r9", "push r8", "push rcx", "push rdx", "push rsi", "push rdi",
                "mov edi, {which}",
                "mov rsi, [rsp + 48]",
                "mov rdx, rsp",
                "sub rsp, 8",
                "call {route}",
                "add rsp, 8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop r8", "pop r9",
                "test rax, rax",
                "jz 2f",
                "jmp rax",
                "2:",
                concat!("mov ", $x86, ", [rsp]"),
                "jmp {imp}",
                which = const $which,
                route = sym crate::route,
                imp = sym $imp,
            );
        }
    };
}

#[cfg(target_arch = "aarch64")]
macro_rules! stub {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $which:path, $imp:path, $x86:literal, $a64:literal) => {
        $(#[$m])*
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                "stp x29, x30, [sp, #-80]!",
                "mov x29, sp",
                "stp x0, x1, [sp, #16]",
                "stp x2, x3, [sp, #32]",
                "stp x4, x5, [sp, #48]",
                "stp x6, x7, [sp, #64]",
                "mov x0, #{which}",
                "mov x1, x30",
                "add x2, sp, #16",
                "bl {route}",
                "mov x16, x0",
                "ldp x0, x1, [sp, #16]",
                "ldp x2, x3, [sp, #32]",
                "ldp x4, x5, [sp, #48]",
                "ldp x6, x7, [sp, #64]",
                "ldp x29, x30, [sp], #80",
                "cbz x16, 2f",
                "br x16",
                "2:",
                concat!("mov ", $a64, ", x30"),
                "b {imp}",
                which = const $which,
                route = sym crate::route,
                imp = sym $imp,
            );
        }
    };
}

stub!(
    /// `dlopen(3)`.
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void
        = which::DLOPEN, crate::imp_dlopen, "rdx", "x2"
);
stub!(
    /// `dlmopen(3)`: `LM_ID_BASE` is `dlopen`; other namespaces are the
    /// system loader's (a fallback, refused under strict mode).
    fn dlmopen(lmid: c_long, file: *const c_char, mode: c_int) -> *mut c_void
        = which::DLMOPEN, crate::imp_dlmopen, "rcx", "x3"
);
stub!(
    /// `dlsym(3)`.
    fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void
        = which::DLSYM, crate::imp_dlsym, "rdx", "x2"
);
stub!(
    /// `dlvsym(3)`.
    fn dlvsym(handle: *mut c_void, name: *const c_char, version: *const c_char) -> *mut c_void
        = which::DLVSYM, crate::imp_dlvsym, "rcx", "x3"
);
stub!(
    /// `dlclose(3)`.
    fn dlclose(handle: *mut c_void) -> c_int = which::DLCLOSE, crate::imp_dlclose, "rsi", "x1"
);
stub!(
    /// `dlerror(3)`.
    fn dlerror() -> *mut c_char = which::DLERROR, crate::imp_dlerror, "rdi", "x0"
);
stub!(
    /// `dladdr(3)`.
    fn dladdr(addr: *const c_void, info: *mut libc::Dl_info) -> c_int
        = which::DLADDR, crate::imp_dladdr, "rdx", "x2"
);
stub!(
    /// `dladdr1(3)`.
    fn dladdr1(addr: *const c_void, info: *mut libc::Dl_info, extra: *mut *mut c_void, flags: c_int) -> c_int
        = which::DLADDR1, crate::imp_dladdr1, "r8", "x4"
);
stub!(
    /// `dlinfo(3)`.
    fn dlinfo(handle: *mut c_void, request: c_int, arg: *mut c_void) -> c_int
        = which::DLINFO, crate::imp_dlinfo, "rcx", "x3"
);
stub!(
    /// `dl_iterate_phdr(3)`.
    fn dl_iterate_phdr(callback: Option<PhdrCallback>, data: *mut c_void) -> c_int
        = which::DL_ITERATE_PHDR, crate::imp_dl_iterate_phdr, "rdx", "x2"
);

/// The entry points, by name, bound into every image memdl loads here
/// (through `Options::symbol`, ahead of memdl's own loader services), so
/// loaded code's calls come to us with their return address.
pub fn bindings() -> [(&'static str, *const c_void); 10] {
    [
        ("dlopen", dlopen as *const c_void),
        ("dlmopen", dlmopen as *const c_void),
        ("dlsym", dlsym as *const c_void),
        ("dlvsym", dlvsym as *const c_void),
        ("dlclose", dlclose as *const c_void),
        ("dlerror", dlerror as *const c_void),
        ("dladdr", dladdr as *const c_void),
        ("dladdr1", dladdr1 as *const c_void),
        ("dlinfo", dlinfo as *const c_void),
        ("dl_iterate_phdr", dl_iterate_phdr as *const c_void),
    ]
}
