//! Typed, bounds-checked views of a loaded image's memory: the one place
//! where an address of the image becomes something Rust code reads or
//! writes.
//!
//! A [`View`] is a byte range `[addr, addr + len)` that
//! [`Memory`](super::Memory) checked to lie inside one readable loaded
//! segment; an [`Array`] is a view read as entries of one plain-data type.
//! Their accessors are safe and return `Option`: every index is compared
//! with the length the view was made with, so the symbol, hash, version,
//! relocation and dynamic-section readers are safe code. What makes the
//! reads sound is promised once, where a view is made ([`View::new`]): the
//! range stays mapped and readable for as long as the view (or a copy) is
//! used, which the loader guarantees by keeping the views of an image
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
    pub(super) unsafe fn new(addr: usize, len: usize) -> View {
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

    /// Every entry, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> + '_ {
        (0..self.len).filter_map(|i| self.get(i))
    }
}

/// Where relocations may write: the image's writable segments.
pub struct Targets<'a> {
    bias: usize,
    /// The writable segments (usually one), checked first and alone on
    /// the path every relocation takes.
    writable: Vec<&'a Segment>,
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
        Targets {
            bias,
            writable: loads.iter().filter(|s| s.writable()).collect(),
            loads,
        }
    }

    /// The load bias: runtime address = `bias + vaddr`.
    pub fn bias(&self) -> usize {
        self.bias
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
