//! Architecture-dependent behaviour checked in-process: relocation
//! classification, instruction-cache maintenance on code the process wrote
//! itself, and how the real test libraries lay out and get protected at
//! each page size an aarch64 kernel may use (4, 16 and 64 KiB), whatever
//! the page size of the machine running the tests.

use super::*;

#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_relocations_mean_what_the_psabi_says() {
    use goblin::elf::reloc::*;
    let table = [
        (R_AARCH64_NONE, RelocKind::None),
        (256, RelocKind::None),
        (R_AARCH64_ABS64, RelocKind::Absolute),
        (R_AARCH64_GLOB_DAT, RelocKind::Slot { with_addend: true }),
        (R_AARCH64_JUMP_SLOT, RelocKind::Slot { with_addend: true }),
        (R_AARCH64_RELATIVE, RelocKind::Relative),
        (R_AARCH64_IRELATIVE, RelocKind::IRelative),
        (R_AARCH64_TLS_DTPMOD, RelocKind::TlsModule),
        (R_AARCH64_TLS_DTPREL, RelocKind::TlsOffset),
        (R_AARCH64_TLS_TPREL, RelocKind::TlsTpOffset),
        (R_AARCH64_TLSDESC, RelocKind::TlsDesc),
        // Executables only, or static relocations: refused.
        (R_AARCH64_COPY, RelocKind::Unsupported),
        (R_AARCH64_ABS32, RelocKind::Unsupported),
        (R_AARCH64_PREL64, RelocKind::Unsupported),
    ];
    for (r_type, kind) in table {
        assert_eq!(classify(r_type), kind, "{}", relocation_name(r_type));
    }
    // Errors name the type.
    assert!(relocation_name(R_AARCH64_TLSDESC).ends_with("AARCH64_TLSDESC"));
}

/// `return N` in this architecture's machine code.
fn return_constant(n: u8) -> Vec<u8> {
    if cfg!(target_arch = "aarch64") {
        // mov w0, #n; ret
        let mov = 0x5280_0000u32 | (u32::from(n) << 5);
        [mov, 0xd65f_03c0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    } else {
        // mov eax, n; ret
        vec![0xb8, n, 0, 0, 0, 0xc3]
    }
}

#[test]
fn code_written_then_flushed_runs_and_rewritten_code_runs_anew() {
    let page = crate::map::page_size();
    // SAFETY: a fresh private anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // Not at the page start, not cache-line aligned: the flush must round.
    let at = p as usize + 100;
    for n in [42u8, 43] {
        let code = return_constant(n);
        // SAFETY: the page is ours and read-write here (first round: just
        // mapped; second: made writable again below).
        unsafe {
            assert_eq!(
                libc::mprotect(p, page, libc::PROT_READ | libc::PROT_WRITE),
                0
            );
            std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len());
        }
        // As the loader does: flush while writable, then make executable.
        flush_icache(at, code.len());
        // SAFETY: the page holds exactly the code just written.
        let n_back = unsafe {
            assert_eq!(
                libc::mprotect(p, page, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
            let f: extern "C" fn() -> i32 = std::mem::transmute(at);
            f()
        };
        assert_eq!(n_back, i32::from(n));
    }
    flush_icache(at, 0);
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, page) };
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod page_sizes {
    use libc::{PROT_EXEC, PROT_NONE, PROT_WRITE};

    use crate::elf::Layout;
    use crate::error::Error;
    use crate::map::{prot_of, protection_plan};
    use crate::options::Limits;

    const PAGES: [u64; 3] = [4096, 16384, 65536];

    fn lib(name: &str) -> Vec<u8> {
        let path = memdl_test_dylibs::path(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every PT_LOAD's address and offset agree modulo `page`.
    fn congruent(bytes: &[u8], page: u64) -> bool {
        let elf = goblin::elf::Elf::parse(bytes).unwrap();
        elf.program_headers
            .iter()
            .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
            .all(|p| p.p_vaddr % page == p.p_offset % page)
    }

    /// Checks the layout and protection plan of `name` at `page`; returns
    /// whether any page had to serve two segments with different flags.
    fn check(name: &str, page: u64) -> Option<bool> {
        let bytes = lib(name);
        let layout = match Layout::parse(&bytes, page, &Limits::default()) {
            Ok(l) => l,
            Err(Error::BadSegment { .. }) if !congruent(&bytes, page) => return None,
            Err(e) => panic!("{name} at {page}: {e}"),
        };
        assert!(congruent(&bytes, page), "{name} at {page}: parsed");
        assert_eq!(layout.align % page, 0, "{name}: bias alignment");
        assert_eq!(layout.span_start % page, 0);
        assert_eq!(layout.span_end % page, 0);
        let plan = protection_plan(&layout, page).unwrap();
        // Contiguous page-aligned ranges covering exactly the span.
        assert_eq!(plan.first().unwrap().start, layout.span_start);
        assert_eq!(plan.last().unwrap().end, layout.span_end);
        let mut shared = false;
        for (i, r) in plan.iter().enumerate() {
            assert!(r.start < r.end && r.start % page == 0 && r.end % page == 0);
            if i > 0 {
                assert_eq!(plan[i - 1].end, r.start, "{name} at {page}: gap in plan");
                assert_ne!(plan[i - 1].prot, r.prot, "{name}: unmerged neighbours");
            }
            assert_ne!(r.prot & (PROT_WRITE | PROT_EXEC), PROT_WRITE | PROT_EXEC);
            let segs: Vec<_> = layout
                .loads
                .iter()
                .filter(|s| s.vaddr < r.end && s.end() > r.start)
                .collect();
            if segs.is_empty() {
                // A hole between segments (rounded to pages) is inaccessible.
                let inside = layout.loads.iter().any(|s| {
                    (s.vaddr & !(page - 1)) < r.end
                        && ((s.end() + page - 1) & !(page - 1)) > r.start
                });
                assert!(inside || r.prot == PROT_NONE, "{name}: {r:?}");
            }
            for s in &segs {
                let want = prot_of(s.flags);
                assert_eq!(r.prot & want, want, "{name} at {page}: {r:?} lacks {s:?}");
                shared |= r.prot != want;
            }
        }
        // Code ends up executable.
        for s in layout.loads.iter().filter(|s| s.executable()) {
            assert!(plan
                .iter()
                .any(|r| r.start <= s.vaddr && s.vaddr < r.end && r.prot & PROT_EXEC != 0));
        }
        Some(shared)
    }

    #[test]
    fn libraries_linked_for_a_page_size_lay_out_cleanly_at_it_and_below() {
        for (name, max_page) in [
            ("pages4k", 4096),
            ("pages16k", 16384),
            ("pages64k", 65536),
            // Linked with the 64 KiB default of build.rs.
            ("example", 65536),
            ("uselibc", 65536),
            ("tls", 65536),
            ("ifunc_hwcap", 65536),
        ] {
            for page in PAGES.into_iter().filter(|&p| p <= max_page) {
                // Segments never share a page when the link's page is at
                // least the runtime one.
                assert_eq!(check(name, page), Some(false), "{name} at {page}");
            }
        }
    }

    #[test]
    fn libraries_linked_for_smaller_pages_are_refused_at_larger_ones() {
        // ld places the data segment one max-page-size past its file
        // offset, which is no multiple of a larger page: such a library
        // cannot be mapped there (glibc refuses it too) and memdl must say
        // so with an error rather than place segments wrongly.
        for (name, max_page) in [("pages4k", 4096), ("pages16k", 16384)] {
            for page in PAGES.into_iter().filter(|&p| p > max_page) {
                assert_eq!(check(name, page), None, "{name} at {page}");
            }
        }
    }
}
