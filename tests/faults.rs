//! Kill -9 at each protocol step, reached deterministically with the `fault-injection` hooks:
//! a forked child stops itself (SIGSTOP) at the step, the test SIGKILLs it there, and the
//! surviving handle must carry on: dead claims skipped, dead reads freed, a dead release-lock
//! holder's work finished, the dead attachment reclaimed. The same hooks also pause a
//! consumer inside its take while others go on (not a crash).
//! Run with: cargo test --features fault-injection --test faults
#![cfg(feature = "fault-injection")]

mod common;

use common::*;
use sage_queue::{stop_at, QueueError, SageQueue, Step};
use std::time::{Duration, Instant};

/// Fork a child that opens `name`, arms `step` and runs `op` (exit code 0 if it returns true);
/// return its pid once it has stopped at the step.
fn stop_child_at(name: &str, step: Step, op: impl FnOnce(&SageQueue) -> bool) -> libc::pid_t {
    // SAFETY: the child only opens the queue, runs `op` and exits with _exit; this test binary
    // has a single test, so no other test thread holds locks the child could need.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let q = SageQueue::open(name, true).unwrap();
        stop_at(Some(step));
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

/// `stop_child_at`, then SIGKILL the child there and reap it.
fn kill_child_at(name: &str, step: Step, op: fn(&SageQueue)) {
    let pid = stop_child_at(name, step, |q| {
        op(q);
        true
    });
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

    // A consumer dies after taking a message, before copying it out: that message is lost
    // with it, and its space comes back.
    drop(q);
    let name = unique("taken");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    q.put(b"m1", 0.0).unwrap();
    q.put(b"m2", 0.0).unwrap();
    kill_child_at(&name, Step::Taken, |q| {
        q.get(0.0).unwrap();
    });
    assert_eq!(q.get(2.0).unwrap(), b"m2");
    churn(&q, 3);
    let s = q.stats().unwrap();
    assert_eq!(s.lost, 1);
    assert_eq!(
        s.unfinished_tasks,
        s.msgs_in - 1,
        "the lost message counts as done"
    );

    // The release-lock holder dies while zeroing.
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
        q.put(&[1u8; 1000], 0.0).unwrap(); // 1008 bytes each in the ring
        q.get(0.0).unwrap();
    }
    // At 3024 only 1072 bytes are left in the lap: PADDING to 4096, the message at 4096.
    q.put(&[2u8; 2000], 0.0).unwrap();
    let pid = stop_child_at(&name, Step::Taken, |q| q.get(0.0).unwrap() == [2u8; 2000]);
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
