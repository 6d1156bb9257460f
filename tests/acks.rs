//! Acknowledged gets (lease.rs): ack, nack and redelivery, fencing of stale receipts, the
//! visibility timeout, max_deliveries and the dead-letter queue, batches, plain gets of
//! returned messages, a ring that keeps flowing past an unacknowledged message, and
//! redelivery after the holder's SIGKILL (a child process: this test binary run again).

mod common;

use common::*;
use sage_queue::{AckPolicy, QueueError, SageQueue};
use std::time::{Duration, Instant};

fn create(cap: u64) -> SageQueue {
    SageQueue::create(&unique("acks"), cap, 0o600, true, 0).unwrap()
}

fn policy(max_deliveries: u32, visibility_timeout: f64, dead_letter: Option<&str>) -> AckPolicy {
    AckPolicy {
        max_deliveries,
        visibility_timeout,
        dead_letter: dead_letter.map(str::to_string),
    }
}

#[test]
fn ack_frees_and_a_second_ack_is_refused() {
    let q = create(4096);
    q.put(b"one", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    assert_eq!((m.data.as_slice(), m.deliveries), (&b"one"[..], 1));
    let s = q.stats().unwrap();
    assert_eq!((s.unacked, s.messages), (1, 0));
    q.ack(m.receipt).unwrap();
    assert_eq!(q.stats().unwrap().unacked, 0);
    let err = q.ack(m.receipt).unwrap_err();
    assert!(matches!(err, QueueError::StaleReceipt { .. }), "{err:?}");
    assert!(matches!(q.get_acked(0.0), Err(QueueError::Empty)));
    let err = q.ack(12345).unwrap_err();
    assert!(matches!(err, QueueError::InvalidArgument { .. }), "{err:?}");
}

#[test]
fn nack_delivers_again_and_fences_the_old_receipt() {
    let q = create(4096);
    q.put(b"again", 0.0).unwrap();
    let first = q.get_acked(0.0).unwrap();
    q.nack(first.receipt).unwrap();
    let s = q.stats().unwrap();
    assert_eq!((s.redeliverable, s.messages, q.qsize()), (1, 1, 1));
    let second = q.get_acked(0.0).unwrap();
    assert_eq!(
        (second.data.as_slice(), second.deliveries),
        (&b"again"[..], 2)
    );
    assert!(matches!(
        q.ack(first.receipt),
        Err(QueueError::StaleReceipt { .. })
    ));
    assert!(matches!(
        q.nack(first.receipt),
        Err(QueueError::StaleReceipt { .. })
    ));
    q.ack(second.receipt).unwrap();
    assert_eq!(q.stats().unwrap().redelivered, 1);
}

#[test]
fn receipts_of_another_queue_are_refused() {
    // Lease generations start at a random value per queue.
    let queues: Vec<SageQueue> = (0..8).map(|_| create(4096)).collect();
    let mut receipts = Vec::new();
    for q in &queues {
        q.put(b"m", 0.0).unwrap();
        receipts.push(q.get_acked(0.0).unwrap().receipt);
    }
    for (i, q) in queues.iter().enumerate() {
        for (j, r) in receipts.iter().enumerate() {
            if i != j {
                assert!(
                    matches!(q.ack(*r), Err(QueueError::StaleReceipt { .. })),
                    "queue {i} took queue {j}'s receipt"
                );
            }
        }
        q.ack(receipts[i]).unwrap();
    }
}

#[test]
fn a_plain_get_takes_a_returned_message() {
    let q = create(4096);
    q.put(b"m", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    q.nack(m.receipt).unwrap();
    assert_eq!(q.get(0.0).unwrap(), b"m");
    assert!(matches!(q.get(0.0), Err(QueueError::Empty)));
    assert_eq!(q.stats().unwrap().unacked, 0);
}

#[test]
fn a_view_waits_for_the_ring_not_for_returned_messages() {
    // Views do not take returned messages; waiting for one sleeps instead of spinning on them.
    let q = create(4096);
    q.put(b"r", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    q.nack(m.receipt).unwrap();
    // SAFETY: getrusage fills the zeroed struct it is given.
    let cpu = || unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_utime.tv_sec as f64 + u.ru_utime.tv_usec as f64 / 1e6
    };
    let before = cpu();
    assert!(matches!(q.pin(0.3), Err(QueueError::Empty)));
    assert!(cpu() - before < 0.15, "spun while waiting for a view");
    q.put(b"v", 0.0).unwrap();
    let (at, len) = q.pin(0.0).unwrap();
    assert_eq!(len, 1);
    q.unpin(at).unwrap();
    assert_eq!(q.get(0.0).unwrap(), b"r");
}

#[test]
fn the_ring_flows_past_an_unacknowledged_message() {
    let q = create(4096);
    q.put(b"held", 0.0).unwrap();
    let held = q.get_acked(0.0).unwrap();
    // 100 ring-fulls through the same 4 KiB ring, plain and acked.
    let body = [5u8; 1000];
    for round in 0..400 {
        q.put(&body, 0.0).unwrap();
        if round % 2 == 0 {
            assert_eq!(q.get(0.0).unwrap(), body);
        } else {
            let m = q.get_acked(0.0).unwrap();
            assert_eq!(m.data, body);
            q.ack(m.receipt).unwrap();
        }
    }
    q.ack(held.receipt).unwrap();
}

#[test]
fn the_visibility_timeout_delivers_again() {
    let q = create(4096);
    q.set_ack_policy(policy(0, 0.05, None)).unwrap();
    q.put(b"slow", 0.0).unwrap();
    let first = q.get_acked(0.0).unwrap();
    let start = Instant::now();
    let second = q.get_acked(5.0).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(40));
    assert_eq!(
        (second.data.as_slice(), second.deliveries),
        (&b"slow"[..], 2)
    );
    assert!(matches!(
        q.ack(first.receipt),
        Err(QueueError::StaleReceipt { .. })
    ));
    q.ack(second.receipt).unwrap();
}

#[test]
fn max_deliveries_dead_letters_or_drops() {
    let dlq_name = unique("dlq");
    let dlq = SageQueue::create(&dlq_name, 4096, 0o600, true, 0).unwrap();
    let q = create(4096);
    q.set_ack_policy(policy(2, 0.0, Some(&dlq_name))).unwrap();
    let p = q.ack_policy();
    assert_eq!(
        (p.max_deliveries, p.dead_letter.as_deref()),
        (2, Some(dlq_name.as_str()))
    );
    q.put(b"poison", 0.0).unwrap();
    for d in 1..=2 {
        let m = q.get_acked(0.0).unwrap();
        assert_eq!(m.deliveries, d);
        q.nack(m.receipt).unwrap();
    }
    assert!(matches!(q.get_acked(0.0), Err(QueueError::Empty)));
    assert_eq!(dlq.get(0.0).unwrap(), b"poison");
    assert_eq!(q.stats().unwrap().dead_lettered, 1);
    // Without a dead-letter queue: dropped and counted.
    q.set_ack_policy(policy(1, 0.0, None)).unwrap();
    q.put(b"dropped", 0.0).unwrap();
    let m = q.get_acked(0.0).unwrap();
    q.nack(m.receipt).unwrap();
    assert!(matches!(q.get_acked(0.0), Err(QueueError::Empty)));
    assert_eq!(q.stats().unwrap().ack_dropped, 1);
    // Bad policies are refused.
    assert!(q.set_ack_policy(policy(0, -1.0, None)).is_err());
    assert!(q.set_ack_policy(policy(0, f64::NAN, None)).is_err());
    assert!(q.set_ack_policy(policy(0, 0.0, Some("bad/name"))).is_err());
}

#[test]
fn batches_take_one_lease_each() {
    let q = create(65536);
    for i in 0..10u8 {
        q.put(&[i; 10], 0.0).unwrap();
    }
    let got = q.get_acked_batch(8, u64::MAX, 0.0).unwrap();
    assert_eq!(got.len(), 8);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.data, [i as u8; 10]);
    }
    assert_eq!(q.stats().unwrap().unacked, 8);
    for m in &got {
        q.ack(m.receipt).unwrap();
    }
    let rest = q.get_acked_batch(8, u64::MAX, 0.0).unwrap();
    assert_eq!(rest.len(), 2);
    // Every lease held: an acked get finds nothing, a plain get still takes.
    for m in rest {
        q.nack(m.receipt).unwrap();
    }
    let mut held = Vec::new();
    for i in 0..70u8 {
        q.put(&[i], 0.0).unwrap();
    }
    while let Ok(m) = q.get_acked(0.0) {
        held.push(m);
    }
    assert_eq!(held.len(), 64);
    // Waiting for a free lease sleeps (an ack wakes it) rather than spinning on the ring.
    let cpu = || {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_utime.tv_sec as f64 + u.ru_utime.tv_usec as f64 / 1e6
    };
    let before = cpu();
    assert!(matches!(q.get_acked(0.3), Err(QueueError::Empty)));
    assert!(cpu() - before < 0.15, "spun while waiting for a lease");
    assert!(q.get(0.0).is_ok());
    for m in held {
        q.ack(m.receipt).unwrap();
    }
}

#[test]
fn closing_a_holder_delivers_its_messages_again() {
    let q = create(4096);
    let name = q.name();
    q.put(b"orphan", 0.0).unwrap();
    let holder = SageQueue::open(&name, true).unwrap();
    let m = holder.get_acked(0.0).unwrap();
    holder.detach();
    let again = q.get_acked(0.0).unwrap();
    assert_eq!(
        (again.data.as_slice(), again.deliveries),
        (&b"orphan"[..], 2)
    );
    assert!(matches!(
        q.ack(m.receipt),
        Err(QueueError::StaleReceipt { .. })
    ));
    q.ack(again.receipt).unwrap();
}

const CHILD_ENV: &str = "SAGE_QUEUE_TEST_ACK_CHILD";

#[test]
fn a_killed_holders_message_is_delivered_again() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        // The child: take one message acked, then die without acking it.
        let q = SageQueue::open(&name, false).unwrap();
        let m = q.get_acked(10.0).unwrap();
        assert_eq!(m.data, b"work");
        // SAFETY: raising a signal at the calling process has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!();
    }
    let q = create(4096);
    q.put(b"work", 0.0).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_holders_message_is_delivered_again",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, q.name())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    assert_eq!(q.stats().unwrap().unacked, 1);
    let start = Instant::now();
    let m = q.get_acked(10.0).unwrap();
    let took = start.elapsed();
    assert_eq!((m.data.as_slice(), m.deliveries), (&b"work"[..], 2));
    assert!(took < Duration::from_secs(2), "redelivered after {took:?}");
    q.ack(m.receipt).unwrap();
    let s = q.stats().unwrap();
    assert_eq!((s.unacked, s.lost, s.redelivered), (0, 0, 1));
}
