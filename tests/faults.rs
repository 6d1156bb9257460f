//! Kill -9 at each protocol step, reached deterministically with the `fault-injection` hooks:
//! a forked child stops itself (SIGSTOP) at the step, the test SIGKILLs it there, and the
//! surviving handle must carry on: dead claims and dead loans skipped, dead reads and dead
//! views freed, a dead release-lock holder's work finished, the dead attachment reclaimed,
//! while live loans and views are left alone. A child can also stop itself between two calls
//! (holding a loan or views) to be killed there. Acked gets, returned messages and nacks are
//! killed at their steps too (their messages are delivered again). The same hooks also pause a consumer inside
//! its take while others go on (not a crash).
//! Run with: cargo test --features fault-injection --test faults
#![cfg(feature = "fault-injection")]

mod common;

use common::*;
use sage_queue::{stop_at, QueueError, SageQueue, Step};
use std::time::{Duration, Instant};

/// Fork a child that opens `name`, arms `step` and runs `op` (exit code 0 if it returns true);
/// return its pid once it has stopped at the step. With no step, `op` stops itself
/// (`stop_here`) between two calls.
fn stop_child_at(
    name: &str,
    step: Option<Step>,
    op: impl FnOnce(&SageQueue) -> bool,
) -> libc::pid_t {
    // SAFETY: the child only opens the queue, runs `op` and exits with _exit; this test binary
    // has a single test, so no other test thread holds locks the child could need.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let q = SageQueue::open(name, true).unwrap();
        stop_at(step);
        let ok = op(&q);
        q.detach();
        // SAFETY: exiting the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting on our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFSTOPPED(status),
        "child did not stop at {step:?}: status {status}"
    );
    pid
}

/// Stop this (child) process here (SIGSTOP), as a fault hook does inside a call.
fn stop_here() {
    // SAFETY: raising a signal at the calling process has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// `stop_child_at`, then SIGKILL the child there and reap it.
fn kill_child_at(name: &str, step: Step, op: fn(&SageQueue)) {
    let pid = stop_child_at(name, Some(step), |q| {
        op(q);
        true
    });
    kill_child(pid);
}

/// SIGKILL a child stopped by `stop_child_at` and reap it.
fn kill_child(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: signalling and reaping our own stopped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Let a child stopped by `stop_child_at` go on; returns its exit code.
fn resume_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: continuing and reaping our own stopped child.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
    }
    assert!(
        libc::WIFEXITED(status),
        "child did not exit: status {status}"
    );
    libc::WEXITSTATUS(status)
}

/// Move more than `rounds` capacities through the queue; fails if it wedges.
fn churn(q: &SageQueue, rounds: u64) {
    let start = Instant::now();
    let body = [7u8; 200];
    for _ in 0..rounds * q.capacity() / 208 {
        q.put(&body, 2.0).expect("put wedged");
        assert_eq!(q.get(2.0).expect("get wedged"), body);
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// Put and get one message as large as the ring: it fits only once every byte of the ring
/// is free again (what dead processes held included).
fn put_get_largest(q: &SageQueue) {
    let big = payload(q.capacity(), q.max_message_size() as usize);
    q.put(&big, 2.0).expect("the whole ring did not come back");
    assert_eq!(q.get(2.0).unwrap(), big);
}

/// Write `bytes` at `address` (a loan's payload, in this process's mapping).
fn write_at(address: u64, bytes: &[u8]) {
    // SAFETY: the caller's open loan covers at least `bytes.len()` bytes from `address`, and
    // the mapping lives as long as its handle.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len()) };
}

/// The `len` bytes at `address` (a view's payload, in this process's mapping).
fn read_at(address: u64, len: u64) -> Vec<u8> {
    // SAFETY: the caller's pinned view covers `len` bytes from `address`.
    unsafe { std::slice::from_raw_parts(address as *const u8, len as usize) }.to_vec()
}

/// Exactly `n` small messages fit (the bound), and come out in order; the queue is empty after.
fn fill_exactly(q: &SageQueue, n: u8) {
    for i in 0..n {
        q.put(&[i], 0.0).expect("a put below the bound");
    }
    assert_eq!(q.put(b"over", 0.0), Err(QueueError::Full));
    for i in 0..n {
        assert_eq!(q.get(2.0).unwrap(), [i]);
    }
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
}

#[test]
fn kill_at_every_step() {
    // A producer dies after winning the tail CAS, before writing a header.
    let name = unique("claimed");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    kill_child_at(&name, Step::Claimed, |q| {
        q.put(b"from the dead", 0.0).unwrap()
    });
    q.put(b"after", 0.0).unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"after");
    assert_eq!(q.stats().unwrap().recovered, 1);
    assert_eq!(q.stats().unwrap().attached, 1);
    churn(&q, 3);

    // The same in a ring whose bytes are an earlier lap's: payloads made of words that read
    // as COMMITTED headers fill it, then a producer dies before writing its header. Its
    // claim's place holds one of those words, and recovery must still see a claim with no
    // header of this lap (EMPTY: the tag word is not its position's), skip it, and find the
    // record after it.
    drop(q);
    let name = unique("claimed-stale");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let lookalike: Vec<u8> = (0..60u64)
        .flat_map(|i| ((48u64 << 32) | 2 | (i << 40)).to_le_bytes())
        .collect();
    for _ in 0..20 {
        q.put(&lookalike, 0.0).unwrap();
        assert_eq!(q.get(0.0).unwrap(), lookalike);
    }
    kill_child_at(&name, Step::Claimed, |q| {
        q.put(b"from the dead", 0.0).unwrap()
    });
    q.put(b"after", 0.0).unwrap();
    q.put(&lookalike, 0.0).unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"after");
    assert_eq!(q.get(2.0).unwrap(), lookalike);
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    assert_eq!(q.stats().unwrap().recovered, 1);
    churn(&q, 3);

    // A producer dies mid-copy (header WRITING, payload partly written).
    drop(q);
    let name = unique("written");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    q.put(b"before", 0.0).unwrap();
    kill_child_at(&name, Step::Written, |q| q.put(&[1u8; 500], 0.0).unwrap());
    q.put(b"after", 0.0).unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"before");
    assert_eq!(q.get(2.0).unwrap(), b"after");
    assert_eq!(q.stats().unwrap().recovered, 1);
    churn(&q, 3);

    // A producer dies inside a batch.
    drop(q);
    let name = unique("batch");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    kill_child_at(&name, Step::Written, |q| {
        put_table(q, &[vec![1u8; 10], vec![2u8; 20], vec![3u8; 30]], 0.0).unwrap();
    });
    q.put(b"after", 0.0).unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"after");
    churn(&q, 3);

    // A consumer dies after taking a message (a get copies first, then wins the head CAS:
    // Taken is after both, before the record is marked CONSUMED): that one message is lost
    // with it, never delivered to anyone else, and its space comes back; the others are
    // delivered once each.
    drop(q);
    let name = unique("taken");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    for m in [&b"m1"[..], b"m2", b"m3", b"m4"] {
        q.put(m, 0.0).unwrap();
    }
    kill_child_at(&name, Step::Taken, |q| {
        q.get(0.0).unwrap();
    });
    for m in [&b"m2"[..], b"m3", b"m4"] {
        assert_eq!(q.get(2.0).unwrap(), m);
    }
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    // Needs the whole ring: the dead consumer's record must have been freed.
    put_get_largest(&q);
    let s = q.stats().unwrap();
    assert_eq!((s.lost, s.recovered), (1, 0));
    assert_eq!(
        s.unfinished_tasks,
        s.msgs_in - 1,
        "the lost message counts as done"
    );
    churn(&q, 3);

    // The release-lock holder dies while releasing.
    drop(q);
    let name = unique("releasing");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    kill_child_at(&name, Step::Releasing, |q| loop {
        q.put(&[5u8; 600], 0.0).unwrap();
        q.get(0.0).unwrap();
    });
    churn(&q, 3);
    assert_eq!(q.stats().unwrap().attached, 1);

    // Not a crash: a consumer pauses right after taking a padding record and the message
    // after it, while a producer frees the padding and writes a new message over its place.
    // The consumer must still return its message (it used to read the new bytes as the
    // padding's header, walk past its message and return nothing; found by the soak).
    drop(q);
    let name = unique("padding");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    for _ in 0..3 {
        q.put(&[1u8; 1000], 0.0).unwrap(); // 1024 bytes each in the ring
        q.get(0.0).unwrap();
    }
    // At 3072 only 1024 bytes are left in the lap: PADDING to 4096, the message at 4096.
    q.put(&[2u8; 2000], 0.0).unwrap();
    let pid = stop_child_at(&name, Some(Step::Taken), |q| {
        q.get(0.0).unwrap() == [2u8; 2000]
    });
    // Needs the padding's space: the put frees it and writes across its place.
    q.put(&[0xabu8; 1500], 0.0).unwrap();
    assert_eq!(
        resume_child(pid),
        0,
        "the consumer lost or damaged its message"
    );
    assert_eq!(q.get(0.0).unwrap(), [0xabu8; 1500]);
    assert_eq!(q.stats().unwrap().lost, 0);
    churn(&q, 3);

    // Bounded queues (max_items, bound.rs). A producer dies holding the bound lock, after its
    // claim and WRITING header, before counting: the next taker of the lock repairs the count
    // from the journal, and recovery of the dead record gives its place in the bound back.
    drop(q);
    let name = unique("bound-put");
    let q = SageQueue::create(&name, 4096, 0o600, true, 3).unwrap();
    q.put(b"m1", 0.0).unwrap();
    kill_child_at(&name, Step::Counting, |q| q.put(b"dead", 0.0).unwrap());
    assert_eq!(q.get(2.0).unwrap(), b"m1");
    assert_eq!(q.get(0.2), Err(QueueError::Empty));
    assert_eq!(q.stats().unwrap().recovered, 1);
    fill_exactly(&q, 3);
    churn(&q, 3);

    // A consumer dies holding the bound lock after taking, before counting: its message is
    // lost and its place in the bound comes back.
    drop(q);
    let name = unique("bound-take");
    let q = SageQueue::create(&name, 4096, 0o600, true, 3).unwrap();
    q.put(b"m1", 0.0).unwrap();
    q.put(b"m2", 0.0).unwrap();
    kill_child_at(&name, Step::Counting, |q| {
        q.get(0.0).unwrap();
    });
    q.put(b"a", 0.0).unwrap();
    q.put(b"b", 0.0).unwrap();
    assert_eq!(q.put(b"x", 0.0), Err(QueueError::Full));
    for m in [&b"m2"[..], b"a", b"b"] {
        assert_eq!(q.get(2.0).unwrap(), m);
    }
    churn(&q, 3);
    assert_eq!(q.stats().unwrap().lost, 1);
    fill_exactly(&q, 3);

    // A producer dies mid-copy (counted, never committed); then a recovering consumer dies
    // holding the bound lock while it turns that record DEAD: the journal finishes its step.
    drop(q);
    let name = unique("bound-dead");
    let q = SageQueue::create(&name, 4096, 0o600, true, 2).unwrap();
    kill_child_at(&name, Step::Written, |q| q.put(&[1u8; 500], 0.0).unwrap());
    kill_child_at(&name, Step::Counting, |q| {
        let _ = q.get(1.0);
    });
    fill_exactly(&q, 2);
    assert_eq!(q.stats().unwrap().recovered, 1);
    churn(&q, 3);
    fill_exactly(&q, 2);

    // Loans. A producer dies holding an open loan (Loaned: its WRITING record claimed and
    // recorded in its slot's loan intent, nothing written yet), between messages of a live
    // producer. The consumer waits at the loan until recovery finds its holder dead: the record
    // becomes DEAD and is skipped (recovered), the message after it is delivered once, and its
    // space is reused.
    drop(q);
    let name = unique("loaned");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let producer = SageQueue::open(&name, true).unwrap();
    producer.put(b"before", 0.0).unwrap();
    kill_child_at(&name, Step::Loaned, |q| {
        q.loan(500, 0.0).unwrap();
    });
    producer.put(b"after", 0.0).unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"before");
    assert_eq!(q.get(2.0).unwrap(), b"after");
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    let s = q.stats().unwrap();
    assert_eq!((s.recovered, s.lost, s.attached), (1, 0, 2));
    put_get_largest(&q);
    drop(producer);
    churn(&q, 3);

    // A producer dies between calls with its loan half written, behind a live handle's open
    // loan: recovery must leave the live loan alone (consumers wait at it), then skip the dead
    // one once the live one is committed.
    drop(q);
    let name = unique("loan-written");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let live = SageQueue::open(&name, true).unwrap();
    let at = live.loan(8, 0.0).unwrap();
    let pid = stop_child_at(&name, None, |q| {
        let at = q.loan(500, 0.0).unwrap();
        write_at(at, &[0xee; 200]);
        stop_here();
        true
    });
    kill_child(pid);
    q.put(b"after", 0.0).unwrap();
    // Long enough for recovery to run (after 10 ms without progress) several times.
    assert_eq!(q.get(0.2), Err(QueueError::Empty));
    assert_eq!(q.stats().unwrap().recovered, 0, "a live loan was recovered");
    write_at(at, b"live one");
    live.commit_loan().unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"live one");
    assert_eq!(q.get(2.0).unwrap(), b"after");
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    assert_eq!(q.stats().unwrap().recovered, 1);
    put_get_largest(&q);
    // The live handle loans again in the freed space.
    let at = live.loan(3, 2.0).unwrap();
    write_at(at, b"new");
    live.commit_loan().unwrap();
    assert_eq!(q.get(2.0).unwrap(), b"new");
    drop(live);
    churn(&q, 3);

    // Views. A consumer dies right after pinning a view (Pinned: the record stays COMMITTED
    // below the head, covered by its pin intent). Other consumers carry on past it; the
    // dead viewer's message is freed by recovery when producers need its space (lost), and
    // nothing is delivered twice.
    drop(q);
    let name = unique("pinned");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    for m in [&b"m1"[..], b"m2", b"m3"] {
        q.put(m, 0.0).unwrap();
    }
    kill_child_at(&name, Step::Pinned, |q| {
        q.pin(0.0).unwrap();
    });
    assert_eq!(q.get(2.0).unwrap(), b"m2");
    assert_eq!(q.get(2.0).unwrap(), b"m3");
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    put_get_largest(&q);
    let s = q.stats().unwrap();
    assert_eq!((s.lost, s.recovered, s.pinned), (1, 0, 0));
    assert_eq!(
        s.unfinished_tasks,
        s.msgs_in - 1,
        "the lost message counts as done"
    );
    churn(&q, 3);

    // A consumer dies between calls holding two views, behind a live handle's view: recovery
    // must leave the live view alone (and its bytes intact) while producers wait for space,
    // then free both dead views (lost 2) once the live one is released.
    drop(q);
    let name = unique("views");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let sent: Vec<Vec<u8>> = (0..4).map(|i| payload(i, 300)).collect();
    for m in &sent {
        q.put(m, 0.0).unwrap();
    }
    let viewer = SageQueue::open(&name, true).unwrap();
    let (at, len) = viewer.pin(0.0).unwrap();
    let pid = stop_child_at(&name, None, |q| {
        q.pin(0.0).unwrap();
        q.pin(0.0).unwrap();
        stop_here();
        true
    });
    kill_child(pid);
    assert_eq!(q.get(2.0).unwrap(), sent[3]);
    let s = q.stats().unwrap();
    assert_eq!(
        (s.pinned, s.lost),
        (1, 0),
        "only the live view counts as pinned"
    );
    // No room while the live view holds the ring: the put waits (and recovers) in vain.
    let big = payload(9, q.max_message_size() as usize);
    assert_eq!(q.put(&big, 0.2), Err(QueueError::Full));
    assert_eq!(q.stats().unwrap().lost, 0, "a live view was recovered");
    assert_eq!(read_at(at, len), sent[0], "a live view changed");
    viewer.unpin(at).unwrap();
    put_get_largest(&q);
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    let s = q.stats().unwrap();
    assert_eq!((s.lost, s.recovered, s.pinned), (2, 0, 0));
    // The live handle pins again in the freed space.
    q.put(b"again", 0.0).unwrap();
    let (at, len) = viewer.pin(2.0).unwrap();
    assert_eq!(read_at(at, len), b"again");
    viewer.unpin(at).unwrap();
    drop(viewer);
    churn(&q, 3);

    // Acknowledged gets (lease.rs): a consumer killed at each step of get_acked, of taking a
    // returned message, and of nack. Each time its message is delivered again exactly once
    // (or, killed before the head CAS, stays in the ring for its first delivery); nothing is
    // lost and nothing stays unacknowledged.
    drop(q);
    let name = unique("acked");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let deliver = |q: &SageQueue, body: &[u8], deliveries: u32| {
        let m = q.get_acked(2.0).expect("the message came back");
        assert_eq!((m.data.as_slice(), m.deliveries), (body, deliveries));
        q.ack(m.receipt).unwrap();
        assert_eq!(
            q.get_acked(0.0).err(),
            Some(QueueError::Empty),
            "delivered twice"
        );
        let s = q.stats().unwrap();
        assert_eq!((s.unacked, s.redeliverable, s.lost), (0, 0, 0));
    };
    let acked_get = |q: &SageQueue| {
        q.get_acked(0.0).unwrap();
    };
    // Copied into its lease, before the head CAS: the message is still the ring's.
    q.put(b"copied", 0.0).unwrap();
    kill_child_at(&name, Step::LeaseCopied, acked_get);
    deliver(&q, b"copied", 1);
    // After the head CAS, before the lease is HELD: the TAKING lease holds the message.
    q.put(b"taken", 0.0).unwrap();
    kill_child_at(&name, Step::Taken, acked_get);
    deliver(&q, b"taken", 2);
    // HELD, before its record is marked CONSUMED.
    q.put(b"leased", 0.0).unwrap();
    kill_child_at(&name, Step::Leased, acked_get);
    deliver(&q, b"leased", 2);
    // Delivered and not acked (the child stops between calls).
    q.put(b"held", 0.0).unwrap();
    let pid = stop_child_at(&name, None, |q| {
        q.get_acked(0.0).unwrap();
        stop_here();
        true
    });
    kill_child(pid);
    deliver(&q, b"held", 2);
    // Nacked: MOVING, before it is READY again.
    q.put(b"nacked", 0.0).unwrap();
    kill_child_at(&name, Step::Moving, |q| {
        let m = q.get_acked(0.0).unwrap();
        q.nack(m.receipt).unwrap();
    });
    deliver(&q, b"nacked", 2);
    // Taking a returned message: an acked get (HELD again) and a plain one (MOVING).
    q.put(b"again", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    q.nack(m.receipt).unwrap();
    kill_child_at(&name, Step::Serving, acked_get);
    deliver(&q, b"again", 3);
    q.put(b"plain", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    q.nack(m.receipt).unwrap();
    kill_child_at(&name, Step::Serving, |q| {
        q.get(0.0).unwrap();
    });
    deliver(&q, b"plain", 2);
    assert_eq!(q.stats().unwrap().redelivered, 8);
    put_get_largest(&q);
    churn(&q, 3);

    // Nothing is left behind once the survivors close.
    drop(q);
    let left: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotFound { .. })
    ));
}
