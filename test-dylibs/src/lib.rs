//! The test libraries of memdl's own tests and benches: the C, C++ and
//! Rust sources in this directory, compiled by `build.rs` into shared
//! objects in this crate's `OUT_DIR` with the C compiler `cc` picks for the
//! target (`CC_aarch64_unknown_linux_gnu` and friends when cross
//! compiling).
//!
//! memdl uses this crate as a dev-dependency only, so a crate that depends
//! on memdl compiles none of it. Libraries are built for Linux gnu targets
//! only (where the tests run); elsewhere this crate is empty.

#[cfg(memdl_test_dylibs)]
use std::path::PathBuf;

/// The directory holding the built libraries (`libexample.so`, ...).
#[cfg(memdl_test_dylibs)]
pub const LIB_DIR: &str = concat!(env!("OUT_DIR"), "/test-dylibs");

/// Path of a test library by its short name (`"example"` is
/// `libexample.so`).
#[cfg(memdl_test_dylibs)]
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(LIB_DIR).join(format!("lib{name}.so"))
}
