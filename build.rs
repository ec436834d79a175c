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
    // Sandbox policy (tests/sandbox.rs): a constructor with a side effect on
    // a host import, memdl's dlsym/dladdr/dlerror, and __tls_get_addr; no libc.
    c_with(
        "sandboxed",
        &["sandboxed.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
    c_with(
        "sandboxdl",
        &["sandboxdl.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
    c_with(
        "sandboxtls",
        &["sandboxtls.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
];

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
    for lib in DYLIBS {
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
