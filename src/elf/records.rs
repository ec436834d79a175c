//! The fixed-size records of the tables the dynamic section names, as
//! they lie in memory (ELF64, little-endian): read whole through
//! [`View`](super::view::View) and [`Array`](super::view::Array).

/// `Elf64_Rel`: a relocation whose addend is the word at its target.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Rel {
    pub offset: u64,
    pub info: u64,
}

/// `Elf64_Rela`: a relocation with an explicit addend.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Rela {
    pub offset: u64,
    pub info: u64,
    pub addend: i64,
}

/// `Elf64_Dyn`: one entry of the dynamic array.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Dyn {
    pub tag: u64,
    pub val: u64,
}

/// `Elf64_Verdef`: a version this object defines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Only read from images (`view::Pod`): Rust 1.88 sees no use.
pub struct Verdef {
    pub version: u16,
    pub flags: u16,
    pub ndx: u16,
    pub cnt: u16,
    pub hash: u32,
    pub aux: u32,
    pub next: u32,
}

/// `Elf64_Verdaux`: the name of a defined version.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Only read from images (`view::Pod`): Rust 1.88 sees no use.
pub struct Verdaux {
    pub name: u32,
    pub next: u32,
}

/// `Elf64_Verneed`: the versions required from one library.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Only read from images (`view::Pod`): Rust 1.88 sees no use.
pub struct Verneed {
    pub version: u16,
    pub cnt: u16,
    pub file: u32,
    pub aux: u32,
    pub next: u32,
}

/// `Elf64_Vernaux`: one required version.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Only read from images (`view::Pod`): Rust 1.88 sees no use.
pub struct Vernaux {
    pub hash: u32,
    pub flags: u16,
    pub other: u16,
    pub name: u32,
    pub next: u32,
}

// No padding anywhere: each size is the sum of its fields (what
// `view::Pod` requires).
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Rel>() == 16);
    assert!(size_of::<Rela>() == 24);
    assert!(size_of::<Dyn>() == 16);
    assert!(size_of::<Verdef>() == 20);
    assert!(size_of::<Verdaux>() == 8);
    assert!(size_of::<Verneed>() == 16);
    assert!(size_of::<Vernaux>() == 16);
    assert!(size_of::<super::symbols::Sym>() == 24);
};
