//! Test and benchmark hooks: not part of memdl's API and not covered by
//! semver. They exist only with the non-default `test-hooks` feature, which
//! memdl's own tests, benchmarks and fuzz target enable.

#[cfg(feature = "test-hooks")]
use crate::{ElfImage, Result};

#[cfg(feature = "test-hooks")]
impl ElfImage {
    /// The address a lookup through the file's hash table gives, without
    /// the export index and without counting towards building it: the
    /// reference the index is tested against.
    #[doc(hidden)]
    pub fn __hash_table_address(
        &self,
        name: impl AsRef<[u8]>,
        version: Option<&[u8]>,
    ) -> Result<usize> {
        self.core.hash_table_address(name.as_ref(), version)
    }

    /// Builds the export index now, if it is not built yet (tests use it
    /// where forcing it by lookups would take too long).
    #[doc(hidden)]
    pub fn __build_export_index(&self) {
        self.core.build_index();
    }

    /// The export index's state: `None` before it is built, `Some(None)`
    /// when building it was given up, else its number of names and whether
    /// it is complete (answers misses itself).
    #[doc(hidden)]
    pub fn __export_index(&self) -> Option<Option<(usize, bool)>> {
        self.core
            .exports
            .get()
            .map(|i| (!i.given_up()).then(|| (i.len(), i.is_complete())))
    }

    /// How many `DT_NEEDED` names the process's loads asked the system
    /// loader about (`RTLD_NOLOAD`) that it did not have loaded.
    #[doc(hidden)]
    pub fn __noload_misses() -> usize {
        NOLOAD_MISSES.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// For benchmarks (`benches/compare.rs`, group `imports`): what a
    /// default-options load does to resolve its imports, without the rest
    /// of the load: opens `needed`, resolves every `(name, version)` through
    /// the chain, publishes to the cache. Returns how many were found.
    #[doc(hidden)]
    pub fn __bench_resolve(needed: &[&[u8]], imports: &[(&[u8], Option<&[u8]>)]) -> usize {
        let options = crate::Options::default();
        let search = Default::default();
        let Ok(resolver) = crate::load::resolve::Resolver::new(&options, needed, &search, &[])
        else {
            return 0;
        };
        let found = imports
            .iter()
            .filter(|(name, version)| resolver.resolve(name, *version).is_some())
            .count();
        drop(resolver.into_needed());
        found
    }
}

/// `dlopen(name, RTLD_NOLOAD)` calls for `DT_NEEDED` names that found
/// nothing loaded (each one a search of the file system by the system
/// loader).
#[cfg(feature = "test-hooks")]
pub(crate) static NOLOAD_MISSES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// The `.eh_frame` size, in FDEs, from which a load describes its image on
/// a helper thread, as a test set it (`u64::MAX`: the default); see
/// `load::DESCRIBE_ASIDE_FDES`.
#[cfg(feature = "test-hooks")]
pub(crate) static DESCRIBE_ASIDE_FROM: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(u64::MAX);

/// Loads that described their image on a helper thread.
#[cfg(feature = "test-hooks")]
pub(crate) static DESCRIBED_ASIDE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Whether a helper describing an image waits, before claiming anything,
/// until the loading thread has claimed the debuggers' part (set by a test
/// to have the two threads share the work).
#[cfg(feature = "test-hooks")]
static HELPER_WAITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The helper's wait of [`ElfImage::__helper_waits_for_loader`], for at
/// most 10 s.
#[cfg(feature = "test-hooks")]
pub(crate) fn helper_waits(debug_claimed: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering::Relaxed;
    let start = std::time::Instant::now();
    while HELPER_WAITS.load(Relaxed)
        && !debug_claimed.load(Relaxed)
        && start.elapsed().as_secs() < 10
    {
        std::thread::yield_now();
    }
}

#[cfg(feature = "test-hooks")]
impl ElfImage {
    /// Makes a helper describing an image wait until the loading thread,
    /// done relocating, has claimed the debuggers' part: the helper then
    /// checks the frames while the loading thread builds the debuggers'
    /// object (`false`: the default, no wait).
    #[doc(hidden)]
    pub fn __helper_waits_for_loader(on: bool) {
        HELPER_WAITS.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes loads describe their image (check its `.eh_frame`, build the
    /// debuggers' object) on a helper thread from `fdes` FDEs on (`None`:
    /// the default); returns how many loads have done so.
    #[doc(hidden)]
    pub fn __describe_aside_from(fdes: Option<u32>) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        DESCRIBE_ASIDE_FROM.store(fdes.map_or(u64::MAX, u64::from), Relaxed);
        DESCRIBED_ASIDE.load(Relaxed)
    }
}
