//! # memdl: load ELF shared objects straight from memory
//!
//! Two backends with one API:
//!
//! * [`ElfImage`] is memdl's own loader: it validates the file, reserves one
//!   address range, copies each `PT_LOAD`, applies relocations, resolves
//!   imports through a chain the caller controls, applies RELRO and final
//!   protections (never writable and executable at once) and runs the
//!   initialisers. Dropping it runs the finalisers and unmaps everything.
//! * [`SystemImage`] hands the same bytes to the platform's loader without a
//!   file on disk (`memfd_create` + `dlopen("/proc/self/fd/N")` on Linux).
//!
//! ```no_run
//! # fn main() -> Result<(), memdl::Error> {
//! let bytes = std::fs::read("libexample.so").unwrap();
//! // SAFETY: loading runs the library's initialisers; this one is trusted.
//! let img = unsafe { memdl::ElfImage::load(&bytes)? };
//! let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
//!     unsafe { img.get("add")? };
//! assert_eq!(unsafe { add(2, 3) }, 5);
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod arch;
mod elf;
mod error;
mod hooks;
mod load;
mod map;
mod options;
mod runtime;
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
mod sealed;
mod symbol;
mod system;

pub use elf::Phdr as ProgramHeader;
pub use error::{Error, Result};
pub use options::{Dependency, Limits, Options, SystemStrategy};
pub use runtime::image::{ElfImage, Placement, SegmentInfo};
pub use runtime::registry::{find_symbol, images, ImageInfo, SymbolInfo};
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub use sealed::SealedElf;
pub use symbol::{Library, Symbol};
pub use system::{SystemImage, SystemStrategyUsed};
