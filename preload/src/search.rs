//! Finding a library named without a slash, as the system loader would:
//! the calling object's `DT_RPATH` (without a `DT_RUNPATH`), `LD_LIBRARY_PATH`,
//! its `DT_RUNPATH` (both with `$ORIGIN`), `/etc/ld.so.cache`, then the
//! default directories.
//!
//! Not done (issue 12 makes the search faithful): `$LIB`/`$PLATFORM`, the
//! `DT_RPATH` of the caller's loaders, `glibc-hwcaps` subdirectories, and
//! secure-execution restrictions. A name found by none of these is
//! handed to the system loader (or refused under `MEMDL_PRELOAD_STRICT=1`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
const MULTIARCH: &str = "x86_64-linux-gnu";
#[cfg(target_arch = "aarch64")]
const MULTIARCH: &str = "aarch64-linux-gnu";

/// `ld.so.cache` entry flags this process can load: ELF, libc6, and the
/// architecture's 64-bit ABI (`FLAG_X8664_LIB64` / `FLAG_AARCH64_LIB64`).
#[cfg(target_arch = "x86_64")]
const CACHE_ARCH: u32 = 0x0300;
#[cfg(target_arch = "aarch64")]
const CACHE_ARCH: u32 = 0x0a00;
const FLAG_ELF_LIBC6: u32 = 0x0003;

/// The directories of `LD_LIBRARY_PATH` as the process started with it
/// (glibc also reads it once).
fn library_path() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| {
                v.as_bytes()
                    .split(|&c| c == b':' || c == b';')
                    .map(|d| if d.is_empty() { &b"."[..] } else { d })
                    .map(|d| PathBuf::from(OsStr::from_bytes(d)))
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn is_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// Where the system loader would find `name` (no slash in it), given the
/// caller's `DT_RPATH` (searched first; only given without a `DT_RUNPATH`)
/// and `DT_RUNPATH` (searched after `LD_LIBRARY_PATH`) directories.
pub fn find(name: &[u8], rpath: &[PathBuf], runpath: &[PathBuf]) -> Option<PathBuf> {
    let name = OsStr::from_bytes(name);
    for dir in rpath.iter().chain(library_path()).chain(runpath) {
        let p = dir.join(name);
        if is_file(&p) {
            return Some(p);
        }
    }
    if let Some(p) = cache().iter().find(|(k, _)| k.as_os_str() == name) {
        return Some(p.1.clone());
    }
    let defaults = [
        format!("/lib/{MULTIARCH}"),
        format!("/usr/lib/{MULTIARCH}"),
        "/lib64".to_owned(),
        "/usr/lib64".to_owned(),
        "/lib".to_owned(),
        "/usr/lib".to_owned(),
    ];
    defaults
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_file(p))
}

/// The usable entries of `/etc/ld.so.cache` (new format, "glibc-ld.so.cache1.1"):
/// (library name, path), in the cache's order, read once.
fn cache() -> &'static [(PathBuf, PathBuf)] {
    static CACHE: OnceLock<Vec<(PathBuf, PathBuf)>> = OnceLock::new();
    CACHE.get_or_init(|| {
        std::fs::read("/etc/ld.so.cache")
            .map(|b| parse_cache(&b))
            .unwrap_or_default()
    })
}

fn parse_cache(b: &[u8]) -> Vec<(PathBuf, PathBuf)> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(
            b.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let string_at = |o: u32| -> Option<PathBuf> {
        let s = b.get(o as usize..)?;
        let end = s.iter().position(|&c| c == 0)?;
        Some(PathBuf::from(OsStr::from_bytes(&s[..end])))
    };
    if !b.starts_with(MAGIC) {
        return Vec::new();
    }
    let Some(n) = u32_at(MAGIC.len()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in 0..n as usize {
        let at = HEADER + i * ENTRY;
        let (Some(flags), Some(key), Some(value)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
        else {
            break;
        };
        if flags & 0xff != FLAG_ELF_LIBC6 || flags & 0xff00 != CACHE_ARCH {
            continue;
        }
        if let (Some(k), Some(v)) = (string_at(key), string_at(value)) {
            out.push((k, v));
        }
    }
    out
}
