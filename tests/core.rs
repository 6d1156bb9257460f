//! Semantics of the Rust core, mostly in one process: put/get, wrap-around,
//! full/empty/timeouts, batches (the table layout), size limits, names, foreign and corrupt
//! files, attachment counting and cleanup, the message path by id (values, msg_error, the
//! view), statistics (attached pids, with a child process; waiting callers), and multi-thread
//! MPMC exactly-once.

mod common;

use common::*;
use sage_queue::{
    encode_table, list_queues, msg_error, msg_put, msg_put_batch, msg_take, msg_take_batch,
    msg_try_put, msg_try_take, msg_view_address, msg_view_capacity, parse_taken, QueueError,
    SageQueue, FAILED, NOTHING,
};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn create(cap: u64) -> SageQueue {
    SageQueue::create(&unique("q"), cap, 0o600, true, 0).unwrap()
}

#[test]
fn put_get_in_order_and_counts() {
    let q = create(64 * 1024);
    assert!(q.is_empty());
    for i in 0..100u32 {
        q.put(&i.to_le_bytes(), 0.0).unwrap();
    }
    assert_eq!(q.qsize(), 100);
    for i in 0..100u32 {
        assert_eq!(q.get(0.0).unwrap(), i.to_le_bytes());
    }
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    q.put(b"", 0.0).unwrap();
    assert_eq!(q.get(0.0).unwrap(), b"");
    let s = q.stats().unwrap();
    assert_eq!(
        (s.msgs_in, s.msgs_out, s.bytes_in, s.messages),
        (101, 101, 400, 0)
    );
    assert_eq!(s.attached, 1);
}

#[test]
fn wrap_around_with_random_sizes() {
    let q = create(4096);
    let max = q.max_message_size() as usize;
    let mut rng = Rng(7);
    let mut pending = std::collections::VecDeque::new();
    let mut seed = 0u64;
    for _ in 0..20_000 {
        if rng.below(2) == 0 || pending.is_empty() {
            let len = match rng.below(10) {
                0 => rng.below(max as u64 + 1) as usize,
                1..=3 => rng.below(1000) as usize,
                _ => rng.below(64) as usize,
            };
            seed += 1;
            match q.put(&payload(seed, len), 0.0) {
                Ok(()) => pending.push_back((seed, len)),
                Err(QueueError::Full) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            let (seed, len) = pending.pop_front().unwrap();
            assert_eq!(q.get(0.0).unwrap(), payload(seed, len));
        }
    }
    while let Some((seed, len)) = pending.pop_front() {
        assert_eq!(q.get(0.0).unwrap(), payload(seed, len));
    }
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
}

/// Freed ring space is not zeroed (no second pass over consumed messages), and what it keeps
/// never passes for a record: the payloads here are the ring's own bytes as earlier laps left
/// them (old headers, with the tags of the positions they were at, and old payloads), put at
/// every alignment, so each new lap's claims land on words that read as headers. Every
/// message still comes out once, intact and in order, and nothing else does.
#[test]
fn freed_bytes_are_kept_and_never_read_as_records() {
    let q = create(4096);
    let path = q.path();
    // The ring's bytes, read through the file (the ring starts at offset 69632).
    let ring = || std::fs::read(&path).unwrap()[69632..69632 + 4096].to_vec();
    let mut rng = Rng(11);
    let mut pending = std::collections::VecDeque::new();
    let mut snapshot = ring();
    for round in 0..6000 {
        if round % 50 == 0 {
            snapshot = ring();
        }
        if rng.below(2) == 0 || pending.is_empty() {
            let from = rng.below(4096) as usize;
            let len = rng.below((4096 - from).min(1500) as u64 + 1) as usize;
            let m = snapshot[from..from + len].to_vec();
            match q.put(&m, 0.0) {
                Ok(()) => pending.push_back(m),
                Err(QueueError::Full) => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            let m = pending.pop_front().unwrap();
            assert_eq!(q.get(0.0).unwrap(), m, "round {round}");
        }
    }
    while let Some(m) = pending.pop_front() {
        assert_eq!(q.get(0.0).unwrap(), m);
    }
    assert_eq!(q.get(0.0), Err(QueueError::Empty));
    // A message as large as the ring, put and taken: its bytes stay in the ring after it is
    // freed (the get released everything below it, and the put of another one needs its room).
    let big = payload(99, q.max_message_size() as usize);
    q.put(&big, 0.0).unwrap();
    assert_eq!(q.get(0.0).unwrap(), big);
    q.put(b"next", 0.0).unwrap();
    let after = ring();
    let kept = (64..2048).filter(|&i| after[i] == big[i - 16]).count();
    assert!(
        kept > 1900,
        "only {kept} of 1984 freed bytes kept: the ring was cleared"
    );
    assert_eq!(q.get(0.0).unwrap(), b"next");
    assert_eq!(q.stats().unwrap().recovered, 0);
}

#[test]
fn a_ring_whose_consumer_keeps_up_reuses_its_start() {
    // One 1000-byte message put and taken at a time, 20,000 times (20 MB through a 64 MiB
    // ring, less than a lap): a claim past the first 4 MiB of the lap, when every message has
    // been taken, pads to the lap's end and starts the next lap, so the ring reuses its first
    // few MiB (about five laps here).
    let cap = 64 << 20;
    let q = create(cap);
    let tail = |q: &SageQueue| {
        let file = std::fs::read(q.path()).unwrap();
        u64::from_le_bytes(file[128..136].try_into().unwrap()) // ProducerLine.tail
    };
    for i in 0..20_000u64 {
        q.put(&payload(i, 1000), 0.0).unwrap();
        assert_eq!(q.get(0.0).unwrap(), payload(i, 1000));
    }
    let laps = tail(&q) / cap;
    assert!(
        laps >= 3,
        "{laps} laps: the ring did not start new laps early"
    );
    // The early paddings take no room from a ring that fills up: 65,000 messages (66.6 MB of
    // 1024-byte records, of a 67.1 MB ring) all fit without waiting, then come out in order.
    let n = 65_000u64;
    for i in 0..n {
        q.put(&payload(i, 1000), 0.0)
            .unwrap_or_else(|e| panic!("put {i}: {e:?}"));
    }
    for i in 0..n {
        assert_eq!(q.get(0.0).unwrap(), payload(i, 1000));
    }
    let s = q.stats().unwrap();
    assert_eq!(
        (s.msgs_in, s.msgs_out, s.messages),
        (20_000 + n, 20_000 + n, 0)
    );
}

#[test]
fn full_and_timeouts() {
    let q = create(4096);
    let mut n = 0;
    while q.put(&[1u8; 100], 0.0).is_ok() {
        n += 1;
    }
    assert!(n >= 30, "only {n} messages fit");
    let t = Instant::now();
    assert_eq!(q.put(&[1u8; 100], 0.2), Err(QueueError::Full));
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(5));
    q.get(0.0).unwrap();
    q.put(&[2u8; 100], 0.0).unwrap();
    while q.get(0.0).is_ok() {}
    let t = Instant::now();
    assert_eq!(q.get(0.2), Err(QueueError::Empty));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn blocked_get_wakes_on_put_from_another_thread() {
    let q = Arc::new(create(65536));
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.get(-1.0).unwrap());
    std::thread::sleep(Duration::from_millis(100));
    q.put(b"wake", 0.0).unwrap();
    assert_eq!(t.join().unwrap(), b"wake");
}

#[test]
fn too_large_fails_at_once_and_largest_fits() {
    let q = create(4096);
    let max = q.max_message_size() as usize;
    let t = Instant::now();
    assert!(matches!(
        q.put(&vec![0u8; max + 1], -1.0),
        Err(QueueError::TooLarge { size, max_size }) if size == max as u64 + 1 && max_size == max as u64
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    // The largest message fits whatever the tail's position (padding, then the whole ring).
    q.put(&[1u8; 24], 0.0).unwrap();
    q.get(0.0).unwrap();
    q.put(&vec![9u8; max], 1.0).unwrap();
    assert_eq!(q.get(0.0).unwrap(), vec![9u8; max]);
}

#[test]
fn batches() {
    let q = create(65536);
    let msgs: Vec<Vec<u8>> = (0..200).map(|i| payload(i, (i % 50) as usize)).collect();
    assert_eq!(put_table(&q, &msgs, 0.0).unwrap(), 200);
    assert_eq!(q.qsize(), 200);
    assert_eq!(taken(&q.get_batch(64, u64::MAX, 0.0).unwrap()), msgs[..64]);
    // max_bytes bounds the batch, but one message always comes.
    assert_eq!(taken(&q.get_batch(1000, 1, 0.0).unwrap()).len(), 1);
    let mut rest = Vec::new();
    while let Ok(b) = q.get_batch(1000, u64::MAX, 0.0) {
        rest.extend(taken(&b));
    }
    assert_eq!(rest, msgs[65..]);
    assert_eq!(q.get_batch(10, u64::MAX, 0.0), Err(QueueError::Empty));
    // A malformed table is rejected whole: nothing is put.
    let (lengths, payloads) = encode_table(&msgs[..3]);
    let mut ragged = lengths.clone();
    ragged.extend_from_slice(&[1, 0]);
    let mut overrun = lengths.clone();
    overrun.extend_from_slice(&100u32.to_le_bytes());
    let mut short = payloads.clone();
    short.extend_from_slice(b"short");
    let mut uncovered = payloads.clone();
    uncovered.push(9);
    let cases: [(&str, &[u8], &[u8]); 6] = [
        ("lengths not a multiple of 4", &ragged, &payloads),
        ("a length without payload bytes", &overrun, &payloads),
        ("a length overrunning the payloads", &overrun, &short),
        ("a payload byte not covered", &lengths, &uncovered),
        ("payloads without lengths", &[], b"x"),
        ("a lone length byte", &[1], &[]),
    ];
    for (what, l, p) in cases {
        assert!(
            matches!(
                q.put_batch(l, p, 0.0),
                Err(QueueError::InvalidArgument { .. })
            ),
            "{what}"
        );
    }
    // A message too large for the ring anywhere in the batch: nothing is put either.
    let big = vec![vec![1u8; 10], vec![2u8; q.max_message_size() as usize + 1]];
    assert!(matches!(
        put_table(&q, &big, 0.0),
        Err(QueueError::TooLarge { .. })
    ));
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.put_batch(&[], &[], 0.0).unwrap(), 0);
    assert!(matches!(
        q.get_batch(0, 1, 0.0),
        Err(QueueError::InvalidArgument { .. })
    ));
    // Empty messages are messages.
    let empties = vec![Vec::new(), b"x".to_vec(), Vec::new()];
    assert_eq!(put_table(&q, &empties, 0.0).unwrap(), 3);
    assert_eq!(taken(&q.get_batch(10, u64::MAX, 0.0).unwrap()), empties);
}

#[test]
fn taken_batches_are_parsed_or_refused() {
    // The take layout: payloads, then u32 lengths, then the u32 count.
    let mut buf = b"abcde".to_vec();
    for l in [2u32, 0, 3] {
        buf.extend_from_slice(&l.to_le_bytes());
    }
    buf.extend_from_slice(&3u32.to_le_bytes());
    assert_eq!(
        parse_taken(&buf).unwrap(),
        vec![&b"ab"[..], &b""[..], &b"cde"[..]]
    );
    assert_eq!(
        parse_taken(&0u32.to_le_bytes()).unwrap(),
        Vec::<&[u8]>::new()
    );
    let with_count = |body: &[u8], count: u32| {
        let mut b = body.to_vec();
        b.extend_from_slice(&count.to_le_bytes());
        b
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("shorter than the count", vec![1, 0, 0]),
        (
            "a count beyond the buffer",
            with_count(&buf[..buf.len() - 4], 5),
        ),
        ("a huge count", with_count(&[], u32::MAX)),
        (
            "payload bytes not covered",
            with_count(&buf[..buf.len() - 4], 2),
        ),
        ("lengths overrunning the payloads", buf[1..].to_vec()),
    ];
    for (what, b) in bad {
        assert!(
            matches!(parse_taken(&b), Err(QueueError::InvalidArgument { .. })),
            "{what}"
        );
    }
}

#[test]
fn batch_larger_than_ring_goes_in_parts() {
    let q = Arc::new(create(4096));
    let msgs: Vec<Vec<u8>> = (0..500).map(|i| payload(i, 40)).collect();
    let q2 = q.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 500 {
            got.extend(taken(&q2.get_batch(100, u64::MAX, 5.0).unwrap()));
        }
        got
    });
    assert_eq!(put_table(&q, &msgs, 5.0).unwrap(), 500);
    assert_eq!(reader.join().unwrap(), msgs);
    // Without a reader, a batch that cannot fit stops part way and says how many went in.
    let t = Instant::now();
    let n = put_table(&q, &msgs, 0.2).unwrap();
    assert!(n > 0 && n < 500, "{n}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the timeout bounds the whole batch"
    );
    assert_eq!(q.qsize(), n as u64);
}

#[test]
fn names_are_checked() {
    for bad in ["", ".x", "a/b", "../x", "a b", &"x".repeat(201)] {
        assert!(matches!(
            SageQueue::create(bad, 4096, 0o600, true, 0),
            Err(QueueError::InvalidName { .. })
        ));
        assert!(matches!(
            SageQueue::open(bad, true),
            Err(QueueError::InvalidName { .. })
        ));
    }
}

#[test]
fn create_open_and_cleanup() {
    let name = unique("life");
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotFound { .. })
    ));
    let a = SageQueue::create(&name, 5000, 0o600, true, 0).unwrap();
    assert_eq!(a.capacity(), 8192);
    assert!(matches!(
        SageQueue::create(&name, 4096, 0o600, true, 0),
        Err(QueueError::AlreadyExists { .. })
    ));
    let path = a.path();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b = SageQueue::open_or_create(&name, 1 << 20, 0o600, true, 0).unwrap();
    assert!(!b.created());
    assert_eq!(b.capacity(), 8192);
    assert_eq!(a.stats().unwrap().attached, 2);
    a.put(b"x", 0.0).unwrap();
    assert_eq!(b.get(0.0).unwrap(), b"x");
    a.detach();
    a.detach();
    assert!(matches!(a.put(b"x", 0.0), Err(QueueError::Closed { .. })));
    assert_eq!(b.stats().unwrap().attached, 1);
    assert!(Path::new(&path).exists());
    drop(b);
    assert!(!Path::new(&path).exists(), "last close removes the segment");

    let keep = SageQueue::create(&unique("keep"), 4096, 0o600, false, 0).unwrap();
    let path = keep.path();
    drop(keep);
    assert!(
        Path::new(&path).exists(),
        "auto_cleanup=false keeps the segment"
    );
    let gc = sage_queue::collect_garbage(false).unwrap();
    assert!(!Path::new(&path).exists(), "gc removes it: {gc:?}");
}

#[test]
fn unlink_closes_for_everyone() {
    let name = unique("unlink");
    let a = Arc::new(SageQueue::create(&name, 4096, 0o600, true, 0).unwrap());
    let b = SageQueue::open(&name, true).unwrap();
    let a2 = a.clone();
    let waiter = std::thread::spawn(move || a2.get(-1.0));
    std::thread::sleep(Duration::from_millis(50));
    b.unlink().unwrap();
    assert!(matches!(
        waiter.join().unwrap(),
        Err(QueueError::Closed { .. })
    ));
    assert!(matches!(a.put(b"x", 0.0), Err(QueueError::Closed { .. })));
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotFound { .. })
    ));
}

#[test]
fn foreign_and_corrupt_files_are_rejected_untouched() {
    let dir = {
        unique("x");
        dir()
    };
    let uid = unsafe { libc::geteuid() };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"hello, I am not a queue".repeat(5000)),
        ("short", b"SAGEQUE1".to_vec()),
        ("empty", Vec::new()),
    ];
    for (n, bytes) in &cases {
        let name = unique(n);
        let path = format!("{dir}/sq-{uid}-{name}");
        std::fs::write(&path, bytes).unwrap();
        let err = SageQueue::open(&name, true).err().unwrap();
        assert!(matches!(err, QueueError::NotAQueue { .. }), "{n}: {err}");
        let err = SageQueue::open_or_create(&name, 4096, 0o600, true, 0)
            .err()
            .unwrap();
        assert!(matches!(err, QueueError::NotAQueue { .. }), "{n}: {err}");
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{n} was modified");
        std::fs::remove_file(&path).unwrap();
    }
    // A real segment of a newer and of an older layout version, and one truncated.
    let name = unique("ver");
    let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
    let path = q.path();
    // Read it while attached: once detached, another test's collect_garbage may remove it
    // (the writes below recreate the file).
    let good = std::fs::read(&path).unwrap();
    drop(q);
    // The layout version: the u32 after the magic.
    let version = u32::from_le_bytes(good[8..12].try_into().unwrap());
    assert!(version >= 1);
    for other in [version + 1, version - 1] {
        let mut changed = good.clone();
        changed[8..12].copy_from_slice(&other.to_le_bytes());
        std::fs::write(&path, &changed).unwrap();
        let err = SageQueue::open(&name, true).err().unwrap();
        assert!(
            matches!(err, QueueError::Incompatible { .. }),
            "version {other}: {err:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), changed);
    }
    std::fs::write(&path, &good[..good.len() - 4096]).unwrap();
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotAQueue { .. })
    ));
    let listed = list_queues().unwrap();
    let info = listed.iter().find(|i| i.name == name).unwrap();
    assert!(!info.valid && info.error.is_some());
    std::fs::remove_file(&path).unwrap();
    // A symlink planted at a queue's path is never followed.
    let name = unique("link");
    let target = format!("{dir}/target-{name}");
    std::fs::write(&target, b"secret").unwrap();
    std::os::unix::fs::symlink(&target, format!("{dir}/sq-{uid}-{name}")).unwrap();
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotAQueue { .. })
    ));
    assert!(matches!(
        SageQueue::create(&name, 4096, 0o600, true, 0),
        Err(QueueError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&target).unwrap(), b"secret");
}

#[test]
fn task_done_and_join() {
    let q = Arc::new(create(65536));
    for i in 0..10u8 {
        q.put(&[i], 0.0).unwrap();
    }
    assert!(!q.join(0.05).unwrap());
    let q2 = q.clone();
    let worker = std::thread::spawn(move || {
        for _ in 0..10 {
            q2.get(1.0).unwrap();
            q2.task_done(1).unwrap();
        }
    });
    assert!(q.join(10.0).unwrap());
    worker.join().unwrap();
    assert!(matches!(
        q.task_done(1),
        Err(QueueError::InvalidArgument { .. })
    ));
    assert_eq!(q.stats().unwrap().unfinished_tasks, 0);
}

#[test]
fn mpmc_threads_exactly_once_in_producer_order() {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: usize = 3;
    const PER: u64 = 20_000;
    let name = unique("mpmc");
    let keep = SageQueue::create(&name, 16 * 1024, 0o600, true, 0).unwrap();
    let mut handles = Vec::new();
    for p in 0..PRODUCERS {
        let name = name.clone();
        handles.push(std::thread::spawn(move || {
            let q = SageQueue::open(&name, true).unwrap();
            let mut rng = Rng(p + 1);
            let mut i = 0;
            while i < PER {
                if rng.below(4) == 0 {
                    let n = rng.below(20).min(PER - i);
                    let msgs: Vec<Vec<u8>> = (i..i + n).map(|s| msg(p, s, &mut rng)).collect();
                    let put = put_table(&q, &msgs, 10.0).unwrap() as u64;
                    assert_eq!(put, n);
                    i += n;
                } else {
                    q.put(&msg(p, i, &mut rng), 10.0).unwrap();
                    i += 1;
                }
            }
            Vec::new()
        }));
    }
    for c in 0..CONSUMERS {
        let name = name.clone();
        handles.push(std::thread::spawn(move || {
            let q = SageQueue::open(&name, true).unwrap();
            let mut got = Vec::new();
            let mut rng = Rng(100 + c as u64);
            loop {
                let batch = if rng.below(3) == 0 {
                    match q.get_batch(16, u64::MAX, 0.5) {
                        Ok(b) => taken(&b),
                        Err(QueueError::Empty) => break,
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match q.get(0.5) {
                        Ok(m) => vec![m],
                        Err(QueueError::Empty) => break,
                        Err(e) => panic!("{e}"),
                    }
                };
                for m in batch {
                    got.push(check(&m));
                }
            }
            got
        }));
    }
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    for (k, h) in handles.into_iter().enumerate() {
        let got = h.join().unwrap();
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (p, s) in got {
            if let Some(prev) = last.insert(p, s) {
                assert!(
                    s > prev,
                    "consumer {k}: producer {p} out of order ({prev} then {s})"
                );
            }
            *seen.entry((p, s)).or_default() += 1;
        }
    }
    assert_eq!(seen.len() as u64, PRODUCERS * PER);
    assert!(seen.values().all(|&n| n == 1));
    assert_eq!(keep.qsize(), 0);
}

/// A message: producer, sequence, random-length checked body.
fn msg(p: u64, s: u64, rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(300) as usize;
    let mut m = Vec::with_capacity(16 + len);
    m.extend_from_slice(&p.to_le_bytes());
    m.extend_from_slice(&s.to_le_bytes());
    m.extend_from_slice(&payload(p << 32 | s, len));
    m
}

fn check(m: &[u8]) -> (u64, u64) {
    let p = u64::from_le_bytes(m[..8].try_into().unwrap());
    let s = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(&m[16..], payload(p << 32 | s, m.len() - 16), "corrupt body");
    (p, s)
}

/// A copy of the first `n` bytes of this thread's view (what its last msg_take or
/// msg_take_batch left there).
fn view(n: u64) -> Vec<u8> {
    assert!(n < FAILED, "not a length: {n}");
    // SAFETY: the view buffer belongs to this thread and holds the last result (n bytes)
    // until this thread's next take; it is copied before that.
    unsafe { std::slice::from_raw_parts(msg_view_address() as *const u8, n as usize) }.to_vec()
}

#[test]
fn message_path_by_id() {
    let q = Arc::new(create(1 << 20));
    let id = q.clone().msg_id();
    assert_ne!(id, 0);
    assert_eq!(q.clone().msg_id(), id, "one id per handle");
    let other = Arc::new(SageQueue::open(&q.name(), true).unwrap());
    let other_id = other.clone().msg_id();
    assert_ne!(other_id, id, "each handle has its own id");
    assert_eq!(other.clone().msg_id(), other_id);

    // One message made of head and body, taken into this thread's view: its length.
    assert_eq!(msg_put(id, b"he", b"llo", 0.0), 1);
    assert_eq!(msg_try_put(other_id, b"", b"second"), 1);
    assert_eq!(msg_put(id, b"third", b"", -1.0), 1);
    assert_eq!(msg_take(id, 0.0), 5);
    assert_eq!(view(5), b"hello");
    assert_eq!(msg_try_take(other_id), 6);
    assert_eq!(view(6), b"second");
    assert_eq!(msg_take(other_id, f64::INFINITY), 5);
    assert_eq!(view(5), b"third");
    assert_eq!(msg_put(id, b"", b"", 0.0), 1);
    assert_eq!(msg_take(id, 0.0), 0, "an empty message is a message");

    // Nothing now is a value (NOTHING), not a failure: no error is left for msg_error.
    assert_eq!(msg_take(id, 0.0), NOTHING);
    assert_eq!(msg_try_take(id), NOTHING);
    let t = Instant::now();
    assert_eq!(msg_take(id, 0.05), NOTHING);
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert_eq!(msg_take_batch(id, 8, u64::MAX, 0.0), NOTHING);
    assert_eq!(msg_take_batch(id, 8, u64::MAX, 0.02), NOTHING);
    assert_eq!(msg_error(), Ok(()));

    // Batches in the table layout.
    let msgs = vec![b"x".to_vec(), Vec::new(), b"yz".to_vec()];
    let (lengths, payloads) = encode_table(&msgs);
    assert_eq!(msg_put_batch(id, &lengths, &payloads, 0.0), 3);
    let n = msg_take_batch(id, 10, u64::MAX, 0.0);
    assert_eq!(taken(&view(n)), msgs);
    assert_eq!(
        msg_put_batch(id, &[], &[], 0.0),
        0,
        "an empty batch puts nothing"
    );
    assert_eq!(msg_error(), Ok(()));

    // A failure: FAILED (or -1), and msg_error raises the typed error once.
    let max = q.max_message_size();
    assert_eq!(msg_put(id, &vec![0u8; max as usize], b"!", 0.0), -1);
    assert_eq!(
        msg_error(),
        Err(QueueError::TooLarge {
            size: max + 1,
            max_size: max
        })
    );
    assert_eq!(msg_error(), Ok(()), "msg_error forgets what it raised");
    assert_eq!(msg_try_put(id, &vec![0u8; max as usize + 1], b""), -1);
    assert!(matches!(msg_error(), Err(QueueError::TooLarge { .. })));
    let (lengths, payloads) = encode_table(&[vec![0u8; max as usize + 1]]);
    assert_eq!(msg_put_batch(id, &lengths, &payloads, 0.0), -1);
    assert!(matches!(msg_error(), Err(QueueError::TooLarge { .. })));
    assert_eq!(msg_take_batch(id, 0, u64::MAX, 0.0), FAILED);
    assert!(matches!(
        msg_error(),
        Err(QueueError::InvalidArgument { .. })
    ));
    // The error is the last failed call's; a later success leaves it to be raised.
    assert_eq!(msg_take(0, 0.0), FAILED);
    assert_eq!(msg_put(id, &vec![0u8; max as usize + 1], b"", 0.0), -1);
    assert_eq!(msg_put(id, b"ok", b"", 0.0), 1);
    assert!(matches!(msg_error(), Err(QueueError::TooLarge { .. })));
    assert_eq!(msg_take(id, 0.0), 2);
    assert_eq!(q.qsize(), 0, "nothing failed was put");

    // An unknown id, id 0 or a closed handle's id is Closed, never someone else's queue.
    for bad in [0, u64::MAX, id + 1_000_000] {
        assert_eq!(msg_put(bad, b"x", b"", 0.0), -1, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_try_put(bad, b"x", b""), -1, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_take(bad, 0.0), FAILED, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_try_take(bad), FAILED, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_put_batch(bad, &[], &[], 0.0), -1, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_take_batch(bad, 1, 1, 0.0), FAILED, "id {bad}");
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
    }
    q.detach();
    assert_eq!(msg_put(id, b"x", b"", 0.0), -1);
    assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
    assert_eq!(msg_take(id, 0.0), FAILED);
    assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
    // The other handle's id still works.
    assert_eq!(msg_put(other_id, b"still", b"", 0.0), 1);
    assert_eq!(msg_take(other_id, 0.0), 5);
    drop(other);
    assert_eq!(msg_take(other_id, 0.0), FAILED, "a dropped handle's id");
    assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
}

#[test]
fn message_path_when_full() {
    // No room before the timeout is a value too: 0, with no error left behind.
    let q = Arc::new(SageQueue::create(&unique("msgfull"), 4096, 0o600, true, 2).unwrap());
    let id = q.clone().msg_id();
    assert_eq!(msg_put(id, b"a", b"", 0.0), 1);
    let (lengths, payloads) = encode_table(&[b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(
        msg_put_batch(id, &lengths, &payloads, 0.0),
        1,
        "as many as fit"
    );
    assert_eq!(msg_put(id, b"d", b"", 0.0), 0);
    assert_eq!(msg_try_put(id, b"d", b""), 0);
    let t = Instant::now();
    assert_eq!(msg_put(id, b"d", b"", 0.05), 0);
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert_eq!(
        msg_put_batch(id, &lengths, &payloads, 0.0),
        0,
        "no room for the first"
    );
    assert_eq!(msg_put_batch(id, &lengths, &payloads, 0.02), 0);
    assert_eq!(msg_error(), Ok(()));
    let n = msg_take_batch(id, 10, u64::MAX, 0.0);
    assert_eq!(taken(&view(n)), [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn message_path_table_layout() {
    let q = Arc::new(create(1 << 16));
    let id = q.clone().msg_id();
    let items: Vec<Vec<u8>> = (0..100).map(|i| payload(i, (i % 7) as usize)).collect();
    let lens: Vec<u8> = items
        .iter()
        .flat_map(|m| (m.len() as u32).to_le_bytes())
        .collect();
    let body: Vec<u8> = items.concat();
    assert_eq!(msg_put_batch(id, &lens, &body, 0.0), 100);
    // The view: the payloads, then their u32 lengths, then the u32 count.
    let n = msg_take_batch(id, 64, u64::MAX, 0.0);
    let got = view(n);
    let n = n as usize;
    let count = u32::from_le_bytes(got[n - 4..].try_into().unwrap()) as usize;
    assert_eq!(count, 64);
    let table = &got[n - 4 - 4 * count..n - 4];
    let mut off = 0;
    for (i, l) in table.chunks_exact(4).enumerate() {
        let l = u32::from_le_bytes(l.try_into().unwrap()) as usize;
        assert_eq!(&got[off..off + l], &items[i][..]);
        off += l;
    }
    assert_eq!(off, n - 4 - 4 * count);
    // max_bytes bounds a batch, but one message always comes.
    let n = msg_take_batch(id, 64, 1, 0.0);
    assert_eq!(taken(&view(n)), [items[64].clone()]);
    // Malformed tables are refused whole: -1, InvalidArgument, nothing put.
    let mut ragged = lens.clone();
    ragged.push(0);
    let mut extra = body.clone();
    extra.push(1);
    let cases: [(&str, &[u8], &[u8]); 5] = [
        ("lengths not a multiple of 4", &lens[..3], &body),
        ("a trailing length byte", &ragged, &body),
        (
            "lengths overrunning the payloads",
            &lens,
            &body[..body.len() - 1],
        ),
        ("a payload byte not covered", &lens, &extra),
        ("payloads without lengths", &[], b"abc"),
    ];
    for (what, l, b) in cases {
        assert_eq!(msg_put_batch(id, l, b, 0.0), -1, "{what}");
        assert!(
            matches!(msg_error(), Err(QueueError::InvalidArgument { .. })),
            "{what}"
        );
    }
    assert_eq!(q.qsize(), 35);
}

#[test]
fn the_view_grows_only_for_longer_results() {
    let q = Arc::new(create(4 << 20));
    let id = q.clone().msg_id();
    // A fresh thread: its view has never been used.
    std::thread::spawn(move || {
        let cap = msg_view_capacity();
        assert!(cap > 0);
        assert_eq!(msg_put(id, b"", b"small", 0.0), 1);
        assert_eq!(msg_take(id, 0.0), 5);
        let addr = msg_view_address();
        assert_eq!(view(5), b"small");
        // A result as long as the capacity fits: the address stays.
        let fits = payload(1, cap as usize);
        assert_eq!(msg_put(id, &fits[..7], &fits[7..], 0.0), 1);
        assert_eq!(msg_take(id, 0.0), cap);
        assert_eq!((msg_view_address(), msg_view_capacity()), (addr, cap));
        assert_eq!(view(cap), fits);
        // A longer one grows the buffer (it may move): read it at the address asked again.
        let big = payload(2, 3 * cap as usize + 1);
        assert_eq!(msg_put(id, &big, b"", 0.0), 1);
        assert_eq!(msg_take(id, 0.0), big.len() as u64);
        let grown = msg_view_capacity();
        assert!(grown >= big.len() as u64);
        assert_eq!(view(big.len() as u64), big);
        // A batch longer than that grows it again.
        let msgs: Vec<Vec<u8>> = (3..6).map(|i| payload(i, grown as usize)).collect();
        let (lengths, payloads) = encode_table(&msgs);
        assert_eq!(msg_put_batch(id, &lengths, &payloads, 0.0), 3);
        let n = msg_take_batch(id, 3, u64::MAX, 0.0);
        assert_eq!(n, 3 * grown + 4 * 3 + 4);
        assert!(msg_view_capacity() >= n);
        assert_eq!(taken(&view(n)), msgs);
        // Smaller results leave it where it is.
        let addr2 = msg_view_address();
        assert_eq!(msg_put(id, b"", b"tiny", 0.0), 1);
        assert_eq!(msg_take(id, 0.0), 4);
        assert_eq!(msg_view_address(), addr2);
        assert_eq!(view(4), b"tiny");
        // Another thread's view is its own buffer: taking there leaves this one as it is.
        let theirs = std::thread::spawn(move || {
            assert_eq!(msg_put(id, b"", b"theirs", 0.0), 1);
            assert_eq!(msg_take(id, 0.0), 6);
            (msg_view_address(), view(6))
        })
        .join()
        .unwrap();
        assert_ne!(theirs.0, addr2);
        assert_eq!(theirs.1, b"theirs");
        assert_eq!(msg_view_address(), addr2);
        assert_eq!(view(4), b"tiny");
    })
    .join()
    .unwrap();
}

#[test]
fn msg_error_belongs_to_the_thread_that_failed() {
    let q = Arc::new(create(4096));
    let id = q.clone().msg_id();
    let too_big = vec![0u8; q.max_message_size() as usize + 1];
    assert_eq!(msg_put(id, &too_big, b"", 0.0), -1);
    // Another thread sees nothing of this thread's failure, and its own stays with it.
    std::thread::spawn(move || {
        assert_eq!(msg_error(), Ok(()));
        assert_eq!(msg_take(0, 0.0), FAILED);
        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
        assert_eq!(msg_error(), Ok(()));
        assert_eq!(msg_take(id, f64::NAN), FAILED);
    })
    .join()
    .unwrap();
    assert!(matches!(msg_error(), Err(QueueError::TooLarge { .. })));
    assert_eq!(msg_error(), Ok(()));
    // Threads failing at the same time each raise their own error.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    if t % 2 == 0 {
                        assert_eq!(msg_take(0, 0.0), FAILED);
                        assert!(matches!(msg_error(), Err(QueueError::Closed { .. })));
                    } else {
                        assert_eq!(msg_take(id, f64::NAN), FAILED);
                        assert!(matches!(
                            msg_error(),
                            Err(QueueError::InvalidArgument { .. })
                        ));
                    }
                    assert_eq!(msg_error(), Ok(()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(msg_error(), Ok(()));
}

#[test]
fn attached_count_is_exact_whatever_the_lock_order() {
    // Slots are taken in offset order, but the kernel lists locks in the order they were
    // taken: a handle that re-fills a hole must still be counted.
    let name = unique("count");
    let a = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let b = SageQueue::open(&name, true).unwrap();
    let c = SageQueue::open(&name, true).unwrap();
    drop(b);
    let d = SageQueue::open(&name, true).unwrap();
    for q in [&a, &c, &d] {
        assert_eq!(q.stats().unwrap().attached, 3);
    }
    let info = list_queues().unwrap();
    assert_eq!(info.iter().find(|i| i.name == name).unwrap().attached, 3);
}

/// Set in a child process started by `stats_list_the_attached_pids`: the queue it attaches to.
const ATTACH_ENV: &str = "SAGE_QUEUE_TEST_ATTACH";

#[test]
fn stats_list_the_attached_pids() {
    if let Ok(name) = std::env::var(ATTACH_ENV) {
        // The child: this test binary run again for this test alone. Stay attached until the
        // parent closes our stdin.
        let q = SageQueue::open(&name, true).unwrap();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()).unwrap();
        q.detach();
        return;
    }
    let name = unique("pids");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let me = std::process::id();
    let s = q.stats().unwrap();
    assert_eq!((s.pids, s.attached), (vec![me], 1));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stats_list_the_attached_pids",
            "--test-threads=1",
            "-q",
        ])
        .env(ATTACH_ENV, &name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let theirs = child.id();
    let start = Instant::now();
    let s = loop {
        let s = q.stats().unwrap();
        if s.pids.contains(&theirs) {
            break s;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child left before attaching: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child never attached: {:?}",
            s.pids
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut both = vec![me, theirs];
    both.sort_unstable();
    assert_eq!((s.pids, s.attached), (both.clone(), 2));
    // One pid per handle: a second handle in this process is listed again.
    let second = SageQueue::open(&name, true).unwrap();
    let s = second.stats().unwrap();
    let mut three = vec![me, me, theirs];
    three.sort_unstable();
    assert_eq!((s.pids, s.attached), (three, 3));
    drop(second);
    assert_eq!(q.stats().unwrap().pids, both);
    let info = list_queues().unwrap();
    assert_eq!(info.iter().find(|i| i.name == name).unwrap().attached, 2);
    // Once the child has exited, its pid is gone.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let s = q.stats().unwrap();
    assert_eq!((s.pids, s.attached), (vec![me], 1));
}

/// Poll `cond` every millisecond for up to 30 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn stats_count_the_callers_waiting() {
    let q = Arc::new(create(4096));
    let s = q.stats().unwrap();
    assert_eq!((s.consumers_waiting, s.producers_waiting), (0, 0));
    let q2 = q.clone();
    let getter = std::thread::spawn(move || q2.get(60.0));
    eventually("a consumer waiting", || {
        q.stats().unwrap().consumers_waiting == 1
    });
    assert_eq!(q.stats().unwrap().producers_waiting, 0);
    q.put(b"wake", 0.0).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), b"wake");
    let s = q.stats().unwrap();
    assert_eq!((s.consumers_waiting, s.producers_waiting), (0, 0));

    // A producer waiting for room (here, under the item bound).
    let b = Arc::new(SageQueue::create(&unique("waiting"), 4096, 0o600, true, 1).unwrap());
    b.put(b"a", 0.0).unwrap();
    let b2 = b.clone();
    let putter = std::thread::spawn(move || b2.put(b"b", 60.0));
    eventually("a producer waiting", || {
        b.stats().unwrap().producers_waiting == 1
    });
    assert_eq!(b.stats().unwrap().consumers_waiting, 0);
    assert_eq!(b.get(0.0).unwrap(), b"a");
    putter.join().unwrap().unwrap();
    let s = b.stats().unwrap();
    assert_eq!((s.consumers_waiting, s.producers_waiting), (0, 0));
    assert_eq!(b.get(0.0).unwrap(), b"b");
}

#[test]
fn a_closed_segment_left_at_its_path_is_cleared() {
    // An unlink that died between marking the queue closed and removing the file.
    let name = unique("leftover");
    let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
    let path = q.path();
    let bytes = std::fs::read(&path).unwrap();
    q.unlink().unwrap();
    let mut closed = bytes.clone();
    closed[48] = 1; // the identity block's `closed` word
    std::fs::write(&path, &closed).unwrap();
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::NotFound { .. })
    ));
    assert!(!Path::new(&path).exists());
    std::fs::write(&path, &closed).unwrap();
    let fresh = SageQueue::open_or_create(&name, 4096, 0o600, true, 0).unwrap();
    assert!(fresh.created());
    fresh.put(b"x", 0.0).unwrap();
    assert_eq!(fresh.get(0.0).unwrap(), b"x");
}

#[test]
fn corrupt_cursors_are_rejected_at_open() {
    // tail, head and released live at offsets 128, 256 and 384.
    let cases: [[u64; 3]; 6] = [
        [4095, 4095, 4095],      // unaligned
        [16, 32, 0],             // tail behind head
        [32, 16, 32],            // head behind released
        [8, 8, 8],               // 8-aligned, but records are 16-aligned
        [4096 + 64, 0, 0],       // more than a capacity in use
        [u64::MAX - 15, 16, 16], // near overflow
    ];
    for [tail, head, released] in cases {
        let name = unique("badcursor");
        let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
        let path = q.path();
        // Read it while attached: once detached, another test's collect_garbage may remove it
        // (the corrupt file written below is not a queue, which collect_garbage(false) keeps).
        let mut bytes = std::fs::read(&path).unwrap();
        drop(q);
        for (offset, v) in [(128, tail), (256, head), (384, released)] {
            bytes[offset..offset + 8].copy_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = SageQueue::open(&name, true)
            .err()
            .expect("corrupt cursors must not open");
        assert!(matches!(err, QueueError::NotAQueue { .. }), "{err:?}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file was modified"
        );
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn unaligned_cursors_written_after_open_stay_inside_the_ring() {
    // Found by fuzzing segment_open (before open checked cursors): a tail of capacity - 1 made
    // a put store a padding header at the last byte of the ring, 7 bytes of it past the end of
    // the mapping (and its length underflowed). Cursors are shared memory that any process
    // with write access can change after open, so every header access must stay in the ring.
    use std::os::unix::fs::FileExt;
    for cursor in [4095u64, 4093, 4097, 4088, 8191 + 4096] {
        let name = unique("unaligned");
        let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
        let path = q.path();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for offset in [128, 256, 384] {
            // tail, head, released, through the file into the live mapping
            file.write_all_at(&cursor.to_le_bytes(), offset).unwrap();
        }
        // Whatever each call returns (a message or a typed error), none panics or hangs.
        for _ in 0..3 {
            let _ = q.put(b"x", 0.0);
            let _ = q.put(&[7u8; 300], 0.0);
            let _ = q.get(0.0);
            let _ = q.get_batch(8, 1 << 20, 0.0);
        }
        let _ = q.stats();
        // Header, slots, ring, lease table and dead-letter page, 64 lease payloads.
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            4096 + 64 * 1024 + 4096 + 8192 + 64 * 4096
        );
        q.unlink().unwrap();
    }
}

#[test]
fn a_shortened_segment_fails_instead_of_crashing() {
    // Another process cuts the file down to its first page (header kept, slots and ring gone).
    // A waiting call checks the length and fails; a handle dropped afterwards does not touch
    // the missing pages; opening names the file.
    let name = unique("shrunk");
    let q = SageQueue::create(&name, 4096, 0o600, true, 0).unwrap();
    let path = q.path();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(4096).unwrap();
    let err = q.get(0.2).err().unwrap();
    assert!(
        matches!(&err, QueueError::Closed { reason } if reason.contains("truncated") && reason.contains(&path)),
        "{err:?}"
    );
    let err = q.put(&[1u8; 5000], 0.2).err().unwrap();
    assert!(matches!(err, QueueError::TooLarge { .. }), "{err:?}");
    let err = SageQueue::open(&name, true).err().unwrap();
    assert!(
        matches!(&err, QueueError::NotAQueue { reason } if reason.contains(&path)),
        "{err:?}"
    );
    drop(q);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn nan_timeouts_are_refused_and_infinity_waits_forever() {
    let q = Arc::new(create(65536));
    let id = q.clone().msg_id();
    q.put(b"kept", 0.0).unwrap();
    let nan = f64::NAN;
    let lens = 1u32.to_le_bytes();
    // A message call's failure, as the error msg_error raises.
    let raised = |failed: bool| {
        assert!(failed, "the call did not fail");
        msg_error()
    };
    let results: Vec<(&str, Result<(), QueueError>)> = vec![
        ("put", q.put(b"x", nan)),
        ("put_pair", q.put_pair(b"x", b"y", nan)),
        ("get", q.get(nan).map(|_| ())),
        ("put_batch", q.put_batch(&lens, b"a", nan).map(|_| ())),
        ("get_batch", q.get_batch(4, 100, nan).map(|_| ())),
        ("join", q.join(nan).map(|_| ())),
        ("msg_put", raised(msg_put(id, b"x", b"y", nan) == -1)),
        ("msg_take", raised(msg_take(id, nan) == FAILED)),
        (
            "msg_put_batch",
            raised(msg_put_batch(id, &lens, b"a", nan) == -1),
        ),
        (
            "msg_take_batch",
            raised(msg_take_batch(id, 4, 100, nan) == FAILED),
        ),
    ];
    for (what, r) in results {
        assert_eq!(
            r,
            Err(QueueError::InvalidArgument {
                reason: "timeout must be a number of seconds, not NaN".into()
            }),
            "{what}"
        );
    }
    // Nothing was put or taken.
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get(0.0).unwrap(), b"kept");
    // +infinity waits as long as it takes, like a negative timeout.
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        q2.put(b"late", f64::INFINITY).unwrap();
    });
    assert_eq!(q.get(f64::INFINITY).unwrap(), b"late");
    t.join().unwrap();
    q.put(b"x", f64::INFINITY).unwrap();
    // The take layout: the payload, its u32 length, the u32 count.
    assert_eq!(
        q.get_batch(4, 100, f64::INFINITY).unwrap(),
        [b'x', 1, 0, 0, 0, 1, 0, 0, 0]
    );
    q.task_done(3).unwrap();
    assert!(q.join(f64::INFINITY).unwrap());
}

#[test]
fn a_handle_that_never_spins_still_wakes() {
    let q = Arc::new(create(1 << 16));
    assert_eq!(q.spin_micros(), 70);
    q.set_spin_micros(0);
    assert_eq!(q.spin_micros(), 0);
    let producer = Arc::clone(&q);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        producer.put(b"wake", -1.0).unwrap();
    });
    let start = Instant::now();
    assert_eq!(q.get(5.0).unwrap(), b"wake");
    assert!(start.elapsed() < Duration::from_secs(4));
    t.join().unwrap();
}
