//! Blocking: spin briefly, then sleep on a futex word in shared memory.
//!
//! Waiters announce themselves in a waiter count next to the word, so a producer or consumer
//! that finds no waiters makes no syscall. The futex calls are the process-shared kind (no
//! FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED file mapping.

use std::time::{Duration, Instant};

use crate::layout::sync::{fence, AtomicU32, Ordering};
use crate::layout::WakeLine;

/// Sleep while `word == expected`, at most `timeout`. Returns on wake, timeout, signal or
/// value change; callers re-check their condition.
#[cfg(not(loom))]
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in memory that outlives the call; FUTEX_WAIT only
    // reads it and `ts` is a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wake every process sleeping on `word`.
#[cfg(not(loom))]
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not touch memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wake the threads of this process sleeping on `word`, a private (process-local) futex.
#[cfg(not(loom))]
pub fn futex_wake_private(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not touch memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The kernel's `struct futex_waitv`.
#[cfg(not(loom))]
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// Sleep until any of `words` (shared futex words in mappings that outlive the call, each
/// with the value it must still hold) or the private `control` word changes or is woken, at
/// most `timeout` (futex_waitv, Linux 5.16+; at most 127 words). Returns early for any of
/// them; callers re-check.
#[cfg(not(loom))]
pub fn futex_waitv(
    words: &[(*const AtomicU32, u32)],
    control: (&AtomicU32, u32),
    timeout: Duration,
) {
    const FUTEX2_SIZE_U32: u32 = 0x02;
    const FUTEX2_PRIVATE: u32 = 128;
    let mut list: Vec<FutexWaitv> = words
        .iter()
        .map(|&(w, val)| FutexWaitv {
            val: val as u64,
            uaddr: w as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    list.push(FutexWaitv {
        val: control.1 as u64,
        uaddr: control.0.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        reserved: 0,
    });
    // SAFETY: CLOCK_MONOTONIC is a valid clock and `now` a writable timespec.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let total = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
    let end = libc::timespec {
        tv_sec: now.tv_sec
            + timeout.as_secs() as libc::time_t
            + (total / 1_000_000_000) as libc::time_t,
        tv_nsec: (total % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `list` holds valid futex_waitv entries whose words are aligned u32s that stay
    // mapped for the call (the caller keeps their queues alive); `end` is a valid absolute
    // CLOCK_MONOTONIC time. The kernel only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            list.as_ptr(),
            list.len() as libc::c_uint,
            0u32,
            &end as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        );
    }
}

// The loom model never sleeps (its threads retry after `loom::thread::yield_now`): no futex.
#[cfg(loom)]
pub fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) {}
#[cfg(loom)]
pub fn futex_wake_all(_word: &AtomicU32) {}

/// After publishing a change (with a SeqCst store or RMW), wake the sleepers on `line` if any.
#[inline]
pub fn wake(line: &WakeLine) {
    fence(Ordering::SeqCst);
    if line.waiters.load(Ordering::SeqCst) > 0 {
        line.seq.fetch_add(1, Ordering::SeqCst);
        futex_wake_all(&line.seq);
    }
}

/// Sleep on `line` unless `ready()` turns true after announcing the wait.
/// Returns true when `ready()` was true (no sleep happened).
pub fn sleep_unless(line: &WakeLine, timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let seq = line.seq.load(Ordering::SeqCst);
    line.waiters.fetch_add(1, Ordering::SeqCst);
    let ok = ready();
    if !ok {
        futex_wait(&line.seq, seq, timeout);
    }
    line.waiters.fetch_sub(1, Ordering::SeqCst);
    ok
}

/// A caller's time limit: negative or +infinite seconds wait forever, 0 tries once; NaN is
/// refused (InvalidArgument), as it is no number of seconds.
#[derive(Clone, Copy)]
pub struct Deadline {
    end: Option<Instant>,
    immediate: bool,
}

impl Deadline {
    pub fn from_secs(timeout: f64) -> Result<Deadline, crate::error::QueueError> {
        if timeout.is_nan() {
            return Err(crate::error::QueueError::invalid(
                "timeout must be a number of seconds, not NaN",
            ));
        }
        Ok(Self::from_number(timeout))
    }

    fn from_number(timeout: f64) -> Deadline {
        if timeout < 0.0 || timeout.is_infinite() {
            return Deadline {
                end: None,
                immediate: false,
            };
        }
        if timeout == 0.0 {
            return Deadline {
                end: None,
                immediate: true,
            };
        }
        let d = Duration::from_secs_f64(timeout.min(1e9));
        Deadline {
            end: Some(Instant::now() + d),
            immediate: false,
        }
    }
    /// When the time is up (None: never, or at once when immediate).
    pub fn end(&self) -> Option<Instant> {
        self.end
    }

    /// Try once, never wait.
    pub fn is_immediate(&self) -> bool {
        self.immediate
    }
    /// Time left, capped at `slice`; None when the deadline has passed.
    pub fn next_slice(&self, slice: Duration) -> Option<Duration> {
        if self.immediate {
            return None;
        }
        match self.end {
            None => Some(slice),
            Some(end) => {
                let now = Instant::now();
                if now >= end {
                    None
                } else {
                    Some((end - now).min(slice))
                }
            }
        }
    }
}

/// Wait without sleeping for up to `busy + polite`, checking `ready`; true as soon as it
/// holds. For `busy` the CPU spins (a peer on another core usually answers within
/// microseconds, far sooner than a futex round trip); for `polite` it yields between checks,
/// so a peer waiting for this core can run.
pub fn spin(busy: Duration, polite: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut i = 0u32;
    loop {
        for _ in 0..32 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        i += 1;
        let spent = start.elapsed();
        if spent >= busy + polite {
            return false;
        }
        // Past `busy`, yield at every check; before it, only now and then.
        if spent >= busy || i % 16 == 0 {
            std::thread::yield_now();
        }
    }
}

/// Wake `join` callers after tasks were marked done.
pub fn wake_tasks(line: &crate::layout::TaskLine) {
    fence(Ordering::SeqCst);
    if line.join_waiters.load(Ordering::SeqCst) > 0 {
        line.join_seq.fetch_add(1, Ordering::SeqCst);
        futex_wake_all(&line.join_seq);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert!(matches!(
            Deadline::from_secs(f64::NAN),
            Err(crate::error::QueueError::InvalidArgument { .. })
        ));
        for forever in [f64::INFINITY, f64::NEG_INFINITY, -1.0, -0.5] {
            let d = Deadline::from_secs(forever).unwrap();
            assert!(!d.is_immediate() && d.end.is_none(), "{forever}");
            assert_eq!(
                d.next_slice(Duration::from_millis(10)),
                Some(Duration::from_millis(10))
            );
        }
        assert!(Deadline::from_secs(0.0).unwrap().is_immediate());
        let d = Deadline::from_secs(1e300).unwrap();
        assert!(d.end.is_some() && !d.is_immediate());
        let d = Deadline::from_secs(0.001).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.next_slice(Duration::from_millis(10)), None);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine (lease
/// deadlines are compared across processes).
#[cfg(not(loom))]
pub fn monotonic_ns() -> u64 {
    let mut now: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: CLOCK_MONOTONIC is a valid clock and `now` a writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The loom model's clock (src/loom_tests.rs): a counter that moves 1 ms at every reading, so
/// a model's executions differ only in their schedules, and a visibility timeout shorter than
/// 1 ms has passed at any later reading. One per model: loom runs a model's threads on the
/// test's own thread.
#[cfg(loom)]
pub fn monotonic_ns() -> u64 {
    std::thread_local! {
        static NOW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    NOW.with(|now| {
        now.set(now.get() + 1_000_000);
        now.get()
    })
}
