//! Loading a large library (the machine's SQLite) with memdl's loader from
//! bytes (every segment copied) against `load_fd` from the file (segments
//! mapped from the page cache), and the same for the system backend. Before
//! timing, prints what each way costs in resident memory per loaded image.
//!
//! `cargo bench --bench load_fd`

use std::fs::File;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use memdl::{ElfImage, Library, SystemImage};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{machine_lib, machine_lib_path};

const LIB: &str = "libsqlite3.so.0";

/// (anonymous, file-backed) resident KiB of this process.
fn rss_kib() -> (i64, i64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> i64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
}

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a writable struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt
}

/// Calls into the image so its code and data are really touched.
fn use_it(lib: &dyn Library) -> i32 {
    let f = lib.symbol_address(b"sqlite3_libversion_number").unwrap();
    // SAFETY: `int sqlite3_libversion_number(void)`.
    let f: unsafe extern "C" fn() -> i32 = unsafe { std::mem::transmute(f) };
    // SAFETY: see above.
    unsafe { f() }
}

/// Loads `N` images at once and prints the memory each one cost.
fn report(name: &str, load: &dyn Fn() -> Box<dyn Library>) {
    const N: i64 = 8;
    let warm = load();
    use_it(&*warm);
    drop(warm);
    let (anon0, file0) = rss_kib();
    let faults0 = minor_faults();
    let images: Vec<_> = (0..N)
        .map(|_| {
            let img = load();
            use_it(&*img);
            img
        })
        .collect();
    let (anon1, file1) = rss_kib();
    let faults1 = minor_faults();
    println!(
        "{LIB} {name:<24} per image: {:>6} KiB anonymous, {:>6} KiB file+shmem resident, {:>6} minor faults",
        (anon1 - anon0) / N,
        (file1 - file0) / N,
        (faults1 - faults0) / N
    );
    drop(images);
}

fn load_fd(c: &mut Criterion) {
    let bytes = machine_lib(LIB);
    let file = File::open(machine_lib_path(LIB)).unwrap();
    let len = file.metadata().unwrap().len();
    // A container with the library at an unaligned offset: load_fd copies.
    let mut container = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut container, &[0u8; 1000]).unwrap();
    std::io::Write::write_all(&mut container, &bytes).unwrap();

    report("ElfImage::load (copy)", &|| {
        // SAFETY: a trusted test or machine library (its initialisers run).
        Box::new(unsafe { ElfImage::load(&bytes) }.unwrap())
    });
    report("ElfImage::load_fd", &|| {
        // SAFETY: a trusted test or machine library (its initialisers run).
        Box::new(unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap())
    });
    report("ElfImage::load_fd unaligned", &|| {
        // SAFETY: a trusted test or machine library (its initialisers run).
        Box::new(unsafe { ElfImage::load_fd(&container, 1000, len) }.unwrap())
    });
    report("SystemImage::load", &|| {
        // SAFETY: a trusted test or machine library (its initialisers run).
        Box::new(unsafe { SystemImage::load(&bytes) }.unwrap())
    });
    // glibc recognises the same file (device, inode) and shares one object.
    report("SystemImage::load_fd", &|| {
        // SAFETY: a trusted test or machine library (its initialisers run).
        Box::new(unsafe { SystemImage::load_fd(&file, 0, len) }.unwrap())
    });

    let mut g = c.benchmark_group(format!("load+call+drop/{LIB}"));
    g.bench_function("ElfImage::load (copy)", |b| {
        b.iter(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load(&bytes) }.unwrap();
            black_box(use_it(&img))
        })
    });
    g.bench_function("ElfImage::load_fd (mapped)", |b| {
        b.iter(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
            black_box(use_it(&img))
        })
    });
    g.bench_function("ElfImage::load_fd unaligned (copied)", |b| {
        b.iter(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load_fd(&container, 1000, len) }.unwrap();
            black_box(use_it(&img))
        })
    });
    g.bench_function("SystemImage::load (memfd)", |b| {
        b.iter(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { SystemImage::load(&bytes) }.unwrap();
            black_box(use_it(&img))
        })
    });
    g.bench_function("SystemImage::load_fd (the file)", |b| {
        b.iter(|| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { SystemImage::load_fd(&file, 0, len) }.unwrap();
            black_box(use_it(&img))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = load_fd
}
criterion_main!(benches);
