//! The initialiser and finaliser calling convention: what the loader
//! passes to `DT_INIT`/`DT_INIT_ARRAY` entries (as glibc does) and how
//! finalisers are called when an image goes.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

/// argc, argv and envp as glibc passes them to initialisers.
#[derive(Clone, Copy)]
pub(crate) struct ProcessArgs {
    argc: c_int,
    argv: *const *const c_char,
}

// SAFETY: the pointers refer to a process-lifetime allocation never mutated.
unsafe impl Send for ProcessArgs {}
// SAFETY: as above.
unsafe impl Sync for ProcessArgs {}

pub(crate) fn process_args() -> ProcessArgs {
    static ARGS: OnceLock<(Vec<CString>, Vec<usize>)> = OnceLock::new();
    let (strings, ptrs) = ARGS.get_or_init(|| {
        use std::os::unix::ffi::OsStringExt;
        let strings: Vec<CString> = std::env::args_os()
            .filter_map(|a| CString::new(a.into_vec()).ok())
            .collect();
        let mut ptrs: Vec<usize> = strings.iter().map(|s| s.as_ptr() as usize).collect();
        ptrs.push(0);
        (strings, ptrs)
    });
    ProcessArgs {
        argc: strings.len() as c_int,
        argv: ptrs.as_ptr().cast(),
    }
}

extern "C" {
    static environ: *const *const c_char;
}

/// Calls an initialiser as glibc does: `f(argc, argv, envp)`.
///
/// # Safety
/// `f` must be an initialiser of a loaded image.
pub(crate) unsafe fn call_init(f: usize, args: ProcessArgs) {
    // SAFETY: the caller guarantees `f` is an initialiser; extra arguments
    // are harmless to a `void (*)(void)` under the C calling convention.
    let init: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
        unsafe { std::mem::transmute(f) };
    // SAFETY: reading the process's environment pointer.
    let envp = unsafe { environ };
    init(args.argc, args.argv, envp);
}

/// Calls a finaliser: `f()`.
///
/// # Safety
/// `f` must be a finaliser of a loaded image.
pub(crate) unsafe fn call_fini(f: usize) {
    // SAFETY: the caller guarantees `f` is a finaliser.
    let fini: extern "C" fn() = unsafe { std::mem::transmute(f) };
    fini();
}
