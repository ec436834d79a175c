//! The GDB JIT compilation interface (GDB manual, "JIT Compilation
//! Interface"; lldb's `JITLoaderGDB` reads the same two symbols).
//!
//! The process exports a descriptor, `__jit_debug_descriptor`, heading a
//! doubly linked list of in-memory object files, and a function,
//! `__jit_debug_register_code`, on which the debugger sets a breakpoint.
//! To announce an object, the process links its entry into the list, sets
//! `action_flag` and `relevant_entry`, and calls the function; the debugger
//! (if one is attached) reads the object from the process's memory at the
//! breakpoint. A debugger attaching later walks the whole list.
//!
//! **One definition per process.** The names are fixed by the protocol.
//! When the host also contains another JIT that defines them (LLVM's ORC or
//! MCJIT, a JavaScript engine), which definition callers and the debugger
//! use depends on linking: in one executable the link fails with duplicate
//! symbols; across shared objects the first definition in the global scope
//! wins for the dynamic linker. gdb 13 reads a descriptor per object file
//! (each objfile that defines the two symbols), so two separately linked
//! copies each get their breakpoint; but a copy whose references were
//! interposed to another library's descriptor would edit that list under
//! its own lock, not the other JIT's. memdl references its own definitions
//! only from Rust code in the same crate, so when memdl is statically
//! linked (an rlib in the executable, `libmemdl.a`) its references bind
//! locally; a `libmemdl.so` loaded next to another JIT should be checked
//! with `nm -D`.

use std::ptr::null_mut;
use std::sync::Mutex;

/// `jit_actions_t`.
const JIT_NOACTION: u32 = 0;
const JIT_REGISTER_FN: u32 = 1;
const JIT_UNREGISTER_FN: u32 = 2;

/// `struct jit_code_entry`: exactly the C layout gdb reads.
#[repr(C)]
pub struct JitCodeEntry {
    next: *mut JitCodeEntry,
    prev: *mut JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

/// `struct jit_descriptor`: exactly the C layout gdb reads.
#[repr(C)]
pub struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *mut JitCodeEntry,
    first_entry: *mut JitCodeEntry,
}

/// The descriptor the debugger reads (by this name, from the symbol table
/// of the executable or library memdl is linked into). Only modified
/// with [`LIST`] held.
#[no_mangle]
#[used]
#[allow(non_upper_case_globals)]
pub static mut __jit_debug_descriptor: JitDescriptor = JitDescriptor {
    version: 1,
    action_flag: JIT_NOACTION,
    relevant_entry: null_mut(),
    first_entry: null_mut(),
};

/// The function the debugger sets its breakpoint on. It must exist as a
/// real, separate function: never inlined, never removed, never merged.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // SAFETY: an empty instruction sequence with no operands; it only makes
    // the body opaque to the optimiser so the call and function remain.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}

/// Serialises every change to the list (and the call that announces it).
static LIST: Mutex<()> = Mutex::new(());

/// The bytes of an object file handed to the debugger.
pub enum Object {
    /// In memory of its own, freed after unregistration.
    Owned(Vec<u8>),
    /// `len` bytes at `addr`: the room under an image, whose own bytes
    /// (`.eh_frame`, `.dynstr`) the object's sections refer to by offset.
    /// The image's mapping owns them and outlives the registration.
    InImage { addr: usize, len: usize },
}

/// An object registered with the debugger; unregistered on drop.
pub struct JitRegistration {
    entry: *mut JitCodeEntry,
    /// The object file the entry points at.
    _object: Object,
}

// SAFETY: the entry is only touched under `LIST`, and the object bytes are
// immutable once registered.
unsafe impl Send for JitRegistration {}
// SAFETY: as above; a shared reference allows nothing.
unsafe impl Sync for JitRegistration {}

impl JitRegistration {
    /// Links `object` into the list and tells an attached debugger.
    pub fn register(object: Object) -> JitRegistration {
        let (addr, len) = match &object {
            Object::Owned(bytes) => (bytes.as_ptr(), bytes.len()),
            Object::InImage { addr, len } => (*addr as *const u8, *len),
        };
        let entry = Box::into_raw(Box::new(JitCodeEntry {
            next: null_mut(),
            prev: null_mut(),
            symfile_addr: addr,
            symfile_size: len as u64,
        }));
        let _guard = LIST.lock().unwrap_or_else(|p| p.into_inner());
        let d = &raw mut __jit_debug_descriptor;
        // SAFETY: `LIST` is held, so nothing else reads or writes the
        // descriptor or the entries in this process (the debugger reads
        // them only while the process is stopped); `entry` is a fresh
        // allocation and `first_entry`, if not null, a live entry.
        unsafe {
            let first = (*d).first_entry;
            (*entry).next = first;
            if !first.is_null() {
                (*first).prev = entry;
            }
            (*d).first_entry = entry;
            (*d).relevant_entry = entry;
            (*d).action_flag = JIT_REGISTER_FN;
        }
        __jit_debug_register_code();
        JitRegistration {
            entry,
            _object: object,
        }
    }
}

impl Drop for JitRegistration {
    fn drop(&mut self) {
        let _guard = LIST.lock().unwrap_or_else(|p| p.into_inner());
        let d = &raw mut __jit_debug_descriptor;
        let entry = self.entry;
        // SAFETY: `LIST` is held; `entry` is linked in the list (registered
        // in `register`, unlinked only here) and its neighbours are live.
        unsafe {
            let (prev, next) = ((*entry).prev, (*entry).next);
            if prev.is_null() {
                (*d).first_entry = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*d).relevant_entry = entry;
            (*d).action_flag = JIT_UNREGISTER_FN;
        }
        __jit_debug_register_code();
        // SAFETY: as above; the debugger has been told, nothing refers to
        // the entry any more. It came from `Box::into_raw` in `register`.
        unsafe {
            (*d).relevant_entry = null_mut();
            (*d).action_flag = JIT_NOACTION;
            drop(Box::from_raw(entry));
        }
    }
}
