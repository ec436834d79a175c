//! `memdl compare [FILE]`: load one library with both backends, check that
//! they export the same symbols at the same offsets, and time them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::time::{Duration, Instant};

use goblin::elf::sym::STT_TLS;
use memdl::{ElfImage, Library, SystemImage};

use crate::input::{parse_number, Input, Source};
use crate::{inspect, CliResult, Failure};

/// The built-in example library (`test-dylibs/example.c`: arithmetic and
/// data, no imports), so `memdl compare` and `memdl bench` work without
/// any file.
/// Compiled by `build.rs` on Linux gnu targets; elsewhere `None`.
#[cfg(memdl_builtin_example)]
pub const BUILTIN_EXAMPLE: Option<&[u8]> = Some(include_bytes!(env!("MEMDL_BUILTIN_EXAMPLE")));
#[cfg(not(memdl_builtin_example))]
pub const BUILTIN_EXAMPLE: Option<&[u8]> = None;

/// Mismatches listed before the rest are summarised.
const MISMATCHES_SHOWN: usize = 20;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The library: PATH or PATH@OFFSET (default: the built-in example)
    #[arg(value_name = "FILE")]
    pub file: Option<OsString>,
    /// Offset of the ELF inside FILE (decimal or 0x hex); same as FILE@OFFSET
    #[arg(long, value_name = "N", value_parser = parse_number, requires = "file")]
    pub offset: Option<u64>,
    /// Length of the ELF (default: the extent its headers give)
    #[arg(long, value_name = "N", value_parser = parse_number, requires = "file")]
    pub len: Option<u64>,
    /// Timed runs per measurement; the median is shown
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
}

/// The library under comparison.
enum Subject {
    File(Input),
    Builtin(&'static [u8]),
}

impl Subject {
    fn describe(&self) -> String {
        match self {
            Subject::File(input) => input.describe(),
            Subject::Builtin(bytes) => format!(
                "built-in example libexample.so ({} bytes: add, sub, mul, fib, checksum, a counter; no imports)",
                bytes.len()
            ),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Subject::File(input) => input.bytes(),
            Subject::Builtin(bytes) => bytes,
        }
    }

    /// memdl's loader: from the file (mapping what it can) or from memory.
    fn load_memdl(&self) -> memdl::Result<ElfImage> {
        match self {
            Subject::File(input) => input.load_memdl(),
            // SAFETY: the user asked to run this library (loading runs its initialisers).
            Subject::Builtin(bytes) => unsafe { ElfImage::load(bytes) },
        }
    }

    /// The system loader: from the file's range, or from memory.
    fn load_system(&self) -> memdl::Result<SystemImage> {
        match self {
            Subject::File(input) => input.load_system(),
            // SAFETY: the user asked to run this library (loading runs its initialisers).
            Subject::Builtin(bytes) => unsafe { SystemImage::load(bytes) },
        }
    }
}

/// How one export compares between the backends.
enum Verdict {
    Same,
    /// An absolute symbol (e.g. a version name): a value, not an address.
    Absolute,
    /// Offsets from each image's base; `None`: that backend lacks it.
    Differs {
        memdl: Option<usize>,
        system: Option<usize>,
    },
}

pub fn run(args: &Args, out: &mut dyn Write) -> CliResult {
    let subject = match &args.file {
        Some(file) => Subject::File(Input::open(&Source {
            file: file.clone(),
            offset: args.offset,
            len: args.len,
        })?),
        None => Subject::Builtin(BUILTIN_EXAMPLE.ok_or_else(|| {
            Failure::new("no built-in example on this platform: give a FILE to compare")
        })?),
    };
    writeln!(out, "library: {}", subject.describe())?;
    out.flush()?;

    let mine = subject.load_memdl().map_err(|e| {
        Failure::new(format!(
            "memdl's loader cannot load {}: {e}",
            subject.describe()
        ))
    })?;
    let system = subject.load_system().map_err(|e| {
        Failure::new(format!(
            "the system loader cannot load {}: {e}",
            subject.describe()
        ))
    })?;

    let (lo, hi) = mine.segments().fold((usize::MAX, 0), |(lo, hi), s| {
        (
            lo.min(s.address),
            hi.max(s.address.saturating_add(s.size as usize)),
        )
    });
    let mut compared = Vec::new();
    let mut absolute = 0usize;
    let mut mismatches = Vec::new();
    for (name, addr) in mine.exports() {
        match verdict(&mine, &system, name, addr, lo..=hi) {
            Verdict::Same => compared.push(name.to_vec()),
            Verdict::Absolute => absolute += 1,
            Verdict::Differs { memdl, system } => {
                mismatches.push((String::from_utf8_lossy(name).into_owned(), memdl, system))
            }
        }
    }
    // memdl's list of exports is itself under test: every symbol the file
    // exports by plain name that memdl omits must be absent from the system
    // backend too.
    if let Ok(elf) = inspect::parse(subject.bytes()) {
        let listed: HashSet<&[u8]> = mine.exports().map(|(name, _)| name).collect();
        for (name, sym) in inspect::static_exports(&elf) {
            // Thread-local symbols are per thread, never in exports().
            if sym.st_type() == STT_TLS || listed.contains(name.as_bytes()) {
                continue;
            }
            if let Ok(found) = system.symbol_address(name.as_bytes()) {
                let offset = (found as usize).wrapping_sub(system.base_address());
                mismatches.push((name.to_owned(), None, Some(offset)));
            }
        }
    }
    let total = compared.len() + mismatches.len();
    let absolute_note = if absolute > 0 {
        format!(
            "; {absolute} absolute symbols (version names) are values, not addresses, and were not compared"
        )
    } else {
        String::new()
    };
    if mismatches.is_empty() {
        writeln!(
            out,
            "exports: both backends agree on all {total} symbols (same offset from each image's base){absolute_note}"
        )?;
    } else {
        writeln!(
            out,
            "exports: the backends DISAGREE on {} of {total} symbols{absolute_note}",
            mismatches.len()
        )?;
        let place = |offset: &Option<usize>| {
            offset.map_or("not found".to_owned(), |o| format!("base+{o:#x}"))
        };
        for (name, memdl_offset, system_offset) in mismatches.iter().take(MISMATCHES_SHOWN) {
            writeln!(
                out,
                "  {name}: memdl {}, system {}",
                place(memdl_offset),
                place(system_offset)
            )?;
        }
        if mismatches.len() > MISMATCHES_SHOWN {
            writeln!(
                out,
                "  ... and {} more",
                mismatches.len() - MISMATCHES_SHOWN
            )?;
        }
    }
    out.flush()?;

    let runs = args.runs as usize;
    let load_mine = median_of(runs, || {
        let start = Instant::now();
        let img = subject.load_memdl();
        drop(img);
        start.elapsed()
    });
    let load_system = median_of(runs, || {
        let start = Instant::now();
        let img = subject.load_system();
        drop(img);
        start.elapsed()
    });
    let lookup = |lib: &dyn Library| {
        if compared.is_empty() {
            return None;
        }
        let all = median_of(runs, || {
            let start = Instant::now();
            for name in &compared {
                let _ = std::hint::black_box(lib.symbol_address(name));
            }
            start.elapsed()
        });
        Some(all / compared.len() as u32)
    };
    let (lookup_mine, lookup_system) = (lookup(&mine), lookup(&system));

    let (a, b) = (mine.backend(), system.backend());
    let na = |d: Option<Duration>| d.map_or("n/a".to_owned(), human);
    let heading = format!("timings (median of {runs} runs)");
    writeln!(out, "\n{heading:<30} {a:>14} {b:>14}")?;
    let rows = [
        ("load + drop", Some(load_mine), Some(load_system)),
        ("lookup (per symbol)", lookup_mine, lookup_system),
    ];
    for (what, x, y) in rows {
        writeln!(out, "  {what:<28} {:>14} {:>14}", na(x), na(y))?;
    }
    writeln!(
        out,
        "{}",
        speed_summary("load + drop", a, load_mine, b, load_system)
    )?;
    writeln!(
        out,
        "({a}: memdl's own loader, ElfImage; {b}: the system loader without a file on disk, SystemImage)"
    )?;
    if !mismatches.is_empty() {
        return Err(Failure::new(format!(
            "the backends disagree on {} of {total} exports",
            mismatches.len()
        )));
    }
    Ok(())
}

fn verdict(
    mine: &ElfImage,
    system: &SystemImage,
    name: &[u8],
    addr: usize,
    image: std::ops::RangeInclusive<usize>,
) -> Verdict {
    if !image.contains(&addr) {
        return Verdict::Absolute;
    }
    let memdl_offset = addr.wrapping_sub(mine.base_address());
    let Ok(found) = system.symbol_address(name) else {
        return Verdict::Differs {
            memdl: Some(memdl_offset),
            system: None,
        };
    };
    let system_offset = (found as usize).wrapping_sub(system.base_address());
    if system_offset == memdl_offset {
        return Verdict::Same;
    }
    // An ifunc's symbol value is its resolver; both lookups return what the
    // resolver picks.
    let resolved = mine
        .symbol_address(name)
        .map(|p| (p as usize).wrapping_sub(mine.base_address()));
    if resolved.is_ok_and(|r| r == system_offset) {
        return Verdict::Same;
    }
    Verdict::Differs {
        memdl: Some(memdl_offset),
        system: Some(system_offset),
    }
}

/// The median of `runs` measurements.
fn median_of(runs: usize, mut measure: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1)).map(|_| measure()).collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// A duration in the unit that keeps it readable.
fn human(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// "load + drop: memdl is 3.2x faster than memfd+dlopen", or slower.
fn speed_summary(what: &str, a: &str, ta: Duration, b: &str, tb: Duration) -> String {
    let (fast, slow, ratio) = if ta <= tb {
        (a, b, tb.as_secs_f64() / ta.as_secs_f64().max(1e-12))
    } else {
        (b, a, ta.as_secs_f64() / tb.as_secs_f64().max(1e-12))
    };
    format!("{what}: {fast} is {ratio:.1}x faster than {slow}")
}
