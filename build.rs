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

const fn cpp_with(
    name: &'static str,
    sources: &'static [&'static str],
    flags: &'static [&'static str],
) -> Dylib {
    Dylib {
        name,
        sources,
        cpp: true,
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
    // Dynamic TLS through __tls_get_addr (general and local dynamic) ...
    c("tls", &["tls.c"]),
    // ... and the same source through TLS descriptors (x86_64's gnu2
    // dialect; aarch64 uses descriptors by default).
    c_with("tlsdesc", &["tls.c"], &["-mtls-dialect=gnu2"]),
    // 48 MiB of tbss: leaked per-thread blocks show up as mappings.
    c("tls_big", &["tls_big.c"]),
    // Initial-exec TLS, which the custom loader refuses.
    c("tls_ie", &["tls_ie.c"]),
    // dladdr, dlsym, dlerror, dl_iterate_phdr called from loaded code.
    c_with("dlsvc", &["dlsvc.c"], &["-Wl,-soname,libdlsvc.so"]),
    // C++: static ctors/dtors, std containers, thread_local, exceptions.
    cpp_with("cxx", &["cxx.cpp"], &["-std=c++17"]),
];

/// Rust cdylibs built with the rustc that builds this crate, for the same
/// target: (output name, source in `test-dylibs/`).
const RUST_DYLIBS: &[(&str, &str)] = &[("rustlib", "rustlib.rs")];

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
    for &(name, source) in RUST_DYLIBS {
        build_rust(name, &src.join(source), &out);
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
    let aarch64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("aarch64");
    // gnu2 is x86's name for TLS descriptors; aarch64 calls them desc.
    let flags = lib.flags.iter().map(|&f| match f {
        "-mtls-dialect=gnu2" if aarch64 => "-mtls-dialect=desc",
        f => f,
    });
    cmd.args(COMMON).args(flags);
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

/// Builds a Rust cdylib with `$RUSTC` for `$TARGET`, linked by the target's
/// linker (`CARGO_TARGET_<T>_LINKER`, else the C compiler cc picks for the
/// target), unwinding panics, same page-size layout as the C libraries.
fn build_rust(name: &str, source: &Path, out: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let target = std::env::var("TARGET").expect("TARGET");
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_var}");
    let linker = std::env::var_os(&linker_var).unwrap_or_else(|| {
        cc::Build::new()
            .cargo_metadata(false)
            .cargo_warnings(false)
            .get_compiler()
            .path()
            .as_os_str()
            .to_owned()
    });
    let mut linker_arg = std::ffi::OsString::from("linker=");
    linker_arg.push(&linker);
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--crate-type",
        "cdylib",
        "--edition",
        "2021",
        "--crate-name",
        name,
    ])
    .args(["--target", &target])
    .args([
        "-C",
        "panic=unwind",
        "-C",
        "opt-level=2",
        "-C",
        "debuginfo=0",
    ])
    .arg("-C")
    .arg(linker_arg)
    .args(["-C", "link-arg=-Wl,-z,max-page-size=65536"])
    .arg("-o")
    .arg(out.join(format!("lib{name}.so")))
    .arg(source);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {rustc}: {e}"));
    assert!(
        status.success(),
        "building Rust test library {name}: {cmd:?} failed"
    );
}
