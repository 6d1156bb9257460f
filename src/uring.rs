//! `FutexRing`: futex waits that an event loop's own thread sleeps on, through io_uring.
//!
//! An awaiting asyncio caller sleeps in its loop's `epoll_wait`, not on the queue's futex
//! word; the watcher thread (watch.rs) sleeps on the word and writes the loop's eventfd, so a
//! wake costs two thread wake-ups in a row. io_uring's futex wait (`IORING_OP_FUTEX_WAIT`,
//! Linux 6.7+) lets the loop's thread itself wait on the word: the producer's `FUTEX_WAKE`
//! completes the request, the kernel posts its completion on the submitting thread and signals
//! the eventfd registered with the ring (the same eventfd the loop already watches). This is
//! only a shortcut: the watcher still watches every word, so where io_uring is missing or
//! refused (older kernels, seccomp profiles, `io_uring_disabled`), `new` returns None and
//! nothing else changes.
//!
//! The ring is the kernel's standard one (submission and completion rings mapped from the
//! ring's descriptor); only futex waits (and cancels of them) are ever submitted, one wait
//! per watched word at most. The kernel posts a completion by interrupting the submitting
//! thread as a signal would (its `epoll_wait` returns EINTR and is retried, as Python's
//! selectors and libuv do), and only while that thread awaits a queue.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering::*};

const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;
const IORING_REGISTER_EVENTFD: u32 = 4;
const IORING_REGISTER_PROBE: u32 = 8;
const IO_URING_OP_SUPPORTED: u16 = 1;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
const IORING_OP_FUTEX_WAIT: u8 = 51;
/// The user_data of cancel requests (their completions are of no interest).
pub const CANCEL: u64 = 0;
/// futex2 flags: a 32-bit word, shared between processes (no FUTEX2_PRIVATE).
const FUTEX2_SIZE_U32: i32 = 0x02;
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;
/// Submission entries; completions are twice as many, and at most this many waits are
/// pending at once (`arm` refuses more), so completions never overflow.
pub const ENTRIES: u32 = 64;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    resv2: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    resv2: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// `struct io_uring_sqe` (64 bytes), with the fields a futex wait uses.
#[repr(C)]
#[derive(Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    addr2: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: u32,
    addr3: u64,
    pad2: u64,
}

/// `struct io_uring_cqe` (16 bytes).
#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// A region mapped from the ring's descriptor, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: i64) -> Option<Mapping> {
        // SAFETY: maps `len` bytes of the ring's descriptor at one of the offsets the kernel
        // defines for it; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The u32 at byte `offset` (an offset the kernel reported inside this mapping).
    fn word(&self, offset: u32) -> *const AtomicU32 {
        debug_assert!(offset as usize + 4 <= self.len);
        // SAFETY: the kernel's offsets lie inside the mapping and are 4-byte aligned.
        unsafe { self.ptr.add(offset as usize).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `new` mapped, which nothing uses any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub struct FutexRing {
    fd: OwnedFd,
    sq: Mapping,
    cq: Mapping,
    sqes: Mapping,
    sq_off: SqOffsets,
    cq_off: CqOffsets,
    /// Waits submitted and not yet reaped.
    pending: u32,
    /// A submission failed: the ring's state is unknown, so nothing more is submitted.
    failed: bool,
}

// SAFETY: the mappings are plain shared memory owned by this value; the ReadyFd keeps it
// behind a mutex, so one thread at a time submits and reaps.
unsafe impl Send for FutexRing {}

impl FutexRing {
    /// A ring whose completions signal `eventfd`, or None when io_uring or its futex waits
    /// are not available here.
    pub fn new(eventfd: RawFd) -> Option<FutexRing> {
        let mut p = Params::default();
        // SAFETY: io_uring_setup reads and fills the Params it is given, which lives across
        // the call; a non-negative result is a new descriptor that only OwnedFd owns.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, ENTRIES, &mut p as *mut Params) };
        if fd < 0 {
            return None;
        }
        // SAFETY: see above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let raw = fd.as_raw_fd();
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * std::mem::size_of::<Cqe>();
        let ring = FutexRing {
            sq: Mapping::new(raw, sq_len, IORING_OFF_SQ_RING)?,
            cq: Mapping::new(raw, cq_len, IORING_OFF_CQ_RING)?,
            sqes: Mapping::new(
                raw,
                p.sq_entries as usize * std::mem::size_of::<Sqe>(),
                IORING_OFF_SQES,
            )?,
            sq_off: p.sq_off,
            cq_off: p.cq_off,
            fd,
            pending: 0,
            failed: false,
        };
        let mut eventfd = eventfd;
        (ring.supports_futex_wait() && ring.register(IORING_REGISTER_EVENTFD, &mut eventfd, 1))
            .then_some(ring)
    }

    /// io_uring_register with `count` items at `arg`, which the kernel reads (an eventfd) or
    /// fills (a probe).
    fn register<T: ?Sized>(&self, opcode: u32, arg: &mut T, count: u32) -> bool {
        // SAFETY: the caller sized `arg` for `opcode` and `count`; it is live and exclusively
        // borrowed across the call, so the kernel may read or write it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd.as_raw_fd(),
                opcode,
                arg as *mut T as *mut libc::c_void,
                count,
            )
        };
        r >= 0
    }

    /// Whether this kernel knows IORING_OP_FUTEX_WAIT (Linux 6.7+).
    fn supports_futex_wait(&self) -> bool {
        // struct io_uring_probe: a 16-byte header, then 8 bytes per opcode.
        let mut probe = [0u64; 2 + 256];
        let ok = self.register(IORING_REGISTER_PROBE, &mut probe, 256);
        let last_op = probe[0] as u8;
        let entry = probe[2 + IORING_OP_FUTEX_WAIT as usize];
        let flags = ((entry >> 16) & 0xffff) as u16; // op: u8, resv: u8, flags: u16
        ok && last_op >= IORING_OP_FUTEX_WAIT && flags & IO_URING_OP_SUPPORTED != 0
    }

    /// Sleep on `word` while it holds `expected`: a completion carrying `user_data` arrives
    /// (and signals the eventfd) when the word is woken, or at once if it already moved on.
    /// False when the ring is full or refused the submission (the watcher still watches).
    ///
    /// The calling thread is the one the kernel posts the completion on: the loop's thread.
    pub fn arm(&mut self, word: &AtomicU32, expected: u32, user_data: u64) -> bool {
        self.submit(Sqe {
            opcode: IORING_OP_FUTEX_WAIT,
            fd: FUTEX2_SIZE_U32,
            addr: word.as_ptr() as u64,
            addr2: u64::from(expected),
            addr3: FUTEX_BITSET_MATCH_ANY,
            user_data,
            ..Sqe::default()
        })
    }

    /// Cancel the pending wait `user_data` (its completion, -ECANCELED, still arrives).
    pub fn cancel(&mut self, user_data: u64) -> bool {
        self.submit(Sqe {
            opcode: IORING_OP_ASYNC_CANCEL,
            fd: -1,
            addr: user_data,
            user_data: CANCEL,
            ..Sqe::default()
        })
    }

    /// Whether a submission failed (the owner gives the ring up: the watcher still wakes).
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn submit(&mut self, sqe: Sqe) -> bool {
        if self.pending >= ENTRIES || self.failed {
            return false;
        }
        // SAFETY: the offsets are the kernel's, inside the submission ring mapping.
        let (head, tail) = unsafe {
            (
                &*self.sq.word(self.sq_off.head),
                &*self.sq.word(self.sq_off.tail),
            )
        };
        // SAFETY: as above.
        let mask = unsafe { (*self.sq.word(self.sq_off.ring_mask)).load(Relaxed) };
        let t = tail.load(Relaxed); // only this side writes the tail
        if t.wrapping_sub(head.load(Acquire)) > mask {
            return false;
        }
        let index = t & mask;
        // SAFETY: entry `index` of the submission queue is free (the kernel consumed every
        // entry before the tail up to its head, checked above) and lies inside the mapping;
        // the array slot for it likewise.
        unsafe {
            self.sqes.ptr.cast::<Sqe>().add(index as usize).write(sqe);
            let array = self.sq.ptr.add(self.sq_off.array as usize).cast::<u32>();
            array.add(index as usize).write(index);
        }
        tail.store(t.wrapping_add(1), Release); // publishes the entry to the kernel
                                                // SAFETY: io_uring_enter on our ring, submitting one entry, waiting for nothing.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd.as_raw_fd(),
                1u32,
                0u32,
                0u32,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if r == 1 {
            self.pending += 1;
        } else {
            self.failed = true;
        }
        r == 1
    }

    /// The completions posted since the last call: (user_data, result), the result 0 for a
    /// wake and a negative errno otherwise (-EAGAIN: the word had moved on already).
    pub fn reap(&mut self) -> Vec<(u64, i32)> {
        // SAFETY: the offsets are the kernel's, inside the completion ring mapping.
        let (head, tail, mask) = unsafe {
            (
                &*self.cq.word(self.cq_off.head),
                &*self.cq.word(self.cq_off.tail),
                (*self.cq.word(self.cq_off.ring_mask)).load(Relaxed),
            )
        };
        let h = head.load(Relaxed); // only this side writes the head
        let t = tail.load(Acquire); // the kernel's entries before it are written
        let mut out = Vec::new();
        let mut i = h;
        while i != t {
            // SAFETY: entries between head and tail are completions the kernel wrote
            // (published by its Release store of the tail), inside the mapping.
            let cqe = unsafe {
                self.cq
                    .ptr
                    .add(self.cq_off.cqes as usize)
                    .cast::<Cqe>()
                    .add((i & mask) as usize)
                    .read()
            };
            out.push((cqe.user_data, cqe.res));
            i = i.wrapping_add(1);
        }
        head.store(t, Release); // hands the entries back to the kernel
        self.pending = self.pending.saturating_sub(out.len() as u32);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_futex_wake_from_another_thread_completes_a_wait() {
        // SAFETY: eventfd takes no pointers; the descriptor is owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        // SAFETY: a fresh descriptor owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let Some(mut ring) = FutexRing::new(efd.as_raw_fd()) else {
            eprintln!("io_uring futex waits are not available here");
            return;
        };
        let word = Box::leak(Box::new(AtomicU32::new(7)));
        // A stale expected value completes at once with -EAGAIN.
        assert!(ring.arm(word, 6, 1));
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a live u64 (blocks until the completion signals).
        unsafe { libc::read(efd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        assert_eq!(ring.reap(), vec![(1, -libc::EAGAIN)]);
        // A wait on the current value completes when another thread wakes the word.
        assert!(ring.arm(word, 7, 2));
        assert!(ring.reap().is_empty());
        let w: &'static AtomicU32 = word;
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.fetch_add(1, SeqCst);
            crate::wait::futex_wake_all(w);
        });
        // SAFETY: as above.
        unsafe { libc::read(efd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        t.join().unwrap();
        assert_eq!(ring.reap(), vec![(2, 0)]);
        // A cancelled wait completes with -ECANCELED (and the cancel with its own result).
        assert!(ring.arm(word, 8, 3));
        assert!(ring.cancel(3));
        // SAFETY: as above.
        unsafe { libc::read(efd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        let mut done = ring.reap();
        while done.len() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            done.extend(ring.reap());
        }
        assert!(done.contains(&(3, -libc::ECANCELED)), "{done:?}");
        assert!(done.iter().any(|&(u, _)| u == CANCEL), "{done:?}");
        assert!(!ring.failed());
    }
}
