//! Thread-local storage of loaded images: the dynamic models (general and
//! local dynamic through `__tls_get_addr`, TLS descriptors), per-thread
//! blocks from the template, their lifetime, concurrency, the refusal of
//! static TLS, and libuuid from the machine; always against the system
//! loader as the reference.

#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::ffi::{c_char, c_int, CStr};
use std::sync::{Arc, Barrier};

use goblin::elf::Elf;
use memdl::{ElfImage, Library, SystemImage};

mod common;
use common::{assert_no_wx, machine_lib, mappings_in, serial, test_lib};

// Why these tests take serial() (tests/common): tests that count mappings or
// live blocks must not see another test's loads: every test of this file
// runs alone.

/// Relocation type names of a library's dynamic relocations, with whether
/// each names a symbol, and its `DT_FLAGS`.
fn tls_relocations(bytes: &[u8]) -> (HashSet<(u32, bool)>, u64) {
    let elf = Elf::parse(bytes).unwrap();
    let relocs = elf
        .dynrelas
        .iter()
        .chain(elf.pltrelocs.iter())
        .map(|r| (r.r_type, r.r_sym != 0))
        .collect();
    let flags = elf
        .dynamic
        .as_ref()
        .unwrap()
        .dyns
        .iter()
        .find(|d| d.d_tag == goblin::elf::dynamic::DT_FLAGS)
        .map_or(0, |d| d.d_val);
    (relocs, flags)
}

#[cfg(target_arch = "x86_64")]
mod rel {
    pub use goblin::elf::reloc::{
        R_X86_64_DTPMOD64 as DTPMOD, R_X86_64_DTPOFF64 as DTPOFF, R_X86_64_TLSDESC as TLSDESC,
        R_X86_64_TPOFF64 as TPOFF,
    };
}
#[cfg(target_arch = "aarch64")]
mod rel {
    pub use goblin::elf::reloc::{
        R_AARCH64_TLSDESC as TLSDESC, R_AARCH64_TLS_DTPMOD as DTPMOD,
        R_AARCH64_TLS_DTPREL as DTPOFF, R_AARCH64_TLS_TPREL as TPOFF,
    };
}

/// The test libraries really use the models the tests claim to cover.
#[test]
fn test_libraries_use_the_tls_models_under_test() {
    let _g = serial();
    let (r, _) = tls_relocations(&test_lib("tlsmodels"));
    if cfg!(target_arch = "x86_64") {
        // General dynamic: module and offset of a named symbol.
        assert!(r.contains(&(rel::DTPMOD, true)), "{r:?}");
        assert!(r.contains(&(rel::DTPOFF, true)), "{r:?}");
        // Local dynamic: the module of the object itself.
        assert!(r.contains(&(rel::DTPMOD, false)), "{r:?}");
    }
    let (r, _) = tls_relocations(&test_lib("tlsmodels_desc"));
    assert!(r.contains(&(rel::TLSDESC, true)), "{r:?}");
    assert!(r.contains(&(rel::TLSDESC, false)), "{r:?}");
    let (r, flags) = tls_relocations(&test_lib("tlsie"));
    assert!(r.contains(&(rel::TPOFF, true)), "{r:?}");
    // binutils 2.40 sets DF_STATIC_TLS for x86_64 only; on aarch64 the
    // TPREL relocation alone is what memdl refuses.
    if cfg!(target_arch = "x86_64") {
        assert_ne!(flags & goblin::elf::dynamic::DF_STATIC_TLS, 0);
    }
}

/// The functions of tls_models.c, looked up from either backend.
#[derive(Clone, Copy)]
struct TlsFns {
    counter_next: unsafe extern "C" fn() -> c_int,
    hidden_next: unsafe extern "C" fn() -> c_int,
    tag: unsafe extern "C" fn() -> *const c_char,
    counter_addr: unsafe extern "C" fn() -> usize,
    aligned_addr: unsafe extern "C" fn() -> usize,
    aligned_get: unsafe extern "C" fn() -> f64,
    zero_sum: unsafe extern "C" fn() -> i64,
    hammer: unsafe extern "C" fn(c_int, i64) -> i64,
}

impl TlsFns {
    fn of(lib: &impl Library) -> TlsFns {
        // SAFETY: the signatures of test-dylibs/tls_models.c.
        unsafe {
            TlsFns {
                counter_next: *lib.get("tls_counter_next").unwrap(),
                hidden_next: *lib.get("tls_hidden_next").unwrap(),
                tag: *lib.get("tls_tag_get").unwrap(),
                counter_addr: *lib.get("tls_counter_addr").unwrap(),
                aligned_addr: *lib.get("tls_aligned_addr").unwrap(),
                aligned_get: *lib.get("tls_aligned_get").unwrap(),
                zero_sum: *lib.get("tls_zero_sum").unwrap(),
                hammer: *lib.get("tls_hammer").unwrap(),
            }
        }
    }

    /// What a thread that never touched the library sees, after one
    /// increment of each counter.
    fn fresh_thread_view(self) -> (c_int, c_int, String, i64, bool, f64, usize) {
        // SAFETY: functions of the loaded library, which outlives the call.
        unsafe {
            let tag = CStr::from_ptr((self.tag)()).to_str().unwrap().to_owned();
            (
                (self.counter_next)(),
                (self.hidden_next)(),
                tag,
                (self.zero_sum)(),
                (self.aligned_addr)().is_multiple_of(64),
                (self.aligned_get)(),
                (self.counter_addr)(),
            )
        }
    }
}

fn in_new_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// Every thread starts from the template: tdata copied, tbss zeroed, the
/// 64-byte alignment of a variable kept; each thread has its own instance
/// and `get` gives the calling thread's. Same as the system loader, for
/// both the `__tls_get_addr` and the descriptor build.
#[test]
fn threads_start_from_the_template_like_the_system_loader() {
    let _g = serial();
    for name in ["tlsmodels", "tlsmodels_desc"] {
        let bytes = test_lib(name);
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
        assert_no_wx();
        for (backend, f) in [("memdl", TlsFns::of(&img)), ("system", TlsFns::of(&sys))] {
            let a = in_new_thread(|| f.fresh_thread_view());
            let b = in_new_thread(|| f.fresh_thread_view());
            assert_eq!(
                (a.0, a.1, a.2.as_str(), a.3, a.4, a.5),
                (43, 8, "memdl-tls", 0, true, 1.5),
                "{name} on {backend}"
            );
            assert_eq!(a.0, b.0, "{name} on {backend}: threads share a variable");
            // SAFETY: as above.
            let mine = unsafe { (f.counter_addr)() };
            // SAFETY: as above.
            let again = unsafe { (f.counter_addr)() };
            assert_eq!(mine, again);
            // SAFETY: as above: the library outlives the scoped thread.
            let other = in_new_thread(|| unsafe { (f.counter_addr)() });
            assert_ne!(mine, other, "{name} on {backend}");
        }
        // `get` of a thread-local symbol: this thread's instance, as dlsym.
        // SAFETY: `tls_counter` is an int.
        let p: memdl::Symbol<'_, *mut c_int> = unsafe { img.get("tls_counter") }.unwrap();
        let f = TlsFns::of(&img);
        // SAFETY: a function of the live image, taking no arguments.
        assert_eq!(*p as usize, unsafe { (f.counter_addr)() });
        let in_thread = in_new_thread(|| {
            // SAFETY: as above.
            let p: memdl::Symbol<'_, *mut c_int> = unsafe { img.get("tls_counter") }.unwrap();
            // SAFETY: the image is alive; p is this thread's tls_counter, an int.
            (*p as usize, unsafe { (f.counter_addr)() }, unsafe { **p })
        });
        assert_eq!(in_thread.0, in_thread.1);
        assert_eq!(in_thread.2, 42, "a fresh thread's tls_counter");
    }
}

/// 8 threads start together (concurrent first use: every block allocated
/// at once) and hammer every TLS variable; the results equal the system
/// loader's, and threads with the same seed agree (no sharing).
#[test]
fn eight_threads_hammer_tls_like_the_system_loader() {
    let _g = serial();
    for name in ["tlsmodels", "tlsmodels_desc"] {
        let bytes = test_lib(name);
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
        let (fi, fs) = (TlsFns::of(&img), TlsFns::of(&sys));
        let start = Arc::new(Barrier::new(8));
        let results: Vec<Vec<(i64, i64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let start = Arc::clone(&start);
                    s.spawn(move || {
                        start.wait();
                        let seed = (t % 4) as i64 + 1;
                        (0..50)
                            .map(|round| {
                                // SAFETY: functions of libraries alive
                                // for the whole scope.
                                unsafe {
                                    ((fi.hammer)(round + 1, seed), (fs.hammer)(round + 1, seed))
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, r) in results.iter().enumerate() {
            for (round, &(ours, system)) in r.iter().enumerate() {
                assert_eq!(ours, system, "{name}: thread {t} round {round}");
            }
            assert_eq!(
                r,
                &results[(t + 4) % 8],
                "{name}: threads {t} and {}",
                (t + 4) % 8
            );
        }
        assert_ne!(results[0], results[1]);
        assert_eq!(img.live_tls_blocks(), 0, "{name}: blocks left after exit");
    }
}

/// Blocks are allocated on first use and freed when their thread exits.
#[test]
fn blocks_live_exactly_as_long_as_their_threads() {
    let _g = serial();
    for name in ["tlsmodels", "tlsmodels_desc"] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&test_lib(name)) }.unwrap();
        let f = TlsFns::of(&img);
        assert_eq!(img.live_tls_blocks(), 0, "nobody touched it yet");
        let touched = Barrier::new(9);
        let exit = Barrier::new(9);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        // SAFETY: a function of the live library.
                        assert_eq!(unsafe { (f.counter_next)() }, 43);
                        touched.wait();
                        exit.wait();
                    })
                })
                .collect();
            touched.wait();
            assert_eq!(img.live_tls_blocks(), 8, "{name}: one block per thread");
            exit.wait();
            // An explicit join waits for the thread's TLS destructors; the
            // end of the scope only for the closures.
            for h in handles {
                h.join().unwrap();
            }
        });
        assert_eq!(img.live_tls_blocks(), 0, "{name}: blocks leaked at exit");
        // A thread that looked the variable up without using it through
        // code also gets (and frees) a block.
        in_new_thread(|| {
            // SAFETY: `tls_counter` is an int.
            let p: memdl::Symbol<'_, *mut c_int> = unsafe { img.get("tls_counter") }.unwrap();
            // SAFETY: p is this thread's instance of tls_counter, an int.
            assert_eq!(unsafe { **p }, 42);
            assert_eq!(img.live_tls_blocks(), 1);
        });
        assert_eq!(img.live_tls_blocks(), 0);
    }
}

/// An image dropped while threads still hold blocks of it frees them; those
/// threads then exit cleanly, and an image loaded after it (likely in the
/// same module slot) gives them fresh blocks, never the freed ones.
#[test]
fn dropping_an_image_under_live_threads_is_safe() {
    let _g = serial();
    let bytes = test_lib("tlsmodels");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let first = unsafe { ElfImage::load(&bytes) }.unwrap();
    let f1 = TlsFns::of(&first);
    let (to_main, from_thread) = std::sync::mpsc::channel::<()>();
    let (to_thread, from_main) = std::sync::mpsc::channel::<usize>();
    let worker = std::thread::spawn(move || {
        // SAFETY: the image is alive until this thread reports back.
        unsafe {
            assert_eq!((f1.counter_next)(), 43);
            assert_eq!((f1.counter_next)(), 44);
        }
        to_main.send(()).unwrap();
        // The address of the next image's counter_next function.
        let next = from_main.recv().unwrap();
        // SAFETY: the second image is alive until this thread is joined.
        let next: unsafe extern "C" fn() -> c_int = unsafe { std::mem::transmute(next) };
        // SAFETY: as above: the second image is alive, no arguments.
        let v = unsafe { next() };
        // SAFETY: as above.
        (v, unsafe { next() })
    });
    from_thread.recv().unwrap();
    assert_eq!(first.live_tls_blocks(), 1);
    drop(first);
    // SAFETY: a trusted test or machine library (its initialisers run).
    let second = unsafe { ElfImage::load(&bytes) }.unwrap();
    let f2 = TlsFns::of(&second);
    to_thread.send(f2.counter_next as usize).unwrap();
    assert_eq!(worker.join().unwrap(), (43, 44), "stale block reused");
    assert_eq!(second.live_tls_blocks(), 0);
}

type UuidGen = unsafe extern "C" fn(*mut u8);
type UuidType = unsafe extern "C" fn(*const u8) -> c_int;
type UuidUnparse = unsafe extern "C" fn(*const u8, *mut c_char);
type UuidParse = unsafe extern "C" fn(*const c_char, *mut u8) -> c_int;
type UuidTime = unsafe extern "C" fn(*const u8, *mut libc::timeval) -> libc::time_t;

/// Time-based UUIDs from `threads` threads × `n` each, as strings, plus
/// every UUID's time.
fn uuids_from_threads(lib: &impl Library, threads: usize, n: usize) -> Vec<(String, i64)> {
    // SAFETY: libuuid's signatures.
    let (gen, ty, unparse, time): (UuidGen, UuidType, UuidUnparse, UuidTime) = unsafe {
        (
            *lib.get("uuid_generate_time").unwrap(),
            *lib.get("uuid_type").unwrap(),
            *lib.get("uuid_unparse_lower").unwrap(),
            *lib.get("uuid_time").unwrap(),
        )
    };
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    (0..n)
                        .map(|_| {
                            let mut u = [0u8; 16];
                            let mut text = [0 as c_char; 37];
                            // SAFETY: a 16-byte uuid_t and a 37-byte buffer.
                            unsafe {
                                gen(u.as_mut_ptr());
                                assert_eq!(ty(u.as_ptr()), 1, "time-based UUID");
                                unparse(u.as_ptr(), text.as_mut_ptr());
                                let t = time(u.as_ptr(), std::ptr::null_mut());
                                let s = CStr::from_ptr(text.as_ptr());
                                (s.to_str().unwrap().to_owned(), t as i64)
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// libuuid keeps its time-UUID generator state in (local-dynamic) TLS with
/// non-zero initial values; loaded from bytes it generates valid, unique,
/// current time-based UUIDs from several threads at once, like the system
/// loader's copy, and every thread's block is freed at its exit.
#[test]
fn libuuid_tls_from_several_threads_matches_the_system_loader() {
    let _g = serial();
    let bytes = machine_lib("libuuid.so.1");
    let elf = Elf::parse(&bytes).unwrap();
    assert!(elf
        .program_headers
        .iter()
        .any(|p| p.p_type == goblin::elf::program_header::PT_TLS));
    let (r, flags) = tls_relocations(&bytes);
    // Dynamic TLS: __tls_get_addr on x86_64, descriptors on aarch64.
    assert!(
        r.iter()
            .any(|&(t, _)| t == rel::DTPMOD || t == rel::TLSDESC),
        "{r:?}"
    );
    assert!(!r.iter().any(|&(t, _)| t == rel::TPOFF), "{r:?}");
    assert_eq!(flags & goblin::elf::dynamic::DF_STATIC_TLS, 0);

    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_no_wx();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (backend, uuids) in [
        ("memdl", uuids_from_threads(&img, 6, 40)),
        ("system", uuids_from_threads(&sys, 6, 40)),
    ] {
        let unique: HashSet<_> = uuids.iter().map(|(u, _)| u).collect();
        assert_eq!(unique.len(), 240, "{backend}: duplicate UUIDs");
        for (u, t) in &uuids {
            assert_eq!(u.as_bytes()[14], b'1', "{backend}: version of {u}");
            assert!(
                (t - now).abs() < 600,
                "{backend}: {u} has time {t}, now {now}"
            );
        }
    }
    assert_eq!(img.live_tls_blocks(), 0);

    // Parsing and printing agree between the backends.
    let ours = uuid_roundtrip(&img);
    assert_eq!(ours, "0123ABCD-4567-89EF-0123-456789ABCDEF");
    assert_eq!(ours, uuid_roundtrip(&sys));
}

fn uuid_roundtrip(lib: &impl Library) -> String {
    // SAFETY: libuuid's signatures.
    let (parse, unparse): (UuidParse, UuidUnparse) = unsafe {
        (
            *lib.get("uuid_parse").unwrap(),
            *lib.get("uuid_unparse_upper").unwrap(),
        )
    };
    let mut u = [0u8; 16];
    let mut buf = [0 as c_char; 37];
    // SAFETY: buffers of the documented sizes.
    unsafe {
        assert_eq!(
            parse(
                c"0123abcd-4567-89ef-0123-456789abcdef".as_ptr(),
                u.as_mut_ptr()
            ),
            0
        );
        unparse(u.as_ptr(), buf.as_mut_ptr());
        CStr::from_ptr(buf.as_ptr()).to_str().unwrap().to_owned()
    }
}

/// Blocks of a 48 MiB TLS variable (each mapped by the allocator on its
/// own): the memory of a thread's block is gone after that thread exits,
/// and after the image is dropped while the thread still runs.
#[test]
fn big_blocks_are_returned_at_thread_exit_and_image_drop() {
    let _g = serial();
    let bytes = test_lib("tls_big");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: char *tls_big_touch(void).
    let touch: unsafe extern "C" fn() -> *mut u8 = *unsafe { img.get("tls_big_touch") }.unwrap();
    let mapped = |p: usize| !mappings_in(p, p + 1).is_empty();

    // Thread exit.
    let block = in_new_thread(|| {
        // SAFETY: a function of the live image.
        let p = unsafe { touch() } as usize;
        assert!(mapped(p));
        assert_eq!(img.live_tls_blocks(), 1);
        p
    });
    assert_eq!(img.live_tls_blocks(), 0);
    assert!(!mapped(block), "block of an exited thread still mapped");

    // Image drop under a live thread.
    let (to_main, touched) = std::sync::mpsc::channel();
    let (to_thread, go) = std::sync::mpsc::channel::<()>();
    let touch_addr = touch as usize;
    let worker = std::thread::spawn(move || {
        // SAFETY: the image is alive until main receives the address.
        let touch: unsafe extern "C" fn() -> *mut u8 = unsafe { std::mem::transmute(touch_addr) };
        // SAFETY: as above: the image is alive until main has the address.
        to_main.send(unsafe { touch() } as usize).unwrap();
        go.recv().unwrap();
    });
    let block = touched.recv().unwrap();
    assert!(mapped(block));
    drop(img);
    assert!(
        !mapped(block),
        "block still mapped after the image was dropped"
    );
    to_thread.send(()).unwrap();
    worker.join().unwrap();
}

/// Registers and values around TLS accesses survive: the descriptor
/// function saves what the descriptor ABI says it must not clobber.
#[test]
fn registers_survive_tls_accesses() {
    let _g = serial();
    type F = unsafe extern "C" fn(f64, f64, i64, i64) -> f64;
    for name in ["tlsmodels", "tlsmodels_desc"] {
        let bytes = test_lib(name);
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
        // SAFETY: tls_registers_survive's signature.
        let (f, g): (F, F) = unsafe {
            (
                *img.get("tls_registers_survive").unwrap(),
                *sys.get("tls_registers_survive").unwrap(),
            )
        };
        let (a, b, i, j) = (3.5, 1.25, 7, 9);
        let x = a * b;
        let expected = x
            + (a + b) * 2.0
            + (a - b) * 3.0
            + (a / b) * 4.0
            + (i * j * 5 + (i + j) * 6) as f64
            + f64::from(42 + x as i32);
        // The first call in a thread takes the slow path (allocating the
        // block), the second the fast one; the counter moves by x each time.
        let expected = |call: i32| expected + f64::from(call * x as i32);
        // SAFETY: functions of the live images, in fresh threads.
        let ours = in_new_thread(|| unsafe { (f(a, b, i, j), f(a, b, i, j)) });
        // SAFETY: as above.
        let theirs = in_new_thread(|| unsafe { (g(a, b, i, j), g(a, b, i, j)) });
        assert_eq!(ours, (expected(0), expected(1)), "{name}");
        // glibc before 2.40 lets its descriptor slow path clobber vector
        // registers (sourceware bug 31372): only its fast path is compared.
        if name == "tlsmodels" {
            assert_eq!(theirs.0, expected(0), "{name} on the system loader");
        }
        assert_eq!(theirs.1, expected(1), "{name} on the system loader");
    }
}

/// The block a late thread-exit destructor got.
static LATE_BLOCK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct UsesTlsAtExit(usize);

impl Drop for UsesTlsAtExit {
    fn drop(&mut self) {
        // SAFETY: char *tls_big_touch(void) of an image that outlives the
        // thread this runs on.
        let touch: unsafe extern "C" fn() -> *mut u8 =
            unsafe { std::mem::transmute::<usize, _>(self.0) };
        // SAFETY: the image outlives this thread; no arguments.
        let p = unsafe { touch() };
        // SAFETY: index 0 of the 48 MiB block was just written.
        assert_eq!(unsafe { *p }, 1);
        LATE_BLOCK.store(p as usize, std::sync::atomic::Ordering::SeqCst);
    }
}

thread_local! {
    static AT_EXIT: std::cell::Cell<Option<UsesTlsAtExit>> = const { std::cell::Cell::new(None) };
}

/// A host thread-exit destructor registered before the thread first used
/// the image's TLS runs after memdl's per-thread cache is gone and still
/// gets a valid, initialised block; that block belongs to no thread and is
/// freed with the image.
#[test]
fn tls_used_by_a_late_thread_exit_destructor() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("tls_big")) }.unwrap();
    let touch = img.symbol_address(b"tls_big_touch").unwrap() as usize;
    in_new_thread(|| {
        // Registered first, so destroyed after memdl's cache.
        AT_EXIT.with(|c| c.set(Some(UsesTlsAtExit(touch))));
        // SAFETY: char *tls_big_touch(void) of the live image.
        let f: unsafe extern "C" fn() -> *mut u8 = unsafe { std::mem::transmute(touch) };
        // SAFETY: the image outlives the scoped thread; no arguments.
        unsafe { f() };
    });
    let late = LATE_BLOCK.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(late, 0, "the late destructor did not run");
    assert_eq!(img.live_tls_blocks(), 1, "the late destructor's block");
    assert!(!mappings_in(late, late + 1).is_empty());
    drop(img);
    assert!(
        mappings_in(late, late + 1).is_empty(),
        "orphan block leaked"
    );
}
