//! The floor: the least work any loader of a shared object must do, written
//! by hand with no validation, no relocation, no symbol lookup and no
//! initialisers. Benchmarks report every loader next to it.
//!
//! * [`load_copy`] (the floor of loading from bytes): reserve the span
//!   read-write, copy each `PT_LOAD`'s file bytes, `mprotect` each segment
//!   to its final protection, unmap.
//! * [`load_mapped`] (the floor of loading from a file): reserve the span
//!   `PROT_NONE`, map each `PT_LOAD` from the file with its final
//!   protection (bss past the file pages anonymous), unmap.
//! * [`load_mapped_touched`]: the same, plus the page work no loader of a
//!   library with relocations and initialisers avoids: read the first
//!   segment (where the dynamic tables are), write every page of each
//!   writable segment (relocations: copy-on-write), seal its first page
//!   read-only (RELRO), and read the code segment (initialisers run).
//!
//! The input is trusted (these are the machine's own libraries): it only
//! reads the program headers.
//!
//! Shared by `benches/compare.rs`, `benches/counts.rs` and the CLI's
//! `memdl bench` (through `#[path]`), so it uses nothing but `libc`.
#![allow(dead_code)]

use std::os::fd::AsRawFd;

/// One `PT_LOAD`: (vaddr, memsz, offset, filesz, prot).
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub vaddr: usize,
    pub memsz: usize,
    pub offset: usize,
    pub filesz: usize,
    pub prot: i32,
}

/// The `PT_LOAD`s of an ELF64 file, page-rounded span start and end.
#[derive(Clone, Debug)]
pub struct Plan {
    pub loads: Vec<Load>,
    pub start: usize,
    pub end: usize,
    pub page: usize,
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
}

impl Plan {
    /// Reads the program headers (trusted input; panics on garbage).
    pub fn new(bytes: &[u8]) -> Plan {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let (phoff, phnum) = (u64_at(bytes, 32), u16_at(bytes, 56));
        let mut loads = Vec::new();
        for i in 0..phnum {
            let ph = &bytes[phoff + i * 56..phoff + (i + 1) * 56];
            if u32_at(ph, 0) != 1 {
                continue;
            }
            let flags = u32_at(ph, 4);
            let mut prot = 0;
            if flags & 4 != 0 {
                prot |= libc::PROT_READ;
            }
            if flags & 2 != 0 {
                prot |= libc::PROT_WRITE;
            }
            if flags & 1 != 0 {
                prot |= libc::PROT_EXEC;
            }
            loads.push(Load {
                vaddr: u64_at(ph, 16),
                memsz: u64_at(ph, 40),
                offset: u64_at(ph, 8),
                filesz: u64_at(ph, 32),
                prot,
            });
        }
        let start = loads[0].vaddr & !(page - 1);
        let last = loads[loads.len() - 1];
        let end = (last.vaddr + last.memsz + page - 1) & !(page - 1);
        Plan {
            loads,
            start,
            end,
            page,
        }
    }

    fn down(&self, a: usize) -> usize {
        a & !(self.page - 1)
    }
    fn up(&self, a: usize) -> usize {
        (a + self.page - 1) & !(self.page - 1)
    }
}

/// Reserve read-write, copy, final `mprotect` per segment, unmap.
pub fn load_copy(plan: &Plan, bytes: &[u8]) {
    let len = plan.end - plan.start;
    // SAFETY: a fresh private anonymous mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let bias = base as usize - plan.start;
    for l in &plan.loads {
        // SAFETY: the segment lies inside the span just mapped read-write,
        // and its file bytes inside `bytes` (trusted headers).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes[l.offset..].as_ptr(),
                (bias + l.vaddr) as *mut u8,
                l.filesz,
            )
        };
    }
    for l in &plan.loads {
        if l.prot != libc::PROT_READ | libc::PROT_WRITE {
            let s = plan.down(l.vaddr);
            // SAFETY: page-aligned range inside the mapping.
            unsafe { libc::mprotect((bias + s) as *mut _, plan.up(l.vaddr + l.memsz) - s, l.prot) };
        }
    }
    // SAFETY: exactly the mapping made above.
    unsafe { libc::munmap(base, len) };
}

/// Reserve `PROT_NONE`, map each segment from the file with its final
/// protection (the partial bss page zeroed, the rest anonymous), unmap.
pub fn load_mapped(plan: &Plan, file: &std::fs::File) {
    map_and_unmap(plan, file, false)
}

/// [`load_mapped`] plus the page faults and the `mprotect` every loader
/// of a relocated library with initialisers takes.
pub fn load_mapped_touched(plan: &Plan, file: &std::fs::File) {
    map_and_unmap(plan, file, true)
}

fn map_and_unmap(plan: &Plan, file: &std::fs::File, touch: bool) {
    let len = plan.end - plan.start;
    // SAFETY: a fresh private anonymous mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let bias = base as usize - plan.start;
    for l in &plan.loads {
        let s = plan.down(l.vaddr);
        let file_end = plan.up(l.vaddr + l.filesz);
        let mem_end = plan.up(l.vaddr + l.memsz);
        // SAFETY: MAP_FIXED inside the reservation made above.
        let p = unsafe {
            libc::mmap(
                (bias + s) as *mut _,
                file_end - s,
                l.prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                (l.offset - (l.vaddr - s)) as libc::off_t,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        if l.memsz > l.filesz {
            let zero_to = file_end.min(l.vaddr + l.memsz);
            // SAFETY: the bss tail of a writable segment's last file page.
            unsafe {
                std::ptr::write_bytes(
                    (bias + l.vaddr + l.filesz) as *mut u8,
                    0,
                    zero_to - l.vaddr - l.filesz,
                )
            };
            if mem_end > file_end {
                // SAFETY: as above, anonymous zero pages for the rest of the bss.
                unsafe {
                    libc::mmap(
                        (bias + file_end) as *mut _,
                        mem_end - file_end,
                        l.prot,
                        libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
            }
        }
    }
    if touch {
        for (i, l) in plan.loads.iter().enumerate() {
            let at = bias + l.vaddr;
            if l.prot & libc::PROT_WRITE != 0 {
                let mut page = plan.down(at);
                while page < at + l.filesz {
                    let p = page.max(at) as *mut u8;
                    // SAFETY: a byte of a writable segment's file pages,
                    // written with the value it has.
                    unsafe { p.write_volatile(p.read_volatile()) };
                    page += plan.page;
                }
                let first = plan.down(at);
                // SAFETY: the segment's first page, inside the mapping.
                unsafe { libc::mprotect(first as *mut _, plan.page, libc::PROT_READ) };
            } else if i == 0 || l.prot & libc::PROT_EXEC != 0 {
                // SAFETY: a byte of a readable segment.
                unsafe { (at as *const u8).read_volatile() };
            }
        }
    }
    // SAFETY: exactly the reservation made above.
    unsafe { libc::munmap(base, len) };
}

/// Minor page faults of this process so far.
pub fn minor_faults() -> u64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    r.ru_minflt as u64
}
