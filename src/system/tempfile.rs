//! The last resort: a temporary file in a directory the caller names.
//!
//! Preferred is an unnamed `O_TMPFILE` inode (nothing ever appears in the
//! directory); otherwise a uniquely named file that is unlinked as soon as
//! `dlopen` has returned, whatever it returned.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// An empty unnamed file in `dir` (`O_TMPFILE`), or the reason the
/// directory's file system cannot make one.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn unnamed(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o700)
        .open(dir)
}

/// A named temporary file; dropping it unlinks the name (the fd, and any
/// mapping of the file, stay valid).
#[derive(Debug)]
pub(super) struct NamedTemp {
    pub(super) file: File,
    pub(super) path: PathBuf,
}

impl Drop for NamedTemp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A uniquely named file in `dir` filled by `fill`, created with `O_EXCL`
/// so an existing file (or a symlink planted by someone else) is never used.
pub(super) fn named_with(dir: &Path, fill: impl FnOnce(&File) -> Result<()>) -> Result<NamedTemp> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".memdl-{}-{n}-{nanos:x}.so", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)
        {
            Ok(file) => {
                // From here on the guard removes the name on every path.
                let tmp = NamedTemp { file, path };
                fill(&tmp.file)?;
                return Ok(tmp);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => {
                return Err(Error::Io {
                    op: "create temporary file",
                    source,
                })
            }
        }
    }
    Err(Error::Io {
        op: "create temporary file",
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn named_file_is_removed_on_drop() {
        let dir = std::env::temp_dir();
        let tmp = named_with(&dir, |mut f| {
            f.write_all(b"abc").map_err(|source| Error::Io {
                op: "write",
                source,
            })
        })
        .expect("create");
        let path = tmp.path.clone();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        drop(tmp);
        assert!(!path.exists());
    }
}
