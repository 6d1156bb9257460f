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
//!
//! Where io_uring's futex waits are available (uring.rs), the loop's thread also sleeps on the
//! wake word of each line it waits on, so a producer's wake reaches the loop directly, in one
//! thread wake-up instead of two (the watcher's, then the eventfd's); `woken` then does the
//! watcher's looking itself. The watcher keeps watching, so that is a shortcut only, and
//! `SAGE_QUEUE_IO_URING=0` turns it off.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::{QueueError, Result};
use crate::queue::SageQueue;
use crate::uring::{self, FutexRing};
use crate::watch::{self, Line};

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
    woken: Mutex<Woken>,
}

#[derive(Default)]
struct Woken {
    tokens: Vec<u64>,
    /// Set while `woken` wakes waiters itself: it returns their tokens, so the wakers need
    /// not make the eventfd readable.
    quiet: bool,
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
        let mut w = lock(&self.shared.woken);
        w.tokens.push(self.token);
        if !w.quiet {
            signal(&self.shared.fd);
        }
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

/// The loop thread's own futex waits (uring.rs): one pending wait per line watched at most.
struct Direct {
    ring: FutexRing,
    /// Pending waits by user_data: the queue (not kept alive by the wait) and line.
    armed: HashMap<u64, (Weak<SageQueue>, Line)>,
    next: u64,
}

impl Direct {
    /// Whether a wait is pending on `line` of the queue at `queue`'s address.
    fn is_armed(&self, queue: &Arc<SageQueue>, line: Line) -> bool {
        (self.armed.values()).any(|(q, l)| *l == line && q.as_ptr() == Arc::as_ptr(queue))
    }

    /// Sleep on `line`'s word of `queue` (if not already), from its value `word`.
    fn arm(&mut self, queue: &Arc<SageQueue>, line: Line, word: u32) {
        if self.is_armed(queue, line) || self.armed.len() >= uring::ENTRIES as usize / 2 {
            // A pending wait of a queue closed since (whose word may never move again, and
            // whose address a new queue may reuse) is cancelled.
            let ring = &mut self.ring;
            self.armed.retain(|&user_data, (q, _)| {
                let open = q.strong_count() > 0;
                if !open {
                    ring.cancel(user_data);
                }
                open
            });
            if self.is_armed(queue, line) {
                return;
            }
        }
        self.next += 1;
        if self
            .ring
            .arm(watch::line_word(queue, line), word, self.next)
        {
            self.armed.insert(self.next, (Arc::downgrade(queue), line));
        }
    }

    /// The lines whose waits completed (their queues, where still open); None when the
    /// kernel refused a wait for a reason other than those of a working ring (then the
    /// ring is given up: waiting on it again would only fail again at once).
    fn fired(&mut self) -> Option<Vec<(Arc<SageQueue>, Line)>> {
        let mut out = Vec::new();
        for (user_data, res) in self.ring.reap() {
            let Some((queue, line)) = self.armed.remove(&user_data) else {
                continue;
            };
            if ![0, -libc::EAGAIN, -libc::ECANCELED, -libc::EINTR].contains(&res) {
                return None;
            }
            if let Some(q) = queue.upgrade() {
                out.push((q, line));
            }
        }
        Some(out)
    }
}

pub struct ReadyFd {
    shared: Arc<Shared>,
    /// None where io_uring's futex waits are not available (or turned off).
    direct: Mutex<Option<Direct>>,
    waits: Mutex<HashMap<u64, Wait>>,
    /// The tokens `woken` collected and has not returned yet (newest first).
    round: Mutex<Vec<u64>>,
    /// Errors of waits that ended with one, until `error` raises them (or `cancel` drops them).
    errors: Mutex<HashMap<u64, QueueError>>,
    next: AtomicU64,
}

impl ReadyFd {
    pub fn new() -> Result<Self> {
        let fd = new_eventfd()?;
        let off = std::env::var("SAGE_QUEUE_IO_URING").is_ok_and(|v| v == "0");
        let direct = if off {
            None
        } else {
            FutexRing::new(fd.as_raw_fd()).map(|ring| Direct {
                ring,
                armed: HashMap::new(),
                next: 0,
            })
        };
        Ok(ReadyFd {
            shared: Arc::new(Shared {
                fd,
                woken: Mutex::new(Woken::default()),
            }),
            direct: Mutex::new(direct),
            waits: Mutex::new(HashMap::new()),
            round: Mutex::new(Vec::new()),
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
                self.sleep_on(id, line);
                Ok(token)
            }
        }
    }

    /// Have this (the loop's) thread sleep on the wake word of `line` of queue `id` too.
    fn sleep_on(&self, id: u64, line: u8) {
        let mut direct = lock(&self.direct);
        let Some(d) = direct.as_mut() else {
            return;
        };
        let (Ok(queue), Some(line)) = (
            crate::registry::lookup(id),
            crate::message::line_of(line).ok(),
        ) else {
            return;
        };
        let word = watch::line_word(&queue, line).load(std::sync::atomic::Ordering::SeqCst);
        d.arm(&queue, line, word);
        if d.ring.failed() {
            *direct = None; // the watcher alone wakes this loop from now on
        }
    }

    /// `woken`'s part with io_uring: wake the waiters of the lines whose futex waits
    /// completed, on this thread (their tokens are collected quietly), and sleep on those
    /// lines again while waiters are left there.
    fn wake_fired(&self) {
        let fired = {
            let mut direct = lock(&self.direct);
            let Some(d) = direct.as_mut() else {
                return;
            };
            match d.fired() {
                Some(fired) => fired,
                None => {
                    *direct = None; // the watcher alone wakes this loop from now on
                    return;
                }
            }
        };
        if fired.is_empty() {
            return;
        }
        lock(&self.shared.woken).quiet = true;
        let again: Vec<_> = fired
            .into_iter()
            .filter_map(|(q, line)| watch::wake_now(&q, line).map(|word| (q, line, word)))
            .collect();
        lock(&self.shared.woken).quiet = false;
        let mut direct = lock(&self.direct);
        if let Some(d) = direct.as_mut() {
            for (q, line, word) in again {
                d.arm(&q, line, word);
            }
            if d.ring.failed() {
                *direct = None;
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

    /// The token of a wait woken since the last calls, oldest first, or 0 when none is left:
    /// the loop calls it until 0 and resumes their callers; each caller then polls its own
    /// wait (`poll`). The first call of a round makes the eventfd unreadable until the next
    /// wake and collects what woke since.
    pub fn woken(&self) -> u64 {
        let mut round = lock(&self.round);
        if round.is_empty() {
            drain(&self.shared.fd);
            self.wake_fired();
            *round = std::mem::take(&mut lock(&self.shared.woken).tokens);
            round.reverse(); // popped from the end: oldest first
        }
        round.pop().unwrap_or(0)
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

    /// Whether this loop's thread sleeps on the wake words itself (io_uring).
    pub fn direct(&self) -> bool {
        lock(&self.direct).is_some()
    }
}
