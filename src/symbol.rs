//! Typed, lifetime-checked symbols and the trait both backends implement.

use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::error::{Error, Result};

/// A symbol of a loaded image, typed by the caller.
///
/// `Symbol<'lib, T>` borrows the image it came from, so it cannot outlive it:
///
/// ```compile_fail
/// # fn f(bytes: &[u8]) -> Result<(), memdl::Error> {
/// use memdl::Library;
/// let add = {
///     let img = memdl::ElfImage::load(bytes)?;
///     let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
///         unsafe { img.get("add")? };
///     add // error: `img` does not live long enough
/// };
/// # Ok(()) }
/// ```
///
/// It dereferences to `T`. For a function, `T` is an `unsafe extern "C" fn`
/// type; for data, `T` is `*const U` / `*mut U` (the symbol's address).
pub struct Symbol<'lib, T> {
    value: T,
    addr: usize,
    _lib: PhantomData<&'lib ()>,
}

impl<T> Symbol<'_, T> {
    /// Builds a symbol of type `T` at `addr`.
    ///
    /// # Safety
    /// `T` must be a type for which the address `addr` is a valid value (a
    /// function pointer of the right signature, or a raw pointer).
    pub(crate) unsafe fn from_addr(addr: usize) -> Result<Self> {
        if std::mem::size_of::<T>() != std::mem::size_of::<usize>() {
            return Err(Error::SymbolTypeSize {
                size: std::mem::size_of::<T>(),
            });
        }
        // SAFETY: sizes are equal (checked above) and the caller promises an
        // address is a valid `T`.
        let value = unsafe { std::mem::transmute_copy::<usize, T>(&addr) };
        Ok(Symbol {
            value,
            addr,
            _lib: PhantomData,
        })
    }

    /// The symbol's address.
    pub fn as_ptr(&self) -> *const c_void {
        self.addr as *const c_void
    }
}

impl<T> Deref for Symbol<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Copy> Clone for Symbol<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Copy> Copy for Symbol<'_, T> {}

impl<T> fmt::Debug for Symbol<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({:#x})", self.addr)
    }
}

// SAFETY: a Symbol is an address plus a `T`; it is as thread-safe as `T`
// the caller chose (function pointers are Send + Sync; raw pointers are
// shared with the same caveats as libloading's symbols).
unsafe impl<T: Send> Send for Symbol<'_, T> {}
// SAFETY: see above.
unsafe impl<T: Sync> Sync for Symbol<'_, T> {}

/// What both backends ([`crate::ElfImage`] and [`crate::SystemImage`]) offer,
/// so tests and tools can be written once for both.
pub trait Library: Send + Sync {
    /// The address of the exported symbol `name` (as the backend's own lookup
    /// finds it), or [`Error::SymbolNotFound`].
    fn symbol_address(&self, name: &[u8]) -> Result<*const c_void>;

    /// The address the image was loaded at (its load bias).
    fn base_address(&self) -> usize;

    /// A short name of the backend, for reports ("memdl", "memfd+dlopen", ...).
    fn backend(&self) -> &'static str;

    /// Looks up `name` and returns it typed as `T`.
    ///
    /// # Safety
    /// `T` must be the symbol's true type: a function pointer with the exact
    /// signature and ABI, or a raw pointer to data of the right type. Calling
    /// through a wrong type is undefined behaviour.
    unsafe fn get<T>(&self, name: impl AsRef<[u8]>) -> Result<Symbol<'_, T>>
    where
        Self: Sized,
    {
        let addr = self.symbol_address(name.as_ref())? as usize;
        // SAFETY: the caller promises `T` matches the symbol.
        unsafe { Symbol::from_addr(addr) }
    }
}

/// A readable name from a byte string, for errors.
pub(crate) fn lossy(name: &[u8]) -> String {
    // Names are nearly always valid UTF-8, which `from_utf8` checks a word
    // at a time; the lossy conversion walks a byte at a time.
    match std::str::from_utf8(name) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(name).into_owned(),
    }
}
