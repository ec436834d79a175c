//! The `DT_NEEDED` libraries an image calls into, kept open for the
//! image's lifetime: opened by the system loader, or supplied by the caller
//! and loaded by memdl.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::symbol::lossy;

/// A `DT_NEEDED` library.
#[derive(Debug)]
pub enum NeededLibrary {
    /// Opened by the system loader.
    System(SystemHandle),
    /// Supplied through [`crate::Options::dependencies`] and loaded by
    /// memdl: shared by every library of one load that needs it, dropped
    /// after the last of them.
    Memdl(Arc<crate::ElfImage>),
}

/// A `dlopen` handle, closed on drop.
#[derive(Debug)]
pub struct SystemHandle {
    handle: *mut c_void,
}

// SAFETY: a dlopen handle may be used and closed from any thread.
unsafe impl Send for SystemHandle {}
// SAFETY: dlsym on a handle is thread-safe.
unsafe impl Sync for SystemHandle {}

impl SystemHandle {
    /// The `dlopen` handle.
    pub fn handle(&self) -> *mut c_void {
        self.handle
    }
}

impl NeededLibrary {
    /// `dlopen(name, RTLD_NOW | RTLD_LOCAL)` (a name or a path).
    pub fn open(name: &[u8]) -> Result<NeededLibrary> {
        system_open(name, 0).ok_or_else(|| Error::NeededLibrary {
            name: lossy(name),
            message: dlerror_text(),
        })
    }

    /// The library the system loader has loaded under `name`, if any
    /// (`dlopen(name, RTLD_NOLOAD)`: a reference taken, nothing loaded).
    pub fn already_loaded(name: &[u8]) -> Option<NeededLibrary> {
        let loaded = system_open(name, libc::RTLD_NOLOAD);
        if loaded.is_none() {
            #[cfg(feature = "test-hooks")]
            crate::hooks::NOLOAD_MISSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Not loaded: no error of ours for the caller's next dlerror().
            // SAFETY: dlerror has no preconditions.
            unsafe { libc::dlerror() };
        }
        loaded
    }
}

/// `dlopen(name, RTLD_NOW | RTLD_LOCAL | extra)`, `None` if it fails.
fn system_open(name: &[u8], extra: c_int) -> Option<NeededLibrary> {
    let handle = with_c_name(name, |c| {
        // SAFETY: `c` is a NUL-terminated name; dlopen of a library the
        // process already has only takes a reference (and with
        // RTLD_NOLOAD, loads nothing).
        unsafe { libc::dlopen(c, libc::RTLD_NOW | libc::RTLD_LOCAL | extra) }
    });
    // Not `then_some`: a handle built eagerly from a null would be closed.
    if handle.is_null() {
        return None;
    }
    Some(NeededLibrary::System(SystemHandle { handle }))
}

impl Drop for SystemHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful dlopen and is closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// The text of the last `dlerror()`, or a fallback.
pub(crate) fn dlerror_text() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated thread-local string
    // that stays valid until the next dl* call on this thread.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".to_owned()
    } else {
        // SAFETY: non-null: a valid C string (see above).
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Runs `f` with `name` as a NUL-terminated C string, without allocating
/// for names shorter than 256 bytes. A name containing NUL is passed as its
/// prefix, which the string table could not have produced anyway.
pub(crate) fn with_c_name<R>(name: &[u8], f: impl FnOnce(*const c_char) -> R) -> R {
    let mut buf = [0u8; 256];
    if name.len() < buf.len() {
        buf[..name.len()].copy_from_slice(name);
        f(buf.as_ptr().cast())
    } else {
        let mut owned = name.to_vec();
        owned.push(0);
        f(owned.as_ptr().cast())
    }
}
