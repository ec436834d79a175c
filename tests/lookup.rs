//! The export index behind `ElfImage::get`: once an image has answered
//! enough plain-name lookups it builds an index of its exports, which must
//! answer every name exactly as the file's hash table does (hits, misses,
//! errors, thread-local and ifunc symbols, hidden versions), from every
//! thread, before, during and after it is built.
//!
//! The index's state is seen through the test hooks (`test-hooks` feature).
#![cfg(feature = "test-hooks")]

use std::collections::BTreeSet;
use std::ffi::c_void;

use goblin::elf::Elf;
use memdl::ElfImage;

mod common;
use common::{machine_lib, test_lib, test_lib_path};

/// What a lookup answered, comparable across paths: the address or the
/// error's message.
type Answer = Result<usize, String>;

fn get(img: &ElfImage, name: &[u8]) -> Answer {
    // SAFETY: only the address is read.
    unsafe { img.get::<*const c_void>(name) }
        .map(|s| s.as_ptr() as usize)
        .map_err(|e| e.to_string())
}

fn get_versioned(img: &ElfImage, name: &[u8], version: &[u8]) -> Answer {
    // SAFETY: only the address is read.
    unsafe { img.get_versioned::<*const c_void>(name, version) }
        .map(|s| s.as_ptr() as usize)
        .map_err(|e| e.to_string())
}

/// The file's hash table, without the index (the reference).
fn reference(img: &ElfImage, name: &[u8], version: Option<&[u8]>) -> Answer {
    img.__hash_table_address(name, version)
        .map_err(|e| e.to_string())
}

/// Names to ask for: every name in the dynamic and static symbol tables
/// (exports, imports, locals, hidden), near misses of each, and names no
/// library has.
fn queries(bytes: &[u8]) -> Vec<Vec<u8>> {
    let elf = Elf::parse(bytes).expect("parse");
    let mut names: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (syms, strtab) in [(&elf.dynsyms, &elf.dynstrtab), (&elf.syms, &elf.strtab)] {
        for sym in syms.iter() {
            if let Some(n) = strtab.get_at(sym.st_name) {
                names.insert(n.as_bytes().to_vec());
            }
        }
    }
    // Near misses of a sample (all of them for small libraries).
    let step = (names.len() / 500).max(1);
    let near: Vec<Vec<u8>> = names
        .iter()
        .step_by(step)
        .flat_map(|n| {
            let mut v = Vec::new();
            if let Some((_, shorter)) = n.split_last() {
                v.push(shorter.to_vec());
            }
            v.push([n.as_slice(), b"x"].concat());
            v.push([n.as_slice(), b"\0"].concat());
            v.push([n.as_slice(), b"\0x"].concat());
            v.push([n.as_slice(), b"@V1"].concat());
            v.push([n.as_slice(), b"@@V2"].concat());
            v.push([b"_", n.as_slice()].concat());
            v
        })
        .collect();
    names.extend(near);
    // A name, its NUL and the string after it in the table: the hash table
    // compares the bytes up to the query's end, so some of these match the
    // first name (where its hash happens to lead there: small SysV tables).
    for sym in elf.dynsyms.iter() {
        if let Some(n) = elf.dynstrtab.get_at(sym.st_name) {
            let next = elf.dynstrtab.get_at(sym.st_name + n.len() + 1);
            names.insert([n.as_bytes(), b"\0", next.unwrap_or("").as_bytes()].concat());
        }
    }
    for n in [&b""[..], b"\0", b"no_such_symbol", b"x", &[0xff; 40]] {
        names.insert(n.to_vec());
    }
    names.into_iter().collect()
}

/// Every version the file defines, and one it does not.
fn versions(bytes: &[u8]) -> Vec<Vec<u8>> {
    let elf = Elf::parse(bytes).expect("parse");
    let mut out = vec![b"NO_SUCH_VERSION".to_vec()];
    if let Some(vd) = &elf.verdef {
        for def in vd.iter() {
            for aux in def.iter() {
                if let Some(n) = elf.dynstrtab.get_at(aux.vda_name) {
                    out.push(n.as_bytes().to_vec());
                }
            }
        }
    }
    out
}

/// Looks up a name that is not there until the index exists; returns how
/// many lookups that took.
fn force_index(img: &ElfImage) -> usize {
    for n in 1..=(4 << 20) {
        let _ = get(img, b"memdl_index_trigger");
        if img.__export_index().is_some() {
            return n;
        }
    }
    panic!("the export index was never built");
}

/// Every query through `get` and `get_versioned` agrees with the hash table.
fn assert_same_answers(img: &ElfImage, names: &[Vec<u8>], versions: &[Vec<u8>], lib: &str) {
    for name in names {
        assert_eq!(
            get(img, name),
            reference(img, name, None),
            "{lib}: {:?}",
            String::from_utf8_lossy(name)
        );
    }
    // Versioned lookups never use the index: check they still agree, for
    // the names that have a symbol.
    for name in names.iter().filter(|n| reference(img, n, None).is_ok()) {
        for v in versions {
            assert_eq!(
                get_versioned(img, name, v),
                reference(img, name, Some(v)),
                "{lib}: {:?}@{:?}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(v)
            );
        }
    }
}

/// Loads `bytes`, compares every query before the index, forces it, and
/// compares again; returns the index's number of names.
fn check_library(lib: &str, bytes: &[u8]) -> Option<usize> {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(bytes) }.ok()?;
    let names = queries(bytes);
    let versions = versions(bytes);
    // A load and a few lookups build nothing (the load benchmarks and the
    // usual "load, get a few functions" pay no index).
    for _ in 0..15 {
        let _ = get(&img, b"main");
    }
    assert_eq!(img.__export_index(), None, "{lib}: built too early");

    let lookups = 15 + force_index(&img);
    let (len, complete) = img
        .__export_index()
        .flatten()
        .unwrap_or_else(|| panic!("{lib}: building the index was given up"));
    assert!(complete, "{lib}: index incomplete");
    // It holds exactly the names the hash table finds (as a symbol or as
    // an error about one).
    let found = names
        .iter()
        .filter(|n| !n.contains(&0))
        .filter(|n| match reference(&img, n, None) {
            Ok(_) => true,
            Err(e) => !e.contains("not found"),
        })
        .count();
    assert_eq!(len, found, "{lib}: names in the index");
    // Every export answers, at the address exports() lists (an ifunc's is
    // its resolver's: a lookup gives what the resolver returns).
    let elf = Elf::parse(bytes).expect("parse");
    let ifuncs: BTreeSet<&str> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_type() == goblin::elf::sym::STT_GNU_IFUNC)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .collect();
    for (name, addr) in img.exports() {
        let got = get(&img, name);
        assert_eq!(got, reference(&img, name, None), "{lib}: export {name:?}");
        if !ifuncs.contains(String::from_utf8_lossy(name).as_ref()) {
            assert_eq!(got, Ok(addr), "{lib}: export {name:?}");
        }
    }
    assert_same_answers(&img, &names, &versions, lib);
    // Built on time: after 16 lookups plus two per symbol.
    assert!(
        (16..=2 * elf.dynsyms.len() + 16).contains(&lookups),
        "{lib}: built after {lookups} lookups, {} symbols",
        elf.dynsyms.len()
    );
    Some(len)
}

#[test]
fn index_answers_as_the_hash_table_for_every_test_library() {
    let dir = test_lib_path("example");
    let dir = dir.parent().expect("test library directory");
    let mut libs: Vec<String> = std::fs::read_dir(dir)
        .expect("test library directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let short = name.strip_prefix("lib")?.strip_suffix(".so")?;
            Some(short.to_owned())
        })
        .collect();
    libs.sort();
    // The queries include names with a NUL that the hash table does find
    // (which the index must leave to it).
    let sysv = test_lib("sysv");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&sysv) }.unwrap();
    assert!(queries(&sysv)
        .iter()
        .any(|q| q.contains(&0) && reference(&img, q, None).is_ok()));
    drop(img);
    let mut checked = Vec::new();
    for lib in &libs {
        if let Some(len) = check_library(lib, &test_lib(lib)) {
            checked.push((lib.clone(), len));
        }
    }
    let names: Vec<&str> = checked.iter().map(|(l, _)| l.as_str()).collect();
    // The libraries with the lookup cases that matter must be among them.
    for must in [
        "example",
        "versioned",
        "ifunc",
        "tls",
        "threadlocal",
        "sysv",
        "many_gnu",
        "many_sysv",
        "many_both",
        "cxx",
        "scale1000",
    ] {
        assert!(names.contains(&must), "{must} not checked: {names:?}");
    }
}

#[test]
fn index_answers_as_the_hash_table_for_machine_libraries() {
    for lib in [
        "libz.so.1",
        "libsqlite3.so.0",
        "libgmp.so.10",
        "libuuid.so.1",
    ] {
        let len = check_library(lib, &machine_lib(lib)).unwrap_or_else(|| panic!("{lib} loads"));
        assert!(len > 10, "{lib}: {len} names");
    }
}

#[test]
fn hidden_versions_stay_hidden_after_the_index() {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("versioned")) }.unwrap();
    force_index(&img);
    assert!(img.__export_index().flatten().is_some());
    // foo@@V2 is the default, foo@V1 only by version, bar@V1 not at all.
    // SAFETY: int foo_v1/foo_v2/bar_v1(int) and int versioned_plain(void).
    unsafe {
        let foo = img.get::<unsafe extern "C" fn(i32) -> i32>("foo").unwrap();
        assert_eq!(foo(1), 3);
        let foo1 = img
            .get_versioned::<unsafe extern "C" fn(i32) -> i32>("foo", "V1")
            .unwrap();
        assert_eq!(foo1(1), 2);
        let bar1 = img
            .get_versioned::<unsafe extern "C" fn(i32) -> i32>("bar", "V1")
            .unwrap();
        assert_eq!(bar1(2), 20);
        assert!(img.get::<*const c_void>("bar").is_err());
        assert!(img.get::<*const c_void>("foo@V1").is_err());
        assert!(img.get::<*const c_void>("foo_v1").is_err());
        let plain = img
            .get::<unsafe extern "C" fn() -> i32>("versioned_plain")
            .unwrap();
        assert_eq!(plain(), 42);
    }
}

#[test]
fn thread_local_and_ifunc_symbols_after_the_index() {
    // An ifunc is resolved at each lookup, through the index too.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("ifunc")) }.unwrap();
    force_index(&img);
    assert!(img.__export_index().flatten().is_some());
    // SAFETY: int scale(int), an ifunc resolving to times_three.
    let scale = unsafe { img.get::<unsafe extern "C" fn(i32) -> i32>("scale") }.unwrap();
    assert_eq!(unsafe { scale(5) }, 15);
    assert_eq!(Ok(scale.as_ptr() as usize), reference(&img, b"scale", None));

    // A thread-local symbol has one address per thread, through the index.
    let bytes = test_lib("threadlocal");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    force_index(&img);
    assert!(img.__export_index().flatten().is_some());
    let elf = Elf::parse(&bytes).unwrap();
    let tls_names: Vec<String> = elf
        .dynsyms
        .iter()
        .filter(|s| s.st_type() == goblin::elf::sym::STT_TLS && s.st_shndx != 0)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name).map(str::to_owned))
        .collect();
    assert!(!tls_names.is_empty());
    for name in &tls_names {
        let here = get(&img, name.as_bytes()).unwrap();
        assert_eq!(Ok(here), reference(&img, name.as_bytes(), None));
        let there = std::thread::scope(|s| {
            s.spawn(|| {
                let a = get(&img, name.as_bytes()).unwrap();
                assert_eq!(Ok(a), reference(&img, name.as_bytes(), None));
                a
            })
            .join()
            .unwrap()
        });
        assert_ne!(here, there, "{name}: one instance per thread");
    }
}

#[test]
fn threads_agree_across_the_build() {
    for bytes in [machine_lib("libsqlite3.so.0"), test_lib("tls")] {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        let names = queries(&bytes);
        let threads = 4;
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (img, names, barrier) = (&img, &names, &barrier);
                s.spawn(move || {
                    // Each thread's own reference (thread-local symbols
                    // differ between threads).
                    let want: Vec<Answer> = names.iter().map(|n| reference(img, n, None)).collect();
                    barrier.wait();
                    // Several passes in different orders: the first crosses
                    // the threshold while other threads are looking up.
                    for pass in 0..3 {
                        for k in 0..names.len() {
                            let i = (k * (2 * t + 1) + pass * 7) % names.len();
                            assert_eq!(get(img, &names[i]), want[i], "{:?}", names[i]);
                        }
                    }
                });
            }
        });
        assert!(img.__export_index().flatten().is_some());
    }
}

/// File offset of a virtual address, through the PT_LOADs.
fn file_offset(elf: &Elf, vaddr: u64) -> usize {
    elf.program_headers
        .iter()
        .find(|p| {
            p.p_type == goblin::elf::program_header::PT_LOAD
                && vaddr >= p.p_vaddr
                && vaddr < p.p_vaddr + p.p_filesz
        })
        .map(|p| (vaddr - p.p_vaddr + p.p_offset) as usize)
        .expect("address in the file")
}

#[test]
fn a_degenerate_hash_table_gives_up_the_index_and_still_answers() {
    // One GNU hash chain through all thousand symbols: every bucket starts
    // at the first hashed symbol and only the last entry ends the chain.
    // Lookups stay correct (each walks the chain), but indexing every
    // export would cost a thousand such walks: building is given up.
    let mut bytes = test_lib("many_gnu");
    let (at, nbuckets, symoffset, bloom, count) = {
        let elf = Elf::parse(&bytes).unwrap();
        let dynamic = elf.dynamic.as_ref().unwrap();
        let vaddr = dynamic
            .dyns
            .iter()
            .find(|d| d.d_tag == goblin::elf::dynamic::DT_GNU_HASH)
            .unwrap()
            .d_val;
        let at = file_offset(&elf, vaddr);
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        (
            at,
            word(0) as usize,
            word(1) as usize,
            word(2) as usize,
            elf.dynsyms.len(),
        )
    };
    let buckets = at + 16 + 8 * bloom;
    for b in 0..nbuckets {
        bytes[buckets + 4 * b..buckets + 4 * b + 4]
            .copy_from_slice(&(symoffset as u32).to_le_bytes());
    }
    let chains = buckets + 4 * nbuckets;
    for i in 0..count - symoffset {
        let c = chains + 4 * i;
        let mut v = u32::from_le_bytes(bytes[c..c + 4].try_into().unwrap()) & !1;
        if i == count - symoffset - 1 {
            v |= 1;
        }
        bytes[c..c + 4].copy_from_slice(&v.to_le_bytes());
    }
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    force_index(&img);
    assert_eq!(img.__export_index(), Some(None), "given up");
    let names = queries(&bytes);
    assert_same_answers(&img, &names, &versions(&bytes), "many_gnu, one chain");
    // SAFETY: const char *many_NNN(void).
    let f = unsafe { img.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>("many_999") }
        .unwrap();
    // SAFETY: a static string of the live image.
    assert_eq!(unsafe { std::ffi::CStr::from_ptr(f()) }.to_bytes(), b"999");
}

#[test]
fn names_the_hash_table_cannot_find_stay_unfound() {
    // many_500's hash chain entry no longer matches its name, so the hash
    // table cannot find it; many_501 is renamed to many_502 (a second
    // symbol of that name, in another chain). The index must agree: no
    // many_500, no many_501, and many_502 is still the original.
    let mut bytes = test_lib("many_gnu");
    let (sym_of, chain_of, name_field) = {
        let elf = Elf::parse(&bytes).unwrap();
        let dynamic = elf.dynamic.as_ref().unwrap();
        let tag = |t| dynamic.dyns.iter().find(|d| d.d_tag == t).unwrap().d_val;
        let hash = file_offset(&elf, tag(goblin::elf::dynamic::DT_GNU_HASH));
        let symtab = file_offset(&elf, tag(goblin::elf::dynamic::DT_SYMTAB));
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (nbuckets, symoffset, bloom) = (word(hash), word(hash + 4), word(hash + 8));
        let chains = hash + 16 + 8 * bloom + 4 * nbuckets;
        let index = |name: &str| {
            elf.dynsyms
                .iter()
                .position(|s| elf.dynstrtab.get_at(s.st_name) == Some(name))
                .unwrap()
        };
        let sym_of = |name: &str| symtab + 24 * index(name);
        let chain_of = |name: &str| chains + 4 * (index(name) - symoffset);
        (
            [sym_of("many_501"), sym_of("many_502")],
            chain_of("many_500"),
            word(sym_of("many_502")),
        )
    };
    bytes[chain_of] ^= 0x10;
    bytes[sym_of[0]..sym_of[0] + 4].copy_from_slice(&(name_field as u32).to_le_bytes());
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let listed: BTreeSet<&[u8]> = img.exports().map(|(n, _)| n).collect();
    assert!(
        listed.contains(&b"many_500"[..]),
        "still an export by the table"
    );
    force_index(&img);
    assert!(img.__export_index().flatten().is_some());
    for name in ["many_500", "many_501"] {
        assert!(get(&img, name.as_bytes()).is_err(), "{name}");
        assert_eq!(
            get(&img, name.as_bytes()),
            reference(&img, name.as_bytes(), None)
        );
    }
    // SAFETY: const char *many_NNN(void).
    let f = unsafe { img.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>("many_502") }
        .unwrap();
    // SAFETY: a static string of the live image.
    assert_eq!(unsafe { std::ffi::CStr::from_ptr(f()) }.to_bytes(), b"502");
    assert_same_answers(
        &img,
        &queries(&bytes),
        &versions(&bytes),
        "many_gnu, patched",
    );
}
