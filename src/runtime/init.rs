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

// SAFETY: the pointers refer to the process's own argument vector or to a
// process-lifetime copy of it, and memdl only hands them to initialisers,
// on whatever thread loads, as glibc does.
unsafe impl Send for ProcessArgs {}
// SAFETY: as above.
unsafe impl Sync for ProcessArgs {}

pub(crate) fn process_args() -> ProcessArgs {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let argv = captured::ARGV.load(std::sync::atomic::Ordering::Relaxed);
        if !argv.is_null() {
            return ProcessArgs {
                argc: captured::ARGC.load(std::sync::atomic::Ordering::Relaxed),
                argv,
            };
        }
    }
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

/// The process's own argc and argv, as glibc hands them to every
/// `DT_INIT_ARRAY` entry of the program and its libraries at start-up
/// (the way Rust's std learns them too): what the system loader passes to
/// the initialisers of the libraries it loads later. Without them (memdl
/// in a library loaded after start-up still gets them from `dlopen`; a
/// process that never ran this) the arguments are copied from
/// `std::env::args_os` once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod captured {
    use std::ffi::{c_char, c_int};
    use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

    pub(super) static ARGC: AtomicI32 = AtomicI32::new(0);
    pub(super) static ARGV: AtomicPtr<*const c_char> = AtomicPtr::new(std::ptr::null_mut());

    extern "C" fn capture(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
        ARGC.store(argc, Ordering::Relaxed);
        ARGV.store(argv.cast_mut(), Ordering::Relaxed);
    }

    #[used]
    #[link_section = ".init_array.00099"]
    static CAPTURE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = capture;
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
