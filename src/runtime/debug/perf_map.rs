//! `/tmp/perf-<pid>.map`: the symbol file Linux perf reads for samples in
//! anonymous executable memory (`tools/perf/Documentation/jit-interface.txt`):
//! one line per function, `START SIZE name`, START and SIZE in hexadecimal
//! without `0x`.
//!
//! **Append-only, not time-aware.** perf reads the whole file when it
//! reports, as one symbol table for the process's anonymous memory; it
//! does not know when a line was written. memdl cannot remove an unloaded
//! image's lines (other writers may share the file), and writes nothing at
//! unload. If a later image is mapped over an address range an unloaded
//! image used, both sets of lines stay: perf resolves two symbols with the
//! same start by its own preference (`choose_best_symbol` in
//! `tools/perf/util/symbol.c`: non-zero size, non-weak, global, fewer
//! leading underscores, then the longer name; all map lines are global),
//! and overlapping ranges with different starts to whichever its tree
//! finds: not the newest. Samples in a reused range can therefore carry a
//! stale name. A profiled run that must be exact keeps its images loaded
//! (or loads each once) while recording.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

/// The environment variable that turns the map on (value `1`).
pub(crate) const ENV: &str = "MEMDL_PERF_MAP";

/// Whether `MEMDL_PERF_MAP=1` is set.
pub(crate) fn env_enabled() -> bool {
    std::env::var_os(ENV).is_some_and(|v| v == "1")
}

/// The open map file and the process it was opened for (a forked child
/// has its own pid, so its own file).
static MAP: Mutex<Option<(u32, File)>> = Mutex::new(None);

/// The lines of `functions` (runtime start, size, name).
pub(crate) fn lines<'a>(functions: impl Iterator<Item = (u64, u64, &'a [u8])>) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for (start, size, name) in functions {
        let _ = write!(text, "{start:x} {size:x} ");
        // A name is the rest of its line: control characters would break it.
        for ch in String::from_utf8_lossy(name).chars() {
            text.push(if ch.is_control() { '?' } else { ch });
        }
        text.push('\n');
    }
    text
}

/// Appends `text` (map lines) in one `write` call. Errors (no `/tmp`, a
/// full disk) are ignored: profiling support must never make a load fail.
pub(crate) fn append(text: &str) {
    if text.is_empty() {
        return;
    }
    let pid = std::process::id();
    let mut map = MAP.lock().unwrap_or_else(|p| p.into_inner());
    if map.as_ref().is_none_or(|(p, _)| *p != pid) {
        let opened = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(format!("/tmp/perf-{pid}.map"));
        *map = opened.ok().map(|f| (pid, f));
    }
    if let Some((_, file)) = map.as_mut() {
        // O_APPEND: each write lands whole at the end, even with other
        // writers (a JIT in the same process) appending too.
        let _ = file.write_all(text.as_bytes());
    }
}
