//! Random corruption: thousands of seeded mutations of the metadata of
//! `libexample` (ELF header, program headers, dynamic array, relocation,
//! symbol, string and hash tables), each loaded with host lookups denied.
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

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use memdl::{Error, Options};

mod common;
use common::{maps_count, open_fds, test_lib};

/// Default number of accepted mutations (debug builds, busy machine: ~10 s).
const DEFAULT_COUNT: u64 = 4000;
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

// ---- what the loader would read: the code-running filter ---------------

const DT_NULL: u64 = 0;
const DT_PLTRELSZ: u64 = 2;
const DT_HASH: u64 = 4;
const DT_SYMTAB: u64 = 6;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_INIT: u64 = 12;
const DT_FINI: u64 = 13;
const DT_REL: u64 = 17;
const DT_RELSZ: u64 = 18;
const DT_JMPREL: u64 = 23;
const DT_INIT_ARRAY: u64 = 25;
const DT_FINI_ARRAY: u64 = 26;
const DT_PREINIT_ARRAY: u64 = 32;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_NODELETE: u64 = 0x8;
const STT_GNU_IFUNC: u8 = 10;
#[cfg(target_arch = "x86_64")]
const R_IRELATIVE: u32 = goblin::elf::reloc::R_X86_64_IRELATIVE;
#[cfg(target_arch = "aarch64")]
const R_IRELATIVE: u32 = goblin::elf::reloc::R_AARCH64_IRELATIVE;

/// The image as the loader would lay it out: `PT_LOAD` (vaddr, memsz,
/// offset, filesz) of the mutated file.
struct Sim<'a> {
    bytes: &'a [u8],
    loads: Vec<(u64, u64, u64, u64)>,
}

impl Sim<'_> {
    /// The byte at `vaddr` after loading: file bytes, zero past `p_filesz`,
    /// `None` outside every `PT_LOAD` (the loader refuses tables there).
    fn byte(&self, vaddr: u64) -> Option<u8> {
        for &(va, memsz, off, filesz) in &self.loads {
            if vaddr >= va && vaddr - va < memsz {
                let rel = vaddr - va;
                if rel >= filesz {
                    return Some(0);
                }
                return self
                    .bytes
                    .get(usize::try_from(off.checked_add(rel)?).ok()?)
                    .copied();
            }
        }
        None
    }
    /// Whether `vaddr` is backed by file bytes (past that, memory is zero).
    fn file_backed(&self, vaddr: u64) -> bool {
        self.loads
            .iter()
            .any(|&(va, _, _, filesz)| vaddr >= va && vaddr - va < filesz)
    }
    fn word<const N: usize>(&self, vaddr: u64) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..N as u64 {
            v |= u64::from(self.byte(vaddr.checked_add(i)?)?) << (8 * i);
        }
        Some(v)
    }
}

fn le(bytes: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = bytes.get(at..at.checked_add(n)?)?;
    Some(s.iter().rev().fold(0, |v, &b| (v << 8) | u64::from(b)))
}

/// Whether loading `bytes` (and looking symbols up) could run code of the
/// file: an initialiser or finaliser, an IRELATIVE resolver or an ifunc
/// resolver. Also true for `DF_1_NODELETE`, which keeps the image mapped
/// on purpose. Conservative: every value a duplicated tag could take is
/// considered.
fn runs_code(bytes: &[u8]) -> bool {
    let (Some(phoff), Some(phnum)) = (le(bytes, 32, 8), le(bytes, 56, 2)) else {
        return false;
    };
    if le(bytes, 54, 2) != Some(56) {
        return false; // refused before any table is read
    }
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let Some(at) = phoff
            .checked_add(i * 56)
            .and_then(|a| usize::try_from(a).ok())
        else {
            return false;
        };
        let Some(ph) = bytes.get(at..at.saturating_add(56)) else {
            return false; // table out of the file: refused
        };
        let f = |o: usize| le(ph, o, 8).unwrap();
        phdrs.push((le(ph, 0, 4).unwrap() as u32, f(8), f(16), f(32), f(40)));
    }
    let sim = Sim {
        bytes,
        loads: phdrs
            .iter()
            .filter(|p| p.0 == 1)
            .map(|&(_, off, va, filesz, memsz)| (va, memsz, off, filesz))
            .collect(),
    };
    // Every entry of every PT_DYNAMIC up to its DT_NULL.
    let mut dynamic = Vec::new();
    for &(_, _, va, _, memsz) in phdrs.iter().filter(|p| p.0 == 2) {
        for i in 0..memsz / 16 {
            let at = va.wrapping_add(i * 16);
            let (Some(tag), Some(val)) = (sim.word::<8>(at), sim.word::<8>(at.wrapping_add(8)))
            else {
                break;
            };
            if tag == DT_NULL {
                break;
            }
            dynamic.push((tag, val));
        }
    }
    let values = |tag: u64| dynamic.iter().filter(move |d| d.0 == tag).map(|d| d.1);
    if dynamic.iter().any(|&(tag, val)| {
        matches!(
            tag,
            DT_INIT | DT_FINI | DT_INIT_ARRAY | DT_FINI_ARRAY | DT_PREINIT_ARRAY
        ) || (tag == DT_FLAGS_1 && val & DF_1_NODELETE != 0)
    }) {
        return true;
    }
    // IRELATIVE anywhere in a relocation table the loader could walk.
    let tables = [
        (DT_RELA, DT_RELASZ, &[24u64][..]),
        (DT_REL, DT_RELSZ, &[16][..]),
        (DT_JMPREL, DT_PLTRELSZ, &[16, 24][..]),
    ];
    for (tag, size_tag, strides) in tables {
        let size = values(size_tag).max().unwrap_or(0);
        for start in values(tag) {
            for &stride in strides {
                let mut at = start;
                for _ in 0..size / stride {
                    // Past the file bytes the table is zeros (type NONE) or
                    // not inside one segment (refused).
                    if !sim.file_backed(at) {
                        break;
                    }
                    match sim.word::<4>(at.wrapping_add(8)) {
                        Some(t) if t as u32 == R_IRELATIVE => return true,
                        Some(_) => {}
                        None => break,
                    }
                    at = at.wrapping_add(stride);
                }
            }
        }
    }
    // Ifunc symbols among the ones the loader's symbol count covers.
    let mut count = 0u64;
    for h in values(DT_HASH) {
        count = count.max(sim.word::<4>(h.wrapping_add(4)).unwrap_or(0));
    }
    for g in values(DT_GNU_HASH) {
        count = count.max(gnu_count(&sim, g));
    }
    for symtab in values(DT_SYMTAB) {
        for i in 0..count.min(1 << 20) {
            let at = symtab.wrapping_add(i * 24);
            if !sim.file_backed(at.wrapping_add(4)) {
                continue;
            }
            if sim
                .byte(at.wrapping_add(4))
                .is_some_and(|info| info & 0xf == STT_GNU_IFUNC)
            {
                return true;
            }
        }
    }
    false
}

/// The symbol count a GNU hash table implies (as the loader computes it),
/// or as far as the chains can be read.
fn gnu_count(sim: &Sim<'_>, at: u64) -> u64 {
    let r = |a: u64| sim.word::<4>(a);
    let (Some(nbuckets), Some(symoffset), Some(bloom)) =
        (r(at), r(at.wrapping_add(4)), r(at.wrapping_add(8)))
    else {
        return 0;
    };
    // Wrapping arithmetic: the fields are arbitrary, and an address that
    // wraps reads nothing (as the loader refuses it).
    let buckets = at.wrapping_add(16).wrapping_add(bloom.wrapping_mul(8));
    let mut last = 0;
    for b in 0..nbuckets.min(1 << 20) {
        last = last.max(r(buckets.wrapping_add(b * 4)).unwrap_or(0));
    }
    if last < symoffset {
        return symoffset;
    }
    let chains = buckets.wrapping_add(nbuckets * 4);
    while last < 1 << 24 {
        match r(chains.wrapping_add((last - symoffset) * 4)) {
            Some(c) if c & 1 == 0 => last += 1,
            _ => return last + 1,
        }
    }
    last + 1
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

/// Loads one mutation and looks symbols up if it loaded.
fn load_and_look_up(bytes: &[u8]) -> Result<(), Error> {
    let img = Options::new().deny_host_lookups().load(bytes)?;
    for name in NAMES {
        // SAFETY: only the address is taken; nothing is called or read.
        let _ = unsafe { img.get::<*const u8>(name) };
    }
    let exported = img.exports().count();
    for (name, _) in img.exports().take(64) {
        let _ = std::hint::black_box(name);
    }
    std::hint::black_box(exported);
    Ok(())
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
fn child(base: &[u8], regions: &[Region], seed: u64, range: std::ops::Range<u64>, out: OwnedFd) {
    use std::io::Write;
    let mut out = std::fs::File::from(out);
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
            Err(_) => format!("FAIL {index} panicked"),
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
fn run_batch(
    base: &[u8],
    regions: &[Region],
    seed: u64,
    range: std::ops::Range<u64>,
) -> (String, libc::c_int) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: each descriptor is freshly created and owned here only.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs this test's code (no other thread of the
    // test binary touches memdl: this file has one test) and leaves with
    // _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(rd);
        // A panic must not unwind into the forked copy of the harness.
        let code = match std::panic::catch_unwind(|| child(base, regions, seed, range, wr)) {
            Ok(()) => 0,
            Err(_) => 101,
        };
        // SAFETY: ends the child without running the parent's atexit hooks.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    let mut report = String::new();
    std::fs::File::from(rd)
        .read_to_string(&mut report)
        .expect("read child report");
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    (report, status)
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
