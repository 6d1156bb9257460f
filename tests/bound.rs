//! The item bound (max_items): never more messages in the queue than the bound, exactly, with
//! producers racing; batches put what the bound allows; a put blocked by the bound wakes when
//! a get takes a message; the bound is fixed at creation and lives in the segment header.

mod common;

use common::*;
use sage_queue::{QueueError, SageQueue};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn bounded(cap: u64, max_items: u64) -> SageQueue {
    SageQueue::create(&unique("bound"), cap, 0o600, true, max_items).unwrap()
}

#[test]
fn racing_producers_fill_exactly_to_the_bound() {
    let q = Arc::new(bounded(1 << 20, 50));
    for round in 0..20 {
        let put = Arc::new(AtomicU64::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (q, put, start) = (q.clone(), put.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..40u64 {
                        if (t + i) % 3 == 0 {
                            // A batch of 1..5 messages: as many as the bound allows.
                            let msgs: Vec<Vec<u8>> = (0..1 + (i % 5))
                                .map(|k| vec![t as u8; k as usize])
                                .collect();
                            match put_table(&q, &msgs, 0.0) {
                                Ok(n) => {
                                    put.fetch_add(n as u64, Relaxed);
                                }
                                Err(QueueError::Full) => {}
                                Err(e) => panic!("{e}"),
                            }
                        } else {
                            match q.put(&[t as u8; 10], 0.0) {
                                Ok(()) => {
                                    put.fetch_add(1, Relaxed);
                                }
                                Err(QueueError::Full) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let before = if round == 0 { 0 } else { 30 };
        assert_eq!(
            put.load(Relaxed) + before,
            50,
            "round {round}: the racing producers did not stop exactly at the bound"
        );
        assert_eq!(q.qsize(), 50);
        assert!(q.is_full());
        assert_eq!(q.put(b"one more", 0.0), Err(QueueError::Full));
        // Take 20 (a batch get may stop early at a tail it saw before): exactly 20 fit again
        // next round.
        let mut got = 0;
        while got < 20 {
            got += taken(&q.get_batch(20 - got as u32, u64::MAX, 0.0).unwrap()).len();
        }
        assert!(!q.is_full());
    }
}

#[test]
fn producers_and_consumers_race_under_the_bound() {
    // 3 producers, 2 consumers, bound 4: everything arrives exactly once, and the queue never
    // reports more than the bound.
    let q = Arc::new(bounded(64 << 10, 4));
    let total = 3 * 3000u64;
    let producers: Vec<_> = (0..3u64)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for s in 0..3000u64 {
                    let mut m = p.to_le_bytes().to_vec();
                    m.extend_from_slice(&s.to_le_bytes());
                    q.put(&m, 10.0).expect("put under the bound");
                    assert!(q.qsize() <= 4 + 2, "qsize {}", q.qsize());
                }
            })
        })
        .collect();
    let got = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (q, got) = (q.clone(), got.clone());
            std::thread::spawn(move || {
                let mut seen = vec![Vec::new(); 3];
                while got.load(Relaxed) < total {
                    match q.get(0.05) {
                        Ok(m) => {
                            let p = u64::from_le_bytes(m[..8].try_into().unwrap());
                            let s = u64::from_le_bytes(m[8..].try_into().unwrap());
                            seen[p as usize].push(s);
                            got.fetch_add(1, Relaxed);
                        }
                        Err(QueueError::Empty) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                seen
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all = vec![Vec::new(); 3];
    for c in consumers {
        for (p, s) in c.join().unwrap().into_iter().enumerate() {
            assert!(s.windows(2).all(|w| w[0] < w[1]), "out of order");
            all[p].extend(s);
        }
    }
    for s in &mut all {
        s.sort();
        assert_eq!(*s, (0..3000).collect::<Vec<_>>());
    }
    assert!(q.is_empty());
    // The count came back to zero: the full bound is free again.
    for i in 0..4u8 {
        q.put(&[i], 0.0).unwrap();
    }
    assert_eq!(q.put(b"x", 0.0), Err(QueueError::Full));
}

#[test]
fn a_put_blocked_by_the_bound_wakes_on_a_get() {
    let q = Arc::new(bounded(1 << 20, 1));
    q.put(b"a", 0.0).unwrap();
    assert!(q.is_full());
    assert_eq!(q.put(b"b", 0.05), Err(QueueError::Full));
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        let start = Instant::now();
        q2.put(b"b", 10.0).unwrap();
        start.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(q.get(0.0).unwrap(), b"a");
    let waited = t.join().unwrap();
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(q.get(0.0).unwrap(), b"b");
    // Blocking batches too: the second half goes in as the consumer takes.
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
        put_table(&q2, &msgs, 10.0).unwrap()
    });
    for i in 0..10u8 {
        assert_eq!(q.get(5.0).unwrap(), [i]);
    }
    assert_eq!(t.join().unwrap(), 10);
}

#[test]
fn batches_put_what_the_bound_allows() {
    let q = bounded(1 << 20, 5);
    let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 3]).collect();
    assert_eq!(put_table(&q, &msgs, 0.0).unwrap(), 5);
    assert_eq!(
        q.put_batch(&3u32.to_le_bytes(), b"xyz", 0.0),
        Err(QueueError::Full)
    );
    assert_eq!(
        taken(&q.get_batch(3, u64::MAX, 0.0).unwrap()),
        msgs[..3].to_vec()
    );
    assert_eq!(put_table(&q, &msgs, 0.05).unwrap(), 3);
    let s = q.stats().unwrap();
    assert_eq!((s.max_items, s.messages), (5, 5));
}

#[test]
fn the_bound_is_fixed_at_creation_and_stored_in_the_header() {
    let name = unique("fixed");
    let a = SageQueue::create(&name, 4096, 0o600, true, 3).unwrap();
    let b = SageQueue::open_or_create(&name, 4096, 0o600, true, 7).unwrap();
    assert!(!b.created());
    assert_eq!((a.max_items(), b.max_items()), (3, 3));
    assert_eq!(b.stats().unwrap().max_items, 3);
    // Offset 56 of the identity block; zero there (older segments) means no bound.
    let bytes = std::fs::read(a.path()).unwrap();
    assert_eq!(u64::from_le_bytes(bytes[56..64].try_into().unwrap()), 3);
    let free = SageQueue::create(&unique("free"), 4096, 0o600, true, 0).unwrap();
    let bytes = std::fs::read(free.path()).unwrap();
    assert_eq!(&bytes[56..64], &[0u8; 8]);
    assert_eq!(free.max_items(), 0);
    let mut n = 0;
    while free.put(b"", 0.0).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4096 / 16, "an unbounded queue is limited by bytes only");
}
