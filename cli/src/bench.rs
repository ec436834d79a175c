//! `memdl bench [FILE]`: how fast memdl loads a library next to the system
//! loader and the floor (the copy/map and `mprotect`s any loader must do,
//! nothing else: `benches/support/floor.rs`), with page faults per load.
//! Without FILE, the built-in example library.
//!
//! Each row is load + first lookup + drop, repeated in batches; the median
//! batch gives the time per load, as wall time and as this thread's CPU
//! time (which stays meaningful on a busy machine: it leaves out waiting
//! for a CPU).

use std::ffi::{c_void, CString};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memdl::{ElfImage, Library, SystemImage};

#[path = "../../benches/support/floor.rs"]
mod floor;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The library (default: the built-in example)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Symbol looked up after each load (default: `add` for the built-in
    /// example, else the first exported function)
    #[arg(long, value_name = "NAME")]
    pub symbol: Option<String>,
    /// Timed batches per row; the median is shown
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
}

/// The library as a file the system loader and `load_fd` can open: the
/// given path, or a memfd holding the built-in example.
struct Subject {
    name: String,
    bytes: Vec<u8>,
    file: File,
    path: CString,
}

fn subject(args: &BenchArgs) -> Result<Subject, String> {
    match &args.file {
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let file = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
            let path_c = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{}: path contains NUL", path.display()))?;
            Ok(Subject {
                name: path.display().to_string(),
                bytes,
                file,
                path: path_c,
            })
        }
        None => {
            let bytes = crate::compare::BUILTIN_EXAMPLE
                .ok_or("no built-in example in this build: give a FILE")?
                .to_vec();
            // SAFETY: memfd_create with a NUL-terminated name and no flags
            // that need anything else.
            let fd = unsafe { libc::memfd_create(c"memdl-bench-example".as_ptr(), 0) };
            if fd < 0 {
                return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: a fresh descriptor this function owns from here on.
            let mut file = unsafe { File::from_raw_fd(fd) };
            file.write_all(&bytes)
                .map_err(|e| format!("writing the example to a memfd: {e}"))?;
            let path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .expect("no NUL in a number");
            Ok(Subject {
                name: "built-in example (libexample.so)".to_owned(),
                bytes,
                file,
                path,
            })
        }
    }
}

/// One row: median wall time and CPU time per load, minor faults per load.
struct Row {
    name: &'static str,
    per_load: Duration,
    cpu: Duration,
    faults: f64,
}

/// CPU time of the calling thread (user + system): unlike wall time, it
/// leaves out waiting for a CPU other processes hold.
fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime fills the zeroed struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Times `f` in `runs` batches big enough to take ~5 ms each.
fn measure(name: &'static str, runs: u32, f: &mut dyn FnMut()) -> Row {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_micros(1));
    let batch = (Duration::from_millis(5).as_nanos() / once.as_nanos()).clamp(1, 10_000) as u32;
    let faults_before = floor::minor_faults();
    let (mut times, mut cpu): (Vec<Duration>, Vec<Duration>) = (0..runs)
        .map(|_| {
            let (start, cpu_start) = (Instant::now(), thread_cpu_time());
            for _ in 0..batch {
                f();
            }
            (
                start.elapsed() / batch,
                thread_cpu_time().saturating_sub(cpu_start) / batch,
            )
        })
        .unzip();
    let faults = (floor::minor_faults() - faults_before) as f64 / f64::from(runs * batch);
    times.sort();
    cpu.sort();
    Row {
        name,
        per_load: times[times.len() / 2],
        cpu: cpu[cpu.len() / 2],
        faults,
    }
}

fn dlopen(path: &CString, flags: i32) -> Result<*mut c_void, String> {
    // SAFETY: loading a library runs its initialisers: the user asked for
    // this library to be loaded (as `memdl compare` does).
    let h = unsafe { libc::dlopen(path.as_ptr(), flags | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns null or a valid C string.
        let msg = unsafe { libc::dlerror() };
        let msg = if msg.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: non-null, NUL-terminated (see above).
            unsafe { std::ffi::CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("dlopen: {msg}"));
    }
    Ok(h)
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let s = subject(&args)?;
    // SAFETY: the user asked to run this library (loading runs its initialisers).
    let first =
        unsafe { ElfImage::load(&s.bytes) }.map_err(|e| format!("memdl cannot load it: {e}"))?;
    let symbol: Vec<u8> = match (&args.symbol, &args.file) {
        (Some(name), _) => name.as_bytes().to_vec(),
        (None, None) => b"add".to_vec(),
        (None, Some(_)) => first
            .exports()
            .find(|&(_, addr)| addr != 0)
            .map(|(name, _)| name.to_vec())
            .ok_or("the library exports nothing to look up")?,
    };
    first
        .symbol_address(&symbol)
        .map_err(|e| format!("memdl: {e}"))?;
    drop(first);
    let csym = CString::new(symbol.clone()).map_err(|_| "symbol name contains NUL")?;
    let len = s.bytes.len() as u64;
    let plan = floor::Plan::new(&s.bytes);
    let runs = args.runs;

    // Fail early, outside the timings, if a backend cannot load it.
    // SAFETY: the user asked to run this library (loading runs its initialisers).
    unsafe { ElfImage::load_fd(&s.file, 0, len) }.map_err(|e| format!("memdl load_fd: {e}"))?;
    // SAFETY: the user asked to run this library (loading runs its initialisers).
    unsafe { SystemImage::load(&s.bytes) }.map_err(|e| format!("memdl system backend: {e}"))?;
    // SAFETY: the handle was just opened.
    unsafe { libc::dlclose(dlopen(&s.path, libc::RTLD_NOW)?) };

    let lookup = |lib: &dyn Library| {
        black_box(lib.symbol_address(&symbol).expect("found before timing"));
    };
    let dl = |flags: i32| {
        let h = dlopen(&s.path, flags).expect("opened before timing");
        // SAFETY: a live handle and a NUL-terminated name.
        unsafe {
            black_box(libc::dlsym(h, csym.as_ptr()));
            libc::dlclose(h);
        }
    };
    let rows = vec![
        measure("floor (copy + mprotect)", runs, &mut || {
            floor::load_copy(&plan, &s.bytes)
        }),
        measure("floor (map file)", runs, &mut || {
            floor::load_mapped(&plan, &s.file)
        }),
        measure("floor (map file, touch)", runs, &mut || {
            floor::load_mapped_touched(&plan, &s.file)
        }),
        measure("memdl load(bytes)", runs, &mut || {
            // SAFETY: the user asked to run this library (loading runs its initialisers).
            lookup(&unsafe { ElfImage::load(&s.bytes) }.expect("loaded before timing"))
        }),
        measure("memdl load_fd", runs, &mut || {
            // SAFETY: the user asked to run this library (loading runs its initialisers).
            lookup(&unsafe { ElfImage::load_fd(&s.file, 0, len) }.expect("loaded before timing"))
        }),
        measure("memdl system (memfd+dlopen)", runs, &mut || {
            // SAFETY: the user asked to run this library (loading runs its initialisers).
            lookup(&unsafe { SystemImage::load(&s.bytes) }.expect("loaded before timing"))
        }),
        measure("dlopen RTLD_NOW", runs, &mut || dl(libc::RTLD_NOW)),
        measure("dlopen RTLD_LAZY", runs, &mut || dl(libc::RTLD_LAZY)),
    ];

    // Lookups: memdl's get against dlsym, on one loaded copy each.
    // SAFETY: the user asked to run this library (loading runs its initialisers).
    let img = unsafe { ElfImage::load(&s.bytes) }.map_err(|e| e.to_string())?;
    let h = dlopen(&s.path, libc::RTLD_NOW)?;
    let per = |row: Row| row.per_load;
    let memdl_hit = per(measure("", runs, &mut || lookup(&img)));
    let dlsym_hit = per(measure("", runs, &mut || {
        // SAFETY: a live handle and a NUL-terminated name.
        black_box(unsafe { libc::dlsym(h, csym.as_ptr()) });
    }));
    let memdl_miss = per(measure("", runs, &mut || {
        black_box(img.symbol_address(b"memdl_bench_no_such_symbol").is_err());
    }));
    let dlsym_miss = per(measure("", runs, &mut || {
        // SAFETY: as above.
        black_box(unsafe { libc::dlsym(h, c"memdl_bench_no_such_symbol".as_ptr()) });
    }));
    // SAFETY: opened above, closed once.
    unsafe { libc::dlclose(h) };
    drop(img);

    let floor_time = rows[0].per_load.as_secs_f64();
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{}: {} bytes, looking up {:?}; median of {runs} batches",
        s.name,
        s.bytes.len(),
        String::from_utf8_lossy(&symbol)
    );
    let floor_cpu = rows[0].cpu.as_secs_f64();
    let _ = writeln!(
        out,
        "{:<30} {:>12} {:>8} {:>12} {:>8} {:>13}",
        "load + lookup + drop", "wall", "x floor", "CPU", "x floor", "minor faults"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<30} {:>9.1} µs {:>7.2}x {:>9.1} µs {:>7.2}x {:>13.1}",
            r.name,
            r.per_load.as_secs_f64() * 1e6,
            r.per_load.as_secs_f64() / floor_time,
            r.cpu.as_secs_f64() * 1e6,
            r.cpu.as_secs_f64() / floor_cpu,
            r.faults
        );
    }
    let _ = writeln!(out, "{:<30} {:>12} {:>12}", "lookup", "memdl get", "dlsym");
    for (what, m, d) in [
        ("hit", memdl_hit, dlsym_hit),
        ("miss", memdl_miss, dlsym_miss),
    ] {
        let _ = writeln!(
            out,
            "{:<30} {:>9.1} ns {:>9.1} ns",
            what,
            m.as_secs_f64() * 1e9,
            d.as_secs_f64() * 1e9
        );
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| format!("writing output: {e}"))
}
