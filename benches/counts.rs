//! Counts per load that do not depend on noise: minor page faults
//! (`getrusage`), and CPU time (which leaves out waiting for a busy CPU),
//! for every loader and library of `compare.rs`.
//!
//! `cargo bench --bench counts` prints the table. With arguments it runs
//! one case `n` times and nothing else, for `benches/syscalls.sh` to count
//! its system calls under `strace -c`:
//! `target/release/deps/counts-* <loader> <lib> <n>` (n = 0 is the baseline).

use std::ffi::c_void;
use std::fs::File;
use std::hint::black_box;
use std::path::PathBuf;

use memdl::{ElfImage, SystemImage};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/floor.rs"]
mod floor;

const LOADERS: &[&str] = &[
    "floor-copy",
    "floor-map",
    "floor-map-touch",
    "memdl-load",
    "memdl-load_fd",
    "memdl-system",
    "dlopen-now",
    "dlopen-lazy",
];

fn library(name: &str) -> (PathBuf, &'static [u8]) {
    keep_libm_loaded();
    match name {
        "example" => (common::test_lib_path("example"), b"add"),
        "zlib" => (common::machine_lib_path("libz.so.1"), b"crc32"),
        "sqlite3" => (
            common::machine_lib_path("libsqlite3.so.0"),
            b"sqlite3_libversion",
        ),
        "gmp" => (common::machine_lib_path("libgmp.so.10"), b"__gmpz_init"),
        other => panic!("unknown library {other}"),
    }
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

/// CPU time of the calling thread, in seconds.
fn thread_cpu_time() -> f64 {
    // SAFETY: clock_gettime fills the zeroed struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Runs `loader` on `lib` `n` times: load, look up, drop.
fn run(loader: &str, lib: &str, n: usize) {
    let (path, sym) = library(lib);
    let bytes = std::fs::read(&path).unwrap();
    let file = File::open(&path).unwrap();
    let plan = floor::Plan::new(&bytes);
    let mut csym = sym.to_vec();
    csym.push(0);
    for _ in 0..n {
        match loader {
            "floor-copy" => floor::load_copy(&plan, &bytes),
            "floor-map" => floor::load_mapped(&plan, &file),
            "floor-map-touch" => floor::load_mapped_touched(&plan, &file),
            "memdl-load" => {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { ElfImage::load(&bytes) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            }
            "memdl-load_fd" => {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { ElfImage::load_fd(&file, 0, bytes.len() as u64) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            }
            "memdl-system" => {
                // SAFETY: a trusted test or machine library (its initialisers run).
                let img = unsafe { SystemImage::load(&bytes) }.unwrap();
                // SAFETY: only the address is read.
                black_box(unsafe { img.get::<*const c_void>(sym) }.unwrap().as_ptr());
            }
            "dlopen-now" | "dlopen-lazy" => {
                let flags = if loader == "dlopen-now" {
                    libc::RTLD_NOW
                } else {
                    libc::RTLD_LAZY
                };
                let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
                // SAFETY: trusted libraries; the handle is closed below.
                unsafe {
                    let h = libc::dlopen(cpath.as_ptr(), flags | libc::RTLD_LOCAL);
                    assert!(!h.is_null());
                    black_box(libc::dlsym(h, csym.as_ptr().cast()));
                    libc::dlclose(h);
                }
            }
            other => panic!("unknown loader {other}"),
        }
    }
}

/// Resolves `lib`'s imports (undefined dynamic symbols, with their
/// required versions) through memdl's chain `n` times, for instructions
/// per import under callgrind. Prints the number of imports. (The chain
/// alone is reached through a test hook.)
#[cfg(feature = "test-hooks")]
fn resolves(lib: &str, n: usize) {
    let (path, _) = library(lib);
    let bytes = std::fs::read(&path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let mut versions = std::collections::HashMap::new();
    if let Some(vn) = &elf.verneed {
        for need in vn.iter() {
            for aux in need.iter() {
                if let Some(name) = elf.dynstrtab.get_at(aux.vna_name) {
                    versions.insert(aux.vna_other & 0x7fff, name.as_bytes());
                }
            }
        }
    }
    let imports: Vec<(&[u8], Option<&[u8]>)> = elf
        .dynsyms
        .iter()
        .enumerate()
        .filter(|(_, s)| s.st_shndx == 0 && s.st_name != 0)
        .map(|(i, s)| {
            let name = elf.dynstrtab.get_at(s.st_name).unwrap_or("").as_bytes();
            let version = elf
                .versym
                .as_ref()
                .and_then(|vs| vs.get_at(i))
                .and_then(|v| versions.get(&(v.vs_val & 0x7fff)).copied());
            (name, version)
        })
        .collect();
    let needed: Vec<&[u8]> = elf.libraries.iter().map(|l| l.as_bytes()).collect();
    // One warm-up pass fills the cache, as the first load of a process does.
    memdl::ElfImage::__bench_resolve(&needed, &imports);
    for _ in 0..n {
        black_box(memdl::ElfImage::__bench_resolve(
            &needed,
            black_box(&imports),
        ));
    }
    eprintln!("{} imports", imports.len());
}

/// Loads `lib` once and looks its symbol up `n` times (`kind`: `hit`,
/// `miss`, `dlsym-hit`, `dlsym-miss`), for instruction counts per lookup
/// under `valgrind --tool=callgrind`.
fn lookups(kind: &str, lib: &str, n: usize) {
    let (path, sym) = library(lib);
    let bytes = std::fs::read(&path).unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: trusted libraries; closed at the end.
    let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let csym = std::ffi::CString::new(sym).unwrap();
    for _ in 0..n {
        match kind {
            // SAFETY: only the address is read.
            "hit" => drop(black_box(
                unsafe { img.get::<*const c_void>(black_box(sym)) }.unwrap(),
            )),
            // SAFETY: as above.
            "miss" => drop(black_box(
                unsafe { img.get::<*const c_void>(black_box(b"no_such_symbol")) }.is_err(),
            )),
            // SAFETY: a live handle and NUL-terminated names.
            "dlsym-hit" => drop(black_box(unsafe {
                libc::dlsym(h, black_box(csym.as_ptr()))
            })),
            // SAFETY: as above.
            "dlsym-miss" => drop(black_box(unsafe {
                libc::dlsym(h, black_box(c"no_such_symbol".as_ptr()))
            })),
            other => panic!("unknown lookup kind {other}"),
        }
    }
    // SAFETY: opened above.
    unsafe { libc::dlclose(h) };
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [loader, lib, n] = &args[..] {
        if loader == "resolve" {
            #[cfg(feature = "test-hooks")]
            resolves(lib, n.parse().unwrap());
            #[cfg(not(feature = "test-hooks"))]
            panic!("resolve {lib} {n}: needs the test-hooks feature");
        } else if let Some(kind) = loader.strip_prefix("lookup-") {
            lookups(kind, lib, n.parse().unwrap());
        } else {
            run(loader, lib, n.parse().unwrap());
        }
        return;
    }
    const N: u64 = 50;
    const BATCHES: usize = 7;
    let libs = ["example", "zlib", "sqlite3", "gmp"];
    let header = || {
        print!("{:<10}", "library");
        for l in LOADERS {
            print!(" {l:>14}");
        }
        println!();
    };
    println!(
        "CPU time (µs, this thread's user + system time, CLOCK_THREAD_CPUTIME_ID) per \
         load + lookup + drop: median of {BATCHES} batches of {N}; time spent waiting for a \
         busy CPU does not count"
    );
    header();
    let mut faults = Vec::new();
    for lib in libs {
        print!("{lib:<10}");
        let mut row = Vec::new();
        for loader in LOADERS {
            run(loader, lib, 5);
            let mut times: Vec<f64> = (0..BATCHES)
                .map(|_| {
                    let start = thread_cpu_time();
                    run(loader, lib, N as usize);
                    (thread_cpu_time() - start) * 1e6 / N as f64
                })
                .collect();
            times.sort_by(f64::total_cmp);
            print!(" {:>14.1}", times[BATCHES / 2]);
            let before = floor::minor_faults();
            run(loader, lib, N as usize);
            row.push((floor::minor_faults() - before) as f64 / N as f64);
        }
        println!();
        faults.push((lib, row));
    }
    println!();
    println!("minor page faults per load + lookup + drop (mean of {N}, after 5 warm-up loads)");
    header();
    for (lib, row) in faults {
        print!("{lib:<10}");
        for f in row {
            print!(" {f:>14.1}");
        }
        println!();
    }
}
