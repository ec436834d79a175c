//! What aarch64 (Android's architecture) leans on and x86_64 rarely does:
//! TLS descriptors (the default dialect for `-fPIC` code there), indirect
//! functions whose resolvers get hardware capabilities as arguments, and
//! libraries linked for 4, 16 and 64 KiB pages.
//!
//! Everything runs on x86_64 too where it means something (its own TLS
//! dialects, ifuncs without arguments); the aarch64-only checks are the
//! register-preservation probe of the descriptor function and the ifunc
//! argument values. `.ci/aarch64` runs this file under qemu-user at each
//! page size. Each check runs on both backends: the system loader is the
//! reference the custom loader must agree with.

#![cfg(target_os = "linux")]

use std::ffi::c_void;

use memdl::{ElfImage, Error, Library, Placement, SystemImage};

mod common;
use common::{assert_no_wx, mappings_in, page_size, test_lib, test_lib_path};

/// Relocation types of a library (dynamic and PLT tables).
fn relocation_types(bytes: &[u8]) -> Vec<u32> {
    let elf = goblin::elf::Elf::parse(bytes).expect("test library parses");
    elf.dynrelas
        .iter()
        .chain(elf.pltrelocs.iter())
        .chain(elf.dynrels.iter())
        .map(|r| r.r_type)
        .collect()
}

/// A function of a loaded library, by name.
///
/// # Safety
/// `T` must be the symbol's type.
unsafe fn f<'l, T, L: Library>(lib: &'l L, name: &str) -> memdl::Symbol<'l, T> {
    // SAFETY: forwarded.
    unsafe { lib.get(name) }.unwrap_or_else(|e| panic!("{} {name}: {e}", lib.backend()))
}

/// The address of a data symbol.
fn data<L: Library>(lib: &L, name: &str) -> usize {
    // SAFETY: a pointer type: get yields the symbol's address.
    let p: memdl::Symbol<'_, *const c_void> = unsafe { f(lib, name) };
    *p as usize
}

#[test]
fn page_size_is_the_one_the_lane_asked_for() {
    let page = page_size();
    assert!(
        [4096, 16384, 65536].contains(&page),
        "unexpected page size {page}"
    );
    // .ci/aarch64 runs the suite once per emulated page size and says
    // which: a runner that ignored it would test 4 KiB three times.
    if let Ok(want) = std::env::var("MEMDL_EXPECT_PAGE_SIZE") {
        assert_eq!(page.to_string(), want);
    }
}

// ---------------------------------------------------------------- TLS

type IntFn = unsafe extern "C" fn() -> i32;
type LongFn = unsafe extern "C" fn() -> i64;
type PtrFn = unsafe extern "C" fn() -> *mut i32;

/// The TLS libraries of this architecture and the dialect each uses.
fn tls_libraries() -> Vec<(&'static str, &'static str)> {
    if cfg!(target_arch = "aarch64") {
        vec![
            ("tls", "descriptors"),
            ("tls_regs", "descriptors"),
            ("tls_trad", "traditional"),
        ]
    } else {
        vec![("tls", "traditional"), ("tls_desc", "descriptors")]
    }
}

#[cfg(target_arch = "aarch64")]
mod r {
    pub use goblin::elf::reloc::{
        R_AARCH64_IRELATIVE as IRELATIVE, R_AARCH64_TLSDESC as TLSDESC,
        R_AARCH64_TLS_DTPMOD as DTPMOD, R_AARCH64_TLS_TPREL as TPREL,
    };
}
#[cfg(target_arch = "x86_64")]
mod r {
    pub use goblin::elf::reloc::{
        R_X86_64_DTPMOD64 as DTPMOD, R_X86_64_IRELATIVE as IRELATIVE, R_X86_64_TLSDESC as TLSDESC,
        R_X86_64_TPOFF64 as TPREL,
    };
}

#[test]
fn tls_libraries_use_the_dialect_they_test() {
    for (name, dialect) in tls_libraries() {
        let types = relocation_types(&test_lib(name));
        let (want, not) = match dialect {
            "descriptors" => (r::TLSDESC, r::DTPMOD),
            _ => (r::DTPMOD, r::TLSDESC),
        };
        assert!(types.contains(&want), "{name}: {types:?}");
        assert!(!types.contains(&not), "{name}: {types:?}");
    }
    assert!(relocation_types(&test_lib("tlsie")).contains(&r::TPREL));
}

/// One thread's view of the TLS library: fresh values, then updates.
/// Returns the address of its `tls_counter`.
fn tls_checks_on_this_thread<L: Library>(lib: &L) -> usize {
    // SAFETY: the signatures of test-dylibs/tls.c.
    unsafe {
        let get: memdl::Symbol<'_, IntFn> = f(lib, "tls_get");
        let bump: memdl::Symbol<'_, IntFn> = f(lib, "tls_bump");
        let addr: memdl::Symbol<'_, PtrFn> = f(lib, "tls_counter_addr");
        let zero_sum: memdl::Symbol<'_, LongFn> = f(lib, "tls_zero_sum");
        let local_bump: memdl::Symbol<'_, IntFn> = f(lib, "tls_local_bump");
        let aligned_ok: memdl::Symbol<'_, IntFn> = f(lib, "tls_aligned_ok");
        assert_eq!(get(), 7, "{}: .tdata initial value", lib.backend());
        assert_eq!(bump(), 8);
        assert_eq!(bump(), 9);
        assert_eq!(zero_sum(), 0, "{}: .tbss starts zeroed", lib.backend());
        assert_eq!(zero_sum(), 4);
        assert_eq!(local_bump(), 110, "{}: local-dynamic", lib.backend());
        assert_eq!(local_bump(), 120);
        assert_eq!(aligned_ok(), 1, "{}: 64-byte aligned TLS", lib.backend());
        let p = addr();
        assert_eq!(*p, 9);
        // dlsym of a TLS symbol gives the calling thread's instance, the
        // same the library's own code computes.
        assert_eq!(data(lib, "tls_counter"), p as usize, "{}", lib.backend());
        p as usize
    }
}

fn tls_checks<L: Library + Sync>(lib: &L) {
    let main = tls_checks_on_this_thread(lib);
    let others: Vec<usize> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..3)
            .map(|_| s.spawn(|| tls_checks_on_this_thread(lib)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for a in &others {
        assert_ne!(*a, main, "{}: threads share a TLS block", lib.backend());
    }
    // The main thread's values were untouched by the others.
    // SAFETY: int tls_get(void).
    assert_eq!(unsafe { f::<IntFn, L>(lib, "tls_get")() }, 9);
}

#[test]
fn tls_works_in_every_dialect_on_both_backends() {
    for (name, dialect) in tls_libraries() {
        let bytes = test_lib(name);
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap_or_else(|e| panic!("{name}: {e}"));
        tls_checks(&img);
        // Blocks of exited threads are freed; the main thread's remains.
        assert_eq!(img.live_tls_blocks(), 1, "{name} ({dialect})");
        // SAFETY: a trusted test or machine library (its initialisers run).
        let sys = unsafe { SystemImage::load(&bytes) }.unwrap_or_else(|e| panic!("{name}: {e}"));
        tls_checks(&sys);
    }
}

/// What `tlsdesc_preserves` (test-dylibs/tls_regs_aarch64.S) stores: x2..x18,
/// then q0..q31 as 64-bit halves.
#[cfg(target_arch = "aarch64")]
fn descriptor_call_preserves_registers<L: Library>(lib: &L) -> usize {
    type Probe = unsafe extern "C" fn(*mut u64) -> *const i64;
    let mut out = [0u64; 17 + 64];
    // SAFETY: the assembly writes 81 words into `out`.
    let p = unsafe { f::<Probe, L>(lib, "tlsdesc_preserves")(out.as_mut_ptr()) };
    for (i, &v) in out[..17].iter().enumerate() {
        assert_eq!(
            v,
            0x1102 + i as u64,
            "{}: x{} clobbered",
            lib.backend(),
            i + 2
        );
    }
    for q in 0..32 {
        let byte = 0x40 + q as u64;
        let want = byte * 0x0101_0101_0101_0101;
        let (lo, hi) = (out[17 + 2 * q], out[17 + 2 * q + 1]);
        assert_eq!((lo, hi), (want, want), "{}: q{q} clobbered", lib.backend());
    }
    // SAFETY: the address of this thread's tls_probe (a long).
    assert_eq!(unsafe { *p }, 0x5eed);
    assert_eq!(data(lib, "tls_probe"), p as usize);
    p as usize
}

#[cfg(target_arch = "aarch64")]
#[test]
fn tls_descriptor_call_preserves_every_register_but_x0_x1_x30() {
    let bytes = test_lib("tls_regs");
    // SAFETY: a trusted test library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: as above.
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    for lib in [&img as &dyn DynProbe, &sys] {
        // First call allocates this thread's block (the slow path: locks,
        // malloc), the second finds it; then a fresh thread.
        let a = lib.probe();
        assert_eq!(lib.probe(), a);
        let b = std::thread::scope(|s| s.spawn(|| lib.probe()).join().unwrap());
        assert_ne!(a, b);
    }
}

#[cfg(target_arch = "aarch64")]
trait DynProbe: Sync {
    fn probe(&self) -> usize;
}
#[cfg(target_arch = "aarch64")]
impl<L: Library + Sync> DynProbe for L {
    fn probe(&self) -> usize {
        descriptor_call_preserves_registers(self)
    }
}

// -------------------------------------------------------------- ifunc

#[test]
fn irelative_and_exported_ifuncs_agree_with_the_system_loader() {
    let bytes = test_lib("ifunc_hwcap");
    assert!(
        relocation_types(&bytes).contains(&r::IRELATIVE),
        "the hidden ifunc must be bound by an IRELATIVE relocation"
    );
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    let seen = |lib: &dyn Fn(&str) -> usize| {
        // SAFETY: addresses of uint64_t globals of test-dylibs/ifunc_hwcap.c.
        unsafe {
            (
                *(lib("seen_hwcap") as *const u64),
                *(lib("seen_arg_size") as *const u64),
                *(lib("seen_hwcap2") as *const u64),
            )
        }
    };
    let mut results = Vec::new();
    for lib in [&img as &dyn ProbeIfunc, &sys] {
        let calls = lib.calls();
        assert!(
            calls.iter().all(|&c| c == calls[0] && (c == 1 || c == 2)),
            "{calls:?}"
        );
        let (hwcap, size, hwcap2) = seen(&|n| lib.addr(n));
        if cfg!(target_arch = "aarch64") {
            // glibc's convention: resolver(AT_HWCAP | _IFUNC_ARG_HWCAP,
            // &{sizeof, AT_HWCAP, AT_HWCAP2}).
            // SAFETY: getauxval only reads the auxiliary vector.
            let (h, h2) = unsafe {
                (
                    libc::getauxval(libc::AT_HWCAP),
                    libc::getauxval(libc::AT_HWCAP2),
                )
            };
            assert_eq!(hwcap, h | 1 << 62);
            assert_eq!(hwcap2, h2);
            assert!(size >= 24, "{size}");
        }
        results.push((calls, hwcap, hwcap2));
    }
    assert_eq!(results[0], results[1], "memdl vs system loader");
}

trait ProbeIfunc {
    fn calls(&self) -> Vec<i32>;
    fn addr(&self, name: &str) -> usize;
}
impl<L: Library> ProbeIfunc for L {
    fn calls(&self) -> Vec<i32> {
        ["call_hidden", "call_via_ptr", "call_exported", "which"]
            .iter()
            // SAFETY: int f(void) for each.
            .map(|n| unsafe { f::<IntFn, L>(self, n)() })
            .collect()
    }
    fn addr(&self, name: &str) -> usize {
        data(self, name)
    }
}

// --------------------------------------------------------- page sizes

/// Whether every `PT_LOAD`'s address and file offset agree modulo `page`:
/// what memdl needs to place the segments at all.
fn congruent(bytes: &[u8], page: u64) -> bool {
    let elf = goblin::elf::Elf::parse(bytes).unwrap();
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .all(|p| p.p_vaddr % page == p.p_offset % page)
}

type BinFn = unsafe extern "C" fn(i32, i32) -> i32;

fn example_runs<L: Library>(lib: &L) {
    // SAFETY: the signatures of test-dylibs/example.c.
    unsafe {
        assert_eq!(f::<BinFn, L>(lib, "add")(2, 3), 5);
        let apply: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32, i32) -> i32> = f(lib, "apply");
        assert_eq!(apply(2, 6, 7), 42);
        let fib: memdl::Symbol<'_, unsafe extern "C" fn(i32) -> i64> = f(lib, "fib");
        assert_eq!(fib(50), 12_586_269_025);
        f::<unsafe extern "C" fn(i32), L>(lib, "set_counter")(1);
        assert_eq!(f::<IntFn, L>(lib, "bump")(), 2);
    }
}

#[test]
fn libraries_linked_for_each_page_size_load_where_the_page_allows() {
    let page = page_size();
    for (name, max_page) in [("pages4k", 4096), ("pages16k", 16384), ("pages64k", 65536)] {
        let bytes = test_lib(name);
        if page <= max_page {
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load(&bytes) }.unwrap_or_else(|e| panic!("{name}: {e}"));
            example_runs(&img);
            // The load bias keeps the segments' own alignment, not just
            // the page's.
            assert_eq!(img.base_address() % max_page as usize, 0, "{name}");
            // Code is mapped read+execute, data read+write, on page
            // boundaries of this page size.
            let p = page as usize;
            for s in img.segments() {
                let m = mappings_in(s.address, s.address + 1);
                assert_eq!(m.len(), 1, "{name}: {m:?}");
                let m = &m[0];
                assert_eq!(m.start % p, 0, "{name}: {m:?}");
                // (A writable segment may be all RELRO, sealed read-only.)
                if m.perms.contains('w') {
                    assert!(s.flags & 2 != 0, "{name}: {m:?}");
                }
                // qemu-user lists one line per host mapping with the guest
                // flags of its first page, and its host mappings of guest
                // code are not executable, so a read-only and a code
                // segment side by side show as one line: the execute bit
                // is only conclusive for a line within this segment's own
                // pages. (That the code runs shows it is executable: qemu
                // checks guest execute permission.)
                let own = (
                    s.address & !(p - 1),
                    (s.address + s.size as usize + p - 1) & !(p - 1),
                );
                if m.start >= own.0 && m.end <= own.1 {
                    assert_eq!(m.perms.contains('x'), s.flags & 1 != 0, "{name}: {m:?}");
                }
            }
            assert_no_wx();
            drop(img);
            // From a file: segments congruent with the file offsets map
            // zero-copy at this page size.
            let file = std::fs::File::open(test_lib_path(name)).unwrap();
            // SAFETY: a trusted test or machine library (its initialisers run).
            let img = unsafe { ElfImage::load_fd(&file, 0, bytes.len() as u64) }.unwrap();
            example_runs(&img);
            assert!(
                img.segments().any(|s| s.placement == Placement::Mapped),
                "{name}: nothing mapped from the file at {page}-byte pages"
            );
            // SAFETY: a trusted test or machine library (its initialisers run).
            let sys =
                unsafe { SystemImage::load(&bytes) }.unwrap_or_else(|e| panic!("{name}: {e}"));
            example_runs(&sys);
        } else if congruent(&bytes, page) {
            // Linked for smaller pages but laid out so it still fits.
            // SAFETY: a trusted test or machine library (its initialisers run).
            example_runs(&unsafe { ElfImage::load(&bytes) }.unwrap());
        } else {
            // Linked for smaller pages: refused with a clear error, never
            // mapped wrongly.
            // SAFETY: a trusted test or machine library (its initialisers run).
            match unsafe { ElfImage::load(&bytes) } {
                Err(Error::BadSegment { .. }) => {}
                other => panic!("{name} at {page}-byte pages: {other:?}"),
            }
        }
    }
}
