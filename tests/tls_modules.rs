//! Thread-local storage across modules and static TLS (issue #12): a
//! library's own initial-exec TLS, TLS variables of the system loader's
//! modules (libc's `errno`, libstdc++'s `std::call_once` state) in every
//! model, and libgomp, each loaded by memdl's custom loader and compared
//! with the system loader. Each test runs alone (`serial`): one counts
//! mappings, libgomp starts threads.

mod common;

use std::ffi::{c_int, c_long, c_uint, c_void};
use std::sync::mpsc;

use common::{machine_lib, maps_count, serial, test_lib};
use goblin::elf::Elf;
use memdl::{ElfImage, Error, Library, SystemImage};

/// The relocation type names of a library's dynamic relocations and its
/// `DT_FLAGS`, so each test shows it exercises what it claims.
fn relocation_names(bytes: &[u8]) -> (Vec<String>, u64) {
    let elf = Elf::parse(bytes).unwrap();
    let machine = elf.header.e_machine;
    let names = elf
        .dynrelas
        .iter()
        .chain(elf.pltrelocs.iter())
        .map(|r| goblin::elf::reloc::r_to_str(r.r_type, machine).to_owned())
        .collect();
    let flags = elf.dynamic.as_ref().map_or(0, |d| d.info.flags);
    (names, flags)
}

fn has_reloc(bytes: &[u8], suffix: &str) -> bool {
    relocation_names(bytes)
        .0
        .iter()
        .any(|n| n.ends_with(suffix))
}

/// `T`, looked up in either backend.
fn sym<T: Copy>(lib: &impl Library, name: &str) -> T {
    // SAFETY: each caller names the symbol's true C type.
    *unsafe { lib.get::<T>(name) }.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the initial-exec library gives in a thread: before and after one
/// `ie_next`, and its table after bumping it.
fn ie_round(lib: &impl Library) -> (c_long, c_int, c_int, c_long) {
    let sum: unsafe extern "C" fn() -> c_long = sym(lib, "ie_sum");
    let next: unsafe extern "C" fn() -> c_int = sym(lib, "ie_next");
    let gd: unsafe extern "C" fn() -> c_int = sym(lib, "ie_value_gd");
    let bump: unsafe extern "C" fn(c_long) = sym(lib, "ie_bump");
    // SAFETY: the library's C signatures, called in this thread.
    unsafe {
        let fresh = sum();
        let n = next();
        let through_gd = gd();
        bump(1);
        (fresh, n, through_gd, sum())
    }
}

/// The library's own initial-exec TLS: a thread that existed before the
/// load, the loading thread and a thread created after it each see their
/// own copy of the template (non-zero values and a zeroed tail), reached
/// by the initial-exec and the general-dynamic model alike; the same as
/// the system loader.
#[test]
fn own_static_tls_in_threads_from_before_and_after_the_load() {
    let _g = serial();
    let bytes = test_lib("tlsie");
    // Initial-exec code: thread-pointer offsets (x86_64's GNU ld also sets
    // DF_STATIC_TLS; aarch64's does not).
    let (names, _) = relocation_names(&bytes);
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("TPOFF64") || n.ends_with("TLS_TPREL")),
        "{names:?}"
    );

    fn run<L: Library + 'static>(load: impl FnOnce() -> L) -> Vec<(c_long, c_int, c_int, c_long)> {
        // A thread that exists before the load, waiting for the library.
        let (to_early, early_rx) = mpsc::channel::<&'static L>();
        let early = std::thread::spawn(move || ie_round(early_rx.recv().unwrap()));
        let lib: &'static L = Box::leak(Box::new(load()));
        to_early.send(lib).unwrap();
        let mut rounds = vec![early.join().unwrap(), ie_round(lib), ie_round(lib)];
        rounds.push(std::thread::spawn(move || ie_round(lib)).join().unwrap());
        // SAFETY: every thread that used the library has been joined.
        drop(unsafe { Box::from_raw(lib as *const L as *mut L) });
        rounds
    }
    // SAFETY: a trusted test library (its initialisers run).
    let memdl = run(|| unsafe { ElfImage::load(&bytes) }.unwrap());
    // SAFETY: as above.
    let system = run(|| unsafe { SystemImage::load(&bytes) }.unwrap());
    // ie_bump adds 1 to each of the 4 table entries and sets one zeroed byte.
    let fresh = (100, 6, 6, 105);
    assert_eq!(memdl, vec![fresh, fresh, (105, 7, 7, 109), fresh]);
    assert_eq!(memdl, system);
    common::assert_no_wx();
}

/// More initial-exec TLS than the static TLS surplus holds: both loaders
/// refuse; memdl says how much was asked and leaves nothing mapped.
#[test]
fn static_tls_too_large_is_refused_with_its_size() {
    let _g = serial();
    let bytes = test_lib("tlsiebig");
    let before = maps_count();
    // SAFETY: a trusted test library (its initialisers run).
    let err = unsafe { ElfImage::load(&bytes) }.unwrap_err();
    let Error::StaticTls { size, .. } = &err else {
        panic!("expected StaticTls, got {err:?}");
    };
    assert_eq!(*size, 1 << 20);
    assert!(err.to_string().contains("static TLS"), "{err}");
    // Other tests' threads may map stacks meanwhile: allow a little.
    assert!(maps_count() <= before + 2, "mappings left behind");
    // SAFETY: as above.
    assert!(unsafe { SystemImage::load(&bytes) }.is_err());
}

/// libc's `errno` read and written by loaded code with each TLS model:
/// the value the host sets is the one the library sees, in this thread and
/// in another, and the library's writes reach the host's `errno`.
#[test]
fn errno_from_libc_in_every_model() {
    let _g = serial();
    for (lib, reloc, get, set) in [
        ("tlsimport", "TPOFF64|TLS_TPREL", "errno_ie", "set_errno_ie"),
        (
            "tlsimport_gd",
            "DTPMOD64|TLS_DTPMOD",
            "errno_dyn",
            "set_errno_dyn",
        ),
        ("tlsimport_desc", "TLSDESC", "errno_dyn", "set_errno_dyn"),
    ] {
        let bytes = test_lib(lib);
        assert!(
            reloc.split('|').any(|r| has_reloc(&bytes, r)),
            "{lib} has no {reloc}: {:?}",
            relocation_names(&bytes).0
        );
        fn exercise<L: Library + Sync>(lib: &L, get: &str, set: &str) -> Vec<c_int> {
            let get: unsafe extern "C" fn() -> c_int = sym(lib, get);
            let set: unsafe extern "C" fn(c_int) = sym(lib, set);
            let round = |v: c_int| {
                // SAFETY: this thread's errno; the library's C signatures.
                unsafe {
                    *libc::__errno_location() = v;
                    let seen = get();
                    set(v + 1);
                    vec![seen, *libc::__errno_location()]
                }
            };
            let mut out = round(42);
            out.extend(std::thread::scope(|s| s.spawn(|| round(7)).join().unwrap()));
            out
        }
        // SAFETY: a trusted test library (its initialisers run).
        let memdl = unsafe { ElfImage::load(&bytes) }.unwrap();
        // SAFETY: as above.
        let system = unsafe { SystemImage::load(&bytes) }.unwrap();
        let got = exercise(&memdl, get, set);
        assert_eq!(got, vec![42, 43, 7, 8], "{lib}");
        assert_eq!(got, exercise(&system, get, set), "{lib}");
    }
}

/// `std::call_once` keeps its callable in libstdc++'s thread-local
/// `__once_callable`, which the library imports: it runs exactly once.
#[test]
fn std_call_once_through_libstdcxx_tls() {
    let _g = serial();
    let bytes = test_lib("callonce");
    let elf = Elf::parse(&bytes).unwrap();
    let imports_tls = elf.dynsyms.iter().any(|s| {
        s.st_type() == goblin::elf::sym::STT_TLS
            && s.st_shndx == 0
            && elf.dynstrtab.get_at(s.st_name) == Some("_ZSt15__once_callable")
    });
    assert!(imports_tls, "callonce does not import __once_callable");
    // SAFETY: a trusted test library (its initialisers run).
    let memdl = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: as above.
    let system = unsafe { SystemImage::load(&bytes) }.unwrap();
    for lib in [&memdl as &dyn RunOnce, &system] {
        assert_eq!(lib.run_once(3), 1);
        assert_eq!(
            std::thread::scope(|s| s.spawn(|| lib.run_once(2)).join().unwrap()),
            1
        );
    }
}

trait RunOnce: Sync {
    fn run_once(&self, times: c_int) -> c_int;
}

impl<L: Library> RunOnce for L {
    fn run_once(&self, times: c_int) -> c_int {
        let f: unsafe extern "C" fn(c_int) -> c_int = sym(self, "run_once");
        // SAFETY: int run_once(int).
        unsafe { f(times) }
    }
}

type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);

/// What each of GOMP_parallel's threads records: its thread number.
struct Team {
    thread_num: unsafe extern "C" fn() -> c_int,
    seen: std::sync::Mutex<Vec<c_int>>,
}

extern "C" fn team_member(data: *mut c_void) {
    // SAFETY: `data` is the `Team` GOMP_parallel was handed, alive until it
    // returns.
    let team = unsafe { &*(data as *const Team) };
    // SAFETY: int omp_get_thread_num(void).
    let n = unsafe { (team.thread_num)() };
    team.seen.lock().unwrap().push(n);
}

/// Runs a 4-thread parallel region: the thread numbers seen, sorted.
fn parallel_region(lib: &impl Library) -> Vec<c_int> {
    let parallel: ParallelFn = sym(lib, "GOMP_parallel");
    let team = Team {
        thread_num: sym(lib, "omp_get_thread_num"),
        seen: Default::default(),
    };
    // SAFETY: void GOMP_parallel(void (*)(void *), void *, unsigned, unsigned);
    // `team` outlives the region.
    unsafe { parallel(team_member, &team as *const Team as *mut c_void, 4, 0) };
    let mut seen = team.seen.into_inner().unwrap();
    seen.sort();
    seen
}

/// libgomp (the OpenMP runtime compiled ML kernels use; initial-exec TLS,
/// `DF_STATIC_TLS`) loaded from bytes runs a 4-thread parallel region from
/// the main thread and from a thread that existed before the load, as the
/// system loader's copy does.
#[test]
fn libgomp_runs_parallel_regions() {
    let _g = serial();
    let bytes = machine_lib("libgomp.so.1");
    assert!(
        has_reloc(&bytes, "TPOFF64") || has_reloc(&bytes, "TLS_TPREL"),
        "libgomp uses initial-exec TLS"
    );
    fn run<L: Library + 'static>(load: impl FnOnce() -> L) -> Vec<Vec<c_int>> {
        let (to_early, early_rx) = mpsc::channel::<&'static L>();
        let early = std::thread::spawn(move || parallel_region(early_rx.recv().unwrap()));
        // libgomp is NODELETE-like in practice (its worker threads stay):
        // leaked on purpose, for both backends alike.
        let lib: &'static L = Box::leak(Box::new(load()));
        to_early.send(lib).unwrap();
        vec![
            parallel_region(lib),
            early.join().unwrap(),
            parallel_region(lib),
        ]
    }
    // SAFETY: the machine's libgomp (its initialisers run).
    let memdl = run(|| unsafe { ElfImage::load(&bytes) }.unwrap());
    // SAFETY: as above.
    let system = run(|| unsafe { SystemImage::load(&bytes) }.unwrap());
    assert_eq!(memdl, vec![vec![0, 1, 2, 3]; 3]);
    assert_eq!(memdl, system);
}
