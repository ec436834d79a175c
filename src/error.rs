//! The one error type of the crate.
//!
//! Every variant names what was wrong and, where it helps, where: a loader
//! error that only says "invalid ELF" sends its user to a hex editor.

use std::io;

/// Everything that can go wrong while loading an image or looking up a symbol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the file itself -------------------------------------------------
    /// The input ends before a structure that must be there.
    #[error("truncated input: {what} needs bytes {offset:#x}..+{size:#x} but the input is {len:#x} bytes")]
    Truncated {
        /// The structure that does not fit.
        what: &'static str,
        /// Its offset in the input.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The input's length in bytes.
        len: u64,
    },
    /// The first four bytes are not `\x7fELF`.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// `EI_CLASS` is not `ELFCLASS64`.
    #[error("unsupported ELF class {0} (only 64-bit ELF is supported)")]
    UnsupportedClass(u8),
    /// `EI_DATA` is not little-endian.
    #[error("unsupported data encoding {0} (only little-endian is supported)")]
    UnsupportedEncoding(u8),
    /// `EI_VERSION` / `e_version` is not `EV_CURRENT`.
    #[error("unsupported ELF version {0}")]
    UnsupportedVersion(u32),
    /// `e_type` is not `ET_DYN`.
    #[error("ELF type {0} is not a shared object (ET_DYN)")]
    NotSharedObject(u16),
    /// `e_machine` is not this process's architecture.
    #[error("ELF machine {found} does not match this process's machine {expected}")]
    WrongMachine {
        /// The file's `e_machine`.
        found: u16,
        /// This process's `e_machine`.
        expected: u16,
    },
    /// `e_phentsize` is not the size of an `Elf64_Phdr`.
    #[error("program header entry size {0} is not 56")]
    BadProgramHeaderSize(u16),
    /// `e_phnum` is zero (or the extended-numbering escape value).
    #[error("bad program header count {0}")]
    BadProgramHeaderCount(u16),
    /// A program header is inconsistent; `reason` says how.
    #[error("program header {index} ({kind}): {reason}")]
    BadSegment {
        /// Index of the program header in the file.
        index: usize,
        /// Its type (`PT_LOAD`, `PT_DYNAMIC`, ...).
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file has no `PT_LOAD` segment.
    #[error("no PT_LOAD segment")]
    NoLoadSegments,
    /// The file has no `PT_DYNAMIC` segment.
    #[error("no PT_DYNAMIC segment")]
    NoDynamicSegment,
    /// A segment asks to be writable and executable at once.
    #[error("program header {index} is writable and executable (W^X is never granted)")]
    WritableAndExecutable {
        /// Index of the program header in the file.
        index: usize,
    },
    /// The object needs relocations in its text (`DT_TEXTREL`).
    #[error("text relocations (DT_TEXTREL) are refused: they need writable code")]
    TextRelocations,
    /// The dynamic array is malformed; `reason` says how.
    #[error("dynamic section: {reason}")]
    BadDynamic {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A table named by the dynamic section does not lie inside one loaded,
    /// readable segment.
    #[error("{table} at {addr:#x}..+{size:#x} is not inside a loaded segment")]
    TableOutOfBounds {
        /// The table (`DT_SYMTAB`, `DT_RELA`, ...).
        table: &'static str,
        /// Its address in the file's terms (`p_vaddr` space).
        addr: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// A table lies in a writable segment, where relocations or the
    /// library itself could change it after it was validated.
    #[error("{table} at {addr:#x} lies in a writable segment")]
    TableInWritableSegment {
        /// The table.
        table: &'static str,
        /// Its address in the file's terms.
        addr: u64,
    },
    /// A table's entry size tag has a value this loader cannot read.
    #[error("{table} entry size {size} (expected {expected})")]
    BadEntrySize {
        /// The entry size tag (`DT_RELAENT`, `DT_SYMENT`, ...).
        table: &'static str,
        /// Its value.
        size: u64,
        /// The only value this loader reads.
        expected: u64,
    },
    /// A table size is not a whole number of entries.
    #[error("{table} size {size:#x} is not a multiple of its entry size {entsize}")]
    BadTableSize {
        /// The table.
        table: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The size of one entry.
        entsize: u64,
    },
    /// A hash table is malformed; `reason` says how.
    #[error("{table}: {reason}")]
    BadHashTable {
        /// `DT_HASH` or `DT_GNU_HASH`.
        table: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A string offset points outside the string table, or the string there
    /// has no terminating NUL inside it.
    #[error(
        "string offset {offset:#x} is outside the string table ({size:#x} bytes) or unterminated"
    )]
    BadStringOffset {
        /// The offset into the string table.
        offset: u64,
        /// The string table's size (`DT_STRSZ`).
        size: u64,
    },
    /// A symbol table index is not below the number of symbols.
    #[error("relocation {index} names symbol {symbol}, but there are only {count} symbols")]
    SymbolIndexOutOfRange {
        /// Index of the relocation, counted across all tables.
        index: usize,
        /// The symbol index it names.
        symbol: u64,
        /// The number of symbols.
        count: u64,
    },
    /// A relocation writes outside the image.
    #[error("relocation {index} writes to offset {offset:#x}, outside the image")]
    RelocationOutOfBounds {
        /// Index of the relocation, counted across all tables.
        index: usize,
        /// Its target (`r_offset`).
        offset: u64,
    },
    /// A relocation writes into a segment that is not writable.
    #[error("relocation {index} writes to offset {offset:#x}, inside a read-only segment")]
    RelocationInReadOnly {
        /// Index of the relocation, counted across all tables.
        index: usize,
        /// Its target (`r_offset`).
        offset: u64,
    },
    /// A relocation type this loader does not apply.
    #[error("relocation {index} has unsupported type {r_type} ({name})")]
    UnsupportedRelocation {
        /// Index of the relocation, counted across all tables.
        index: usize,
        /// Its type number.
        r_type: u32,
        /// The type's name (`R_X86_64_...`), or "unknown".
        name: &'static str,
    },
    /// The image uses the initial-exec (static) TLS model and its block
    /// could not be placed in the system loader's static TLS area (usually:
    /// the surplus glibc keeps for `dlopen`, `glibc.rtld.optional_static_tls`,
    /// is used up). Nothing of the image ran.
    #[error("static TLS block of {size} bytes (alignment {align}) could not be placed: {reason}")]
    StaticTls {
        /// The block's size (`PT_TLS` memory size).
        size: u64,
        /// Its alignment.
        align: u64,
        /// Why: the system loader's message, or what memdl found.
        reason: String,
    },
    /// The image uses a thread-local variable of another module in a way
    /// that module's TLS cannot serve: initial-exec access (`TPOFF64`,
    /// `TLS_TPREL`) to a variable in dynamic TLS (a module `dlopen`ed
    /// without `DF_STATIC_TLS`, or another memdl image), or a definition
    /// found outside any module's TLS block.
    #[error("thread-local symbol {name} of another module cannot be reached: {reason}")]
    ImportedTls {
        /// The symbol.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A feature of the file that this loader refuses.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A descriptor handed to [`crate::SealedElf::from_fd`] lacks a seal
    /// (write, shrink, grow, sealing itself): its contents could still
    /// change under a loaded image. `seals` is what `F_GET_SEALS` gave
    /// (-1: not a file that takes seals, such as a regular file).
    #[error("descriptor is not a memfd sealed against write, shrink, grow and unsealing (F_GET_SEALS: {seals})")]
    NotSealed {
        /// What `F_GET_SEALS` gave (-1: the file takes no seals).
        seals: i32,
    },
    /// A configured limit was exceeded (see [`crate::Limits`]).
    #[error("{what} is {value}, over the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// How much the file asks for.
        value: u64,
        /// The configured limit.
        limit: u64,
    },

    // ---- linking ---------------------------------------------------------
    /// Imports no resolver could satisfy: every one of them, not the first.
    #[error("unresolved symbols: {}", names.join(", "))]
    UnresolvedSymbols {
        /// Every missing import, `name` or `name@version`.
        names: Vec<String>,
    },
    /// A `DT_NEEDED` library could not be opened by the system loader.
    #[error("needed library {name}: {message}")]
    NeededLibrary {
        /// The `DT_NEEDED` name.
        name: String,
        /// The system loader's `dlerror()` text.
        message: String,
    },

    // ---- lookups ---------------------------------------------------------
    /// No exported symbol of that name.
    #[error("symbol {name} not found")]
    SymbolNotFound {
        /// The name looked up.
        name: String,
    },
    /// The symbol was found but its value does not lie inside the image.
    #[error("symbol {name} has value {value:#x}, outside the image")]
    SymbolOutOfBounds {
        /// The name looked up.
        name: String,
        /// The symbol's `st_value`.
        value: u64,
    },
    /// `get::<T>` was asked for a `T` that is not pointer-sized.
    #[error("Symbol<T> needs a pointer-sized T, got {size} bytes")]
    SymbolTypeSize {
        /// `size_of::<T>()`.
        size: usize,
    },

    // ---- the operating system --------------------------------------------
    /// A memory-mapping system call failed.
    #[error("{op} failed: {source}")]
    Map {
        /// The system call (`mmap`, `mprotect`, ...).
        op: &'static str,
        /// The error it returned.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error (reading the input, creating a memfd, ...).
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error it gave.
        #[source]
        source: io::Error,
    },
    /// The system loader refused the image; `message` is its `dlerror()` text.
    #[error("dlopen: {message}")]
    Dlopen {
        /// The system loader's `dlerror()` text.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] carrying the current `errno`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::Io {
            op,
            source: io::Error::last_os_error(),
        }
    }

    /// An [`Error::Map`] carrying the current `errno`.
    pub(crate) fn last_map(op: &'static str) -> Self {
        Error::Map {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
