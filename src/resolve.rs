//! Import resolution: the chain an undefined symbol goes through.
//!
//! 1. symbols the caller provides by name ([`crate::Options::symbol`]);
//! 2. the process's global scope, honouring the import's required version
//!    (`dlvsym(RTLD_DEFAULT, name, "GLIBC_2.14")`);
//! 3. the image's `DT_NEEDED` libraries, opened through the system loader.
//!
//! Steps 2 and 3 are skipped entirely under
//! [`crate::Options::deny_host_lookups`]. Between steps 1 and 2 come memdl's
//! own loader services (`__tls_get_addr`, `dlsym`, `dladdr`, ...: see
//! `interpose.rs`); under the deny policy only those that cannot reach the
//! host (see `Options::deny_host_lookups`).

use std::collections::HashMap;
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

/// The resolver chain for one load.
pub struct Resolver<'a> {
    host: &'a HashMap<Vec<u8>, usize>,
    global_scope: bool,
    needed: Vec<NeededLibrary>,
}

impl<'a> Resolver<'a> {
    /// Opens the needed libraries (unless host lookups are denied).
    pub fn new(
        host: &'a HashMap<Vec<u8>, usize>,
        deny_host_lookups: bool,
        needed: &[&[u8]],
    ) -> Result<Self> {
        let mut opened = Vec::with_capacity(needed.len());
        if !deny_host_lookups {
            for name in needed {
                let handle = with_c_name(name, |c| {
                    // SAFETY: `c` is a NUL-terminated name; dlopen of a
                    // library the process already has only takes a reference.
                    unsafe { libc::dlopen(c, libc::RTLD_NOW | libc::RTLD_LOCAL) }
                });
                if handle.is_null() {
                    return Err(Error::NeededLibrary {
                        name: lossy(name),
                        message: dlerror_text(),
                    });
                }
                opened.push(NeededLibrary { handle });
            }
        }
        Ok(Resolver {
            host,
            global_scope: !deny_host_lookups,
            needed: opened,
        })
    }

    /// Resolves an import, or `None` when no step of the chain has it.
    pub fn resolve(&self, name: &[u8], version: Option<&[u8]>) -> Option<usize> {
        if let Some(&addr) = self.host.get(name) {
            return Some(addr);
        }
        // A sandbox gets only the services that cannot reach the host.
        let builtin_allowed =
            self.global_scope || crate::options::builtin_allowed_when_denied(name);
        if let Some(addr) = crate::interpose::builtin(name).filter(|_| builtin_allowed) {
            return Some(addr);
        }
        if !self.global_scope {
            return None;
        }
        let found = with_c_name(name, |c| {
            let global = lookup(libc::RTLD_DEFAULT, c, version);
            if !global.is_null() {
                return global;
            }
            self.needed
                .iter()
                .map(|lib| lookup(lib.handle, c, version))
                .find(|p| !p.is_null())
                .unwrap_or(std::ptr::null_mut())
        });
        (!found.is_null()).then_some(found as usize)
    }

    /// Hands over the opened libraries: the image keeps them open for its
    /// lifetime, since its code calls into them.
    pub fn into_needed(self) -> Vec<NeededLibrary> {
        self.needed
    }
}

/// `dlvsym` when a version is required (where the platform has it), else `dlsym`.
fn lookup(handle: *mut c_void, name: *const c_char, version: Option<&[u8]>) -> *mut c_void {
    match version {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        Some(v) => with_c_name(v, |ver| {
            // SAFETY: handle is RTLD_DEFAULT or a live dlopen handle; name and
            // version are NUL-terminated.
            unsafe { libc::dlvsym(handle, name, ver) }
        }),
        _ => {
            // SAFETY: as above.
            unsafe { libc::dlsym(handle, name) }
        }
    }
}
