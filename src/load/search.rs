//! Where a `DT_NEEDED` library is found, as the system loader looks.
//!
//! glibc's order for a name without a slash: a library already loaded
//! under that name (its soname or a name it was opened by; memdl asks with
//! `RTLD_NOLOAD` before any search, see `resolve.rs`), the object's
//! `DT_RPATH` (only when it has no `DT_RUNPATH`), `LD_LIBRARY_PATH`
//! (ignored in secure-exec processes), the object's `DT_RUNPATH`, then its
//! cache and the default directories. memdl walks the three search paths
//! itself, because glibc would apply them for the *calling* object (memdl's
//! host), not for the image memdl loads; for the last two it hands the bare
//! name to `dlopen`, which searches them exactly as it always does. A name
//! with a slash is a path.
//!
//! In a search path `$ORIGIN` (or `${ORIGIN}`) is the directory of the
//! image's file: known when it was loaded from a path or from a descriptor
//! naming a file, or given with [`crate::Options::origin`]; bytes have none,
//! and entries that need it are skipped. `$LIB` is the directory of the
//! system libraries relative to `/` (`lib/x86_64-linux-gnu` on Debian),
//! `$PLATFORM` the processor's platform string (`AT_PLATFORM`). A candidate
//! is taken only if it is an ELF file for this machine, as glibc skips
//! others.

use std::ffi::{CStr, OsStr};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What a search needs to know about the image whose `DT_NEEDED` it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct SearchPaths<'a> {
    /// The directory of the image's file, for `$ORIGIN`.
    pub origin: Option<&'a Path>,
    /// `DT_RUNPATH`, `DT_RPATH`: colon-separated lists.
    pub runpath: Option<&'a [u8]>,
    pub rpath: Option<&'a [u8]>,
}

impl SearchPaths<'_> {
    /// The file that `name` resolves to through the image's own search
    /// paths and `LD_LIBRARY_PATH`, or `None` to leave the name to the
    /// system loader's cache and default directories.
    pub fn find(&self, name: &[u8]) -> Option<PathBuf> {
        if name.contains(&b'/') {
            return Some(PathBuf::from(OsStr::from_bytes(name)));
        }
        let env = library_path();
        let lists = [
            self.rpath.filter(|_| self.runpath.is_none()),
            env.as_deref(),
            self.runpath,
        ];
        let found = lists
            .into_iter()
            .flatten()
            .flat_map(|list| list.split(|&c| c == b':'))
            .filter_map(|dir| self.expand(dir))
            .map(|dir| dir.join(OsStr::from_bytes(name)))
            .find(|path| is_elf_for_this_machine(path));
        found
    }

    /// `dir` with its dynamic string tokens replaced; `None` when it needs
    /// an origin that is unknown (or is empty, which glibc reads as the
    /// current directory only in `LD_LIBRARY_PATH`; memdl skips it).
    fn expand(&self, dir: &[u8]) -> Option<PathBuf> {
        if dir.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(dir.len());
        let mut rest = dir;
        while let Some(at) = rest.iter().position(|&c| c == b'$') {
            out.extend_from_slice(&rest[..at]);
            rest = &rest[at + 1..];
            let (token, len) = [
                ("ORIGIN", "{ORIGIN}"),
                ("LIB", "{LIB}"),
                ("PLATFORM", "{PLATFORM}"),
            ]
            .iter()
            .find_map(|&(plain, braced)| {
                if rest.starts_with(braced.as_bytes()) {
                    Some((plain, braced.len()))
                } else if rest.starts_with(plain.as_bytes()) {
                    Some((plain, plain.len()))
                } else {
                    None
                }
            })?;
            rest = &rest[len..];
            match token {
                "ORIGIN" => out.extend_from_slice(self.origin?.as_os_str().as_bytes()),
                "LIB" => out.extend_from_slice(lib_dir()?.as_bytes()),
                _ => out.extend_from_slice(platform()?.as_bytes()),
            }
        }
        out.extend_from_slice(rest);
        Some(PathBuf::from(OsStr::from_bytes(&out)))
    }
}

/// `LD_LIBRARY_PATH`, unless the process runs set-user-ID or with
/// capabilities (`AT_SECURE`), where glibc ignores it too.
fn library_path() -> Option<Vec<u8>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return None;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: issetugid has no preconditions.
    if unsafe { libc::issetugid() } != 0 {
        return None;
    }
    std::env::var_os("LD_LIBRARY_PATH").map(|v| v.as_bytes().to_vec())
}

/// `$LIB`: the directory holding libc, relative to `/`.
fn lib_dir() -> Option<&'static str> {
    static LIB: OnceLock<Option<String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: Dl_info is plain data (pointers and integers); all-zero
        // is a valid value.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr writes `info` for an address inside libc.
        if unsafe { libc::dladdr(libc::malloc as *const libc::c_void, &mut info) } == 0
            || info.dli_fname.is_null()
        {
            return None;
        }
        // SAFETY: dladdr's file name is a NUL-terminated string of the
        // loaded object, which is never unloaded.
        let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_str().ok()?;
        let dir = Path::new(file).parent()?.to_str()?;
        Some(dir.trim_start_matches('/').to_owned())
    })
    .as_deref()
}

/// `$PLATFORM`: `AT_PLATFORM`.
fn platform() -> Option<&'static str> {
    static PLATFORM: OnceLock<Option<String>> = OnceLock::new();
    PLATFORM
        .get_or_init(|| {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                // SAFETY: getauxval has no preconditions; AT_PLATFORM is a
                // pointer to a NUL-terminated string the kernel placed on
                // the stack, valid for the process's life.
                let p = unsafe { libc::getauxval(libc::AT_PLATFORM) } as *const libc::c_char;
                // SAFETY: as above.
                (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            None
        })
        .as_deref()
}

/// Whether `path` is a 64-bit little-endian ELF for this machine.
fn is_elf_for_this_machine(path: &Path) -> bool {
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    read.is_ok()
        && header[..4] == *b"\x7fELF"
        && header[4] == 2
        && header[5] == 1
        && u16::from_le_bytes([header[18], header[19]]) == crate::arch::EM_CURRENT
}

/// The directory of the file behind `fd`, for `$ORIGIN`: `None` for
/// memfds, deleted files and anything that is not a path.
pub fn origin_of_fd(fd: std::os::fd::BorrowedFd<'_>) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let bytes = target.as_os_str().as_bytes();
    if !bytes.starts_with(b"/") || bytes.ends_with(b" (deleted)") {
        return None;
    }
    target.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expand_and_unknown_origin_skips() {
        let origin = Path::new("/opt/app/lib");
        let with = SearchPaths {
            origin: Some(origin),
            ..Default::default()
        };
        assert_eq!(
            with.expand(b"$ORIGIN/../x"),
            Some("/opt/app/lib/../x".into())
        );
        assert_eq!(with.expand(b"${ORIGIN}/y"), Some("/opt/app/lib/y".into()));
        assert_eq!(with.expand(b"/abs"), Some("/abs".into()));
        assert_eq!(with.expand(b"$BOGUS"), None);
        assert_eq!(with.expand(b""), None);
        let lib = with.expand(b"/$LIB").unwrap();
        assert!(lib.join("libc.so.6").exists(), "{lib:?}");
        assert!(with.expand(b"$PLATFORM").is_some());
        assert_eq!(SearchPaths::default().expand(b"$ORIGIN"), None);
    }

    #[test]
    fn runpath_hides_rpath_and_a_slash_is_a_path() {
        let libc_dir = PathBuf::from("/").join(lib_dir().unwrap());
        let dir = libc_dir.as_os_str().as_bytes();
        let rpath_only = SearchPaths {
            rpath: Some(dir),
            ..Default::default()
        };
        assert_eq!(
            rpath_only.find(b"libc.so.6"),
            Some(libc_dir.join("libc.so.6"))
        );
        let both = SearchPaths {
            rpath: Some(dir),
            runpath: Some(b"/nonexistent"),
            ..Default::default()
        };
        assert_eq!(both.find(b"libc.so.6"), None);
        assert_eq!(both.find(b"./x.so"), Some(PathBuf::from("./x.so")));
    }
}
