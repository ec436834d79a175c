//! A structural check of `.eh_frame` before it goes to the unwinder.
//!
//! libgcc's `__register_frame` trusts the section completely: the first
//! unwind anywhere in the process (a panic, a C++ exception, a backtrace)
//! walks every registered section, follows each FDE's CIE pointer, reads
//! the CIE's augmentation and pointer encodings and aborts on an encoding
//! it does not know. A corrupted section would crash the process long
//! after the load succeeded, so [`check`] proves, before registration, what
//! that walk relies on:
//!
//! * records follow each other inside one loaded segment up to a zero
//!   terminator (no 64-bit lengths, which libgcc's walk does not support);
//! * every FDE's CIE pointer names a CIE that precedes it;
//! * every CIE's fields lie inside the record, and its FDE pointer encoding
//!   is one libgcc reads without aborting or dereferencing;
//! * every FDE's code range lies inside an executable segment of the image,
//!   so its unwind program is only ever used for the image's own frames.

use super::Memory;

/// Why a section was refused (for debugging; the caller only needs "no").
pub type Refusal = &'static str;

// DWARF pointer encodings: the value format (low nibble) ...
const DW_EH_PE_ABSPTR: u8 = 0x00;
const DW_EH_PE_ULEB128: u8 = 0x01;
const DW_EH_PE_UDATA2: u8 = 0x02;
const DW_EH_PE_UDATA4: u8 = 0x03;
const DW_EH_PE_UDATA8: u8 = 0x04;
const DW_EH_PE_SLEB128: u8 = 0x09;
const DW_EH_PE_SDATA2: u8 = 0x0a;
const DW_EH_PE_SDATA4: u8 = 0x0b;
const DW_EH_PE_SDATA8: u8 = 0x0c;
// ... and how it applies (high bits).
const DW_EH_PE_PCREL: u8 = 0x10;

/// Bytes of `[pos, end)` of the section, as a cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, Refusal> {
        if self.pos >= self.end {
            return Err("field past the end of its record");
        }
        self.pos += 1;
        Ok(self.bytes[self.pos - 1])
    }
    /// `N` bytes as a little-endian number (one bounds check, one load).
    fn take<const N: usize>(&mut self) -> Result<u64, Refusal> {
        let end = self.pos + N;
        if end > self.end {
            return Err("field past the end of its record");
        }
        let mut word = [0u8; 8];
        word[..N].copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(u64::from_le_bytes(word))
    }
    fn uleb(&mut self) -> Result<u64, Refusal> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }
    fn sleb(&mut self) -> Result<i64, Refusal> {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Ok(v);
            }
        }
    }
    fn cstr(&mut self) -> Result<&[u8], Refusal> {
        let start = self.pos;
        while self.u8()? != 0 {}
        Ok(&self.bytes[start..self.pos - 1])
    }
    /// A value in `enc`'s format (its application is the caller's): the
    /// DWARF pointer decoder, which `.eh_frame_hdr` uses too
    /// ([`read_encoded`]).
    fn encoded(&mut self, enc: u8) -> Result<u64, Refusal> {
        Ok(match enc & 0x0f {
            DW_EH_PE_ABSPTR | DW_EH_PE_UDATA8 | DW_EH_PE_SDATA8 => self.take::<8>()?,
            DW_EH_PE_UDATA2 => self.take::<2>()?,
            DW_EH_PE_UDATA4 => self.take::<4>()?,
            DW_EH_PE_SDATA2 => self.take::<2>()? as u16 as i16 as u64,
            DW_EH_PE_SDATA4 => self.take::<4>()? as u32 as i32 as u64,
            DW_EH_PE_ULEB128 => self.uleb()?,
            DW_EH_PE_SLEB128 => self.sleb()? as u64,
            _ => return Err("unknown pointer encoding"),
        })
    }
}

/// The pointer of encoding `enc`'s format at the start of `bytes` (its
/// application, PC- or data-relative, is the caller's).
pub fn read_encoded(bytes: &[u8], enc: u8) -> Result<u64, Refusal> {
    Cursor {
        bytes,
        pos: 0,
        end: bytes.len(),
    }
    .encoded(enc)
}

/// Whether libgcc reads a pointer of encoding `enc` without aborting and
/// without dereferencing it.
fn known_format(enc: u8) -> bool {
    matches!(
        enc & 0x0f,
        DW_EH_PE_ABSPTR
            | DW_EH_PE_ULEB128
            | DW_EH_PE_UDATA2
            | DW_EH_PE_UDATA4
            | DW_EH_PE_UDATA8
            | DW_EH_PE_SLEB128
            | DW_EH_PE_SDATA2
            | DW_EH_PE_SDATA4
            | DW_EH_PE_SDATA8
    )
}

/// FDE pointers: absolute (already relocated) or PC-relative, the only
/// applications libgcc gives a meaning for registered sections.
fn fde_encoding_ok(enc: u8) -> bool {
    known_format(enc) && matches!(enc & 0xf0, 0 | DW_EH_PE_PCREL)
}

/// The FDE pointer encoding a CIE declares (absolute without `zR`).
fn parse_cie(c: &mut Cursor<'_>) -> Result<u8, Refusal> {
    let version = c.u8()?;
    if !matches!(version, 1 | 3 | 4) {
        return Err("unknown CIE version");
    }
    let aug = c.cstr()?.to_vec();
    if version == 4 {
        // Address and segment selector sizes.
        if c.u8()? != 8 || c.u8()? != 0 {
            return Err("CIE address size is not 8");
        }
    }
    c.uleb()?; // code alignment
    c.sleb()?; // data alignment
    if version == 1 {
        c.u8()?; // return address register
    } else {
        c.uleb()?;
    }
    let mut fde_enc = DW_EH_PE_ABSPTR;
    if aug.first() != Some(&b'z') {
        return Ok(fde_enc);
    }
    let len = c.uleb()?;
    let data_end = u64::try_from(c.pos)
        .ok()
        .and_then(|p| p.checked_add(len))
        .filter(|&e| e <= c.end as u64)
        .ok_or("CIE augmentation data past the record")?;
    for &ch in &aug[1..] {
        match ch {
            b'R' => {
                fde_enc = c.u8()?;
                if !fde_encoding_ok(fde_enc) {
                    return Err("unsupported FDE pointer encoding");
                }
            }
            b'P' => {
                let enc = c.u8()?;
                if !known_format(enc) {
                    return Err("unknown personality encoding");
                }
                c.encoded(enc)?;
            }
            b'L' => {
                if !known_format(c.u8()?) {
                    return Err("unknown LSDA encoding");
                }
            }
            b'S' | b'B' => {}
            // libgcc stops interpreting at a letter it does not know.
            _ => break,
        }
    }
    if c.pos as u64 > data_end {
        return Err("CIE augmentation data past its length");
    }
    Ok(fde_enc)
}

/// Checks the `.eh_frame` at `vaddr` of the loaded image `mem`, through
/// the image's memory: the bytes libgcc will read. The walk ends at the
/// terminator, so it reads the section only, whatever follows it in the
/// segment.
pub fn check(mem: &Memory<'_>, vaddr: u64) -> Result<(), Refusal> {
    let seg = mem
        .loads()
        .iter()
        .find(|s| s.readable() && s.contains(vaddr, 4))
        .ok_or(".eh_frame outside the loaded segments")?;
    let len = seg.end() - vaddr;
    let view = mem
        .table(".eh_frame", vaddr, len)
        .map_err(|_| ".eh_frame outside the loaded segments")?;
    let addr = view.addr();
    let len = usize::try_from(len).map_err(|_| "segment too large")?;
    let bytes = view.bytes();
    // Runtime ranges of the executable segments (usually one), so each of
    // the thousands of FDEs of a large library costs two compares.
    let text: Vec<(u64, u64)> = mem
        .loads()
        .iter()
        .filter(|s| s.executable())
        .map(|s| {
            let start = (mem.bias() as u64).wrapping_add(s.vaddr);
            (start, start.wrapping_add(s.memsz))
        })
        .collect();
    // CIE start offset → its FDE pointer encoding; FDEs name the CIE just
    // before them almost always, so the last one found is tried first.
    let mut cies: Vec<(usize, u8)> = Vec::new();
    let mut last_cie = (usize::MAX, 0u8);
    let mut pos = 0usize;
    loop {
        if last_cie.1 == DW_FAST_FDE {
            pos = skip_plain_fdes(bytes, pos, last_cie.0, addr as u64, &text);
        }
        if pos == bytes.len() && crate::map::zero_word_after(addr + len) {
            // No terminator in the file (an object linked without crtend),
            // but the zeros after the segment in its last page end the walk.
            return Ok(());
        }
        let length = word32(bytes, pos).ok_or("no terminator before the end of the segment")?;
        if length == 0 {
            return Ok(());
        }
        if length == u32::MAX {
            return Err("64-bit record length");
        }
        let end = (pos + 4)
            .checked_add(length as usize)
            .filter(|&e| e <= bytes.len())
            .ok_or("record past the end of the segment")?;
        // Every record holds at least its 4-byte id.
        let id = word32(bytes, pos + 4)
            .filter(|_| pos + 8 <= end)
            .ok_or("field past the end of its record")?;
        if id == 0 {
            let mut c = Cursor {
                bytes,
                pos: pos + 8,
                end,
            };
            let enc = parse_cie(&mut c)?;
            cies.push((pos, enc));
            pos = end;
            continue;
        }
        // The CIE pointer counts back from the pointer field itself.
        let cie = (pos + 4)
            .checked_sub(id as usize)
            .ok_or("CIE pointer before the section")?;
        if last_cie.0 != cie {
            last_cie = *cies
                .iter()
                .find(|&&(start, _)| start == cie)
                .ok_or("CIE pointer does not name a preceding CIE")?;
        }
        let enc = last_cie.1;
        let field = pos + 8;
        let (begin, range) = if enc == DW_FAST_FDE {
            // What compilers emit: two 4-byte fields, the first PC-relative.
            let begin = word32(bytes, field).filter(|_| field + 8 <= end);
            let range = word32(bytes, field + 4);
            let (Some(begin), Some(range)) = (begin, range) else {
                return Err("field past the end of its record");
            };
            let at = (addr + field) as u64;
            (at.wrapping_add(begin as i32 as u64), range as i32 as u64)
        } else {
            let mut c = Cursor {
                bytes,
                pos: field,
                end,
            };
            let begin = c.encoded(enc)?;
            let range = c.encoded(enc & 0x0f)?;
            let begin = if enc & 0xf0 == DW_EH_PE_PCREL {
                ((addr + field) as u64).wrapping_add(begin)
            } else {
                begin
            };
            // libgcc skips absolute FDEs at 0 (discarded functions).
            if enc == DW_EH_PE_ABSPTR && begin == 0 {
                pos = end;
                continue;
            }
            (begin, range)
        };
        if !covers_code(&text, begin, range) {
            return Err("FDE covers code outside the image");
        }
        pos = end;
    }
}

/// The FDE pointer encoding compilers emit: 4-byte PC-relative.
const DW_FAST_FDE: u8 = DW_EH_PE_PCREL | DW_EH_PE_SDATA4;

/// Walks, from `pos`, the FDEs that are certainly fine and that `check`
/// would pass (the bulk of a large library's section): each names the CIE
/// at `cie` (whose FDE encoding is [`DW_FAST_FDE`]), fits the section, and
/// covers code inside one of the `text` ranges (usually one; BOLT makes
/// two). Returns where the first other record starts (a CIE, the
/// terminator, anything doubtful), for `check` to go on from.
#[inline(never)]
fn skip_plain_fdes(bytes: &[u8], pos: usize, cie: usize, base: u64, text: &[(u64, u64)]) -> usize {
    // One executable range (nearly always): a loop that knows it.
    match text {
        [one] => plain_fdes(bytes, pos, cie, base, std::slice::from_ref(one)),
        _ => plain_fdes(bytes, pos, cie, base, text),
    }
}

#[inline(always)]
fn plain_fdes(bytes: &[u8], mut pos: usize, cie: usize, base: u64, text: &[(u64, u64)]) -> usize {
    // The four words every such FDE starts with, under one bounds check
    // (a record shorter than 16 bytes is no such FDE).
    while let Some(head) = bytes.get(pos..).and_then(<[u8]>::first_chunk::<16>) {
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (length, id, begin, range) = (word(0), word(4), word(8), word(12));
        // An id and two 4-byte fields at least; not the 64-bit escape.
        if !(12..u32::MAX).contains(&length) {
            return pos;
        }
        // The CIE pointer names `cie`, which lies before `pos` (so a CIE's
        // id, 0, never does).
        let end = pos + 4 + length as usize;
        if end > bytes.len() || (pos + 4).checked_sub(id as usize) != Some(cie) {
            return pos;
        }
        let begin = (base + (pos + 8) as u64).wrapping_add(begin as i32 as u64);
        if !covers_code(text, begin, range as i32 as u64) {
            return pos;
        }
        pos = end;
    }
    pos
}

/// Whether an FDE's code, `size` bytes (at least one) from `begin`, lies
/// in one of the image's executable ranges `text`.
fn covers_code(text: &[(u64, u64)], begin: u64, size: u64) -> bool {
    text.iter().any(|&(start, end)| {
        begin >= start && begin.checked_add(size.max(1)).is_some_and(|e| e <= end)
    })
}

/// The little-endian 32-bit word at `pos`, if 4 bytes are there.
fn word32(bytes: &[u8], pos: usize) -> Option<u32> {
    let b = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128() {
        let bytes = [0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f];
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            end: bytes.len(),
        };
        assert_eq!(c.uleb(), Ok(624_485));
        assert_eq!(c.sleb(), Ok(-1));
        assert_eq!(c.sleb(), Ok(-128));
        assert!(c.u8().is_err());
    }
}
