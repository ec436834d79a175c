//! `STB_GNU_UNIQUE`: one definition per process.
//!
//! C++ compilers mark inline static data and template static members
//! unique, and code relies on every library seeing one instance (RTTI
//! comparisons, `std::` facets' ids, inline variables). The system loader
//! binds every reference to the first definition it met. memdl does the
//! same: a unique symbol an image defines is bound to an existing
//! definition (the system loader's, through the resolver chain, else an
//! earlier memdl image's), and otherwise the image's own becomes the one
//! later memdl images bind to, until it is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

/// name → address of the definition memdl images share. (Names are few:
/// one per unique symbol any loaded C++ library defines.)
static DEFINITIONS: Mutex<Option<HashMap<Vec<u8>, usize>>> = Mutex::new(None);

/// The address references to unique symbol `name` (defined by the image
/// at `own`) bind to: what an earlier memdl image bound to, else
/// `existing()` (the resolver chain: the system loader's), else `own`; it
/// is remembered for later images. A system definition stays remembered:
/// glibc never unloads the first definer of a unique symbol.
pub fn bind(name: &[u8], own: usize, existing: impl FnOnce() -> Option<usize>) -> usize {
    if let Some(addr) = definition(name) {
        return addr;
    }
    let addr = existing().unwrap_or(own);
    let mut defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    *defs
        .get_or_insert_with(HashMap::new)
        .entry(name.to_vec())
        .or_insert(addr)
}

/// The definition of `name` memdl images bound to, if any did: what a
/// lookup of a unique symbol by name gives, as `dlsym` gives glibc's.
pub fn definition(name: &[u8]) -> Option<usize> {
    let defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    defs.as_ref()?.get(name).copied()
}

/// Forgets the definitions that lie in `[start, end)`: an image going away.
pub fn forget(start: usize, end: usize) {
    let mut defs = DEFINITIONS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(map) = defs.as_mut() {
        map.retain(|_, &mut addr| !(start..end).contains(&addr));
    }
}
