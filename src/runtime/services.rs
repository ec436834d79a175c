//! Loader services memdl binds into the images it loads, as `ld.so` provides
//! them to the objects it loads.
//!
//! The system's `dladdr`, `dlsym`, `dl_iterate_phdr` and `dlerror` only
//! know the system loader's objects; TLS and thread-exit destructors need
//! memdl's bookkeeping. When a loaded image imports one of the names below,
//! the resolver binds it to memdl's version, which answers for memdl's
//! images and hands everything else to the system's implementation.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::runtime::image::Loaded;
use crate::runtime::registry;

/// One loader service: an import memdl binds to its own implementation.
pub(crate) struct Service {
    /// The imported name.
    pub name: &'static [u8],
    /// memdl's implementation's address.
    address: fn() -> usize,
    /// Whether it can reach the host's symbols or reveal its libraries
    /// (and through them every host function): such services are not bound
    /// under [`crate::Options::deny_host_lookups`].
    pub reaches_host: bool,
}

impl Service {
    /// The address of memdl's implementation.
    pub fn address(&self) -> usize {
        (self.address)()
    }
}

/// A row of [`SERVICES`]: the name, memdl's function, and whether it
/// reaches the host.
macro_rules! service {
    ($name:literal, $function:path, reaches_host: $reaches:expr) => {
        Service {
            name: $name,
            address: || $function as *const () as usize,
            reaches_host: $reaches,
        }
    };
}

/// Every loader service: what binding offers, and what the sandbox policy
/// keeps (those that do not reach the host).
pub(crate) const SERVICES: &[Service] = &[
    service!(b"__tls_get_addr", crate::arch::tls_get_addr, reaches_host: false),
    service!(b"dladdr", dladdr, reaches_host: true),
    service!(b"dlsym", dlsym, reaches_host: true),
    service!(b"dlvsym", dlvsym, reaches_host: true),
    service!(b"dlerror", dlerror, reaches_host: false),
    service!(b"dl_iterate_phdr", dl_iterate_phdr, reaches_host: true),
    service!(b"__cxa_thread_atexit_impl", cxa_thread_atexit, reaches_host: false),
    service!(b"__cxa_thread_atexit", cxa_thread_atexit, reaches_host: false),
];

/// The loader service an import of `name` binds to, if there is one.
pub(crate) fn find(name: &[u8]) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The system's implementation of `name`, looked up once.
fn system(slot: &AtomicUsize, name: &CStr) -> usize {
    let f = slot.load(Ordering::Relaxed);
    if f != 0 {
        return f;
    }
    // SAFETY: a lookup of a NUL-terminated name in the global scope.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    slot.store(f, Ordering::Relaxed);
    f
}

thread_local! {
    /// memdl's own `dlerror` text for this thread: (pending, last returned).
    static DL_ERROR: RefCell<(Option<CString>, Option<CString>)> = const { RefCell::new((None, None)) };
}

fn set_error(message: String) {
    let message = CString::new(message).unwrap_or_default();
    let _ = DL_ERROR.try_with(|e| e.borrow_mut().0 = Some(message));
}

/// `dladdr` for loaded code: memdl's images first, then the system's.
unsafe extern "C" fn dladdr(addr: *const c_void, info: *mut libc::Dl_info) -> c_int {
    if let Some(image) = registry::containing(addr as usize) {
        let vaddr = (addr as usize).wrapping_sub(image.bias) as u64;
        let (sname, saddr) = match image.symbols.containing(vaddr) {
            Some((sym, name)) => (
                name.as_ptr() as *const c_char,
                image.bias.wrapping_add(sym.value as usize) as *mut c_void,
            ),
            None => (std::ptr::null(), std::ptr::null_mut()),
        };
        // The name pointers stay valid while the image is loaded, as the
        // system's do; symbol names are NUL-terminated in the string table.
        // SAFETY: the caller passes a writable Dl_info.
        unsafe {
            *info = libc::Dl_info {
                dli_fname: image.name.as_ptr(),
                dli_fbase: image.range.0 as *mut c_void,
                dli_sname: sname,
                dli_saddr: saddr,
            }
        };
        return 1;
    }
    static SYSTEM: AtomicUsize = AtomicUsize::new(0);
    match system(&SYSTEM, c"dladdr") {
        0 => 0,
        f => {
            // SAFETY: the system's dladdr, with the caller's arguments.
            let f: unsafe extern "C" fn(*const c_void, *mut libc::Dl_info) -> c_int =
                unsafe { std::mem::transmute(f) };
            // SAFETY: forwarded arguments.
            unsafe { f(addr, info) }
        }
    }
}

/// The handle `dlopen(NULL)` returns: the global scope, like `RTLD_DEFAULT`.
fn global_handle() -> *mut c_void {
    static HANDLE: AtomicUsize = AtomicUsize::new(0);
    let mut h = HANDLE.load(Ordering::Relaxed);
    if h == 0 {
        // SAFETY: dlopen(NULL) only returns the main program's handle (it
        // is never unloaded, so the reference taken here does not leak
        // anything).
        h = unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_NOW) } as usize;
        HANDLE.store(h, Ordering::Relaxed);
    }
    h as *mut c_void
}

/// `dlsym` for loaded code: the system's lookup, then, for the global scope
/// (`RTLD_DEFAULT`, `RTLD_NEXT`, `dlopen(NULL)`), memdl's images, so a loaded
/// library finds its own exports. `RTLD_NEXT` means the global scope: the
/// system cannot place a memdl image in its search order. A handle of one
/// system library searches that library only, as it does for the system.
unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // SAFETY: the caller's arguments, forwarded.
    unsafe { lookup(handle, name, None) }
}

/// `dlvsym` for loaded code: as [`dlsym`], at a version. Without it an
/// interposer's `dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34")` (gprofng's
/// collector finds the functions it wraps so) reaches the system's, which
/// refuses `RTLD_NEXT` from code it did not load.
unsafe extern "C" fn dlvsym(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
) -> *mut c_void {
    // SAFETY: the caller passes a NUL-terminated version.
    let version = (!version.is_null()).then(|| unsafe { CStr::from_ptr(version) });
    // SAFETY: the caller's arguments, forwarded.
    unsafe { lookup(handle, name, version) }
}

/// The lookup behind [`dlsym`] and [`dlvsym`].
///
/// # Safety
/// `handle` is a handle or pseudo-handle and `name` a NUL-terminated string.
unsafe fn lookup(handle: *mut c_void, name: *const c_char, version: Option<&CStr>) -> *mut c_void {
    let handle = if handle == libc::RTLD_NEXT {
        libc::RTLD_DEFAULT
    } else {
        handle
    };
    let global = handle == libc::RTLD_DEFAULT || handle == global_handle();
    // Each call replaces the previous call's error, as the system's does.
    let _ = DL_ERROR.try_with(|e| e.borrow_mut().0 = None);
    let found = match version {
        // SAFETY: the caller passes a handle and NUL-terminated strings.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        Some(v) => unsafe { libc::dlvsym(handle, name, v.as_ptr()) },
        // Without dlvsym (not glibc), the default version.
        // SAFETY: as above.
        _ => unsafe { libc::dlsym(handle, name) },
    };
    if !found.is_null() {
        return found;
    }
    // The system's failure is not the caller's error (a memdl image may
    // still have the name, or memdl reports its own): consume it so the
    // caller's dlerror does not see it later.
    // SAFETY: dlerror has no preconditions.
    unsafe { libc::dlerror() };
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(name) };
    for image in registry::snapshot().iter().filter(|_| global) {
        if let Ok(addr) = image.address_of(name.to_bytes(), version.map(CStr::to_bytes)) {
            return addr as *mut c_void;
        }
    }
    set_error(format!("undefined symbol: {}", name.to_string_lossy()));
    std::ptr::null_mut()
}

/// `dlerror` for loaded code: memdl's pending message, else the system's.
unsafe extern "C" fn dlerror() -> *mut c_char {
    let ours = DL_ERROR
        .try_with(|e| {
            let mut e = e.borrow_mut();
            let pending = e.0.take()?;
            // Kept until the next call, as the system keeps its message.
            e.1 = Some(pending);
            e.1.as_ref().map(|m| m.as_ptr() as *mut c_char)
        })
        .ok()
        .flatten();
    // SAFETY: the system's dlerror has no preconditions.
    ours.unwrap_or_else(|| unsafe { libc::dlerror() })
}

type PhdrCallback =
    unsafe extern "C" fn(*mut libc::dl_phdr_info, libc::size_t, *mut c_void) -> c_int;

/// `dl_iterate_phdr` for loaded code: memdl's images, then the system's
/// objects, until the callback returns non-zero.
unsafe extern "C" fn dl_iterate_phdr(callback: Option<PhdrCallback>, data: *mut c_void) -> c_int {
    let Some(cb) = callback else { return 0 };
    let (adds, subs) = registry::counts();
    for image in registry::snapshot() {
        // SAFETY: dl_phdr_info is plain data; zero is valid for every field.
        let mut info: libc::dl_phdr_info = unsafe { std::mem::zeroed() };
        info.dlpi_addr = image.bias as _;
        info.dlpi_name = image.name.as_ptr();
        info.dlpi_phdr = image.phdrs.as_ptr().cast();
        info.dlpi_phnum = image.phdrs.len() as _;
        info.dlpi_adds = adds as _;
        info.dlpi_subs = subs as _;
        // SAFETY: the callback gets a valid info that lives across the call;
        // `image` (an Arc) keeps the names and headers alive.
        let r = unsafe { cb(&mut info, std::mem::size_of::<libc::dl_phdr_info>(), data) };
        if r != 0 {
            return r;
        }
    }
    // SAFETY: the system's iteration with the caller's callback and data.
    unsafe { libc::dl_iterate_phdr(Some(cb), data) }
}

/// A thread-exit destructor registered by a loaded image, holding the image
/// alive until it has run.
struct PendingDestructor {
    dtor: unsafe extern "C" fn(*mut c_void),
    object: *mut c_void,
    _image: Arc<Loaded>,
}

unsafe extern "C" fn run_pending(p: *mut c_void) {
    // SAFETY: `p` is the Box leaked by `cxa_thread_atexit`, run once.
    let pending = unsafe { Box::from_raw(p as *mut PendingDestructor) };
    // SAFETY: the image is alive (held by `pending`); this is the call it
    // asked for at thread exit.
    unsafe { (pending.dtor)(pending.object) };
    // Dropping `pending` may drop the last reference to a dropped image:
    // its finalisers run and it is unmapped now, after its destructor ran.
}

/// `__cxa_thread_atexit_impl` / `__cxa_thread_atexit` for loaded code.
/// Destructors of a memdl image are wrapped so the image stays mapped (and
/// its finalisers wait) until they ran; the system runs them at thread exit.
unsafe extern "C" fn cxa_thread_atexit(
    dtor: unsafe extern "C" fn(*mut c_void),
    object: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    static SYSTEM: AtomicUsize = AtomicUsize::new(0);
    let f = system(&SYSTEM, c"__cxa_thread_atexit_impl");
    if f == 0 {
        return -1;
    }
    // SAFETY: glibc's __cxa_thread_atexit_impl has this signature.
    let system_impl: unsafe extern "C" fn(
        unsafe extern "C" fn(*mut c_void),
        *mut c_void,
        *mut c_void,
    ) -> c_int = unsafe { std::mem::transmute(f) };
    let Some(image) = registry::containing(dso as usize) else {
        // SAFETY: forwarded arguments.
        return unsafe { system_impl(dtor, object, dso) };
    };
    let pending = Box::into_raw(Box::new(PendingDestructor {
        dtor,
        object,
        _image: image,
    }));
    // Attributed to memdl's own code, which outlives every image.
    let ours = run_pending as *mut c_void;
    // SAFETY: `run_pending` takes back the Box exactly once.
    let r = unsafe { system_impl(run_pending, pending.cast(), ours) };
    if r != 0 {
        // SAFETY: not registered, so still ours to free.
        drop(unsafe { Box::from_raw(pending) });
    }
    r
}
