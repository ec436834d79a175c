//! include/memdl.h is what cbindgen makes of src/lib.rs with cbindgen.toml:
//! the header and the Rust definitions cannot drift apart.

use std::path::Path;

#[test]
fn header_matches_the_rust_definitions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen parses src/lib.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = dir.join("include/memdl.h");
    if std::env::var_os("MEMDL_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/memdl.h");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "capi/include/memdl.h is not what cbindgen makes of capi/src/lib.rs; \
         regenerate it with: MEMDL_UPDATE_HEADER=1 cargo test -p memdl-capi --test header"
    );
}
