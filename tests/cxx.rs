//! A C++ library loaded from memory, against the system loader: static
//! constructors and destructors in order, std::string / std::vector,
//! thread_local objects with destructors (also when the image is dropped
//! first), exceptions inside the library and across a host callback,
//! backtraces through its frames, and unwind tables removed on drop.

#![cfg(target_os = "linux")]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use memdl::{ElfImage, Library, SystemImage};

mod common;
use common::{assert_no_wx, mappings_in, serial, sym, test_lib};

// Why these tests take serial() (tests/common): the sink and the callbacks
// are process-wide: one test at a time.

/// What the library's destructors reported, in order.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn sink(event: *const c_char) {
    // SAFETY: the library passes NUL-terminated string literals.
    let e = unsafe { CStr::from_ptr(event) }
        .to_string_lossy()
        .into_owned();
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push(e);
}

fn take_events() -> Vec<String> {
    std::mem::take(&mut *EVENTS.lock().unwrap_or_else(|e| e.into_inner()))
}

fn set_sink(lib: &impl Library) {
    let f: unsafe extern "C" fn(extern "C" fn(*const c_char)) = sym(lib, "cxx_set_sink");
    // SAFETY: the sink lives for the whole process.
    unsafe { f(sink) };
}

/// Constructors ran in priority then definition order, std containers work,
/// and destructors run in reverse order when the image goes: the same on
/// both backends.
fn statics_and_containers(lib: impl Library) -> (String, String, i64, String, Vec<String>) {
    set_sink(&lib);
    let log: unsafe extern "C" fn() -> *const c_char = sym(&lib, "cxx_ctor_log");
    let greeting: unsafe extern "C" fn(*mut c_char, usize) -> usize = sym(&lib, "cxx_greeting");
    let squares: unsafe extern "C" fn() -> i64 = sym(&lib, "cxx_squares_sum");
    let join: unsafe extern "C" fn(*const *const c_char, usize, *mut c_char, usize) -> usize =
        sym(&lib, "cxx_sort_join");
    let words = [c"pear", c"apple", c"fig", c"banana"].map(|w| w.as_ptr());
    let mut buf = [0 as c_char; 64];
    let mut buf2 = [0 as c_char; 64];
    // SAFETY: buffers of the sizes passed; functions of the live library.
    let r = unsafe {
        let log = CStr::from_ptr(log()).to_string_lossy().into_owned();
        let n = greeting(buf.as_mut_ptr(), buf.len());
        let g = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        assert_eq!(n, g.len());
        let n = join(words.as_ptr(), words.len(), buf2.as_mut_ptr(), buf2.len());
        let j = CStr::from_ptr(buf2.as_ptr()).to_string_lossy().into_owned();
        assert_eq!(n, j.len());
        (log, g, squares(), j)
    };
    assert!(take_events().is_empty(), "destructor ran while loaded");
    drop(lib);
    (r.0, r.1, r.2, r.3, take_events())
}

#[test]
fn static_objects_and_containers_like_the_system_loader() {
    let _g = serial();
    take_events();
    let bytes = test_lib("cxxrt");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let ours = statics_and_containers(unsafe { ElfImage::load(&bytes) }.unwrap());
    // SAFETY: a trusted test or machine library (its initialisers run).
    let theirs = statics_and_containers(unsafe { SystemImage::load(&bytes) }.unwrap());
    assert_eq!(ours.0, "Z,A,B,C");
    assert_eq!(ours.1, "hello, world");
    assert_eq!(ours.2, 385);
    assert_eq!(ours.3, "apple,banana,fig,pear");
    assert_eq!(ours.4, ["C", "B", "A", "Z"]);
    assert_eq!(ours, theirs);
}

/// Each thread's thread_local object is built on first use and destroyed at
/// its thread's exit (through __cxa_thread_atexit), and its TLS block freed.
#[test]
fn thread_local_objects_are_destroyed_at_thread_exit() {
    let _g = serial();
    take_events();
    let bytes = test_lib("cxxrt");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_no_wx();
    let ours = thread_locals(&img);
    assert_eq!(
        img.live_tls_blocks(),
        0,
        "TLS blocks left after thread exit"
    );
    let theirs = thread_locals(&sys);
    assert_eq!(ours.1, 4, "destructors run");
    assert_eq!(ours.2, 0, "objects alive");
    assert_eq!(ours.3, vec!["thread_local"; 4]);
    assert_eq!(ours.0[2], (3, 20 + 21 + 22 + "thread202122".len() as i64));
    assert_eq!(ours, theirs);
}

type ThreadLocalsResult = (Vec<(c_int, i64)>, c_int, c_int, Vec<String>);

/// Four threads in turn fill their thread_local object; returns each one's
/// (values, sum), destructors run, objects alive, and the events.
fn thread_locals(lib: &impl Library) -> ThreadLocalsResult {
    set_sink(lib);
    let push: unsafe extern "C" fn(c_int) -> c_int = sym(lib, "cxx_tl_push");
    let sum: unsafe extern "C" fn() -> i64 = sym(lib, "cxx_tl_sum");
    let live: unsafe extern "C" fn() -> c_int = sym(lib, "cxx_tl_live");
    let destroyed: unsafe extern "C" fn() -> c_int = sym(lib, "cxx_tl_destroyed");
    // SAFETY: functions of the live library.
    let before = unsafe { destroyed() };
    // One thread after the other: each sees only its own object alive.
    let sums: Vec<(c_int, i64)> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                // SAFETY: the library outlives the thread (joined here).
                unsafe {
                    let mut n = 0;
                    for v in 0..3 {
                        n = push(t * 10 + v);
                    }
                    assert_eq!(live(), 1, "live objects");
                    (n, sum())
                }
            })
            .join()
            .unwrap()
        })
        .collect();
    // SAFETY: as above.
    let (after, live_after) = unsafe { (destroyed(), live()) };
    (sums, after - before, live_after, take_events())
}

/// A thread registers a thread_local destructor, the image is dropped while
/// the thread still runs: the image's code stays until the destructor ran
/// at thread exit, then its finalisers run and it is unmapped. No crash.
#[test]
fn dropping_the_image_with_a_pending_thread_local_destructor() {
    let _g = serial();
    take_events();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("cxxrt")) }.unwrap();
    set_sink(&img);
    let push: unsafe extern "C" fn(c_int) -> c_int = sym(&img, "cxx_tl_push");
    let code = push as usize;
    let (to_main, registered) = std::sync::mpsc::channel();
    let (to_thread, go) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: the image's code stays mapped while this destructor is
        // pending, which is what this test checks.
        assert_eq!(unsafe { push(7) }, 1);
        to_main.send(()).unwrap();
        go.recv().unwrap();
    });
    registered.recv().unwrap();
    drop(img);
    assert!(
        take_events().is_empty(),
        "finalisers ran before the pending destructor"
    );
    assert!(
        !mappings_in(code, code + 1).is_empty(),
        "code unmapped early"
    );
    to_thread.send(()).unwrap();
    worker.join().unwrap();
    assert_eq!(take_events(), ["thread_local", "C", "B", "A", "Z"]);
    assert!(
        mappings_in(code, code + 1).is_empty(),
        "image still mapped after its last destructor"
    );
}

/// Exceptions thrown and caught inside the library: a libstdc++ type and a
/// type the library defines.
#[test]
fn exceptions_inside_the_library() {
    let _g = serial();
    take_events();
    let bytes = test_lib("cxxrt");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    let f: unsafe extern "C" fn(c_int) -> c_int = sym(&img, "cxx_throw_catch");
    let g: unsafe extern "C" fn(c_int) -> c_int = sym(&sys, "cxx_throw_catch");
    for v in [0, 5, 12345, 150, 999] {
        // SAFETY: functions of the live libraries.
        let (ours, theirs) = unsafe { (f(v), g(v)) };
        let expected = match v {
            0 => 0,
            v if v > 100 => -v,
            v => format!("boom {v}").len() as c_int,
        };
        assert_eq!((ours, theirs), (expected, expected), "v = {v}");
    }
    // Many threads throwing at once.
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in 0..200 {
                    // SAFETY: as above.
                    assert_eq!(unsafe { f(101 + t * 1000 + i) }, -(101 + t * 1000 + i));
                }
            });
        }
    });
}

/// `cxx_throw` of the image under test, for the host callback.
static THROWER: AtomicUsize = AtomicUsize::new(0);

extern "C-unwind" fn host_callback(v: c_int) {
    // SAFETY: THROWER holds cxx_throw (void(int)) of a live image; it may
    // unwind, hence C-unwind.
    let throw: unsafe extern "C-unwind" fn(c_int) =
        unsafe { std::mem::transmute::<usize, _>(THROWER.load(Ordering::SeqCst)) };
    unsafe { throw(v) };
    unreachable!("cxx_throw returned");
}

type CatchAcross = unsafe extern "C-unwind" fn(extern "C-unwind" fn(c_int), c_int) -> c_int;

/// Loaded code calls the host, the host calls loaded code that throws; the
/// exception unwinds through the host's frames into the loaded caller.
#[test]
fn exception_crosses_a_host_callback_into_the_loaded_caller() {
    let _g = serial();
    take_events();
    let bytes = test_lib("cxxrt");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    for (backend, lib) in [("memdl", &img as &dyn Library), ("system", &sys)] {
        THROWER.store(
            lib.symbol_address(b"cxx_throw").unwrap() as usize,
            Ordering::SeqCst,
        );
        // SAFETY: cxx_catch_across's signature.
        let across: CatchAcross = unsafe {
            std::mem::transmute::<*const c_void, CatchAcross>(
                lib.symbol_address(b"cxx_catch_across").unwrap(),
            )
        };
        for v in [1, 21, -4] {
            // SAFETY: a function of the live library with a valid callback.
            assert_eq!(unsafe { across(host_callback, v) }, v * 2, "{backend}");
        }
    }
}

static BACKTRACE: Mutex<String> = Mutex::new(String::new());

extern "C" fn capture_backtrace(_v: c_int) {
    let bt = std::backtrace::Backtrace::force_capture();
    *BACKTRACE.lock().unwrap() = format!("{bt:#}");
}

/// Instruction pointers in a `{:#}`-formatted backtrace, in frame order.
fn frame_addresses(text: &str) -> Vec<usize> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (_, rest) = l.split_once(": ")?;
            let hex = rest.trim_start().strip_prefix("0x")?;
            let end = hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len());
            usize::from_str_radix(&hex[..end], 16).ok()
        })
        .collect()
}

/// A backtrace captured in a host callback called from loaded code walks
/// through the loaded frame (found by `memdl::find_symbol`, since nothing on
/// disk can name it) and on into this test's frames.
#[test]
fn backtrace_from_a_callback_shows_loaded_frames() {
    let _g = serial();
    take_events();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("cxxrt")) }.unwrap();
    let call: unsafe extern "C" fn(extern "C" fn(c_int), c_int) -> c_int =
        sym(&img, "cxx_call_host");
    // SAFETY: a function of the live library with a valid callback.
    assert_eq!(unsafe { call(capture_backtrace, 1) }, 2);
    let text = BACKTRACE.lock().unwrap().clone();
    let frames = frame_addresses(&text);
    let loaded = frames.iter().position(|&ip| {
        memdl::find_symbol((ip - 1) as *const c_void)
            .is_some_and(|s| s.symbol.as_deref() == Some("cxx_call_host"))
    });
    let loaded = loaded.unwrap_or_else(|| panic!("no cxx_call_host frame in\n{text}"));
    // The frames after it are this test's: the unwinder crossed the image.
    let me = text
        .lines()
        .position(|l| l.contains("backtrace_from_a_callback_shows_loaded_frames"))
        .unwrap_or_else(|| panic!("test function missing from\n{text}"));
    let loaded_line = text
        .lines()
        .position(|l| l.contains(&format!("{:#x}", frames[loaded])))
        .unwrap();
    assert!(loaded_line < me, "{text}");

    // The system loader's copy: the same frame, named by its dladdr.
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&test_lib("cxxrt")) }.unwrap();
    let call: unsafe extern "C" fn(extern "C" fn(c_int), c_int) -> c_int =
        sym(&sys, "cxx_call_host");
    // SAFETY: as above.
    assert_eq!(unsafe { call(capture_backtrace, 1) }, 2);
    let text = BACKTRACE.lock().unwrap().clone();
    let named = frame_addresses(&text).iter().any(|&ip| {
        // SAFETY: Dl_info is plain data; dladdr fills it.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let found = unsafe { libc::dladdr((ip - 1) as *const c_void, &mut info) };
        found != 0
            && !info.dli_sname.is_null()
            // SAFETY: a NUL-terminated name of the loaded library.
            && unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes() == b"cxx_call_host"
    });
    assert!(named, "{text}");
}

/// The image's unwind tables are known to the unwinder while it is loaded
/// (nothing else could make them known) and forgotten when it is dropped:
/// a registration left behind would point into unmapped memory.
#[test]
fn unwind_tables_are_registered_while_loaded_and_removed_on_drop() {
    let _g = serial();
    take_events();
    let bytes = test_lib("cxxrt");
    for round in 0..3 {
        // SAFETY: a trusted test or machine library (its initialisers run).
        let img = unsafe { ElfImage::load(&bytes) }.unwrap();
        let pc = img.symbol_address(b"cxx_throw_catch").unwrap() as usize + 1;
        let fde = common::find_fde(pc) as usize;
        assert_ne!(fde, 0, "round {round}: no FDE while loaded");
        // Found in the image's own .eh_frame.
        let info = memdl::find_symbol(fde as *const c_void);
        assert_eq!(info.map(|i| i.image_base), Some(img.base_address()));
        drop(img);
        assert!(
            common::find_fde(pc).is_null(),
            "round {round}: FDE left after drop"
        );
    }
}
