//! A C program that uses the whole dlopen family (tests/c/main.c) prints
//! the same transcript with and without libmemdl_preload.so, and the log
//! shows memdl's custom loader loaded every test library.

mod common;

use std::path::Path;
use std::process::Output;

use common::{clean, gcc, memdl_command, preload_library};

const SOURCES: &[&str] = &[
    "main.c",
    "pa.c",
    "pa.map",
    "pb.c",
    "pc.c",
    "pd.c",
    "pe.c",
    "pg.c",
    "ph.c",
    "pi.c",
    "pj.c",
    "textrel.c",
];

/// Compiles the test libraries and the program into `dir`.
fn build(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    for f in SOURCES {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy a C source");
    }
    let lib = |out: &str, extra: &[&str]| {
        let mut args = vec!["-shared", "-fPIC", "-o", out];
        args.extend_from_slice(extra);
        gcc(dir, &args);
    };
    lib(
        "libpa.so",
        &[
            "pa.c",
            "-Wl,--version-script=pa.map",
            "-Wl,-soname,libpa.so",
        ],
    );
    lib("libpb.so", &["pb.c", "-L.", "-lpa", "-Wl,-soname,libpb.so"]);
    lib("libpc.so", &["pc.c"]);
    lib("libpd.so", &["pd.c"]);
    lib("libpe.so", &["pe.c"]);
    lib("libpg.so", &["pg.c"]);
    lib("libph.so", &["ph.c"]);
    lib("libtextrel.so", &["textrel.c", "-Wl,-z,notext"]);
    // Found by name only through a DT_RUNPATH: libpi's ($ORIGIN/sub) and
    // the program's ($ORIGIN/sub2).
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("sub2")).unwrap();
    lib("sub/libpj.so", &["pj.c", "-Wl,-soname,libpj.so"]);
    lib("sub2/libpk.so", &["pj.c", "-Wl,-soname,libpk.so"]);
    lib(
        "libpi.so",
        &["pi.c", "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/sub"],
    );
    gcc(
        dir,
        &[
            "-o",
            "main",
            "main.c",
            "-pthread",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/sub2",
        ],
    );
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(dir: &Path, extra: &[&str], env: &[(&str, &Path)], strict: bool) -> Output {
    let mut c = clean(dir.join("main"));
    c.arg(dir).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    if strict {
        c.env("MEMDL_PRELOAD_STRICT", "1");
    }
    c.output().expect("run the test program")
}

#[test]
fn same_transcript_with_and_without_memdl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let preload = preload_library();
    let log = dir.join("log");

    let plain = run(dir, &[], &[], false);
    assert!(plain.status.success(), "plain run: {plain:?}");
    let transcript = text(&plain);
    assert!(transcript.contains("\ndone\n"), "{transcript}");

    for strict in [false, true] {
        let _ = std::fs::remove_file(&log);
        let memdl = run(
            dir,
            &[],
            &[("LD_PRELOAD", &preload), ("MEMDL_PRELOAD_LOG", &log)],
            strict,
        );
        assert!(
            memdl.status.success(),
            "run with the preload (strict: {strict}): {memdl:?}"
        );
        assert_eq!(
            text(&memdl),
            transcript,
            "transcripts differ (strict: {strict})"
        );
        let log = std::fs::read_to_string(&log).expect("the log was written");
        let lines: Vec<&str> = log.lines().collect();
        for name in [
            "libpa", "libpb", "libpc", "libpd", "libpe", "libpg", "libph",
        ] {
            let line = format!("custom {}/{name}.so", dir.display());
            assert!(lines.contains(&line.as_str()), "no `{line}` in:\n{log}");
        }
        assert!(
            lines.iter().all(|l| l.starts_with("custom ")),
            "every library was loaded by memdl's loader:\n{log}"
        );
        // libpe is opened twice (it is unloaded in between), libph as
        // often as the threads' dlopen/dlclose cycles happen to unload it.
        assert!(lines.len() >= 8, "{log}");
    }
}

#[test]
fn refused_library_falls_back_or_fails_in_strict_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let preload = preload_library();
    let log = dir.join("log");
    let lib = format!("{}/libtextrel.so", dir.display());

    let plain = run(dir, &["textrel"], &[], false);
    assert_eq!(text(&plain), "textrel: textrel_fn = 5\n");

    // Fallback: the system loader loads it, and the log says why.
    let fallback = run(
        dir,
        &["textrel"],
        &[("LD_PRELOAD", &preload), ("MEMDL_PRELOAD_LOG", &log)],
        false,
    );
    assert_eq!(text(&fallback), text(&plain));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged,
        format!(
            "system {lib}: text relocations (DT_TEXTREL) are refused: they need writable code\n"
        )
    );

    // Strict: a dlopen failure with a dlerror message, logged as refused.
    std::fs::remove_file(&log).unwrap();
    let strict = run(
        dir,
        &["textrel"],
        &[("LD_PRELOAD", &preload), ("MEMDL_PRELOAD_LOG", &log)],
        true,
    );
    assert!(!strict.status.success());
    let out = text(&strict);
    assert!(
        out.starts_with(
            "textrel: dlopen failed: $DIR/libtextrel.so: memdl cannot load it (text relocations"
        ) && out.contains("MEMDL_PRELOAD_STRICT=1"),
        "{out}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.starts_with(&format!("refused {lib}: text relocations")),
        "{logged}"
    );
}

/// `memdl run` sets the environment the same way (when the workspace build
/// made the command).
#[test]
fn memdl_run_gives_the_same_transcript() {
    let Some(memdl) = memdl_command() else {
        eprintln!("memdl command not built (cargo test --workspace builds it): not tested here");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build(dir);
    let log = dir.join("log");
    let plain = run(dir, &[], &[], false);
    let out = clean(&memdl)
        .env("MEMDL_PRELOAD_LIB", preload_library())
        .args(["run", "--strict", "--log"])
        .arg(&log)
        .arg("--")
        .arg(dir.join("main"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out), text(&plain));
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.lines().count() >= 8 && log.lines().all(|l| l.starts_with("custom ")),
        "{log}"
    );
}
