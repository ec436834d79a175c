//! Random corruption: thousands of seeded mutations of the metadata of
//! `libexample` (ELF header, program headers, dynamic array, relocation,
//! symbol, string and hash tables, versions, unwind tables), each loaded
//! with host lookups denied; lookups and an unwind (which walks every
//! registered `.eh_frame`) follow each load that succeeds.
//!
//! The mutations are loaded in forked children, a batch per child, so a
//! crash is observed (as a signal in the parent) instead of killing the
//! test binary. The child checks that every load, success or error, leaves
//! the mapping count and the fd count as they were, and that lookups on a
//! loaded mutation do not crash.
//!
//! Mutations that would make the loader legitimately run code of the file
//! (init/fini tags, IRELATIVE relocations, ifunc symbols) are filtered out
//! after mutating: [`runs_code`] replays what the loader would read.
//! `MEMDL_CORRUPTION_COUNT` and `MEMDL_CORRUPTION_SEED` override the count
//! and the seed; `MEMDL_CORRUPTION_ONLY=i` replays mutation `i` in process.

use memdl::{Error, Options};

mod common;
mod runs_code;
use common::{maps_count, open_fds, test_lib};
use runs_code::runs_code;

/// Default number of accepted mutations: about 10 s in a debug build on
/// two busy cores.
const DEFAULT_COUNT: u64 = 3000;
const DEFAULT_SEED: u64 = 0x6d65_6d64_6c5f_6675;
const BATCH: u64 = 250;

/// splitmix64: deterministic, tiny, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A range of the file that holds metadata worth corrupting.
#[derive(Clone, Debug)]
struct Region {
    name: &'static str,
    start: usize,
    len: usize,
}

fn regions(bytes: &[u8]) -> Vec<Region> {
    let elf = goblin::elf::Elf::parse(bytes).expect("libexample parses");
    let mut out = vec![
        Region {
            name: "ELF header",
            start: 0,
            len: 64,
        },
        Region {
            name: "program headers",
            start: elf.header.e_phoff as usize,
            len: usize::from(elf.header.e_phnum) * 56,
        },
    ];
    for sh in &elf.section_headers {
        let name = match elf.shdr_strtab.get_at(sh.sh_name) {
            Some(".dynamic") => "dynamic array",
            Some(".dynsym") => "symbol table",
            Some(".dynstr") => "string table",
            Some(".gnu.hash") => "GNU hash table",
            Some(".hash") => "SysV hash table",
            Some(".rela.dyn") | Some(".rela.plt") | Some(".rel.dyn") | Some(".relr.dyn") => {
                "relocations"
            }
            Some(".gnu.version") | Some(".gnu.version_d") | Some(".gnu.version_r") => "versions",
            Some(".eh_frame") | Some(".eh_frame_hdr") => "unwind tables",
            _ => continue,
        };
        out.push(Region {
            name,
            start: sh.sh_offset as usize,
            len: sh.sh_size as usize,
        });
    }
    for want in [
        "dynamic array",
        "symbol table",
        "string table",
        "GNU hash table",
        "relocations",
    ] {
        assert!(
            out.iter().any(|r| r.name == want),
            "libexample has no {want}"
        );
    }
    out
}

/// Values that tend to sit on boundaries a parser gets wrong.
fn interesting(rng: &mut Rng, old: u64, file_len: u64) -> u64 {
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - rng.below(64),
        4 => 0x7fff_ffff,
        5 => 0x8000_0000,
        6 => 1 << (rng.below(63) + 1),
        7 => old.wrapping_add(rng.below(33)).wrapping_sub(16),
        8 => old.wrapping_mul(2 + rng.below(1000)),
        9 => rng.below(file_len + 0x1000),
        10 => old ^ (1 << rng.below(64)),
        _ => rng.next(),
    }
}

/// Applies one to four random mutations inside the metadata regions.
fn mutate(rng: &mut Rng, bytes: &mut [u8], regions: &[Region]) -> Vec<String> {
    let mut what = Vec::new();
    let file_len = bytes.len() as u64;
    for _ in 0..1 + rng.below(4) {
        let r = &regions[rng.below(regions.len() as u64) as usize];
        let at = r.start + rng.below(r.len as u64) as usize;
        match rng.below(6) {
            0 => {
                bytes[at] ^= 1 << rng.below(8);
                what.push(format!("{} bit flip at {at:#x}", r.name));
            }
            1 => {
                bytes[at] = rng.next() as u8;
                what.push(format!("{} byte at {at:#x}", r.name));
            }
            2 | 3 => {
                // An aligned 64-bit field: addresses, sizes, offsets, tags.
                let at = (at & !7).max(r.start);
                if at + 8 <= bytes.len() {
                    let old = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                    let new = interesting(rng, old, file_len);
                    bytes[at..at + 8].copy_from_slice(&new.to_le_bytes());
                    what.push(format!("{} u64 at {at:#x}: {old:#x} -> {new:#x}", r.name));
                }
            }
            4 => {
                // An aligned 32-bit field: counts, indices, symbol names.
                let at = (at & !3).max(r.start);
                if at + 4 <= bytes.len() {
                    let old = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
                    let new = interesting(rng, old.into(), file_len) as u32;
                    bytes[at..at + 4].copy_from_slice(&new.to_le_bytes());
                    what.push(format!("{} u32 at {at:#x}: {old:#x} -> {new:#x}", r.name));
                }
            }
            _ => {
                // A 16-bit field (e_phnum, e_phentsize, st_shndx, versions).
                let at = (at & !1).max(r.start);
                if at + 2 <= bytes.len() {
                    let new = interesting(rng, 0, file_len) as u16;
                    bytes[at..at + 2].copy_from_slice(&new.to_le_bytes());
                    what.push(format!("{} u16 at {at:#x} -> {new:#x}", r.name));
                }
            }
        }
    }
    what
}

// ---- the child: load each mutation, check nothing leaked ----------------

/// Names libexample exports (and one it does not), looked up on every
/// mutation that loads.
const NAMES: &[&str] = &[
    "add",
    "sub",
    "mul",
    "counter",
    "answer",
    "counter_ptr",
    "ops",
    "bump",
    "get_counter",
    "set_counter",
    "apply",
    "op_name",
    "fib",
    "checksum",
    "no_such_symbol",
];

/// The outcome of one mutation: `ok` or the error variant's name.
fn outcome(result: &Result<(), Error>) -> String {
    match result {
        Ok(()) => "loaded".to_owned(),
        Err(e) => {
            let s = format!("{e:?}");
            let end = s.find([' ', '{', '(']).unwrap_or(s.len());
            s[..end].to_owned()
        }
    }
}

/// A mapping that is writable and executable, if any (the W^X audit).
fn wx_mapping() -> Option<String> {
    common::maps()
        .into_iter()
        .find(|m| m.perms.contains('w') && m.perms.contains('x'))
        .map(|m| format!("{m:?}"))
}

/// Loads one mutation and looks symbols up if it loaded.
fn load_and_look_up(bytes: &[u8]) -> Result<(), Error> {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { Options::new().deny_host_lookups().load(bytes) }?;
    if let Some(m) = wx_mapping() {
        panic!("writable and executable mapping after a load: {m}");
    }
    for name in NAMES {
        // SAFETY: only the address is taken; nothing is called or read.
        let _ = unsafe { img.get::<*const u8>(name) };
    }
    let exported = img.exports().count();
    for (name, _) in img.exports().take(64) {
        let _ = std::hint::black_box(name);
    }
    std::hint::black_box(exported);
    #[cfg(feature = "test-hooks")]
    index_answers_as_the_hash_table(&img);
    // An unwind walks every registered .eh_frame, this image's included.
    let unwound = std::panic::catch_unwind(|| std::panic::resume_unwind(Box::new(1u8)));
    assert!(unwound.is_err(), "the unwind was not caught");
    Ok(())
}

/// The export index answers as the hash table does, whatever the mutation
/// did to the tables it is built from (seen through the test hooks).
#[cfg(feature = "test-hooks")]
fn index_answers_as_the_hash_table(img: &memdl::ElfImage) {
    img.__build_export_index();
    let names = NAMES
        .iter()
        .map(|n| n.as_bytes())
        .chain(img.exports().take(64).map(|(n, _)| n));
    for name in names {
        // SAFETY: only the address is taken; nothing is called or read.
        let got = unsafe { img.get::<*const u8>(name) }.map(|s| s.as_ptr() as usize);
        let want = img.__hash_table_address(name, None);
        assert_eq!(
            got.map_err(|e| e.to_string()),
            want.map_err(|e| e.to_string()),
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

/// Generates mutation `index` (or `None` if it would run code).
fn mutation(base: &[u8], regions: &[Region], seed: u64, index: u64) -> Option<Vec<u8>> {
    let mut rng = Rng::new(seed, index);
    let mut bytes = base.to_vec();
    mutate(&mut rng, &mut bytes, regions);
    (!runs_code(&bytes)).then_some(bytes)
}

/// Runs mutations `range` and writes one line per mutation to `out`:
/// `at i` before the load (so the parent can name a crashing mutation),
/// then `done i <outcome>` or `FAIL i <why>`.
fn child(
    base: &[u8],
    regions: &[Region],
    seed: u64,
    range: std::ops::Range<u64>,
    out: &mut std::fs::File,
) {
    use std::io::Write;
    // One-time process state (the TLS module table, the unwinder's and the
    // allocator's first allocations) is set up before counting mappings:
    // only what a load leaves behind counts. So is a thread's stack, which
    // glibc keeps for the next thread: a mutation whose `.eh_frame_hdr`
    // claims many FDEs is described on a helper thread.
    let _ = load_and_look_up(base);
    let _ = load_and_look_up(&test_lib("sandboxtls"));
    let _ = std::thread::spawn(|| ()).join();
    for index in range {
        let Some(bytes) = mutation(base, regions, seed, index) else {
            let _ = writeln!(out, "skip {index}");
            continue;
        };
        let _ = writeln!(out, "at {index}");
        let (maps, fds) = (maps_count(), open_fds());
        let result = std::panic::catch_unwind(|| load_and_look_up(&bytes));
        let (maps_after, fds_after) = (maps_count(), open_fds());
        let line = match result {
            Err(payload) => {
                let why = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                format!("FAIL {index} panicked: {why}")
            }
            Ok(_) if (maps, fds) != (maps_after, fds_after) => format!(
                "FAIL {index} leaked: maps {maps} -> {maps_after}, fds {fds} -> {fds_after}"
            ),
            Ok(r) => format!("done {index} {}", outcome(&r)),
        };
        let _ = writeln!(out, "{line}");
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Forks a child for mutations `range`; returns its report and exit status.
/// The child only runs this test's code: no other thread of the test binary
/// touches memdl (this file has one test).
fn run_batch(
    base: &[u8],
    regions: &[Region],
    seed: u64,
    range: std::ops::Range<u64>,
) -> (String, libc::c_int) {
    common::run_in_child(|out| {
        child(base, regions, seed, range, out);
        0
    })
}

#[test]
fn random_corruptions_never_crash_or_leak() {
    let base = test_lib("example");
    let regions = regions(&base);
    let seed = env_u64("MEMDL_CORRUPTION_SEED").unwrap_or(DEFAULT_SEED);
    // The base loads, so failures come from the mutations, and the filter
    // does not consider it code-running.
    load_and_look_up(&base).expect("unmodified libexample loads");
    assert!(!runs_code(&base));

    if let Some(index) = env_u64("MEMDL_CORRUPTION_ONLY") {
        let mut rng = Rng::new(seed, index);
        let mut bytes = base.clone();
        eprintln!(
            "mutation {index}: {:?}",
            mutate(&mut rng, &mut bytes, &regions)
        );
        assert!(!runs_code(&bytes), "mutation {index} runs code");
        eprintln!("{}", outcome(&load_and_look_up(&bytes)));
        return;
    }

    let want = env_u64("MEMDL_CORRUPTION_COUNT").unwrap_or(DEFAULT_COUNT);
    let started = std::time::Instant::now();
    let (mut tried, mut skipped, mut next) = (0u64, 0u64, 0u64);
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let mut failures = Vec::new();
    while tried < want && next < want * 4 {
        let range = next..next + BATCH;
        next += BATCH;
        let (report, status) = run_batch(&base, &regions, seed, range.clone());
        let mut last = None;
        for line in report.lines() {
            let mut f = line.splitn(3, ' ');
            match (f.next(), f.next(), f.next()) {
                (Some("skip"), _, _) => skipped += 1,
                (Some("at"), Some(i), _) => last = Some(i.to_owned()),
                (Some("done"), _, Some(o)) => {
                    tried += 1;
                    *outcomes.entry(o.to_owned()).or_default() += 1;
                }
                (Some("FAIL"), Some(i), Some(why)) => {
                    tried += 1;
                    failures.push(format!("mutation {i}: {why}"));
                }
                _ => failures.push(format!("unexpected report line {line:?}")),
            }
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            let how = if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("exit status {status:#x}")
            };
            failures.push(format!(
                "batch {range:?}: child {how}, last mutation started: {last:?} \
                 (replay with MEMDL_CORRUPTION_ONLY=<i>)"
            ));
        }
    }
    eprintln!(
        "{tried} corrupted images loaded in {:.1?} ({skipped} mutations that would run code skipped), seed {seed:#x}: {outcomes:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        tried >= want,
        "only {tried} of {want} mutations were usable"
    );
    // The mutations reach past the header checks: some load, some fail deep.
    assert!(
        outcomes.get("loaded").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(
        outcomes.len() >= 8,
        "too few distinct outcomes: {outcomes:?}"
    );
}
