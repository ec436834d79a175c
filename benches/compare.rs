//! memdl against the system loader, the peer pure-Rust loader `elf_loader`
//! and the floor (`support/floor.rs`: the copy/map and `mprotect`s any
//! loader must do, nothing else), in one run.
//!
//! `cargo bench --bench compare` (a few minutes); one group only:
//! `cargo bench --bench compare -- 'load/sqlite3'`.
//!
//! Groups:
//! * `load/<lib>`: load + first lookup + drop, for every loader;
//! * `lookup/<lib>`: one hit and one miss, memdl `get` vs `dlsym` vs
//!   elf_loader, and every export of the library in turn (memdl, `dlsym`);
//! * `scaling/<n>`: generated libraries with n exports and n relocations;
//! * `threads/<lib>`: two loads on one thread vs one load on each of two
//!   threads, memdl and the floor.
//!
//! Fault and syscall counts per load (noise-free) come from
//! `benches/counts.rs` and `benches/syscalls.sh`.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::fs::File;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use memdl::{ElfImage, SystemImage};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/floor.rs"]
mod floor;
#[path = "support/own_exports.rs"]
mod own_exports;
use common::{machine_lib_path, test_lib_path};

/// A library under test and the symbol looked up in it.
struct Lib {
    name: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
    symbol: &'static CStr,
}

impl Lib {
    fn new(name: &'static str, path: PathBuf, symbol: &'static CStr) -> Lib {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Lib {
            name,
            path,
            bytes,
            symbol,
        }
    }
    fn sym(&self) -> &[u8] {
        self.symbol.to_bytes()
    }
}

fn libraries() -> Vec<Lib> {
    keep_libm_loaded();
    vec![
        Lib::new("example", test_lib_path("example"), c"add"),
        Lib::new("zlib", machine_lib_path("libz.so.1"), c"crc32"),
        Lib::new(
            "sqlite3",
            machine_lib_path("libsqlite3.so.0"),
            c"sqlite3_libversion",
        ),
        Lib::new("gmp", machine_lib_path("libgmp.so.10"), c"__gmpz_init"),
    ]
}

/// Keeps `libm.so.6` loaded for the whole run, as it is in most C and C++
/// host processes (a Rust binary does not link it). sqlite3 needs it:
/// otherwise every load of sqlite3, by dlopen and by memdl alike, also
/// loads and unloads libm (~70 µs), which is not the cost of loading
/// sqlite3. The handle is never closed.
fn keep_libm_loaded() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the system's libm; loading it runs its trusted initialisers.
        let h = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "libm.so.6 not found");
    });
}

fn dlopen(lib: &Lib, flags: i32) -> libloading::os::unix::Library {
    // SAFETY: the machine's own libraries and the crate's test libraries run
    // trusted initialisers.
    unsafe { libloading::os::unix::Library::open(Some(&lib.path), flags) }.unwrap()
}

/// What elf_loader's symbol closure asks after the library's own exports
/// (`own_exports`): the process's global scope, as memdl's default chain
/// (without symbol versions, which elf_loader does not pass).
fn global(name: &str) -> Option<*const ()> {
    let mut buf = [0u8; 256];
    let n = name.len().min(255);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: a lookup of a NUL-terminated name in the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, buf.as_ptr().cast()) };
    (!p.is_null()).then_some(p as *const ())
}

/// Loads `lib` with elf_loader and runs `f` on it (the loaded library
/// borrows the resolver closure, so it cannot be returned).
fn elf_loader_with<R>(
    lib: &Lib,
    own: &HashMap<String, usize>,
    f: impl FnOnce(&elf_loader::RelocatedDylib<'_>) -> R,
) -> Result<R, String> {
    let mut loader = elf_loader::Loader::<elf_loader::mmap::MmapImpl>::new();
    let raw = loader
        .load_dylib(
            elf_loader::object::ElfBinary::new(lib.name, &lib.bytes),
            Some(false),
        )
        .map_err(|e| format!("{e:?}"))?;
    let base = raw.base();
    let find = |name: &str| {
        own.get(name)
            .map(|&v| (base + v) as *const ())
            .or_else(|| global(name))
    };
    let l = raw
        .easy_relocate([].iter(), &find)
        .map_err(|e| format!("{e:?}"))?;
    Ok(f(&l))
}

/// Whether elf_loader loads `lib` at all (it panics or errors on some):
/// checked once, outside any measurement.
fn elf_loader_can_load(lib: &Lib, own: &HashMap<String, usize>) -> bool {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        elf_loader_with(lib, own, |l| {
            // SAFETY: only the address is read.
            unsafe { l.get::<*const c_void>(lib.symbol.to_str().unwrap()) }
                .map(|_| ())
                .ok_or_else(|| "symbol not found".to_owned())
        })?
    }));
    match ok {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            eprintln!("elf_loader cannot load {}: {e}", lib.name);
            false
        }
        Err(_) => {
            eprintln!("elf_loader cannot load {}: it panicked", lib.name);
            false
        }
    }
}

fn load(c: &mut Criterion) {
    for lib in libraries() {
        let file = File::open(&lib.path).unwrap();
        let len = lib.bytes.len() as u64;
        let plan = floor::Plan::new(&lib.bytes);
        let sym = lib.sym();
        let mut g = c.benchmark_group(format!("load/{}", lib.name));
        g.bench_function("floor (copy)", |b| {
            b.iter(|| floor::load_copy(&plan, black_box(&lib.bytes)))
        });
        g.bench_function("floor (map file)", |b| {
            b.iter(|| floor::load_mapped(&plan, black_box(&file)))
        });
        g.bench_function("floor (map file, touch)", |b| {
            b.iter(|| floor::load_mapped_touched(&plan, black_box(&file)))
        });
        g.bench_function("memdl load", |b| {
            b.iter(|| {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { ElfImage::load(black_box(&lib.bytes)) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            })
        });
        g.bench_function("memdl load_fd", |b| {
            b.iter(|| {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            })
        });
        g.bench_function("memdl system (memfd+dlopen)", |b| {
            b.iter(|| {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { SystemImage::load(black_box(&lib.bytes)) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            })
        });
        for (label, flags) in [
            ("dlopen RTLD_NOW", libc::RTLD_NOW | libc::RTLD_LOCAL),
            ("dlopen RTLD_LAZY", libc::RTLD_LAZY | libc::RTLD_LOCAL),
        ] {
            g.bench_function(label, |b| {
                b.iter(|| {
                    let l = dlopen(&lib, flags);
                    // SAFETY: only the address is read.
                    black_box(
                        *unsafe { l.get::<*const c_void>(lib.symbol.to_bytes_with_nul()) }.unwrap(),
                    );
                })
            });
        }
        let own = own_exports::exports(&lib.bytes);
        if elf_loader_can_load(&lib, &own) {
            g.bench_function("elf_loader", |b| {
                b.iter(|| {
                    elf_loader_with(&lib, &own, |l| {
                        // SAFETY: only the address is read.
                        black_box(
                            unsafe { l.get::<*const c_void>(lib.symbol.to_str().unwrap()) }
                                .map(|s| s.into_raw()),
                        );
                    })
                    .unwrap()
                })
            });
        }
        g.finish();
    }
}

fn lookup(c: &mut Criterion) {
    for lib in libraries() {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&lib.bytes) }.unwrap();
        let sys = dlopen(&lib, libc::RTLD_NOW | libc::RTLD_LOCAL);
        let handle = sys.into_raw();
        let sym = lib.sym();
        let mut g = c.benchmark_group(format!("lookup/{}", lib.name));
        g.bench_function("memdl get hit", |b| {
            // SAFETY: only the address is read.
            b.iter(|| {
                unsafe { img.get::<*const c_void>(black_box(sym)) }
                    .unwrap()
                    .as_ptr()
            })
        });
        g.bench_function("dlsym hit", |b| {
            // SAFETY: a live handle and a NUL-terminated name.
            b.iter(|| unsafe { libc::dlsym(handle, black_box(lib.symbol).as_ptr()) })
        });
        // Every export, one after the other: the index serves each name,
        // not just one repeated name that stays in cache.
        let names: Vec<Vec<u8>> = img.exports().map(|(n, _)| n.to_vec()).collect();
        let cnames: Vec<std::ffi::CString> = names
            .iter()
            .map(|n| std::ffi::CString::new(n.clone()).unwrap())
            .collect();
        g.bench_function("memdl get hit, every export in turn", |b| {
            let mut i = 0;
            b.iter(|| {
                let name = &names[i];
                i = if i + 1 == names.len() { 0 } else { i + 1 };
                // SAFETY: only the address is read.
                unsafe { img.get::<*const c_void>(black_box(name)) }
                    .unwrap()
                    .as_ptr()
            })
        });
        g.bench_function("dlsym hit, every export in turn", |b| {
            let mut i = 0;
            b.iter(|| {
                let name = &cnames[i];
                i = if i + 1 == cnames.len() { 0 } else { i + 1 };
                // SAFETY: a live handle and a NUL-terminated name.
                unsafe { libc::dlsym(handle, black_box(name).as_ptr()) }
            })
        });
        g.bench_function("memdl get miss", |b| {
            // SAFETY: only the address is read.
            b.iter(|| unsafe { img.get::<*const c_void>(black_box(b"no_such_symbol")) }.is_err())
        });
        g.bench_function("dlsym miss", |b| {
            // SAFETY: as above.
            b.iter(|| unsafe { libc::dlsym(handle, black_box(c"no_such_symbol").as_ptr()) })
        });
        let own = own_exports::exports(&lib.bytes);
        if elf_loader_can_load(&lib, &own) {
            let name = lib.symbol.to_str().unwrap();
            elf_loader_with(&lib, &own, |peer| {
                g.bench_function("elf_loader get hit", |b| {
                    // SAFETY: only the address is read.
                    b.iter(|| {
                        unsafe { peer.get::<*const c_void>(black_box(name)) }.map(|s| s.into_raw())
                    })
                });
                g.bench_function("elf_loader get miss", |b| {
                    // SAFETY: as above.
                    b.iter(|| {
                        unsafe { peer.get::<*const c_void>(black_box("no_such_symbol")) }.is_none()
                    })
                });
            })
            .unwrap();
        }
        g.finish();
        // SAFETY: the handle from `into_raw`, closed once.
        unsafe { libc::dlclose(handle) };
    }
}

/// Every import of `bytes` with its required version, and its `DT_NEEDED`s.
#[allow(clippy::type_complexity)]
fn imports(bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>) {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    let mut versions = HashMap::new();
    if let Some(vn) = &elf.verneed {
        for need in vn.iter() {
            for aux in need.iter() {
                if let Some(n) = elf.dynstrtab.get_at(aux.vna_name) {
                    versions.insert(aux.vna_other & 0x7fff, n.as_bytes().to_vec());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, sym) in elf.dynsyms.iter().enumerate() {
        let name = elf.dynstrtab.get_at(sym.st_name).unwrap_or("");
        if sym.st_shndx != 0 || name.is_empty() {
            continue;
        }
        let v = elf
            .versym
            .as_ref()
            .and_then(|vs| vs.get_at(i))
            .and_then(|v| versions.get(&(v.vs_val & 0x7fff)).cloned());
        out.push((name.as_bytes().to_vec(), v));
    }
    let needed = elf
        .libraries
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    (needed, out)
}

/// Import resolution alone: each import of the library through memdl's
/// chain (global scope with versions, then DT_NEEDED), per import.
fn import_resolution(c: &mut Criterion) {
    for lib in libraries().into_iter().filter(|l| l.name != "example") {
        let (needed, list) = imports(&lib.bytes);
        #[cfg(feature = "test-hooks")]
        let needed: Vec<&[u8]> = needed.iter().map(|n| &n[..]).collect();
        #[cfg(not(feature = "test-hooks"))]
        drop(needed);
        let list: Vec<(&[u8], Option<&[u8]>)> =
            list.iter().map(|(n, v)| (&n[..], v.as_deref())).collect();
        let cnames: Vec<(std::ffi::CString, Option<std::ffi::CString>)> = list
            .iter()
            .map(|(n, v)| {
                (
                    std::ffi::CString::new(*n).unwrap(),
                    v.map(|v| std::ffi::CString::new(v).unwrap()),
                )
            })
            .collect();
        let mut g = c.benchmark_group(format!("imports/{}", lib.name));
        g.throughput(criterion::Throughput::Elements(list.len() as u64));
        // memdl's chain alone is reached through a test hook.
        #[cfg(feature = "test-hooks")]
        g.bench_function(format!("memdl resolve x{}", list.len()), |b| {
            b.iter(|| ElfImage::__bench_resolve(&needed, black_box(&list)))
        });
        g.bench_function(format!("dlvsym(RTLD_DEFAULT) x{}", list.len()), |b| {
            b.iter(|| {
                cnames
                    .iter()
                    .filter(|(n, v)| {
                        // SAFETY: lookups of NUL-terminated names.
                        let p = unsafe {
                            match v {
                                Some(v) => libc::dlvsym(libc::RTLD_DEFAULT, n.as_ptr(), v.as_ptr()),
                                None => libc::dlsym(libc::RTLD_DEFAULT, n.as_ptr()),
                            }
                        };
                        !p.is_null()
                    })
                    .count()
            })
        });
        g.finish();
    }
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("scaling");
    for n in [1_000usize, 10_000, 100_000] {
        let lib = Lib::new("scale", test_lib_path(&format!("scale{n}")), c"v0");
        let plan = floor::Plan::new(&lib.bytes);
        if n == 100_000 {
            g.sample_size(10);
        }
        g.bench_with_input(BenchmarkId::new("floor (copy)", n), &n, |b, _| {
            b.iter(|| floor::load_copy(&plan, &lib.bytes))
        });
        g.bench_with_input(BenchmarkId::new("memdl load", n), &n, |b, _| {
            b.iter(|| {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { ElfImage::load(&lib.bytes) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(b"v0") }.unwrap().as_ptr());
            })
        });
        g.bench_with_input(BenchmarkId::new("dlopen RTLD_NOW", n), &n, |b, _| {
            b.iter(|| drop(black_box(dlopen(&lib, libc::RTLD_NOW | libc::RTLD_LOCAL))))
        });
    }
    g.finish();
}

/// `iters` loads on each of `threads` threads; returns the time per load
/// (total wall time × threads / (iters × threads) = wall time / iters).
fn run_threads(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    f()
                }
            });
        }
    });
    start.elapsed() / threads as u32
}

fn threads(c: &mut Criterion) {
    for lib in libraries().into_iter().filter(|l| l.name != "gmp") {
        let plan = floor::Plan::new(&lib.bytes);
        // SAFETY: a trusted test or machine library (its initialisers run).
        let memdl = || drop(black_box(unsafe { ElfImage::load(&lib.bytes) }.unwrap()));
        let floor = || floor::load_copy(&plan, &lib.bytes);
        let mut g = c.benchmark_group(format!("threads/{}", lib.name));
        for (name, f) in [
            ("memdl load", &memdl as &(dyn Fn() + Sync)),
            ("floor (copy)", &floor),
        ] {
            for t in [1usize, 2] {
                g.bench_function(format!("{name} x{t} threads"), |b| {
                    b.iter_custom(|iters| run_threads(t, iters, f))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    targets = load, lookup, import_resolution, scaling, threads
}
criterion_main!(benches);
