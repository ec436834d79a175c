//! The object memdl registers through the GDB JIT interface, read back in
//! process (no debugger): where it lies and what it refers to.
//!
//! A stripped library's object is written in the room reserved under the
//! image and refers to the image's own `.eh_frame` and dynamic string
//! table in place (nothing copied, nothing read from the file); a library
//! whose `.symtab` is carried gets an object of its own. `tests/debugger.rs`
//! shows gdb, lldb and perf using both kinds.

mod common;

use common::{machine_lib, serial, test_lib};
use goblin::elf::Elf;
use memdl::{ElfImage, Options};

#[repr(C)]
struct JitCodeEntry {
    next: *const JitCodeEntry,
    prev: *const JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

#[repr(C)]
struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *const JitCodeEntry,
    first_entry: *const JitCodeEntry,
}

extern "C" {
    // memdl's descriptor: the symbol gdb reads.
    static __jit_debug_descriptor: JitDescriptor;
}

/// The object registered last: its address and its bytes.
fn newest_object() -> (usize, &'static [u8]) {
    // SAFETY: read under `serial()`, while no other test registers; the
    // entry and its object live as long as the image the caller holds.
    unsafe {
        let d = &raw const __jit_debug_descriptor;
        let entry = (*d).first_entry;
        assert!(!entry.is_null(), "nothing registered");
        let (addr, len) = ((*entry).symfile_addr, (*entry).symfile_size as usize);
        (addr as usize, std::slice::from_raw_parts(addr, len))
    }
}

fn image_start(img: &ElfImage) -> usize {
    img.segments().map(|s| s.address).min().unwrap()
}

fn section<'a>(elf: &'a Elf<'_>, name: &str) -> &'a goblin::elf::SectionHeader {
    elf.section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(name))
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_stripped_library_is_described_in_place() {
    let _lock = serial();
    let bytes = machine_lib("libz.so.1");
    // SAFETY: the system's zlib, trusted.
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    // Right under the image, and reaching into it.
    assert!(addr < start && addr + object.len() > start);
    assert!(start - addr <= 64 << 10, "object far below the image");
    let elf = Elf::parse(object).expect("the object parses");
    // `.eh_frame` is the image's own, at its runtime address.
    let eh = section(&elf, ".eh_frame");
    assert_eq!(addr as u64 + eh.sh_offset, eh.sh_addr);
    assert!(eh.sh_addr as usize > start && eh.sh_size > 0);
    // `.strtab` is the image's dynamic string table; `crc32` is named
    // through it at the address the image exports.
    let strtab = section(&elf, ".strtab");
    assert!(addr as u64 + strtab.sh_offset >= start as u64);
    // SAFETY: only the address is used; nothing is called or read.
    let crc32 = unsafe { img.get::<usize>("crc32") }.unwrap().as_ptr() as u64;
    let found = elf
        .syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some("crc32"))
        .expect("crc32 in .symtab");
    assert_eq!(found.st_value, crc32);
    drop(img);
}

#[test]
fn a_carried_symtab_gets_an_object_of_its_own_and_the_limit_drops_it() {
    let _lock = serial();
    let bytes = test_lib("debugvis");
    let has_local = |elf: &Elf<'_>| {
        elf.syms
            .iter()
            .any(|s| elf.strtab.get_at(s.st_name) == Some("debugvis_local"))
    };
    // SAFETY (both loads): the crate's own test library.
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    assert!(
        !(addr < start && addr + object.len() > start),
        "not in place"
    );
    let elf = Elf::parse(object).expect("the object parses");
    assert!(has_local(&elf), "the file's local symbol is carried");
    drop(img);

    let options = Options::new().debugger_file_info_limit(0);
    // SAFETY: as above.
    let img = unsafe { ElfImage::load_with(&bytes, &options) }.unwrap();
    let (addr, object) = newest_object();
    let start = image_start(&img);
    assert!(addr < start && addr + object.len() > start, "in place");
    let elf = Elf::parse(object).expect("the object parses");
    assert!(!has_local(&elf), "over the limit: exported symbols only");
    assert!(elf
        .syms
        .iter()
        .any(|s| elf.strtab.get_at(s.st_name) == Some("debugvis_compute")));
    drop(img);
}

/// The symbols (name, offset from the image, size, section name) and the
/// sections (name, offset from the image, size) of the newest object.
type Described = (Vec<(String, u64, u64, String)>, Vec<(String, u64, u64)>);

fn described(img: &ElfImage) -> Described {
    let (_, object) = newest_object();
    let start = image_start(img) as u64;
    let elf = Elf::parse(object).expect("the object parses");
    let section_name = |i: usize| {
        let s = elf.section_headers.get(i).map_or(0, |s| s.sh_name);
        elf.shdr_strtab.get_at(s).unwrap_or("?").to_owned()
    };
    let symbols = elf
        .syms
        .iter()
        .map(|s| {
            let name = elf.strtab.get_at(s.st_name).unwrap_or("?").to_owned();
            let section = section_name(s.st_shndx);
            let at = match s.st_shndx {
                0 => s.st_value,
                _ => s.st_value.wrapping_sub(start),
            };
            (name, at, s.st_size, section)
        })
        .collect();
    let sections = elf
        .section_headers
        .iter()
        .map(|s| {
            let name = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("?").to_owned();
            let at = if s.sh_addr == 0 { 0 } else { s.sh_addr - start };
            (name, at, s.sh_size)
        })
        .collect();
    (symbols, sections)
}

/// The C++ test library's file, open, and its length.
fn cxx_test_library() -> (std::fs::File, u64) {
    let file = std::fs::File::open(common::test_lib_path("cxxrt")).unwrap();
    let len = file.metadata().unwrap().len();
    (file, len)
}

/// A big image is described (its `.eh_frame` checked for the unwinder,
/// the debuggers' object built) on a helper thread while it is relocated.
/// Made to happen to a small C++ library, it gives the same object as
/// describing it afterwards on the loading thread, and exceptions work:
/// whether the helper does all (or whatever it claims first), or checks
/// the frames while the loading thread builds the debuggers' object.
#[test]
fn an_image_described_on_a_helper_thread_is_described_as_on_the_loading_thread() {
    let _lock = serial();
    let (file, len) = cxx_test_library();
    let load = |aside: bool, shared: bool| {
        let from = if aside { 0 } else { u32::MAX };
        let before = ElfImage::__describe_aside_from(Some(from));
        ElfImage::__helper_waits_for_loader(shared);
        // SAFETY: the crate's own test library; the file stays unchanged.
        let img = unsafe { ElfImage::load_fd(&file, 0, len) };
        ElfImage::__helper_waits_for_loader(false);
        let img = img.unwrap();
        let after = ElfImage::__describe_aside_from(None);
        let helper = aside && helpers_can_start();
        assert_eq!(after - before, usize::from(helper), "aside: {aside}");
        let description = described(&img);
        let throw_catch: unsafe extern "C" fn(libc::c_int) -> libc::c_int =
            common::sym(&img, "cxx_throw_catch");
        // SAFETY: a function of the live image: throws and catches 150.
        assert_eq!(unsafe { throw_catch(150) }, -150);
        common::assert_no_wx();
        description
    };
    let inline = load(false, false);
    assert!(inline.0.iter().any(|s| s.0 == "cxx_throw_catch"));
    assert!(inline.1.iter().any(|s| s.0 == ".eh_frame" && s.2 > 0));
    assert_eq!(inline, load(true, false));
    assert_eq!(inline, load(true, true));
}

/// Whether a load may start a helper thread: not when the calling thread
/// may run on one CPU only (`taskset -c 0`), where it could only take
/// turns with the loading thread.
fn helpers_can_start() -> bool {
    #[cfg(target_os = "linux")]
    return this_threads_cpus()
        .iter()
        .map(|b| b.count_ones())
        .sum::<u32>()
        > 1;
    #[cfg(not(target_os = "linux"))]
    true
}

/// The CPUs the calling thread may run on, as a bit set.
#[cfg(target_os = "linux")]
fn this_threads_cpus() -> Vec<u8> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: a set of `size` bytes; pid 0 is the calling thread.
    assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
    // SAFETY: the set is `size` initialised bytes.
    unsafe { std::slice::from_raw_parts((&raw const set).cast::<u8>(), size) }.to_vec()
}

/// The helper is kept off the loading thread's CPU, and moved to it when
/// it has not begun by the end: neither ever changes the CPUs the loading
/// thread may use (a thread that has ended has no id to set them through,
/// and setting them through id 0 sets the caller's). Small images, whose
/// helper finds its work done as often as not, race that hardest.
#[cfg(target_os = "linux")]
#[test]
fn loads_with_a_helper_leave_the_callers_cpus_alone() {
    let _lock = serial();
    let (file, len) = cxx_test_library();
    let before = this_threads_cpus();
    let loads = 100;
    let aside = ElfImage::__describe_aside_from(Some(0));
    for _ in 0..loads {
        // SAFETY: the crate's own test library; the file stays unchanged.
        drop(unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap());
        assert_eq!(this_threads_cpus(), before);
    }
    let aside = ElfImage::__describe_aside_from(None) - aside;
    assert_eq!(aside, if helpers_can_start() { loads } else { 0 });
}

/// The biggest library on the machine (the Rust toolchain's libLLVM,
/// 160,000 FDEs) is described on a helper thread by default, and its
/// frames are known to the unwinder and to debuggers.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_biggest_library_is_described_on_a_helper_thread() {
    use memdl::Library;
    let _lock = serial();
    let path = common::rust_libllvm().expect("a libLLVM in the Rust toolchains");
    let file = std::fs::File::open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    let before = ElfImage::__describe_aside_from(None);
    // SAFETY: the Rust toolchain's own library; the file stays unchanged.
    let img = unsafe { ElfImage::load_fd(&file, 0, len) }.unwrap();
    let helper = helpers_can_start();
    assert_eq!(
        ElfImage::__describe_aside_from(None) - before,
        usize::from(helper)
    );
    let start = image_start(&img) as u64;
    let (symbols, sections) = described(&img);
    assert!(symbols.len() > 10_000, "{} symbols", symbols.len());
    assert!(sections.iter().any(|s| s.0 == ".eh_frame" && s.2 > 1 << 20));
    // The exported functions are where the image says, and the unwinder
    // has their frames.
    for name in ["LLVMContextCreate", "LLVMModuleCreateWithName"] {
        let address = img.symbol_address(name.as_bytes()).unwrap() as u64;
        let found = symbols.iter().find(|s| s.0 == name).expect(name);
        // In a code section (BOLT gave the file two: `.text`, `.text.1`).
        assert_eq!(found.1 + start, address, "{name}");
        assert!(found.3.starts_with(".text"), "{name} in {}", found.3);
        assert!(!common::find_fde(address as usize + 1).is_null(), "{name}");
    }
    common::assert_no_wx();
}
