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
//! [`crate::runtime::services`]); under the deny policy only those that
//! cannot reach the host.
//!
//! Steps 2 and 3 go through a process-wide cache of `dlvsym` answers (hits
//! and misses), keyed by handle, name and required version. glibc's answer
//! for a name only changes when objects are loaded or unloaded: each load
//! fingerprints the loaded objects once (`dl_iterate_phdr`: address, name),
//! uses the cache only if it was filled under the same fingerprint, and adds
//! its own answers only if the fingerprint is still the same when it is
//! done. (Not seen: a library promoted from `RTLD_LOCAL` to `RTLD_GLOBAL`
//! by a later `dlopen` without any load or unload; a cached global-scope
//! miss for its symbols then still falls through to the `DT_NEEDED`s.)
//! A load works on an immutable snapshot of the cache, so no lock is held
//! while it resolves.
//!
//! The same walk tells which of the image's weak imports, and of the unique
//! symbols it defines, no loaded object can define (their GNU hash tables
//! reject the name, see `scope.rs`): those are not asked of the system
//! loader at all, where a miss is dearest.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::load::scope;
use crate::load::search::SearchPaths;
use crate::runtime::needed::{with_c_name, NeededLibrary};
use crate::runtime::services;
use crate::runtime::tls_static::ForeignTls;
use crate::symbol::lossy;

/// Where a thread-local import lives.
pub enum TlsDefinition {
    /// The calling thread's address of it, from the system loader.
    Address(usize),
    /// A variable of a library memdl loaded.
    Variable(ForeignTls),
}

/// Libraries supplied during one load, by `DT_NEEDED` name, and how many
/// loads (the outermost and its dependencies' nested inside it) are in
/// progress.
type Supplied = (usize, Vec<(Vec<u8>, Arc<crate::ElfImage>)>);

thread_local! {
    /// What the caller supplied during the load in progress on this
    /// thread: each library is loaded once however many need it.
    static SUPPLIED: RefCell<Supplied> = const { RefCell::new((0, Vec::new())) };
}

/// Marks a load that may supply dependencies; the outermost one forgets
/// what was supplied when it ends.
struct SupplyScope;

impl SupplyScope {
    fn enter() -> SupplyScope {
        SUPPLIED.with(|s| s.borrow_mut().0 += 1);
        SupplyScope
    }

    fn find(name: &[u8]) -> Option<Arc<crate::ElfImage>> {
        SUPPLIED.with(|s| {
            s.borrow()
                .1
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, img)| img.clone())
        })
    }

    fn remember(name: &[u8], image: &Arc<crate::ElfImage>) {
        SUPPLIED.with(|s| s.borrow_mut().1.push((name.to_vec(), image.clone())));
    }
}

impl Drop for SupplyScope {
    fn drop(&mut self) {
        let forgotten = SUPPLIED.with(|s| {
            let mut s = s.borrow_mut();
            s.0 -= 1;
            if s.0 == 0 {
                std::mem::take(&mut s.1)
            } else {
                Vec::new()
            }
        });
        // Dropped outside the borrow: an image's drop may run code.
        drop(forgotten);
    }
}

/// Which of a load's needed names a loaded object goes by
/// ([`scope::loaded_under`]): walked when first asked, and again after a
/// library was opened (it may have brought others).
struct LoadedNames<'n> {
    names: &'n [&'n [u8]],
    known: Option<Vec<bool>>,
}

impl<'n> LoadedNames<'n> {
    fn new(names: &'n [&'n [u8]]) -> Self {
        LoadedNames { names, known: None }
    }

    /// Whether a loaded object may go by `names[i]`.
    fn may_be_loaded(&mut self, i: usize) -> bool {
        let names = self.names;
        let known = self.known.get_or_insert_with(|| scope::loaded_under(names));
        known.get(i).copied().unwrap_or(true)
    }

    /// A library was opened: what is loaded may have changed.
    fn opened(&mut self) {
        self.known = None;
    }
}

/// Opens `DT_NEEDED` library `name`: the caller's own copy when the options
/// supply one (loaded by memdl), else the system loader's, found through
/// the image's search paths first.
fn open_needed(
    name: &[u8],
    options: &crate::Options,
    search: &SearchPaths<'_>,
    loaded: &mut LoadedNames<'_>,
    index: usize,
) -> Result<NeededLibrary> {
    if let Some(provider) = &options.dependencies {
        if let Some(image) = SupplyScope::find(name) {
            return Ok(NeededLibrary::Memdl(image));
        }
        if let Some(dependency) = (provider.0)(&lossy(name)) {
            // Its own `$ORIGIN` is its own file's, or none.
            let mut child = options.clone();
            child.origin = None;
            // SAFETY: the caller vouched for the libraries its provider
            // supplies when it started the load (an unsafe call).
            let image = unsafe {
                match &dependency {
                    crate::Dependency::Bytes(bytes) => crate::ElfImage::load_with(bytes, &child),
                    crate::Dependency::File { file, offset, len } => {
                        crate::ElfImage::load_fd_with(&**file, *offset, *len, &child)
                    }
                }
            }
            .map_err(|e| Error::NeededLibrary {
                name: lossy(name),
                message: e.to_string(),
            })?;
            let image = Arc::new(image);
            SupplyScope::remember(name, &image);
            // Its own needed libraries may have been opened.
            loaded.opened();
            return Ok(NeededLibrary::Memdl(image));
        }
    }
    // As the system loader does for every `DT_NEEDED` name: a library
    // already loaded under it (its soname, or a name it was opened by) is
    // the one, whatever the search paths hold; only others are searched
    // for. (Most are loaded: libc, libm, libstdc++.) The system loader is
    // asked only about names a loaded object goes by: for others it would
    // search for and read the file to say no.
    if !name.contains(&b'/') && loaded.may_be_loaded(index) {
        if let Some(library) = NeededLibrary::already_loaded(name) {
            return Ok(library);
        }
    }
    loaded.opened();
    match search.find(name) {
        Some(path) => NeededLibrary::open(path.as_os_str().as_encoded_bytes()),
        None => NeededLibrary::open(name),
    }
    .map_err(|e| match e {
        // Named as the image names it, not by the path it was found at.
        Error::NeededLibrary { message, .. } => Error::NeededLibrary {
            name: lossy(name),
            message,
        },
        other => other,
    })
}

/// A small multiplicative hash for symbol-name keys: the cache is private
/// to the process and its keys come from loaded images, so SipHash's
/// flooding resistance buys nothing here and costs ~4x per lookup.
#[derive(Default)]
pub(super) struct NameHasher(pub(super) u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = self.0;
        for c in bytes.chunks_exact(8) {
            let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        // The last (up to 7) bytes: the final 8 bytes of the input when it
        // has that many (overlapping the last chunk), else byte by byte; no
        // copy into a buffer (a memcpy call per hash).
        let tail = if bytes.len() >= 8 {
            u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().expect("8 bytes"))
        } else {
            bytes
                .iter()
                .rev()
                .fold(0u64, |t, &b| (t << 8) | u64::from(b))
        };
        h = (h.rotate_left(5) ^ tail ^ bytes.len() as u64).wrapping_mul(K);
        self.0 = h;
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// One cached answer: `dlvsym(handle, name, version)` was `addr` (0 if
/// not found). Handles stay valid while their object is loaded, and an
/// unload changes the fingerprint.
#[derive(Clone)]
struct Answer {
    handle: usize,
    name: Box<[u8]>,
    version: Option<Box<[u8]>>,
    addr: usize,
}

impl Answer {
    fn is(&self, handle: usize, name: &[u8], version: Option<&[u8]>) -> bool {
        self.handle == handle && *self.name == *name && self.version.as_deref() == version
    }
}

/// Hash of a question, computed from its parts in place (no key is built).
fn question_hash(handle: usize, name: &[u8], version: Option<&[u8]>) -> u64 {
    let mut h = NameHasher(handle as u64);
    h.write(name);
    if let Some(v) = version {
        h.write(v);
    }
    h.finish()
}

/// The hash is the key already: no second hashing.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Answers by question hash (colliding questions share a bucket).
type ScopeMap = HashMap<u64, Vec<Answer>, BuildHasherDefault<IdentityHasher>>;

/// Answers of the global scope under one generation of loaded objects
/// (0 = not found there).
struct ScopeCache {
    generation: (u64, u64),
    map: ScopeMap,
}

static SCOPE_CACHE: RwLock<Option<Arc<ScopeCache>>> = RwLock::new(None);

/// Whether a load has asked the global scope before: the process's first
/// load records nothing for the cache. Most processes load their plugin
/// once, and the cache's entries (an allocation or two per import, then the
/// table) would cost that first load for nothing; from the second on,
/// loads learn.
static ASKED_BEFORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The resolver chain for one load.
pub struct Resolver<'a> {
    host: &'a HashMap<Vec<u8>, usize>,
    global_scope: bool,
    needed: Vec<NeededLibrary>,
    /// The system loader's count of added objects before `needed` were
    /// opened (for unique symbols: see `runtime::unique::bind`).
    added_before: Option<u64>,
    /// The global-scope cache as it was when this load started, if it
    /// belongs to the current generation.
    cache: Option<Arc<ScopeCache>>,
    generation: (u64, u64),
    /// Answers this load looked up itself, added to the cache at the end
    /// (unless it is the process's first: see [`ASKED_BEFORE`]).
    learned: RefCell<Vec<(u64, Answer)>>,
    learning: bool,
    /// Of `weak` (see [`Resolver::new`]), those no loaded object can
    /// define (sorted): not asked of the system loader (see `scope.rs`).
    absent: Vec<&'a [u8]>,
}

impl<'a> Resolver<'a> {
    /// Opens the needed libraries (unless host lookups are denied): those
    /// the options supply, loaded by memdl, the others through the image's
    /// search paths (`search`), then the system loader's own. `weak` are
    /// names the image may find nowhere: its weak imports, and unique
    /// symbols it defines.
    pub fn new(
        options: &'a crate::Options,
        needed: &[&[u8]],
        search: &SearchPaths<'_>,
        weak: &[&'a [u8]],
    ) -> Result<Self> {
        let host = &options.host_symbols;
        let deny_host_lookups = options.deny_host_lookups;
        let mut opened = Vec::with_capacity(needed.len());
        let mut added_before = None;
        if !deny_host_lookups && !needed.is_empty() {
            added_before = Some(crate::runtime::unique::objects_added());
            // Only a load that may supply dependencies touches the
            // thread-local record of them: its first use on a thread
            // registers a destructor with the C library (a process's
            // first load paid that for nothing).
            let _scope = options.dependencies.is_some().then(SupplyScope::enter);
            let mut loaded = LoadedNames::new(needed);
            for (i, name) in needed.iter().enumerate() {
                opened.push(open_needed(name, options, search, &mut loaded, i)?);
            }
        }
        let (cache, generation, mut absent) = if deny_host_lookups {
            (None, (0, 0), Vec::new())
        } else {
            // After the needed libraries are open: their filters count.
            let scope = scope::walk(weak);
            let generation = scope.generation;
            let cache = SCOPE_CACHE
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|c| c.generation == generation);
            let absent = weak
                .iter()
                .zip(&scope.may_define)
                .filter(|(_, &may)| !may)
                .map(|(&name, _)| name)
                .collect();
            (cache, generation, absent)
        };
        absent.sort_unstable();
        Ok(Resolver {
            host,
            global_scope: !deny_host_lookups,
            needed: opened,
            added_before,
            cache,
            generation,
            learned: RefCell::new(Vec::new()),
            learning: !deny_host_lookups
                && ASKED_BEFORE.swap(true, std::sync::atomic::Ordering::Relaxed),
            absent,
        })
    }

    /// `dlvsym(handle, name, version)` (0 if not found), from the cache
    /// when it has it.
    fn scoped(&self, handle: *mut c_void, name: &[u8], version: Option<&[u8]>) -> usize {
        let hash = question_hash(handle as usize, name, version);
        let cached = self.cache.as_ref().and_then(|c| {
            c.map
                .get(&hash)?
                .iter()
                .find(|a| a.is(handle as usize, name, version))
        });
        if let Some(answer) = cached {
            return answer.addr;
        }
        let found = with_c_name(name, |c| lookup(handle, c, version)) as usize;
        if !self.learning {
            return found;
        }
        self.learned.borrow_mut().push((
            hash,
            Answer {
                handle: handle as usize,
                name: name.into(),
                version: version.map(Into::into),
                addr: found,
            },
        ));
        found
    }

    /// Adds what this load learned to the process-wide cache, unless an
    /// object was loaded or unloaded meanwhile (its answers may be stale).
    fn publish(&mut self) {
        let learned = std::mem::take(self.learned.get_mut());
        if learned.is_empty() || scope::walk(&[]).generation != self.generation {
            return;
        }
        let mut slot = SCOPE_CACHE.write().unwrap_or_else(|p| p.into_inner());
        let mut map = match slot.as_ref() {
            Some(c) if c.generation == self.generation => c.map.clone(),
            _ => ScopeMap::default(),
        };
        // Room for every answer at once, and buckets of one (a bucket's
        // second answer is a rare hash collision): growing the table and
        // each bucket to four was most of the fresh heap a first load used.
        map.reserve(learned.len());
        for (hash, answer) in learned {
            let bucket = map.entry(hash).or_insert_with(|| Vec::with_capacity(1));
            if !bucket
                .iter()
                .any(|a| a.is(answer.handle, &answer.name, answer.version.as_deref()))
            {
                bucket.push(answer);
            }
        }
        *slot = Some(Arc::new(ScopeCache {
            generation: self.generation,
            map,
        }));
    }

    /// Resolves an import, or `None` when no step of the chain has it.
    pub fn resolve(&self, name: &[u8], version: Option<&[u8]>) -> Option<usize> {
        if !self.host.is_empty() {
            if let Some(&addr) = self.host.get(name) {
                return Some(addr);
            }
        }
        // A sandbox gets only the services that cannot reach the host.
        if let Some(service) = services::find(name) {
            if self.global_scope || !service.reaches_host {
                return Some(service.address());
            }
        }
        if !self.global_scope {
            return None;
        }
        // The global scope, then each needed library in DT_NEEDED order;
        // the system loader is not asked for what it cannot have.
        let system = self.absent.binary_search(&name).is_err();
        let global = match system {
            true => self.scoped(libc::RTLD_DEFAULT, name, version),
            false => 0,
        };
        if global != 0 {
            return Some(global);
        }
        self.needed.iter().find_map(|lib| match lib {
            NeededLibrary::System(h) if system => {
                Some(self.scoped(h.handle(), name, version)).filter(|&a| a != 0)
            }
            NeededLibrary::System(_) => None,
            NeededLibrary::Memdl(image) => image.export_address(name, version),
        })
    }

    /// A definition of `name` in the process's global scope (host symbols
    /// first), for a unique symbol the image defines itself: the image
    /// comes before its own dependencies in its lookup scope, so only a
    /// definition found before it counts.
    pub fn resolve_global(&self, name: &[u8]) -> Option<usize> {
        if let Some(&addr) = self.host.get(name) {
            return Some(addr);
        }
        if !self.global_scope || self.absent.binary_search(&name).is_ok() {
            return None;
        }
        Some(self.scoped(libc::RTLD_DEFAULT, name, None)).filter(|&a| a != 0)
    }

    /// How many objects the system loader had added before this load
    /// opened its needed libraries (`None` if it opened none).
    pub fn objects_added_before(&self) -> Option<u64> {
        self.added_before
    }

    /// Resolves a thread-local import to its address in the calling
    /// thread, or `None`. Uncached: the answer differs between threads. Host
    /// symbols and memdl's services define no TLS, so only the global scope
    /// and the needed libraries are asked.
    pub fn resolve_tls(&self, name: &[u8], version: Option<&[u8]>) -> Option<TlsDefinition> {
        if !self.global_scope {
            return None;
        }
        let system = |handle| {
            let addr = with_c_name(name, |c| lookup(handle, c, version)) as usize;
            (addr != 0).then_some(TlsDefinition::Address(addr))
        };
        system(libc::RTLD_DEFAULT).or_else(|| {
            self.needed.iter().find_map(|lib| match lib {
                NeededLibrary::System(h) => system(h.handle()),
                NeededLibrary::Memdl(image) => image
                    .tls_variable(name, version)
                    .map(TlsDefinition::Variable),
            })
        })
    }

    /// Hands over the opened libraries: the image keeps them open for its
    /// lifetime, since its code calls into them.
    pub fn into_needed(mut self) -> Vec<NeededLibrary> {
        self.publish();
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
