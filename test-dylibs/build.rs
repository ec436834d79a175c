//! Compiles the test libraries in this directory into shared objects in
//! `$OUT_DIR/test-dylibs`, with the C compiler `cc` picks for the target (so
//! `CC_aarch64_unknown_linux_gnu` and friends are honoured when cross
//! compiling). memdl's tests and benches find them through this crate's
//! `LIB_DIR` and `path` (src/lib.rs).
//!
//! Only Linux gnu targets get the libraries (the tests run there); elsewhere
//! the crate builds without them and `memdl_test_dylibs` is not set.
//!
//! A build script runs in its package's directory: source paths and flags
//! naming files (the version script) are relative to `test-dylibs/`.

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
    c_with(name, sources, &[])
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

/// Every test library. Add one here and drop its sources in this directory.
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
    // Initialiser/finaliser order: DT_INIT and DT_FINI named by the linker,
    // prioritised and plain init/fini_array entries.
    c_with(
        "lifecycle",
        &["lifecycle.c"],
        &["-Wl,-init=lifecycle_dt_init", "-Wl,-fini=lifecycle_dt_fini"],
    ),
    // Weak undefined and defined weak symbols; hidden/protected visibility.
    c("linkage", &["linkage.c"]),
    // STT_GNU_IFUNC: exported (symbol lookup, JUMP_SLOT, R_*_64) and hidden
    // (IRELATIVE).
    c("ifunc", &["ifunc.c"]),
    // foo@V1 and foo@@V2 from a version script.
    c_with(
        "versioned",
        &["versioned.c"],
        &["-Wl,--version-script=versioned.map"],
    ),
    // The same pointer-heavy data with DT_RELR and with plain RELA.
    c_with("relr", &["relr.c"], &["-Wl,-z,pack-relative-relocs"]),
    c_with("norelr", &["relr.c"], &["-Wl,-z,nopack-relative-relocs"]),
    // DT_RELR in a libc user: the linker adds a GLIBC_ABI_DT_RELR version
    // need that no symbol refers to.
    c_with(
        "uselibc_relr",
        &["uselibc.c"],
        &["-Wl,-z,pack-relative-relocs"],
    ),
    // 64 MiB of bss after a partial data page.
    c("bigbss", &["bigbss.c"]),
    // The example with only a SysV hash table (no DT_GNU_HASH).
    c_with(
        "sysv",
        &["example.c"],
        &["-nostdlib", "-fno-stack-protector", "-Wl,--hash-style=sysv"],
    ),
    // DF_1_NODELETE: unloading keeps it.
    c_with("nodelete", &["nodelete.c"], &["-Wl,-z,nodelete"]),
    // Imports memdl_test_host_scale, which the test executable exports.
    c("callback", &["callback.c"]),
    // Symbolic and relative relocations with positive and negative addends.
    c_with("pointers", &["pointers.c"], &["-nostdlib"]),
    // A thousand exports under each hash table style.
    c_with(
        "many_gnu",
        &["many.c"],
        &["-nostdlib", "-Wl,--hash-style=gnu"],
    ),
    c_with(
        "many_sysv",
        &["many.c"],
        &["-nostdlib", "-Wl,--hash-style=sysv"],
    ),
    c_with(
        "many_both",
        &["many.c"],
        &["-nostdlib", "-Wl,--hash-style=both"],
    ),
    // Thread-local variables, initialised and zeroed, exported and local.
    c("threadlocal", &["threadlocal.c"]),
    // C++: static objects, exceptions through libstdc++, virtual calls.
    cpp_with("cxx", &["cxx.cpp"], &[]),
    // Dynamic TLS through __tls_get_addr (general and local dynamic) ...
    c("tlsmodels", &["tls_models.c"]),
    // ... and the same source through TLS descriptors (x86_64's gnu2
    // dialect; aarch64 uses descriptors by default).
    c_with("tlsmodels_desc", &["tls_models.c"], &["-mtls-dialect=gnu2"]),
    // 48 MiB of tbss: leaked per-thread blocks show up as mappings.
    c("tls_big", &["tls_big.c"]),
    // Initial-exec TLS written out by hand (TPOFF relocations), refused:
    // the one static-TLS library of tests/tls.rs and tests/aarch64.rs.
    c("tlsie", &["tls_ie.c", "tls_ie_gd.c"]),
    // More initial-exec TLS than glibc's static TLS surplus can hold.
    c("tlsiebig", &["tls_ie_big.c"]),
    // Thread-local variables of another module (libc's errno) in each
    // model: initial exec, general dynamic, descriptors.
    c("tlsimport", &["tls_import_ie.c"]),
    c_with("tlsimport_gd", &["tls_import_gd.c"], &["-mtls-dialect=gnu"]),
    c_with(
        "tlsimport_desc",
        &["tls_import_gd.c"],
        &["-mtls-dialect=gnu2"],
    ),
    // std::call_once: libstdc++'s __once_callable/__once_call TLS.
    cpp_with("callonce", &["call_once.cpp"], &[]),
    // Only imports: a GNU hash table that hashes nothing.
    c_with("import_only", &["import_only.c"], &["-Wl,--hash-style=gnu"]),
    // Two libraries defining the same STB_GNU_UNIQUE template static.
    cpp_with("unique1", &["unique.cpp"], &[]),
    cpp_with("unique2", &["unique.cpp"], &[]),
    // An interposer finding the next dlopen with dlvsym(RTLD_NEXT, ..).
    c("interposer", &["interposer.c"]),
    // Libraries that need one another (a needs b and c, b needs c), for
    // dependencies supplied from memory and found through $ORIGIN. Each
    // has DT_RUNPATH $ORIGIN (for the system loader's search of their own
    // needs); deps_origin is deps_a with its needs in $ORIGIN/deps.
    c_with(
        "deps_c",
        &["deps_c.c"],
        &["-Wl,-rpath,$ORIGIN", "-Wl,--enable-new-dtags"],
    ),
    c_with(
        "deps_b",
        &["deps_b.c"],
        &[
            "-L{out}",
            "-ldeps_c",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,--enable-new-dtags",
        ],
    ),
    c_with(
        "deps_a",
        &["deps_a.c"],
        &["-L{out}", "-ldeps_b", "-ldeps_c"],
    ),
    c_with(
        "deps_origin",
        &["deps_a.c"],
        &[
            "-L{out}",
            "-ldeps_b",
            "-ldeps_c",
            "-Wl,-rpath,$ORIGIN/deps",
            "-Wl,--enable-new-dtags",
        ],
    ),
    // A DT_NEEDED already loaded wins over a file of that name in the
    // search path: needs_z needs libz.so.1 (zstub's soname) and searches
    // $ORIGIN first, where the test puts zstub as libz.so.1.
    c_with("zstub", &["zstub.c"], &["-Wl,-soname,libz.so.1"]),
    c_with(
        "needs_z",
        &["needs_z.c"],
        &[
            "-L{out}",
            "-lzstub",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,--enable-new-dtags",
        ],
    ),
    // dladdr, dlsym, dlerror, dl_iterate_phdr called from loaded code.
    c_with("dlsvc", &["dlsvc.c"], &["-Wl,-soname,libdlsvc.so"]),
    // C++ runtime: static ctors/dtors, std containers, thread_local,
    // exceptions across host callbacks. Without STB_GNU_UNIQUE symbols
    // (std::to_string makes one): glibc marks the first object it loads
    // that defines a unique symbol NODELETE, so the system loader would
    // unload (and run the destructors of) only copies loaded after another
    // live copy, and the tests comparing unloads with memdl's would depend
    // on which test loaded the library first.
    cpp_with(
        "cxxrt",
        &["cxx_runtime.cpp"],
        &["-std=c++17", "-fno-gnu-unique"],
    ),
    // Thread-local storage in the default dialect for -fPIC code (TLS
    // descriptors on aarch64, __tls_get_addr on x86_64). Kept apart from
    // tlsmodels: tests/aarch64.rs checks tls.c's counters in every dialect
    // and tls_regs' assembly reads its tls_probe, neither in tls_models.c.
    c("tls", &["tls.c"]),
    // Indirect functions recording their resolver's arguments (hwcaps on
    // aarch64): IRELATIVE, an exported STT_GNU_IFUNC.
    c_with(
        "ifunc_hwcap",
        &["ifunc_hwcap.c"],
        &["-nostdlib", "-fno-stack-protector"],
    ),
    // Debugger visibility (tests/debugger.rs): with DWARF and .symtab.
    c_with("debugvis", &["debugvis.c"], &["-g", "-O1"]),
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

/// Rust cdylibs built with the rustc that builds this crate, for the same
/// target: (output name, source in this directory).
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
    // The sources, the version script and this script: every file of this
    // directory (not src/, so editing the crate's accessors rebuilds none).
    for entry in std::fs::read_dir(".").expect("read test-dylibs/") {
        let path = entry.expect("read test-dylibs/").path();
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo::rustc-check-cfg=cfg(memdl_test_dylibs)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("test-dylibs");
    std::fs::create_dir_all(&out).expect("create test-dylibs output directory");
    let src = Path::new(".");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    for lib in DYLIBS.iter().chain(arch_dylibs(&arch)) {
        build(lib, src, &out);
    }
    for &(name, source) in RUST_DYLIBS {
        build_rust(name, &src.join(source), &out);
    }
    for &n in SCALING {
        build_scaling(n, &out);
    }
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
    let gcc = compiler.is_like_gnu();
    let flags = lib.flags.iter().filter_map(|&f| match f {
        "-mtls-dialect=gnu2" if aarch64 => Some("-mtls-dialect=desc".to_owned()),
        // ... and calls __tls_get_addr's dialect trad, x86 gnu.
        "-mtls-dialect=gnu" if aarch64 => Some("-mtls-dialect=trad".to_owned()),
        // GCC's option; clang never makes STB_GNU_UNIQUE symbols.
        "-fno-gnu-unique" if !gcc => None,
        // Links against test libraries built before this one.
        f => Some(f.replace("{out}", &out.display().to_string())),
    });
    // Libraries after the sources: the compiler may link --as-needed.
    let (libs, flags): (Vec<String>, Vec<String>) = flags.partition(|f| f.starts_with("-l"));
    cmd.args(COMMON).args(flags);
    for s in lib.sources {
        cmd.arg(src.join(s));
    }
    cmd.args(libs).arg("-o").arg(&output);
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

/// Sizes of the generated scaling libraries (`libscale<N>.so`) the
/// benchmarks load: N exported variables and N symbolic relocations.
const SCALING: &[usize] = &[1_000, 10_000, 100_000];

/// Generates `libscale<n>.so`: `n` exported `int`s and a table of `n`
/// pointers to them (one `R_X86_64_64`/`R_AARCH64_ABS64` against an
/// exported symbol each), no code, no imports. The C source is only
/// rewritten, and the library only rebuilt, when it changes, so rebuilding
/// the crate does not pay for the 100k library again (~2 s of gcc).
fn build_scaling(n: usize, out: &Path) {
    use std::fmt::Write;
    let mut c = String::with_capacity(n * 40);
    writeln!(
        c,
        "/* Generated by build.rs: {n} exports, {n} relocations. */"
    )
    .unwrap();
    for i in 0..n {
        writeln!(c, "int v{i} = {i};").unwrap();
    }
    c.push_str("int *const table[] = {\n");
    for i in 0..n {
        writeln!(c, "&v{i},").unwrap();
    }
    c.push_str("};\n");
    let source = out.join(format!("scale{n}.c"));
    let output = out.join(format!("libscale{n}.so"));
    let unchanged = std::fs::read_to_string(&source).is_ok_and(|old| old == c);
    if unchanged && output.exists() {
        return;
    }
    std::fs::write(&source, &c).expect("write generated scaling library source");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler();
    let mut cmd = Command::new(compiler.path());
    // Data only: -O0 compiles it fastest and generates the same relocations.
    cmd.args(["-shared", "-fPIC", "-O0", "-g0", "-nostdlib"])
        .args(["-Wl,-z,max-page-size=65536", "-Wl,--build-id=none"])
        .arg(&source)
        .arg("-o")
        .arg(&output);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", compiler.path().display()));
    if !status.success() {
        let _ = std::fs::remove_file(&source);
        panic!("building scaling library {n}: {cmd:?} failed");
    }
}
