//! Fuzzes `ElfImage::load` with host lookups denied: any input must load or
//! fail with an `Error`, never crash, and looking symbols up in what loaded
//! must not crash either (and the export index must answer as the hash
//! table does), nor must a stack walk while it is loaded.
//!
//! Inputs whose loading would legitimately run code of the file
//! (initialisers, finalisers, IRELATIVE or ifunc resolvers) are skipped:
//! the filter is the corruption test's (`tests/runs_code`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdl::Library;

extern "C" {
    /// libgcc's lookup of the unwind entry covering `pc`.
    fn _Unwind_Find_FDE(pc: *const u8, bases: *mut [usize; 3]) -> *const u8;
}

#[path = "../../tests/runs_code/mod.rs"]
mod runs_code;

fuzz_target!(|data: &[u8]| {
    if runs_code::runs_code(data) {
        return;
    }
    let options = memdl::Options::new().deny_host_lookups();
    let from_fd = load_fd(data, &options).map(drop);
    // SAFETY: inputs that would run code of their own were filtered out
    // above; with host lookups denied nothing else of the host is bound.
    let loaded = unsafe { options.load(data) };
    assert_eq!(
        from_fd.is_ok(),
        loaded.is_ok(),
        "load_fd: {from_fd:?}, load: {:?}",
        loaded.as_ref().map(drop)
    );
    if let Ok(img) = loaded {
        for name in ["add", "counter", "ops", "sort_checksum", "crc32", ""] {
            // SAFETY: only the address is taken; nothing is called or read.
            let _ = unsafe { img.get::<*const u8>(name) };
        }
        for (name, addr) in img.exports() {
            std::hint::black_box((name, addr));
        }
        // The export index must answer as the hash table does, however the
        // tables it is built from were mangled.
        img.__build_export_index();
        let names = ["add", "counter", "ops", "sort_checksum", "crc32", ""];
        let exported: Vec<&[u8]> = img.exports().map(|(n, _)| n).take(256).collect();
        for name in names.iter().map(|n| n.as_bytes()).chain(exported) {
            // SAFETY: only the address is taken; nothing is called or read.
            let got = unsafe { img.get::<*const u8>(name) }.map(|s| s.as_ptr() as usize);
            let want = img.__hash_table_address(name, None);
            assert_eq!(
                got.map_err(|e| e.to_string()),
                want.map_err(|e| e.to_string())
            );
        }
        // The first FDE lookup makes libgcc parse every registered
        // .eh_frame, this image's included (as any unwind would).
        let mut bases = [0usize; 3];
        // SAFETY: a lookup by address; `bases` is writable.
        let fde = unsafe { _Unwind_Find_FDE(img.base_address() as *const _, &mut bases) };
        std::hint::black_box(fde);
    }
});

/// Loads `data` with `load_fd` from a memfd holding it after a header of
/// 4096 bytes (even lengths) or 100 bytes (odd).
fn load_fd(data: &[u8], options: &memdl::Options) -> memdl::Result<memdl::ElfImage> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let offset = if data.len() % 2 == 0 { 4096 } else { 100 };
    // SAFETY: a plain system call with a NUL-terminated name.
    let raw = unsafe { libc::memfd_create(c"fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create");
    // SAFETY: just created, owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(raw) };
    file.write_all(&vec![0u8; offset]).unwrap();
    file.write_all(data).unwrap();
    // SAFETY: as for `options.load` in the target; the memfd is ours and
    // nothing writes to it while the image lives.
    unsafe { memdl::ElfImage::load_fd_with(&file, offset as u64, data.len() as u64, options) }
}
