//! The C API from C and C++: tests/c/test_capi.c linked statically and
//! against libmemdl.so, under valgrind, the header compiled as C++, the
//! container example (examples/c/) run, and memdl.pc's link line checked.
//!
//! Cargo does not build a staticlib/cdylib for a package's integration
//! tests, so the first test to need them runs `cargo build -p memdl-capi`
//! (same profile, same target directory: a no-op when already built). The
//! C compilers and valgrind must be installed: a missing tool fails the
//! test, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What every test needs, built once per test binary.
struct Setup {
    /// Where libmemdl.a and libmemdl.so are (target/<profile>).
    lib_dir: PathBuf,
    /// This test binary's scratch directory.
    tmp: PathBuf,
    tiny: PathBuf,
    sandboxed: PathBuf,
    container: PathBuf,
}

fn capi_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`, failing the test with its output unless it succeeds;
/// returns its standard output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // This binary is target/<profile>/deps/c_api-<hash>.
        let exe = std::env::current_exe().expect("test binary path");
        let lib_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let profile = lib_dir
            .file_name()
            .and_then(|p| p.to_str())
            .expect("profile");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "memdl-capi", "--target-dir"])
            .arg(lib_dir.parent().expect("target directory"))
            .current_dir(capi_dir());
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        run(&mut build);
        for lib in ["libmemdl.a", "libmemdl.so"] {
            assert!(lib_dir.join(lib).is_file(), "no {lib} in {lib_dir:?}");
        }

        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("memdl-capi");
        std::fs::create_dir_all(&tmp).unwrap();
        // Test libraries without libc: nothing to resolve but what the test
        // means (the sandboxed one imports host_log and host_scale).
        let lib = |name: &str| {
            let out = tmp.join(format!("lib{name}.so"));
            run(Command::new("gcc")
                .args(["-shared", "-fPIC", "-nostdlib", "-O2", "-o"])
                .arg(&out)
                .arg(capi_dir().join(format!("tests/c/{name}.c"))));
            out
        };
        let tiny = lib("tiny");
        let sandboxed = lib("sandboxed");
        // A container as IREE's: a 43-byte header, then the library at that
        // unaligned offset.
        let mut container = b"container v1: one library follows".to_vec();
        container.resize(43, b'.');
        container.extend(std::fs::read(&tiny).unwrap());
        let container_path = tmp.join("container.bin");
        std::fs::write(&container_path, container).unwrap();
        Setup {
            lib_dir: lib_dir.to_path_buf(),
            tmp,
            tiny,
            sandboxed,
            container: container_path,
        }
    })
}

/// The link line memdl.pc gives for the static library's dependencies.
fn pc_field(field: &str) -> String {
    let pc = std::fs::read_to_string(capi_dir().join("memdl.pc")).unwrap();
    pc.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("memdl.pc has no {field}"))
        .trim()
        .to_string()
}

/// gcc with the warnings the C test is held to, and the header's directory.
fn cc_strict() -> Command {
    let mut cc = Command::new("gcc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
        .arg(capi_dir().join("include"));
    cc
}

/// tests/c/test_capi.c linked statically or not, built once (tests run in
/// parallel; two building the same file would run it half-written).
fn c_test(static_link: bool) -> &'static Path {
    static BUILT: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[static_link as usize].get_or_init(|| build_c_test(static_link))
}

/// Builds tests/c/test_capi.c; `static_link` chooses libmemdl.a over .so.
fn build_c_test(static_link: bool) -> PathBuf {
    let s = setup();
    let exe = s.tmp.join(if static_link {
        "test_capi_static"
    } else {
        "test_capi_shared"
    });
    let mut cc = cc_strict();
    cc.arg(capi_dir().join("tests/c/test_capi.c"))
        .arg("-o")
        .arg(&exe);
    if static_link {
        cc.arg(s.lib_dir.join("libmemdl.a"));
        cc.args(pc_field("Libs.private:").split_whitespace());
    } else {
        cc.arg("-L").arg(&s.lib_dir).arg("-lmemdl");
        cc.arg(format!("-Wl,-rpath,{}", s.lib_dir.display()));
        cc.arg("-pthread");
    }
    run(&mut cc);
    let dynamic = run(Command::new("readelf").arg("-d").arg(&exe));
    assert_eq!(
        dynamic.contains("[libmemdl.so]"),
        !static_link,
        "{exe:?} NEEDED entries:\n{dynamic}"
    );
    exe
}

fn run_c_test(exe: &Path, wrapper: &[&str], cycles: u32) -> String {
    let s = setup();
    let mut cmd = Command::new(wrapper.first().copied().unwrap_or(exe.to_str().unwrap()));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(exe);
    }
    cmd.arg(&s.tiny)
        .arg(&s.sandboxed)
        .arg(&s.container)
        .arg(cycles.to_string());
    let out = run(&mut cmd);
    assert!(out.contains(", 0 failed"), "{out}");
    out
}

#[test]
fn c_test_program_linked_statically() {
    let exe = c_test(true);
    run_c_test(exe, &[], 50);
}

#[test]
fn c_test_program_linked_against_the_shared_library() {
    let exe = c_test(false);
    run_c_test(exe, &[], 50);
}

#[test]
fn c_test_program_under_valgrind_leaks_nothing() {
    let exe = c_test(true);
    // Definite leaks and memory errors fail (exit code 1); repeated
    // load/close cycles of both backends make a per-load leak definite.
    run_c_test(
        exe,
        &[
            "valgrind",
            "--quiet",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=1",
        ],
        30,
    );
}

#[test]
fn shared_library_exports_only_the_c_api_under_its_soname() {
    let s = setup();
    let so = s.lib_dir.join("libmemdl.so");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&so));
    assert!(
        dynamic.contains("Library soname: [libmemdl.so]"),
        "{dynamic}"
    );
    let symbols = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    let exported: Vec<&str> = symbols
        .lines()
        .filter(|l| l.contains(" T "))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let header = std::fs::read_to_string(capi_dir().join("include/memdl.h")).unwrap();
    // Besides the C API, the GDB JIT interface's hook (memdl's default
    // debugger registration; gdb and lldb find it by this name).
    for name in exported
        .iter()
        .filter(|&&n| n != "__jit_debug_register_code")
    {
        assert!(name.starts_with("memdl_"), "{name} exported: {exported:?}");
        assert!(
            header.contains(&format!("{name}(")),
            "{name} not in memdl.h"
        );
    }
    assert!(exported.contains(&"memdl_load_fd"), "{exported:?}");
}

#[test]
fn header_compiles_as_cxx() {
    let s = setup();
    run(Command::new("g++")
        .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-c", "-I"])
        .arg(capi_dir().join("include"))
        .arg(capi_dir().join("tests/c/cxx_include.cpp"))
        .arg("-o")
        .arg(s.tmp.join("cxx_include.o")));
}

#[test]
fn container_example_finds_loads_and_calls() {
    let s = setup();
    let example = capi_dir().join("../examples/c/load_from_container.c");
    let exe = s.tmp.join("load_from_container");
    run(cc_strict()
        .arg(&example)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&s.lib_dir)
        .arg("-lmemdl")
        .arg(format!("-Wl,-rpath,{}", s.lib_dir.display())));
    // The example's container has bytes after the library too, and a false
    // magic before it.
    let mut container = b"IREE-like header \x7fELF (not one) 0123456789".to_vec();
    let offset = container.len();
    let tiny = std::fs::read(&s.tiny).unwrap();
    container.extend(&tiny);
    container.extend(b"trailing metadata of the container");
    let path = s.tmp.join("example-container.bin");
    std::fs::write(&path, container).unwrap();
    let out = run(Command::new(&exe).arg(&path));
    assert!(
        out.contains(&format!(
            "found a {}-byte ELF image at offset {offset}",
            tiny.len()
        )),
        "{out}"
    );
    assert!(out.contains("add(2, 3) = 5"), "{out}");
    let out = run(Command::new(&exe).arg(&path).arg("sub"));
    assert!(out.contains("sub(2, 3) = -1"), "{out}");
}

#[test]
fn pkg_config_file_names_rustcs_native_static_libs() {
    let s = setup();
    // libmemdl.a needs what the standard library needs (memdl and libc
    // add only -lc, which it includes): ask rustc for an empty staticlib.
    let src = s.tmp.join("empty.rs");
    std::fs::write(&src, "").unwrap();
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args([
            "--crate-type",
            "staticlib",
            "--print",
            "native-static-libs",
            "-o",
        ])
        .arg(s.tmp.join("libempty.a"))
        .arg(&src)
        .output()
        .expect("rustc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let libs = stderr
        .lines()
        .find_map(|l| l.split("native-static-libs: ").nth(1))
        .unwrap_or_else(|| panic!("no native-static-libs in:\n{stderr}"));
    assert_eq!(
        pc_field("Libs.private:"),
        libs.trim(),
        "update capi/memdl.pc"
    );
    assert_eq!(pc_field("Version:"), env!("CARGO_PKG_VERSION"));
}
