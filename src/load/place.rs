//! Reserve and place: one address range for the image, and each segment
//! in it, copied from the ELF's bytes or mapped from its file.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::elf::{Layout, Segment};
use crate::error::{Error, Result};
use crate::map::{page_size, prot_of, read_exact_at, Mapping, ProtectedRange};
use crate::runtime::image::Placement;

pub(super) fn page_start(addr: u64, page: u64) -> u64 {
    addr & !(page - 1)
}

/// Page-rounded end; the layout checked that segment ends round without overflow.
pub(super) fn page_end(addr: u64, page: u64) -> u64 {
    (addr + page - 1) & !(page - 1)
}

/// Where the ELF's bytes can be read without touching the image: what a
/// segment that is not mapped from the file is copied from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// The ELF's bytes, in memory.
    Bytes(&'a [u8]),
    /// `len` bytes of `fd` from `offset` on (`pread`).
    File {
        fd: BorrowedFd<'a>,
        offset: u64,
        len: u64,
    },
}

impl Source<'_> {
    /// The ELF's length in bytes.
    pub(super) fn len(&self) -> u64 {
        match *self {
            Source::Bytes(bytes) => bytes.len() as u64,
            Source::File { len, .. } => len,
        }
    }

    /// Appends the `len` bytes at `at` of the ELF to `out`, without
    /// zero-filling them first; `false` (and `out` unchanged) when the
    /// range is not inside the ELF or cannot be read.
    pub(super) fn append(&self, at: u64, len: u64, out: &mut Vec<u8>) -> bool {
        let inside = at.checked_add(len).is_some_and(|end| end <= self.len());
        let Ok(n) = usize::try_from(len) else {
            return false;
        };
        match *self {
            _ if !inside => false,
            Source::Bytes(bytes) => {
                // `at + len <= bytes.len()`: checked just above.
                let src = &bytes[at as usize..at as usize + n];
                out.try_reserve(n).is_ok() && {
                    out.extend_from_slice(src);
                    true
                }
            }
            Source::File { fd, offset, .. } => {
                crate::map::append_at(fd, out, n, offset + at).is_ok()
            }
        }
    }

    /// Fills `buf` from `at` of the ELF (a range inside it: `Layout`
    /// checked every segment's file range).
    pub(super) fn read(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        match *self {
            Source::Bytes(bytes) => {
                let range = usize::try_from(at)
                    .ok()
                    .and_then(|at| bytes.get(at..at.checked_add(buf.len())?));
                let src = range.ok_or(Error::Truncated {
                    what: "file range",
                    offset: at,
                    size: buf.len() as u64,
                    len: bytes.len() as u64,
                })?;
                buf.copy_from_slice(src);
                Ok(())
            }
            // `at` lies inside the range checked against the file size.
            Source::File { fd, offset, .. } => read_exact_at(fd, buf, offset + at),
        }
    }
}

/// Read and write: what copying into memory needs.
pub(super) const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;

/// How the segments were put in place: each segment's [`Placement`], and
/// the protection of every page (for the final protections to skip what is
/// already right).
pub(super) struct Placed {
    pub placements: Vec<Placement>,
    /// Disjoint page ranges mapped over the reservation (reserved with
    /// [`Mapping::reserved_prot`]), with theirs.
    pub mapped: Vec<ProtectedRange>,
}

/// Reserves the span of `layout` read-write (and `below` bytes under it,
/// see [`Mapping::reserve`]) and copies each segment's file
/// bytes into it from `bytes` (see [`populate_and_copy`]).
pub(super) fn place_copies(
    layout: &Layout,
    bytes: &[u8],
    alone: bool,
    below: usize,
) -> Result<(Mapping, Placed)> {
    let mapping = reserve(layout, RW, below)?;
    let bias = mapping.base().wrapping_sub(layout.span_start as usize);
    let page = page_size() as u64;
    populate_and_copy(&mapping, bytes, bias, &layout.loads, page, alone);
    let placed = Placed {
        placements: vec![Placement::Copied; layout.loads.len()],
        mapped: Vec::new(),
    };
    Ok((mapping, placed))
}

/// Reserves the span of `layout` (an ELF that lies at `offset` of `fd`) and
/// puts each segment in place: mapped from the file where its offset allows
/// (see [`crate::ElfImage::load_fd`]), copied otherwise.
///
/// Runs of read-only segments that follow each other in the file as in
/// memory (headers, code, read-only data under `-z separate-code`) are
/// mapped by one `mmap`, read-only; the final protections then make the
/// code executable with one `mprotect`, which costs less than a mapping.
pub(super) fn place_from_file(
    layout: &Layout,
    fd: BorrowedFd<'_>,
    offset: u64,
    source: Source<'_>,
    alone: bool,
    below: usize,
) -> Result<(Mapping, Placed)> {
    let plan = FilePlan {
        loads: &layout.loads,
        page: page_size() as u64,
        offset,
        // On a noexec mount the kernel refuses executable mappings of the
        // file: code is copied, the rest is still mapped.
        exec_allowed: !crate::map::on_noexec_mount(fd),
    };
    // When every segment is mapped from the file, nothing is copied into
    // the reservation: reserved inaccessible, the gaps between segments
    // (64 KiB-aligned links have them) need no mprotect later. Without
    // gaps nothing of the reservation stays in the span but `.bss` past
    // the file's pages, which must be writable: reserved read-write, it
    // needs no mprotect either (nor does the debuggers' room under it).
    let page = plan.page;
    let gaps = plan
        .loads
        .windows(2)
        .any(|w| page_end(w[0].end(), page) < page_start(w[1].vaddr, page));
    let reserved = if gaps && (0..plan.loads.len()).all(|i| plan.zero_copy(i)) {
        libc::PROT_NONE
    } else {
        RW
    };
    let mapping = reserve(layout, reserved, below)?;
    let bias = mapping.base().wrapping_sub(layout.span_start as usize);
    let mut placed = Placed {
        placements: Vec::with_capacity(plan.loads.len()),
        mapped: Vec::new(),
    };
    let mut i = 0;
    while i < plan.loads.len() {
        if plan.zero_copy(i) {
            i = plan.map_run(&mapping, bias, fd, i, &mut placed)? + 1;
        } else {
            plan.copy(&mapping, bias, source, i, alone)?;
            placed.placements.push(Placement::Copied);
            i += 1;
        }
    }
    Ok((mapping, placed))
}

/// How the segments of an ELF at `offset` of a file are placed.
struct FilePlan<'a> {
    loads: &'a [Segment],
    page: u64,
    offset: u64,
    exec_allowed: bool,
}

impl FilePlan<'_> {
    /// Where `seg`'s bytes lie in the file. Cannot overflow: the range was
    /// checked against the file size (or lies in this process's memory) and
    /// every segment inside it.
    fn file_offset(&self, seg: &Segment) -> u64 {
        self.offset + seg.offset
    }

    /// Page-rounded end of `seg`'s file bytes in memory.
    fn file_end(&self, seg: &Segment) -> u64 {
        page_end(seg.vaddr + seg.filesz, self.page)
    }

    /// Whether bss shares `seg`'s last file page: it must read as zero, so
    /// that page is written (and becomes private).
    fn bss_in_page(&self, seg: &Segment) -> bool {
        seg.memsz > seg.filesz && self.file_end(seg) > seg.vaddr + seg.filesz
    }

    /// Mapped read-only, never written by the loader.
    fn read_only(&self, seg: &Segment) -> bool {
        !seg.writable() && !self.bss_in_page(seg)
    }

    /// Whether segment `i` can be mapped from the file.
    fn zero_copy(&self, i: usize) -> bool {
        let (seg, page) = (&self.loads[i], self.page);
        // Whether `seg` has its pages to itself: a page also holding part of
        // a neighbour (possible when the kernel's page is larger than the
        // link's max-page-size) needs both segments' bytes, so it is built
        // by copying.
        let own_pages = |other: Option<&Segment>, before: bool| match other {
            None => true,
            Some(o) if before => page_end(o.end(), page) <= page_start(seg.vaddr, page),
            Some(o) => page_end(seg.end(), page) <= page_start(o.vaddr, page),
        };
        seg.filesz > 0
            && (self.exec_allowed || !seg.executable())
            && self.file_offset(seg) % page == seg.vaddr % page
            && own_pages(i.checked_sub(1).and_then(|p| self.loads.get(p)), true)
            && own_pages(self.loads.get(i + 1), false)
    }

    /// Copies segment `i` from `source` into the (read-write) reservation.
    fn copy(
        &self,
        mapping: &Mapping,
        bias: usize,
        source: Source<'_>,
        i: usize,
        alone: bool,
    ) -> Result<()> {
        let seg = &self.loads[i];
        let dest = bias.wrapping_add(seg.vaddr as usize);
        if alone {
            // As `load` does (see `populate_and_copy`).
            let start = page_start(seg.vaddr, self.page);
            let len = (self.file_end(seg) - start) as usize;
            mapping.populate(bias.wrapping_add(start as usize), len);
        }
        // SAFETY: the destination lies inside the reservation (the span
        // covers every segment's memory and filesz <= memsz), which is
        // read-write and referenced by nothing else yet.
        let buf = unsafe { std::slice::from_raw_parts_mut(dest as *mut u8, seg.filesz as usize) };
        source.read(seg.offset, buf)
    }

    /// The last segment one mapping starting with segment `i` covers: `i`,
    /// and while it is read-only, the read-only segments right after it in
    /// memory whose file offsets keep the same distance to their addresses.
    fn run_end(&self, i: usize) -> usize {
        let (loads, seg) = (self.loads, &self.loads[i]);
        let mut last = i;
        while self.read_only(&loads[last])
            && loads.get(last + 1).is_some_and(|next| {
                self.zero_copy(last + 1)
                    && self.read_only(next)
                    && page_start(next.vaddr, self.page) == self.file_end(&loads[last])
                    && self.file_offset(next).wrapping_sub(next.vaddr)
                        == self.file_offset(seg).wrapping_sub(seg.vaddr)
            })
        {
            last += 1;
        }
        last
    }

    /// Maps the run of segments starting with segment `i` from the file;
    /// returns the run's last segment.
    fn map_run(
        &self,
        mapping: &Mapping,
        bias: usize,
        fd: BorrowedFd<'_>,
        i: usize,
        placed: &mut Placed,
    ) -> Result<usize> {
        let (seg, page) = (&self.loads[i], self.page);
        let last = self.run_end(i);
        let start = page_start(seg.vaddr, page);
        let end = self.file_end(&self.loads[last]);
        // A segment the loader never writes is mapped with its final
        // protection at once (never writable, so W^X holds), which spares
        // its mprotect later; a run of several is mapped read-only.
        let prot = if !self.read_only(seg) {
            RW
        } else if last == i {
            prot_of(seg.flags)
        } else {
            libc::PROT_READ
        };
        mapping.map_file(
            bias.wrapping_add(start as usize),
            (end - start) as usize,
            prot,
            fd,
            self.file_offset(seg) - (seg.vaddr - start),
        )?;
        // Bss pages past the file's are zero pages of the reservation: they
        // must be accessible before the final protections, since the loader
        // writes a writable segment's and may read tables in a read-only
        // one's (they read as zeros), unless the reservation already is.
        for s in &self.loads[i..=last] {
            let (data_end, bss_end) = (self.file_end(s), page_end(s.end(), page));
            if bss_end > data_end && mapping.reserved_prot() != RW {
                let len = (bss_end - data_end) as usize;
                mapping.protect(bias.wrapping_add(data_end as usize), len, RW)?;
                placed.mapped.push(ProtectedRange {
                    start: data_end,
                    end: bss_end,
                    prot: RW,
                });
            }
        }
        if self.bss_in_page(seg) {
            let zero_from = seg.vaddr + seg.filesz;
            let zero_to = end.min(seg.end());
            // SAFETY: inside the segment's pages, just mapped read-write.
            unsafe {
                std::ptr::write_bytes(
                    bias.wrapping_add(zero_from as usize) as *mut u8,
                    0,
                    (zero_to - zero_from) as usize,
                )
            };
        }
        placed.mapped.push(ProtectedRange { start, end, prot });
        placed
            .placements
            .extend((i..=last).map(|_| Placement::Mapped));
        Ok(last)
    }
}

/// Whether every page of `r` already has protection `r.prot`: where
/// `placed.mapped` says, else the reservation's (`reserved`).
pub(super) fn already_protected(
    placed: &Placed,
    reserved: libc::c_int,
    r: &ProtectedRange,
) -> bool {
    let mut at = r.start;
    while at < r.end {
        match placed.mapped.iter().find(|m| m.start <= at && at < m.end) {
            Some(m) if m.prot == r.prot => at = m.end,
            Some(_) => return false,
            None if reserved == r.prot => {
                // Up to the next mapped range.
                at = placed
                    .mapped
                    .iter()
                    .filter(|m| m.start > at)
                    .map(|m| m.start)
                    .min()
                    .unwrap_or(r.end);
            }
            None => return false,
        }
    }
    true
}

/// One range for the whole image, aligned as its segments require.
fn reserve(layout: &Layout, prot: libc::c_int, below: usize) -> Result<Mapping> {
    Mapping::reserve(
        layout.span() as usize,
        layout.align as usize,
        layout.span_start as usize,
        prot,
        below,
    )
}

/// Counts the loads in progress; see [`populate_and_copy`].
pub(super) struct LoadInFlight {
    /// Whether no other load was in progress when this one started.
    pub alone: bool,
}

static LOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

impl LoadInFlight {
    pub fn enter() -> LoadInFlight {
        LoadInFlight {
            alone: LOADS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed) == 0,
        }
    }
}

impl Drop for LoadInFlight {
    fn drop(&mut self) {
        LOADS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies the segments' file bytes into the reservation. When no other load
/// is in progress (`alone`), the pages are pre-faulted just
/// before, one `madvise(MADV_POPULATE_WRITE)` per 256 KiB instead of a page
/// fault per page: less than half the cost of a large library's copy, and
/// the chunk just zeroed is still in cache when it is copied to. But the
/// `madvise` holds the process's mm lock while it allocates, which stalls
/// every other thread's `mmap`, `munmap` and `mprotect` meanwhile, whereas
/// page faults take per-VMA locks: with another load in progress, faulting
/// gives more loads per second (SQLite on two threads: 505 instead of 600
/// µs per load, the floor's 507). The bss needs nothing: anonymous memory
/// is zero.
fn populate_and_copy(
    mapping: &Mapping,
    bytes: &[u8],
    bias: usize,
    loads: &[Segment],
    page: u64,
    alone: bool,
) {
    const CHUNK: u64 = 256 * 1024;
    // The file pages of every segment, page-rounded; adjacent segments
    // (the usual layout) make one run, so a small library takes one call.
    let pages = |s: &Segment| {
        (
            page_start(s.vaddr, page),
            page_end(s.vaddr + s.filesz, page),
        )
    };
    let with_data = || loads.iter().filter(|s| s.filesz > 0);
    let mut runs: Vec<(u64, u64)> = Vec::with_capacity(loads.len());
    for (start, end) in with_data().map(pages) {
        match runs.last_mut() {
            Some(run) if start <= run.1 => run.1 = run.1.max(end),
            _ => runs.push((start, end)),
        }
    }
    for (run_start, run_end) in runs {
        let mut at = run_start;
        while at < run_end {
            let chunk_end = (at + CHUNK).min(run_end);
            if alone {
                mapping.populate(bias.wrapping_add(at as usize), (chunk_end - at) as usize);
            }
            for seg in with_data() {
                let (from, to) = (at.max(seg.vaddr), chunk_end.min(seg.vaddr + seg.filesz));
                if from >= to {
                    continue;
                }
                let src =
                    &bytes[(seg.offset + (from - seg.vaddr)) as usize..][..(to - from) as usize];
                // SAFETY: the destination lies inside the reservation (the
                // span covers every segment's memory and filesz <= memsz)
                // and is read-write; the source range was bounds-checked by
                // Layout::parse.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        bias.wrapping_add(from as usize) as *mut u8,
                        src.len(),
                    )
                };
            }
            at = chunk_end;
        }
    }
}
