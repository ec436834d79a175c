//! The process-wide list of images memdl loaded: what `dladdr`,
//! `dl_iterate_phdr` and `dlsym` from loaded code, and [`find_symbol`] and
//! [`images`] for Rust callers, consult.
//!
//! The lock is held only to add, remove or copy out entries, never across a
//! load or a callback.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::elf::Phdr;
use crate::runtime::image::Loaded;

static IMAGES: RwLock<Vec<Arc<Loaded>>> = RwLock::new(Vec::new());
/// `dlpi_adds` / `dlpi_subs`: how many images were ever added and removed.
static ADDS: AtomicU64 = AtomicU64::new(0);
static SUBS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn register(image: &Arc<Loaded>) {
    IMAGES
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::clone(image));
    ADDS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn unregister(image: &Arc<Loaded>) {
    let mut images = IMAGES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = images.iter().position(|x| Arc::ptr_eq(x, image)) {
        images.remove(i);
        SUBS.fetch_add(1, Ordering::Relaxed);
    }
}

/// The loaded image whose address range contains `addr`.
pub(crate) fn containing(addr: usize) -> Option<Arc<Loaded>> {
    IMAGES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|i| i.contains(addr))
        .cloned()
}

/// Every loaded image, in load order; the entries stay valid after the
/// lock is released.
pub(crate) fn snapshot() -> Vec<Arc<Loaded>> {
    IMAGES.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// (images ever added, images ever removed).
pub(crate) fn counts() -> (u64, u64) {
    (ADDS.load(Ordering::Relaxed), SUBS.load(Ordering::Relaxed))
}

/// What [`find_symbol`] knows about an address inside a loaded image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolInfo {
    /// The image's load bias.
    pub image_base: usize,
    /// The image's `DT_SONAME`, or `memdl:<address>`.
    pub image_name: String,
    /// The symbol containing the address, if the dynamic symbol table has one.
    pub symbol: Option<String>,
    /// Address of that symbol (0 without one).
    pub symbol_address: usize,
    /// `addr - symbol_address`, or `addr - image_base` without a symbol.
    pub offset: usize,
}

/// Finds which memdl-loaded image, and which of its symbols, contains
/// `addr`: `dladdr` for images the system loader does not know about.
///
/// ```no_run
/// # fn f(img: &memdl::ElfImage) -> Result<(), memdl::Error> {
/// use memdl::Library;
/// let add = img.symbol_address(b"add")?;
/// let info = memdl::find_symbol(add).unwrap();
/// assert_eq!(info.symbol.as_deref(), Some("add"));
/// # Ok(()) }
/// ```
pub fn find_symbol(addr: *const c_void) -> Option<SymbolInfo> {
    let addr = addr as usize;
    let image = containing(addr)?;
    let image_name = image.name.to_string_lossy().into_owned();
    let vaddr = addr.wrapping_sub(image.bias) as u64;
    Some(match image.symbols.containing(vaddr) {
        Some((sym, name)) => {
            let symbol_address = image.bias.wrapping_add(sym.value as usize);
            SymbolInfo {
                image_base: image.bias,
                image_name,
                symbol: Some(String::from_utf8_lossy(name).into_owned()),
                symbol_address,
                offset: addr - symbol_address,
            }
        }
        None => SymbolInfo {
            image_base: image.bias,
            image_name,
            symbol: None,
            symbol_address: 0,
            offset: addr - image.bias,
        },
    })
}

/// One loaded image as [`images`] reports it: what `dl_iterate_phdr` gives
/// for objects of the system loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Load bias: runtime address = `base + p_vaddr`.
    pub base: usize,
    /// The image's `DT_SONAME`, or `memdl:<address>` without one.
    pub name: String,
    /// Every program header as the file has it (`dlpi_phdr`).
    pub program_headers: Vec<Phdr>,
}

/// Every image memdl has loaded and not yet dropped, in load order.
pub fn images() -> Vec<ImageInfo> {
    snapshot()
        .iter()
        .map(|i| ImageInfo {
            base: i.bias,
            name: i.name.to_string_lossy().into_owned(),
            program_headers: i.phdrs.clone(),
        })
        .collect()
}
