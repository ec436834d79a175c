//! `memdl run`: runs a program with its `dlopen` family routed through
//! memdl (`libmemdl_preload.so` in `LD_PRELOAD`, issue 16).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::{CliResult, Failure};

/// The preload library's file name (`cargo build --release -p memdl-preload`).
pub const PRELOAD_NAME: &str = "libmemdl_preload.so";

#[derive(clap::Args)]
#[command(
    long_about = "Run PROGRAM with libmemdl_preload.so in LD_PRELOAD: the libraries it opens with \
        dlopen are loaded by memdl's custom loader. A library memdl refuses is loaded by the \
        system loader instead (and logged), unless --strict. Child processes inherit it.\n\n\
        The preload library is looked for next to this executable (cargo build --release \
        --workspace puts both in target/release/), or where MEMDL_PRELOAD_LIB says."
)]
pub struct Args {
    /// No fallback to the system loader: a library memdl refuses fails to
    /// open (MEMDL_PRELOAD_STRICT=1)
    #[arg(long)]
    strict: bool,
    /// Append one line per library opened to FILE: `custom <path>` or
    /// `system <path>: <reason>` (MEMDL_PRELOAD_LOG)
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The program and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    command: Vec<OsString>,
}

/// Where the preload library is: `MEMDL_PRELOAD_LIB`, else next to this
/// executable (or one directory up, for a test binary in `deps/`).
fn preload_library() -> CliResult<PathBuf> {
    if let Some(p) = std::env::var_os("MEMDL_PRELOAD_LIB") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Failure::new(format!(
                "MEMDL_PRELOAD_LIB={} is not a file",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(format!("cannot find this executable's path: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(PRELOAD_NAME), dir.join("..").join(PRELOAD_NAME)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            Failure::new(format!(
                "{PRELOAD_NAME} is not next to {} (build it with `cargo build --release -p \
                 memdl-preload`, or `cargo build --release --workspace` for both, or set \
                 MEMDL_PRELOAD_LIB)",
                exe.display()
            ))
        })
}

/// Execs the program; returns only on failure.
pub fn run(args: &Args) -> CliResult {
    let preload = preload_library()?;
    // Existing preloads keep working: ours goes first, so our dlopen is the
    // one the program's calls bind to.
    let mut ld_preload = preload.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(":");
        ld_preload.push(old);
    }
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Failure::new("a program to run is needed"))?;
    let mut command = std::process::Command::new(program);
    command.args(rest).env("LD_PRELOAD", ld_preload);
    if args.strict {
        command.env("MEMDL_PRELOAD_STRICT", "1");
    }
    if let Some(log) = &args.log {
        // Absolute, so that the program's chdir does not move the log.
        let log = std::path::absolute(log)
            .map_err(|e| Failure::new(format!("log file {}: {e}", log.display())))?;
        command.env("MEMDL_PRELOAD_LOG", log);
    }
    let e = command.exec();
    Err(Failure::new(format!(
        "cannot run {}: {e}",
        Path::new(program).display()
    )))
}
