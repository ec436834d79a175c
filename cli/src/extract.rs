//! `memdl extract FILE [--out DIR]`: find the ELF images inside a
//! container file (an archive, a model bundle, an APK-like blob) and
//! optionally write each one out.

use std::io::Write;
use std::path::PathBuf;

use crate::input::open_mapped;
use crate::{elfscan, inspect, CliResult, Failure};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The container file to search (mapped, not read into memory)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write each image found to DIR/<offset>.so (DIR is created if needed)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args, out: &mut dyn Write) -> CliResult {
    let (_file, map) = open_mapped(&args.file)?;
    let name = args.file.display();
    // Read ahead for one pass; a failed hint changes nothing but speed.
    let _ = map.advise(memmap2::Advice::Sequential);
    let found = elfscan::scan(&map);
    let plural = if found.len() == 1 { "" } else { "s" };
    writeln!(
        out,
        "{name} ({} bytes): {} ELF image{plural}",
        map.len(),
        found.len()
    )?;
    if found.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:>12} {:>12} {:>10}  {:<8} {:<12} soname",
        "offset", "(hex)", "size", "type", "machine"
    )?;
    for &(offset, probe) in &found {
        let bytes = &map[offset as usize..(offset + probe.extent) as usize];
        let soname = inspect::parse(bytes)
            .ok()
            .and_then(|elf| elf.soname.map(str::to_owned))
            .unwrap_or_else(|| "-".to_owned());
        writeln!(
            out,
            "  {offset:>12} {:>12} {:>10}  {:<8} {:<12} {soname}",
            format!("{offset:#x}"),
            probe.extent,
            inspect::type_name(probe.e_type),
            inspect::machine_name(probe.machine),
        )?;
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
        for &(offset, probe) in &found {
            let path = dir.join(format!("{offset}.so"));
            let bytes = &map[offset as usize..(offset + probe.extent) as usize];
            std::fs::write(&path, bytes)
                .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
            writeln!(out, "wrote {}", path.display())?;
        }
    } else {
        let (first, _) = found[0];
        writeln!(
            out,
            "load one in place with e.g.: memdl inspect {name}@{first}   (or --out DIR to write them out)"
        )?;
    }
    Ok(())
}
