//! Address-space reservation, segment protections and the page size.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE};

use crate::elf::Layout;
use crate::error::{Error, Result};

/// Reserve address space without committing swap for it (Linux only; the
/// pages are committed as they are touched anyway).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAP_NORESERVE: c_int = libc::MAP_NORESERVE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const MAP_NORESERVE: c_int = 0;

/// Whether the 4 bytes at `end` (one past a readable loaded segment) lie
/// in the segment's last page, hence are mapped and readable, and are zero
/// (the `.eh_frame` check reads them as a terminator).
pub fn zero_word_after(end: usize) -> bool {
    let page = page_size();
    let page_end = end.next_multiple_of(page);
    if end.is_multiple_of(page) || page_end - end < 4 {
        return false;
    }
    // SAFETY: `end` lies inside the last page of a readable segment, which
    // is mapped readable as a whole; 4 bytes fit before the page ends.
    let word: u32 = unsafe { std::ptr::read_unaligned(end as *const u32) };
    word == 0
}

/// The system page size (`sysconf(_SC_PAGESIZE)`), never a constant: aarch64
/// kernels run with 4, 16 or 64 KiB pages.
pub fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let p = if p > 0 { p as usize } else { 4096 };
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// One contiguous private anonymous mapping, unmapped on drop.
///
/// Every later step of a load works inside it, so dropping it on any error
/// path leaves nothing behind.
#[derive(Debug)]
pub struct Mapping {
    base: usize,
    len: usize,
    /// The whole range mapped, alignment slack included: what drop unmaps.
    raw: usize,
    raw_len: usize,
    /// The protection it was reserved with.
    prot: c_int,
}

impl Mapping {
    /// Maps `len` bytes with protection `prot` (read-write to copy into,
    /// or none when everything will be mapped over it) at an address
    /// congruent to `congruent_to` modulo `align` (a power of two, at least
    /// a page), with at least `below` bytes (page-rounded) reserved right
    /// under it: room for the debuggers' description of the image, which
    /// refers to the image's own bytes by offset (see
    /// [`Mapping::open_below`]).
    pub fn reserve(
        len: usize,
        align: usize,
        congruent_to: usize,
        prot: c_int,
        below: usize,
    ) -> Result<Mapping> {
        let page = page_size();
        let align = align.max(page);
        let extra = align - page;
        let total = len
            .checked_add(extra)
            .and_then(|t| t.checked_add(below.checked_next_multiple_of(page)?));
        let total = total.ok_or(Error::LimitExceeded {
            what: "image span",
            value: len as u64,
            limit: usize::MAX as u64,
        })?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(Error::last_map("mmap (reserve image span)"));
        }
        let raw = raw as usize;
        let want = congruent_to & (align - 1);
        let lowest = raw + below.next_multiple_of(page);
        let base = lowest + ((want.wrapping_sub(lowest)) & (align - 1));
        // What alignment did not need (the head and the tail) stays mapped
        // until drop: never touched, it costs no memory (MAP_NORESERVE), and
        // keeping it spares two munmap calls per load of an image aligned
        // beyond the page size (test libraries are linked for 64 KiB).
        Ok(Mapping {
            base,
            len,
            raw,
            raw_len: total,
            prot,
        })
    }

    pub fn base(&self) -> usize {
        self.base
    }

    /// The protection the range was reserved with.
    pub fn reserved_prot(&self) -> c_int {
        self.prot
    }

    /// Makes the `len` bytes (page-rounded) right under the image
    /// read-write and returns their start, if the reservation has that
    /// much room there (`None` otherwise, or if `mprotect` fails). The
    /// pages stay this mapping's: they are unmapped with it.
    pub fn open_below(&self, len: usize) -> Option<usize> {
        let len = len.checked_next_multiple_of(page_size())?;
        if len == 0 || self.base - self.raw < len {
            return None;
        }
        let start = self.base - len;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: `[start, base)` lies in the reservation this value owns,
        // below the image: no segment and nothing else lives there.
        if self.prot != rw && unsafe { libc::mprotect(start as *mut _, len, rw) } != 0 {
            return None;
        }
        Some(start)
    }

    /// Maps `len` bytes of `fd` at file offset `file_offset` over
    /// `[start, start + len)`, which must lie page-aligned inside this
    /// mapping: private, so pages the loader writes become private copies
    /// while the rest stay shared with the page cache.
    pub fn map_file(
        &self,
        start: usize,
        len: usize,
        prot: c_int,
        fd: BorrowedFd<'_>,
        file_offset: u64,
    ) -> Result<()> {
        debug_assert!(start >= self.base && start + len <= self.base + self.len);
        // SAFETY: MAP_FIXED replaces pages inside the range this value owns
        // (asserted by callers, which derive it from the validated layout);
        // nothing else refers to that memory yet.
        let p = unsafe {
            libc::mmap(
                start as *mut _,
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                fd.as_raw_fd(),
                file_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_map("mmap (segment from file)"));
        }
        Ok(())
    }

    /// Pre-faults `[start, start + len)` (inside this mapping, page-aligned)
    /// for writing with one `madvise(MADV_POPULATE_WRITE)`: the kernel
    /// allocates the pages in one go instead of taking a page fault on each
    /// first write (~3 µs each on a VM). Only an optimisation: on kernels
    /// before 5.14 (EINVAL) or when memory is short, the pages are simply
    /// faulted in as they are written.
    pub fn populate(&self, start: usize, len: usize) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            /// `MADV_POPULATE_WRITE` (Linux 5.14+).
            const MADV_POPULATE_WRITE: c_int = 23;
            // Below a few pages, faulting them in costs no more than the
            // system call.
            if len < 4 * page_size() {
                return;
            }
            debug_assert!(start >= self.base && start + len <= self.base + self.len);
            // SAFETY: the range lies inside this read-write mapping
            // (asserted by callers); populating changes no contents.
            unsafe { libc::madvise(start as *mut _, len, MADV_POPULATE_WRITE) };
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = (start, len);
    }

    /// Changes the protection of `[start, start + len)`, which must lie
    /// inside this mapping.
    pub fn protect(&self, start: usize, len: usize, prot: c_int) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        debug_assert!(start >= self.base && start + len <= self.base + self.len);
        // SAFETY: the range lies inside this mapping (asserted by callers,
        // which derive it from the validated layout).
        if unsafe { libc::mprotect(start as *mut _, len, prot) } != 0 {
            return Err(Error::last_map("mprotect"));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping this value owns.
        unsafe { libc::munmap(self.raw as *mut _, self.raw_len) };
    }
}

/// The size of the file behind `fd`, after checking that
/// `offset..offset + len` is a non-empty range inside it.
pub fn checked_file_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<u64> {
    // SAFETY: fstat writes into the zeroed struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid borrowed descriptor and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Error::last_os("fstat"));
    }
    let size = st.st_size.max(0) as u64;
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(Error::Truncated {
            what: "file range",
            offset,
            size: len,
            len: size,
        });
    }
    Ok(size)
}

/// Fills `buf` from `offset` of `fd` (`pread`, repeated after short reads
/// and signals); a file that ends first is [`Error::Truncated`].
pub fn read_exact_at(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<()> {
    // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, and only
    // bytes are written through the view.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    fill_at(fd, uninit, offset)
}

/// Appends `len` bytes read from `offset` of `fd` to `v` (no zero-fill
/// first: `pread` writes straight into the spare capacity), or fails and
/// leaves `v` as it was.
pub fn append_at(fd: BorrowedFd<'_>, v: &mut Vec<u8>, len: usize, offset: u64) -> Result<()> {
    v.try_reserve(len).map_err(|_| Error::LimitExceeded {
        what: "file read",
        value: len as u64,
        limit: isize::MAX as u64,
    })?;
    fill_at(fd, &mut v.spare_capacity_mut()[..len], offset)?;
    // SAFETY: `fill_at` wrote the `len` bytes after the old length, inside
    // the capacity just reserved.
    unsafe { v.set_len(v.len() + len) };
    Ok(())
}

/// Writes all of `buf` from `offset` of `fd`, or fails.
fn fill_at(fd: BorrowedFd<'_>, buf: &mut [std::mem::MaybeUninit<u8>], offset: u64) -> Result<()> {
    let size = buf.len() as u64;
    let truncated = |done: usize| Error::Truncated {
        what: "file range",
        offset,
        size,
        len: done as u64,
    };
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .ok_or_else(|| truncated(done))?;
        // SAFETY: the destination is the unfilled rest of `buf`.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                at as libc::off_t,
            )
        };
        match n {
            0 => return Err(truncated(done)),
            n if n > 0 => done += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(Error::last_os("pread")),
        }
    }
    Ok(())
}

/// Whether `fd`'s file lies on a `noexec` mount, where the kernel refuses
/// `PROT_EXEC` for mappings of it (so code must be copied out first).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn on_noexec_mount(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fstatvfs writes into the zeroed struct it is given.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a valid borrowed descriptor and `st` is writable.
    let rc = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_NOEXEC != 0
}

/// Elsewhere the mount flag is not checked: mapping fails as it would.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn on_noexec_mount(_fd: BorrowedFd<'_>) -> bool {
    false
}

/// The file behind a range of this process's memory, opened again: what
/// [`file_backing`] finds.
#[derive(Debug)]
pub struct FileBacking {
    pub file: std::fs::File,
    /// Offset in `file` of the range's first byte.
    pub offset: u64,
}

/// One mapping of `/proc/self/smaps`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[derive(Debug, Default)]
struct SmapsEntry {
    start: usize,
    end: usize,
    perms: String,
    offset: u64,
    dev: (u64, u64),
    inode: u64,
    path: String,
    /// `Anonymous:` kB: pages of a private file mapping that were written
    /// (copied on write), which no longer show the file.
    anonymous_kb: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn parse_smaps(text: &str) -> Vec<SmapsEntry> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some(entry) = first.split_once('-').and_then(|(s, e)| {
            let start = usize::from_str_radix(s, 16).ok()?;
            let end = usize::from_str_radix(e, 16).ok()?;
            let perms = f.next()?.to_owned();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let (maj, min) = f.next()?.split_once(':')?;
            let dev = (
                u64::from_str_radix(maj, 16).ok()?,
                u64::from_str_radix(min, 16).ok()?,
            );
            let inode = f.next()?.parse().ok()?;
            let path = f.by_ref().collect::<Vec<_>>().join(" ");
            Some(SmapsEntry {
                start,
                end,
                perms,
                offset,
                dev,
                inode,
                path,
                anonymous_kb: 0,
            })
        }) {
            out.push(entry);
        } else if first == "Anonymous:" {
            if let (Some(last), Some(kb)) = (out.last_mut(), f.next().and_then(|v| v.parse().ok()))
            {
                last.anonymous_kb = kb;
            }
        }
    }
    out
}

/// (device major, device minor, inode) of a file, as `/proc/self/maps`
/// spells a mapping's file.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn file_id(file: &std::fs::File) -> Option<((u64, u64), u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = file.metadata().ok()?;
    let d = md.dev();
    let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
    let minor = (d & 0xff) | ((d >> 12) & !0xff);
    Some(((major, minor), md.ino()))
}

/// The file identity of the mapping holding `addr` (0 inode: anonymous).
#[cfg(target_os = "linux")]
pub fn mapped_file_id(addr: usize) -> Option<((u64, u64), u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    parse_smaps(&maps)
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end)
        .map(|m| (m.dev, m.inode))
}

/// If `[addr, addr + len)` lies in mappings of one file at consecutive file
/// offsets whose pages all show the file (shared mappings, or private ones
/// never written to), and that file can be opened again here, the file and
/// the offset of `addr` in it. `None` otherwise: the caller copies.
///
/// The file is reopened through `/proc/self/map_files` (needs
/// `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`), else through the mapping's
/// path, else through a descriptor of this process open on it; whichever
/// way, only a file with the mapping's device and inode is accepted.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn file_backing(addr: usize, len: usize) -> Option<FileBacking> {
    let end = addr.checked_add(len)?;
    if len == 0 {
        return None;
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let entries = parse_smaps(&smaps);
    let first = entries
        .iter()
        .position(|m| m.start <= addr && addr < m.end)?;
    let head = &entries[first];
    let shows_file = |m: &SmapsEntry| {
        m.inode != 0 && m.perms.starts_with('r') && (m.perms.ends_with('s') || m.anonymous_kb == 0)
    };
    let mut covered = head.end;
    let mut last = head;
    if !shows_file(head) {
        return None;
    }
    for m in &entries[first + 1..] {
        if covered >= end {
            break;
        }
        let contiguous = m.start == last.end
            && m.dev == head.dev
            && m.inode == head.inode
            && m.offset == last.offset + (last.end - last.start) as u64;
        if !contiguous || !shows_file(m) {
            return None;
        }
        covered = m.end;
        last = m;
    }
    if covered < end {
        return None;
    }
    let same = |file: &std::fs::File| file_id(file) == Some((head.dev, head.inode));
    let by_map_files = || {
        let p = format!("/proc/self/map_files/{:x}-{:x}", head.start, head.end);
        std::fs::File::open(p).ok().filter(same)
    };
    let by_path = || {
        let p = &head.path;
        if !p.starts_with('/') || p.ends_with(" (deleted)") {
            return None;
        }
        std::fs::File::open(p).ok().filter(same)
    };
    let by_open_fd = || {
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find_map(|n| {
                // Duplicate first, then check the duplicate: the number may
                // be closed and reused by another thread meanwhile.
                // SAFETY: F_DUPFD_CLOEXEC on any number is harmless: a
                // closed one fails with EBADF, an open one is duplicated.
                let dup = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 0) };
                if dup < 0 {
                    return None;
                }
                // SAFETY: `dup` was just created and is owned by nobody else.
                let file = std::fs::File::from(unsafe {
                    <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup)
                });
                // SAFETY: F_GETFL on a descriptor we own.
                let fl = unsafe { libc::fcntl(dup, libc::F_GETFL) };
                // It must be mappable: readable and not an O_PATH handle.
                let readable =
                    fl >= 0 && fl & libc::O_ACCMODE != libc::O_WRONLY && fl & libc::O_PATH == 0;
                (readable && same(&file)).then_some(file)
            })
    };
    let file = by_map_files().or_else(by_path).or_else(by_open_fd)?;
    Some(FileBacking {
        file,
        offset: head.offset + (addr - head.start) as u64,
    })
}

/// Without `/proc`, where a range of memory comes from is not known.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn file_backing(_addr: usize, _len: usize) -> Option<FileBacking> {
    None
}

/// Memory protection for `PF_*` flags.
pub fn prot_of(flags: u32) -> c_int {
    use goblin::elf::program_header::{PF_R, PF_W, PF_X};
    let mut prot = PROT_NONE;
    if flags & PF_R != 0 {
        prot |= PROT_READ;
    }
    if flags & PF_W != 0 {
        prot |= PROT_WRITE;
    }
    if flags & PF_X != 0 {
        prot |= PROT_EXEC;
    }
    prot
}

/// A page-aligned range of the image (in ELF virtual addresses) and the
/// protection it ends up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedRange {
    pub start: u64,
    pub end: u64,
    pub prot: c_int,
}

/// Final protections of every page of the span: each segment's pages get its
/// flags, gaps get `PROT_NONE`, a page shared by two segments (possible when
/// the page size exceeds the link's `max-page-size`) gets the union, and
/// neighbours with equal protection are merged so each change is one
/// `mprotect`. Refuses any page that would be writable and executable.
pub fn protection_plan(layout: &Layout, page: u64) -> Result<Vec<ProtectedRange>> {
    let mut out: Vec<ProtectedRange> = Vec::with_capacity(layout.loads.len() * 2);
    let push = |out: &mut Vec<ProtectedRange>, r: ProtectedRange| match out.last_mut() {
        Some(last) if last.prot == r.prot && last.end == r.start => last.end = r.end,
        _ if r.start < r.end => out.push(r),
        _ => {}
    };
    for seg in &layout.loads {
        let mut start = seg.vaddr & !(page - 1);
        // Checked at parse: the page-rounded end of every segment fits.
        let end = (seg.end() + page - 1) & !(page - 1);
        let prot = prot_of(seg.flags);
        if let Some(&last) = out.last() {
            if last.end > start {
                // The previous segment's last page is this one's first page.
                let shared = ProtectedRange {
                    start,
                    end: last.end,
                    prot: last.prot | prot,
                };
                if shared.prot & (PROT_WRITE | PROT_EXEC) == PROT_WRITE | PROT_EXEC {
                    return Err(Error::WritableAndExecutable { index: seg.index });
                }
                let last = out.last_mut().expect("checked above");
                last.end = start;
                if last.start == last.end {
                    out.pop();
                }
                push(&mut out, shared);
                start = shared.end;
            } else if last.end < start {
                push(
                    &mut out,
                    ProtectedRange {
                        start: last.end,
                        end: start,
                        prot: PROT_NONE,
                    },
                );
            }
        }
        push(&mut out, ProtectedRange { start, end, prot });
    }
    Ok(out)
}

/// `plan` with `[start, end)` (page-aligned) made read-only, neighbours
/// of equal protection merged again: RELRO sealed by the same pass as the
/// final protections, usually as one `mprotect` together with the read-only
/// segment before it.
pub fn with_read_only(plan: &[ProtectedRange], start: u64, end: u64) -> Vec<ProtectedRange> {
    let mut out: Vec<ProtectedRange> = Vec::with_capacity(plan.len() + 2);
    let mut push = |r: ProtectedRange| match out.last_mut() {
        _ if r.start >= r.end => {}
        Some(last) if last.prot == r.prot && last.end == r.start => last.end = r.end,
        _ => out.push(r),
    };
    for &r in plan {
        let (s, e) = (start.clamp(r.start, r.end), end.clamp(r.start, r.end));
        push(ProtectedRange { end: s, ..r });
        push(ProtectedRange {
            start: s,
            end: e,
            prot: PROT_READ,
        });
        push(ProtectedRange { start: e, ..r });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Segment;

    fn layout(segs: &[(u64, u64, u32)]) -> Layout {
        let loads: Vec<Segment> = segs
            .iter()
            .enumerate()
            .map(|(index, &(vaddr, memsz, flags))| Segment {
                index,
                vaddr,
                memsz,
                offset: vaddr,
                filesz: memsz,
                flags,
            })
            .collect();
        Layout {
            span_start: 0,
            span_end: 0,
            align: 4096,
            dynamic: (0, 0),
            relro: None,
            tls: None,
            eh_frame_hdr: None,
            phdrs: Vec::new(),
            section_table: Default::default(),
            gnu_osabi: false,
            loads,
        }
    }

    const R: u32 = 4;
    const RX: u32 = 5;
    const RW: u32 = 6;

    #[test]
    fn read_only_overlay_merges_with_its_neighbour() {
        let l = layout(&[(0, 0x1000, R), (0x1000, 0x3000, RW)]);
        let plan = protection_plan(&l, 0x1000).unwrap();
        let range = |start, end, prot| ProtectedRange { start, end, prot };
        assert_eq!(
            with_read_only(&plan, 0x1000, 0x2000),
            vec![
                range(0, 0x2000, PROT_READ),
                range(0x2000, 0x4000, PROT_READ | PROT_WRITE)
            ]
        );
        // Empty and out-of-plan ranges change nothing.
        assert_eq!(with_read_only(&plan, 0x2000, 0x2000), plan);
        assert_eq!(with_read_only(&plan, 0x8000, 0x9000), plan);
    }

    #[test]
    fn gaps_become_prot_none_and_equal_neighbours_merge() {
        let l = layout(&[(0, 0x800, R), (0x1000, 0x100, R), (0x10000, 0x10, RX)]);
        let plan = protection_plan(&l, 0x1000).unwrap();
        assert_eq!(
            plan,
            vec![
                ProtectedRange {
                    start: 0,
                    end: 0x2000,
                    prot: PROT_READ
                },
                ProtectedRange {
                    start: 0x2000,
                    end: 0x10000,
                    prot: PROT_NONE
                },
                ProtectedRange {
                    start: 0x10000,
                    end: 0x11000,
                    prot: PROT_READ | PROT_EXEC
                },
            ]
        );
    }

    #[test]
    fn shared_page_gets_union_and_wx_is_refused() {
        // With 16 KiB pages, a 4 KiB-linked R then RX layout shares a page.
        let l = layout(&[(0, 0x1800, R), (0x2000, 0x100, RX)]);
        let plan = protection_plan(&l, 0x4000).unwrap();
        assert_eq!(
            plan,
            vec![ProtectedRange {
                start: 0,
                end: 0x4000,
                prot: PROT_READ | PROT_EXEC
            }]
        );
        let l = layout(&[(0, 0x1800, RX), (0x2000, 0x100, RW)]);
        assert!(matches!(
            protection_plan(&l, 0x4000),
            Err(Error::WritableAndExecutable { index: 1 })
        ));
    }
}
