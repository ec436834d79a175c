//! The first load in a fresh process (issue #13): what a runtime pays when
//! it loads its plugin or kernel once, at start-up.
//!
//! Every sample is a fresh process: this binary runs itself again as a
//! child (`--cold-child METHOD PATH`), which prepares what the call needs
//! (the bytes read into memory for `load(bytes)`, the file opened for
//! `load_fd`, the exports map elf_loader's resolver needs), then times the
//! one call with the monotonic clock and counts the minor page faults it
//! took (`getrusage`), and exits without unloading. The parent takes the
//! median over `COLD_SAMPLES` children (default 11) per library and loader,
//! the loaders interleaved sample by sample so that drift in the machine's
//! load hits them alike. The libraries' files are in the page cache (one
//! unmeasured child per library first): "cold" is the process, not the
//! disk.
//!
//! In every child `libm.so.6` is loaded before timing, as it is in most C
//! and C++ host processes (a Rust binary does not link it): sqlite3 needs
//! it, and loading it is not the cost of loading sqlite3.
//!
//! Beside each library's cold figures the same run measures it warm, for
//! `load_fd` and `dlopen` side by side: a fresh process loads and drops it
//! (`dlclose`) over and over and reports the median of the iterations
//! after the first (`WARM_SAMPLES` such processes, default 3, the two
//! loaders alternating; the median of their medians). A library that
//! `dlclose` does not unload (`DF_1_NODELETE`, as the LLVMs) has no warm
//! figure: a second `dlopen` of it only counts a reference.
//!
//! The run starts with a line of what this machine's kernel charges for
//! the operations a load is made of (page faults, `mprotect`, `pread`):
//! against a few microseconds of work, they decide much of the ratios.
//!
//! `cargo bench --bench cold`; `COLD_SAMPLES=15`, and `COLD_LIBS=a.so:b.so`
//! for other libraries (paths), `COLD_METHODS=load_fd,dlopen` for fewer
//! loaders. `load_fd_nodebug` (not in the default set) is `load_fd` with
//! the debugger registration off: what registration costs a first load.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use memdl::{ElfImage, SystemImage};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/own_exports.rs"]
mod own_exports;
use common::{machine_lib_path, rust_libllvm, test_lib_path};

/// The loaders compared, in table order.
const METHODS: [&str; 5] = ["load", "load_fd", "system", "dlopen", "elf_loader"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--cold-child") {
        child(&args[2], Path::new(&args[3]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--warm-child") {
        warm_child(&args[2], Path::new(&args[3]));
        return;
    }
    // `cargo bench` passes `--bench` (and a filter, if any): a filter
    // selects libraries whose name contains it.
    let filter = args[1..].iter().find(|a| !a.starts_with('-')).cloned();
    parent(filter.as_deref());
}

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a writable struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt
}

/// One sample: prints `nanoseconds minor-faults` of the one call.
fn child(method: &str, path: &Path) {
    // SAFETY: the system's libm; loading it runs its trusted initialisers.
    let libm = unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!libm.is_null(), "libm.so.6 not found");
    let bytes = match method {
        "load" | "system" | "elf_loader" => std::fs::read(path).unwrap(),
        _ => Vec::new(),
    };
    let own = match method {
        "elf_loader" => own_exports::exports(&bytes),
        _ => HashMap::new(),
    };
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    // Diagnosis: `COLD_WARMUP=PATH` loads another library the same way
    // first (untimed), so the sample shows the load without the process's
    // one-time costs (first use of the loader's code and state).
    if let Some(other) = std::env::var_os("COLD_WARMUP") {
        warm_up(method, Path::new(&other));
    }
    let (faults0, t0) = (minor_faults(), Instant::now());
    let ok = match method {
        // SAFETY (all arms): trusted libraries of the machine or of the
        // crate's tests (their initialisers run).
        "load" => unsafe { ElfImage::load(&bytes) }
            .map(std::mem::forget)
            .is_ok(),
        // `load_fd_nodebug`, for diagnosis: without the debugger registration.
        "load_fd" | "load_fd_nodebug" => {
            // The open is timed: dlopen's time includes its own.
            let file = File::open(path).unwrap();
            let len = file.metadata().unwrap().len();
            let options = memdl::Options::default().debugger_registration(method == "load_fd");
            // SAFETY: as above; the file does not change while loaded.
            let img = unsafe { ElfImage::load_fd_with(&file, 0, len, &options) };
            img.map(std::mem::forget).is_ok()
        }
        // SAFETY: as above.
        "system" => unsafe { SystemImage::load(&bytes) }
            .map(std::mem::forget)
            .is_ok(),
        // SAFETY: as above.
        "dlopen" => {
            !unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) }.is_null()
        }
        "elf_loader" => elf_loader_load(&bytes, &own),
        _ => panic!("unknown method {method}"),
    };
    let ns = t0.elapsed().as_nanos();
    let faults = minor_faults() - faults0;
    if !ok {
        std::process::exit(2);
    }
    println!("{ns} {faults}");
    // Nothing is unloaded: a process that loads its plugin keeps it.
    // SAFETY: exits without running destructors or the loaded libraries'
    // finalisers, which are not measured.
    unsafe { libc::_exit(0) };
}

/// Warm: prints `nanoseconds minor-faults` per load + drop of `path` by
/// `method` (`load_fd` or `dlopen`), medians over the iterations after the
/// first; exits with 3 if `dlclose` leaves the library loaded.
fn warm_child(method: &str, path: &Path) {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    let once = || match method {
        // SAFETY: trusted libraries of the machine or of the crate's tests.
        "load_fd" => unsafe { ElfImage::load_fd(&file, 0, len) }
            .map(drop)
            .is_ok(),
        "dlopen" => {
            // SAFETY: as above.
            let h = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            // SAFETY: a handle just opened, closed once.
            !h.is_null() && unsafe { libc::dlclose(h) } == 0
        }
        _ => panic!("unknown warm method {method}"),
    };
    let t0 = Instant::now();
    if !once() {
        std::process::exit(2);
    }
    // SAFETY: RTLD_NOLOAD only asks whether the library is loaded (and
    // takes a reference if so, which this process keeps until it exits).
    let stays =
        !unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) }.is_null();
    if method == "dlopen" && stays {
        std::process::exit(3);
    }
    // About 150 ms of iterations, 5 to 200 of them.
    let first = t0.elapsed().as_nanos().max(1) as u64;
    let n = (150_000_000 / first).clamp(5, 200);
    let (mut times, mut faults) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (f0, t) = (minor_faults(), Instant::now());
        once();
        times.push(t.elapsed().as_nanos() as u64);
        faults.push(minor_faults() - f0);
    }
    println!("{} {}", median(times).unwrap(), median(faults).unwrap());
}

/// Loads `path` by `method`, untimed, and keeps it.
fn warm_up(method: &str, path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let file = File::open(path).unwrap();
    let cpath = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a trusted library chosen by whoever runs the bench.
    unsafe {
        match method {
            "load" => std::mem::forget(ElfImage::load(&bytes)),
            "load_fd" | "load_fd_nodebug" => {
                std::mem::forget(ElfImage::load_fd(&file, 0, bytes.len() as u64))
            }
            "system" => std::mem::forget(SystemImage::load(&bytes)),
            "dlopen" => {
                libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            }
            _ => {}
        }
    }
}

fn elf_loader_load(bytes: &[u8], own: &HashMap<String, usize>) -> bool {
    let mut loader = elf_loader::Loader::<elf_loader::mmap::MmapImpl>::new();
    let Ok(raw) = loader.load_dylib(
        elf_loader::object::ElfBinary::new("lib", bytes),
        Some(false),
    ) else {
        return false;
    };
    let base = raw.base();
    let find = |name: &str| {
        own.get(name).map(|&v| (base + v) as *const ()).or_else(|| {
            let c = CString::new(name).ok()?;
            // SAFETY: a lookup of a NUL-terminated name in the global scope.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
            (!p.is_null()).then_some(p as *const ())
        })
    };
    match raw.easy_relocate([].iter(), &find) {
        Ok(l) => {
            std::mem::forget(l);
            true
        }
        Err(_) => false,
    }
}

/// The libraries: the built-in example, the machine's from ~100 KB up, and
/// the biggest libLLVM of the installed Rust toolchains.
fn libraries() -> Vec<(String, PathBuf)> {
    if let Ok(list) = std::env::var("COLD_LIBS") {
        return list
            .split(':')
            .map(|p| {
                let p = PathBuf::from(p);
                (p.file_name().unwrap().to_string_lossy().into_owned(), p)
            })
            .collect();
    }
    let mut libs = vec![("example".to_owned(), test_lib_path("example"))];
    for name in [
        "libz.so.1",
        "libgmp.so.10",
        "libpcre2-8.so.0",
        "libzstd.so.1",
        "libsqlite3.so.0",
        "libxml2.so.2",
        "libstdc++.so.6",
        "libcrypto.so.3",
        "libx265.so.199",
        "libLLVM-15.so.1",
    ] {
        let path = machine_lib_path(name);
        if path.exists() {
            libs.push((name.to_owned(), path));
        }
    }
    if let Some(llvm) = rust_libllvm() {
        libs.push(("libLLVM (Rust toolchain)".to_owned(), llvm));
    }
    libs
}

/// One fresh process: `(nanoseconds, minor faults)`, `None` if it failed.
fn sample(method: &str, path: &Path) -> Option<(u64, i64)> {
    run_child("--cold-child", method, path)
}

/// One fresh process of `kind` (`--cold-child` or `--warm-child`).
fn run_child(kind: &str, method: &str, path: &Path) -> Option<(u64, i64)> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([kind, method])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> Option<T> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn fmt_time(ns: Option<u64>) -> String {
    match ns {
        None => "-".to_owned(),
        Some(ns) if ns >= 10_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        Some(ns) if ns >= 1_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        Some(ns) => format!("{} µs", ns / 1000),
    }
}

fn fmt_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b => format!("{} KB", b.div_ceil(1024)),
    }
}

fn parent(filter: Option<&str>) {
    let samples: usize = std::env::var("COLD_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let methods: Vec<String> = match std::env::var("COLD_METHODS") {
        Ok(m) => m.split(',').map(str::to_owned).collect(),
        Err(_) => METHODS.iter().map(|m| (*m).to_owned()).collect(),
    };
    let libs: Vec<_> = libraries()
        .into_iter()
        .filter(|(name, _)| filter.is_none_or(|f| name.contains(f)))
        .collect();
    println!("{}", machine_costs());
    println!(
        "cold: first load in a fresh process, median of {samples} processes \
         (time of the one call; minor faults of it in brackets)"
    );
    let mut header = "| library | size |".to_owned();
    for m in &methods {
        header.push_str(&format!(" {m} |"));
    }
    header.push_str(" dlopen / load_fd | warm load_fd | warm dlopen | warm dlopen / load_fd |");
    println!("{header}");
    println!(
        "|---|---:|{}---:|---:|---:|---:|",
        "---:|".repeat(methods.len())
    );
    let warm_samples: usize = std::env::var("WARM_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (mut logs, mut warm_logs) = (Vec::new(), Vec::new());
    for (name, path) in &libs {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // The file into the page cache, the binary's pages too.
        for m in &methods {
            sample(m, path);
        }
        let mut got: Vec<Vec<(u64, i64)>> = vec![Vec::new(); methods.len()];
        for _ in 0..samples {
            for (i, m) in methods.iter().enumerate() {
                if let Some(s) = sample(m, path) {
                    got[i].push(s);
                }
            }
        }
        let medians: Vec<Option<(u64, i64)>> = got
            .into_iter()
            .map(|v| {
                let t = median(v.iter().map(|s| s.0).collect())?;
                let f = median(v.iter().map(|s| s.1).collect())?;
                Some((t, f))
            })
            .collect();
        let at = |m: &str| methods.iter().position(|x| x == m).and_then(|i| medians[i]);
        let ratio = match (at("dlopen"), at("load_fd")) {
            (Some(d), Some(f)) => Some(d.0 as f64 / f.0 as f64),
            _ => None,
        };
        let mut row = format!("| {name} | {} |", fmt_size(size));
        for m in &medians {
            match m {
                Some((t, f)) => row.push_str(&format!(" {} ({f}) |", fmt_time(Some(*t)))),
                None => row.push_str(" - |"),
            }
        }
        match ratio {
            Some(r) => {
                logs.push(r.ln());
                row.push_str(&format!(" {r:.2}x |"));
            }
            None => row.push_str(" - |"),
        }
        let warm = warm_pair(path, warm_samples);
        for w in [warm.map(|w| w.0), warm.map(|w| w.1)] {
            match w {
                Some((t, f)) => row.push_str(&format!(" {} ({f}) |", fmt_time(Some(t)))),
                None => row.push_str(" - |"),
            }
        }
        match warm {
            Some(((m, _), (d, _))) => {
                let r = d as f64 / m as f64;
                warm_logs.push(r.ln());
                row.push_str(&format!(" {r:.2}x |"));
            }
            None => row.push_str(" - |"),
        }
        println!("{row}");
    }
    if !logs.is_empty() {
        let gm = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        let min = logs.iter().cloned().fold(f64::INFINITY, f64::min).exp();
        println!(
            "\ngeometric mean of dlopen / load_fd over {} libraries: {gm:.2}x (lowest {min:.2}x)",
            logs.len()
        );
    }
    if !warm_logs.is_empty() {
        let gm = (warm_logs.iter().sum::<f64>() / warm_logs.len() as f64).exp();
        println!(
            "warm: geometric mean of dlopen / load_fd over {} libraries: {gm:.2}x \
             (\"-\": dlclose leaves the library loaded)",
            warm_logs.len()
        );
    }
}

/// What this machine's kernel charges for the work a load is made of,
/// medians of 9 rounds: a read fault on a file in the page cache (which
/// maps up to 16 pages around it: "fault-around"), a write fault on fresh
/// anonymous memory (a zeroed page), an `mprotect` splitting a mapping in
/// three, and a 4 KiB `pread` from the page cache. A small library's load
/// takes 5-20 of each (`dlopen` too): the ratios above depend on them as
/// much as on either loader (on a VM with nested paging a fault costs
/// several microseconds; on bare metal well under one).
fn machine_costs() -> String {
    let page = 4096usize;
    // A cached file of at least 64 windows of 64 KiB: this binary.
    let exe = std::env::current_exe().unwrap();
    let file = File::open(&exe).unwrap();
    let windows = (file.metadata().unwrap().len() as usize / 65536).min(64);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut file_fault = Vec::new();
    let mut anon_fault = Vec::new();
    let mut split = Vec::new();
    let mut pread = Vec::new();
    for _ in 0..9 {
        // SAFETY: fresh private mappings this function owns, touched inside
        // their length and unmapped before the block ends; `buf` is written
        // within its length.
        unsafe {
            let len = windows * 65536;
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let t = Instant::now();
            for w in 0..windows {
                std::ptr::read_volatile(p.cast::<u8>().add(w * 65536));
            }
            file_fault.push(t.elapsed().as_nanos() as u64 / windows as u64);
            libc::munmap(p, len);

            let n = 64;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            let a = libc::mmap(
                std::ptr::null_mut(),
                n * page,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            );
            assert_ne!(a, libc::MAP_FAILED);
            let t = Instant::now();
            for i in 0..n {
                std::ptr::write_volatile(a.cast::<u8>().add(i * page), 1);
            }
            anon_fault.push(t.elapsed().as_nanos() as u64 / n as u64);
            let t = Instant::now();
            libc::mprotect(a.cast::<u8>().add(page).cast(), page, libc::PROT_READ);
            split.push(t.elapsed().as_nanos() as u64);
            libc::munmap(a, n * page);

            let mut buf = [0u8; 4096];
            let t = Instant::now();
            libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 65536);
            pread.push(t.elapsed().as_nanos() as u64);
        }
    }
    let us = |v: Vec<u64>| format!("{:.1} µs", median(v).unwrap_or(0) as f64 / 1000.0);
    format!(
        "machine: read fault on a cached file {} (fault-around), write fault on \
         fresh anonymous memory {}, mprotect splitting a mapping {}, 4 KiB pread {}\n",
        us(file_fault),
        us(anon_fault),
        us(split),
        us(pread)
    )
}

/// Warm `(load_fd, dlopen)` per load + drop, `(nanoseconds, faults)`
/// each: the medians of `samples` processes per loader, alternating.
/// `None` if `dlclose` does not unload the library (or a sample failed).
fn warm_pair(path: &Path, samples: usize) -> Option<((u64, i64), (u64, i64))> {
    let (mut memdl, mut system) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        system.push(run_child("--warm-child", "dlopen", path)?);
        memdl.push(run_child("--warm-child", "load_fd", path)?);
    }
    let med = |v: &Vec<(u64, i64)>| {
        Some((
            median(v.iter().map(|s| s.0).collect())?,
            median(v.iter().map(|s| s.1).collect())?,
        ))
    };
    Some((med(&memdl)?, med(&system)?))
}
