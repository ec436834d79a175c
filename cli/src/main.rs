//! `memdl`: inspect ELF shared objects, compare memdl's loader with the
//! system loader on them, and find libraries embedded in container files.
//!
//! Every error is one line on stderr (`memdl: <message>`) and exit code 1.
//! A subcommand is one variant of [`Command`] plus one module with an
//! `Args` struct and a `run` function.

mod bench;
mod check;
mod compare;
mod elfscan;
mod extract;
mod input;
mod inspect;
mod run;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "memdl",
    version,
    about = "Load ELF shared objects from memory: inspect, compare backends, extract",
    long_about = "Load ELF shared objects from memory: inspect, compare backends, extract.\n\n\
        FILE may be PATH@OFFSET (decimal or 0x hex) to address an ELF embedded in a \
        larger file; a suffix after the last '@' that is not a number is part of the path.\n\n\
        Loading a library runs its initialisers: only give it libraries you would dlopen."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segments, dynamic entries, relocations, exports, and whether memdl can load it
    Inspect(inspect::Args),
    /// Load with both backends, check they agree on every export, time them
    Compare(compare::Args),
    /// List (and optionally write out) the ELF images inside a container file
    Extract(extract::Args),
    /// Time memdl against dlopen, the system backend and the floor (load, lookup, faults)
    Bench(bench::BenchArgs),
    /// Run a program with its dlopen calls loaded by memdl (LD_PRELOAD)
    Run(run::Args),
    /// Load every shared object under the paths with both loaders (each in a child
    /// process) and list the libraries where they disagree
    Check(check::Args),
    /// One child of `check` (internal)
    #[command(hide = true)]
    CheckOne(check::OneArgs),
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// A message for the user, printed as `memdl: <message>`.
    Message(String),
    /// Our stdout was closed (e.g. piped into `head`): stop quietly.
    BrokenPipe,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure::Message(message.into())
    }
}

/// Only writes to stdout are converted implicitly; every other I/O error is
/// given its context (which file, which step) where it happens.
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Message(format!("writing output: {e}"))
        }
    }
}

pub type CliResult<T = ()> = Result<T, Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args, &mut out),
        Command::Compare(args) => compare::run(&args, &mut out),
        Command::Extract(args) => extract::run(&args, &mut out),
        Command::Bench(args) => bench::run(args).map_err(Failure::new),
        Command::Run(args) => run::run(&args),
        Command::Check(args) => check::run(&args, &mut out),
        Command::CheckOne(args) => check::run_one(&args),
    };
    let result = result.and_then(|()| out.flush().map_err(Failure::from));
    match result {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Message(m)) => {
            // Nothing useful is left to do if stderr is gone too.
            let _ = writeln!(io::stderr(), "memdl: {}", one_line(&m));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as usual; a usage error becomes one line.
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            let _ = writeln!(
                io::stderr(),
                "memdl: a subcommand is needed: inspect, compare, extract, bench, check or run (see memdl --help)"
            );
            ExitCode::FAILURE
        }
        _ => {
            // clap's first paragraph is the error itself (it may wrap onto
            // a second line, e.g. the names of missing arguments).
            let rendered = e.render().to_string();
            let first_paragraph = rendered
                .trim_start()
                .split("\n\n")
                .next()
                .unwrap_or("invalid arguments");
            let message = first_paragraph
                .strip_prefix("error: ")
                .unwrap_or(first_paragraph);
            let _ = writeln!(
                io::stderr(),
                "memdl: {} (see memdl --help)",
                one_line(message)
            );
            ExitCode::FAILURE
        }
    }
}

/// Error texts (e.g. from `dlerror`) could carry newlines; the contract is
/// one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
