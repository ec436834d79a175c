//! The system's own `dlopen` family, found once without calling any of it.
//!
//! Inside this library every reference to `dlopen`, `dlsym`, ... (ours, and
//! memdl's and std's, which are linked in) binds to the interposers this
//! library exports, so the real functions cannot be asked for by name with
//! `dlsym(RTLD_NEXT, ..)`: that would be a call to ourselves before we know
//! where to forward it. Instead the C library's link map entry is found
//! through `_r_debug` (the debugger interface every glibc process has), its
//! file is mapped and its dynamic symbol table read with goblin. Nothing
//! here may call a `dl*` function, directly or through std (std's weak
//! symbols and `statx` go through `dlsym`): only raw libc calls.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// `struct link_map` (the public part of glibc's, `<link.h>`).
#[repr(C)]
pub struct LinkMap {
    pub l_addr: usize,
    pub l_name: *const c_char,
    pub l_ld: *mut c_void,
    pub l_next: *mut LinkMap,
    pub l_prev: *mut LinkMap,
}

#[repr(C)]
struct RDebug {
    r_version: c_int,
    r_map: *mut LinkMap,
    r_brk: usize,
    r_state: c_int,
    r_ldbase: usize,
}

extern "C" {
    /// The dynamic linker's debugger interface (exported by ld.so).
    static _r_debug: RDebug;
    /// The ELF header of this library (defined by the linker).
    static __ehdr_start: u8;
}

/// The real functions' addresses and what is known about this library.
pub struct Reals {
    pub dlopen: usize,
    pub dlmopen: usize,
    pub dlsym: usize,
    pub dlvsym: usize,
    pub dlclose: usize,
    pub dlerror: usize,
    pub dladdr: usize,
    pub dladdr1: usize,
    pub dlinfo: usize,
    pub dl_iterate_phdr: usize,
    /// This library's executable segments: a call from there is memdl's
    /// (or std's) own, which the system must answer.
    own_code: Vec<(usize, usize)>,
    /// What `dlopen(NULL)` returns: the main program's handle.
    pub main_handle: usize,
}

impl Reals {
    /// Whether `addr` lies in this library's code.
    pub fn is_own(&self, addr: usize) -> bool {
        self.own_code.iter().any(|&(s, e)| addr >= s && addr < e)
    }
}

static REALS: OnceLock<Reals> = OnceLock::new();

/// The real functions, found on first use. Aborts if they cannot be found:
/// nothing could be forwarded, and returning would crash the caller later.
pub fn reals() -> &'static Reals {
    if let Some(r) = REALS.get() {
        return r;
    }
    match find() {
        Ok(mut r) => {
            // SAFETY: the real dlopen with a null name only returns the main
            // program's handle (never unloaded).
            let open: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void =
                unsafe { std::mem::transmute(r.dlopen) };
            // SAFETY: see above.
            r.main_handle = unsafe { open(std::ptr::null(), libc::RTLD_LAZY) } as usize;
            let _ = REALS.set(r);
            REALS.get().expect("just set")
        }
        Err(message) => {
            let line = format!("memdl-preload: {message}; cannot continue\n");
            // SAFETY: a write of a buffer we own to stderr.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            std::process::abort();
        }
    }
}

fn find() -> Result<Reals, String> {
    let own_code = own_code();
    // SAFETY: _r_debug is initialised by ld.so before any code of ours runs;
    // the link maps it lists stay valid while their objects are loaded, and
    // the C library is never unloaded.
    let mut map = unsafe { _r_debug.r_map };
    let mut names = [0usize; 10];
    let wanted: [&[u8]; 10] = [
        b"dlopen",
        b"dlmopen",
        b"dlsym",
        b"dlvsym",
        b"dlclose",
        b"dlerror",
        b"dladdr",
        b"dladdr1",
        b"dlinfo",
        b"dl_iterate_phdr",
    ];
    while !map.is_null() {
        // SAFETY: see above; `map` is a live link map entry.
        let (addr, name, next) = unsafe { ((*map).l_addr, (*map).l_name, (*map).l_next) };
        map = next;
        if name.is_null() {
            continue;
        }
        // SAFETY: l_name is a NUL-terminated string owned by ld.so.
        let path = unsafe { CStr::from_ptr(name) };
        let base = path.to_bytes().rsplit(|&c| c == b'/').next().unwrap_or(b"");
        // glibc 2.34 moved the family into libc.so.6; before, libdl.so.2.
        if !(base.starts_with(b"libc.so") || base.starts_with(b"libdl.so")) {
            continue;
        }
        with_mapped_file(path, |bytes| {
            let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
            for (i, sym) in elf.dynsyms.iter().enumerate() {
                if sym.st_value == 0 || sym.st_shndx == 0 {
                    continue;
                }
                // A hidden (non-default) version, e.g. dlopen@GLIBC_2.2.5,
                // is an alias of the default one; prefer the default.
                let hidden = elf
                    .versym
                    .as_ref()
                    .and_then(|v| v.get_at(i))
                    .is_some_and(|v| v.is_hidden());
                let Some(n) = elf.dynstrtab.get_at(sym.st_name) else {
                    continue;
                };
                if let Some(k) = wanted.iter().position(|w| *w == n.as_bytes()) {
                    if names[k] == 0 || !hidden {
                        names[k] = addr.wrapping_add(sym.st_value as usize);
                    }
                }
            }
            Ok(())
        })?;
    }
    if let Some(k) = names.iter().position(|&a| a == 0) {
        return Err(format!(
            "the C library's {} was not found",
            String::from_utf8_lossy(wanted[k])
        ));
    }
    Ok(Reals {
        dlopen: names[0],
        dlmopen: names[1],
        dlsym: names[2],
        dlvsym: names[3],
        dlclose: names[4],
        dlerror: names[5],
        dladdr: names[6],
        dladdr1: names[7],
        dlinfo: names[8],
        dl_iterate_phdr: names[9],
        own_code,
        main_handle: 0,
    })
}

/// Maps `path` read-only for `f` (raw libc calls only: see the module docs).
fn with_mapped_file(
    path: &CStr,
    f: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    // SAFETY: open/fstat/mmap/munmap/close of a file we own for the call;
    // the mapping is only read while it exists.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!("cannot open {}", path.to_string_lossy()));
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 || st.st_size <= 0 {
            libc::close(fd);
            return Err(format!("cannot stat {}", path.to_string_lossy()));
        }
        let len = st.st_size as usize;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED {
            return Err(format!("cannot map {}", path.to_string_lossy()));
        }
        let r = f(std::slice::from_raw_parts(p.cast::<u8>(), len));
        libc::munmap(p, len);
        r
    }
}

/// This library's executable segments, from its own program headers.
fn own_code() -> Vec<(usize, usize)> {
    // SAFETY: __ehdr_start is this object's ELF header, mapped with the
    // first PT_LOAD (offset 0); the program headers it points to are mapped
    // with it (they lie in the first page(s) of every linker's output).
    unsafe {
        let ehdr = &__ehdr_start as *const u8 as *const libc::Elf64_Ehdr;
        let base = ehdr as usize;
        let phdrs = std::slice::from_raw_parts(
            (base + (*ehdr).e_phoff as usize) as *const libc::Elf64_Phdr,
            usize::from((*ehdr).e_phnum),
        );
        // The header is at the address of the PT_LOAD with offset 0.
        let first = phdrs
            .iter()
            .find(|p| p.p_type == libc::PT_LOAD && p.p_offset == 0)
            .map_or(0, |p| p.p_vaddr as usize);
        let bias = base.wrapping_sub(first);
        phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            .map(|p| {
                let s = bias.wrapping_add(p.p_vaddr as usize);
                (s, s + p.p_memsz as usize)
            })
            .collect()
    }
}
