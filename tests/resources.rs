//! Resource faults and resource use: a small address-space limit, a process
//! where `memfd_create` fails, and thousands of load/drop cycles.
//!
//! Each test runs in a forked child (one thread, nothing else mapping or
//! opening files meanwhile), so limits and seccomp filters stay there and
//! counts are exact; the child reports through a pipe and its exit status.

use std::io::Write;
use std::sync::Mutex;

use memdl::{ElfImage, Error, Library, Options, SystemImage, SystemStrategy, SystemStrategyUsed};

mod common;
use common::{exited_cleanly, maps_count, open_fds, run_in_child, test_lib};

/// Forking while another test thread holds a lock memdl or libc needs would
/// deadlock the child: the tests of this file fork one at a time.
static FORK: Mutex<()> = Mutex::new(());

/// Runs `f` in a forked child; panics with the child's report if it failed.
fn in_child(f: impl FnOnce() -> Result<String, String>) -> String {
    let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let (text, status) = run_in_child(|out| {
        let (code, text) = match f() {
            Ok(report) => (0, report),
            Err(why) => (1, why),
        };
        let _ = out.write_all(text.as_bytes());
        code
    });
    assert!(
        exited_cleanly(status),
        "child failed (status {status:#x}): {text}"
    );
    text
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// libexample with a 256 MiB bss: its reservation is what a small address
/// space limit refuses.
fn example_with_big_bss() -> Vec<u8> {
    let mut bytes = test_lib("example");
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let phoff = elf.header.e_phoff as usize;
    let last_load = elf
        .program_headers
        .iter()
        .rposition(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .unwrap();
    let at = phoff + last_load * 56 + 40;
    let memsz = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    bytes[at..at + 8].copy_from_slice(&(memsz + (256 << 20)).to_le_bytes());
    bytes
}

/// Bytes of address space the process maps now.
fn vm_size() -> u64 {
    common::maps()
        .iter()
        .map(|m| (m.end - m.start) as u64)
        .sum()
}

#[test]
fn a_small_address_space_limit_is_a_map_error_with_nothing_left_behind() {
    let bytes = example_with_big_bss();
    in_child(|| {
        // Room for everything but the reservation.
        let limit = vm_size() + (64 << 20);
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with valid structs.
        unsafe {
            libc::getrlimit(libc::RLIMIT_AS, &mut old);
            let new = libc::rlimit {
                rlim_cur: limit,
                rlim_max: old.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &new) != 0 {
                return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
            }
        }
        let (maps, fds) = (maps_count(), open_fds());
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = match unsafe { ElfImage::load(&bytes) } {
            Ok(_) => return Err("loaded under a 64 MiB address space margin".into()),
            Err(e) => e,
        };
        check(matches!(err, Error::Map { .. }), || {
            format!("expected Error::Map, got {err:?}")
        })?;
        check((maps_count(), open_fds()) == (maps, fds), || {
            "a failed load left mappings or fds behind".into()
        })?;
        // The same bytes load once the limit is lifted: the limit, not the
        // file, was the problem.
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) };
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.map_err(|e| format!("after the limit: {e}"))?;
        // SAFETY: add(i32, i32) -> i32 in libexample.
        let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
            unsafe { img.get("add") }.map_err(|e| e.to_string())?;
        // SAFETY: a function of the image alive here, called with two ints.
        check(unsafe { add(2, 3) } == 5, || "add(2, 3)".into())?;
        Ok(format!("{err}"))
    });
}

/// Installs a seccomp filter that fails `memfd_create` with ENOSYS.
fn deny_memfd_create() -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    #[cfg(target_arch = "x86_64")]
    const NR_MEMFD_CREATE: u32 = 319;
    #[cfg(target_arch = "aarch64")]
    const NR_MEMFD_CREATE: u32 = 279;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // seccomp_data: nr at offset 0, arch at offset 4.
    let program = [
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 3, ARCH),
        op(LD_W_ABS, 0, 0, 0),
        op(JEQ_K, 0, 1, NR_MEMFD_CREATE),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut _,
    };
    // SAFETY: prctl with the documented arguments; `prog` outlives the call
    // (the kernel copies the program).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[test]
fn without_memfd_create_the_system_backend_falls_back_to_a_temp_file() {
    let bytes = test_lib("example");
    let report = in_child(|| {
        deny_memfd_create()?;
        // The filter works: memfd_create itself fails with ENOSYS.
        // SAFETY: a plain system call with a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), libc::MFD_CLOEXEC) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        check(fd < 0 && errno == Some(libc::ENOSYS), || {
            format!("memfd_create returned {fd}, errno {errno:?}")
        })?;
        let fds = open_fds();
        // Auto falls back to a temporary file.
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { SystemImage::load(&bytes) }.map_err(|e| format!("Auto: {e}"))?;
        let used = img.strategy();
        check(
            matches!(
                used,
                SystemStrategyUsed::UnnamedTempFile | SystemStrategyUsed::NamedTempFile
            ),
            || format!("Auto used {used:?}"),
        )?;
        // SAFETY: add(i32, i32) -> i32 in libexample.
        let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
            unsafe { img.get("add") }.map_err(|e| e.to_string())?;
        // SAFETY: a function of the image alive here, called with two ints.
        check(unsafe { add(2, 3) } == 5, || "add(2, 3)".into())?;
        drop(img);
        // Memfd explicitly: the error says what failed, nothing is left open.
        // SAFETY: a trusted test or machine library (its initialisers run).
        let err = match unsafe {
            Options::new()
                .system_strategy(SystemStrategy::Memfd)
                .load_system(&bytes)
        } {
            Ok(_) => return Err("Memfd strategy loaded without memfd_create".into()),
            Err(e) => e,
        };
        check(
            matches!(&err, Error::Io { op: "memfd_create", source }
                if source.raw_os_error() == Some(libc::ENOSYS)),
            || format!("Memfd strategy: {err:?}"),
        )?;
        check(open_fds() == fds, || "fds left open".into())?;
        Ok(format!("{used:?}"))
    });
    assert!(report.contains("TempFile"), "{report}");
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * common::page_size()
}

#[test]
fn load_drop_cycles_on_two_threads_keep_mappings_fds_and_rss_flat() {
    const ELF_CYCLES: usize = 1500;
    const SYSTEM_CYCLES: usize = 100;
    let example = test_lib("example");
    let report = in_child(|| {
        let round = || -> Result<(), String> {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..2)
                    .map(|t| {
                        let example = &example;
                        s.spawn(move || -> Result<(), String> {
                            for i in 0..ELF_CYCLES {
                                // SAFETY: a trusted test or machine library (its initialisers run).
                                let img = unsafe { ElfImage::load(example) }
                                    .map_err(|e| e.to_string())?;
                                // SAFETY: add(i32, i32) -> i32 in libexample.
                                let add: memdl::Symbol<'_, unsafe extern "C" fn(i32, i32) -> i32> =
                                    unsafe { img.get("add") }.map_err(|e| e.to_string())?;
                                let (a, b) = (i as i32, t);
                                // SAFETY: a function of the image alive here, called with two ints.
                                check(unsafe { add(a, b) } == a + b, || "add".into())?;
                            }
                            for _ in 0..SYSTEM_CYCLES {
                                // SAFETY: a trusted test or machine library (its initialisers run).
                                let img = unsafe { SystemImage::load(example) }
                                    .map_err(|e| e.to_string())?;
                                check(img.symbol_address(b"mul").is_ok(), || "mul".into())?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .try_for_each(|w| w.join().map_err(|_| "worker panicked".to_owned())?)
            })
        };
        // The first round warms up caches (thread stacks, allocator arenas,
        // the loader's own bookkeeping); later rounds must not grow.
        round()?;
        let (maps, fds, rss0) = (maps_count(), open_fds(), rss());
        for _ in 0..3 {
            round()?;
        }
        let (maps1, fds1, rss1) = (maps_count(), open_fds(), rss());
        check(maps1 == maps && fds1 == fds, || {
            format!("maps {maps} -> {maps1}, fds {fds} -> {fds1}")
        })?;
        check(rss1 <= rss0 + (4 << 20), || format!("RSS {rss0} -> {rss1}"))?;
        Ok(format!(
            "{} cycles: maps {maps}, fds {fds}, RSS {rss0} -> {rss1}",
            4 * 2 * (ELF_CYCLES + SYSTEM_CYCLES)
        ))
    });
    eprintln!("{report}");
}
