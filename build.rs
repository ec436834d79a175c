//! One link argument for memdl's own test executables: they export their
//! `memdl_test_host_*` functions, so the system loader (and memdl's
//! global-scope step) can bind test libraries' imports to them. A
//! dependency's build script cannot add a link argument to this package's
//! tests, so it stays here; it compiles nothing and costs a crate that
//! depends on memdl nothing else. The test libraries themselves are built
//! by the `memdl-test-dylibs` dev-dependency (test-dylibs/build.rs).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // The published package has no tests/ (Cargo.toml's `include`), and
    // Cargo refuses `rustc-link-arg-tests` from a package without test
    // targets: emitted only where the integration tests are.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
    let has_tests = Path::new(&manifest_dir).join("tests").is_dir();
    if target_os == "linux" && target_env == "gnu" && has_tests {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=memdl_test_host_*");
    }
}
