//! Rust benchmarks of the core, without Python: SPSC and MPMC throughput across processes
//! (fork) and across threads, 8 B to 1 MiB, single and batched calls, and ping-pong latency
//! p50/p99 with the default spin-then-futex wait and with pure spinning (timeout 0 polling).
//!
//!     cargo bench --bench core            # everything
//!     cargo bench --bench core -- quick   # fewer messages

use sage_queue::SageQueue;
use std::time::{Duration, Instant};

static mut QUICK: bool = false;

fn quick() -> bool {
    // SAFETY: written once in main before any other thread or process exists.
    unsafe { QUICK }
}

fn name(tag: &str) -> String {
    format!("bench-{}-{}", tag.replace(' ', "_"), std::process::id())
}

/// A batch of `n` messages of `size` bytes in the table layout: (lengths, payloads).
fn table(n: usize, size: usize) -> (Vec<u8>, Vec<u8>) {
    sage_queue::encode_table(&vec![vec![7u8; size]; n])
}

/// Run `body` in a forked child process; returns its pid.
fn fork(body: impl FnOnce()) -> i32 {
    // SAFETY: the benchmark is single-threaded when it forks; the child runs `body` and
    // leaves with _exit, never returning into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        body();
        // SAFETY: end the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: waiting on our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn producer(q: &SageQueue, count: usize, size: usize, batch: usize) {
    if batch > 1 {
        let (lengths, payloads) = table(batch, size);
        let mut sent = 0;
        while sent < count {
            sent += q.put_batch(&lengths, &payloads, -1.0).unwrap() as usize;
        }
    } else {
        let m = vec![7u8; size];
        for _ in 0..count {
            q.put(&m, -1.0).unwrap();
        }
    }
}

fn consumer(q: &SageQueue, count: usize, batch: usize) {
    let mut got = 0;
    while got < count {
        if batch > 1 {
            let b = q.get_batch(batch as u32, u64::MAX, -1.0).unwrap();
            got += sage_queue::parse_taken(&b).unwrap().len();
        } else {
            q.get(-1.0).unwrap();
            got += 1;
        }
    }
}

/// Messages per second with `p` producers and `c` consumers as processes (or threads).
fn throughput(
    tag: &str,
    size: usize,
    count: usize,
    p: usize,
    c: usize,
    batch: usize,
    threads: bool,
) {
    let n = name(tag);
    let cap = (64 << 20).max(size as u64 * 8);
    let q = SageQueue::create(&n, cap, 0o600, true, 0).unwrap();
    let count = count / p * p;
    let start = Instant::now();
    if threads {
        let n = &n;
        std::thread::scope(|s| {
            for _ in 0..p {
                s.spawn(move || {
                    producer(&SageQueue::open(n, true).unwrap(), count / p, size, batch)
                });
            }
            for i in 0..c {
                let share = count / c + usize::from(i < count % c);
                s.spawn(move || consumer(&SageQueue::open(n, true).unwrap(), share, batch));
            }
        });
    } else {
        let mut pids = Vec::new();
        for i in 0..c {
            let share = count / c + usize::from(i < count % c);
            pids.push(fork(|| {
                consumer(&SageQueue::open(&n, true).unwrap(), share, batch)
            }));
        }
        for _ in 0..p {
            pids.push(fork(|| {
                producer(&SageQueue::open(&n, true).unwrap(), count / p, size, batch)
            }));
        }
        pids.into_iter().for_each(reap);
    }
    let secs = start.elapsed().as_secs_f64();
    let how = if threads { "threads" } else { "processes" };
    println!(
        "{tag:<28} {p}p x {c}c {how:<9} {size:>8} B  batch {batch:>3}  {:>12.0} msgs/s  {:>9.1} MB/s",
        count as f64 / secs,
        count as f64 * size as f64 / secs / 1e6
    );
    drop(q);
}

/// Ping-pong over two queues between two processes; `spin` polls with timeout 0 instead of
/// the default spin-then-futex wait.
fn ping_pong(rounds: usize, spin: bool) {
    let (a, b) = (name("ping"), name("pong"));
    let qa = SageQueue::create(&a, 1 << 20, 0o600, true, 0).unwrap();
    let qb = SageQueue::create(&b, 1 << 20, 0o600, true, 0).unwrap();
    let get = move |q: &SageQueue| loop {
        match q.get(if spin { 0.0 } else { -1.0 }) {
            Ok(m) => return m,
            Err(sage_queue::QueueError::Empty) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    };
    let pid = fork(|| {
        let (qa, qb) = (
            SageQueue::open(&a, true).unwrap(),
            SageQueue::open(&b, true).unwrap(),
        );
        for _ in 0..rounds {
            let m = get(&qa);
            qb.put(&m, -1.0).unwrap();
        }
    });
    let mut lat = Vec::with_capacity(rounds);
    let msg = [1u8; 64];
    for _ in 0..rounds {
        let t = Instant::now();
        qa.put(&msg, -1.0).unwrap();
        get(&qb);
        lat.push(t.elapsed());
    }
    reap(pid);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "ping-pong 64 B ({})       p50 {:>8.2} us   p99 {:>8.2} us",
        if spin { "spinning" } else { "futex   " },
        us(pct(0.5)),
        us(pct(0.99))
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // SAFETY: single-threaded here, before anything reads QUICK.
    unsafe { QUICK = std::env::args().any(|a| a == "quick") };
    let dir = format!("/dev/shm/sq-bench-{}", std::process::id());
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_var("SAGE_QUEUE_DIR", &dir);
    let k = if quick() { 10 } else { 1 };
    for &(size, count) in &[
        (8, 4_000_000),
        (64, 4_000_000),
        (1024, 1_000_000),
        (65536, 40_000),
        (1 << 20, 2_000),
    ] {
        throughput("spsc", size, count / k, 1, 1, 1, false);
        throughput("spsc batch", size, count / k, 1, 1, 64, false);
    }
    throughput("spsc threads", 64, 4_000_000 / k, 1, 1, 1, true);
    throughput("spsc threads batch", 64, 4_000_000 / k, 1, 1, 64, true);
    throughput("mpmc", 64, 4_000_000 / k, 2, 2, 1, false);
    throughput("mpmc batch", 64, 4_000_000 / k, 2, 2, 64, false);
    throughput("mpmc threads", 64, 4_000_000 / k, 2, 2, 1, true);
    ping_pong(200_000 / k, false);
    ping_pong(200_000 / k, true);
    let _ = std::fs::remove_dir_all(&dir);
}
