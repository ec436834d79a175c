//! The shared library's soname is `libmemdl.so` (no version yet), so a
//! program linked with `-lmemdl` records that name and finds it at run time.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmemdl.so");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
