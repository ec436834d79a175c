//! Compiles the built-in example (`../test-dylibs/example.c`) into
//! `$OUT_DIR/libexample.so` with the flags the test-library crate uses for
//! it, so `memdl compare` and `memdl bench` work without a file. Only Linux
//! gnu targets get it (as the test libraries); elsewhere the CLI builds
//! without it and `memdl_builtin_example` is not set.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"))
        .join("../test-dylibs/example.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(memdl_builtin_example)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" {
        return;
    }
    let output = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("libexample.so");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .opt_level(2)
        .get_compiler();
    let mut cmd = Command::new(compiler.path());
    // test-dylibs/build.rs's COMMON flags and the example's own: no libc,
    // no startup files, no imports.
    cmd.args(["-shared", "-fPIC", "-O2", "-g0", "-Wall", "-Werror"])
        .args(["-Wl,-z,max-page-size=65536", "-Wl,--build-id=none"])
        .args(["-nostdlib", "-fno-stack-protector"])
        .arg(&source)
        .arg("-o")
        .arg(&output);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", compiler.path().display()));
    assert!(
        status.success(),
        "building the built-in example: {cmd:?} failed"
    );
    println!("cargo:rustc-env=MEMDL_BUILTIN_EXAMPLE={}", output.display());
    println!("cargo:rustc-cfg=memdl_builtin_example");
}
