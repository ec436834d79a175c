//! `memdl check [PATH]...`: load every ELF shared object under the paths
//! with memdl's loader and with the system loader, each in a child process
//! of its own (with a timeout), and report every library where they
//! disagree: one loads and the other does not, an export lies at another
//! offset from the image's base, memdl left a writable and executable
//! mapping, or dropping the image left mappings behind.
//!
//! A child is this executable again (`memdl check-one`), so a library that
//! crashes its process or never returns costs one child, not the run.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goblin::elf::dynamic::DF_1_NODELETE;
use goblin::elf::program_header::PT_INTERP;
use goblin::elf::sym::STT_TLS;
use std::os::unix::ffi::OsStrExt;

use memdl::{ElfImage, Library};

use crate::{inspect, CliResult, Failure};

/// The default places: the system library directory.
const DEFAULT_DIR: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu"
} else {
    "/usr/lib/x86_64-linux-gnu"
};

/// Prefix of the lines a child reports on (a library's own output to
/// stdout during its initialisers is ignored).
const TAG: &str = "memdl-check:";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (searched recursively); default: the system
    /// library directory
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Seconds each child may take
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Children at once (default: the number of CPUs)
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also list the libraries that agree and the ones skipped
    #[arg(long, short)]
    pub verbose: bool,
}

/// The hidden child command: one backend, one library.
#[derive(clap::Args, Debug)]
pub struct OneArgs {
    /// `memdl` or `system`
    #[arg(long)]
    pub backend: String,
    pub file: PathBuf,
}

/// Libraries neither loader can take into a running process a second time,
/// or that exist to take a process over, by file-name prefix.
const SKIPPED: &[(&str, &str)] = &[
    ("ld-linux", "the dynamic loader itself"),
    ("ld64.so", "the dynamic loader itself"),
    (
        "libc.so",
        "libc is in every process already; a second copy cannot run",
    ),
    (
        "libc_malloc_debug.so",
        "replaces malloc: only as LD_PRELOAD",
    ),
    ("libmemusage.so", "replaces malloc: only as LD_PRELOAD"),
    ("libpcprofile.so", "a profiling preload (LD_PRELOAD only)"),
    (
        "libasan.so",
        "sanitizer runtime: must be the first library of a process",
    ),
    (
        "libtsan.so",
        "sanitizer runtime: must be the first library of a process",
    ),
    (
        "liblsan.so",
        "sanitizer runtime: must be the first library of a process",
    ),
    (
        "libubsan.so",
        "sanitizer runtime: must be the first library of a process",
    ),
    (
        "libhwasan.so",
        "sanitizer runtime: must be the first library of a process",
    ),
    ("vgpreload_", "a valgrind preload (only inside valgrind)"),
];

/// What a child found.
#[derive(Debug, Default)]
struct Report {
    /// `None`: loaded; else the refusal.
    refused: Option<String>,
    /// Export name → offset from the base (`None`: not found; `Some(None)`
    /// outside the image, e.g. an ifunc resolving into another library).
    exports: BTreeMap<String, Option<Option<usize>>>,
    /// Problems only memdl's child checks: W+X, mappings after drop.
    problems: Vec<String>,
}

/// How a child ended.
enum Outcome {
    Reported(Report),
    Crashed(String),
}

pub fn run(args: &Args, out: &mut dyn Write) -> CliResult {
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from(DEFAULT_DIR)]
    } else {
        args.paths.clone()
    };
    let mut libraries = Vec::new();
    let mut seen = HashSet::new();
    for root in &roots {
        if !root.exists() {
            return Err(Failure::new(format!(
                "{}: no such file or directory",
                root.display()
            )));
        }
        find_libraries(root, &mut seen, &mut libraries);
    }
    libraries.sort();
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(format!("finding this executable: {e}")))?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);

    let queue = Mutex::new(libraries.iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(lib) = queue.lock().unwrap().next() else {
                    break;
                };
                let verdict = match skip_reason(lib) {
                    Some(reason) => Verdict::Skipped(reason.to_owned()),
                    None => compare(&exe, lib, timeout),
                };
                results.lock().unwrap().push((lib.clone(), verdict));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let (mut agree, mut differ, mut skipped) = (0, 0, 0);
    for (lib, verdict) in &results {
        match verdict {
            Verdict::Agree { loaded } => {
                agree += 1;
                if args.verbose {
                    let how = if *loaded {
                        "both load"
                    } else {
                        "neither loads"
                    };
                    writeln!(out, "agree {}: {how}", lib.display())?;
                }
            }
            Verdict::Differ(why) => {
                differ += 1;
                writeln!(out, "DIFFER {}: {why}", lib.display())?;
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                if args.verbose {
                    writeln!(out, "skip {}: {why}", lib.display())?;
                }
            }
        }
    }
    writeln!(
        out,
        "checked {} libraries: {agree} agree, {differ} disagree, {skipped} skipped",
        results.len()
    )?;
    out.flush()?;
    if differ > 0 {
        return Err(Failure::new(format!(
            "{differ} libraries where memdl and the system loader disagree"
        )));
    }
    Ok(())
}

enum Verdict {
    Agree { loaded: bool },
    Differ(String),
    Skipped(String),
}

/// Every ELF shared object for this machine below `path` (symbolic links
/// to files followed, each file once).
fn find_libraries(path: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            find_libraries(&entry.path(), seen, out);
        }
        return;
    }
    let Ok(real) = std::fs::canonicalize(path) else {
        return;
    };
    let Ok(meta) = std::fs::metadata(&real) else {
        return;
    };
    if !meta.is_file() || meta.file_type().is_fifo() || !seen.insert(real.clone()) {
        return;
    }
    if is_shared_object(&real) {
        out.push(real);
    }
}

/// An `ET_DYN` for this machine that is a library, not a position-
/// independent executable (`DF_1_PIE`, or an interpreter without a soname).
fn is_shared_object(path: &Path) -> bool {
    let mut header = [0u8; 20];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.read_exact(&mut header).is_err()
        || header[..4] != *b"\x7fELF"
        || header[4] != 2
        || u16::from_le_bytes([header[16], header[17]]) != goblin::elf::header::ET_DYN
        || u16::from_le_bytes([header[18], header[19]]) != host_machine()
    {
        return false;
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let Ok(elf) = inspect::parse(&bytes) else {
        // Malformed: still a candidate (both loaders must refuse it).
        return true;
    };
    let Some(dynamic) = elf.dynamic.as_ref() else {
        return false;
    };
    let pie = dynamic.info.flags_1 & goblin::elf::dynamic::DF_1_PIE != 0;
    let interp = elf.program_headers.iter().any(|p| p.p_type == PT_INTERP);
    !(pie || (interp && elf.soname.is_none()))
}

fn host_machine() -> u16 {
    if cfg!(target_arch = "aarch64") {
        goblin::elf::header::EM_AARCH64
    } else {
        goblin::elf::header::EM_X86_64
    }
}

fn skip_reason(lib: &Path) -> Option<&'static str> {
    let name = lib.file_name()?.to_str()?;
    SKIPPED
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|&(_, why)| why)
}

/// Both children, and what their reports say together.
fn compare(exe: &Path, lib: &Path, timeout: Duration) -> Verdict {
    // A child that gave no answer in time is asked once more: on a loaded
    // machine (or under emulation) a slow start is not a verdict. Twice
    // without an answer is one.
    let run = |backend| {
        child(exe, backend, lib, timeout)
            .or_else(|| child(exe, backend, lib, timeout))
            .unwrap_or_else(|| {
                Outcome::Crashed(format!("no answer within {} s, twice", timeout.as_secs()))
            })
    };
    let (mine, system) = (run("memdl"), run("system"));
    let (mine, system) = match (mine, system) {
        (Outcome::Reported(m), Outcome::Reported(s)) => (m, s),
        (Outcome::Crashed(m), Outcome::Crashed(s)) => {
            // Both loaders ran the library's code and it took the process
            // down either way: the library's doing, not a disagreement.
            return if m == s {
                Verdict::Agree { loaded: false }
            } else {
                Verdict::Differ(format!("memdl: {m}; system: {s}"))
            };
        }
        (Outcome::Crashed(m), Outcome::Reported(s)) => {
            return Verdict::Differ(format!(
                "memdl: {m}; system: {}",
                s.refused.as_deref().unwrap_or("loads")
            ))
        }
        // The system loader trusts its input: a malformed file can crash
        // it. memdl refusing the same file is the point, not a difference.
        (Outcome::Reported(m), Outcome::Crashed(_)) if m.refused.is_some() => {
            return Verdict::Agree { loaded: false }
        }
        (Outcome::Reported(_), Outcome::Crashed(s)) => {
            return Verdict::Differ(format!("memdl: loads; system: {s}"))
        }
    };
    match (&mine.refused, &system.refused) {
        (None, Some(why)) => {
            return Verdict::Differ(format!("only memdl loads it (system: {why})"))
        }
        (Some(why), None) => {
            return Verdict::Differ(format!("only the system loader loads it (memdl: {why})"))
        }
        (Some(_), Some(_)) => return Verdict::Agree { loaded: false },
        (None, None) => {}
    }
    if let Some(problem) = mine.problems.first() {
        return Verdict::Differ(problem.clone());
    }
    let place = |o: &Option<Option<usize>>| match o {
        None => "not found".to_owned(),
        Some(None) => "outside the image".to_owned(),
        Some(Some(off)) => format!("base+{off:#x}"),
    };
    let mismatches: Vec<String> = mine
        .exports
        .iter()
        .filter(|(name, offset)| system.exports.get(*name) != Some(*offset))
        .map(|(name, offset)| {
            let theirs = system
                .exports
                .get(name)
                .map_or("unlisted".to_owned(), place);
            format!("{name}: memdl {}, system {theirs}", place(offset))
        })
        .collect();
    if let Some(first) = mismatches.first() {
        return Verdict::Differ(format!("{} exports differ, e.g. {first}", mismatches.len()));
    }
    Verdict::Agree { loaded: true }
}

/// Runs `memdl check-one` for one backend and reads its report; `None`
/// when the child gave no answer within `timeout` (it is killed).
fn child(exe: &Path, backend: &str, lib: &Path, timeout: Duration) -> Option<Outcome> {
    let spawned = Command::new(exe)
        .args([
            OsString::from("check-one"),
            "--backend".into(),
            backend.into(),
        ])
        .arg(lib)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return Some(Outcome::Crashed(format!("could not start a child: {e}"))),
    };
    // Read while waiting: a full pipe must not stall the child.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    // A library's stray thread may hold the pipe open after a kill: the
    // report is only read from a child that exited.
    let status = status?;
    let text = reader.join().unwrap_or_default();
    let report = parse_report(&String::from_utf8_lossy(&text));
    Some(match (report, status.signal()) {
        (Some(r), _) => Outcome::Reported(r),
        (None, Some(sig)) => Outcome::Crashed(format!("killed by signal {sig}")),
        (None, None) => Outcome::Crashed(format!("exited with {status} before reporting")),
    })
}

fn parse_report(text: &str) -> Option<Report> {
    let mut report = Report::default();
    let mut done = false;
    for line in text.lines().filter_map(|l| l.strip_prefix(TAG)) {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "refused" => report.refused = Some(rest.to_owned()),
            "export" => {
                let (name, at) = rest.rsplit_once(' ')?;
                let offset = match at {
                    "-" => None,
                    "outside" => Some(None),
                    hex => Some(Some(usize::from_str_radix(hex, 16).ok()?)),
                };
                report.exports.insert(name.to_owned(), offset);
            }
            "problem" => report.problems.push(rest.to_owned()),
            "done" => done = true,
            _ => {}
        }
    }
    done.then_some(report)
}

/// The child: load `file` with one backend, report, drop, and leave
/// without running anything else (`_exit`).
pub fn run_one(args: &OneArgs) -> ! {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match one(args, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(out, "{TAG}refused {}", e.replace('\n', " "));
            let _ = writeln!(out, "{TAG}done");
            0
        }
    };
    let _ = out.flush();
    // SAFETY: ends the process at once; nothing is left to run.
    unsafe { libc::_exit(code) }
}

fn one(args: &OneArgs, out: &mut dyn Write) -> Result<(), String> {
    let bytes = std::fs::read(&args.file).map_err(|e| format!("reading: {e}"))?;
    let file = std::fs::File::open(&args.file).map_err(|e| format!("opening: {e}"))?;
    let len = bytes.len() as u64;
    let names: Vec<String> = inspect::parse(&bytes)
        .map(|elf| {
            inspect::static_exports(&elf)
                .into_iter()
                // Thread-local symbols are per thread; absolute ones are
                // values, not addresses.
                .filter(|(_, s)| {
                    s.st_type() != STT_TLS
                        && s.st_shndx != goblin::elf::section_header::SHN_ABS as usize
                })
                .map(|(n, _)| n.to_owned())
                .collect()
        })
        .unwrap_or_default();
    let nodelete = inspect::parse(&bytes)
        .ok()
        .and_then(|e| e.dynamic.map(|d| d.info.flags_1 & DF_1_NODELETE != 0))
        .unwrap_or(false);
    // Each export's offset from `base`, or where else it was found.
    let report = |lookup: &dyn Fn(&str) -> Option<usize>,
                  base: usize,
                  range: (usize, usize),
                  out: &mut dyn Write| {
        for name in &names {
            let at = match lookup(name) {
                None => "-".to_owned(),
                Some(addr) if addr < range.0 || addr >= range.1 => "outside".to_owned(),
                Some(addr) => format!("{:x}", addr - base),
            };
            let _ = writeln!(out, "{TAG}export {name} {at}");
        }
    };
    match args.backend.as_str() {
        "memdl" => {
            // SAFETY: the user asked to check this library (loading runs
            // its initialisers), in a process of its own.
            let img = unsafe { ElfImage::load_fd(&file, 0, len) }.map_err(|e| e.to_string())?;
            let range = img.segments().fold((usize::MAX, 0), |(lo, hi), s| {
                (lo.min(s.address), hi.max(s.address + s.size as usize))
            });
            let lookup = |name: &str| img.symbol_address(name.as_bytes()).ok().map(|a| a as usize);
            report(&lookup, img.base_address(), range, out);
            if let Some(m) = mappings(range).iter().find(|m| m.contains("wx")) {
                let _ = writeln!(out, "{TAG}problem writable and executable mapping: {m}");
            }
            drop(img);
            let left = mappings(range);
            if !nodelete && !left.is_empty() {
                let _ = writeln!(out, "{TAG}problem {} mappings left after drop", left.len());
            }
        }
        _ => {
            // `dlopen` of the path, as a program would: the reference,
            // with `$ORIGIN` the file's directory.
            let path = std::ffi::CString::new(args.file.as_os_str().as_bytes())
                .map_err(|_| "a path with a NUL byte".to_owned())?;
            // SAFETY: as above.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if handle.is_null() {
                // SAFETY: dlerror after a failed dlopen: a message.
                let message = unsafe { std::ffi::CStr::from_ptr(libc::dlerror()) };
                return Err(format!("dlopen: {}", message.to_string_lossy()));
            }
            let base = load_bias(handle)?;
            // The image's extent: from its program headers.
            let end = inspect::parse(&bytes)
                .map(|elf| {
                    elf.program_headers
                        .iter()
                        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
                        .map(|p| p.p_vaddr + p.p_memsz)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            let lookup = |name: &str| {
                let name = std::ffi::CString::new(name).ok()?;
                // SAFETY: a live handle and a NUL-terminated name.
                let addr = unsafe { libc::dlsym(handle, name.as_ptr()) } as usize;
                (addr != 0).then_some(addr)
            };
            report(&lookup, base, (base, base + end as usize), out);
            // SAFETY: the handle from dlopen above, closed once.
            unsafe { libc::dlclose(handle) };
        }
    }
    let _ = writeln!(out, "{TAG}done");
    Ok(())
}

/// The load bias of the object behind a `dlopen` handle.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn load_bias(handle: *mut libc::c_void) -> Result<usize, String> {
    let mut map: *const usize = std::ptr::null();
    // SAFETY: a live handle; RTLD_DI_LINKMAP (2) writes a link_map pointer,
    // whose first field is the load bias.
    unsafe {
        libc::dlinfo(handle, 2, (&mut map as *mut *const usize).cast());
        if map.is_null() {
            return Err("dlinfo gave no link map".to_owned());
        }
        Ok(*map)
    }
}

/// Other C libraries: no `RTLD_DI_LINKMAP`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn load_bias(_handle: *mut libc::c_void) -> Result<usize, String> {
    Err("the reference needs glibc's dlinfo".to_owned())
}

/// `/proc/self/maps` lines overlapping `[lo, hi)`, with their permissions.
fn mappings((lo, hi): (usize, usize)) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter(|l| {
            let range = l.split(' ').next().unwrap_or("");
            let Some((a, b)) = range.split_once('-') else {
                return false;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                return false;
            };
            a < hi && b > lo
        })
        .map(str::to_owned)
        .collect()
}
