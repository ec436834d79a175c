//! The `dlfcn` side of the system backend: opening, describing and querying
//! an object the platform loader has loaded, without ever mistaking one of
//! its dependencies for it.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// One reference (`dlopen` count) on a loaded object; dropping it `dlclose`s.
#[derive(Debug)]
pub(super) struct Handle(NonNull<c_void>);

// SAFETY: a dlopen handle is an opaque token. glibc, musl and bionic
// serialise every `dlsym`/`dlinfo`/`dlclose` on a handle under the loader's
// own lock, so the token may be used and released from any thread.
unsafe impl Send for Handle {}
// SAFETY: see above; `&Handle` only allows `dlsym`/`dlinfo`, both thread-safe.
unsafe impl Sync for Handle {}

impl Handle {
    /// `dlopen(path, RTLD_NOW | RTLD_LOCAL)`; on failure the `dlerror()` text.
    pub(super) fn open(path: &CStr) -> Result<Handle> {
        // SAFETY: `path` is a valid NUL-terminated string for the call. The
        // object's initialisers run here: that the bytes are a trustworthy
        // library is the documented precondition of the system backend.
        let raw = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        match NonNull::new(raw) {
            Some(h) => Ok(Handle(h)),
            None => Err(Error::Dlopen {
                message: last_dlerror(),
            }),
        }
    }

    #[cfg(target_os = "linux")]
    /// The object already loaded under exactly this name, if any
    /// (`RTLD_NOLOAD`: nothing is loaded; a hit takes one more reference,
    /// which dropping the returned handle gives back).
    pub(super) fn already_loaded(path: &CStr) -> Option<Handle> {
        // SAFETY: as in `open`; with RTLD_NOLOAD nothing is mapped and no
        // initialiser runs.
        let raw = unsafe {
            libc::dlopen(
                path.as_ptr(),
                libc::RTLD_LAZY | libc::RTLD_LOCAL | libc::RTLD_NOLOAD,
            )
        };
        NonNull::new(raw).map(Handle)
    }

    /// Takes ownership of what a `dlopen`-like call (`android_dlopen_ext`,
    /// `fdlopen`) returned; NULL is its failure, with the `dlerror()` text.
    #[cfg(any(target_os = "android", target_os = "freebsd"))]
    pub(super) fn from_raw(raw: *mut c_void) -> Result<Handle> {
        match NonNull::new(raw) {
            Some(h) => Ok(Handle(h)),
            None => Err(Error::Dlopen {
                message: last_dlerror(),
            }),
        }
    }

    pub(super) fn as_ptr(&self) -> *mut c_void {
        self.0.as_ptr()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful `dlopen` and this is its
        // one matching `dlclose`. Symbols borrowed from the image cannot
        // outlive it (`Symbol<'lib, T>`), so nothing of ours still points in.
        unsafe {
            libc::dlclose(self.0.as_ptr());
        }
    }
}

/// This thread's pending `dlerror()` text (glibc and musl keep it per
/// thread, so it is the error of this thread's last failing call).
fn last_dlerror() -> String {
    // SAFETY: `dlerror` has no preconditions.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        return "unknown dlopen error (dlerror() returned nothing)".to_owned();
    }
    // SAFETY: a non-null `dlerror()` result is a NUL-terminated string that
    // stays valid until this thread's next dl* call; it is copied at once.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// Where an object lies in memory.
#[derive(Clone, Copy, Debug)]
pub(super) struct ObjectInfo {
    /// The load bias (`l_addr`, `dlpi_addr`).
    pub(super) base: usize,
    /// The lowest address of its `PT_LOAD`s.
    pub(super) start: usize,
    /// One past the highest address of its `PT_LOAD`s (memory size).
    pub(super) end: usize,
    /// `p_memsz` of its `PT_TLS`, 0 without one.
    pub(super) tls_size: usize,
}

/// The public prefix of `struct link_map` from `<link.h>` (glibc and musl
/// agree on it; the private fields that follow are never touched).
#[cfg(target_os = "linux")]
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const c_void,
    l_next: *mut LinkMap,
    l_prev: *mut LinkMap,
}

#[cfg(target_os = "linux")]
const RTLD_DI_LINKMAP: c_int = 2;

#[cfg(target_os = "linux")]
extern "C" {
    // Declared here rather than taken from `libc`, which only has it for
    // glibc; musl has the same function with the same RTLD_DI_LINKMAP.
    fn dlinfo(handle: *mut c_void, request: c_int, info: *mut c_void) -> c_int;
}

/// Describes the object behind `handle`: its link map names the load bias
/// and the name, `dl_iterate_phdr` then gives its program headers.
#[cfg(target_os = "linux")]
pub(super) fn object_info(handle: &Handle) -> Result<ObjectInfo> {
    let mut map: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: RTLD_DI_LINKMAP writes one `struct link_map *` to the pointer
    // passed, which is `map`, a live local of that type.
    let rc = unsafe {
        dlinfo(
            handle.as_ptr(),
            RTLD_DI_LINKMAP,
            (&mut map as *mut *mut LinkMap).cast(),
        )
    };
    if rc != 0 || map.is_null() {
        return Err(Error::Dlopen {
            message: format!("dlinfo(RTLD_DI_LINKMAP): {}", last_dlerror()),
        });
    }
    // SAFETY: `map` is the loader's link map of an object we hold a
    // reference on, so it stays valid while `handle` lives; only the public
    // `<link.h>` fields are read.
    let (l_addr, l_name) = unsafe { ((*map).l_addr, (*map).l_name) };

    let mut search = Search {
        base: l_addr,
        name: l_name,
        found: None,
    };
    // SAFETY: `find_object` matches the callback type and only reads the
    // `dl_phdr_info` it is handed; `search` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(find_object), (&mut search as *mut Search).cast());
    }
    search.found.ok_or_else(|| Error::Dlopen {
        message: "the loaded object is missing from dl_iterate_phdr".to_owned(),
    })
}

#[cfg(target_os = "linux")]
struct Search {
    base: usize,
    name: *const c_char,
    found: Option<ObjectInfo>,
}

#[cfg(target_os = "linux")]
unsafe extern "C" fn find_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `dl_iterate_phdr` passes a valid `dl_phdr_info` for the
    // duration of the call, and `data` is the `&mut Search` given by
    // `object_info`, not aliased elsewhere during the iteration.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    if info.dlpi_addr as usize != search.base || !same_name(info.dlpi_name, search.name) {
        return 0;
    }
    search.found = summarize(info);
    1
}

/// Where the object `info` describes lies, from its program headers.
#[cfg(unix)]
fn summarize(info: &libc::dl_phdr_info) -> Option<ObjectInfo> {
    let base = info.dlpi_addr as usize;
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of
        // the object, mapped for as long as the object is loaded.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let (mut start, mut end, mut tls_size) = (usize::MAX, 0usize, 0usize);
    for ph in phdrs {
        match ph.p_type {
            libc::PT_LOAD => {
                let lo = base.wrapping_add(ph.p_vaddr as usize);
                let hi = lo.saturating_add(ph.p_memsz as usize);
                start = start.min(lo);
                end = end.max(hi);
            }
            libc::PT_TLS => tls_size = ph.p_memsz as usize,
            _ => {}
        }
    }
    (start < end).then_some(ObjectInfo {
        base,
        start,
        end,
        tls_size,
    })
}

/// Every loaded object, as (load bias, program headers' address): together
/// they tell objects apart. Taken before a `dlopen`-like call that cannot
/// report its object's link map, to find the object afterwards.
#[cfg(not(target_os = "linux"))]
pub(super) fn loaded_objects() -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `collect` matches the callback type and only reads the
    // `dl_phdr_info` it is handed; `out` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<(usize, usize)>).cast());
    }
    out
}

#[cfg(not(target_os = "linux"))]
unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: as in `find_object`; `data` is the `&mut Vec` of
    // `loaded_objects`.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<(usize, usize)>>()) };
    out.push((info.dlpi_addr as usize, info.dlpi_phdr as usize));
    0
}

/// The object a `dlopen`-like call just loaded: the first object (in load
/// order, where the loader puts the requested object before the
/// dependencies it pulled in) that was not loaded in `before`.
#[cfg(not(target_os = "linux"))]
pub(super) fn object_info_since(before: &[(usize, usize)]) -> Result<ObjectInfo> {
    struct Since<'a> {
        before: &'a [(usize, usize)],
        found: Option<ObjectInfo>,
    }
    unsafe extern "C" fn first_new(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: as in `find_object`; `data` is the `&mut Since` below.
        let (info, since) = unsafe { (&*info, &mut *data.cast::<Since<'_>>()) };
        let key = (info.dlpi_addr as usize, info.dlpi_phdr as usize);
        if since.before.contains(&key) {
            return 0;
        }
        since.found = summarize(info);
        1
    }
    let mut since = Since {
        before,
        found: None,
    };
    // SAFETY: as in `loaded_objects`.
    unsafe {
        libc::dl_iterate_phdr(Some(first_new), (&mut since as *mut Since<'_>).cast());
    }
    since.found.ok_or_else(|| Error::Dlopen {
        message: "the loaded object is missing from dl_iterate_phdr \
                  (it was already loaded under another name)"
            .to_owned(),
    })
}

/// The loader hands out the same `l_name` pointer in the link map and in
/// `dl_phdr_info`; compare the strings too, for loaders that copy it.
#[cfg(target_os = "linux")]
fn same_name(a: *const c_char, b: *const c_char) -> bool {
    if a == b {
        return true;
    }
    if a.is_null() || b.is_null() {
        return false;
    }
    // SAFETY: both are non-null NUL-terminated names owned by the loader
    // for loaded objects, valid during the iteration.
    unsafe { CStr::from_ptr(a) == CStr::from_ptr(b) }
}

/// Names up to this length are NUL-terminated on the stack, not the heap.
const STACK_NAME: usize = 256;

/// `dlsym(handle, name)`, kept only if the definition lies in this object
/// itself: `dlsym` on a handle also searches the object's dependencies
/// (`dlsym(libz, "malloc")` is libc's `malloc`).
pub(super) fn lookup(handle: &Handle, info: &ObjectInfo, name: &[u8]) -> Option<NonNull<c_void>> {
    if name.contains(&0) {
        return None;
    }
    let addr = if name.len() < STACK_NAME {
        let mut buf = [0u8; STACK_NAME];
        buf[..name.len()].copy_from_slice(name);
        // `buf[name.len()]` is the terminating NUL (the buffer starts zeroed).
        dlsym(handle, buf.as_ptr().cast())
    } else {
        let owned = CString::new(name).ok()?;
        dlsym(handle, owned.as_ptr())
    }?;
    defined_here(handle, info, addr)
}

/// `addr` if it lies in the object itself (or this thread's block of its
/// thread-local storage), not in one of its dependencies.
fn defined_here(
    handle: &Handle,
    info: &ObjectInfo,
    addr: NonNull<c_void>,
) -> Option<NonNull<c_void>> {
    let a = addr.as_ptr() as usize;
    // `<=`: a zero-sized marker such as `_end` sits exactly at the end.
    if a >= info.start && a <= info.end {
        return Some(addr);
    }
    if info.tls_size > 0 && in_own_tls(handle, info, a) {
        return Some(addr);
    }
    None
}

/// `dlvsym(handle, name, version)`, kept only if defined in this object.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn lookup_versioned(
    handle: &Handle,
    info: &ObjectInfo,
    name: &[u8],
    version: &[u8],
) -> Option<NonNull<c_void>> {
    let name = CString::new(name).ok()?;
    let version = CString::new(version).ok()?;
    // SAFETY: `handle` is live; `name` and `version` are NUL-terminated.
    let addr =
        NonNull::new(unsafe { libc::dlvsym(handle.as_ptr(), name.as_ptr(), version.as_ptr()) })?;
    defined_here(handle, info, addr)
}

/// Only glibc's `dlvsym` is used: elsewhere no version can be asked for.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn lookup_versioned(
    _handle: &Handle,
    _info: &ObjectInfo,
    _name: &[u8],
    _version: &[u8],
) -> Option<NonNull<c_void>> {
    None
}

fn dlsym(handle: &Handle, name: *const c_char) -> Option<NonNull<c_void>> {
    // SAFETY: `handle` is live and `name` is NUL-terminated (built by
    // `lookup`). A NULL result is "not found" (or a symbol whose value is
    // NULL, which cannot be used either).
    NonNull::new(unsafe { libc::dlsym(handle.as_ptr(), name) })
}

/// Whether `addr` lies in this thread's block of the object's thread-local
/// storage (`dlsym` of a TLS variable returns the calling thread's copy).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn in_own_tls(handle: &Handle, info: &ObjectInfo, addr: usize) -> bool {
    let mut block: *mut c_void = std::ptr::null_mut();
    // SAFETY: RTLD_DI_TLS_DATA writes one pointer (this thread's block of
    // the object's TLS, or NULL if not allocated yet) to `block`.
    let rc = unsafe {
        dlinfo(
            handle.as_ptr(),
            libc::RTLD_DI_TLS_DATA,
            (&mut block as *mut *mut c_void).cast(),
        )
    };
    let start = block as usize;
    rc == 0 && !block.is_null() && addr >= start && addr < start.saturating_add(info.tls_size)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn in_own_tls(_handle: &Handle, _info: &ObjectInfo, _addr: usize) -> bool {
    false
}
