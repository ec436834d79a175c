//! Compiles the test libraries in `test-dylibs/` into shared objects in
//! `$OUT_DIR/test-dylibs`, with the C compiler `cc` picks for the target (so
//! `CC_aarch64_unknown_linux_gnu` and friends are honoured when cross
//! compiling). Tests, benches and the CLI's built-in example find them
//! through `env!("MEMDL_TEST_LIB_DIR")`.
//!
//! Only Linux targets get the libraries (the tests and the CLI example run
//! there); elsewhere the crate builds without them and `memdl_test_dylibs`
//! is not set.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One test library: output name, sources, language and extra flags.
struct Dylib {
    name: &'static str,
    sources: &'static [&'static str],
    cpp: bool,
    flags: &'static [&'static str],
}

const fn c(name: &'static str, sources: &'static [&'static str]) -> Dylib {
    Dylib {
        name,
        sources,
        cpp: false,
        flags: &[],
    }
}

const fn c_with(
    name: &'static str,
    sources: &'static [&'static str],
    flags: &'static [&'static str],
) -> Dylib {
    Dylib {
        name,
        sources,
        cpp: false,
        flags,
    }
}

/// Every test library. Add one here and drop its sources in `test-dylibs/`.
const DYLIBS: &[Dylib] = &[
    // The built-in example: arithmetic, data, pointer tables; no libc, no
    // startup files, no imports at all (like a compiled ML kernel).
    c_with(
        "example",
        &["example.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
    // libc imports: malloc/free, snprintf, qsort calling back a comparator.
    c("uselibc", &["uselibc.c"]),
    // Thread-local storage in the default dialect for -fPIC code (TLS
    // descriptors on aarch64, __tls_get_addr on x86_64).
    c("tls", &["tls.c"]),
    // The same with initial-exec: static TLS, which memdl refuses.
    c_with("tls_ie", &["tls.c"], &["-ftls-model=initial-exec"]),
    // Indirect functions: IRELATIVE, an exported STT_GNU_IFUNC, resolver
    // arguments recorded.
    c_with(
        "ifunc",
        &["ifunc.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
    // The example linked for each page size the loader must handle, code
    // on its own pages (-z separate-code): 4 KiB (x86, most aarch64),
    // 16 KiB (Android), 64 KiB.
    c_with("pages4k", &["example.c"], PAGES_4K),
    c_with("pages16k", &["example.c"], PAGES_16K),
    c_with("pages64k", &["example.c"], PAGES_64K),
];

const PAGES_4K: &[&str] = &[
    "-nostdlib",
    "-fno-stack-protector",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,separate-code",
];
const PAGES_16K: &[&str] = &[
    "-nostdlib",
    "-fno-stack-protector",
    "-Wl,-z,max-page-size=16384",
    "-Wl,-z,separate-code",
];
const PAGES_64K: &[&str] = &[
    "-nostdlib",
    "-fno-stack-protector",
    "-Wl,-z,max-page-size=65536",
    "-Wl,-z,separate-code",
];

/// Libraries only aarch64 builds.
const AARCH64_DYLIBS: &[Dylib] = &[
    // The descriptor call written out in assembly, checking which registers
    // memdl's TLS descriptor function preserves.
    c("tls_regs", &["tls.c", "tls_regs_aarch64.S"]),
    // The traditional dialect: DTPMOD/DTPREL and __tls_get_addr.
    c_with("tls_trad", &["tls.c"], &["-mtls-dialect=trad"]),
];

/// Libraries only x86_64 builds.
const X86_64_DYLIBS: &[Dylib] = &[
    // TLS descriptors, opt-in on x86_64.
    c_with("tls_desc", &["tls.c"], &["-mtls-dialect=gnu2"]),
];

/// The libraries of the target architecture (its TLS dialects and
/// assembly), by `CARGO_CFG_TARGET_ARCH`.
fn arch_dylibs(arch: &str) -> &'static [Dylib] {
    match arch {
        "aarch64" => AARCH64_DYLIBS,
        "x86_64" => X86_64_DYLIBS,
        _ => &[],
    }
}

/// Flags every test library gets: position-independent, optimised, and
/// linked for the largest page size memdl supports (64 KiB), so the same
/// objects load on 4, 16 and 64 KiB kernels.
const COMMON: &[&str] = &[
    "-shared",
    "-fPIC",
    "-O2",
    "-g0",
    "-Wall",
    "-Werror",
    "-Wl,-z,max-page-size=65536",
    "-Wl,--build-id=none",
];

fn main() {
    println!("cargo:rerun-if-changed=test-dylibs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(memdl_test_dylibs)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("test-dylibs");
    std::fs::create_dir_all(&out).expect("create test-dylibs output directory");
    let src = Path::new("test-dylibs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    for lib in DYLIBS.iter().chain(arch_dylibs(&arch)) {
        build(lib, src, &out);
    }
    println!("cargo:rustc-env=MEMDL_TEST_LIB_DIR={}", out.display());
    println!("cargo:rustc-cfg=memdl_test_dylibs");
}

fn build(lib: &Dylib, src: &Path, out: &Path) {
    let compiler = cc::Build::new()
        .cpp(lib.cpp)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .opt_level(2)
        .get_compiler();
    let output = out.join(format!("lib{}.so", lib.name));
    let mut cmd = Command::new(compiler.path());
    cmd.args(COMMON).args(lib.flags);
    for s in lib.sources {
        cmd.arg(src.join(s));
    }
    cmd.arg("-o").arg(&output);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", compiler.path().display()));
    assert!(
        status.success(),
        "building test library {}: {cmd:?} failed",
        lib.name
    );
}
