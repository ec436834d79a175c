//! The `DT_NEEDED` libraries an image calls into, opened by the system
//! loader and kept open for the image's lifetime.

use std::ffi::{c_char, c_void, CStr};

use crate::error::{Error, Result};
use crate::symbol::lossy;

/// A `DT_NEEDED` library opened with `dlopen`, closed on drop.
#[derive(Debug)]
pub struct NeededLibrary {
    handle: *mut c_void,
}

// SAFETY: a dlopen handle may be used and closed from any thread.
unsafe impl Send for NeededLibrary {}
// SAFETY: dlsym on a handle is thread-safe.
unsafe impl Sync for NeededLibrary {}

impl NeededLibrary {
    /// `dlopen(name, RTLD_NOW | RTLD_LOCAL)`.
    pub fn open(name: &[u8]) -> Result<NeededLibrary> {
        let handle = with_c_name(name, |c| {
            // SAFETY: `c` is a NUL-terminated name; dlopen of a library the
            // process already has only takes a reference.
            unsafe { libc::dlopen(c, libc::RTLD_NOW | libc::RTLD_LOCAL) }
        });
        if handle.is_null() {
            return Err(Error::NeededLibrary {
                name: lossy(name),
                message: dlerror_text(),
            });
        }
        Ok(NeededLibrary { handle })
    }

    /// The `dlopen` handle.
    pub fn handle(&self) -> *mut c_void {
        self.handle
    }
}

impl Drop for NeededLibrary {
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
