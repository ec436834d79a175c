//! Loads the machine's zlib from bytes with memdl and calls `crc32`.

use memdl::{ElfImage, Symbol};

type Crc32 = unsafe extern "C" fn(u64, *const u8, u32) -> u64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };
    let path = format!("/usr/lib/{arch}-linux-gnu/libz.so.1");
    let bytes = std::fs::read(&path)?;
    // SAFETY: loading runs zlib's initialisers; zlib is the machine's own.
    let img = unsafe { ElfImage::load(&bytes)? };
    // SAFETY: crc32's C signature (uLong crc32(uLong, const Bytef *, uInt)).
    let crc32: Symbol<'_, Crc32> = unsafe { img.get("crc32")? };
    // SAFETY: a valid buffer of the length given.
    let crc = unsafe { crc32(0, b"hello".as_ptr(), 5) };
    assert_eq!(crc, 0x3610_a686);
    println!("{path} loaded from bytes by memdl: crc32(\"hello\") = {crc:#x}");
    Ok(())
}
