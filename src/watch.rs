//! Waiting for many queues without a thread per waiter: the readiness behind the async calls.
//!
//! An async caller (Python's `get_async`, Kotlin's and Swift's suspending calls) tries its
//! operation without waiting; when the queue has nothing (or no room), it awaits
//! `msg_ready_async` (message.rs), whose future (`ready` here) registers its waker and never
//! touches the queue's data: the operation itself is only ever done by the caller's own
//! non-waiting call, so cancelling a wait takes and puts nothing.
//!
//! Watcher threads sleep on the wake words of the lines that have async waiters, many at once
//! with `futex_waitv` (at most 127 words per thread, plus one private word that interrupts the
//! sleep when the watch list changes), announcing themselves in each line's waiter count so
//! producers and consumers wake them as they wake blocked callers. The bound: one watcher
//! thread per 127 distinct (queue, line) pairs watched at once in the process, started on first
//! use and kept. A waiter names the line's state (`line_state`: messages committed, room
//! returned, tasks done) that it read before its failed try, and is woken when the state moved
//! on from it: so a try that fails for a reason the counts do not show (a message behind
//! another handle's open loan, room behind a pinned view) waits for the next change instead of
//! retrying in a loop, and a change between the try and the wait is never missed. The watcher
//! wakes waiters in FIFO order, for a take only as many as there are messages minus those woken
//! and not yet back; a woken waiter that leaves without finishing (cancelled) hands its turn
//! on. An idle process whose waiters all wait costs no CPU: the watchers sleep in the kernel.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::layout::WakeLine;
use crate::queue::SageQueue;

/// What a waiter waits for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Line {
    /// A message to take.
    Data,
    /// Room to put.
    Space,
    /// Every task done (join).
    Tasks,
}

/// Words one futex_waitv call may watch (the kernel's limit is 128; one is the control word).
const WORDS_PER_WATCHER: usize = 127;
/// Longest sleep of a watcher: its deadlines are re-checked at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(1);

type Key = (usize, Line); // (the queue's address, line)

struct Waiter {
    token: u64,
    waker: Waker,
    /// The line's state when the caller last tried (`line_state`): it is woken when the
    /// state moved on from it (or the queue closed).
    seen: u64,
}

struct Watched {
    queue: Arc<SageQueue>,
    line: Line,
    /// Waiters not yet woken, in arrival order.
    waiting: VecDeque<Waiter>,
    /// Woken and not yet back (finished, re-registered or gone).
    in_flight: u32,
    /// The wake word's value when the watcher last looked.
    seen: u32,
    /// The earliest deadline of a waiter here (woken at it).
    deadlines: Vec<(u64, Instant)>,
}

struct Shard {
    /// The process that started this shard's thread (a forked child starts its own: threads
    /// do not survive fork).
    pid: u32,
    state: Mutex<HashMap<Key, Watched>>,
    /// A private futex word that interrupts the watcher's sleep when its list changes.
    control: AtomicU32,
}

fn shards() -> &'static Mutex<Vec<Arc<Shard>>> {
    static SHARDS: OnceLock<Mutex<Vec<Arc<Shard>>>> = OnceLock::new();
    SHARDS.get_or_init(|| Mutex::new(Vec::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn next_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// The shard that watches `key`, or one with room for it (a new watcher thread if none).
fn shard_for(key: Key) -> Arc<Shard> {
    let mut all = lock(shards());
    let pid = std::process::id();
    all.retain(|s| s.pid == pid);
    for s in all.iter() {
        let st = lock(&s.state);
        if st.contains_key(&key) || st.len() < WORDS_PER_WATCHER {
            return s.clone();
        }
    }
    let shard = Arc::new(Shard {
        pid,
        state: Mutex::new(HashMap::new()),
        control: AtomicU32::new(0),
    });
    let for_thread = shard.clone();
    std::thread::Builder::new()
        .name("sq-watch".into())
        .spawn(move || watch_loop(&for_thread))
        .expect("cannot start the sage-queue watcher thread");
    all.push(shard.clone());
    shard
}

fn interrupt(shard: &Shard) {
    shard.control.fetch_add(1, SeqCst);
    crate::wait::futex_wake_private(&shard.control);
}

impl SageQueue {
    fn wake_line(&self, line: Line) -> Option<&WakeLine> {
        match line {
            Line::Data => Some(&self.header().data_wake),
            Line::Space => Some(&self.header().space_wake),
            Line::Tasks => None,
        }
    }

    /// The futex word and waiter count of `line`.
    fn line_words(&self, line: Line) -> (&AtomicU32, &AtomicU32) {
        match self.wake_line(line) {
            Some(w) => (&w.seq, &w.waiters),
            None => {
                let t = &self.header().tasks;
                (&t.join_seq, &t.join_waiters)
            }
        }
    }

    /// A number that moves on whenever a caller waiting on `line` may be able to make
    /// progress: messages committed (data), records released plus messages taken (space: room
    /// comes back with either, a bound on the number of items frees room at a take), tasks
    /// done (tasks). A caller reads it before its non-waiting try and waits until it moved.
    pub(crate) fn line_state(&self, line: Line) -> u64 {
        let h = self.header();
        match line {
            Line::Data => h
                .prod
                .msgs_in
                .load(SeqCst)
                .wrapping_add(h.leases.returned.load(SeqCst)),
            Line::Space => h
                .rel
                .released
                .load(SeqCst)
                .wrapping_add(h.cons.msgs_out.load(SeqCst)),
            Line::Tasks => h.tasks.tasks_done.load(SeqCst),
        }
    }

    /// Whether a caller that read `seen` before its try should try again now.
    pub(crate) fn moved_on(&self, line: Line, seen: u64) -> bool {
        self.is_closed() || self.line_state(line) != seen
    }
}

/// Take out `w`'s waiters whose line moved on since they tried (FIFO), counting them in
/// flight, and add their wakers to `woken`; for a take, only as many as there are messages
/// (minus those woken and not yet back). The caller wakes them after unlocking: a waker may
/// poll its future at once on this thread, and the poll takes the lock.
fn wake_ready(w: &mut Watched, woken: &mut Vec<Waker>) {
    let q = w.queue.clone();
    let closed = q.is_closed();
    let state = q.line_state(w.line);
    let mut left = match w.line {
        Line::Data if !closed => {
            (q.qsize().min(u32::MAX as u64) as u32).saturating_sub(w.in_flight)
        }
        _ => u32::MAX,
    };
    let mut i = 0;
    while i < w.waiting.len() && left > 0 {
        if closed || w.waiting[i].seen != state {
            let waiter = w.waiting.remove(i).unwrap();
            w.deadlines.retain(|&(t, _)| t != waiter.token);
            w.in_flight += 1;
            woken.push(waiter.waker);
            left -= 1;
        } else {
            i += 1;
        }
    }
}

/// The futex word `line` of `queue` is woken on (ready_fd.rs sleeps on it through io_uring).
pub(crate) fn line_word(queue: &SageQueue, line: Line) -> &AtomicU32 {
    queue.line_words(line).0
}

/// Wake, on the calling thread, the waiters of `line` of `queue` whose line moved on, as the
/// watcher does after a wake: ready_fd.rs calls it when its own futex wait on the line's word
/// completed, which may be before the watcher thread runs. The watcher still watches the
/// word; whichever looks first wakes a waiter, and the other finds it gone. Returns the word's
/// value read before looking, when waiters are still waiting (to sleep on it again), or None.
pub(crate) fn wake_now(queue: &Arc<SageQueue>, line: Line) -> Option<u32> {
    let key = (Arc::as_ptr(queue) as usize, line);
    let word = line_word(queue, line).load(SeqCst);
    let pid = std::process::id();
    let all: Vec<Arc<Shard>> = lock(shards()).clone();
    let mut woken = Vec::new();
    let mut waiting = false;
    for shard in all.iter().filter(|s| s.pid == pid) {
        let mut st = lock(&shard.state);
        if let Some(w) = st.get_mut(&key) {
            wake_ready(w, &mut woken);
            waiting = !w.waiting.is_empty();
        }
    }
    // Outside the lock, as the watcher does: a waker may poll its future at once.
    for waker in woken {
        waker.wake();
    }
    waiting.then_some(word)
}

fn watch_loop(shard: &Shard) {
    loop {
        let control = shard.control.load(SeqCst);
        let mut words: Vec<(*const AtomicU32, u32)> = Vec::new();
        let mut next_deadline: Option<Instant> = None;
        let mut woken: Vec<Waker> = Vec::new();
        {
            let mut st = lock(&shard.state);
            let now = Instant::now();
            st.retain(|_, w| {
                // Deadlines passed: wake those waiters (their calls time out).
                let expired: Vec<u64> = (w.deadlines.iter())
                    .filter(|&&(_, d)| d <= now)
                    .map(|&(t, _)| t)
                    .collect();
                for t in expired {
                    if let Some(i) = w.waiting.iter().position(|x| x.token == t) {
                        let waiter = w.waiting.remove(i).unwrap();
                        w.in_flight += 1;
                        woken.push(waiter.waker);
                    }
                    w.deadlines.retain(|&(x, _)| x != t);
                }
                let queue = w.queue.clone();
                let (seq, waiters) = queue.line_words(w.line);
                // Read the word before the state it guards: a change after this read makes
                // the sleep below return at once.
                w.seen = seq.load(SeqCst);
                wake_ready(w, &mut woken);
                let keep = !w.waiting.is_empty() || w.in_flight > 0;
                if !keep {
                    waiters.fetch_sub(1, SeqCst);
                    return false;
                }
                if !w.waiting.is_empty() {
                    words.push((seq as *const AtomicU32, w.seen));
                }
                for &(_, d) in &w.deadlines {
                    next_deadline = Some(next_deadline.map_or(d, |n: Instant| n.min(d)));
                }
                true
            });
        }
        // Outside the lock: a waker may poll its future right here (an inline executor).
        let woke_any = !woken.is_empty();
        for waker in woken {
            waker.wake();
        }
        if woke_any {
            continue; // those polls may have changed the list: look again before sleeping
        }
        let timeout = next_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // The words stay mapped: each Watched holds its queue (and the list changes only
        // under the lock, after which the control word interrupts this sleep).
        crate::wait::futex_waitv(&words, (&shard.control, control), timeout);
    }
}

/// A waiter's registration, for the future below.
struct Registration {
    shard: Arc<Shard>,
    key: Key,
    token: u64,
}

/// Resolves when `line` of `queue` moved on from the state `seen` the caller read before its
/// try (or the deadline passes, or the queue closes): the caller then tries again.
pub struct Ready {
    queue: Arc<SageQueue>,
    line: Line,
    /// The line's state when the caller tried (SageQueue::line_state).
    seen: u64,
    deadline: Option<Instant>,
    reg: Option<Registration>,
    /// Woken by the watcher and counted in flight there.
    woken: bool,
}

pub fn ready(queue: Arc<SageQueue>, line: Line, seen: u64, deadline: Option<Instant>) -> Ready {
    Ready {
        queue,
        line,
        seen,
        deadline,
        reg: None,
        woken: false,
    }
}

impl Ready {
    fn key(&self) -> Key {
        (Arc::as_ptr(&self.queue) as usize, self.line)
    }
}

impl Future for Ready {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(reg) = &this.reg {
            let mut st = lock(&reg.shard.state);
            if let Some(w) = st.get_mut(&reg.key) {
                if let Some(waiter) = w.waiting.iter_mut().find(|x| x.token == reg.token) {
                    // Not woken yet: a spurious poll; keep waiting with the newest waker.
                    waiter.waker = cx.waker().clone();
                    return Poll::Pending;
                }
            }
            // Woken (moved in flight): the caller retries; it reports back by `finish`.
            this.woken = true;
            return Poll::Ready(());
        }
        if this.deadline.is_some_and(|d| d <= Instant::now())
            || this.queue.moved_on(this.line, this.seen)
        {
            return Poll::Ready(());
        }
        let key = this.key();
        let shard = shard_for(key);
        let token = next_token();
        {
            let mut st = lock(&shard.state);
            let w = st.entry(key).or_insert_with(|| {
                let (seq, waiters) = this.queue.line_words(this.line);
                waiters.fetch_add(1, SeqCst);
                Watched {
                    queue: this.queue.clone(),
                    line: this.line,
                    waiting: VecDeque::new(),
                    in_flight: 0,
                    seen: seq.load(SeqCst),
                    deadlines: Vec::new(),
                }
            });
            w.waiting.push_back(Waiter {
                token,
                waker: cx.waker().clone(),
                seen: this.seen,
            });
            if let Some(d) = this.deadline {
                w.deadlines.push((token, d));
            }
        }
        this.reg = Some(Registration { shard, key, token });
        // The watcher re-checks the line (it may be ready already) and sleeps on it.
        interrupt(&this.reg.as_ref().unwrap().shard);
        Poll::Pending
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        let Some(reg) = self.reg.take() else {
            return;
        };
        let mut st = lock(&reg.shard.state);
        if let Some(w) = st.get_mut(&reg.key) {
            if let Some(i) = w.waiting.iter().position(|x| x.token == reg.token) {
                w.waiting.remove(i);
                w.deadlines.retain(|&(t, _)| t != reg.token);
            } else {
                // Woken and now done (it took, found nothing, or was cancelled): its turn is
                // over, and the watcher may hand the next one on.
                w.in_flight = w.in_flight.saturating_sub(1);
            }
        }
        drop(st);
        interrupt(&reg.shard);
    }
}
