//! A Rust cdylib (test-dylibs/rustlib.rs, its own copy of std) loaded from
//! memory, against the system loader: thread_local! with destructors,
//! collections, formatting, and panics caught by catch_unwind inside it.

#![cfg(target_os = "linux")]

use std::ffi::{c_char, CStr};
use std::sync::Barrier;

use memdl::{ElfImage, Library, SystemImage};

mod common;
use common::{assert_no_wx, serial, sym, test_lib};

// Why these tests take serial() (tests/common): live-block counts are per
// image, but keep the two tests apart anyway: each loads 4 MiB of library
// twice.

type Out = unsafe extern "C" fn(*const c_char, *mut u8, usize) -> usize;

fn text(buf: &[u8], len: usize) -> String {
    let s = CStr::from_bytes_until_nul(buf).unwrap().to_str().unwrap();
    assert_eq!(s.len(), len, "truncated output");
    s.to_owned()
}

/// Everything single-threaded the library does, as strings.
fn single_thread(lib: &impl Library) -> Vec<String> {
    let freq: Out = sym(lib, "rust_word_freq");
    let format: unsafe extern "C" fn(f64, i32, *mut u8, usize) -> usize = sym(lib, "rust_format");
    let catch: unsafe extern "C" fn(i32) -> i32 = sym(lib, "rust_catch_panic");
    let mut buf = [0u8; 256];
    let mut out = Vec::new();
    // SAFETY: NUL-terminated inputs and a buffer of the size passed.
    unsafe {
        let n = freq(c"b a b c the a b".as_ptr(), buf.as_mut_ptr(), buf.len());
        out.push(text(&buf, n));
        let n = format(1.23456, 42, buf.as_mut_ptr(), buf.len());
        out.push(text(&buf, n));
        for v in [0, 7, 12345, -3] {
            out.push(catch(v).to_string());
        }
    }
    out
}

#[test]
fn std_collections_formatting_and_caught_panics_like_the_system_loader() {
    let _g = serial();
    let bytes = test_lib("rustlib");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    assert_no_wx();
    let ours = single_thread(&img);
    let expected_format = format!(
        "{:.3}|{:>5}|{:#x}|{:?}|{:e}",
        1.23456,
        42,
        42,
        vec![42, 84, 126],
        1.23456 * 1000.0
    );
    assert_eq!(
        ours,
        [
            "a=2 b=3 c=1 the=1",
            expected_format.as_str(),
            "0",
            "boom 7".len().to_string().as_str(),
            "boom 12345".len().to_string().as_str(),
            "-3",
        ]
    );
    assert_eq!(ours, single_thread(&sys));
    // Panics caught on many threads at once.
    let catch: unsafe extern "C" fn(i32) -> i32 = sym(&img, "rust_catch_panic");
    std::thread::scope(|s| {
        for t in 1..=8 {
            s.spawn(move || {
                for i in 0..100 {
                    let v = t * 1000 + i;
                    // SAFETY: a function of the live library.
                    assert_eq!(unsafe { catch(v) }, format!("boom {v}").len() as i32);
                }
            });
        }
    });
}

/// Per-thread results of the thread_local! functions.
fn thread_locals(lib: &impl Library) -> (Vec<(u64, u64, String)>, usize) {
    let next: unsafe extern "C" fn() -> u64 = sym(lib, "rust_tl_next");
    let guard: unsafe extern "C" fn() -> u64 = sym(lib, "rust_tl_guard");
    let drops: unsafe extern "C" fn() -> usize = sym(lib, "rust_tl_drops");
    let words: Out = sym(lib, "rust_tl_words");
    // SAFETY: functions of the live library.
    let before = unsafe { drops() };
    let start = Barrier::new(8);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let mut buf = [0u8; 128];
                    // SAFETY: as above; NUL-terminated words, sized buffer.
                    unsafe {
                        let mut last = 0;
                        for _ in 0..=t {
                            last = next();
                        }
                        let mut g = 0;
                        for _ in 0..3 {
                            g = guard();
                        }
                        words(c"x".as_ptr(), buf.as_mut_ptr(), buf.len());
                        let w = [c"y", c"z"][t % 2];
                        let n = words(w.as_ptr(), buf.as_mut_ptr(), buf.len());
                        (last, g, text(&buf, n))
                    }
                })
            })
            .collect();
        // Explicit joins wait for the threads' TLS destructors.
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    // SAFETY: as above.
    (results, unsafe { drops() } - before)
}

/// thread_local! values start fresh in every thread, 8 threads run at once,
/// and every thread's destructors run at its exit; the TLS blocks go too.
#[test]
fn thread_locals_and_their_destructors_like_the_system_loader() {
    let _g = serial();
    let bytes = test_lib("rustlib");
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&bytes) }.unwrap();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let sys = unsafe { SystemImage::load(&bytes) }.unwrap();
    let ours = thread_locals(&img);
    assert_eq!(img.live_tls_blocks(), 0, "TLS blocks left after exit");
    let theirs = thread_locals(&sys);
    for (t, r) in ours.0.iter().enumerate() {
        let w = if t % 2 == 0 { "x+y" } else { "x+z" };
        assert_eq!(r, &(101 + t as u64, 3, w.to_owned()), "thread {t}");
    }
    assert_eq!(ours.1, 8, "thread_local destructors run at exit");
    assert_eq!(ours, theirs);
}

/// The library's thread_local! destructor is pending on a thread when the
/// image is dropped: the code stays mapped until that destructor ran at the
/// thread's exit, and is unmapped right after.
#[test]
fn dropping_the_image_with_a_pending_thread_local_destructor() {
    let _g = serial();
    // SAFETY: a trusted test or machine library (its initialisers run).
    let img = unsafe { ElfImage::load(&test_lib("rustlib")) }.unwrap();
    let guard: unsafe extern "C" fn() -> u64 = sym(&img, "rust_tl_guard");
    let code = guard as usize;
    let mapped = || !common::mappings_in(code, code + 1).is_empty();
    let (to_main, registered) = std::sync::mpsc::channel();
    let (to_thread, go) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: the image's code stays mapped while this thread's
        // destructor is pending, which is what this test checks.
        assert_eq!(unsafe { guard() }, 1);
        to_main.send(()).unwrap();
        go.recv().unwrap();
    });
    registered.recv().unwrap();
    drop(img);
    assert!(mapped(), "code unmapped while its destructor is pending");
    to_thread.send(()).unwrap();
    worker.join().unwrap();
    assert!(!mapped(), "image still mapped after its last destructor");
}
