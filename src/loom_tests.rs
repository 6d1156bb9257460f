//! Loom model checks of the ring protocol in ring.rs (claim -> write -> commit -> consume ->
//! release), run on the real `Ring` code: built with `--cfg loom`, the header, the slots and
//! the ring's words are loom atomics (layout::sync) and loom explores the thread interleavings
//! and the values weak memory ordering lets each load see.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom_tests
//! ```
//!
//! Producers and consumers are threads with their own slot and `Cache`, and wait the way
//! queue.rs does, minus the sleeping: a producer tries `try_put`, then `release` and `try_put`
//! again; a consumer tries `try_get`; between tries they `yield_now`. Nobody crashes here, so
//! every slot counts as alive (crash recovery is covered by tests/faults.rs). Each model checks
//! that every message is delivered exactly once and intact, that one consumer sees each
//! producer's messages in order, that claimed payload bytes are zero before they are written
//! (in `write_payload`), and at the end that head == tail == released, the ring is all zero,
//! every intent is empty, the release lock is free and the counters agree.
//!
//! Each model has the largest preemption bound that keeps it to a minute or two
//! (`LOOM_MAX_PREEMPTIONS` overrides them all); with `--nocapture` each prints how many
//! executions it explored. loom's search grows fast with threads and steps: two producers with
//! two messages each and two consumers, all at once, does not finish in 15 minutes even
//! without preemptions, so that case is split into the models below.

use std::sync::atomic::AtomicUsize as StdCounter;
use std::time::Instant;

use loom::sync::Arc;
use loom::thread;

use crate::layout::sync::{AtomicU32, AtomicU64, Ordering::*};
use crate::layout::*;
use crate::ring::{Cache, Me, Msg, Ring};

/// One slot per thread (main included).
const SLOTS: usize = 5;
/// Tries before a thread reports a livelock: far more than these models need (after a
/// `yield_now`, loom runs the other threads first).
const TRIES: usize = 1000;

/// The shared memory of one queue: what a segment file holds.
struct Shm {
    hdr: Header,
    slots: Vec<Slot>,
    data: Vec<AtomicU64>,
    /// The model's own counts (not the queue's), so consumers know when to stop: messages
    /// put, producers finished, messages taken.
    put: AtomicU64,
    producers_done: AtomicU64,
    taken: AtomicU64,
    /// Consumers yield right after taking records (`Ring::for_model`).
    yield_at_taken: bool,
}

fn a64(v: u64) -> AtomicU64 {
    AtomicU64::new(v)
}

fn a32(v: u32) -> AtomicU32 {
    AtomicU32::new(v)
}

impl Shm {
    /// A new queue of `cap` bytes as segment.rs initialises it (all zero but the identity and
    /// the slots' empty intents) with every slot attached (generation 1, as attach.rs does),
    /// whose cursors are all at `start`: the state any queue is in after `start` bytes of
    /// traffic, all consumed and released.
    fn new(cap: u64, start: u64, yield_at_taken: bool, max_items: u64) -> Arc<Shm> {
        assert!(start % 8 == 0);
        let wake = || WakeLine {
            seq: a32(0),
            waiters: a32(0),
        };
        let hdr = Header {
            id: Identity {
                magic: MAGIC,
                version: VERSION,
                data_offset: DATA_OFFSET as u32,
                capacity: cap,
                slot_count: SLOTS as u32,
                owner_uid: 0,
                creator_pid: 0,
                _reserved: 0,
                created_unix_ms: 0,
                closed: a32(0),
                max_items,
            },
            prod: ProducerLine {
                tail: a64(start),
                msgs_in: a64(0),
                bytes_in: a64(0),
                waits_full: a64(0),
            },
            cons: ConsumerLine {
                head: a64(start),
                msgs_out: a64(0),
                bytes_out: a64(0),
                waits_empty: a64(0),
            },
            rel: ReleaseLine {
                released: a64(start),
                lock: a64(0),
                release_end: a64(start),
                recovered: a64(0),
                lost: a64(0),
            },
            data_wake: wake(),
            space_wake: wake(),
            tasks: TaskLine {
                tasks_done: a64(0),
                join_seq: a32(0),
                join_waiters: a32(0),
            },
            base: Baselines {
                msgs_in: a64(0),
                msgs_out: a64(0),
                bytes_in: a64(0),
                bytes_out: a64(0),
                waits_full: a64(0),
                waits_empty: a64(0),
                recovered: a64(0),
                lost: a64(0),
            },
            items: ItemLine {
                count: a64(0),
                lock: a64(0),
                j_kind: a64(0),
                j_count: a64(0),
                j_from: a64(0),
                j_to: a64(0),
                j_n: a64(0),
            },
        };
        let slots = (0..SLOTS)
            .map(|_| Slot {
                gen: a32(1),
                pid: a32(0),
                loan_start: a64(NONE),
                claim_start: a64(NONE),
                claim_end: a64(0),
                read_start: a64(NONE),
                read_end: a64(0),
                pin_start: a64(NONE),
                pin_end: a64(0),
            })
            .collect();
        let data = (0..cap / 8).map(|_| a64(0)).collect();
        Arc::new(Shm {
            hdr,
            slots,
            data,
            put: a64(0),
            producers_done: a64(0),
            taken: a64(0),
            yield_at_taken,
        })
    }

    /// The cursors, the ring's words and the intents, for failure messages.
    fn state(&self) -> String {
        let h = &self.hdr;
        let words: Vec<String> = (self.data.iter())
            .map(|w| format!("{:x}", w.load(SeqCst)))
            .collect();
        let intents: Vec<String> = (self.slots.iter())
            .map(|s| {
                let r = |a: &AtomicU64| a.load(SeqCst) as i64;
                let (c, ce) = (r(&s.claim_start), r(&s.claim_end));
                let (rd, re) = (r(&s.read_start), r(&s.read_end));
                format!("claim {c}..{ce} read {rd}..{re}")
            })
            .collect();
        format!(
            "tail {} head {} released {} lock {:x} taken {}/{} producers done {}; words [{}]; intents [{}]",
            h.prod.tail.load(SeqCst),
            h.cons.head.load(SeqCst),
            h.rel.released.load(SeqCst),
            h.rel.lock.load(SeqCst),
            self.taken.load(SeqCst),
            self.put.load(SeqCst),
            self.producers_done.load(SeqCst),
            words.join(" "),
            intents.join(", "),
        )
    }

    fn ring(&self, slot: usize) -> Ring<'_> {
        let me = Me {
            slot: slot as u32,
            gen: 1,
        };
        Ring::for_model(&self.hdr, &self.slots, &self.data, me, self.yield_at_taken)
    }
}

/// Message `seq` of producer `p`, `len` bytes (at least 2), none of them zero, so a payload
/// read before it was written, or after it was zeroed, never matches.
fn message(p: usize, seq: usize, len: usize) -> Vec<u8> {
    let id = (1 + 4 * p + seq) as u8;
    let mut m = vec![id, 0x80 | p as u8];
    m.extend((2..len).map(|i| 0x80 | (id << 3) | i as u8));
    m.truncate(len);
    m
}

/// Which producer and which of its messages a delivered payload is.
fn who(m: &[u8]) -> (usize, usize) {
    let id = m[0] as usize - 1;
    (id / 4, id % 4)
}

/// Put `msgs` in order, at most `batch` per `try_put`, waiting as `SageQueue::put_msgs` does;
/// with `nowait`, one attempt per call and a stop at the first that fails, as a put with timeout
/// 0 (`put_nowait`) returning Full. Returns how many were put.
fn produce(shm: &Shm, slot: usize, msgs: &[Vec<u8>], batch: usize, nowait: bool) -> usize {
    let ring = shm.ring(slot);
    let mut cache = Cache::default();
    let mut done = 0;
    for _ in 0..TRIES {
        if done == msgs.len() {
            break;
        }
        // Head and body as two parts, as `put_pair` hands them over.
        let parts: Vec<Msg> = msgs[done..]
            .iter()
            .take(batch)
            .map(|m| Msg(&m[..1], &m[1..]))
            .collect();
        let mut n = ring.try_put(&mut cache, &parts);
        if n == 0 {
            ring.release();
            n = ring.try_put(&mut cache, &parts);
        }
        done += n;
        shm.put.fetch_add(n as u64, SeqCst);
        if n == 0 {
            if nowait {
                break;
            }
            // Wait as queue.rs spins: on the cheap check, then try again. Yield first: the
            // check may already hold while the release lock holder still has to run.
            let need = span(msgs[done].len() as u64);
            thread::yield_now();
            while !ring.has_space(need) || ring.items_room() == 0 {
                thread::yield_now();
            }
        }
    }
    assert!(
        nowait || done == msgs.len(),
        "producer {slot}: no space after {TRIES} tries; {}",
        shm.state()
    );
    done
}

/// Take messages (at most `max_items` per `try_get`) until the `producers` are done and every
/// message put was taken by someone; returns the ones this consumer took, in order.
fn consume(shm: &Shm, slot: usize, producers: u64, max_items: usize) -> Vec<Vec<u8>> {
    let ring = shm.ring(slot);
    let mut cache = Cache::default();
    let mut got = Vec::new();
    for _ in 0..TRIES {
        let mut out = Vec::new();
        let n = ring
            .try_get(&mut cache, max_items, u64::MAX, &mut out)
            .expect("try_get");
        let mut at = 0;
        for &(_, len) in cache.taken().iter().take(n) {
            got.push(out[at..at + len as usize].to_vec());
            at += len as usize;
        }
        if n > 0 {
            let max = shm.hdr.id.max_items;
            let count = shm.hdr.items.count.load(SeqCst);
            assert!(
                max == 0 || count <= max,
                "item count {count} above the bound {max}"
            );
            shm.taken.fetch_add(n as u64, SeqCst);
            continue;
        }
        if shm.producers_done.load(SeqCst) == producers
            && shm.taken.load(SeqCst) == shm.put.load(SeqCst)
        {
            return got;
        }
        thread::yield_now();
    }
    panic!(
        "consumer {slot}: nothing to take after {TRIES} tries; {}",
        shm.state()
    );
}

/// A model: producer `p` puts `sends[p]` (message lengths) at most `batch` per call; each of
/// `consumers` consumers takes up to `max_items` per call. Checks delivery and the end state.
#[derive(Clone, Copy)]
struct Model {
    name: &'static str,
    cap: u64,
    start: u64,
    sends: &'static [&'static [usize]],
    batch: usize,
    nowait: bool,
    /// How many of each producer's messages the main thread puts before any thread starts
    /// (`usize::MAX`: all of them, and no producer threads).
    prefill: usize,
    consumers: usize,
    max_items: usize,
    /// Loom's preemption bound, unless `LOOM_MAX_PREEMPTIONS` sets one.
    bound: usize,
    /// Consumers yield right after taking records, so loom runs the other threads in that
    /// window (a different search: loom deprioritises a thread that yields).
    yield_at_taken: bool,
    /// The queue's max_items (0: none, so the bound lock is never taken). Every model uses 0:
    /// a bounded model (two producers and a consumer taking turns at the bound lock) ran into
    /// loom's branch limit, as loom explores unfair schedules in which a spinning thread keeps
    /// losing the lock; the bound is tested by tests/bound.rs and tests/faults.rs.
    bound_items: u64,
}

impl Model {
    fn run(self) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(self.bound);
        }
        // Spinning threads take many steps; the default (1000) is too low.
        builder.max_branches = builder.max_branches.max(100_000);
        let runs = std::sync::Arc::new(StdCounter::new(0));
        let counter = runs.clone();
        let t0 = Instant::now();
        builder.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.once();
        });
        println!(
            "loom model {}: {} executions in {:.1?} (preemption bound {:?})",
            self.name,
            runs.load(std::sync::atomic::Ordering::Relaxed),
            t0.elapsed(),
            builder.preemption_bound
        );
    }

    fn once(&self) {
        let shm = Shm::new(self.cap, self.start, self.yield_at_taken, self.bound_items);
        let sent: Vec<Vec<Vec<u8>>> = (self.sends.iter().enumerate())
            .map(|(p, lens)| {
                (lens.iter().enumerate())
                    .map(|(s, &len)| message(p, s, len))
                    .collect()
            })
            .collect();
        let n_producers = sent.len() as u64;
        assert!(self.sends.len() + self.consumers < SLOTS);

        let mut producers = Vec::new();
        let mut put = Vec::new();
        for (p, msgs) in sent.iter().enumerate() {
            let first = self.prefill.min(msgs.len());
            let early = produce(&shm, p, &msgs[..first], self.batch, self.nowait);
            if first == msgs.len() || early < first {
                shm.producers_done.fetch_add(1, SeqCst);
                put.push(early);
                continue;
            }
            let (shm, rest, batch, nowait) =
                (shm.clone(), msgs[first..].to_vec(), self.batch, self.nowait);
            producers.push(thread::spawn(move || {
                let n = produce(&shm, p, &rest, batch, nowait);
                shm.producers_done.fetch_add(1, SeqCst);
                early + n
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..self.consumers {
            let (shm, slot, max_items) = (shm.clone(), self.sends.len() + c, self.max_items);
            consumers.push(thread::spawn(move || {
                consume(&shm, slot, n_producers, max_items)
            }));
        }
        put.extend(producers.into_iter().map(|t| t.join().unwrap()));
        let got: Vec<Vec<Vec<u8>>> = consumers.into_iter().map(|t| t.join().unwrap()).collect();

        // Exactly once, intact, and in each producer's order as any one consumer saw them.
        let mut seen = vec![vec![0; 4]; sent.len()];
        for mine in &got {
            let mut last = vec![None; sent.len()];
            for m in mine {
                let (p, s) = who(m);
                assert_eq!(m, &sent[p][s], "message {s} of producer {p} damaged");
                seen[p][s] += 1;
                assert!(last[p] < Some(s), "producer {p}: {s} after {:?}", last[p]);
                last[p] = Some(s);
            }
        }
        for (p, msgs) in sent.iter().enumerate() {
            for s in 0..msgs.len() {
                let want = usize::from(s < put[p]);
                let n = seen[p][s];
                assert_eq!(n, want, "message {s} of producer {p} delivered {n} times");
            }
        }
        let total: usize = put.iter().sum();
        let total_bytes: usize = (sent.iter().zip(&put))
            .flat_map(|(msgs, &n)| &msgs[..n])
            .map(Vec::len)
            .sum();

        // After a last release, everything is free and zero again.
        shm.ring(SLOTS - 1).release();
        let h = &shm.hdr;
        let tail = h.prod.tail.load(SeqCst);
        assert_eq!(h.cons.head.load(SeqCst), tail, "head != tail");
        assert_eq!(h.rel.released.load(SeqCst), tail, "released != tail");
        assert_eq!(h.rel.lock.load(SeqCst), 0, "release lock still held");
        for (i, w) in shm.data.iter().enumerate() {
            assert_eq!(w.load(SeqCst), 0, "ring word {i} not zero after release");
        }
        for (i, s) in shm.slots.iter().enumerate() {
            assert_eq!(
                s.claim_start.load(SeqCst),
                NONE,
                "slot {i}: claim intent left"
            );
            assert_eq!(
                s.read_start.load(SeqCst),
                NONE,
                "slot {i}: read intent left"
            );
        }
        assert_eq!(h.prod.msgs_in.load(SeqCst), total as u64);
        assert_eq!(h.cons.msgs_out.load(SeqCst), total as u64);
        assert_eq!(h.prod.bytes_in.load(SeqCst), total_bytes as u64);
        assert_eq!(h.cons.bytes_out.load(SeqCst), total_bytes as u64);
        assert_eq!(h.rel.recovered.load(SeqCst) + h.rel.lost.load(SeqCst), 0);
        // The item bound's count is back to zero, its lock free, its journal empty.
        assert_eq!(h.items.count.load(SeqCst), 0, "item count left");
        assert_eq!(h.items.lock.load(SeqCst), 0, "bound lock still held");
        assert_eq!(h.items.j_kind.load(SeqCst), 0, "bound journal left");
    }
}

// Payload lengths 2..=8 take 16 bytes in the ring, 9..=16 take 24. Preemption bounds are what
// each model finishes with in about a minute or less in release mode (see the README).

/// Two producers and two consumers, one message each, all at once. The cursors start 32
/// bytes before the end of a 128-byte ring, so the 24-byte record may not fit the lap's end
/// (PADDING, then a wrap). Four threads make loom's search grow fast: this model runs without
/// preemptions (interleavings at yields and at thread ends, and every value weak memory
/// ordering lets a load see); the two models after it cover each side's races with more.
#[test]
fn loom_mpmc() {
    Model {
        name: "mpmc",
        cap: 128,
        start: 96,
        sends: &[&[2], &[9]],
        batch: 1,
        nowait: false,
        prefill: 0,
        consumers: 2,
        max_items: 1,
        bound: 0,
        yield_at_taken: false,
        bound_items: 0,
    }
    .run();
}

/// Two producers with two messages each, one consumer, a 32-byte ring that holds two 16-byte
/// records: producers race for claims, wait for consumed records to be released (by the
/// consumer, or by themselves while waiting) and reuse the zeroed space on the next lap. Then
/// the same with 16- and 24-byte records, which adds PADDING at every other wrap (a bigger
/// search: without preemptions).
#[test]
fn loom_producers_race_and_reuse() {
    let same_spans = Model {
        name: "producers_race_and_reuse",
        cap: 32,
        start: 0,
        sends: &[&[2, 7], &[8, 3]],
        batch: 1,
        nowait: false,
        prefill: 0,
        consumers: 1,
        max_items: 1,
        bound: 1,
        yield_at_taken: false,
        bound_items: 0,
    };
    same_spans.run();
    Model {
        name: "producers_reuse_with_padding",
        sends: &[&[2, 9], &[12, 3]],
        bound: 0,
        ..same_spans
    }
    .run();
}

/// Two consumers race for four messages put before they start, across the end of the lap
/// (PADDING, wrap), taking, marking CONSUMED and releasing (the release lock, zeroing).
#[test]
fn loom_consumers_race() {
    Model {
        name: "consumers_race",
        cap: 128,
        start: 96,
        sends: &[&[2, 9], &[12, 3]],
        batch: 1,
        nowait: false,
        prefill: usize::MAX,
        consumers: 2,
        max_items: 1,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
    }
    .run();
}

/// One producer puts three messages with batched `try_put` calls, one consumer takes up to
/// two per `try_get`: from the start of the ring, and from mid-lap, where only a prefix of the
/// batch fits before the end (then PADDING, a wrap, and a wait for space).
#[test]
fn loom_batch() {
    let at_start = Model {
        name: "batch",
        cap: 64,
        start: 0,
        sends: &[&[5, 10, 2]],
        batch: 3,
        nowait: false,
        prefill: 0,
        consumers: 1,
        max_items: 2,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
    };
    at_start.run();
    Model {
        name: "batch_across_end",
        start: 32,
        ..at_start
    }
    .run();
}

/// Two producers each try once (`put_nowait`) to put a message that fills the whole ring, with
/// a consumer taking: one of them may find no space and give up, and must leave no claim
/// intent behind (a stale intent of a live handle would block recovery of that range).
#[test]
fn loom_put_nowait() {
    Model {
        name: "put_nowait",
        cap: 32,
        start: 0,
        sends: &[&[17], &[18]],
        batch: 1,
        nowait: true,
        prefill: 0,
        consumers: 1,
        max_items: 1,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
    }
    .run();
}

/// A consumer takes a PADDING record and the message after it in one step, and a producer
/// reuses the padding's place as soon as it is freed: the padding is free once the head is
/// past it, so the consumer must not read its header again (found by the soak: it read the
/// new lap's bytes there, walked past its message and returned nothing). The first message
/// (and the padding before it, at the end of the lap) is put before the threads start, and the
/// consumer yields right after taking: without that yield loom's bounded search never ran the
/// producer inside this window, and the model passed on the broken code.
#[test]
fn loom_padding_reused_while_taken() {
    Model {
        name: "padding_reused_while_taken",
        cap: 32,
        start: 24,
        sends: &[&[8, 8]],
        batch: 1,
        nowait: false,
        prefill: 1,
        consumers: 1,
        max_items: 1,
        bound: 2,
        yield_at_taken: true,
        bound_items: 0,
    }
    .run();
}
