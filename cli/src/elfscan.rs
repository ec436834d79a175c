//! Recognising an ELF image in raw bytes and working out how long it is,
//! without trusting anything: the bytes may be junk that merely starts
//! with `\x7fELF`.

/// What the headers of a plausible 64-bit little-endian ELF image say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub e_type: u16,
    pub machine: u16,
    /// Bytes from the image's start to the end of the last thing its
    /// headers place in the file: program header table, segment contents,
    /// section header table.
    pub extent: u64,
}

const EHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SHDR_SIZE: u64 = 64;
/// More program headers than any real object has; a bigger count is junk.
const MAX_PHNUM: u64 = 4096;

/// Checks that `bytes` begins with a sane ELF64 LE header whose program
/// headers (and section header table, if any) lie inside `bytes`, and
/// returns the image's type, machine and extent. The error says what failed.
pub fn probe(bytes: &[u8]) -> Result<Probe, String> {
    if bytes.len() < EHDR_SIZE as usize {
        return Err(format!(
            "{} bytes are too few for an ELF header (64)",
            bytes.len()
        ));
    }
    if &bytes[..4] != b"\x7fELF" {
        return Err("no ELF magic (\\x7fELF)".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(format!(
            "not a 64-bit little-endian ELF (class {}, encoding {})",
            bytes[4], bytes[5]
        ));
    }
    if bytes[6] != 1 || u32_at(bytes, 20) != Some(1) {
        return Err("unknown ELF version".into());
    }
    let len = bytes.len() as u64;
    let field = |o: u64| u16_at(bytes, o).unwrap_or(0);
    let e_type = field(16);
    let machine = field(18);
    let phoff = u64_at(bytes, 32).unwrap_or(0);
    let shoff = u64_at(bytes, 40).unwrap_or(0);
    let (phentsize, phnum) = (u64::from(field(54)), u64::from(field(56)));
    let (shentsize, shnum) = (u64::from(field(58)), u64::from(field(60)));
    if u64::from(field(52)) != EHDR_SIZE {
        return Err(format!("ELF header size {} is not 64", field(52)));
    }
    if phentsize != PHDR_SIZE {
        return Err(format!("program header entry size {phentsize} is not 56"));
    }
    if phnum == 0 || phnum > MAX_PHNUM {
        return Err(format!("program header count {phnum} is not sane"));
    }
    let table_end = |off: u64, count: u64, size: u64, what: &str| {
        count
            .checked_mul(size)
            .and_then(|n| n.checked_add(off))
            .filter(|&end| end <= len)
            .ok_or_else(|| format!("{what} at {off:#x} ({count} entries) lies past the end"))
    };
    let mut extent = EHDR_SIZE.max(table_end(phoff, phnum, PHDR_SIZE, "program header table")?);
    for i in 0..phnum {
        let ph = phoff + i * PHDR_SIZE;
        let (offset, filesz) = (
            u64_at(bytes, ph + 8).unwrap_or(0),
            u64_at(bytes, ph + 32).unwrap_or(0),
        );
        let end = offset
            .checked_add(filesz)
            .filter(|&end| end <= len)
            .ok_or_else(|| format!("program header {i}: file range past the end"))?;
        extent = extent.max(end);
    }
    if shoff != 0 {
        if shentsize != SHDR_SIZE {
            return Err(format!("section header entry size {shentsize} is not 64"));
        }
        // Extended numbering: with 0 here, section 0's sh_size is the count.
        let count = if shnum == 0 {
            table_end(shoff, 1, SHDR_SIZE, "section header table")?;
            u64_at(bytes, shoff + 32).unwrap_or(0).max(1)
        } else {
            shnum
        };
        extent = extent.max(table_end(shoff, count, SHDR_SIZE, "section header table")?);
    }
    Ok(Probe {
        e_type,
        machine,
        extent,
    })
}

fn slice_at<const N: usize>(bytes: &[u8], offset: u64) -> Option<[u8; N]> {
    let start = usize::try_from(offset).ok()?;
    bytes.get(start..start.checked_add(N)?)?.try_into().ok()
}

fn u16_at(bytes: &[u8], offset: u64) -> Option<u16> {
    slice_at(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: u64) -> Option<u32> {
    slice_at(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: u64) -> Option<u64> {
    slice_at(bytes, offset).map(u64::from_le_bytes)
}

/// Positions of the ELF images in `bytes`: each `\x7fELF` whose header
/// validates, skipping over an accepted image (a library's own bytes are
/// not searched for further images).
pub fn scan(bytes: &[u8]) -> Vec<(u64, Probe)> {
    let mut found = Vec::new();
    let mut at = 0usize;
    while let Some(pos) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == 0x7f))
    {
        let start = at + pos;
        if bytes[start..].starts_with(b"\x7fELF") {
            if let Ok(p) = probe(&bytes[start..]) {
                found.push((start as u64, p));
                // extent >= 64, and the image lies inside `bytes`.
                at = start + p.extent as usize;
                continue;
            }
        }
        at = start + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 64 + 56];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16] = 3; // ET_DYN
        h[18] = 62; // EM_X86_64
        h[20] = 1;
        h[32] = 64; // phoff
        h[52] = 64;
        h[54] = 56;
        h[56] = 1; // one PT_NULL program header
        h
    }

    #[test]
    fn minimal_header_extent_is_its_tables() {
        let p = probe(&header()).unwrap();
        assert_eq!((p.e_type, p.machine, p.extent), (3, 62, 120));
    }

    #[test]
    fn segment_past_the_end_is_rejected() {
        let mut h = header();
        h[64 + 32] = 200; // p_filesz
        assert!(probe(&h).unwrap_err().contains("past the end"));
        h.resize(200, 0);
        assert_eq!(probe(&h).unwrap().extent, 200);
    }

    #[test]
    fn junk_is_rejected_without_panicking() {
        assert!(probe(b"").is_err());
        assert!(probe(b"\x7fELF").is_err());
        let mut h = header();
        h[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(probe(&h).is_err());
        let mut h = header();
        h[40..48].copy_from_slice(&(u64::MAX - 8).to_le_bytes()); // shoff
        h[58] = 64;
        h[60] = 2;
        assert!(probe(&h).is_err());
        let mut h = header();
        h[56] = 0;
        assert!(probe(&h).is_err());
    }

    #[test]
    fn scan_finds_images_between_junk_and_skips_false_magic() {
        let img = header();
        let mut container = b"junk\x7fELF more junk".to_vec();
        let first = container.len();
        container.extend_from_slice(&img);
        container.extend_from_slice(b"\x7fEL");
        let second = container.len();
        container.extend_from_slice(&img);
        let found: Vec<u64> = scan(&container).iter().map(|f| f.0).collect();
        assert_eq!(found, [first as u64, second as u64]);
    }
}
