//! Single-process semantics of the Rust core: put/get, wrap-around, full/empty/timeouts,
//! batches, size limits, names, foreign and corrupt files, attachment counting and cleanup,
//! and multi-thread MPMC exactly-once.

mod common;

use common::*;
use sage_queue::{list_queues, parse_frames, QueueError, SageQueue};
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
    assert_eq!(q.put_batch(&frames(&msgs), 0.0).unwrap(), 200);
    assert_eq!(q.qsize(), 200);
    let got = q.get_batch(64, u64::MAX, 0.0).unwrap();
    let got: Vec<Vec<u8>> = parse_frames(&got)
        .unwrap()
        .into_iter()
        .map(|m| m.to_vec())
        .collect();
    assert_eq!(got, msgs[..64]);
    // max_bytes bounds the batch, but one message always comes.
    let got = q.get_batch(1000, 1, 0.0).unwrap();
    assert_eq!(parse_frames(&got).unwrap().len(), 1);
    let mut rest = Vec::new();
    while let Ok(b) = q.get_batch(1000, u64::MAX, 0.0) {
        rest.extend(parse_frames(&b).unwrap().into_iter().map(|m| m.to_vec()));
    }
    assert_eq!(rest, msgs[65..]);
    // A malformed frame buffer is rejected whole: nothing is put.
    let mut bad = frames(&msgs[..3]);
    bad.extend_from_slice(&100u32.to_le_bytes());
    bad.extend_from_slice(b"short");
    assert!(matches!(
        q.put_batch(&bad, 0.0),
        Err(QueueError::InvalidArgument { .. })
    ));
    assert!(matches!(
        q.put_batch(&[1, 0], 0.0),
        Err(QueueError::InvalidArgument { .. })
    ));
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.put_batch(&[], 0.0).unwrap(), 0);
    assert!(matches!(
        q.get_batch(0, 1, 0.0),
        Err(QueueError::InvalidArgument { .. })
    ));
}

#[test]
fn batch_larger_than_ring_goes_in_parts() {
    let q = Arc::new(create(4096));
    let msgs: Vec<Vec<u8>> = (0..500).map(|i| payload(i, 40)).collect();
    let q2 = q.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 500 {
            let b = q2.get_batch(100, u64::MAX, 5.0).unwrap();
            got.extend(parse_frames(&b).unwrap().into_iter().map(|m| m.to_vec()));
        }
        got
    });
    assert_eq!(q.put_batch(&frames(&msgs), 5.0).unwrap(), 500);
    assert_eq!(reader.join().unwrap(), msgs);
    // Without a reader, a batch that cannot fit stops part way and says how many went in.
    let t = Instant::now();
    let n = q.put_batch(&frames(&msgs), 0.2).unwrap();
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
    // A real segment with a newer version, and one truncated.
    let name = unique("ver");
    let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
    let path = q.path();
    // Read it while attached: once detached, another test's collect_garbage may remove it
    // (the writes below recreate the file).
    let good = std::fs::read(&path).unwrap();
    drop(q);
    let mut newer = good.clone();
    newer[8] = 2;
    std::fs::write(&path, &newer).unwrap();
    assert!(matches!(
        SageQueue::open(&name, true),
        Err(QueueError::Incompatible { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), newer);
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
                    let put = q.put_batch(&frames(&msgs), 10.0).unwrap() as u64;
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
                        Ok(b) => parse_frames(&b)
                            .unwrap()
                            .iter()
                            .map(|m| m.to_vec())
                            .collect(),
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

#[test]
fn raw_functions_by_id() {
    use sage_queue::{
        raw_get, raw_get_batch_view, raw_get_view, raw_put, raw_put_batch, raw_view_address,
        raw_view_capacity,
    };
    let q = Arc::new(create(1 << 20));
    let id = q.clone().raw_id();
    assert_eq!(q.clone().raw_id(), id, "one id per handle");
    raw_put(id, b"abc", 0.0).unwrap();
    assert_eq!(raw_get(id, 0.0).unwrap(), b"abc");
    assert_eq!(raw_get(id, 0.0), Err(QueueError::Empty));
    // The view: the message lands in this thread's buffer.
    raw_put(id, b"viewed", 0.0).unwrap();
    let n = raw_get_view(id, 0.0).unwrap() as usize;
    let view = unsafe { std::slice::from_raw_parts(raw_view_address() as *const u8, n) };
    assert_eq!(view, b"viewed");
    // A result larger than the buffer moves it; the capacity says when.
    let big = vec![3u8; raw_view_capacity() as usize + 1];
    raw_put(id, &big, 0.0).unwrap();
    let n = raw_get_view(id, 0.0).unwrap() as usize;
    assert!(raw_view_capacity() as usize >= n);
    let view = unsafe { std::slice::from_raw_parts(raw_view_address() as *const u8, n) };
    assert_eq!(view, &big[..]);
    assert_eq!(
        raw_put_batch(id, &frames(&[b"x".to_vec(), b"yz".to_vec()]), 0.0).unwrap(),
        2
    );
    let n = raw_get_batch_view(id, 10, u64::MAX, 0.0).unwrap() as usize;
    let view = unsafe { std::slice::from_raw_parts(raw_view_address() as *const u8, n) };
    assert_eq!(parse_frames(view).unwrap(), vec![&b"x"[..], &b"yz"[..]]);
    // A closed or unknown id is Closed, never someone else's queue.
    q.detach();
    assert!(matches!(
        raw_put(id, b"x", 0.0),
        Err(QueueError::Closed { .. })
    ));
    assert!(matches!(
        raw_get(u64::MAX, 0.0),
        Err(QueueError::Closed { .. })
    ));
    assert!(matches!(raw_get(0, 0.0), Err(QueueError::Closed { .. })));
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

#[test]
fn table_layout_batches() {
    use sage_queue::{raw_get_many_view, raw_put_many, raw_view_address};
    let q = Arc::new(create(1 << 16));
    let id = q.clone().raw_id();
    let items: Vec<Vec<u8>> = (0..100).map(|i| payload(i, (i % 7) as usize)).collect();
    let lens: Vec<u8> = items
        .iter()
        .flat_map(|m| (m.len() as u32).to_le_bytes())
        .collect();
    let body: Vec<u8> = items.concat();
    assert_eq!(raw_put_many(id, &lens, &body, 0.0).unwrap(), 100);
    let n = raw_get_many_view(id, 64, u64::MAX, 0.0).unwrap() as usize;
    let view = unsafe { std::slice::from_raw_parts(raw_view_address() as *const u8, n) };
    let count = u32::from_le_bytes(view[n - 4..].try_into().unwrap()) as usize;
    assert_eq!(count, 64);
    let table = &view[n - 4 - 4 * count..n - 4];
    let mut off = 0;
    for (i, l) in table.chunks_exact(4).enumerate() {
        let l = u32::from_le_bytes(l.try_into().unwrap()) as usize;
        assert_eq!(&view[off..off + l], &items[i][..]);
        off += l;
    }
    assert_eq!(off, n - 4 - 4 * count);
    // Lengths that do not add up are refused whole.
    for (l, b) in [
        (&lens[..3], &body[..]),
        (&lens[..], &body[..body.len() - 1]),
    ] {
        assert!(matches!(
            raw_put_many(id, l, b, 0.0),
            Err(QueueError::InvalidArgument { .. })
        ));
    }
    let mut extra = body.clone();
    extra.push(1);
    assert!(matches!(
        raw_put_many(id, &lens, &extra, 0.0),
        Err(QueueError::InvalidArgument { .. })
    ));
    assert_eq!(q.qsize(), 36);
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
    let cases: [[u64; 3]; 5] = [
        [4095, 4095, 4095],   // unaligned
        [8, 16, 0],           // tail behind head
        [16, 8, 16],          // head behind released
        [4096 + 64, 0, 0],    // more than a capacity in use
        [u64::MAX - 7, 8, 8], // near overflow
    ];
    for [tail, head, released] in cases {
        let name = unique("badcursor");
        let q = SageQueue::create(&name, 4096, 0o600, false, 0).unwrap();
        let path = q.path();
        drop(q);
        let mut bytes = std::fs::read(&path).unwrap();
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
    for cursor in [4095u64, 4093, 4097, 8191 + 4096] {
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
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            4096 + 4096 + 64 * 1024
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
    use sage_queue::*;
    let q = Arc::new(create(65536));
    let id = q.clone().raw_id();
    q.put(b"kept", 0.0).unwrap();
    let nan = f64::NAN;
    let f = frames(&[b"a".to_vec()]);
    let lens = 1u32.to_le_bytes();
    let results: Vec<(&str, Result<(), QueueError>)> = vec![
        ("put", q.put(b"x", nan)),
        ("put_pair", q.put_pair(b"x", b"y", nan)),
        ("get", q.get(nan).map(|_| ())),
        ("put_batch", q.put_batch(&f, nan).map(|_| ())),
        ("put_many", q.put_many(&lens, b"a", nan).map(|_| ())),
        ("get_batch", q.get_batch(4, 100, nan).map(|_| ())),
        ("join", q.join(nan).map(|_| ())),
        ("raw_put", raw_put(id, b"x", nan)),
        ("raw_put_pair", raw_put_pair(id, b"x", b"y", nan)),
        ("raw_get", raw_get(id, nan).map(|_| ())),
        ("raw_put_batch", raw_put_batch(id, &f, nan).map(|_| ())),
        (
            "raw_put_many",
            raw_put_many(id, &lens, b"a", nan).map(|_| ()),
        ),
        ("raw_get_batch", raw_get_batch(id, 4, 100, nan).map(|_| ())),
        ("raw_get_view", raw_get_view(id, nan).map(|_| ())),
        (
            "raw_get_batch_view",
            raw_get_batch_view(id, 4, 100, nan).map(|_| ()),
        ),
        (
            "raw_get_many_view",
            raw_get_many_view(id, 4, 100, nan).map(|_| ()),
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
    assert_eq!(
        q.get_batch(4, 100, f64::INFINITY).unwrap(),
        frames(&[b"x".to_vec()])
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
