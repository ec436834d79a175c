//! A Rust cdylib loaded from memory: std, thread_local!, collections,
//! formatting and panics caught with catch_unwind, all inside the library.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, CStr};
use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

static DROPS: AtomicUsize = AtomicUsize::new(0);

struct Guard(Cell<u64>);

impl Drop for Guard {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(100) };
    static WORDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static GUARD: Guard = const { Guard(Cell::new(0)) };
}

/// Copies `s` into the caller's buffer (NUL-terminated, truncated to fit)
/// and returns its full length.
fn write_out(s: &str, out: *mut u8, cap: usize) -> usize {
    if cap > 0 && !out.is_null() {
        let n = s.len().min(cap - 1);
        // SAFETY: the caller passes a buffer of `cap` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), out, n);
            *out.add(n) = 0;
        }
    }
    s.len()
}

/// This thread's counter, incremented.
#[no_mangle]
pub extern "C" fn rust_tl_next() -> u64 {
    COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get()
    })
}

/// Touches the thread-local guard (whose destructor counts thread exits)
/// and returns its per-thread use count.
#[no_mangle]
pub extern "C" fn rust_tl_guard() -> u64 {
    GUARD.with(|g| {
        g.0.set(g.0.get() + 1);
        g.0.get()
    })
}

/// How many thread-local guards were destroyed.
#[no_mangle]
pub extern "C" fn rust_tl_drops() -> usize {
    DROPS.load(Ordering::SeqCst)
}

/// Remembers a word in this thread's list; returns the list joined.
///
/// # Safety
/// `word` is a NUL-terminated string; `out` has `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn rust_tl_words(word: *const c_char, out: *mut u8, cap: usize) -> usize {
    // SAFETY: the caller's promise.
    let w = unsafe { CStr::from_ptr(word) }.to_string_lossy().into_owned();
    let joined = WORDS.with(|v| {
        v.borrow_mut().push(w);
        v.borrow().join("+")
    });
    write_out(&joined, out, cap)
}

/// Word frequencies (HashMap), reported sorted (BTreeMap): "a=2 b=1".
///
/// # Safety
/// `text` is a NUL-terminated string; `out` has `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn rust_word_freq(text: *const c_char, out: *mut u8, cap: usize) -> usize {
    // SAFETY: the caller's promise.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w).or_default() += 1;
    }
    let sorted: BTreeMap<_, _> = counts.into_iter().collect();
    let s = sorted
        .iter()
        .map(|(w, n)| format!("{w}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    write_out(&s, out, cap)
}

/// Formatting: floats, padding, Debug of collections.
#[no_mangle]
pub extern "C" fn rust_format(x: f64, n: i32, out: *mut u8, cap: usize) -> usize {
    let v: Vec<i32> = (1..=3).map(|i| i * n).collect();
    let s = format!("{x:.3}|{n:>5}|{n:#x}|{v:?}|{:e}", x * 1000.0);
    write_out(&s, out, cap)
}

/// Panics inside catch_unwind when `v > 0`; returns the length of the panic
/// message, or `v` when nothing panicked.
#[no_mangle]
pub extern "C" fn rust_catch_panic(v: i32) -> i32 {
    static QUIET: Once = Once::new();
    // The default hook would print every expected panic.
    QUIET.call_once(|| panic::set_hook(Box::new(|_| {})));
    let r = panic::catch_unwind(|| {
        if v > 0 {
            panic!("boom {v}");
        }
        v
    });
    match r {
        Ok(v) => v,
        Err(e) => e
            .downcast_ref::<String>()
            .map_or(-1, |s| s.len() as i32),
    }
}
