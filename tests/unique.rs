//! `STB_GNU_UNIQUE` (issue #12): two libraries defining the same template
//! static member share one instance, under memdl as under the system
//! loader, and memdl binds to a definition the system loader already has.

mod common;

use std::ffi::{c_int, CString};
use std::os::unix::ffi::OsStrExt;

use common::{test_lib, test_lib_path};
use memdl::{ElfImage, Library, SystemImage};

type Address = unsafe extern "C" fn() -> *mut c_int;
type Bump = unsafe extern "C" fn() -> c_int;

fn address(lib: &impl Library) -> usize {
    // SAFETY: int *unique_address(void).
    unsafe { (*lib.get::<Address>("unique_address").unwrap())() as usize }
}

fn bump(lib: &impl Library) -> c_int {
    // SAFETY: int unique_bump(void).
    unsafe { (*lib.get::<Bump>("unique_bump").unwrap())() }
}

#[test]
fn unique_symbols_have_one_definition_per_process() {
    let elf_bytes = test_lib("unique1");
    let elf = goblin::elf::Elf::parse(&elf_bytes).unwrap();
    assert!(
        elf.dynsyms
            .iter()
            .any(|s| s.st_bind() == goblin::elf::sym::STB_GNU_UNIQUE),
        "the test library has no unique symbol"
    );

    // Two memdl images: the second binds to the first's definition, which
    // stays theirs until the first is dropped.
    {
        // SAFETY: trusted test libraries (their initialisers run).
        let one = unsafe { ElfImage::load(&elf_bytes) }.unwrap();
        // SAFETY: as above.
        let two = unsafe { ElfImage::load(&test_lib("unique2")) }.unwrap();
        assert_eq!(address(&one), address(&two));
        assert_eq!((bump(&one), bump(&two)), (2, 3));
        // A lookup by name gives the shared definition too, as dlsym does.
        let by_name = |lib: &ElfImage| {
            // SAFETY: only the address is taken.
            unsafe { lib.get::<*const c_int>("_ZN6HolderIiE5valueE") }
                .unwrap()
                .as_ptr() as usize
        };
        assert_eq!(by_name(&two), address(&one));
        drop(one);
        // SAFETY: as above. A third image after the first is gone binds to
        // the second's (still loaded) or its own, never to freed memory.
        let three = unsafe { ElfImage::load(&elf_bytes) }.unwrap();
        let a = address(&three);
        assert!(a == address(&two) || three.exports().any(|(_, e)| e == a));
    }

    // The system loader, for reference: two objects, one instance.
    {
        // SAFETY: as above.
        let one = unsafe { SystemImage::load(&elf_bytes) }.unwrap();
        // SAFETY: as above.
        let two = unsafe { SystemImage::load(&test_lib("unique2")) }.unwrap();
        assert_eq!(address(&one), address(&two));
    }

    // A definition the system loader holds in the global scope is the one
    // a memdl image binds to.
    let path = CString::new(test_lib_path("unique1").as_os_str().as_bytes()).unwrap();
    // SAFETY: dlopen of a trusted test library; never closed (glibc keeps
    // the first definer of a unique symbol loaded anyway).
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    assert!(!h.is_null());
    // SAFETY: int *unique_address(void) of the handle's object.
    let system_address = unsafe {
        let f = libc::dlsym(h, c"unique_address".as_ptr());
        std::mem::transmute::<*mut libc::c_void, Address>(f)()
    } as usize;
    // SAFETY: as above.
    let img = unsafe { ElfImage::load(&test_lib("unique2")) }.unwrap();
    assert_eq!(address(&img), system_address);
}
