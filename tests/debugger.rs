//! Debuggers and profilers see memory-loaded code (issue 14): gdb through
//! the GDB JIT interface, perf through `/tmp/perf-<pid>.map`.
//!
//! Each test re-runs its own test binary under the tool (`current_exe`,
//! `--exact` its own name, `MEMDL_DEBUG_CHILD` naming what the child does):
//! the child loads a library from bytes with `ElfImage` and calls into it
//! from a named host function; the parent checks what the tool printed.
//! `.ci/run` installs gdb and perf: a missing tool is a failure.

mod common;

use std::ffi::c_void;
use std::process::Command;

use common::{machine_lib, test_lib};
use memdl::{ElfImage, Options, Symbol};

const CHILD: &str = "MEMDL_DEBUG_CHILD";

// ---- the child side -----------------------------------------------------

/// Calls zlib's `crc32` (a host frame gdb must unwind into).
#[inline(never)]
fn host_calls_crc32(img: &ElfImage) -> u64 {
    // SAFETY: zlib's crc32(uLong, const Bytef *, uInt).
    let crc32: Symbol<'_, unsafe extern "C" fn(u64, *const u8, u32) -> u64> =
        unsafe { img.get("crc32").unwrap() };
    let data = std::hint::black_box(b"hello");
    // SAFETY: a valid buffer and its length.
    let v = unsafe { crc32(0, data.as_ptr(), 5) };
    std::hint::black_box(v)
}

/// Spins in zlib's `adler32` for `seconds`: half the time over a large
/// buffer (the work is in `adler32_z`, which `adler32` jumps to), half over
/// one byte at a time (so `adler32`'s own instructions take samples too).
#[inline(never)]
fn host_spins_in_adler32(img: &ElfImage, seconds: f64) -> u64 {
    // SAFETY: zlib's adler32(uLong, const Bytef *, uInt).
    let adler32: Symbol<'_, unsafe extern "C" fn(u64, *const u8, u32) -> u64> =
        unsafe { img.get("adler32").unwrap() };
    let buf = vec![0x5au8; 1 << 20];
    let start = std::time::Instant::now();
    let mut v = 1;
    while start.elapsed().as_secs_f64() < seconds / 2.0 {
        // SAFETY: a valid buffer and its length.
        v = unsafe { adler32(v, buf.as_ptr(), buf.len() as u32) };
    }
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..4096 {
            // SAFETY: as above, one byte of it.
            v = unsafe { adler32(v, buf.as_ptr(), 1) };
        }
    }
    std::hint::black_box(v)
}

/// Calls the -g test library's `debugvis_compute`.
#[inline(never)]
fn host_calls_compute(img: &ElfImage) -> i32 {
    // SAFETY: int debugvis_compute(int).
    let f: Symbol<'_, unsafe extern "C" fn(i32) -> i32> =
        unsafe { img.get("debugvis_compute").unwrap() };
    // SAFETY: plain arithmetic.
    std::hint::black_box(unsafe { f(std::hint::black_box(4)) })
}

/// Makes the -g test library crash (a null pointer read).
#[inline(never)]
fn host_calls_crash(img: &ElfImage) -> i32 {
    // SAFETY: int debugvis_crash(int *); it crashes on purpose.
    let f: Symbol<'_, unsafe extern "C" fn(*mut i32) -> i32> =
        unsafe { img.get("debugvis_crash").unwrap() };
    // SAFETY: not safe at all: the crash is what the test looks at.
    std::hint::black_box(unsafe { f(std::ptr::null_mut()) })
}

fn report_image(img: &ElfImage) {
    let lo = img.segments().map(|s| s.address).min().unwrap();
    let hi = img
        .segments()
        .map(|s| s.address + s.size as usize)
        .max()
        .unwrap();
    println!("memdl-image {lo:#x} {hi:#x}");
}

fn child(mode: &str) {
    // SAFETY (of every load below): zlib and the test library are trusted
    // to run in this process.
    match mode {
        "zlib" => {
            let img = unsafe { ElfImage::load(&machine_lib("libz.so.1")) }.unwrap();
            report_image(&img);
            assert_eq!(host_calls_crc32(&img), 0x3610_a686);
        }
        "zlib_fd" => {
            let file = std::fs::File::open(common::machine_lib_path("libz.so.1")).unwrap();
            let len = file.metadata().unwrap().len();
            let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
            report_image(&img);
            assert_eq!(host_calls_crc32(&img), 0x3610_a686);
        }
        "zlib_no_section_headers" => {
            // e_shoff, e_shnum and e_shstrndx zeroed: `.eh_frame` is found
            // through PT_GNU_EH_FRAME and measured in memory.
            let mut bytes = machine_lib("libz.so.1");
            bytes[40..48].fill(0);
            bytes[60..64].fill(0);
            let img = unsafe { ElfImage::load(&bytes) }.unwrap();
            report_image(&img);
            assert_eq!(host_calls_crc32(&img), 0x3610_a686);
        }
        "zlib_off" => {
            let options = Options::new().debugger_registration(false);
            let img = unsafe { options.load(&machine_lib("libz.so.1")) }.unwrap();
            report_image(&img);
            assert_eq!(host_calls_crc32(&img), 0x3610_a686);
        }
        "adler" => {
            let img = unsafe { ElfImage::load(&machine_lib("libz.so.1")) }.unwrap();
            println!("memdl-pid {}", std::process::id());
            host_spins_in_adler32(&img, 1.0);
        }
        "debugvis" => {
            let img = unsafe { ElfImage::load(&test_lib("debugvis")) }.unwrap();
            report_image(&img);
            assert_eq!(host_calls_compute(&img), 15);
        }
        "crash" => {
            let img = unsafe { ElfImage::load(&test_lib("debugvis")) }.unwrap();
            report_image(&img);
            host_calls_crash(&img);
        }
        other => panic!("unknown child mode {other}"),
    }
    let _ = std::ptr::null::<c_void>();
}

/// Runs the child side when this process is a child; true if it was.
fn is_child() -> bool {
    match std::env::var(CHILD) {
        Ok(mode) => {
            child(&mode);
            true
        }
        Err(_) => false,
    }
}

// ---- the parent side ----------------------------------------------------

/// Runs this test binary's test `test` in child mode `mode` under gdb in
/// batch mode with `commands`; returns gdb's stdout and stderr.
fn gdb(test: &str, mode: &str, commands: &[&str]) -> String {
    let mut cmd = Command::new("gdb");
    cmd.args(["-nx", "-batch"]);
    for c in ["set debuginfod enabled off", "set breakpoint pending on"]
        .iter()
        .chain(commands)
    {
        cmd.args(["-ex", c]);
    }
    cmd.arg("--args")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("MEMDL_PERF_MAP");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running gdb (install it: .ci/run does): {e}"));
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    text
}

/// The image's range the child printed.
fn image_range(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find_map(|l| l.split_once("memdl-image ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no memdl-image line in:\n{out}"));
    let mut it = line
        .split_whitespace()
        .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The `#N  0x... in name (...)` / `#N  name (...)` frames of a backtrace:
/// (address if printed, function name).
fn frames(out: &str) -> Vec<(Option<u64>, String)> {
    out.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let rest = l.split_once(' ').map_or("", |(_, r)| r).trim_start();
            let (addr, rest) = match rest.strip_prefix("0x") {
                Some(hex) => {
                    let (a, r) = hex.split_once(" in ").unwrap_or((hex, ""));
                    (u64::from_str_radix(a.trim(), 16).ok(), r)
                }
                None => (None, rest),
            };
            let name = rest.split([' ', '(']).next().unwrap_or("").to_owned();
            (addr, name)
        })
        .collect()
}

/// Where gdb reports the breakpoint hit: `... hit Breakpoint 1, 0x... in
/// crc32 ()` or `... Breakpoint 1, crc32 (...)`.
fn stopped_in(out: &str, bp: u32) -> Option<String> {
    let marker = format!("Breakpoint {bp}, ");
    let rest = out
        .lines()
        .find_map(|l| Some(&l[l.find(&marker)? + marker.len()..]))?;
    let rest = match rest.strip_prefix("0x") {
        Some(r) => r.split_once(" in ").map_or("", |(_, n)| n),
        None => rest,
    };
    Some(rest.split([' ', '(']).next().unwrap_or("").to_owned())
}

fn assert_frame_in(frames: &[(Option<u64>, String)], name: &str, range: Option<(u64, u64)>) {
    let f = frames
        .iter()
        .find(|(_, n)| n == name)
        .unwrap_or_else(|| panic!("no frame {name} in {frames:?}"));
    if let (Some((lo, hi)), Some(a)) = (range, f.0) {
        assert!((lo..hi).contains(&a), "{name} at {a:#x} outside the image");
    }
}

/// The index of the first frame whose name contains `part`.
fn frame_index(frames: &[(Option<u64>, String)], part: &str) -> usize {
    frames
        .iter()
        .position(|(_, n)| n.contains(part))
        .unwrap_or_else(|| panic!("no frame naming {part} in {frames:?}"))
}

const BT: &[&str] = &["run", "bt", "info symbol $pc", "x/2i $pc", "kill"];

fn with_break(bp: &str) -> Vec<&str> {
    let mut v = vec![bp];
    v.extend_from_slice(BT);
    v
}

#[test]
fn gdb_breaks_in_zlib_crc32_loaded_from_bytes() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_breaks_in_zlib_crc32_loaded_from_bytes",
        "zlib",
        &with_break("break crc32"),
    );
    check_crc32_session(&out);
}

#[test]
fn gdb_breaks_in_zlib_crc32_loaded_from_fd() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_breaks_in_zlib_crc32_loaded_from_fd",
        "zlib_fd",
        &with_break("break crc32"),
    );
    check_crc32_session(&out);
}

#[test]
fn gdb_breaks_in_zlib_without_section_headers() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_breaks_in_zlib_without_section_headers",
        "zlib_no_section_headers",
        &with_break("break crc32"),
    );
    check_crc32_session(&out);
}

fn check_crc32_session(out: &str) {
    let range = image_range(out);
    assert_eq!(stopped_in(out, 1).as_deref(), Some("crc32"), "{out}");
    let frames = frames(out);
    assert_eq!(frames.first().map(|f| f.1.as_str()), Some("crc32"), "{out}");
    let pc = frames[0]
        .0
        .expect("frame #0 has an address (no debug info)");
    assert!(
        (range.0..range.1).contains(&pc),
        "pc {pc:#x} not in the image {range:x?}"
    );
    // Unwound through the loaded frame into the host's Rust caller.
    let caller = frame_index(&frames, "host_calls_crc32");
    assert_eq!(caller, 1, "crc32's caller is the host function: {frames:?}");
    assert!(out.contains("crc32 in section .text"), "info symbol: {out}");
    assert!(out.contains("<crc32"), "disassembly names crc32: {out}");
}

#[test]
fn gdb_does_not_see_images_when_registration_is_off() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_does_not_see_images_when_registration_is_off",
        "zlib_off",
        &with_break("break crc32"),
    );
    image_range(&out);
    assert_eq!(stopped_in(&out, 1), None, "{out}");
}

#[test]
fn gdb_sees_local_functions_and_constructors_of_an_unstripped_library() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_sees_local_functions_and_constructors_of_an_unstripped_library",
        "debugvis",
        &[
            "break debugvis_in_ctor",
            "break debugvis_local",
            "run",
            "bt",
            "continue",
            "bt",
            "info symbol $pc",
            "kill",
        ],
    );
    let range = image_range(&out);
    // The constructor ran after registration: its callee's breakpoint hit.
    assert_eq!(
        stopped_in(&out, 1).as_deref(),
        Some("debugvis_in_ctor"),
        "{out}"
    );
    // The static function, known only from .symtab, called from an export
    // called from the host.
    assert_eq!(
        stopped_in(&out, 2).as_deref(),
        Some("debugvis_local"),
        "{out}"
    );
    let second_bt = out.split("Breakpoint 2, ").nth(1).unwrap();
    let frames = frames(second_bt);
    assert_frame_in(&frames, "debugvis_local", Some(range));
    assert_eq!(frame_index(&frames, "debugvis_compute"), 1, "{frames:?}");
    assert_eq!(frame_index(&frames, "host_calls_compute"), 2, "{frames:?}");
    assert!(
        second_bt.contains("debugvis_local in section .text"),
        "{out}"
    );
}

#[test]
fn gdb_names_the_frames_of_a_crash_in_loaded_code() {
    if is_child() {
        return;
    }
    let out = gdb(
        "gdb_names_the_frames_of_a_crash_in_loaded_code",
        "crash",
        &["run", "bt", "kill"],
    );
    image_range(&out);
    assert!(out.contains("SIGSEGV"), "{out}");
    let frames = frames(&out);
    assert_eq!(
        frames.first().map(|f| f.1.as_str()),
        Some("debugvis_crash"),
        "{out}"
    );
    assert_eq!(frame_index(&frames, "host_calls_crash"), 1, "{frames:?}");
    if cfg!(feature = "debug-info") {
        // The file as the compiler was given it (test-dylibs/build.rs
        // compiles from that directory: `./debugvis.c`), line and argument.
        assert!(
            out.lines()
                .any(|l| l.starts_with("#0  debugvis_crash (p=0x0) at ")
                    && l.ends_with("debugvis.c:33")),
            "{out}"
        );
    }
}

/// lldb's JIT loader (off by default in lldb 14, hence the setting) reads
/// the same descriptor: the pending breakpoint resolves, is hit, and the
/// backtrace reaches the host caller.
#[test]
fn lldb_breaks_in_zlib_crc32_loaded_from_bytes() {
    if is_child() {
        return;
    }
    let test = "lldb_breaks_in_zlib_crc32_loaded_from_bytes";
    let out = Command::new("lldb")
        .args(["-b", "--no-lldbinit"])
        .args(["-o", "settings set plugin.jit-loader.gdb.enable on"])
        .args(["-o", "breakpoint set -n crc32"])
        .args(["-o", "run", "-o", "bt", "-o", "kill", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "zlib")
        .env_remove("MEMDL_PERF_MAP")
        .output()
        .unwrap_or_else(|e| panic!("running lldb (install it: .ci/run does): {e}"));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{out}");
    let (lo, hi) = image_range(&out);
    assert!(out.contains("stop reason = breakpoint 1.1"), "{out}");
    // `frame #0: 0x00007ffff7b967c0 JIT(0x...)`crc32`
    let frame0 = out
        .lines()
        .find(|l| l.contains("frame #0: "))
        .unwrap_or_else(|| panic!("no frame #0:\n{out}"));
    assert!(frame0.ends_with("`crc32"), "{frame0}");
    let pc = frame0
        .split("0x")
        .nth(1)
        .and_then(|h| u64::from_str_radix(&h[..16], 16).ok());
    assert!(pc.is_some_and(|pc| (lo..hi).contains(&pc)), "{frame0}");
    let frame1 = out
        .lines()
        .find(|l| l.contains("frame #1: "))
        .unwrap_or_else(|| panic!("no frame #1:\n{out}"));
    assert!(frame1.contains("host_calls_crc32"), "{frame1}");
}

#[test]
fn perf_report_names_adler32_loaded_from_bytes() {
    if is_child() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("perf.data");
    // About 5,000 samples a second: `adler32`, two instructions, gets some
    // 0.6% of them; at 999 a second that was ~6 samples, and a CI run once
    // got none.
    let out = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "4999", "-o"])
        .arg(&data)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "perf_report_names_adler32_loaded_from_bytes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "adler")
        .env("MEMDL_PERF_MAP", "1")
        .output()
        .unwrap_or_else(|e| panic!("running perf (install it: .ci/run does): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "perf record: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.split_once("memdl-pid ").map(|(_, p)| p))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid line: {stdout}"));
    let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let lines = std::fs::read_to_string(&map).unwrap_or_default();
    let report = Command::new("perf")
        .args(["report", "--stdio", "--sort", "sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&map);
    let report = String::from_utf8_lossy(&report.stdout);
    println!("{report}");
    assert!(
        lines.lines().any(|l| l.ends_with(" adler32")),
        "perf map lacks adler32:\n{lines}"
    );
    // Samples in loaded code are named: zlib's `adler32` (its own two
    // instructions, hot in the one-byte calls) and `adler32_z` (which it
    // jumps to, through its PLT, and which does the work over the large
    // buffer); together they are the hottest symbols.
    let symbols: Vec<(f64, &str)> = report
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (share, symbol) = l.split_once("[.] ")?;
            let share = share.trim().trim_end_matches('%').parse().ok()?;
            Some((share, symbol.trim()))
        })
        .collect();
    assert!(
        symbols
            .iter()
            .any(|&(share, s)| s == "adler32" && share > 0.0),
        "perf report does not name adler32:\n{report}"
    );
    let zlib: f64 = symbols
        .iter()
        .filter(|(_, s)| matches!(*s, "adler32" | "adler32_z"))
        .map(|(share, _)| share)
        .sum();
    assert!(zlib > 50.0, "adler32 and adler32_z take {zlib}%:\n{report}");
    assert!(lines.lines().any(|l| l.ends_with(" adler32_z")), "{lines}");
}
