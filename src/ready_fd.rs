//! `ReadyFd`: the async wait (`msg_ready_async`) for an event loop that waits on file
//! descriptors, as Python's asyncio does (`loop.add_reader`).
//!
//! Kotlin and Swift await `msg_ready_async` as a UniFFI future: the watcher thread (watch.rs)
//! wakes it through their executors' continuation callbacks. For asyncio that callback runs
//! Python on the watcher thread (a foreign thread that must take the GIL), which then hands
//! over to the loop with `call_soon_threadsafe`: an idle await woke in about 185 µs p50.
//! Here the SAME future is polled by the event loop's own thread, and its waker does nothing
//! but note the waiter's token and write to an eventfd that the loop watches: the watcher's
//! part of a wake is one write(2), and no Python runs outside the loop.
//!
//! One ReadyFd per event loop (it is not meant to be shared between loops): `start` begins a
//! wait and polls it once; the loop calls `woken` when the fd is readable and resumes the
//! callers it names; each caller polls its own wait (`poll`) right before it tries again, as
//! the UniFFI future would be polled in its task; `cancel` drops a wait that is over or no
//! longer wanted (a cancelled coroutine: the wait takes and puts nothing). The eventfd
//! is closed when the ReadyFd and every waker that could still write to it are gone, so a
//! late wake never writes to a reused descriptor.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::{QueueError, Result};

type Wait = Pin<Box<dyn Future<Output = Result<bool>> + Send>>;

/// `poll`'s code for a wait that ended with an error (`error(token)` raises it).
pub const READY_FAILED: u64 = 2;
/// `poll`'s code for a wait that goes on.
pub const READY_PENDING: u64 = 3;
/// Tokens start here: `start` returns 0 (false) or 1 (true) for a wait that ended at once.
const FIRST_TOKEN: u64 = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the wakers share with the ReadyFd: the eventfd and the tokens woken since the loop
/// last looked.
struct Shared {
    fd: OwnedFd,
    woken: Mutex<Vec<u64>>,
}

struct TokenWaker {
    shared: Arc<Shared>,
    token: u64,
}

impl Wake for TokenWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.shared.woken).push(self.token);
        signal(&self.shared.fd);
    }
}

/// A new non-blocking, close-on-exec eventfd.
fn new_eventfd() -> Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so OwnedFd may take it.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(QueueError::io("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: see above: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make the eventfd readable (adds 1; a full counter is already readable).
fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to a descriptor this Shared owns (open while it
    // lives); an error (EAGAIN at the counter's maximum) leaves it readable anyway.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Make the eventfd unreadable again (reads its counter; EAGAIN when it was not readable).
fn drain(fd: &OwnedFd) {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64 from a descriptor this Shared owns.
    unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
}

pub struct ReadyFd {
    shared: Arc<Shared>,
    waits: Mutex<HashMap<u64, Wait>>,
    /// Errors of waits that ended with one, until `error` raises them (or `cancel` drops them).
    errors: Mutex<HashMap<u64, QueueError>>,
    next: AtomicU64,
}

impl ReadyFd {
    pub fn new() -> Result<Self> {
        Ok(ReadyFd {
            shared: Arc::new(Shared {
                fd: new_eventfd()?,
                woken: Mutex::new(Vec::new()),
            }),
            waits: Mutex::new(HashMap::new()),
            errors: Mutex::new(HashMap::new()),
            next: AtomicU64::new(FIRST_TOKEN),
        })
    }

    /// The eventfd to watch for reading; readable when `woken` has something.
    pub fn fd(&self) -> i32 {
        self.shared.fd.as_raw_fd()
    }

    /// Begin `msg_ready_async(id, line, seen, timeout)` and poll it once: 0 or 1 (its result)
    /// when it ended at once, its error when it failed at once, else its token (>= 16).
    pub fn start(&self, id: u64, line: u8, seen: u64, timeout: f64) -> Result<u64> {
        let token = self.next.fetch_add(1, Relaxed);
        let mut wait: Wait = Box::pin(crate::message::msg_ready_async(id, line, seen, timeout));
        match self.poll_wait(token, &mut wait) {
            Poll::Ready(result) => result.map(u64::from),
            Poll::Pending => {
                lock(&self.waits).insert(token, wait);
                Ok(token)
            }
        }
    }

    fn poll_wait(&self, token: u64, wait: &mut Wait) -> Poll<Result<bool>> {
        let waker = Waker::from(Arc::new(TokenWaker {
            shared: self.shared.clone(),
            token,
        }));
        wait.as_mut().poll(&mut Context::from_waker(&waker))
    }

    /// The tokens of the waits woken since the last call (little-endian u64 each), for the
    /// loop to resume their callers; each caller then polls its own wait (`poll`). Makes the
    /// eventfd unreadable until the next wake.
    pub fn woken(&self) -> Vec<u8> {
        drain(&self.shared.fd);
        let woken = std::mem::take(&mut *lock(&self.shared.woken));
        woken.iter().flat_map(|t| t.to_le_bytes()).collect()
    }

    /// Poll the wait `token` on the calling thread (its caller's, after `woken` named it):
    /// 0 (the timeout ended) or 1 (the line moved on, or the queue closed) when it ended, 2
    /// when it failed (`error` raises why), 3 (READY_PENDING) when it still waits (woken for
    /// nothing, or for a lease check). Polled by the caller just before its retry, as an
    /// executor polls a future: the watcher counts a woken waiter in flight until this final
    /// poll, so it does not wake more waiters than there are messages meanwhile.
    pub fn poll(&self, token: u64) -> u64 {
        let Some(mut wait) = lock(&self.waits).remove(&token) else {
            return 1; // ended or cancelled already: the caller just tries again
        };
        match self.poll_wait(token, &mut wait) {
            Poll::Pending => {
                lock(&self.waits).insert(token, wait);
                READY_PENDING
            }
            Poll::Ready(Ok(ready)) => u64::from(ready),
            Poll::Ready(Err(e)) => {
                lock(&self.errors).insert(token, e);
                READY_FAILED
            }
        }
    }

    /// Raise the error of the wait `token` that `poll` reported as failed.
    pub fn error(&self, token: u64) -> Result<()> {
        match lock(&self.errors).remove(&token) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Forget the wait `token` (the caller no longer waits, or it ended): dropping it leaves
    /// the watcher.
    pub fn cancel(&self, token: u64) {
        let wait = lock(&self.waits).remove(&token);
        lock(&self.errors).remove(&token);
        drop(wait); // outside the lock: it takes the watcher's lock
    }

    /// Waits started and not yet ended nor cancelled.
    pub fn pending(&self) -> u64 {
        lock(&self.waits).len() as u64
    }
}
