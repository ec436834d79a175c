//! The C API of memdl: `libmemdl.a`, `libmemdl.so` and `include/memdl.h`.
//!
//! The header is generated from this file by cbindgen (doc comments become
//! the header's documentation); `tests/header.rs` fails when the committed
//! header and this file disagree.
//!
//! Every entry point catches panics (none may unwind into C), turns a
//! `memdl::Error` into a negative `MEMDL_ERR_*` code, and keeps its full
//! text for `memdl_last_error` in a thread-local string.

#![deny(unsafe_op_in_unsafe_fn)]
// The C names are the contract (include/memdl.h), not Rust style.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use memdl_rs::{ElfImage, Error, Library, Options, SealedElf, SystemImage};

/// Success.
pub const MEMDL_OK: c_int = 0;
/// An argument was invalid: a NULL pointer, a zero length, a negative or
/// closed file descriptor, options the chosen backend cannot honour, or a
/// descriptor given as sealed that lacks a seal.
pub const MEMDL_ERR_INVALID_ARGUMENT: c_int = -1;
/// The file is not a well-formed ELF shared object: truncated, bad magic,
/// inconsistent program headers, dynamic section or tables, relocations
/// outside the image or into read-only memory.
pub const MEMDL_ERR_MALFORMED: c_int = -2;
/// A well-formed file that memdl does not load: another class, byte order
/// or machine, not a shared object, writable and executable segments,
/// text relocations, an unsupported relocation type or TLS model.
pub const MEMDL_ERR_UNSUPPORTED: c_int = -3;
/// Imports that no resolver satisfied; the message names every one of them.
pub const MEMDL_ERR_UNRESOLVED: c_int = -4;
/// A `DT_NEEDED` library could not be opened.
pub const MEMDL_ERR_NEEDED_LIBRARY: c_int = -5;
/// The file exceeds one of memdl's limits (size, counts of program headers,
/// relocations, symbols, TLS, needed libraries).
pub const MEMDL_ERR_LIMIT: c_int = -6;
/// A system call failed (reading the file, mapping memory, creating a
/// memfd); the message has the operating system's error text.
pub const MEMDL_ERR_IO: c_int = -7;
/// The system loader (`dlopen`) refused the image; the message has its
/// `dlerror()` text.
pub const MEMDL_ERR_SYSTEM_LOADER: c_int = -8;
/// A symbol lookup failed (not exported, or its value lies outside the
/// image).
pub const MEMDL_ERR_SYMBOL: c_int = -9;
/// An error this version of the C API does not classify; the message says
/// what it is.
pub const MEMDL_ERR_OTHER: c_int = -10;
/// A bug in memdl: a Rust panic, stopped at the C boundary.
pub const MEMDL_ERR_INTERNAL: c_int = -11;

/// Options for loading an image: host symbols, the host-lookup policy and
/// the backend. Create with `memdl_options_new`, free with
/// `memdl_options_free`. One `memdl_options` may serve many loads, also
/// from several threads at once, as long as none of them changes it.
#[derive(Default)]
pub struct memdl_options {
    options: Options,
    /// Whether any host symbol was added (the system loader cannot use them).
    has_symbols: bool,
    deny_host_lookups: bool,
    system: bool,
}

/// A loaded image (either backend). Loaded by `memdl_load` or
/// `memdl_load_fd`, unloaded by `memdl_close`.
pub struct memdl_image {
    backend: Backend,
}

enum Backend {
    Elf(ElfImage),
    System(SystemImage),
}

impl memdl_image {
    fn library(&self) -> &dyn Library {
        match &self.backend {
            Backend::Elf(image) => image,
            Backend::System(image) => image,
        }
    }
}

/// Why a call failed: its code and the text `memdl_last_error` gives.
struct Failure {
    code: c_int,
    message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Self {
        Failure {
            code: MEMDL_ERR_INVALID_ARGUMENT,
            message: message.into(),
        }
    }

    /// Keeps the message for this thread's `memdl_last_error`; returns the code.
    fn record(self) -> c_int {
        // A NUL byte (from a name inside a hostile file) would end the C
        // string early; show it instead.
        let message =
            CString::new(self.message.replace('\0', "\\0")).expect("NUL bytes were replaced");
        // `try_with`: during thread teardown the slot may be gone already.
        let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
        self.code
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            code: code_of(&error),
            message: error.to_string(),
        }
    }
}

/// The `MEMDL_ERR_*` family of an error.
fn code_of(error: &Error) -> c_int {
    use Error::*;
    match error {
        Truncated { .. }
        | BadMagic
        | UnsupportedVersion(_)
        | BadProgramHeaderSize(_)
        | BadProgramHeaderCount(_)
        | BadSegment { .. }
        | NoLoadSegments
        | NoDynamicSegment
        | BadDynamic { .. }
        | TableOutOfBounds { .. }
        | TableInWritableSegment { .. }
        | BadEntrySize { .. }
        | BadTableSize { .. }
        | BadHashTable { .. }
        | BadStringOffset { .. }
        | SymbolIndexOutOfRange { .. }
        | RelocationOutOfBounds { .. }
        | RelocationInReadOnly { .. } => MEMDL_ERR_MALFORMED,
        UnsupportedClass(_)
        | UnsupportedEncoding(_)
        | NotSharedObject(_)
        | WrongMachine { .. }
        | WritableAndExecutable { .. }
        | TextRelocations
        | UnsupportedRelocation { .. }
        | StaticTls { .. }
        | ImportedTls { .. }
        | Unsupported(_) => MEMDL_ERR_UNSUPPORTED,
        UnresolvedSymbols { .. } => MEMDL_ERR_UNRESOLVED,
        NeededLibrary { .. } => MEMDL_ERR_NEEDED_LIBRARY,
        LimitExceeded { .. } => MEMDL_ERR_LIMIT,
        Map { .. } | Io { .. } => MEMDL_ERR_IO,
        Dlopen { .. } => MEMDL_ERR_SYSTEM_LOADER,
        SymbolNotFound { .. } | SymbolOutOfBounds { .. } | SymbolTypeSize { .. } => {
            MEMDL_ERR_SYMBOL
        }
        NotSealed { .. } => MEMDL_ERR_INVALID_ARGUMENT,
        // `Error` is non_exhaustive: a variant added later is still an error.
        _ => MEMDL_ERR_OTHER,
    }
}

thread_local! {
    /// This thread's last failure, for `memdl_last_error`.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Runs an entry point's body with panics caught: unwinding into C is
/// undefined behaviour (and an abort since Rust 1.81).
fn catch<T>(body: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Failure {
            code: MEMDL_ERR_INTERNAL,
            message: format!("internal error in memdl (please report): {what}"),
        })
    })
}

/// [`catch`] for the entry points that return a status code.
fn status(body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    match catch(body) {
        Ok(()) => MEMDL_OK,
        Err(failure) => failure.record(),
    }
}

/// The options behind a possibly NULL pointer, mutably.
///
/// # Safety
/// `options` is NULL or a live `memdl_options` no other thread uses.
unsafe fn options_mut<'a>(options: *mut memdl_options) -> Result<&'a mut memdl_options, Failure> {
    // SAFETY: the caller's promise.
    unsafe { options.as_mut() }.ok_or_else(|| Failure::invalid("options is NULL"))
}

/// A C string argument as bytes.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn c_str<'a>(s: *const c_char, what: &str) -> Result<&'a [u8], Failure> {
    if s.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// A close-on-exec duplicate of the open descriptor `fd`, owned here.
///
/// # Safety
/// The caller does not close `fd` during the call.
unsafe fn duplicate(fd: c_int) -> Result<OwnedFd, Failure> {
    // SAFETY: the caller's promise.
    let fd = unsafe { open_fd(fd) }?;
    fd.try_clone_to_owned().map_err(|source| {
        Error::Io {
            op: "duplicate file descriptor",
            source,
        }
        .into()
    })
}

/// Runs `make` and stores the descriptor it returns in `*out_fd`, which
/// is -1 after any failure. The descriptor becomes the caller's.
///
/// # Safety
/// `out_fd` is NULL or writable.
unsafe fn fd_into(out_fd: *mut c_int, make: impl FnOnce() -> Result<OwnedFd, Failure>) -> c_int {
    if out_fd.is_null() {
        return Failure::invalid("out_fd is NULL").record();
    }
    // SAFETY: non-NULL and writable (the caller's promise).
    unsafe { out_fd.write(-1) };
    status(|| {
        let fd = make()?;
        // SAFETY: as above.
        unsafe { out_fd.write(fd.into_raw_fd()) };
        Ok(())
    })
}

/// Creates default options: the custom loader, no host symbols, host
/// lookups allowed, default limits. Returns NULL only if memory ran out.
#[no_mangle]
pub extern "C" fn memdl_options_new() -> *mut memdl_options {
    catch(|| Ok(Box::into_raw(Box::default()))).unwrap_or_else(|failure| {
        failure.record();
        ptr::null_mut()
    })
}

/// Frees options made by `memdl_options_new`. Images loaded with them are
/// not affected. NULL is a no-op.
///
/// # Safety
/// `options` is NULL or a pointer from `memdl_options_new` not freed yet,
/// which no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn memdl_options_free(options: *mut memdl_options) {
    if options.is_null() {
        return;
    }
    let _ = status(|| {
        // SAFETY: the caller passes ownership of a box from memdl_options_new.
        drop(unsafe { Box::from_raw(options) });
        Ok(())
    });
}

/// Provides `name` to loaded images' imports at `address`. Host symbols are
/// looked up first, before the process's global scope; adding a name again
/// replaces its address. Returns 0, or `MEMDL_ERR_INVALID_ARGUMENT` for a
/// NULL `options`, `name` or `address`, or an empty `name`.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the
/// call; `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn memdl_options_add_symbol(
    options: *mut memdl_options,
    name: *const c_char,
    address: *mut c_void,
) -> c_int {
    status(|| {
        // SAFETY: the caller's promises.
        let options = unsafe { options_mut(options) }?;
        // SAFETY: the caller's promise.
        let name = unsafe { c_str(name, "symbol name") }?;
        if name.is_empty() {
            return Err(Failure::invalid("symbol name is empty"));
        }
        if address.is_null() {
            // An import bound to address 0 would crash when used.
            return Err(Failure::invalid(format!(
                "address of symbol {} is NULL",
                String::from_utf8_lossy(name)
            )));
        }
        options.options = std::mem::take(&mut options.options).symbol(name, address);
        options.has_symbols = true;
        Ok(())
    })
}

/// Sandboxes the image's imports: they may only be satisfied by
/// `memdl_options_add_symbol`; the process's global scope is not searched
/// and no `DT_NEEDED` library is opened. A library importing anything else
/// is refused with `MEMDL_ERR_UNRESOLVED` before any of its code runs, and
/// `memdl_last_error` names every such import. Returns 0, or
/// `MEMDL_ERR_INVALID_ARGUMENT` for NULL.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn memdl_options_deny_host_lookups(options: *mut memdl_options) -> c_int {
    status(|| {
        // SAFETY: the caller's promise.
        let options = unsafe { options_mut(options) }?;
        options.options = std::mem::take(&mut options.options).deny_host_lookups();
        options.deny_host_lookups = true;
        Ok(())
    })
}

/// Loads with the platform's own loader instead of memdl's (on Linux a
/// sealed memfd opened by `dlopen("/proc/self/fd/N")`), still without a
/// file on disk, behind the same calls (`memdl_sym`, `memdl_close`).
/// The system loader resolves imports itself: a load with host symbols or
/// host lookups denied is refused (`MEMDL_ERR_INVALID_ARGUMENT`) rather
/// than silently not sandboxed. Glibc trusts its input: give this backend
/// only libraries you would also `dlopen` from disk. Returns 0, or
/// `MEMDL_ERR_INVALID_ARGUMENT` for NULL.
///
/// # Safety
/// `options` is NULL or live and not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn memdl_options_use_system_loader(options: *mut memdl_options) -> c_int {
    status(|| {
        // SAFETY: the caller's promise.
        let options = unsafe { options_mut(options) }?;
        options.system = true;
        Ok(())
    })
}

/// Runs `load` with the options (defaults for NULL) and which backend
/// they chose, and stores the image in `*out`: NULL after any failure.
///
/// # Safety
/// `options` is NULL or a live `memdl_options`; `out` is NULL or writable.
unsafe fn load_into(
    options: *const memdl_options,
    out: *mut *mut memdl_image,
    load: impl FnOnce(&Options, bool) -> Result<Backend, Failure>,
) -> c_int {
    if out.is_null() {
        return Failure::invalid("out is NULL").record();
    }
    // SAFETY: `out` is non-NULL and writable (the caller's promise). NULL
    // first, so it is NULL after any failure, a panic included.
    unsafe { out.write(ptr::null_mut()) };
    status(|| {
        let defaults;
        // SAFETY: the caller's promise: NULL or live.
        let options = match unsafe { options.as_ref() } {
            Some(options) => options,
            None => {
                defaults = memdl_options::default();
                &defaults
            }
        };
        if options.system && (options.has_symbols || options.deny_host_lookups) {
            return Err(Failure::invalid(
                "the system loader resolves imports itself: it cannot use host \
                 symbols nor deny host lookups",
            ));
        }
        let backend = load(&options.options, options.system)?;
        let image = Box::into_raw(Box::new(memdl_image { backend }));
        // SAFETY: checked non-NULL and writable above.
        unsafe { out.write(image) };
        Ok(())
    })
}

/// `fd`, checked to be an open descriptor.
///
/// # Safety
/// The caller does not close `fd` while the borrow lives.
unsafe fn open_fd<'a>(fd: c_int) -> Result<BorrowedFd<'a>, Failure> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any int is allowed.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Failure::invalid(format!(
            "file descriptor {fd} is not open"
        )));
    }
    // SAFETY: open (checked just now), not -1, and kept open while the
    // borrow lives (the caller's promise).
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Loads the ELF shared object in `bytes[0..len)`. The segments are copied:
/// `bytes` may be freed as soon as the call returns. Loading runs the
/// library's initialisers.
///
/// `options` may be NULL (defaults). Returns 0 and the image in `*out`, or a
/// negative `MEMDL_ERR_*` code with `*out` set to NULL and the reason in
/// `memdl_last_error()`. NULL `bytes` or `out` and a zero `len` are
/// `MEMDL_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `bytes` is NULL or readable for `len` bytes during the call; `options` is
/// NULL or live and not changed during the call; `out` is NULL or writable.
/// The library's initialisers run: load only code you trust to run in this
/// process (`memdl_options_deny_host_lookups` limits what it can import,
/// not what it can do).
#[no_mangle]
pub unsafe extern "C" fn memdl_load(
    bytes: *const c_void,
    len: usize,
    options: *const memdl_options,
    out: *mut *mut memdl_image,
) -> c_int {
    let load = |options: &Options, system: bool| {
        if bytes.is_null() {
            return Err(Failure::invalid("bytes is NULL"));
        }
        if len == 0 || len > isize::MAX as usize {
            return Err(Failure::invalid(format!("len {len} is not a valid size")));
        }
        // SAFETY: non-NULL, at most isize::MAX bytes, readable during the
        // call (the caller's promise); the slice does not outlive the call.
        let bytes = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) };
        // SAFETY (both): loading runs the library's initialisers; the
        // caller chose to trust them (this function's contract).
        Ok(if system {
            Backend::System(unsafe { SystemImage::load_with(bytes, options) }?)
        } else {
            Backend::Elf(unsafe { ElfImage::load_with(bytes, options) }?)
        })
    };
    // SAFETY: `options` and `out` as this function's caller promised.
    unsafe { load_into(options, out, load) }
}

/// Loads the ELF shared object that lies at `offset` in the open file `fd`
/// and is `len` bytes long: a library inside a larger container file, at
/// any offset (segments whose offset allows it are mapped from the file,
/// others copied). `fd` stays the caller's: memdl keeps no reference to it
/// (close it whenever you like), but the file must not change or shrink
/// while the image lives.
///
/// Results as for `memdl_load`. A negative or closed `fd`, a zero `len` or
/// NULL `out` are `MEMDL_ERR_INVALID_ARGUMENT`; a range past the end of the
/// file is `MEMDL_ERR_MALFORMED` (truncated).
///
/// # Safety
/// `fd` is not closed by another thread during the call; `options` is NULL
/// or live and not changed during the call; `out` is NULL or writable. The
/// library's initialisers run, as for `memdl_load`.
#[no_mangle]
pub unsafe extern "C" fn memdl_load_fd(
    fd: c_int,
    offset: u64,
    len: u64,
    options: *const memdl_options,
    out: *mut *mut memdl_image,
) -> c_int {
    let load = |options: &Options, system: bool| {
        // SAFETY: the caller does not close `fd` during the call, and the
        // borrow ends with it (images keep mappings or duplicates, not `fd`).
        let file = unsafe { open_fd(fd) }?;
        if len == 0 {
            return Err(Failure::invalid("len is 0"));
        }
        // SAFETY (both): loading runs the library's initialisers; the
        // caller chose to trust them (this function's contract).
        Ok(if system {
            Backend::System(unsafe { SystemImage::load_fd_with(file, offset, len, options) }?)
        } else {
            Backend::Elf(unsafe { ElfImage::load_fd_with(file, offset, len, options) }?)
        })
    };
    // SAFETY: `options` and `out` as this function's caller promised.
    unsafe { load_into(options, out, load) }
}

/// Copies `bytes[0..len)` into a new anonymous memory file sealed against
/// every change (write, shrink, grow, unsealing): whoever maps it, in this
/// process or another one it is sent to (`memdl_sealed_send`), sees the
/// same bytes. The bytes are not parsed here; loading validates them.
/// Returns 0 and the new descriptor (close-on-exec, the caller's to close)
/// in `*out_fd`, or a negative code with `*out_fd` set to -1.
///
/// # Safety
/// `bytes` is NULL or readable for `len` bytes during the call; `out_fd` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn memdl_seal(bytes: *const c_void, len: usize, out_fd: *mut c_int) -> c_int {
    let seal = || {
        if bytes.is_null() {
            return Err(Failure::invalid("bytes is NULL"));
        }
        if len == 0 || len > isize::MAX as usize {
            return Err(Failure::invalid(format!("len {len} is not a valid size")));
        }
        // SAFETY: non-NULL, at most isize::MAX bytes, readable during the
        // call (the caller's promise); the slice does not outlive the call.
        let bytes = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) };
        Ok(SealedElf::new(bytes)?.into())
    };
    // SAFETY: the caller's promise on `out_fd`.
    unsafe { fd_into(out_fd, seal) }
}

/// Loads the library in `fd`, a sealed memory file from `memdl_seal` or
/// `memdl_sealed_recv`, after checking its seals: a file whose contents
/// could still change is refused (`MEMDL_ERR_INVALID_ARGUMENT`). The custom
/// loader maps its segments from the file without a copy; the system
/// loader opens it directly. `fd` stays the caller's. Results as for
/// `memdl_load`.
///
/// # Safety
/// As for `memdl_load_fd`.
#[no_mangle]
pub unsafe extern "C" fn memdl_load_sealed(
    fd: c_int,
    options: *const memdl_options,
    out: *mut *mut memdl_image,
) -> c_int {
    let load = |options: &Options, system: bool| {
        // SAFETY: the caller does not close `fd` during the call.
        let sealed = SealedElf::from_fd(unsafe { duplicate(fd) }?)?;
        // SAFETY (both): loading runs the library's initialisers; the
        // caller chose to trust them (this function's contract).
        Ok(if system {
            Backend::System(unsafe { sealed.load_system_with(options) }?)
        } else {
            Backend::Elf(unsafe { sealed.load_with(options) }?)
        })
    };
    // SAFETY: `options` and `out` as this function's caller promised.
    unsafe { load_into(options, out, load) }
}

/// Sends the sealed memory file `fd` over the connected Unix socket
/// `socket` (`SCM_RIGHTS`); the receiver calls `memdl_sealed_recv`. A
/// descriptor without every seal is refused (`MEMDL_ERR_INVALID_ARGUMENT`).
/// Both descriptors stay the caller's.
///
/// # Safety
/// Neither descriptor is closed by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn memdl_sealed_send(fd: c_int, socket: c_int) -> c_int {
    status(|| {
        // SAFETY: the caller does not close either during the call.
        let sealed = SealedElf::from_fd(unsafe { duplicate(fd) }?)?;
        // SAFETY: as above.
        sealed.send(unsafe { open_fd(socket) }?)?;
        Ok(())
    })
}

/// Receives a sealed memory file sent by `memdl_sealed_send` on the Unix
/// socket `socket` and checks its seals. Returns 0 and the descriptor
/// (close-on-exec, the caller's to close) in `*out_fd`, or a negative code
/// with `*out_fd` set to -1 (a message without exactly one descriptor, or
/// one without every seal, is `MEMDL_ERR_IO` or
/// `MEMDL_ERR_INVALID_ARGUMENT`; anything received is closed).
///
/// # Safety
/// `socket` is not closed by another thread during the call; `out_fd` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn memdl_sealed_recv(socket: c_int, out_fd: *mut c_int) -> c_int {
    // SAFETY: the caller does not close `socket` during the call.
    let receive = || Ok(SealedElf::recv(unsafe { open_fd(socket) }?)?.into());
    // SAFETY: the caller's promise on `out_fd`.
    unsafe { fd_into(out_fd, receive) }
}

/// The address of the symbol `name` that `image` exports (a function or a
/// data object), or NULL if it has none, with a message naming the symbol
/// in `memdl_last_error()`. NULL `image` or `name` give NULL too.
///
/// May be called from many threads at once on the same image. The address
/// is valid until `memdl_close(image)`.
///
/// # Safety
/// `image` is NULL or a live image (closing it while another thread is in
/// `memdl_sym` or uses an address from it is the caller's bug); `name` is
/// NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn memdl_sym(image: *const memdl_image, name: *const c_char) -> *mut c_void {
    catch(|| {
        // SAFETY: the caller's promise: NULL or live.
        let image = unsafe { image.as_ref() }.ok_or_else(|| Failure::invalid("image is NULL"))?;
        // SAFETY: the caller's promise.
        let name = unsafe { c_str(name, "symbol name") }?;
        let address = image.library().symbol_address(name)?;
        Ok(address.cast_mut())
    })
    .unwrap_or_else(|failure| {
        failure.record();
        ptr::null_mut()
    })
}

/// Unloads an image: runs its finalisers and unmaps it (the system backend
/// `dlclose`s it). Every address `memdl_sym` gave for it becomes invalid.
/// NULL is a no-op.
///
/// # Safety
/// `image` is NULL or a live image from `memdl_load`/`memdl_load_fd`, not
/// closed yet, that no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn memdl_close(image: *mut memdl_image) {
    if image.is_null() {
        return;
    }
    let _ = status(|| {
        // SAFETY: the caller passes ownership of a box from memdl_load*.
        drop(unsafe { Box::from_raw(image) });
        Ok(())
    });
}

/// The message of the calling thread's last failed memdl call (the full
/// error text: a refused sandboxed load lists every missing import, a
/// failed `memdl_sym` names the symbol), or NULL if none failed yet. Valid
/// until the same thread's next memdl call; other threads' failures do
/// not change it.
#[no_mangle]
pub extern "C" fn memdl_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ref().map_or(ptr::null(), |m| m.as_ptr()))
        .unwrap_or(ptr::null())
}
