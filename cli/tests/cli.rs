//! The `memdl` command-line tool, run as a user runs it: compare on the
//! built-in example and a machine library, inspect, extract from a
//! container, FILE@OFFSET addressing, and one-line errors on bad input.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../tests/common/mod.rs"]
mod common;

/// Exit code, stdout and stderr of one run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn memdl<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_memdl"))
        .args(args)
        .output()
        .expect("run memdl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_success(r: &Run) {
    assert_eq!(
        r.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stderr, "", "no diagnostics on success");
}

/// Exit 1, exactly one stderr line `memdl: ...` containing `needle`, and
/// no panic.
fn assert_one_line_error(r: &Run, needle: &str) {
    assert_eq!(
        r.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one stderr line: {:?}", r.stderr);
    assert!(lines[0].starts_with("memdl: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const RELATIVE: &str = "R_X86_64_RELATIVE: ";
    pub const ABSOLUTE: &str = "R_X86_64_64: ";
    pub const JUMP_SLOT: &str = "R_X86_64_JUMP_SLOT: ";
    pub const MACHINE: &str = "EM_X86_64";
}
#[cfg(target_arch = "aarch64")]
mod arch {
    pub const RELATIVE: &str = "R_AARCH64_RELATIVE: ";
    pub const ABSOLUTE: &str = "R_AARCH64_ABS64: ";
    pub const JUMP_SLOT: &str = "R_AARCH64_JUMP_SLOT: ";
    pub const MACHINE: &str = "EM_AARCH64";
}

/// The example's exports (test-dylibs/example.c).
const EXAMPLE_EXPORTS: &[&str] = &[
    "add",
    "answer",
    "apply",
    "bump",
    "checksum",
    "counter",
    "counter_ptr",
    "fib",
    "get_counter",
    "mul",
    "op_name",
    "ops",
    "set_counter",
    "sub",
];

fn zlib() -> PathBuf {
    common::machine_lib_path("libz.so.1")
}

fn path_at(path: &Path, offset: u64) -> String {
    format!("{}@{offset}", path.display())
}

/// Number of the `relocations`-section line `name: N`.
fn count_after(text: &str, prefix: &str) -> u64 {
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"));
    line.trim().parse().unwrap()
}

#[test]
fn compare_without_a_file_uses_the_built_in_example() {
    let r = memdl(["compare", "--runs", "3"]);
    assert_success(&r);
    assert!(
        r.stdout.contains("built-in example libexample.so"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "both backends agree on all {} symbols",
            EXAMPLE_EXPORTS.len()
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("timings (median of 3 runs)"),
        "{}",
        r.stdout
    );
    for row in ["load + drop", "lookup (per symbol)"] {
        let line = r.stdout.lines().find(|l| l.contains(row)).unwrap();
        let times = line
            .split_whitespace()
            .filter(|w| matches!(*w, "ns" | "µs" | "ms"))
            .count();
        assert_eq!(times, 2, "a time per backend: {line}");
    }
}

#[test]
fn compare_agrees_on_zlib() {
    let r = memdl([
        OsStr::new("compare"),
        zlib().as_os_str(),
        OsStr::new("--runs"),
        OsStr::new("2"),
    ]);
    assert_success(&r);
    assert!(r.stdout.contains("libz.so.1"), "{}", r.stdout);
    assert!(
        r.stdout.contains("both backends agree on all"),
        "{}",
        r.stdout
    );
    // zlib's version names are absolute symbols: reported, not compared.
    assert!(r.stdout.contains("absolute symbols"), "{}", r.stdout);
}

#[test]
fn inspect_example_shows_relocations_exports_and_loads() {
    let r = memdl([common::test_lib_path("example")]);
    // No subcommand given with a path: a usage error, one line.
    assert_one_line_error(&r, "subcommand");

    let r = memdl([
        OsStr::new("inspect"),
        common::test_lib_path("example").as_os_str(),
    ]);
    assert_success(&r);
    let out = &r.stdout;
    assert!(out.contains(&format!("ET_DYN, {}", arch::MACHINE)), "{out}");
    assert!(out.contains("soname    (none)"), "{out}");
    assert!(out.contains("needed    (none)"), "{out}");
    // example.c: three pointers to local strings, four to exported symbols.
    assert!(count_after(out, arch::RELATIVE) >= 3, "{out}");
    assert!(count_after(out, arch::ABSOLUTE) >= 4, "{out}");
    assert!(out.contains("PT_LOAD"), "{out}");
    assert!(out.contains("r-x"), "{out}");
    assert!(out.contains("DT_SYMTAB"), "{out}");
    assert!(
        out.contains(&format!("exports ({}):", EXAMPLE_EXPORTS.len())),
        "{out}"
    );
    for name in EXAMPLE_EXPORTS {
        assert!(
            out.lines().any(|l| l.ends_with(&format!("  {name}"))),
            "export {name} missing:\n{out}"
        );
    }
    assert!(out.contains("load: yes, memdl loads it"), "{out}");
}

#[test]
fn inspect_zlib_lists_needed_and_limits_exports_unless_all() {
    let r = memdl([OsStr::new("inspect"), zlib().as_os_str()]);
    assert_success(&r);
    assert!(r.stdout.contains("soname    libz.so.1"), "{}", r.stdout);
    assert!(r.stdout.contains("needed    libc.so.6"), "{}", r.stdout);
    assert!(
        r.stdout.contains("DT_NEEDED            libc.so.6"),
        "{}",
        r.stdout
    );
    assert!(count_after(&r.stdout, arch::JUMP_SLOT) > 0);
    assert!(
        r.stdout.contains("first 20 shown; --all for all"),
        "{}",
        r.stdout
    );
    let listed = |text: &str| text.lines().filter(|l| l.starts_with("  FUNC ")).count();
    assert!(listed(&r.stdout) <= 20);

    let all = memdl([
        OsStr::new("inspect"),
        zlib().as_os_str(),
        OsStr::new("--all"),
    ]);
    assert_success(&all);
    assert!(listed(&all.stdout) > 80, "{}", all.stdout);
    for name in ["crc32", "inflateEnd", "deflate", "zlibVersion"] {
        assert!(
            all.stdout
                .lines()
                .any(|l| l.ends_with(&format!("  {name}"))),
            "{name} missing"
        );
    }
}

/// A container: junk (with false `\x7fELF` starts), the example at an odd
/// offset, zlib at a page-aligned offset, uselibc at a page-aligned offset
/// plus 3, junk tail. Returns (dir, container path, [(offset, bytes)]).
fn container() -> (tempfile::TempDir, PathBuf, Vec<(u64, Vec<u8>)>) {
    let page = common::page_size() as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.bin");
    let mut data = b"model header\x7fELF not really\x00\x7fELF\x02\x01\x01".to_vec();
    data.resize(1001, 0x5a);
    let mut images = Vec::new();
    let mut put = |data: &mut Vec<u8>, bytes: Vec<u8>| {
        images.push((data.len() as u64, bytes.clone()));
        data.extend_from_slice(&bytes);
    };
    put(&mut data, common::test_lib("example"));
    data.extend_from_slice(b"\x7fEL\x7fELF");
    data.resize(data.len().next_multiple_of(page), 0xa5);
    put(&mut data, common::machine_lib("libz.so.1"));
    data.resize(data.len().next_multiple_of(page) + 3, 0);
    put(&mut data, common::test_lib("uselibc"));
    data.extend_from_slice(b"tail junk \x7fELF");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    (dir, path, images)
}

/// The (offset, size) rows of `memdl extract` output.
fn extract_rows(stdout: &str) -> Vec<(u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let offset = f.next()?.parse().ok()?;
            let _hex = f.next()?;
            let size = f.next()?.parse().ok()?;
            Some((offset, size))
        })
        .collect()
}

#[test]
fn extract_finds_exactly_the_embedded_libraries() {
    let (dir, path, images) = container();
    let r = memdl([OsStr::new("extract"), path.as_os_str()]);
    assert_success(&r);
    let expected: Vec<(u64, u64)> = images.iter().map(|(o, b)| (*o, b.len() as u64)).collect();
    assert_eq!(extract_rows(&r.stdout), expected, "{}", r.stdout);
    assert!(r.stdout.contains("3 ELF images"), "{}", r.stdout);
    assert!(r.stdout.contains("libz.so.1"), "{}", r.stdout);
    assert!(r.stdout.contains(arch::MACHINE), "{}", r.stdout);

    let out_dir = dir.path().join("out");
    let r = memdl([
        OsStr::new("extract"),
        path.as_os_str(),
        OsStr::new("--out"),
        out_dir.as_os_str(),
    ]);
    assert_success(&r);
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut names: Vec<String> = images.iter().map(|(o, _)| format!("{o}.so")).collect();
    names.sort();
    assert_eq!(written, names);
    for (offset, bytes) in &images {
        let got = std::fs::read(out_dir.join(format!("{offset}.so"))).unwrap();
        assert!(&got == bytes, "image at {offset} differs from the original");
    }
}

#[test]
fn extract_of_a_file_without_images_finds_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.bin");
    std::fs::write(&path, b"\x7fELF\x01 short junk \x7fELF").unwrap();
    let r = memdl([OsStr::new("extract"), path.as_os_str()]);
    assert_success(&r);
    assert!(r.stdout.contains("0 ELF images"), "{}", r.stdout);
    assert!(extract_rows(&r.stdout).is_empty());
}

#[test]
fn inspect_and_compare_an_embedded_library() {
    let (_dir, path, images) = container();
    let (example_at, _) = &images[0];
    let (zlib_at, zlib_bytes) = &images[1];

    // Page-aligned: segments are mapped from the container.
    let r = memdl([OsStr::new("inspect"), OsStr::new(&path_at(&path, *zlib_at))]);
    assert_success(&r);
    assert!(
        r.stdout.starts_with(&format!(
            "{}@{zlib_at:#x} ({} bytes)",
            path.display(),
            zlib_bytes.len()
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("soname    libz.so.1"), "{}", r.stdout);
    let verdict = r.stdout.lines().find(|l| l.starts_with("load: ")).unwrap();
    assert!(verdict.starts_with("load: yes"), "{verdict}");
    assert!(!verdict.contains(" 0 mapped from the file"), "{verdict}");

    // Unaligned: the same facts, segments copied.
    let hex = format!("{}@{example_at:#x}", path.display());
    let r = memdl(["inspect", hex.as_str()]);
    assert_success(&r);
    assert!(r
        .stdout
        .contains(&format!("exports ({})", EXAMPLE_EXPORTS.len())));
    let verdict = r.stdout.lines().find(|l| l.starts_with("load: ")).unwrap();
    assert!(verdict.contains(" 0 mapped from the file"), "{verdict}");

    // --offset is the same as @OFFSET.
    let r2 = memdl([
        OsStr::new("inspect"),
        path.as_os_str(),
        OsStr::new("--offset"),
        OsStr::new(&format!("{example_at}")),
    ]);
    assert_success(&r2);
    let without_verdict = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("load: ") && !l.contains('@'))
            .collect()
    };
    assert_eq!(without_verdict(&r.stdout), without_verdict(&r2.stdout));

    for (offset, _) in &images[..2] {
        let r = memdl([
            OsStr::new("compare"),
            OsStr::new(&path_at(&path, *offset)),
            OsStr::new("--runs"),
            OsStr::new("2"),
        ]);
        assert_success(&r);
        assert!(
            r.stdout.contains("both backends agree on all"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn an_at_suffix_that_is_not_a_number_is_part_of_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("lib@v2.so");
    std::fs::copy(common::test_lib_path("example"), &named).unwrap();
    let r = memdl([OsStr::new("inspect"), named.as_os_str()]);
    assert_success(&r);
    assert!(r.stdout.contains("load: yes"), "{}", r.stdout);

    let missing = dir.path().join("lib@abc");
    let r = memdl([OsStr::new("inspect"), missing.as_os_str()]);
    assert_one_line_error(&r, "lib@abc: No such file");
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, [0x3cu8; 4000]).unwrap();
    let truncated = dir.path().join("truncated.so");
    std::fs::write(&truncated, &common::machine_lib("libz.so.1")[..300]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let zlib_len = std::fs::metadata(zlib()).unwrap().len();
    let missing = dir.path().join("missing.so");

    for command in ["inspect", "compare"] {
        let r = memdl([OsStr::new(command), missing.as_os_str()]);
        assert_one_line_error(&r, "missing.so: No such file");
        let r = memdl([OsStr::new(command), garbage.as_os_str()]);
        assert_one_line_error(&r, "garbage.bin");
        let r = memdl([OsStr::new(command), truncated.as_os_str()]);
        assert_one_line_error(&r, "truncated.so");
        let r = memdl([OsStr::new(command), empty.as_os_str()]);
        assert_one_line_error(&r, "empty");
        let past = path_at(&zlib(), zlib_len + 5);
        let r = memdl([command, past.as_str()]);
        assert_one_line_error(&r, "past the end");
        // An offset inside the file where no ELF starts.
        let inside = path_at(&zlib(), 100);
        let r = memdl([command, inside.as_str()]);
        assert_one_line_error(&r, "no ELF image at offset 100");
        // A length that runs past the end.
        let r = memdl([
            OsStr::new(command),
            zlib().as_os_str(),
            OsStr::new("--len"),
            OsStr::new(&format!("{}", zlib_len + 1)),
        ]);
        assert_one_line_error(&r, "past the end");
        let r = memdl([
            OsStr::new(command),
            zlib().as_os_str(),
            OsStr::new("--offset"),
            OsStr::new("ten"),
        ]);
        assert_one_line_error(&r, "not a number");
    }
    let r = memdl([OsStr::new("extract"), missing.as_os_str()]);
    assert_one_line_error(&r, "missing.so");
    let r = memdl([OsStr::new("extract"), dir.path().as_os_str()]);
    assert_one_line_error(&r, "not a regular file");
    let r = memdl(["frobnicate"]);
    assert_one_line_error(&r, "frobnicate");
    let r = memdl(["inspect"]);
    assert_one_line_error(&r, "<FILE>");
    let r = memdl(["compare", "--runs", "0"]);
    assert_one_line_error(&r, "--runs");
}

#[test]
fn inspect_reports_why_memdl_cannot_load_a_library() {
    // The example with its code segment made writable too: still a
    // readable ELF, but memdl never maps a segment writable and executable.
    let mut bytes = common::test_lib("example");
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(bytes[56..58].try_into().unwrap()) as usize;
    let code = (0..phnum)
        .map(|i| phoff + i * 56)
        .find(|&ph| {
            let p_type = u32::from_le_bytes(bytes[ph..ph + 4].try_into().unwrap());
            let flags = u32::from_le_bytes(bytes[ph + 4..ph + 8].try_into().unwrap());
            p_type == 1 && flags & 1 != 0
        })
        .expect("an executable PT_LOAD");
    bytes[code + 4] |= 2; // PF_W
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wx.so");
    std::fs::write(&path, &bytes).unwrap();

    let r = memdl([OsStr::new("inspect"), path.as_os_str()]);
    assert_success(&r);
    assert!(r.stdout.contains("rwx"), "{}", r.stdout);
    let verdict = r.stdout.lines().find(|l| l.starts_with("load: ")).unwrap();
    assert!(
        verdict.starts_with("load: no, memdl cannot load it: program header")
            && verdict.contains("writable and executable"),
        "{verdict}"
    );
    let r = memdl([OsStr::new("compare"), path.as_os_str()]);
    assert_one_line_error(&r, "memdl's loader cannot load");
}

#[test]
fn inspect_counts_packed_relative_relocations() {
    let libc = common::machine_lib_path("libc.so.6");
    let r = memdl([OsStr::new("inspect"), libc.as_os_str()]);
    assert_success(&r);
    let out = &r.stdout;
    let packed = format!(
        "{} (packed, DT_RELR): ",
        arch::RELATIVE.trim_end_matches(": ")
    );
    let has_relr = out.lines().any(|l| l.trim_start().starts_with("DT_RELR "));
    // This machine's glibc is linked with -z pack-relative-relocs.
    #[cfg(target_arch = "x86_64")]
    assert!(has_relr, "{out}");
    if has_relr {
        assert!(count_after(out, &packed) > 100, "{out}");
    }
    // The total is the sum of the rows.
    let total: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("relocations ("))
        .and_then(|l| l.strip_suffix("):"))
        .unwrap()
        .parse()
        .unwrap();
    let rows: u64 = out
        .lines()
        .filter(|l| l.starts_with("  R_"))
        .filter_map(|l| l.rsplit(": ").next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, rows, "{out}");
}

/// `memdl check DIR`: the libraries under DIR loaded by memdl and by
/// dlopen in child processes. Agreeing ones (a test library, zlib, a
/// truncated library both refuse) pass; libc is skipped with its reason; a
/// file that is no library is not counted; a library the system loader
/// takes and memdl refuses (a writable and executable segment) is a
/// disagreement, named, with exit code 1.
#[test]
fn check_compares_every_library_under_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, name: &str| std::fs::copy(from, dir.path().join(name)).unwrap();
    copy(&common::test_lib_path("example"), "libexample.so");
    copy(&zlib(), "libz.so.1");
    copy(&common::machine_lib_path("libc.so.6"), "libc.so.6");
    let zlib_bytes = std::fs::read(zlib()).unwrap();
    std::fs::write(dir.path().join("libtruncated.so"), &zlib_bytes[..4096]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a library").unwrap();

    let r = memdl([
        OsStr::new("check"),
        OsStr::new("-v"),
        dir.path().as_os_str(),
    ]);
    assert_success(&r);
    assert!(
        r.stdout
            .contains("checked 4 libraries: 3 agree, 0 disagree, 1 skipped"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("libexample.so: both load"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("libtruncated.so: neither loads"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("skip ") && r.stdout.contains("libc.so.6"),
        "{}",
        r.stdout
    );

    // A writable and executable segment: glibc maps it, memdl refuses.
    let source = dir.path().join("wx.c");
    std::fs::write(&source, "int bump(int x) { return x + 1; }\n").unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(cc)
        .args(["-shared", "-fPIC", "-O2", "-nostdlib", "-Wl,-N", "-o"])
        .arg(dir.path().join("libwx.so"))
        .arg(&source)
        .output()
        .expect("run the C compiler");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let r = memdl([OsStr::new("check"), dir.path().as_os_str()]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("libwx.so: only the system loader loads it"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 disagree"), "{}", r.stdout);
}
