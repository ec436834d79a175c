//! SystemImage: the platform's own loader, fed without a file on disk.
//! (Work in progress.)

use std::ffi::c_void;

use crate::error::{Error, Result};
use crate::options::Options;
use crate::symbol::{Library, Symbol};

/// A shared object loaded by the platform's loader from memory.
#[derive(Debug)]
pub struct SystemImage {
    base: usize,
}

impl SystemImage {
    /// Loads `bytes` through the system loader with default [`Options`].
    pub fn load(bytes: &[u8]) -> Result<Self> {
        Self::load_with(bytes, &Options::default())
    }

    /// Loads `bytes` under `options` (only the system strategy applies).
    pub fn load_with(_bytes: &[u8], _options: &Options) -> Result<Self> {
        Err(Error::Unsupported("system backend not written yet"))
    }

    /// Looks up an exported symbol and types it as `T`.
    ///
    /// # Safety
    /// `T` must be the symbol's true type.
    pub unsafe fn get<T>(&self, name: impl AsRef<[u8]>) -> Result<Symbol<'_, T>> {
        // SAFETY: forwarded caller promise.
        unsafe { Library::get(self, name) }
    }
}

impl Library for SystemImage {
    fn symbol_address(&self, name: &[u8]) -> Result<*const c_void> {
        Err(Error::SymbolNotFound {
            name: crate::symbol::lossy(name),
        })
    }
    fn base_address(&self) -> usize {
        self.base
    }
    fn backend(&self) -> &'static str {
        "memfd+dlopen"
    }
}
