//! A short-lived helper thread for work that borrows from the loading
//! thread's stack (describing a big image while it is relocated), started
//! so that it runs beside the loading thread rather than queued behind it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A thread running work that borrows from its creator for `'a`. It is
/// joined when dropped, so it ends before anything it borrows can; like a
/// scoped thread, but with a handle that can be given a CPU set.
pub(super) struct HelperThread<'a, T> {
    handle: Option<JoinHandle<Option<T>>>,
    stage: Arc<AtomicU8>,
    cpus: Cpus,
    _borrows: PhantomData<&'a ()>,
}

/// Where a helper is ([`HelperThread::stage`]). Its CPUs are set (through
/// its thread id) only while it waits in `STARTED` or `MOVING`: a thread
/// that has ended has no id, and setting its CPUs would set the caller's.
const STARTED: u8 = 0;
/// Its CPUs are set; it may begin.
const PLACED: u8 = 1;
/// It has begun its work.
const BEGUN: u8 = 2;
/// The creator, about to wait for it, is moving it to its own CPU.
const MOVING: u8 = 3;
/// Moved; it may begin (and will find nothing left to do).
const MOVED: u8 = 4;

impl<'a, T: Send + 'a> HelperThread<'a, T> {
    /// Starts `work` on a new thread with every signal blocked (it inherits
    /// the mask it is started with: the process's signals keep going to
    /// the threads that were there), kept off the CPU the caller runs on.
    /// `None` if this thread may run on one CPU only (a helper could only
    /// take turns with it) or no thread can be started. A panic in `work`
    /// is caught: the join gives `None`.
    ///
    /// Why the CPU: a new thread is often queued on its creator's CPU, and
    /// an idle CPU takes it over only at the busy one's next scheduler
    /// tick. Measured on two vCPUs (Rust's libLLVM, 8 fresh processes): 6
    /// helpers began 2.2 to 3.4 ms after they were started, in a 4 ms
    /// relocation; kept off the loading thread's CPU, they begin at once.
    pub(super) fn spawn(work: impl FnOnce() -> T + Send + 'a) -> Option<Self> {
        let cpus = Cpus::of_this_thread()?;
        let stage = Arc::new(AtomicU8::new(STARTED));
        let its_stage = Arc::clone(&stage);
        let caught = move || {
            begin(&its_stage);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok()
        };
        // SAFETY: sigset_t is plain data, filled by sigfillset.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut before = all;
        // SAFETY: both write only the sets given, which live on this stack.
        let blocked = unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before) == 0
        };
        let builder = std::thread::Builder::new().name("memdl-describe".into());
        // SAFETY: the thread borrows for 'a, and this value, which cannot
        // outlive 'a, joins it when joined or dropped. memdl never leaks
        // one (`mem::forget` of it would let the thread outlive 'a).
        let handle = unsafe { builder.spawn_unchecked(caught) }.ok();
        if blocked {
            // SAFETY: puts back the mask read above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
        }
        let handle = handle?;
        // It waits in STARTED (alive) until this is done.
        cpus.keep_off_this_cpu(&handle);
        stage.store(PLACED, Ordering::Release);
        Some(HelperThread {
            handle: Some(handle),
            stage,
            cpus,
            _borrows: PhantomData,
        })
    }

    /// Waits for the thread and takes what its work returned (`None` if it
    /// panicked). A thread that has not begun (the other CPUs busy) is
    /// moved to the caller's CPU first, where it begins as soon as the
    /// caller waits, rather than when a busy CPU gets to it.
    pub(super) fn join(mut self) -> Option<T> {
        let handle = self.handle.take()?;
        let stage = &self.stage;
        if stage
            .compare_exchange(PLACED, MOVING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // It waits in MOVING (alive) until this is done.
            self.cpus.move_to_this_cpu(&handle);
            stage.store(MOVED, Ordering::Release);
        }
        handle.join().ok().flatten()
    }
}

/// The helper's first step: waits until its creator has set its CPUs (and
/// is not setting them again), then marks it begun.
fn begin(stage: &AtomicU8) {
    loop {
        match stage.compare_exchange(PLACED, BEGUN, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return,
            Err(MOVED) => return,
            // STARTED or MOVING: a few system calls of its creator's away.
            Err(_) => std::thread::yield_now(),
        }
    }
}

impl<T> Drop for HelperThread<'_, T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The CPUs the loading thread may run on, and the one it runs on.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
struct Cpus {
    allowed: libc::cpu_set_t,
    current: usize,
}

#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
impl Cpus {
    /// This thread's CPUs, if it may run on more than one.
    fn of_this_thread() -> Option<Cpus> {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: a set of `size` bytes on this stack; pid 0 is this thread.
        if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
            return None;
        }
        // SAFETY: reads the set just filled.
        if unsafe { libc::CPU_COUNT(&allowed) } < 2 {
            return None;
        }
        let current = this_cpu()?;
        Some(Cpus { allowed, current })
    }

    /// Lets `thread` run on this thread's CPUs but the current one.
    fn keep_off_this_cpu<T>(&self, thread: &JoinHandle<T>) {
        let mut others = self.allowed;
        // SAFETY: `current` is within the set (`this_cpu`).
        unsafe { libc::CPU_CLR(self.current, &mut others) };
        set_affinity(thread, &others);
    }

    /// Has `thread` run on the CPU this thread runs on now (or, if that
    /// cannot be read, on any of this thread's CPUs).
    fn move_to_this_cpu<T>(&self, thread: &JoinHandle<T>) {
        let mut here = self.allowed;
        if let Some(cpu) = this_cpu() {
            // SAFETY: a set on this stack, and a CPU within it (`this_cpu`).
            unsafe {
                libc::CPU_ZERO(&mut here);
                libc::CPU_SET(cpu, &mut here);
            }
        }
        set_affinity(thread, &here);
    }
}

/// The CPU this thread runs on, if a CPU set can hold it (CPUs 0 to 1023).
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn this_cpu() -> Option<usize> {
    // SAFETY: no arguments; -1 on failure.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    (cpu < 8 * std::mem::size_of::<libc::cpu_set_t>()).then_some(cpu)
}

/// Sets the CPUs `thread` may run on; a failure leaves it where it is.
/// Only for a thread that has not ended (see [`STARTED`]): glibc passes
/// the kernel the thread's id, 0 once it has ended, which names the
/// calling thread.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn set_affinity<T>(thread: &JoinHandle<T>, cpus: &libc::cpu_set_t) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: a thread not joined yet (its handle is borrowed), so its
    // `pthread_t` is valid, and waiting (callers' stage protocol), so its
    // id names it; a set of the size given.
    unsafe {
        libc::pthread_setaffinity_np(
            thread.as_pthread_t(),
            std::mem::size_of::<libc::cpu_set_t>(),
            cpus,
        )
    };
}

/// Elsewhere the scheduler places the helper as it will.
#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
struct Cpus;

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
impl Cpus {
    fn of_this_thread() -> Option<Cpus> {
        Some(Cpus)
    }
    fn keep_off_this_cpu<T>(&self, _: &JoinHandle<T>) {}
    fn move_to_this_cpu<T>(&self, _: &JoinHandle<T>) {}
}
