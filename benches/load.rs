//! Load+drop and symbol lookup: memdl's loader against the system backend,
//! on a small test library and on the machine's zlib.
//!
//! `cargo bench --bench load`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use memdl::{ElfImage, Library, SystemImage};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{machine_lib, test_lib};

fn libraries() -> Vec<(&'static str, Vec<u8>, &'static [u8])> {
    vec![
        ("example", test_lib("example"), b"add"),
        ("zlib", machine_lib("libz.so.1"), b"crc32"),
    ]
}

fn load_and_drop(c: &mut Criterion) {
    for (name, bytes, _) in libraries() {
        let mut g = c.benchmark_group(format!("load+drop/{name}"));
        g.bench_function("memdl", |b| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            b.iter(|| drop(black_box(unsafe { ElfImage::load(&bytes) }.unwrap())))
        });
        g.bench_function("memfd+dlopen", |b| {
            // SAFETY: a trusted test or machine library (its initialisers run).
            b.iter(|| drop(black_box(unsafe { SystemImage::load(&bytes) }.unwrap())))
        });
        g.finish();
    }
}

fn lookup(c: &mut Criterion) {
    for (name, bytes, symbol) in libraries() {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let custom = unsafe { ElfImage::load(&bytes) }.unwrap();
        // SAFETY: a trusted test or machine library (its initialisers run).
        let system = unsafe { SystemImage::load(&bytes) }.unwrap();
        let mut g = c.benchmark_group(format!("lookup/{name}"));
        g.bench_function("memdl", |b| {
            b.iter(|| custom.symbol_address(black_box(symbol)).unwrap())
        });
        g.bench_function("memfd+dlopen", |b| {
            b.iter(|| system.symbol_address(black_box(symbol)).unwrap())
        });
        g.bench_function("memdl miss", |b| {
            b.iter(|| custom.symbol_address(black_box(b"no_such_symbol")).is_err())
        });
        g.bench_function("memfd+dlopen miss", |b| {
            b.iter(|| system.symbol_address(black_box(b"no_such_symbol")).is_err())
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = load_and_drop, lookup
}
criterion_main!(benches);
