//! Differential tests: every test library of `test-dylibs/`, and zlib,
//! SQLite, GMP and libuuid of the machine, loaded three ways: by memdl from bytes, by memdl
//! from a file (segments mapped, not copied) and by the system loader (from
//! a memfd). The same exercise runs once per load and returns what it
//! observed; the lists must equal each other and values worked out by hand
//! (loaders could agree on a wrong answer). Both backends must also export
//! the same symbols at the same offsets from their base.
//!
//! One difference is by design and pinned by its own test: memdl binds a
//! library's references to its own symbols to its own definitions, where
//! the system loader lets the process's global scope interpose.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_ulong, c_void, CStr, CString};
use std::io::Write;
use std::sync::Mutex;

use goblin::elf::program_header::PF_W;
use memdl::{ElfImage, Error, Library, Options, Placement, SystemImage};

mod common;
use common::{assert_no_wx, machine_lib, mappings_in, test_lib};

/// What an exercise saw, in order: (what it did, what came back).
type Observations = Vec<(String, String)>;

/// Collects observations; values are kept in their `Debug` form.
#[derive(Default)]
struct Seen(Observations);

impl Seen {
    fn see(&mut self, what: impl Into<String>, value: impl std::fmt::Debug) {
        self.0.push((what.into(), format!("{value:?}")));
    }
}

/// Expected observations written out by hand: `"what" => value`.
macro_rules! expect {
    ($($what:expr => $value:expr),* $(,)?) => {
        vec![$(($what.to_string(), format!("{:?}", $value))),*]
    };
}

/// `name` from `lib`, typed as `F`.
///
/// # Safety
/// `F` must be the symbol's true type (a function pointer of the right
/// signature or a raw pointer to data of the right type).
unsafe fn sym<F: Copy>(lib: &dyn Library, name: &str) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    let addr = lib
        .symbol_address(name.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", lib.backend()));
    // SAFETY: pointer-sized (checked above); the caller promises the type.
    unsafe { std::mem::transmute_copy::<*const c_void, F>(&addr) }
}

/// Whether `lib` exports `name`.
fn exports(lib: &dyn Library, name: &str) -> bool {
    lib.symbol_address(name.as_bytes()).is_ok()
}

/// One load of a library, labelled with how it was loaded.
struct Loaded {
    how: &'static str,
    lib: Box<dyn Library>,
}

/// `bytes` loaded three ways: by memdl from memory, by memdl from a file
/// (where segments are mapped from the file, so the bss tail of a file page
/// must be zeroed by hand), both under `options`, and by the system loader.
fn backends(bytes: &[u8], options: &Options) -> Vec<Loaded> {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let from_bytes = unsafe { options.load(bytes) }.expect("memdl load");
    // The library sits at a 64 KiB offset in the file: congruent to its
    // addresses for every page size, so its segments can be mapped.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let from_fd =
        unsafe { ElfImage::load_fd_with(in_file(bytes), 65536, bytes.len() as u64, options) }
            .expect("memdl load_fd");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let system = unsafe { options.load_system(bytes) }.expect("system load");
    assert_no_wx();
    vec![
        Loaded {
            how: "memdl from bytes",
            lib: Box::new(from_bytes),
        },
        Loaded {
            how: "memdl from a file",
            lib: Box::new(from_fd),
        },
        Loaded {
            how: "system loader",
            lib: Box::new(system),
        },
    ]
}

/// A temporary file holding 64 KiB of junk, then `bytes`.
fn in_file(bytes: &[u8]) -> std::fs::File {
    let mut file = tempfile::tempfile().expect("temporary file");
    file.write_all(&[0x5a; 65536]).unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// Runs `exercise` on every backend and checks each result against the
/// others and against `expected`.
fn differential(bytes: &[u8], exercise: fn(&dyn Library) -> Observations, expected: Observations) {
    let results: Vec<(&str, Observations)> = backends(bytes, &Options::new())
        .iter()
        .map(|l| (l.how, exercise(&*l.lib)))
        .collect();
    compare(&results, &expected);
}

fn compare(results: &[(&str, Observations)], expected: &Observations) {
    let (first, reference) = &results[0];
    for (backend, seen) in &results[1..] {
        assert_eq!(seen, reference, "{backend} and {first} disagree");
    }
    for (backend, seen) in results {
        assert_eq!(seen, expected, "{backend} is not what was expected");
    }
}

/// The value of the dynamic entry tagged `tag` in `bytes`, if there is one.
fn dynamic_entry(bytes: &[u8], tag: u64) -> Option<u64> {
    let elf = goblin::elf::Elf::parse(bytes).expect("parse");
    let dynamic = elf.dynamic.expect("dynamic section");
    dynamic
        .dyns
        .iter()
        .find(|d| d.d_tag == tag)
        .map(|d| d.d_val)
}

fn has_dynamic(bytes: &[u8], tag: u64) -> bool {
    dynamic_entry(bytes, tag).is_some()
}

/// Names an independent reading of the file says are exported: defined;
/// global, weak or unique; default or protected visibility; not
/// thread-local; not a hidden (non-default) version. Absolute symbols (`SHN_ABS`, such as the
/// symbols naming version definitions) map to their value, others to `None`.
fn exported_names(bytes: &[u8]) -> BTreeMap<String, Option<u64>> {
    use goblin::elf::section_header::SHN_ABS;
    use goblin::elf::sym::{
        STB_GLOBAL, STB_GNU_UNIQUE, STB_WEAK, STT_TLS, STV_DEFAULT, STV_PROTECTED,
    };
    let elf = goblin::elf::Elf::parse(bytes).expect("parse");
    let mut names = BTreeMap::new();
    for (i, s) in elf.dynsyms.iter().enumerate() {
        let bind = s.st_bind();
        let vis = s.st_visibility();
        let hidden_version = elf
            .versym
            .as_ref()
            .and_then(|v| v.get_at(i))
            .is_some_and(|v| v.is_hidden());
        if s.st_shndx == 0
            || !matches!(bind, STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
            || !(vis == STV_DEFAULT || vis == STV_PROTECTED)
            || s.st_type() == STT_TLS
            || hidden_version
        {
            continue;
        }
        if let Some(name) = elf.dynstrtab.get_at(s.st_name) {
            if !name.is_empty() {
                let absolute = (s.st_shndx == SHN_ABS as usize).then_some(s.st_value);
                names.insert(name.to_owned(), absolute);
            }
        }
    }
    names
}

/// Both backends export the same names (the file's own list), each at the
/// same offset from the image base.
fn same_exports(bytes: &[u8]) {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let custom = unsafe { ElfImage::load(bytes) }.expect("memdl load");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let system = unsafe { SystemImage::load(bytes) }.expect("system load");
    let listed: BTreeSet<String> = custom
        .exports()
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    let expected = exported_names(bytes);
    assert_eq!(
        listed,
        expected.keys().cloned().collect(),
        "memdl's exports()"
    );
    assert!(!listed.is_empty());
    for (name, absolute) in &expected {
        if let Some(value) = *absolute {
            // Not relative to the base. dlsym's answer for value 0 is NULL,
            // which cannot be told from "not found".
            let at = |lib: &dyn Library| lib.symbol_address(name.as_bytes()).ok();
            assert_eq!(at(&custom), Some(value as *const c_void), "{name}");
            let want = (value != 0).then_some(value as *const c_void);
            assert_eq!(at(&system), want, "{name}");
            continue;
        }
        // An ifunc's address is what its resolver returns, on both: compare
        // lookups, not the listed (resolver) address.
        let offset = |lib: &dyn Library| {
            let addr = lib
                .symbol_address(name.as_bytes())
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", lib.backend()));
            (addr as usize).wrapping_sub(lib.base_address())
        };
        assert_eq!(
            offset(&custom),
            offset(&system),
            "{name}: offset from base differs"
        );
    }
}

/// Every test library and the machine's zlib, SQLite, GMP and libuuid.
#[test]
fn both_backends_export_the_same_symbols_at_the_same_offsets() {
    for name in [
        "example",
        "uselibc",
        "lifecycle",
        "linkage",
        "ifunc",
        "versioned",
        "relr",
        "norelr",
        "uselibc_relr",
        "bigbss",
        "sysv",
        "nodelete",
        "callback",
        "pointers",
        "many_gnu",
        "many_sysv",
        "many_both",
        "threadlocal",
        "cxx",
    ] {
        same_exports(&test_lib(name));
    }
    same_exports(&machine_lib("libz.so.1"));
    same_exports(&machine_lib("libsqlite3.so.0"));
    same_exports(&machine_lib("libgmp.so.10"));
    same_exports(&machine_lib("libuuid.so.1"));
}

// ---------------------------------------------------------------------------
// example: arithmetic, data, pointers in data, function pointer tables.

type BinOp = unsafe extern "C" fn(c_int, c_int) -> c_int;

fn exercise_example(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures and data types of test-dylibs/example.c.
    unsafe {
        for (name, a, b) in [("add", 2, 3), ("sub", 2, 3), ("mul", -4, 6)] {
            s.see(format!("{name}({a}, {b})"), sym::<BinOp>(lib, name)(a, b));
        }
        s.see("answer", *sym::<*const c_int>(lib, "answer"));
        let counter = sym::<*mut c_int>(lib, "counter");
        s.see("counter", *counter);
        s.see(
            "bump()",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "bump")(),
        );
        s.see(
            "get_counter()",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "get_counter")(),
        );
        sym::<unsafe extern "C" fn(c_int)>(lib, "set_counter")(7);
        s.see("counter after set_counter(7)", *counter);
        *counter = -3;
        s.see(
            "get_counter() after writing -3",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "get_counter")(),
        );
        s.see(
            "counter_ptr == &counter",
            *sym::<*const *mut c_int>(lib, "counter_ptr") == counter,
        );
        let ops = sym::<*const [usize; 3]>(lib, "ops");
        for (i, name) in ["add", "sub", "mul"].iter().enumerate() {
            s.see(
                format!("ops[{i}] == &{name}"),
                (*ops)[i] == lib.symbol_address(name.as_bytes()).unwrap() as usize,
            );
        }
        let apply = sym::<unsafe extern "C" fn(c_int, c_int, c_int) -> c_int>(lib, "apply");
        for op in 0..4 {
            s.see(format!("apply({op}, 7, 5)"), apply(op, 7, 5));
        }
        let op_name = sym::<unsafe extern "C" fn(c_int) -> *const c_char>(lib, "op_name");
        for op in 0..4 {
            let p = op_name(op);
            let name = (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned());
            s.see(format!("op_name({op})"), name);
        }
        let fib = sym::<unsafe extern "C" fn(c_int) -> i64>(lib, "fib");
        s.see("fib(10)", fib(10));
        s.see("fib(50)", fib(50));
        let checksum = sym::<unsafe extern "C" fn(*const u8, c_ulong) -> u32>(lib, "checksum");
        s.see("checksum(\"hello\")", checksum(b"hello".as_ptr(), 5));
    }
    s.0
}

fn expected_example() -> Observations {
    expect![
        "add(2, 3)" => 5,
        "sub(2, 3)" => -1,
        "mul(-4, 6)" => -24,
        "answer" => 42,
        "counter" => 40,
        "bump()" => 41,
        "get_counter()" => 41,
        "counter after set_counter(7)" => 7,
        "get_counter() after writing -3" => -3,
        "counter_ptr == &counter" => true,
        "ops[0] == &add" => true,
        "ops[1] == &sub" => true,
        "ops[2] == &mul" => true,
        "apply(0, 7, 5)" => 12,
        "apply(1, 7, 5)" => 2,
        "apply(2, 7, 5)" => 35,
        "apply(3, 7, 5)" => -1,
        "op_name(0)" => Some("add"),
        "op_name(1)" => Some("sub"),
        "op_name(2)" => Some("mul"),
        "op_name(3)" => None::<&str>,
        "fib(10)" => 55,
        "fib(50)" => 12_586_269_025i64,
        // FNV-1a 32 of "hello".
        "checksum(\"hello\")" => 0x4f9f_2cabu32,
    ]
}

#[test]
fn example_arithmetic_data_pointers_and_tables() {
    differential(&test_lib("example"), exercise_example, expected_example());
}

/// The same code with only a SysV hash table: lookups go through DT_HASH.
#[test]
fn sysv_hash_only() {
    let bytes = test_lib("sysv");
    assert!(has_dynamic(&bytes, goblin::elf::dynamic::DT_HASH));
    assert!(!has_dynamic(&bytes, goblin::elf::dynamic::DT_GNU_HASH));
    differential(&bytes, exercise_example, expected_example());
}

// ---------------------------------------------------------------------------
// uselibc: malloc/free, snprintf, qsort with a comparator in the library.

fn exercise_uselibc(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures of test-dylibs/uselibc.c; buffers are as long
    // as the sizes passed.
    unsafe {
        let sort = sym::<unsafe extern "C" fn(*const c_int, c_int) -> i64>(lib, "sort_checksum");
        let v = [5, 3, 9, 1, 7];
        s.see("sort_checksum([5, 3, 9, 1, 7])", sort(v.as_ptr(), 5));
        let v: Vec<c_int> = (0..100).rev().collect();
        s.see("sort_checksum(99..=0) == sorted order", {
            let sorted = (0..100i64).fold(0i64, |acc, x| acc.wrapping_mul(31).wrapping_add(x));
            sort(v.as_ptr(), 100) == sorted
        });
        type Format =
            unsafe extern "C" fn(*mut c_char, c_ulong, c_int, f64, *const c_char) -> c_int;
        let format = sym::<Format>(lib, "format_point");
        for size in [64usize, 5] {
            let mut buf = vec![0 as c_char; size];
            let n = format(buf.as_mut_ptr(), size as c_ulong, 3, 2.5, c"pt".as_ptr());
            let text = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            s.see(
                format!("format_point(size {size}, 3, 2.5, \"pt\")"),
                (n, text),
            );
        }
        let repeat =
            sym::<unsafe extern "C" fn(*const c_char, c_int) -> *mut c_char>(lib, "repeat");
        let free_string = sym::<unsafe extern "C" fn(*mut c_char)>(lib, "free_string");
        let r = repeat(c"ab".as_ptr(), 3);
        s.see(
            "repeat(\"ab\", 3)",
            CStr::from_ptr(r).to_string_lossy().into_owned(),
        );
        free_string(r);
    }
    s.0
}

/// Also linked with DT_RELR, which adds a GLIBC_ABI_DT_RELR version need
/// naming no symbol.
#[test]
fn uselibc_allocation_formatting_and_sorting() {
    const DT_RELR: u64 = 36;
    // As in packed_relative_relocations: x86_64 binutils always packs.
    if cfg!(target_arch = "x86_64") {
        assert!(has_dynamic(&test_lib("uselibc_relr"), DT_RELR));
    }
    for name in ["uselibc", "uselibc_relr"] {
        check_uselibc(name);
    }
}

fn check_uselibc(name: &str) {
    differential(
        &test_lib(name),
        exercise_uselibc,
        expect![
            // ((((1*31+3)*31+5)*31+7)*31+9)
            "sort_checksum([5, 3, 9, 1, 7])" => 1_017_925i64,
            "sort_checksum(99..=0) == sorted order" => true,
            "format_point(size 64, 3, 2.5, \"pt\")" => (12, "pt(3, 2.500)"),
            "format_point(size 5, 3, 2.5, \"pt\")" => (12, "pt(3"),
            "repeat(\"ab\", 3)" => "ababab",
        ],
    );
}

// ---------------------------------------------------------------------------
// lifecycle: order of initialisers and finalisers, initialiser arguments.

extern "C" {
    static environ: *const *const c_char;
}

/// Appends finaliser events to the `Mutex<Vec<c_int>>` behind `ctx`.
extern "C" fn record_event(ctx: *mut c_void, event: c_int) {
    // SAFETY: `ctx` is the mutex the test registered along with this sink;
    // it outlives the image, whose finalisers are the only callers.
    let events = unsafe { &*(ctx as *const Mutex<Vec<c_int>>) };
    events.lock().unwrap().push(event);
}

/// Registers `record_event` through the library's `set_sink(void (*)(void
/// *, int), void *)`, unloads the library, and returns the events its
/// finalisers reported, as the observation `label`.
fn unload_events(lib: Box<dyn Library>, set_sink: &str, label: &str) -> (String, String) {
    let events = Mutex::new(Vec::<c_int>::new());
    // SAFETY: the library's sink setter has that signature; the sink and
    // `events` outlive the image, which is dropped right after.
    unsafe {
        type SetSink = unsafe extern "C" fn(extern "C" fn(*mut c_void, c_int), *mut c_void);
        sym::<SetSink>(&*lib, set_sink)(record_event, &events as *const _ as *mut c_void);
    }
    drop(lib);
    (
        label.to_owned(),
        format!("{:?}", events.into_inner().unwrap()),
    )
}

fn exercise_lifecycle(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures of test-dylibs/lifecycle.c; argv and envp are
    // the NULL-terminated arrays the initialisers were given.
    unsafe {
        let events =
            sym::<unsafe extern "C" fn(*mut c_int, c_int) -> c_int>(lib, "lifecycle_events");
        let mut buf = [0; 16];
        let n = events(buf.as_mut_ptr(), 16);
        s.see("initialisers run", &buf[..n.clamp(0, 16) as usize]);
        type Args = unsafe extern "C" fn(
            c_int,
            *mut *const *const c_char,
            *mut *const *const c_char,
        ) -> c_int;
        let args = sym::<Args>(lib, "lifecycle_init_args");
        for event in 1..=4 {
            let (mut argv, mut envp) = (std::ptr::null(), std::ptr::null());
            let argc = args(event, &mut argv, &mut envp);
            s.see(format!("initialiser {event}: argc"), argc);
            if argv.is_null() {
                // The initialiser never ran (or got no argv): nothing to read.
                s.see(format!("initialiser {event}: argv"), "NULL");
                continue;
            }
            let strings: Vec<String> = (0..argc.max(0) as usize)
                .map(|i| CStr::from_ptr(*argv.add(i)).to_string_lossy().into_owned())
                .collect();
            s.see(format!("initialiser {event}: argv"), strings);
            s.see(
                format!("initialiser {event}: argv[argc] is NULL"),
                (*argv.add(argc as usize)).is_null(),
            );
            s.see(
                format!("initialiser {event}: envp is environ"),
                envp == environ,
            );
        }
    }
    s.0
}

#[test]
fn lifecycle_order_and_arguments() {
    let bytes = test_lib("lifecycle");
    let args: Vec<String> = std::env::args().collect();
    let mut expected = expect!["initialisers run" => [1, 2, 3, 4]];
    for event in 1..=4 {
        expected.extend(expect![
            format!("initialiser {event}: argc") => args.len() as c_int,
            format!("initialiser {event}: argv") => args,
            format!("initialiser {event}: argv[argc] is NULL") => true,
            format!("initialiser {event}: envp is environ") => true,
        ]);
    }
    expected.extend(expect!["finalisers run" => [13, 15, 12, 11, 14]]);

    let mut results = Vec::new();
    for Loaded { how, lib } in backends(&bytes, &Options::new()) {
        let mut seen = exercise_lifecycle(&*lib);
        seen.push(unload_events(lib, "lifecycle_set_sink", "finalisers run"));
        results.push((how, seen));
    }
    compare(&results, &expected);
}

// ---------------------------------------------------------------------------
// linkage: weak undefined (0), defined weak, hidden/protected/default.

fn exercise_linkage(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures and data types of test-dylibs/linkage.c.
    unsafe {
        let addr = |name| sym::<unsafe extern "C" fn() -> c_ulong>(lib, name)();
        s.see("absent_fn_address()", addr("absent_fn_address"));
        s.see("absent_data_address()", addr("absent_data_address"));
        s.see(
            "absent_fn_or(5, -1)",
            sym::<BinOp>(lib, "absent_fn_or")(5, -1),
        );
        s.see(
            "weak_answer()",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "weak_answer")(),
        );
        s.see("weak_value", *sym::<*const c_int>(lib, "weak_value"));
        s.see(
            "protected_triple(4)",
            sym::<unsafe extern "C" fn(c_int) -> c_int>(lib, "protected_triple")(4),
        );
        s.see(
            "visible_combo(3)",
            sym::<unsafe extern "C" fn(c_int) -> c_int>(lib, "visible_combo")(3),
        );
    }
    for name in [
        "hidden_double",
        "hidden_value",
        "local_square",
        "memdl_test_absent_fn",
        "memdl_test_absent_data",
    ] {
        s.see(format!("exports {name}"), exports(lib, name));
    }
    s.0
}

#[test]
fn weak_symbols_and_visibility() {
    differential(
        &test_lib("linkage"),
        exercise_linkage,
        expect![
            "absent_fn_address()" => 0u64,
            "absent_data_address()" => 0u64,
            "absent_fn_or(5, -1)" => -1,
            "weak_answer()" => 7,
            "weak_value" => 1234,
            "protected_triple(4)" => 12,
            // 2*3 + 3*3 + 3*3 + 99
            "visible_combo(3)" => 123,
            "exports hidden_double" => false,
            "exports hidden_value" => false,
            "exports local_square" => false,
            "exports memdl_test_absent_fn" => false,
            "exports memdl_test_absent_data" => false,
        ],
    );
}

/// Every import of liblinkage.so is weak, and none is defined anywhere: a
/// load that may not look anything up in the host still succeeds, with each
/// at 0, and the library works.
#[test]
fn weak_imports_need_no_host() {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .deny_host_lookups()
            .load(&test_lib("linkage"))
    }
    .unwrap();
    let seen = exercise_linkage(&img);
    assert_eq!(
        seen[..3],
        expect![
            "absent_fn_address()" => 0u64,
            "absent_data_address()" => 0u64,
            "absent_fn_or(5, -1)" => -1,
        ]
    );
    assert_eq!(seen[6], ("visible_combo(3)".to_owned(), "123".to_owned()));
}

/// Two loads of one library by the same backend have their own data.
#[test]
fn loads_do_not_share_state() {
    let bytes = test_lib("example");
    let (first, second) = (
        backends(&bytes, &Options::new()),
        backends(&bytes, &Options::new()),
    );
    type Counter = unsafe extern "C" fn() -> c_int;
    for (a, b) in first.iter().zip(&second) {
        // SAFETY: bump and get_counter are int (*)(void).
        let (bump_a, get_b) = unsafe {
            (
                sym::<Counter>(&*a.lib, "bump"),
                sym::<Counter>(&*b.lib, "get_counter"),
            )
        };
        assert_ne!(a.lib.base_address(), b.lib.base_address(), "{}", a.how);
        // SAFETY: as above.
        unsafe {
            assert_eq!((bump_a(), bump_a(), get_b()), (41, 42, 40), "{}", a.how);
        }
    }
}

// ---------------------------------------------------------------------------
// ifunc: lookup, JUMP_SLOT, R_*_64 and IRELATIVE all reach the chosen code.

fn exercise_ifunc(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    type IntFn = unsafe extern "C" fn(c_int) -> c_int;
    // SAFETY: the signatures of test-dylibs/ifunc.c.
    unsafe {
        s.see("scale(5) by lookup", sym::<IntFn>(lib, "scale")(5));
        for (name, x) in [
            ("call_scale", 5),
            ("call_negate", 5),
            ("call_scale_ptr", 4),
            ("call_negate_ptr", 4),
        ] {
            s.see(format!("{name}({x})"), sym::<IntFn>(lib, name)(x));
        }
        let from_data = sym::<unsafe extern "C" fn() -> usize>(lib, "scale_address")();
        s.see(
            "scale_ptr == lookup of scale",
            from_data == lib.symbol_address(b"scale").unwrap() as usize,
        );
    }
    s.see("exports negate", exports(lib, "negate"));
    s.0
}

#[test]
fn ifunc_resolved_for_lookups_and_relocations() {
    differential(
        &test_lib("ifunc"),
        exercise_ifunc,
        expect![
            "scale(5) by lookup" => 15,
            "call_scale(5)" => 16,
            "call_negate(5)" => -5,
            "call_scale_ptr(4)" => 12,
            "call_negate_ptr(4)" => -4,
            "scale_ptr == lookup of scale" => true,
            "exports negate" => false,
        ],
    );
    // ElfImage::exports() lists an ifunc where the symbol table puts it,
    // at its resolver; only a lookup calls the resolver.
    let bytes = test_lib("ifunc");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    let listed = img.exports().find(|(n, _)| *n == b"scale").unwrap().1;
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    let st_value = elf
        .dynsyms
        .iter()
        .find(|s| elf.dynstrtab.get_at(s.st_name) == Some("scale"))
        .unwrap()
        .st_value;
    assert_eq!(listed, img.base_address() + st_value as usize);
    assert_ne!(listed, img.symbol_address(b"scale").unwrap() as usize);
}

// ---------------------------------------------------------------------------
// versioned: foo@V1, foo@@V2.

#[test]
fn symbol_versions() {
    let bytes = test_lib("versioned");
    type IntFn = unsafe extern "C" fn(c_int) -> c_int;
    // SAFETY: a trusted test or machine library (its initialisers run).
    let custom = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let system = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_no_wx();
    // `versioned(name, version)` is the backend's versioned lookup.
    let observe = |plain: &dyn Library, versioned: &dyn Fn(&str, &str) -> Option<IntFn>| {
        let mut s = Seen::default();
        // SAFETY: foo@V1, foo@@V2 and bar@V1 are int (*)(int);
        // versioned_plain is int (*)(void).
        unsafe {
            s.see("foo(10)", sym::<IntFn>(plain, "foo")(10));
            s.see(
                "versioned_plain()",
                sym::<unsafe extern "C" fn() -> c_int>(plain, "versioned_plain")(),
            );
            for (name, v) in [
                ("foo", "V1"),
                ("foo", "V2"),
                ("foo", "V3"),
                ("bar", "V1"),
                ("bar", "V2"),
                ("versioned_plain", "V1"),
            ] {
                s.see(format!("{name}@{v}(10)"), versioned(name, v).map(|f| f(10)));
            }
        }
        s.see("exports bar", exports(plain, "bar"));
        s.0
    };
    let results = [
        (
            "memdl",
            // SAFETY: the caller of `versioned` names the true type.
            observe(&custom, &|n, v| unsafe {
                custom.get_versioned::<IntFn>(n, v).ok().map(|f| *f)
            }),
        ),
        (
            "system loader",
            // SAFETY: as above.
            observe(&system, &|n, v| unsafe {
                system.get_versioned::<IntFn>(n, v).ok().map(|f| *f)
            }),
        ),
    ];
    compare(
        &results,
        &expect![
            "foo(10)" => 12,
            "versioned_plain()" => 42,
            "foo@V1(10)" => Some(11),
            "foo@V2(10)" => Some(12),
            "foo@V3(10)" => None::<c_int>,
            "bar@V1(10)" => Some(100),
            "bar@V2(10)" => None::<c_int>,
            // Only called through its function pointer when found, which
            // it must not be: it is defined at V2 only.
            "versioned_plain@V1(10)" => None::<c_int>,
            // bar exists only as a hidden version.
            "exports bar" => false,
        ],
    );
}

// ---------------------------------------------------------------------------
// relr / norelr: the same pointer-heavy data, packed (DT_RELR) and not.

fn exercise_relr(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures of test-dylibs/relr.c.
    unsafe {
        s.see(
            "relr_table_sum()",
            sym::<unsafe extern "C" fn() -> i64>(lib, "relr_table_sum")(),
        );
        let word = sym::<unsafe extern "C" fn(c_int) -> *const c_char>(lib, "relr_word");
        let words: Vec<Option<String>> = (0..9)
            .map(|i| {
                let p = word(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect();
        s.see("relr_word(0..9)", words);
        s.see(
            "relr_far_offset()",
            sym::<unsafe extern "C" fn() -> i64>(lib, "relr_far_offset")(),
        );
    }
    s.0
}

fn expected_relr() -> Observations {
    let mut words: Vec<Option<&str>> = [
        "zero", "one", "two", "three", "four", "five", "six", "seven",
    ]
    .map(Some)
    .to_vec();
    words.push(None);
    expect![
        // 2 * (0 + .. + 79) + name lengths (10 * 1 + 70 * 2)
        "relr_table_sum()" => 6470i64,
        "relr_word(0..9)" => words,
        "relr_far_offset()" => 100i64,
    ]
}

#[test]
fn packed_relative_relocations() {
    const DT_RELR: u64 = 36;
    let packed = test_lib("relr");
    // GNU ld packs relative relocations for aarch64 only from binutils 2.41
    // on (older ones warn and ignore the flag); x86_64 has had it since 2.38.
    if cfg!(target_arch = "x86_64") {
        assert!(has_dynamic(&packed, DT_RELR), "librelr.so has DT_RELR");
    }
    differential(&packed, exercise_relr, expected_relr());
    let plain = test_lib("norelr");
    assert!(!has_dynamic(&plain, DT_RELR), "libnorelr.so has no DT_RELR");
    differential(&plain, exercise_relr, expected_relr());
}

// ---------------------------------------------------------------------------
// bigbss: 64 MiB of zeroes after a partial data page.

fn exercise_bigbss(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures of test-dylibs/bigbss.c.
    unsafe {
        let size = sym::<unsafe extern "C" fn() -> c_ulong>(lib, "bigbss_size")();
        let read = sym::<unsafe extern "C" fn(c_ulong) -> i8>(lib, "bigbss_read");
        let write = sym::<unsafe extern "C" fn(c_ulong, i8)>(lib, "bigbss_write");
        s.see("bigbss_size()", size);
        let ends = [0, 1, size / 2, size - 2, size - 1];
        s.see("zero before writing", ends.map(|i| read(i)));
        for (k, &i) in ends.iter().enumerate() {
            write(i, k as i8 + 1);
        }
        s.see("read back", ends.map(|i| read(i)));
        s.see("bigbss_read(size) (out of range)", read(size));
        s.see(
            "initialised_sum()",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "initialised_sum")(),
        );
    }
    s.0
}

#[test]
fn large_bss() {
    differential(
        &test_lib("bigbss"),
        exercise_bigbss,
        expect![
            "bigbss_size()" => 64u64 << 20,
            "zero before writing" => [0i8; 5],
            "read back" => [1i8, 2, 3, 4, 5],
            "bigbss_read(size) (out of range)" => -1i8,
            "initialised_sum()" => 6,
        ],
    );
    // From a file the data segment is mapped, not copied: the zeroes seen
    // at the start of the bss were written by the loader over the file's
    // bytes that follow the data in the same page.
    let bytes = test_lib("bigbss");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load_fd(in_file(&bytes), 65536, bytes.len() as u64) }.unwrap();
    assert!(img
        .segments()
        .any(|s| s.placement == Placement::Mapped && s.flags & PF_W != 0));
}

// ---------------------------------------------------------------------------
// nodelete: DF_1_NODELETE keeps code, state and finaliser after the drop.

static NODELETE_FINALISED: Mutex<Vec<c_int>> = Mutex::new(Vec::new());

extern "C" fn nodelete_sink(count: c_int) {
    NODELETE_FINALISED.lock().unwrap().push(count);
}

#[test]
fn nodelete_stays_after_drop() {
    let bytes = test_lib("nodelete");
    let flags_1 = dynamic_entry(&bytes, goblin::elf::dynamic::DT_FLAGS_1).unwrap_or(0);
    assert_ne!(flags_1 & goblin::elf::dynamic::DF_1_NODELETE, 0);
    type Bump = unsafe extern "C" fn() -> c_int;
    type SetSink = unsafe extern "C" fn(Option<extern "C" fn(c_int)>);
    let mut results = Vec::new();
    for Loaded { how, lib } in backends(&bytes, &Options::new()) {
        let mut s = Seen::default();
        // SAFETY: the signatures of test-dylibs/nodelete.c. The raw
        // pointers are used after the drop only because DF_1_NODELETE
        // keeps the image loaded, which is what is checked first.
        unsafe {
            let bump = sym::<Bump>(&*lib, "nodelete_bump");
            let set_sink = sym::<SetSink>(&*lib, "nodelete_set_sink");
            s.see("bump() twice", [bump(), bump()]);
            set_sink(Some(nodelete_sink));
            drop(lib);
            s.see(
                "code still mapped",
                !mappings_in(bump as usize, bump as usize + 1).is_empty(),
            );
            s.see("bump() after drop", bump());
            // The process-exit run of finalisers (glibc's) must not reach
            // the sink either.
            set_sink(None);
        }
        s.see(
            "finaliser ran",
            !NODELETE_FINALISED.lock().unwrap().is_empty(),
        );
        results.push((how, s.0));
    }
    compare(
        &results,
        &expect![
            "bump() twice" => [1, 2],
            "code still mapped" => true,
            "bump() after drop" => 3,
            "finaliser ran" => false,
        ],
    );
}

// ---------------------------------------------------------------------------
// callback: an import bound to a function of the host.

/// Exported from the test executable (build.rs passes
/// `--export-dynamic-symbol=memdl_test_host_*`), so the global scope has it.
#[no_mangle]
pub extern "C" fn memdl_test_host_scale(x: c_int) -> c_int {
    10 * x + 1
}

extern "C" fn options_scale(x: c_int) -> c_int {
    100 * x
}

fn exercise_callback(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the signatures of test-dylibs/callback.c.
    unsafe {
        s.see(
            "callback_sum(2, 3)",
            sym::<BinOp>(lib, "callback_sum")(2, 3),
        );
        let target = sym::<unsafe extern "C" fn() -> usize>(lib, "callback_target")();
        s.see(
            "bound to",
            if target == memdl_test_host_scale as *const () as usize {
                "memdl_test_host_scale"
            } else if target == options_scale as *const () as usize {
                "options_scale"
            } else {
                "something else"
            },
        );
    }
    s.0
}

#[test]
fn host_callback_from_global_scope() {
    differential(
        &test_lib("callback"),
        exercise_callback,
        expect![
            // (10*2+1) + (10*3+1)
            "callback_sum(2, 3)" => 52,
            "bound to" => "memdl_test_host_scale",
        ],
    );
}

#[test]
fn host_callback_missing_when_host_lookups_are_denied() {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let err = unsafe {
        Options::new()
            .deny_host_lookups()
            .load(&test_lib("callback"))
    }
    .unwrap_err();
    match err {
        Error::UnresolvedSymbols { names } => assert_eq!(names, ["memdl_test_host_scale"]),
        other => panic!("expected UnresolvedSymbols, got {other:?}"),
    }
}

#[test]
fn host_callback_from_options_comes_first() {
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .symbol("memdl_test_host_scale", options_scale as *const c_void)
            .deny_host_lookups()
            .load(&test_lib("callback"))
    }
    .unwrap();
    assert_eq!(
        exercise_callback(&img),
        expect!["callback_sum(2, 3)" => 500, "bound to" => "options_scale"]
    );
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe {
        Options::new()
            .symbol("memdl_test_host_scale", options_scale as *const c_void)
            .load(&test_lib("callback"))
    }
    .unwrap();
    assert_eq!(
        exercise_callback(&img),
        expect!["callback_sum(2, 3)" => 500, "bound to" => "options_scale"]
    );
}

/// Also defined by libcallback.so.
#[no_mangle]
pub extern "C" fn memdl_test_host_interposed() -> c_int {
    2
}

/// A known difference: the system loader lets a definition in the global
/// scope (here the test executable's) interpose on a library's references
/// to its own default-visibility symbols; memdl binds them to the
/// library's own definitions, as if it were linked with -Bsymbolic, so what
/// the host process happens to export cannot redirect a loaded library's
/// internal calls. A plain lookup finds the library's own definition on
/// both.
#[test]
fn own_definitions_versus_interposition() {
    type Get = unsafe extern "C" fn() -> c_int;
    let results: Vec<(&str, [c_int; 2])> = backends(&test_lib("callback"), &Options::new())
        .iter()
        .map(|l| {
            // SAFETY: both are int (*)(void).
            let seen = unsafe {
                [
                    sym::<Get>(&*l.lib, "call_interposed")(),
                    sym::<Get>(&*l.lib, "memdl_test_host_interposed")(),
                ]
            };
            (l.how, seen)
        })
        .collect();
    assert_eq!(
        results,
        [
            ("memdl from bytes", [1, 1]),
            ("memdl from a file", [1, 1]),
            ("system loader", [2, 1]),
        ]
    );
}

// ---------------------------------------------------------------------------
// pointers: relocations with addends.

fn exercise_pointers(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    let numbers = lib.symbol_address(b"numbers").unwrap() as usize;
    let message = lib.symbol_address(b"message").unwrap() as usize;
    // SAFETY: the data types of test-dylibs/pointers.c; every pointer read
    // is one the library's data holds, into arrays it defines.
    unsafe {
        let fourth_slot = sym::<*const *const c_int>(lib, "fourth");
        // `int *const` with a relocation: .data.rel.ro, sealed after
        // relocation (RELRO).
        let perms: Vec<String> = mappings_in(fourth_slot as usize, fourth_slot as usize + 8)
            .into_iter()
            .map(|m| m.perms[..3].to_owned())
            .collect();
        s.see("protection of fourth (RELRO)", perms);
        let fourth = *fourth_slot;
        s.see("fourth == &numbers[3]", fourth as usize == numbers + 12);
        s.see("*fourth", *fourth);
        let before = *sym::<*const *const c_int>(lib, "before_numbers");
        s.see(
            "before_numbers + 1 == numbers",
            before as usize + 4 == numbers,
        );
        s.see("before_numbers[1]", *before.add(1));
        let tail = *sym::<*const *const c_char>(lib, "message_tail");
        s.see("message_tail == message + 7", tail as usize == message + 7);
        s.see("message_tail", CStr::from_ptr(tail).to_str().unwrap());
        let third = *sym::<*const *const c_int>(lib, "local_third");
        s.see("*local_third", *third);
        s.see(
            "local_third is inside the image",
            (third as usize).wrapping_sub(lib.base_address()) < 0x100_0000,
        );
        *third.cast_mut() = 30;
        s.see(
            "local_number(2) after writing through local_third",
            sym::<unsafe extern "C" fn(c_int) -> c_int>(lib, "local_number")(2),
        );
    }
    s.0
}

#[test]
fn relocations_with_addends() {
    differential(
        &test_lib("pointers"),
        exercise_pointers,
        expect![
            "protection of fourth (RELRO)" => ["r--"],
            "fourth == &numbers[3]" => true,
            "*fourth" => 13,
            "before_numbers + 1 == numbers" => true,
            "before_numbers[1]" => 10,
            "message_tail == message + 7" => true,
            "message_tail" => "loader",
            "*local_third" => 3,
            "local_third is inside the image" => true,
            "local_number(2) after writing through local_third" => 30,
        ],
    );
}

// ---------------------------------------------------------------------------
// many_*: a thousand exports under GNU, SysV and both hash tables.

fn exercise_many(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    let mut wrong = Vec::new();
    for i in 0..1000 {
        let suffix = format!("{i:03}");
        // SAFETY: many_NNN are const char *(*)(void) returning a literal.
        let got = unsafe {
            let f = sym::<unsafe extern "C" fn() -> *const c_char>(lib, &format!("many_{suffix}"));
            CStr::from_ptr(f()).to_string_lossy().into_owned()
        };
        if got != suffix {
            wrong.push((suffix, got));
        }
    }
    s.see(
        "lookups of many_000..many_999 reaching another function",
        wrong,
    );
    for name in [
        "many_1000",
        "many_",
        "many_0",
        "many_00",
        "many_0000",
        "Many_001",
    ] {
        s.see(format!("exports {name}"), exports(lib, name));
    }
    s.0
}

#[test]
fn a_thousand_exports_under_each_hash_style() {
    use goblin::elf::dynamic::{DT_GNU_HASH, DT_HASH};
    for (name, gnu, sysv) in [
        ("many_gnu", true, false),
        ("many_sysv", false, true),
        ("many_both", true, true),
    ] {
        let bytes = test_lib(name);
        assert_eq!(has_dynamic(&bytes, DT_GNU_HASH), gnu, "{name}");
        assert_eq!(has_dynamic(&bytes, DT_HASH), sysv, "{name}");
        let mut expected = expect![
            "lookups of many_000..many_999 reaching another function" => Vec::<(String, String)>::new(),
        ];
        for missing in [
            "many_1000",
            "many_",
            "many_0",
            "many_00",
            "many_0000",
            "Many_001",
        ] {
            expected.extend(expect![format!("exports {missing}") => false]);
        }
        differential(&bytes, exercise_many, expected);
    }
}

// ---------------------------------------------------------------------------
// threadlocal: one instance per thread, from the library and from lookups.

/// What one thread sees of libthreadlocal.so; `mark` renames its instance.
fn tls_thread_view(lib: &dyn Library, mark: u8) -> Vec<String> {
    type Bump = unsafe extern "C" fn() -> c_int;
    type Add = unsafe extern "C" fn(i64) -> i64;
    type Address = unsafe extern "C" fn() -> *mut c_int;
    type Name = unsafe extern "C" fn() -> *const c_char;
    type SetName = unsafe extern "C" fn(c_char);
    // SAFETY: the signatures of test-dylibs/threadlocal.c; the addresses
    // are this thread's instances, alive while it runs.
    unsafe {
        let bump = sym::<Bump>(lib, "tls_bump");
        let add = sym::<Add>(lib, "tls_add");
        let name = || {
            CStr::from_ptr(sym::<Name>(lib, "tls_name_get")())
                .to_string_lossy()
                .into_owned()
        };
        let mine = sym::<Address>(lib, "tls_counter_address")();
        let looked_up = sym::<*mut c_int>(lib, "tls_counter");
        let seen = vec![
            format!("name {}", name()),
            format!("bump {} {}", bump(), bump()),
            format!("add {} {}", add(5), add(7)),
            format!("lookup is this thread's instance {}", looked_up == mine),
            format!("read through lookup {}", *looked_up),
        ];
        sym::<SetName>(lib, "tls_name_set")(mark as c_char);
        let mut seen = seen;
        seen.push(format!("renamed {}", name()));
        seen.push(format!("instance {mine:p}"));
        seen
    }
}

fn exercise_threadlocal(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    let main = tls_thread_view(lib, b'M');
    let (other, again) = std::thread::scope(|scope| {
        let other = scope.spawn(|| tls_thread_view(lib, b'T')).join().unwrap();
        (other, tls_thread_view(lib, b'm'))
    });
    // Addresses differ between runs: compare them, then drop them.
    let instance = |v: &[String]| v.last().cloned().unwrap();
    s.see(
        "threads have their own instance",
        instance(&main) != instance(&other),
    );
    s.see(
        "a thread keeps its instance",
        instance(&main) == instance(&again),
    );
    for (who, view) in [
        ("main", main),
        ("other thread", other),
        ("main again", again),
    ] {
        s.see(who, &view[..view.len() - 1]);
    }
    s.0
}

#[test]
fn thread_local_storage() {
    let fresh = |renamed: &str| {
        vec![
            "name initial".to_owned(),
            "bump 101 102".to_owned(),
            "add 5 12".to_owned(),
            "lookup is this thread's instance true".to_owned(),
            "read through lookup 102".to_owned(),
            format!("renamed {renamed}"),
        ]
    };
    differential(
        &test_lib("threadlocal"),
        exercise_threadlocal,
        expect![
            "threads have their own instance" => true,
            "a thread keeps its instance" => true,
            "main" => fresh("Mnitial"),
            "other thread" => fresh("Tnitial"),
            // The main thread's instance kept its state.
            "main again" => [
                "name Mnitial",
                "bump 103 104",
                "add 17 24",
                "lookup is this thread's instance true",
                "read through lookup 104",
                "renamed mnitial",
            ],
        ],
    );
}

// ---------------------------------------------------------------------------
// cxx: C++ static objects, exceptions, virtual calls, libstdc++.

fn exercise_cxx(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    // SAFETY: the extern "C" signatures of test-dylibs/cxx.cpp; `err` is
    // as long as the size passed.
    unsafe {
        s.see(
            "cxx_static_ids()",
            sym::<unsafe extern "C" fn() -> c_int>(lib, "cxx_static_ids")(),
        );
        type Parse = unsafe extern "C" fn(*const c_char, *mut c_char, c_ulong) -> i64;
        let parse = sym::<Parse>(lib, "cxx_parse");
        for text in [c"42", c"abc", c"-5", c"12x"] {
            let mut err = [0 as c_char; 64];
            let v = parse(text.as_ptr(), err.as_mut_ptr(), 64);
            let err = CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned();
            s.see(format!("cxx_parse({text:?})"), (v, err));
        }
        let sides = [3i64, 4, 5];
        s.see(
            "cxx_total_area([3, 4, 5])",
            sym::<unsafe extern "C" fn(*const i64, c_int) -> i64>(lib, "cxx_total_area")(
                sides.as_ptr(),
                3,
            ),
        );
    }
    s.0
}

#[test]
fn cxx_statics_exceptions_and_virtual_calls() {
    let mut results = Vec::new();
    for Loaded { how, lib } in backends(&test_lib("cxx"), &Options::new()) {
        let mut seen = exercise_cxx(&*lib);
        seen.push(unload_events(
            lib,
            "cxx_set_sink",
            "static objects destroyed",
        ));
        results.push((how, seen));
    }
    compare(
        &results,
        &expect![
            "cxx_static_ids()" => 12,
            "cxx_parse(\"42\")" => (42i64, ""),
            // std::stol's std::invalid_argument names the function.
            "cxx_parse(\"abc\")" => (-1i64, "stol"),
            "cxx_parse(\"-5\")" => (-1i64, "not a positive number: -5"),
            "cxx_parse(\"12x\")" => (-1i64, "not a positive number: 12x"),
            // 3*2 + 4*4 + 5*2
            "cxx_total_area([3, 4, 5])" => 32i64,
            "static objects destroyed" => [2, 1],
        ],
    );
}

// ---------------------------------------------------------------------------
// zlib, GMP, libuuid and SQLite of the machine.

/// 300 lines of "line N of memdl\n": 5290 bytes.
fn zlib_text() -> Vec<u8> {
    (0..300)
        .flat_map(|i| format!("line {i} of memdl\n").into_bytes())
        .collect()
}

type Compress = unsafe extern "C" fn(*mut u8, *mut c_ulong, *const u8, c_ulong) -> c_int;
type Checksum = unsafe extern "C" fn(c_ulong, *const u8, u32) -> c_ulong;

fn zlib_compress(lib: &dyn Library, src: &[u8]) -> (c_int, Vec<u8>) {
    zlib_convert(lib, "compress", src, src.len() + 1024)
}

fn zlib_uncompress(lib: &dyn Library, src: &[u8], capacity: usize) -> (c_int, Vec<u8>) {
    zlib_convert(lib, "uncompress", src, capacity)
}

/// zlib's `compress` or `uncompress` (same signature) into a buffer of
/// `capacity` bytes: the return code and the bytes written.
fn zlib_convert(lib: &dyn Library, name: &str, src: &[u8], capacity: usize) -> (c_int, Vec<u8>) {
    let mut out = vec![0u8; capacity];
    let mut len = out.len() as c_ulong;
    // SAFETY: (un)compress(dest, &destLen, source, sourceLen) with destLen
    // the size of `out`.
    let rc = unsafe {
        sym::<Compress>(lib, name)(
            out.as_mut_ptr(),
            &mut len,
            src.as_ptr(),
            src.len() as c_ulong,
        )
    };
    out.truncate(len as usize);
    (rc, out)
}

fn exercise_zlib(lib: &dyn Library) -> Observations {
    let mut s = Seen::default();
    let text = zlib_text();
    let (rc, packed) = zlib_compress(lib, &text);
    s.see("compress rc", rc);
    s.see("compressed to under a fifth", packed.len() * 5 < text.len());
    let (rc, unpacked) = zlib_uncompress(lib, &packed, text.len() + 16);
    s.see("uncompress rc", rc);
    s.see("round trip", unpacked == text);
    let truncated = zlib_uncompress(lib, &packed[..packed.len() / 2], text.len()).0;
    s.see("uncompress of half the stream", truncated);
    // SAFETY: crc32/adler32(uLong, const Bytef *, uInt) over `text`.
    unsafe {
        s.see(
            "crc32(text)",
            sym::<Checksum>(lib, "crc32")(0, text.as_ptr(), text.len() as u32),
        );
        s.see(
            "adler32(text)",
            sym::<Checksum>(lib, "adler32")(1, text.as_ptr(), text.len() as u32),
        );
    }
    s.0
}

#[test]
fn zlib_round_trip_and_checksums() {
    let bytes = machine_lib("libz.so.1");
    differential(
        &bytes,
        exercise_zlib,
        expect![
            "compress rc" => 0,    // Z_OK
            "compressed to under a fifth" => true,
            "uncompress rc" => 0,
            "round trip" => true,
            // Z_DATA_ERROR: uncompress reports a stream that ends early so.
            "uncompress of half the stream" => -3,
            // Computed with Python's zlib.crc32 / zlib.adler32.
            "crc32(text)" => 0x97ed_6c87u64,
            "adler32(text)" => 0x07bf_707bu64,
        ],
    );
    // Each backend's zlib reads what the other wrote, byte for byte the same.
    let libs: Vec<Box<dyn Library>> = backends(&bytes, &Options::new())
        .into_iter()
        .map(|l| l.lib)
        .collect();
    let text = zlib_text();
    let packed: Vec<Vec<u8>> = libs.iter().map(|l| zlib_compress(&**l, &text).1).collect();
    assert!(packed.iter().all(|p| *p == packed[0]));
    let (memdl, system) = (&*libs[0], &*libs[2]);
    assert_eq!(
        zlib_uncompress(system, &packed[0], text.len()),
        (0, text.clone())
    );
    assert_eq!(zlib_uncompress(memdl, &packed[2], text.len()), (0, text));
}

/// GMP's `mpz_t`: `{ int _mp_alloc; int _mp_size; mp_limb_t *_mp_d; }`.
#[repr(C)]
struct Mpz {
    alloc: c_int,
    size: c_int,
    limbs: *mut c_void,
}

fn exercise_gmp(lib: &dyn Library) -> Observations {
    type Init = unsafe extern "C" fn(*mut Mpz);
    type UiPowUi = unsafe extern "C" fn(*mut Mpz, c_ulong, c_ulong);
    type FacUi = unsafe extern "C" fn(*mut Mpz, c_ulong);
    type Mul = unsafe extern "C" fn(*mut Mpz, *const Mpz, *const Mpz);
    type SetStr = unsafe extern "C" fn(*mut Mpz, *const c_char, c_int) -> c_int;
    type GetStr = unsafe extern "C" fn(*mut c_char, c_int, *const Mpz) -> *mut c_char;
    type FdivUi = unsafe extern "C" fn(*const Mpz, c_ulong) -> c_ulong;
    let mut s = Seen::default();
    // SAFETY: the GMP C API (mpz_* are macros for these __gmpz_* symbols);
    // every mpz is initialised before use and cleared after; get_str with a
    // NULL buffer returns a string from GMP's default allocator, malloc.
    unsafe {
        let init = sym::<Init>(lib, "__gmpz_init");
        let clear = sym::<Init>(lib, "__gmpz_clear");
        let get_str = sym::<GetStr>(lib, "__gmpz_get_str");
        let text = |z: &Mpz, base: c_int| {
            let p = get_str(std::ptr::null_mut(), base, z);
            let t = CStr::from_ptr(p).to_string_lossy().into_owned();
            libc::free(p.cast());
            t
        };
        let mut z: [Mpz; 3] = std::mem::zeroed();
        for m in &mut z {
            init(m);
        }
        sym::<UiPowUi>(lib, "__gmpz_ui_pow_ui")(&mut z[0], 2, 200);
        s.see("2^200", text(&z[0], 10));
        s.see(
            "2^200 mod 1000003",
            sym::<FdivUi>(lib, "__gmpz_fdiv_ui")(&z[0], 1_000_003),
        );
        sym::<FacUi>(lib, "__gmpz_fac_ui")(&mut z[1], 50);
        s.see("50!", text(&z[1], 10));
        let set_str = sym::<SetStr>(lib, "__gmpz_set_str");
        s.see(
            "set_str(3^100 in hex)",
            set_str(
                &mut z[2],
                c"5a4653ca673768565b41f775d6947d55cf3813d1".as_ptr(),
                16,
            ),
        );
        let z2: *const Mpz = &z[2];
        sym::<Mul>(lib, "__gmpz_mul")(&mut z[2], z2, z2);
        s.see("(3^100)^2 in base 36", text(&z[2], 36));
        for m in &mut z {
            clear(m);
        }
    }
    s.0
}

#[test]
fn gmp_big_numbers() {
    // Values from Python's integers.
    differential(
        &machine_lib("libgmp.so.10"),
        exercise_gmp,
        expect![
            "2^200" => "1606938044258990275541962092341162602522202993782792835301376",
            "2^200 mod 1000003" => 973_692u64,
            "50!" => "30414093201713378043612608166064768844377641568960512000000000000",
            "set_str(3^100 in hex)" => 0,
            "(3^100)^2 in base 36" =>
                "3375wqjpxmrpeavhcpvslqcw6be4sb45nfy61n60v7llcxnro9dixzvozb0529",
        ],
    );
}

fn exercise_uuid(lib: &dyn Library) -> Observations {
    type Parse = unsafe extern "C" fn(*const c_char, *mut u8) -> c_int;
    type Unparse = unsafe extern "C" fn(*const u8, *mut c_char);
    type Query = unsafe extern "C" fn(*const u8) -> c_int;
    type Template = unsafe extern "C" fn(*const c_char) -> *const u8;
    type Sha1 = unsafe extern "C" fn(*mut u8, *const u8, *const c_char, usize);
    let mut s = Seen::default();
    // SAFETY: libuuid's API: uuid_t is 16 bytes, unparsed text 37 with NUL;
    // uuid_get_template returns a pointer to a static uuid_t.
    unsafe {
        let unparse = sym::<Unparse>(lib, "uuid_unparse_lower");
        let text = |u: &[u8; 16]| {
            let mut out = [0 as c_char; 37];
            unparse(u.as_ptr(), out.as_mut_ptr());
            CStr::from_ptr(out.as_ptr()).to_string_lossy().into_owned()
        };
        let parse = sym::<Parse>(lib, "uuid_parse");
        let mut u = [0u8; 16];
        let rc = parse(
            c"123E4567-E89B-12D3-A456-426614174000".as_ptr(),
            u.as_mut_ptr(),
        );
        s.see("parse", (rc, text(&u)));
        s.see("uuid_type", sym::<Query>(lib, "uuid_type")(u.as_ptr()));
        s.see(
            "uuid_variant",
            sym::<Query>(lib, "uuid_variant")(u.as_ptr()),
        );
        s.see(
            "parse(\"not-a-uuid\")",
            parse(c"not-a-uuid".as_ptr(), u.as_mut_ptr()),
        );
        let dns = sym::<Template>(lib, "uuid_get_template")(c"dns".as_ptr());
        s.see("dns namespace", text(&*dns.cast::<[u8; 16]>()));
        let mut v5 = [0u8; 16];
        sym::<Sha1>(lib, "uuid_generate_sha1")(v5.as_mut_ptr(), dns, c"python.org".as_ptr(), 10);
        s.see("uuid5(dns, \"python.org\")", text(&v5));
        s.see("its type", sym::<Query>(lib, "uuid_type")(v5.as_ptr()));
        sym::<unsafe extern "C" fn(*mut u8)>(lib, "uuid_clear")(v5.as_mut_ptr());
        s.see(
            "cleared is null",
            sym::<Query>(lib, "uuid_is_null")(v5.as_ptr()),
        );
    }
    s.0
}

#[test]
fn uuid_parse_format_and_name_based() {
    // Values from Python's uuid module.
    differential(
        &machine_lib("libuuid.so.1"),
        exercise_uuid,
        expect![
            "parse" => (0, "123e4567-e89b-12d3-a456-426614174000"),
            "uuid_type" => 1,    // time-based
            "uuid_variant" => 1, // UUID_VARIANT_DCE (RFC 4122)
            "parse(\"not-a-uuid\")" => -1,
            "dns namespace" => "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            "uuid5(dns, \"python.org\")" => "886313e1-3b8a-5372-9b90-0c9aee199e5d",
            "its type" => 5,
            "cleared is null" => 1,
        ],
    );
}

/// Rows of a `sqlite3_exec` callback, as "col=value" strings.
extern "C" fn collect_row(
    ctx: *mut c_void,
    n: c_int,
    values: *mut *mut c_char,
    names: *mut *mut c_char,
) -> c_int {
    // SAFETY: `ctx` is the `Vec<String>` exercise_sqlite passed; SQLite
    // hands `n` column values (NULL for SQL NULL) and names.
    unsafe {
        let rows = &mut *(ctx as *mut Vec<String>);
        let row: Vec<String> = (0..n as usize)
            .map(|i| {
                let name = CStr::from_ptr(*names.add(i)).to_string_lossy();
                let v = *values.add(i);
                let value = if v.is_null() {
                    "NULL".into()
                } else {
                    CStr::from_ptr(v).to_string_lossy()
                };
                format!("{name}={value}")
            })
            .collect();
        rows.push(row.join(" "));
    }
    0
}

fn exercise_sqlite(lib: &dyn Library) -> Observations {
    type Open = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
    type Callback = extern "C" fn(*mut c_void, c_int, *mut *mut c_char, *mut *mut c_char) -> c_int;
    type Exec = unsafe extern "C" fn(
        *mut c_void,
        *const c_char,
        Option<Callback>,
        *mut c_void,
        *mut *mut c_char,
    ) -> c_int;
    let mut s = Seen::default();
    // SAFETY: the SQLite C API: sqlite3_open, sqlite3_exec (errors are
    // returned as sqlite3_malloc'd strings freed with sqlite3_free),
    // sqlite3_changes, sqlite3_close.
    unsafe {
        let mut db = std::ptr::null_mut();
        s.see(
            "open",
            sym::<Open>(lib, "sqlite3_open")(c":memory:".as_ptr(), &mut db),
        );
        let exec = sym::<Exec>(lib, "sqlite3_exec");
        let free = sym::<unsafe extern "C" fn(*mut c_void)>(lib, "sqlite3_free");
        let run = |sql: &str, rows: Option<&mut Vec<String>>| {
            let sql = CString::new(sql).unwrap();
            let mut err = std::ptr::null_mut();
            let (cb, ctx) = match rows {
                Some(r) => (
                    Some(collect_row as Callback),
                    r as *mut Vec<String> as *mut c_void,
                ),
                None => (None, std::ptr::null_mut()),
            };
            let rc = exec(db, sql.as_ptr(), cb, ctx, &mut err);
            let msg = (!err.is_null()).then(|| {
                let m = CStr::from_ptr(err).to_string_lossy().into_owned();
                free(err.cast());
                m
            });
            (rc, msg)
        };
        s.see(
            "create and insert",
            run(
                "CREATE TABLE fruit(id INTEGER PRIMARY KEY, name TEXT NOT NULL, grams REAL);
                 INSERT INTO fruit(name, grams) VALUES ('apple', 182.5), ('fig', 50),
                     ('kiwi', 75.25), ('plum', NULL);",
                None,
            ),
        );
        s.see(
            "changes",
            sym::<unsafe extern "C" fn(*mut c_void) -> c_int>(lib, "sqlite3_changes")(db),
        );
        let mut rows = Vec::new();
        s.see(
            "select",
            run(
                "SELECT id, upper(name) AS n, grams * 2 AS g FROM fruit ORDER BY name DESC",
                Some(&mut rows),
            ),
        );
        s.see("rows", rows);
        let mut rows = Vec::new();
        run(
            "SELECT count(*) AS c, sum(grams) AS s, printf('%.2f', avg(grams)) AS a FROM fruit",
            Some(&mut rows),
        );
        s.see("aggregate", rows);
        s.see("bad sql", run("SELEKT 1", None));
        s.see(
            "close",
            sym::<unsafe extern "C" fn(*mut c_void) -> c_int>(lib, "sqlite3_close")(db),
        );
    }
    s.0
}

#[test]
fn sqlite_in_memory_database() {
    let bytes = machine_lib("libsqlite3.so.0");
    differential(
        &bytes,
        exercise_sqlite,
        expect![
            "open" => 0,
            "create and insert" => (0, None::<String>),
            "changes" => 4,
            "select" => (0, None::<String>),
            "rows" => [
                "id=4 n=PLUM g=NULL",
                "id=3 n=KIWI g=150.5",
                "id=2 n=FIG g=100.0",
                "id=1 n=APPLE g=365.0",
            ],
            "aggregate" => ["c=4 s=307.75 a=102.58"],
            "bad sql" => (1, Some("near \"SELEKT\": syntax error")),
            "close" => 0,
        ],
    );
}
