//! Typed, bounds-checked views of a loaded image's memory: the one place
//! where the address of a table the dynamic section names becomes
//! something Rust code reads, and a relocation target something it writes.
//!
//! [`Memory`] describes where the image's segments are; a [`View`] is a
//! byte range `[addr, addr + len)` it checked to lie inside one readable
//! loaded segment, and an [`Array`] is a view read as entries of one
//! plain-data type. Their accessors are safe and return `Option`: every
//! index is compared with the length the view was made with, so the
//! symbol, hash, version, relocation and dynamic-section readers are safe
//! code. What makes the reads sound is promised once, where the image's
//! memory is described ([`Memory::new`], which alone calls [`View::new`]):
//! the range stays mapped and readable for as long as the view (or a copy)
//! is used, which the loader guarantees by keeping the views of an image
//! inside the value that owns its mapping.
//!
//! Views over writable memory are only read through unaligned loads,
//! never as slices, so a write the image's code makes later does not
//! invalidate a reference; [`View::bytes`] is for the read-only tables
//! (string tables, `.eh_frame`).
//!
//! [`Targets`] is the writing side: relocation targets inside the image's
//! writable segments, while the loader alone writes them.

use std::marker::PhantomData;

use super::Segment;
use crate::error::{Error, Result};

/// Plain data: any bytes are a valid value and the type has no padding,
/// so it may be read from the image's memory as it lies there.
///
/// # Safety
/// Implement only for `Copy` types without padding whose every bit pattern
/// is a valid value (integers, and `#[repr(C)]` structs of them).
pub unsafe trait Pod: Copy {}

macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: an integer, or a `#[repr(C)]` record of integers whose
        // size is checked below to be the sum of its fields (no padding).
        unsafe impl Pod for $t {}
    )*};
}
pod!(u8, u16, u32, u64, i64, usize);
// SAFETY: an array of plain data has no padding and takes any bytes.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
pod!(
    super::symbols::Sym,
    super::records::Rel,
    super::records::Rela,
    super::records::Dyn,
    super::records::Verdef,
    super::records::Verdaux,
    super::records::Verneed,
    super::records::Vernaux,
);

/// `[addr, addr + len)` of a loaded image, readable (see the module
/// documentation).
#[derive(Clone, Copy, Debug)]
pub struct View {
    addr: usize,
    len: usize,
}

impl View {
    /// A view of `[addr, addr + len)`.
    ///
    /// # Safety
    /// The range must be mapped and readable for as long as this view, or
    /// any copy of it or view or array taken from it, is used; and while it
    /// is, nothing may write to it unless the range lies in a writable
    /// segment (such views are only read through unaligned loads).
    unsafe fn new(addr: usize, len: usize) -> View {
        View { addr, len }
    }

    /// Runtime address of the first byte.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Bytes in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The `T` at byte `offset`, or `None` when it does not fit.
    #[inline]
    pub fn read<T: Pod>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(std::mem::size_of::<T>())?;
        if end > self.len {
            return None;
        }
        // SAFETY: `[offset, end)` lies inside the view, readable by the
        // promise made in `View::new`; `T` is plain data (any bytes are a
        // value) and the read is unaligned.
        Some(unsafe { std::ptr::read_unaligned((self.addr + offset) as *const T) })
    }

    /// The whole view as bytes. Only for views of read-only segments
    /// (nothing writes them while the image is loaded).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range is mapped and readable for as long as `self`
        // (the promise made in `View::new`), and callers only take slices
        // of read-only segments, which nothing writes.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The `len` bytes from `offset` on, if they lie in the view.
    pub fn range(&self, offset: usize, len: usize) -> Option<View> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| View {
            addr: self.addr + offset,
            len,
        })
    }

    /// The view as entries of `T` (a trailing partial entry is left out).
    pub fn array<T: Pod>(&self) -> Array<T> {
        Array {
            addr: self.addr,
            len: self.len / std::mem::size_of::<T>(),
            _entry: PhantomData,
        }
    }
}

/// `len` entries of `T` in a loaded image (made by [`View::array`]).
#[derive(Debug)]
pub struct Array<T> {
    addr: usize,
    len: usize,
    _entry: PhantomData<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Array<T> {}

impl<T: Pod> Array<T> {
    /// An array without entries.
    pub const EMPTY: Array<T> = Array {
        addr: 0,
        len: 0,
        _entry: PhantomData,
    };

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Entry `index`, or `None` past the end.
    #[inline]
    pub fn get(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        // SAFETY: `index < len`, and the `len` entries lie inside the view
        // this array was taken from (readable, see `View::new`); `T` is
        // plain data and the read is unaligned.
        Some(unsafe {
            std::ptr::read_unaligned((self.addr + index * std::mem::size_of::<T>()) as *const T)
        })
    }

    /// The entries from `start` on (none past the end).
    #[inline]
    pub fn from(&self, start: usize) -> Array<T> {
        let start = start.min(self.len);
        Array {
            addr: self.addr + start * std::mem::size_of::<T>(),
            len: self.len - start,
            _entry: PhantomData,
        }
    }

    /// The entries as bytes. Only for arrays of read-only segments
    /// (nothing writes them while the image is loaded).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the `len` entries lie inside the view this array was
        // taken from (mapped and readable for as long as it is used, see
        // `View::new`), and callers only take slices of read-only
        // segments, which nothing writes.
        unsafe {
            std::slice::from_raw_parts(self.addr as *const u8, self.len * std::mem::size_of::<T>())
        }
    }

    /// Every entry, in order.
    #[inline]
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> {
        let (addr, size) = (self.addr, std::mem::size_of::<T>());
        (0..self.len).map(move |i| {
            // SAFETY: `i < len` (the range's bound): entry i lies inside the
            // view this array was taken from, as in `get`.
            unsafe { std::ptr::read_unaligned((addr + i * size) as *const T) }
        })
    }
}

/// Where relocations may write: the image's writable segments.
pub struct Targets<'a> {
    bias: usize,
    /// The writable segments (usually one), checked first and alone on
    /// the path every relocation takes.
    writable: Vec<&'a Segment>,
    /// The offsets an 8-byte word of the first writable segment can start
    /// at, `[first, last]` (see [`Targets::word`]).
    words: Option<(u64, u64)>,
    /// Every segment, to tell the two errors apart.
    loads: &'a [Segment],
}

/// A checked relocation target: `size` bytes in a writable segment (see
/// [`Targets::get`]).
#[derive(Clone, Copy, Debug)]
pub struct Target<'t> {
    addr: usize,
    size: u64,
    _targets: PhantomData<&'t ()>,
}

impl<'a> Targets<'a> {
    /// The writable segments among `loads`, loaded at `bias`.
    ///
    /// # Safety
    /// Every writable segment must be mapped read-write at `bias + vaddr`
    /// for as long as this value lives, and nothing but the targets it hands
    /// out may read or write it meanwhile (the loader alone, before the
    /// image's code runs, except the ifunc resolvers whose results it
    /// writes).
    pub unsafe fn new(bias: usize, loads: &'a [Segment]) -> Targets<'a> {
        let writable: Vec<&Segment> = loads.iter().filter(|s| s.writable()).collect();
        let words = writable
            .first()
            .and_then(|s| Some((s.vaddr, s.end().checked_sub(8)?)))
            .filter(|(first, last)| first <= last);
        Targets {
            bias,
            writable,
            words,
            loads,
        }
    }

    /// The load bias: runtime address = `bias + vaddr`.
    pub fn bias(&self) -> usize {
        self.bias
    }

    /// The 8-byte target at `offset` if it lies in the first writable
    /// segment (`None` does not mean it is invalid: [`Targets::get`] tells).
    /// Two compares: the relative relocations' path.
    #[inline]
    pub fn word(&self, offset: u64) -> Option<Target<'_>> {
        let (first, last) = self.words?;
        (first <= offset && offset <= last).then(|| Target {
            addr: self.bias.wrapping_add(offset as usize),
            size: 8,
            _targets: PhantomData,
        })
    }

    /// Relocation `index`'s target of `size` bytes at `offset`, which must
    /// lie in a writable segment of the image.
    #[inline]
    pub fn get(&self, index: usize, offset: u64, size: u64) -> Result<Target<'_>> {
        if self.writable.iter().any(|s| s.contains(offset, size)) {
            return Ok(Target {
                addr: self.bias.wrapping_add(offset as usize),
                size,
                _targets: PhantomData,
            });
        }
        Err(if self.loads.iter().any(|s| s.contains(offset, size)) {
            Error::RelocationInReadOnly { index, offset }
        } else {
            Error::RelocationOutOfBounds { index, offset }
        })
    }
}

impl Target<'_> {
    /// The 8-byte word `word` (0 or 1) of the target.
    #[inline]
    pub fn read(&self, word: u64) -> u64 {
        assert!(word * 8 + 8 <= self.size, "word outside the target");
        // SAFETY: inside the target (asserted), which lies in a writable
        // segment mapped read-write and written by nothing else while the
        // `Targets` it came from lives (see `Targets::new`).
        unsafe { std::ptr::read_unaligned((self.addr + word as usize * 8) as *const u64) }
    }

    /// Writes `value` to the 8-byte word `word` (0 or 1) of the target.
    #[inline]
    pub fn write(&self, word: u64, value: u64) {
        assert!(word * 8 + 8 <= self.size, "word outside the target");
        // SAFETY: as in `read`; no reference to the target's bytes exists.
        unsafe { std::ptr::write_unaligned((self.addr + word as usize * 8) as *mut u64, value) }
    }
}

/// The loaded image's memory as the parser sees it: every table read goes
/// through [`Memory::table`], which proves the range lies inside one
/// readable `PT_LOAD` before handing out a [`View`] of it.
#[derive(Clone, Copy)]
pub struct Memory<'a> {
    bias: usize,
    loads: &'a [Segment],
}

impl<'a> Memory<'a> {
    /// The image whose segments `loads` are loaded at `bias`.
    ///
    /// # Safety
    /// Every readable segment must be mapped readable at `bias + vaddr`
    /// for as long as any view this value makes is used, and its read-only
    /// segments must not be written meanwhile (the promise
    /// [`View::new`] needs; the loader keeps an image's views
    /// inside the value that owns its mapping).
    pub unsafe fn new(bias: usize, loads: &'a [Segment]) -> Memory<'a> {
        Memory { bias, loads }
    }

    /// The load bias: runtime address = `bias + vaddr`.
    pub fn bias(&self) -> usize {
        self.bias
    }

    /// The loaded segments.
    pub fn loads(&self) -> &'a [Segment] {
        self.loads
    }

    /// A view of `[vaddr, vaddr + size)` after checking that the whole
    /// range lies in one readable loaded segment.
    pub fn table(&self, table: &'static str, vaddr: u64, size: u64) -> Result<View> {
        if self
            .loads
            .iter()
            .any(|s| s.readable() && s.contains(vaddr, size))
        {
            // SAFETY: the range lies inside a readable loaded segment, which
            // stays mapped as long as this memory's views are used (the
            // promise made in `Memory::new`).
            Ok(unsafe { View::new(self.bias.wrapping_add(vaddr as usize), size as usize) })
        } else {
            Err(Error::TableOutOfBounds {
                table,
                addr: vaddr,
                size,
            })
        }
    }

    /// The runtime address of code at `vaddr`, which must lie in an
    /// executable segment: the loader only ever calls into the image's own
    /// code (initialisers, finalisers, ifunc resolvers).
    pub fn code(&self, vaddr: u64, what: &'static str) -> Result<usize> {
        if self
            .loads
            .iter()
            .any(|s| s.executable() && s.contains(vaddr, 1))
        {
            Ok(self.bias.wrapping_add(vaddr as usize))
        } else {
            Err(Error::TableOutOfBounds {
                table: what,
                addr: vaddr,
                size: 1,
            })
        }
    }

    /// Like [`Memory::table`], and the segment must also be read-only: the
    /// tables that drive relocation and lookup must not change after they
    /// were validated (relocations only ever write to writable segments).
    pub fn readonly_table(&self, table: &'static str, vaddr: u64, size: u64) -> Result<View> {
        let view = self.table(table, vaddr, size)?;
        if self
            .loads
            .iter()
            .any(|s| s.writable() && s.contains(vaddr, size))
        {
            return Err(Error::TableInWritableSegment { table, addr: vaddr });
        }
        Ok(view)
    }

    /// A read-only table of `count` entries of `T`.
    pub fn readonly_array<T: Pod>(
        &self,
        table: &'static str,
        vaddr: u64,
        count: u64,
    ) -> Result<Array<T>> {
        let size =
            count
                .checked_mul(std::mem::size_of::<T>() as u64)
                .ok_or(Error::TableOutOfBounds {
                    table,
                    addr: vaddr,
                    size: u64::MAX,
                })?;
        Ok(self.readonly_table(table, vaddr, size)?.array())
    }

    /// The `T` at `vaddr` of a read-only segment.
    pub fn readonly_record<T: Pod>(&self, table: &'static str, vaddr: u64) -> Result<T> {
        let size = std::mem::size_of::<T>() as u64;
        match self.readonly_table(table, vaddr, size)?.read(0) {
            Some(record) => Ok(record),
            // Not reached: the view is exactly one record long.
            None => Err(Error::TableOutOfBounds {
                table,
                addr: vaddr,
                size,
            }),
        }
    }
}
