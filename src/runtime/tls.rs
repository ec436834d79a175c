//! Thread-local storage for loaded images (the dynamic TLS models).
//!
//! Each image with a `PT_TLS` segment becomes a *module*: a slot in a
//! process-wide registry plus a generation, encoded together in the module
//! id that `DTPMOD64` relocations and TLS descriptors carry. The ids carry a
//! tag no glibc module id has, so memdl's `__tls_get_addr` can tell its own
//! modules from the system's and forward the rest.
//!
//! A thread's block for a module is allocated on first use (template copied,
//! bss zeroed) and remembered in a thread-local cache. Blocks are owned by
//! the registry entry of their module, so each is freed exactly once:
//! either when its thread exits or when its image is dropped, whichever
//! comes first. A cached pointer is only used while the module id in the
//! request carries the generation it was cached under, so a dropped image's
//! blocks are never reached through a new image in the same slot.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// The tag in the high bits of memdl module ids ("MDL"). glibc numbers its
/// modules from 1 upwards; no process has 2^40 of them.
const TAG: u64 = 0x4d44_4c00_0000_0000;
const TAG_MASK: u64 = 0xffff_ff00_0000_0000;

/// `tls_index` as the psABIs define it: what `__tls_get_addr` receives and
/// what memdl's TLS descriptors point to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TlsIndex {
    pub module: u64,
    pub offset: u64,
}

/// The initialisation image of a module's TLS block.
#[derive(Clone, Copy, Debug)]
struct Template {
    /// Runtime address of `.tdata` (inside the loaded image).
    data: usize,
    filesz: usize,
    memsz: usize,
    align: usize,
    /// Where the block starts relative to an `align`-aligned address
    /// (`p_vaddr % p_align`), so the template's own alignment is kept.
    first_byte: usize,
}

impl Template {
    fn layout(&self) -> Layout {
        // Validated at registration: align is a power of two and the size
        // fits (both bounded by the TLS limit).
        Layout::from_size_align(self.first_byte + self.memsz.max(1), self.align)
            .expect("validated at registration")
    }

    /// Frees a block `allocate_block` handed out for this template.
    ///
    /// # Safety
    /// `block` came from `allocate_block` for a module with this template
    /// and is freed only once.
    unsafe fn free(&self, block: usize) {
        // SAFETY: the allocation starts `first_byte` before the block and
        // was made with `self.layout()` (the caller's promise).
        unsafe { dealloc((block - self.first_byte) as *mut u8, self.layout()) };
    }
}

struct Module {
    generation: u32,
    template: Template,
    /// Every live block of this module: (owning thread's cache id, block
    /// address as handed out, i.e. allocation start + `first_byte`).
    blocks: Vec<(u64, usize)>,
}

struct Registry {
    slots: Vec<Option<Module>>,
    next_generation: u32,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    slots: Vec::new(),
    next_generation: 1,
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock cannot leave the registry half-updated
    // in a way that matters more than losing TLS entirely.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode(slot: usize, generation: u32) -> u64 {
    TAG | (u64::from(generation) << 20) | slot as u64
}

fn decode(module: u64) -> Option<(usize, u32)> {
    (module & TAG_MASK == TAG).then_some((
        (module & 0xf_ffff) as usize,
        ((module >> 20) & 0xf_ffff) as u32,
    ))
}

/// A registered TLS module, unregistered (and every thread's block for it
/// freed) on drop.
#[derive(Debug)]
pub struct TlsModule {
    slot: usize,
    generation: u32,
}

/// Where an image's own TLS block lives.
#[derive(Debug)]
pub enum OwnTls {
    /// memdl's dynamic TLS: a block per thread on first use.
    Dynamic(TlsModule),
    /// The system loader's static TLS area (the image has initial-exec
    /// TLS, `DF_STATIC_TLS`): one fixed offset from the thread pointer.
    Static(crate::runtime::tls_static::StaticTlsBlock),
}

impl OwnTls {
    /// The module id `__tls_get_addr` takes for this block.
    pub fn module(&self) -> u64 {
        match self {
            OwnTls::Dynamic(m) => m.id(),
            OwnTls::Static(s) => s.module,
        }
    }

    /// The block's offset from the thread pointer, if it is static.
    pub fn tp_offset(&self) -> Option<i64> {
        match self {
            OwnTls::Dynamic(_) => None,
            OwnTls::Static(s) => Some(s.tp_offset),
        }
    }

    /// This thread's address of `offset` in the block.
    pub fn address(&self, offset: u64) -> Option<usize> {
        match self {
            OwnTls::Dynamic(m) => block_address(&TlsIndex {
                module: m.id(),
                offset,
            }),
            OwnTls::Static(s) => Some(
                crate::runtime::tls_static::thread_pointer()
                    .wrapping_add(s.tp_offset as usize)
                    .wrapping_add(offset as usize),
            ),
        }
    }
}

/// An image's thread-local storage: its own block (if it has `PT_TLS`)
/// and the arguments of its TLS descriptors, for its own variables and for
/// other modules'.
#[derive(Debug, Default)]
pub struct ImageTls {
    /// The image's own block.
    pub own: Option<OwnTls>,
    /// The own block goes to static TLS once the image is relocated (its
    /// template may hold relocated pointers): until then, relocations
    /// that need its module id or thread-pointer offset wait (see the
    /// pipeline's relocation phase).
    pub static_pending: bool,
    /// Boxed: relocated GOT entries point at them, so they must not move
    /// when the Vec grows.
    #[allow(clippy::vec_box)]
    descriptors: Vec<Box<TlsIndex>>,
}

impl ImageTls {
    /// A stable `tls_index` for a TLS descriptor of variable `offset` in
    /// module `module` (memdl's or the system loader's).
    pub fn descriptor(&mut self, module: u64, offset: u64) -> *const TlsIndex {
        let b = Box::new(TlsIndex { module, offset });
        let p: *const TlsIndex = &*b;
        self.descriptors.push(b);
        p
    }

    /// Live blocks of the image's dynamic TLS across all threads.
    pub fn live_blocks(&self) -> usize {
        match &self.own {
            Some(OwnTls::Dynamic(m)) => m.live_blocks(),
            _ => 0,
        }
    }
}

impl TlsModule {
    /// Registers a module whose template is at runtime address `data`.
    pub fn register(data: usize, filesz: u64, memsz: u64, align: u64, vaddr: u64) -> Result<Self> {
        let align = align.max(1);
        if !align.is_power_of_two() || align > 1 << 20 {
            return Err(Error::Unsupported("PT_TLS alignment above 1 MiB"));
        }
        let template = Template {
            data,
            filesz: filesz as usize,
            memsz: memsz as usize,
            align: align as usize,
            first_byte: (vaddr % align) as usize,
        };
        // Checks the layout can be built before anything depends on it.
        Layout::from_size_align(template.first_byte + template.memsz.max(1), template.align)
            .map_err(|_| Error::Unsupported("PT_TLS size"))?;
        let mut reg = registry();
        let generation = reg.next_generation;
        reg.next_generation = if generation >= 0xf_ffff {
            1
        } else {
            generation + 1
        };
        let module = Module {
            generation,
            template,
            blocks: Vec::new(),
        };
        let slot = match reg.slots.iter().position(Option::is_none) {
            Some(i) => {
                reg.slots[i] = Some(module);
                i
            }
            None if reg.slots.len() < 0xf_ffff => {
                reg.slots.push(Some(module));
                reg.slots.len() - 1
            }
            None => return Err(Error::Unsupported("more than 2^20 TLS modules")),
        };
        Ok(TlsModule { slot, generation })
    }

    /// The id `DTPMOD64` relocations store.
    pub fn id(&self) -> u64 {
        encode(self.slot, self.generation)
    }

    /// Live blocks of this module across all threads (for tests).
    pub fn live_blocks(&self) -> usize {
        registry().slots[self.slot]
            .as_ref()
            .map_or(0, |m| m.blocks.len())
    }
}

impl Drop for TlsModule {
    fn drop(&mut self) {
        let module = registry().slots[self.slot].take();
        if let Some(m) = module {
            for (_, block) in m.blocks {
                // SAFETY: allocated in `allocate_block` with this layout and
                // removed from the registry, so freed exactly once.
                unsafe { m.template.free(block) };
            }
        }
    }
}

/// A thread's view: block address per slot, with the generation it was
/// allocated for.
struct ThreadBlocks {
    id: u64,
    blocks: Vec<(u32, usize)>,
}

impl Drop for ThreadBlocks {
    fn drop(&mut self) {
        let mut reg = registry();
        for (slot, &(generation, block)) in self.blocks.iter().enumerate() {
            if block == 0 {
                continue;
            }
            let Some(Some(m)) = reg.slots.get_mut(slot) else {
                continue;
            };
            if m.generation != generation {
                continue; // freed with its image already
            }
            if let Some(i) = m
                .blocks
                .iter()
                .position(|&(t, b)| t == self.id && b == block)
            {
                m.blocks.swap_remove(i);
                // SAFETY: allocated with this module's layout; just removed
                // from the registry under the lock, so freed exactly once.
                unsafe { m.template.free(block) };
            }
        }
    }
}

thread_local! {
    static BLOCKS: RefCell<ThreadBlocks> = RefCell::new(ThreadBlocks {
        id: next_thread_id(),
        blocks: Vec::new(),
    });
}

fn next_thread_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Allocates and initialises this thread's block of module `slot`.
fn allocate_block(thread: u64, slot: usize, generation: u32) -> usize {
    let mut reg = registry();
    let Some(Some(m)) = reg.slots.get_mut(slot) else {
        // The image is gone: its code cannot be running. Nothing sane to return.
        std::process::abort();
    };
    if m.generation != generation {
        std::process::abort();
    }
    let t = m.template;
    let layout = t.layout();
    // SAFETY: the layout has non-zero size (memsz.max(1)).
    let raw = unsafe { alloc(layout) };
    if raw.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    let block = raw as usize + t.first_byte;
    // SAFETY: the template lies in the loaded image (validated at load) and
    // the block has room for memsz bytes after first_byte.
    unsafe {
        std::ptr::copy_nonoverlapping(t.data as *const u8, block as *mut u8, t.filesz);
        std::ptr::write_bytes((block + t.filesz) as *mut u8, 0, t.memsz - t.filesz);
    }
    // Recorded as handed out: that is what threads' caches hold and look
    // up again at exit (a template with first_byte != 0 would otherwise
    // never match and leak).
    m.blocks.push((thread, block));
    block
}

/// The address of `ti.offset` in this thread's block of memdl module
/// `ti.module`, or `None` when the module is not memdl's.
pub fn block_address(ti: &TlsIndex) -> Option<usize> {
    let (slot, generation) = decode(ti.module)?;
    let cached = BLOCKS.try_with(|b| {
        let mut b = b.borrow_mut();
        match b.blocks.get(slot) {
            Some(&(g, block)) if g == generation && block != 0 => block,
            _ => {
                let block = allocate_block(b.id, slot, generation);
                if b.blocks.len() <= slot {
                    b.blocks.resize(slot + 1, (0, 0));
                }
                b.blocks[slot] = (generation, block);
                block
            }
        }
    });
    // During this thread's exit, after its cache is gone (another
    // thread-exit destructor using TLS): a block owned by no thread, freed
    // with its image.
    let block = cached.unwrap_or_else(|_| allocate_block(0, slot, generation));
    Some(block.wrapping_add(ti.offset as usize))
}

/// memdl's `__tls_get_addr`: memdl modules here, everything else to the
/// system's implementation.
pub extern "C" fn tls_get_addr(ti: *const TlsIndex) -> *mut u8 {
    // SAFETY: TLS code passes its GOT's tls_index, valid and aligned.
    let index = unsafe { &*ti };
    match block_address(index) {
        Some(addr) => addr as *mut u8,
        None => system_tls_get_addr(ti),
    }
}

/// What [`crate::arch`]'s TLS descriptor function calls: the variable's
/// address for this thread.
pub extern "C" fn tlsdesc_address(ti: *const TlsIndex) -> usize {
    // SAFETY: memdl's own descriptors point to a TlsIndex the image owns.
    let index = unsafe { &*ti };
    // A descriptor for another module's variable (the system loader's)
    // asks that module's `__tls_get_addr`.
    block_address(index).unwrap_or_else(|| system_tls_get_addr(ti) as usize)
}

fn system_tls_get_addr(ti: *const TlsIndex) -> *mut u8 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SYSTEM: AtomicUsize = AtomicUsize::new(0);
    let mut f = SYSTEM.load(Ordering::Relaxed);
    if f == 0 {
        // SAFETY: a lookup of a NUL-terminated name in the global scope.
        f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__tls_get_addr".as_ptr()) } as usize;
        if f == 0 {
            std::process::abort();
        }
        SYSTEM.store(f, Ordering::Relaxed);
    }
    // SAFETY: glibc's __tls_get_addr has exactly this signature.
    let f: extern "C" fn(*const TlsIndex) -> *mut u8 = unsafe { std::mem::transmute(f) };
    f(ti)
}
