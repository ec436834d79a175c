//! What the preload tests share: where the build put the preload library
//! (and the `memdl` command, when the workspace built it), and gcc.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>/, from this test executable (target/<profile>/deps/x).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The preload library cargo built for these tests: in deps/ (where a
/// build as a dependency of the tests leaves it, fresh), else next to it.
pub fn preload_library() -> PathBuf {
    let dir = profile_dir();
    [dir.join("deps"), dir.clone()]
        .iter()
        .map(|d| d.join("libmemdl_preload.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libmemdl_preload.so is in neither {0}/deps nor {0}: cargo builds it with the \
                 package (cargo test -p memdl-preload)",
                dir.display()
            )
        })
}

/// The `memdl` command, if the workspace build made it (`cargo test
/// --workspace` does).
pub fn memdl_command() -> Option<PathBuf> {
    Some(profile_dir().join("memdl")).filter(|p| p.is_file())
}

/// Runs gcc with `args` in `dir`, panicking with its output on failure.
pub fn gcc(dir: &Path, args: &[&str]) {
    let out = Command::new("gcc")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("gcc runs (install gcc: .ci/run does)");
    assert!(
        out.status.success(),
        "gcc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command without any preload or memdl-preload settings inherited.
pub fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_remove("LD_PRELOAD")
        .env_remove("MEMDL_PRELOAD_STRICT")
        .env_remove("MEMDL_PRELOAD_LOG");
    c
}
