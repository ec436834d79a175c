//! Turning `FILE`, `FILE@OFFSET`, `--offset` and `--len` into the byte
//! range of one ELF image, mapped (not read) from the file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::elfscan;
use crate::{CliResult, Failure};

/// A number as the user may write it: decimal or `0x` hexadecimal.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a number (decimal or 0x hex)"))
}

/// Splits `PATH@OFFSET`. The suffix after the last `@` is an offset only if
/// it is a number (`lib@v2.so` is a path), and only if that reading names
/// an existing file or the whole string does not.
pub fn split_spec(arg: &OsStr) -> (PathBuf, Option<u64>) {
    let bytes = arg.as_encoded_bytes();
    let whole = || (PathBuf::from(arg), None);
    let Some(at) = bytes.iter().rposition(|&b| b == b'@') else {
        return whole();
    };
    let Some(offset) = std::str::from_utf8(&bytes[at + 1..])
        .ok()
        .and_then(|s| parse_number(s).ok())
    else {
        return whole();
    };
    // SAFETY: the split is right before an ASCII '@', which the standard
    // library documents as a valid boundary for encoded OS-string bytes.
    let prefix = unsafe { OsStr::from_encoded_bytes_unchecked(&bytes[..at]) };
    let prefix = PathBuf::from(prefix);
    if !prefix.exists() && Path::new(arg).exists() {
        return whole();
    }
    (prefix, Some(offset))
}

/// The common arguments of commands that take one library.
#[derive(clap::Args, Debug)]
pub struct Source {
    /// The library: PATH, or PATH@OFFSET for an ELF inside a larger file
    #[arg(value_name = "FILE")]
    pub file: OsString,
    /// Offset of the ELF inside FILE (decimal or 0x hex); same as FILE@OFFSET
    #[arg(long, value_name = "N", value_parser = parse_number)]
    pub offset: Option<u64>,
    /// Length of the ELF (default: the extent its headers give when an
    /// offset is set, otherwise the rest of the file)
    #[arg(long, value_name = "N", value_parser = parse_number)]
    pub len: Option<u64>,
}

/// One ELF image's byte range in an open, mapped file.
pub struct Input {
    pub path: PathBuf,
    pub file: File,
    map: Mmap,
    pub offset: u64,
    pub len: u64,
    /// Whether the image is addressed inside a larger file.
    pub embedded: bool,
}

impl Input {
    pub fn open(source: &Source) -> CliResult<Input> {
        let (path, at_offset) = split_spec(&source.file);
        let offset = match (at_offset, source.offset) {
            (Some(_), Some(_)) => {
                return Err(Failure::new(format!(
                    "{}: offset given both as @OFFSET and --offset",
                    Path::new(&source.file).display()
                )))
            }
            (a, b) => a.or(b),
        };
        let (file, map) = open_mapped(&path)?;
        let size = map.len() as u64;
        let name = path.display();
        let start = offset.unwrap_or(0);
        if start >= size && !(size == 0 && offset.is_none()) {
            return Err(Failure::new(format!(
                "{name}: offset {start} ({start:#x}) is past the end of the file ({size} bytes)"
            )));
        }
        let len = match (source.len, offset) {
            (Some(len), _) => {
                if start.checked_add(len).is_none_or(|end| end > size) {
                    return Err(Failure::new(format!(
                        "{name}: {len} bytes at offset {start} run past the end of the file ({size} bytes)"
                    )));
                }
                len
            }
            (None, Some(off)) => match elfscan::probe(&map[off as usize..]) {
                Ok(p) => p.extent,
                Err(why) => {
                    return Err(Failure::new(format!(
                        "{name}: no ELF image at offset {off} ({off:#x}): {why}"
                    )))
                }
            },
            (None, None) => size,
        };
        if len == 0 {
            return Err(Failure::new(format!("{name}: the file is empty")));
        }
        Ok(Input {
            embedded: offset.is_some() || len != size,
            path,
            file,
            map,
            offset: start,
            len,
        })
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &[u8] {
        // open() checked offset + len <= the mapping's length.
        &self.map[self.offset as usize..(self.offset + self.len) as usize]
    }

    /// `path`, or `path@0xOFFSET (LEN bytes)` for an embedded image.
    pub fn describe(&self) -> String {
        if self.embedded {
            format!(
                "{}@{:#x} ({} bytes)",
                self.path.display(),
                self.offset,
                self.len
            )
        } else {
            format!("{} ({} bytes)", self.path.display(), self.len)
        }
    }

    /// Loads the image with memdl's loader straight from the file.
    pub fn load_memdl(&self) -> memdl::Result<memdl::ElfImage> {
        // SAFETY: the user asked to run this library (loading runs its initialisers).
        unsafe { memdl::ElfImage::load_fd(&self.file, self.offset, self.len) }
    }

    /// The system loader, fed the same range of the same file.
    pub fn load_system(&self) -> memdl::Result<memdl::SystemImage> {
        // SAFETY: the user asked to run this library (loading runs its initialisers).
        unsafe { memdl::SystemImage::load_fd(&self.file, self.offset, self.len) }
    }
}

/// Opens `path` and maps it read-only: containers may be far larger than
/// the images in them, so nothing is read into memory up front.
pub fn open_mapped(path: &Path) -> CliResult<(File, Mmap)> {
    let name = path.display();
    let file = File::open(path).map_err(|e| Failure::new(format!("{name}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Failure::new(format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(Failure::new(format!("{name}: not a regular file")));
    }
    // SAFETY: a private read-only mapping of a regular file. If another
    // process truncates the file while we read it, accesses past the new
    // end fault (SIGBUS); a command-line tool accepts that risk, as every
    // mmap-based reader does.
    let map =
        unsafe { Mmap::map(&file) }.map_err(|e| Failure::new(format!("{name}: mmap: {e}")))?;
    Ok((file, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_number("4096"), Ok(4096));
        assert_eq!(parse_number("0x1000"), Ok(4096));
        assert_eq!(parse_number("0X1f"), Ok(31));
        assert!(parse_number("").is_err());
        assert!(parse_number("0x").is_err());
        assert!(parse_number("-1").is_err());
        assert!(parse_number("12k").is_err());
    }

    #[test]
    fn at_suffix_is_an_offset_only_when_numeric() {
        let split = |s: &str| split_spec(OsStr::new(s));
        assert_eq!(
            split("/nonexistent/c.bin@4096"),
            (PathBuf::from("/nonexistent/c.bin"), Some(4096))
        );
        assert_eq!(
            split("/nonexistent/c.bin@0x10"),
            (PathBuf::from("/nonexistent/c.bin"), Some(16))
        );
        assert_eq!(
            split("/nonexistent/lib@v2.so"),
            (PathBuf::from("/nonexistent/lib@v2.so"), None)
        );
        assert_eq!(
            split("/nonexistent/a@1/lib.so"),
            (PathBuf::from("/nonexistent/a@1/lib.so"), None)
        );
        assert_eq!(
            split("/nonexistent/x@"),
            (PathBuf::from("/nonexistent/x@"), None)
        );
    }
}
