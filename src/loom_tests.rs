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
//! queue.rs does, minus the sleeping: a producer tries `try_put` (or `loan`), then `release`
//! and tries again; a consumer tries `try_get` (a viewer `try_pin`); between tries they
//! `yield_now`. Loans are written in place with `write_loan` and committed or aborted with
//! `end_loan`; views are read in place with `read_pinned` and released with `unpin`. In the
//! ring's models nobody crashes, so every slot counts as alive (crash recovery is covered by
//! tests/faults.rs); the `loom_recovery_*` models run `recover` beside live loans and views,
//! where it must do nothing. The lease models (lease.rs, acknowledged gets: after the ring's)
//! add acked gets, acks, the visibility timeout (on the model's clock, `wait::monotonic_ns`)
//! and a consumer that dies mid-take: its thread unwinds at a step (`fault::die_at`) and its
//! slot is marked dead (`Shm::alive`, read by `Ring::held_by_other`). Each model checks that every message is delivered exactly once and intact (an
//! aborted loan never), that one consumer sees each producer's messages in order, that
//! producers write only payload words released since they were last written (in
//! `write_payload`, through the model's record of written words, `Shm::used`: the real ring
//! does not zero freed bytes, so their contents cannot tell), that a view's bytes do not change
//! while it is pinned, and at the end that head == tail == released, no word is left in use,
//! every intent (claim, read, loan, pin) is empty, the release lock is free and the counters
//! agree. Every model's ring starts full of stale words that read as COMMITTED headers
//! (`STALE`), as a ring after earlier laps is: a reader that took one for a record would
//! deliver a message nobody put.
//!
//! Each model has a preemption bound that keeps it to about a minute or less
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
use crate::lease;
use crate::ring::{Cache, Me, Msg, Ring};

/// The models' tag key (layout::tag); a segment's is random.
const TAG_KEY: u64 = 0x5A6E_9E3C_0011_D00D;
/// What every ring word holds when a model starts: a state word of a COMMITTED 8-byte record,
/// as an earlier lap could have left anywhere (in a header or a payload). It is no position's
/// tag (`loom_stale_is_no_tag`), so no reader may take it for a header.
const STALE: u64 = (8 << 32) | COMMITTED as u64;

/// `STALE` is not the tag of any position the models reach (far fewer than 2^23 bytes).
#[test]
fn loom_stale_is_no_tag() {
    assert!((0..1u64 << 20).all(|p| tag(TAG_KEY, 16 * p) != STALE));
}

/// One slot per thread (main included).
const SLOTS: usize = 5;
/// Tries before a thread reports a livelock: far more than these models need (after a
/// `yield_now`, loom runs the other threads first).
const TRIES: usize = 1000;
/// Idle tries after which a copying consumer beside a viewer stops (see `Model::once`).
const PATIENCE: usize = 4;

/// The shared memory of one queue: what a segment file holds.
struct Shm {
    hdr: Header,
    slots: Vec<Slot>,
    data: Vec<AtomicU64>,
    /// Per ring word, whether a producer wrote it since its record was last released
    /// (`Ring::for_model`).
    used: Vec<AtomicU64>,
    /// The model's own counts (not the queue's), so consumers know when to stop: messages
    /// put, producers finished, messages taken.
    put: AtomicU64,
    producers_done: AtomicU64,
    taken: AtomicU64,
    /// Where the last aborted loan was (NONE: none), to check its place was reused.
    aborted_at: AtomicU64,
    /// Consumers yield right after taking records (`Ring::for_model`).
    yield_at_taken: bool,
    /// Claims from this offset in a lap may start the next lap early (`Ring::for_model`).
    early_wrap: u64,
    /// The lease table (lease.rs; empty in the ring's models) and each lease's payload, as
    /// words (`LEASE_WORDS`).
    leases: Vec<Lease>,
    payloads: Vec<Vec<AtomicU64>>,
    /// Per slot, 1 while its handle is alive, 0 once it died (`Death`); empty when nobody
    /// dies (every slot is alive, with no loom step to check it).
    alive: Vec<AtomicU32>,
    /// Copies into leases made (`fill_lease`; the model's own count, not a loom atomic).
    copies: StdCounter,
}

fn a64(v: u64) -> AtomicU64 {
    AtomicU64::new(v)
}

fn a32(v: u32) -> AtomicU32 {
    AtomicU32::new(v)
}

impl Shm {
    /// A new queue of `cap` bytes as segment.rs initialises it (the identity and the slots'
    /// empty intents; the ring holds `STALE` words, as after earlier laps) with every slot
    /// attached (generation 1, as attach.rs does),
    /// whose cursors are all at `start`: the state any queue is in after `start` bytes of
    /// traffic, all consumed and released.
    fn new(cap: u64, start: u64, yield_at_taken: bool, max_items: u64) -> Arc<Shm> {
        Shm::build(cap, start, yield_at_taken, max_items, 0, 0, false)
    }

    /// A queue as `new` makes it, with `leases` leases and the ack policy's visibility
    /// timeout `visibility_ns` (no max_deliveries), whose slots can die when `mortal`.
    fn with_leases(cap: u64, leases: usize, visibility_ns: u64, mortal: bool) -> Arc<Shm> {
        Shm::build(cap, 0, false, 0, leases, visibility_ns, mortal)
    }

    fn build(
        cap: u64,
        start: u64,
        yield_at_taken: bool,
        max_items: u64,
        leases: usize,
        visibility_ns: u64,
        mortal: bool,
    ) -> Arc<Shm> {
        assert!(start % 16 == 0);
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
                tag_key: TAG_KEY,
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
            leases: LeaseLine {
                ready: a64(0),
                redelivered: a64(0),
                dead_lettered: a64(0),
                dropped: a64(0),
                max_deliveries: a64(0),
                visibility_ns: a64(visibility_ns),
                returned: a64(0),
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
        // Not zero: what earlier laps left (`STALE`), which no reader may take for a header.
        let data = (0..cap / 8).map(|_| a64(STALE)).collect();
        let used = (0..cap / 8).map(|_| a64(0)).collect();
        Arc::new(Shm {
            hdr,
            slots,
            data,
            used,
            put: a64(0),
            producers_done: a64(0),
            taken: a64(0),
            aborted_at: a64(NONE),
            yield_at_taken,
            early_wrap: NONE,
            // All zero, as segment.rs creates them: FREE, generation 0.
            leases: (0..leases)
                .map(|_| Lease {
                    state: a64(0),
                    pos: a64(0),
                    len: a64(0),
                    deliveries: a64(0),
                    deadline: a64(0),
                    reserved: a64(0),
                })
                .collect(),
            payloads: (0..leases)
                .map(|_| (0..LEASE_WORDS).map(|_| a64(0)).collect())
                .collect(),
            alive: (0..if mortal { SLOTS } else { 0 })
                .map(|_| a32(1))
                .collect(),
            copies: StdCounter::new(0),
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
                let (pn, pe) = (r(&s.pin_start), r(&s.pin_end));
                let loan = r(&s.loan_start);
                format!("claim {c}..{ce} read {rd}..{re} loan {loan} pin {pn}..{pe}")
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
        Ring::for_model(
            &self.hdr,
            &self.slots,
            &self.data,
            &self.leases,
            &self.alive,
            &self.used,
            me,
            self.yield_at_taken,
            self.early_wrap,
        )
    }
}

/// Message `seq` of producer `p`, `len` bytes (at least 2), none of them zero, so a payload
/// read before it was written (a stale or zero word) never matches.
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

/// How a producer puts one message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    /// `try_put` (with the other `Put`s next to it, at most `batch` per call).
    Put,
    /// A loan, as `SageQueue::loan` + `commit_loan`: `Ring::loan`, the payload written in
    /// place (`write_loan`), `end_loan` with commit.
    Loan,
    /// A loan given up (`abort_loan`) after its payload was written: `end_loan` without
    /// commit. The message must never be delivered and its space must be freed.
    Abort,
}

/// Put `msgs` in order, each the `Way` given (all `Put` when `ways` is empty), at most `batch`
/// `Put`s per `try_put`, waiting as `SageQueue::put_msgs` (and `SageQueue::loan`) does; with
/// `nowait`, one attempt per call and a stop at the first that fails, as a put with timeout 0
/// (`put_nowait`) returning Full. Returns how many were put (aborted loans included).
fn produce(
    shm: &Shm,
    slot: usize,
    msgs: &[Vec<u8>],
    ways: &[Way],
    batch: usize,
    nowait: bool,
) -> usize {
    let ring = shm.ring(slot);
    let way = |i: usize| ways.get(i).copied().unwrap_or(Way::Put);
    let mut cache = Cache::default();
    let mut done = 0;
    for _ in 0..TRIES {
        if done == msgs.len() {
            break;
        }
        let n = if way(done) == Way::Put {
            // Head and body as two parts, as `put_pair` hands them over.
            let parts: Vec<Msg> = (done..msgs.len())
                .take(batch)
                .take_while(|&i| way(i) == Way::Put)
                .map(|i| Msg(&msgs[i][..1], &msgs[i][1..]))
                .collect();
            let mut n = ring.try_put(&mut cache, &parts);
            if n == 0 {
                ring.release();
                n = ring.try_put(&mut cache, &parts);
            }
            shm.put.fetch_add(n as u64, SeqCst);
            n
        } else {
            let m = &msgs[done];
            let len = m.len() as u64;
            let mut pos = ring.loan(&mut cache, len);
            if pos.is_none() {
                ring.release();
                pos = ring.loan(&mut cache, len);
            }
            match pos {
                Some(pos) => {
                    let commit = way(done) == Way::Loan;
                    ring.write_loan(pos, m);
                    ring.end_loan(pos, len, commit);
                    if commit {
                        shm.put.fetch_add(1, SeqCst);
                    } else {
                        shm.aborted_at.store(pos, SeqCst);
                    }
                    1
                }
                None => 0,
            }
        };
        done += n;
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
/// message put was taken by someone, or after `patience` tries in a row that took nothing (a
/// `get` whose timeout ends); returns the ones this consumer took, in order.
fn consume(
    shm: &Shm,
    slot: usize,
    producers: u64,
    max_items: usize,
    patience: usize,
) -> Vec<Vec<u8>> {
    let ring = shm.ring(slot);
    let mut cache = Cache::default();
    let mut got = Vec::new();
    let mut idle = 0;
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
            idle = 0;
            continue;
        }
        if shm.producers_done.load(SeqCst) == producers
            && shm.taken.load(SeqCst) == shm.put.load(SeqCst)
        {
            return got;
        }
        idle += 1;
        if idle >= patience {
            return got;
        }
        thread::yield_now();
    }
    panic!(
        "consumer {slot}: nothing to take after {TRIES} tries; {}",
        shm.state()
    );
}

/// The range a slot's pin intent must cover for `pins` (in position order), as queue.rs
/// computes it.
fn pin_range(pins: &[(u64, u64)]) -> (u64, u64) {
    match (pins.first(), pins.last()) {
        (Some(&(first, _)), Some(&(last, len))) => (first, last + span(len)),
        _ => (NONE, 0),
    }
}

/// A consumer of views, as `SageQueue::pin`/`unpin` are used: it pins the next message
/// (`try_pin`, whose callback records the pin and sets the pin intent as queue.rs does) and
/// reads its payload in place (`read_pinned`). It holds up to two views: with two, or when
/// nothing more can be pinned now, it releases them newest first (the reverse of pin order),
/// reading each payload again just before `unpin` (the bytes of a pinned record must not
/// change while it is pinned). Stops as `consume` does; returns the messages in pin order.
fn view(shm: &Shm, slot: usize, producers: u64) -> Vec<Vec<u8>> {
    let ring = shm.ring(slot);
    let mut cache = Cache::default();
    let mut got = Vec::new();
    // This handle's pins (position, length) in position order, and their payloads as read
    // when pinned.
    let mut pins: Vec<(u64, u64)> = Vec::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for _ in 0..TRIES {
        let pinned = ring
            .try_pin(&mut cache, &mut |r, q, n| {
                pins.push((q, n));
                r.set_pins(pin_range(&pins));
            })
            .expect("try_pin");
        if let Some((pos, len)) = pinned {
            assert_eq!(pins.last(), Some(&(pos, len)), "on_pin not called");
            let mut m = Vec::new();
            ring.read_pinned(pos, len, &mut m);
            got.push(m.clone());
            seen.push(m);
            shm.taken.fetch_add(1, SeqCst);
            if pins.len() < 2 {
                continue;
            }
        } else if pins.is_empty() {
            if shm.producers_done.load(SeqCst) == producers
                && shm.taken.load(SeqCst) == shm.put.load(SeqCst)
            {
                return got;
            }
            thread::yield_now();
            continue;
        }
        while let Some((pos, len)) = pins.pop() {
            let mut again = Vec::new();
            ring.read_pinned(pos, len, &mut again);
            let first = seen.pop().unwrap();
            assert_eq!(
                again,
                first,
                "pinned record at {pos} changed while pinned; {}",
                shm.state()
            );
            ring.unpin(pos, len, pin_range(&pins));
        }
    }
    panic!(
        "viewer {slot}: nothing to pin after {TRIES} tries; {}",
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
    /// How each producer puts each of its messages (`ways[p][s]`; missing: `Way::Put`).
    ways: &'static [&'static [Way]],
    /// The first `viewers` consumers pin views (`view`) instead of taking copies.
    viewers: usize,
    /// Claims from this offset in a lap may start the next lap early (NONE: never).
    early_wrap: u64,
}

impl Model {
    fn run(self) {
        explore(self.name, self.bound, move || self.once());
    }

    fn once(&self) {
        let mut shm = Shm::new(self.cap, self.start, self.yield_at_taken, self.bound_items);
        Arc::get_mut(&mut shm).expect("not shared yet").early_wrap = self.early_wrap;
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
        let ways = |p: usize| -> &'static [Way] { self.ways.get(p).copied().unwrap_or(&[]) };
        for (p, msgs) in sent.iter().enumerate() {
            let first = self.prefill.min(msgs.len());
            let early = produce(&shm, p, &msgs[..first], ways(p), self.batch, self.nowait);
            if first == msgs.len() || early < first {
                shm.producers_done.fetch_add(1, SeqCst);
                put.push(early);
                continue;
            }
            let (shm, rest, batch, nowait) =
                (shm.clone(), msgs[first..].to_vec(), self.batch, self.nowait);
            let rest_ways = ways(p).get(first..).unwrap_or(&[]);
            producers.push(thread::spawn(move || {
                let n = produce(&shm, p, &rest, rest_ways, batch, nowait);
                shm.producers_done.fetch_add(1, SeqCst);
                early + n
            }));
        }
        let mut consumers = Vec::new();
        for c in 0..self.consumers {
            let (shm, slot, max_items) = (shm.clone(), self.sends.len() + c, self.max_items);
            let viewer = c < self.viewers;
            // Beside a viewer, a copying consumer gives up after a few idle tries (the viewer
            // waits for the rest). Two consumers that both wait for everything let loom run
            // schedules in which they take turns at yielding forever while the producer never
            // runs again (a switch at a yield costs no preemption), which end in TRIES.
            let patience = if self.viewers > 0 {
                PATIENCE
            } else {
                usize::MAX
            };
            consumers.push(thread::spawn(move || {
                if viewer {
                    view(&shm, slot, n_producers)
                } else {
                    consume(&shm, slot, n_producers, max_items, patience)
                }
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
        // Aborted loans are never delivered.
        let delivered = |p: usize, s: usize| s < put[p] && ways(p).get(s) != Some(&Way::Abort);
        for (p, msgs) in sent.iter().enumerate() {
            for (s, &n) in seen[p].iter().enumerate().take(msgs.len()) {
                let want = usize::from(delivered(p, s));
                assert_eq!(n, want, "message {s} of producer {p} delivered {n} times");
            }
        }
        let all = || {
            (sent.iter().enumerate())
                .flat_map(|(p, msgs)| (0..msgs.len()).map(move |s| (p, s)))
                .filter(|&(p, s)| delivered(p, s))
        };
        let total = all().count();
        let total_bytes: usize = all().map(|(p, s)| sent[p][s].len()).sum();

        check_end(&shm, total, total_bytes);
    }
}

/// Run `once` under loom with `bound` preemptions (unless `LOOM_MAX_PREEMPTIONS` sets
/// another) and print how many executions it explored.
fn explore(name: &str, bound: usize, once: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    // Spinning threads take many steps; the default (1000) is too low.
    builder.max_branches = builder.max_branches.max(100_000);
    let runs = std::sync::Arc::new(StdCounter::new(0));
    let counter = runs.clone();
    let t0 = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        once();
    });
    println!(
        "loom model {}: {} executions in {:.1?} (preemption bound {:?})",
        name,
        runs.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed(),
        builder.preemption_bound
    );
}

/// The end state once every thread is done and `total` messages of `total_bytes` were put
/// and delivered: after a last release, head == tail == released, no ring word in use, every
/// intent (claim, read, loan, pin) empty, the release lock free, an aborted loan's place
/// reused, and the counters agree (nothing recovered or lost: every slot is alive).
fn check_end(shm: &Shm, total: usize, total_bytes: usize) {
    // After a last release, everything is free again.
    shm.ring(SLOTS - 1).release();
    let h = &shm.hdr;
    let tail = h.prod.tail.load(SeqCst);
    assert_eq!(h.cons.head.load(SeqCst), tail, "head != tail");
    assert_eq!(h.rel.released.load(SeqCst), tail, "released != tail");
    assert_eq!(h.rel.lock.load(SeqCst), 0, "release lock still held");
    for (i, w) in shm.used.iter().enumerate() {
        assert_eq!(
            w.load(SeqCst),
            0,
            "ring word {i} still in use after release"
        );
    }
    // A dead handle's intents stay (recovery ignores them).
    let alive = |i: usize| shm.alive.get(i).is_none_or(|a| a.load(SeqCst) != 0);
    for (i, s) in shm.slots.iter().enumerate().filter(|&(i, _)| alive(i)) {
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
        assert_eq!(
            s.loan_start.load(SeqCst),
            NONE,
            "slot {i}: loan intent left"
        );
        assert_eq!(s.pin_start.load(SeqCst), NONE, "slot {i}: pin intent left");
    }
    // An aborted loan's place was freed (above) and claimed again on the next lap.
    let aborted = shm.aborted_at.load(SeqCst);
    if aborted != NONE {
        let reused = aborted + 8 * shm.data.len() as u64 + 8;
        assert!(
            tail >= reused,
            "aborted loan at {aborted} not reused: tail {tail}"
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

// Payload lengths 2..=16 take 32 bytes in the ring, 17..=32 take 48. Preemption bounds are what
// each model finishes with in about a minute or less in release mode (see the README).

/// Two producers and two consumers, one message each, all at once. The cursors start 64
/// bytes before the end of a 256-byte ring, so the 48-byte record may not fit the lap's end
/// (PADDING, then a wrap). Four threads make loom's search grow fast: this model runs without
/// preemptions (interleavings at yields and at thread ends, and every value weak memory
/// ordering lets a load see); the two models after it cover each side's races with more.
#[test]
fn loom_mpmc() {
    Model {
        name: "mpmc",
        cap: 256,
        start: 192,
        sends: &[&[2], &[17]],
        batch: 1,
        nowait: false,
        prefill: 0,
        consumers: 2,
        max_items: 1,
        bound: 0,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[],
        viewers: 0,
        early_wrap: NONE,
    }
    .run();
}

/// The producers' race of the models below: two producers with two messages each, one
/// consumer taking one at a time, from the start of a 64-byte ring.
const PRODUCERS_RACE: Model = Model {
    name: "producers_race_and_reuse",
    cap: 64,
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
    ways: &[],
    viewers: 0,
    early_wrap: NONE,
};

/// Two producers with two messages each, one consumer, a 64-byte ring that holds two 32-byte
/// records: producers race for claims, wait for consumed records to be released (by the
/// consumer, or by themselves while waiting) and reuse the freed space on the next lap. Then
/// the same with 32- and 48-byte records, which adds PADDING at every other wrap (a bigger
/// search: without preemptions).
#[test]
fn loom_producers_race_and_reuse() {
    PRODUCERS_RACE.run();
    Model {
        name: "producers_reuse_with_padding",
        sends: &[&[2, 17], &[20, 3]],
        bound: 0,
        ..PRODUCERS_RACE
    }
    .run();
}

/// Laps started early (`Ring::wrap_early`): two producers with two messages each and one
/// consumer in a 128-byte ring whose claims from offset 32 on pad to the end of the lap once
/// the space behind them is released. Producers race for claims and early paddings; a padding
/// is freed with nothing written to its payload's words, which were never written either
/// (`write_payload` checks that claimed words are free, `check_end` that none is left in use).
#[test]
fn loom_early_wrap() {
    Model {
        name: "early_wrap",
        cap: 128,
        early_wrap: 32,
        ..PRODUCERS_RACE
    }
    .run();
}

/// Two consumers race for four messages put before they start, across the end of the lap
/// (PADDING, wrap), taking, marking CONSUMED and releasing (the release lock).
#[test]
fn loom_consumers_race() {
    Model {
        name: "consumers_race",
        cap: 256,
        start: 192,
        sends: &[&[2, 17], &[20, 3]],
        batch: 1,
        nowait: false,
        prefill: usize::MAX,
        consumers: 2,
        max_items: 1,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[],
        viewers: 0,
        early_wrap: NONE,
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
        cap: 128,
        start: 0,
        sends: &[&[5, 18, 2]],
        batch: 3,
        nowait: false,
        prefill: 0,
        consumers: 1,
        max_items: 2,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[],
        viewers: 0,
        early_wrap: NONE,
    };
    at_start.run();
    Model {
        name: "batch_across_end",
        start: 64,
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
        sends: &[&[9], &[10]],
        batch: 1,
        nowait: true,
        prefill: 0,
        consumers: 1,
        max_items: 1,
        bound: 2,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[],
        viewers: 0,
        early_wrap: NONE,
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
        cap: 64,
        start: 48,
        sends: &[&[8, 8]],
        batch: 1,
        nowait: false,
        prefill: 1,
        consumers: 1,
        max_items: 1,
        bound: 2,
        yield_at_taken: true,
        bound_items: 0,
        ways: &[],
        viewers: 0,
        early_wrap: NONE,
    }
    .run();
}

/// Loans: producer 0 puts both its messages through loans (`Ring::loan`, the payload written
/// in place with `write_loan`, `end_loan` committing it) while producer 1 puts normally and a
/// consumer takes, in a 64-byte ring (two 32-byte records) starting 32 bytes before its end:
/// claims race, the consumer waits at an open loan's WRITING record (messages claimed after
/// it are taken after it), and the loaned records' space is released and reused across the
/// wrap. Three threads: one preemption (92,186 executions, about 11 s). Then one producer
/// alone with the consumer, a loan, a normal put and a loan again, with three (342,859
/// executions, about 33 s).
#[test]
fn loom_loan() {
    let two_producers = Model {
        name: "loan",
        cap: 64,
        start: 32,
        sends: &[&[2, 7], &[8]],
        batch: 1,
        nowait: false,
        prefill: 0,
        consumers: 1,
        max_items: 1,
        bound: 1,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[&[Way::Loan, Way::Loan]],
        viewers: 0,
        early_wrap: NONE,
    };
    two_producers.run();
    Model {
        name: "loan_put_loan",
        sends: &[&[2, 7, 3]],
        ways: &[&[Way::Loan, Way::Put, Way::Loan]],
        bound: 3,
        ..two_producers
    }
    .run();
}

/// An aborted loan among normal puts: producer 0 loans a message, writes it and gives it up
/// (`end_loan` without commit: DEAD), then puts two messages normally, while producer 1 puts
/// one and a consumer takes, in a 64-byte ring starting 32 bytes before its end. The aborted
/// message is never delivered, the consumer (or a producer's `release`) skips its DEAD record,
/// the releaser frees its written payload, and its place is claimed again on the next lap
/// (`check_end`: the tail got a lap past it; `write_payload`: the words claimed there were
/// free). Three threads: without preemptions (19,006 executions, 2 s; one preemption did not
/// finish in 10 minutes). Then one producer alone with the consumer, a put, the aborted loan
/// and two puts, with two (230,726 executions, about 24 s).
#[test]
fn loom_loan_abort() {
    let two_producers = Model {
        name: "loan_abort",
        cap: 64,
        start: 32,
        sends: &[&[3, 2, 7], &[8]],
        batch: 1,
        nowait: false,
        prefill: 0,
        consumers: 1,
        max_items: 1,
        bound: 0,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[&[Way::Abort, Way::Put, Way::Put]],
        viewers: 0,
        early_wrap: NONE,
    };
    two_producers.run();
    Model {
        name: "loan_abort_one_producer",
        sends: &[&[2, 3, 7, 8]],
        ways: &[&[Way::Put, Way::Abort, Way::Put, Way::Put]],
        bound: 2,
        ..two_producers
    }
    .run();
}

/// Views: a producer puts three messages into a 64-byte ring (two 32-byte records) starting
/// 32 bytes before its end (the first put before the threads start), while consumer 0 pins
/// views (`view`: `try_pin`, the pin intent set by its callback, `read_pinned`, up to two
/// held, released newest first) and consumer 1 takes copies (giving up after a few idle
/// tries: `PATIENCE`). A pinned record stays COMMITTED below the head: the releaser must stop
/// at it, so the producer waits for space behind it and never writes over it
/// (`write_payload` checks that claimed words are free; the viewer reads its payload again
/// before `unpin`). Three threads that spin: without preemptions (5,457 executions, 1 s; one
/// preemption did not finish in 15 minutes); the two models after it cover each pair with
/// more.
#[test]
fn loom_views() {
    let all = Model {
        name: "views",
        cap: 64,
        start: 32,
        sends: &[&[2, 7, 3]],
        batch: 1,
        nowait: false,
        prefill: 1,
        consumers: 2,
        max_items: 1,
        bound: 0,
        yield_at_taken: false,
        bound_items: 0,
        ways: &[],
        viewers: 1,
        early_wrap: NONE,
    };
    all.run();
    // The producer and the viewer alone: the viewer holds both records of the ring at times,
    // and the producer waits behind them, then reuses their space after the wrap. Three
    // preemptions: 406,056 executions, about 40 s.
    Model {
        name: "views_producer_waits",
        consumers: 1,
        bound: 3,
        ..all
    }
    .run();
    // The viewer and the copying consumer race for four messages put before they start
    // (across the end of the lap), views pinned and released among records taken, consumed
    // and released by the other. Two preemptions: 207,083 executions, about 20 s.
    Model {
        name: "views_beside_copies",
        cap: 128,
        start: 96,
        sends: &[&[2, 7], &[8, 3]],
        prefill: usize::MAX,
        bound: 2,
        ..all
    }
    .run();
}

/// Recovery among live handles: a producer opens a loan, writes it and commits it while
/// another handle runs `recover` once, as a waiter in queue.rs does after 10 ms without
/// progress (a consumer waiting at an open loan does exactly that). Every slot is alive, so
/// recovery must change nothing: the loan's WRITING record is covered by the producer's claim
/// intent, then by its loan intent (`Ring::loan` sets the loan intent before it clears the
/// claim intent). Then the same with a second message put normally (`try_put`) by the same
/// handle while its loan is open (the API allows it): its claim intent replaces the first
/// one. Everything is then taken intact, in order.
///
/// This model found two bugs, both fixed in ring.rs: `live_intent` read a slot's loan intent
/// before its claim intent, the reverse of the order in which `loan` hands over from one to
/// the other, so a recoverer could see neither and turn the live loan DEAD (the head skipped
/// it, the releaser zeroed it, and the producer then committed into freed ring space); and
/// `claim` announced a claim intent with a Relaxed store, so a recoverer reading the put's
/// claim intent was not ordered after the loan intent stored before it (a weak-memory
/// failure). It passes with four preemptions: 5,456 and 50,646 executions, about 5 s.
#[test]
fn loom_recovery_spares_live_loan() {
    for put_while_open in [false, true] {
        let name = if put_while_open {
            "recovery_spares_live_loan_put_while_open"
        } else {
            "recovery_spares_live_loan"
        };
        explore(name, 4, move || {
            let shm = Shm::new(64, 32, false, 0);
            let loaned = message(0, 0, 7);
            let put = message(0, 1, 2);
            let mut sent = vec![loaned.clone()];
            if put_while_open {
                sent.push(put.clone());
            }
            let loaner = {
                let shm = shm.clone();
                thread::spawn(move || {
                    let ring = shm.ring(0);
                    let mut cache = Cache::default();
                    let len = loaned.len() as u64;
                    let pos = ring.loan(&mut cache, len).expect("room for the loan");
                    if put_while_open {
                        let n = ring.try_put(&mut cache, &[Msg(&put, &[])]);
                        assert_eq!(n, 1, "no room for the put");
                    }
                    ring.write_loan(pos, &loaned);
                    ring.end_loan(pos, len, true);
                })
            };
            let recoverer = {
                let shm = shm.clone();
                thread::spawn(move || {
                    let changed = shm.ring(1).recover();
                    assert!(!changed, "recovery acted on a live loan; {}", shm.state());
                })
            };
            loaner.join().unwrap();
            recoverer.join().unwrap();
            let ring = shm.ring(2);
            let mut cache = Cache::default();
            let mut got = Vec::new();
            for m in &sent {
                let mut out = Vec::new();
                let n = ring
                    .try_get(&mut cache, 1, u64::MAX, &mut out)
                    .expect("try_get");
                assert_eq!((n, &out), (1, m), "a message was lost or damaged");
                got.push(out);
            }
            check_end(&shm, sent.len(), sent.iter().map(Vec::len).sum());
        });
    }
}

/// Recovery among live views: two messages are put before the threads start; a viewer pins
/// both (`try_pin`, its callback setting the pin intent as queue.rs does) and releases them
/// newest first, while another handle runs `recover` once. The pinned records stay COMMITTED
/// below the head, covered first by the viewer's read intent, then by its pin intent (set
/// before the read intent is withdrawn, and narrowed only after a record is CONSUMED), so
/// recovery must not take them as a dead reader's (lost), and the viewer's bytes must not
/// change.
///
/// This model found a bug, fixed in ring.rs: `take` announced a read intent with a Relaxed
/// store (`read_start = h`), so a recoverer that read the viewer's read intent for its second
/// take (32, not covering the first view at 16) was not ordered after the viewer's `set_pins`
/// for the first view, and could still read pin_start NONE: it marked the live view CONSUMED
/// (lost) and freed it. x86 keeps stores in order, so this was a weak-memory failure (ARM,
/// POWER, or a compiler moving the Relaxed store up). It passes with three preemptions:
/// 53,681 executions, about 4 s.
#[test]
fn loom_recovery_spares_live_views() {
    explore("recovery_spares_live_views", 3, || {
        let shm = Shm::new(64, 32, false, 0);
        let sent = [message(0, 0, 2), message(0, 1, 7)];
        for m in &sent {
            assert_eq!(produce(&shm, 0, std::slice::from_ref(m), &[], 1, true), 1);
        }
        let viewer = {
            let shm = shm.clone();
            thread::spawn(move || {
                let ring = shm.ring(1);
                let mut cache = Cache::default();
                let mut pins: Vec<(u64, u64)> = Vec::new();
                let mut got = Vec::new();
                while pins.len() < 2 {
                    let pinned = ring
                        .try_pin(&mut cache, &mut |r, q, n| {
                            pins.push((q, n));
                            r.set_pins(pin_range(&pins));
                        })
                        .expect("try_pin");
                    let (pos, len) = pinned.expect("a committed message to pin");
                    let mut m = Vec::new();
                    ring.read_pinned(pos, len, &mut m);
                    got.push(m);
                }
                while let Some((pos, len)) = pins.pop() {
                    let mut again = Vec::new();
                    ring.read_pinned(pos, len, &mut again);
                    assert_eq!(again, got[pins.len()], "a pinned record changed");
                    ring.unpin(pos, len, pin_range(&pins));
                }
                got
            })
        };
        let recoverer = {
            let shm = shm.clone();
            thread::spawn(move || {
                let changed = shm.ring(2).recover();
                assert!(!changed, "recovery acted on a live view; {}", shm.state());
            })
        };
        let got = viewer.join().unwrap();
        recoverer.join().unwrap();
        assert_eq!(got, sent, "views damaged or out of order");
        check_end(&shm, 2, sent.iter().map(Vec::len).sum());
    });
}

// ---- leases (lease.rs): acknowledged gets ----
//
// The consumers below do what queue.rs does around the lease protocol, minus its locks and
// sleeping: `take_acked` is `SageQueue::take_acked` (without its periodic lease check), with
// `fill_lease`, `copy_lease` and `deliver`; `take_plain` is a plain get (READY leases first,
// then the ring); `settle_moving` puts back the MOVING leases a handle holds. Lease payloads
// are words written with Relaxed stores by the model's own copy (as fill_lease copies bytes),
// ordered by the lease's `pos` and `state` stores.

/// Words of a lease's payload in the models: messages of up to 24 bytes.
const LEASE_WORDS: usize = 3;

/// Where a dying acked consumer stops in `take_acked` (`loom_recovery_dead_acked_consumer`):
/// its thread unwinds there (`fault::die`, or its hook at a step: `fault::die_at`) and its
/// slot is marked dead, as a process killed at that point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// A lease claimed (TAKING), nothing copied.
    Claimed,
    /// The payload copied into the lease, its length and position not yet stored.
    MidCopy,
    /// The copy done, before the read intent and the head CAS (Step::LeaseCopied).
    Copied,
    /// After the head CAS, the lease still TAKING (Step::Taken).
    Taken,
    /// The lease HELD, its record not yet CONSUMED (Step::Leased).
    Leased,
    /// After the take (HELD, the record CONSUMED, no read intent), before delivering.
    Held,
}

impl Death {
    const ALL: [Death; 6] = [
        Death::Claimed,
        Death::MidCopy,
        Death::Copied,
        Death::Taken,
        Death::Leased,
        Death::Held,
    ];

    /// The fault hook this death is at, if any.
    fn step(self) -> Option<crate::fault::Step> {
        use crate::fault::Step;
        match self {
            Death::Copied => Some(Step::LeaseCopied),
            Death::Taken => Some(Step::Taken),
            Death::Leased => Some(Step::Leased),
            _ => None,
        }
    }

    /// Whether the dead consumer had won the head CAS (the message is its lease's).
    fn took(self) -> bool {
        matches!(self, Death::Taken | Death::Leased | Death::Held)
    }
}

/// Copy the record at `pos` (`len` bytes) into lease `i`, as `SageQueue::fill_lease`: the
/// payload, then the length, then the position (Release). Before the head CAS: the record
/// may be taken and its place rewritten meanwhile, and then the CAS fails.
fn fill_lease(
    shm: &Shm,
    ring: &Ring,
    i: usize,
    pos: u64,
    len: u64,
    death: Option<Death>,
) -> crate::error::Result<()> {
    assert!(
        len <= 8 * LEASE_WORDS as u64,
        "message too long for the model's leases"
    );
    let mut bytes = Vec::new();
    ring.read_pinned(pos, len, &mut bytes);
    for (w, chunk) in shm.payloads[i].iter().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Relaxed);
    }
    if death == Some(Death::MidCopy) {
        crate::fault::die();
    }
    let l = &ring.leases[i];
    l.len.store(len, Relaxed);
    l.pos.store(pos, Release);
    shm.copies.fetch_add(1, Relaxed);
    Ok(())
}

/// Lease `i`'s `len` payload bytes, as `SageQueue::copy_lease`.
fn copy_lease(shm: &Shm, i: usize, len: u64) -> Vec<u8> {
    let mut m: Vec<u8> = (shm.payloads[i].iter())
        .flat_map(|w| w.load(Relaxed).to_le_bytes())
        .collect();
    m.truncate(len as usize);
    m
}

/// Hand lease `i` (HELD by this handle) over with its receipt, as `SageQueue::deliver`: not
/// if it timed out meanwhile (and so may be someone else's now).
fn deliver(shm: &Shm, ring: &Ring, i: usize, len: u64) -> Option<(Vec<u8>, lease::Receipt)> {
    let before = lease::receipt_if_held(ring, i);
    let m = copy_lease(shm, i, len);
    match (before, lease::receipt_if_held(ring, i)) {
        (Some(a), Some(b)) if a == b => Some((m, a)),
        _ => None,
    }
}

/// One attempt of an acked get of one message, as `SageQueue::take_acked`: a READY lease
/// first, else a FREE lease claimed and the ring's next message taken into it. `death`: die
/// at that point (the caller catches it with `mortal`).
fn take_acked(
    shm: &Shm,
    ring: &Ring,
    cache: &mut Cache,
    death: Option<Death>,
) -> Option<(Vec<u8>, lease::Receipt)> {
    let vis = shm.hdr.leases.visibility_ns.load(Relaxed);
    if let Some((i, len)) = lease::take_ready(ring, true, u64::MAX, vis) {
        return deliver(shm, ring, i, len);
    }
    let mut claimed = Vec::new();
    lease::claim(ring, 1, &mut claimed);
    if claimed.is_empty() {
        return None;
    }
    if death == Some(Death::Claimed) {
        crate::fault::die();
    }
    let n = ring
        .try_take_leased(
            cache,
            claimed.len(),
            u64::MAX,
            &mut |ring, j, pos, len| fill_lease(shm, ring, claimed[j], pos, len, death),
            &mut |n| lease::hold(ring, &claimed, n, vis),
        )
        .expect("try_take_leased");
    lease::unclaim(ring, &claimed[n..]);
    if n == 0 {
        return None;
    }
    if death == Some(Death::Held) {
        crate::fault::die();
    }
    let i = claimed[0];
    deliver(shm, ring, i, ring.leases[i].len.load(Relaxed))
}

/// One attempt of a plain get of one message, as `SageQueue::take`: a READY lease first
/// (copied out and freed), else the ring's next message. With whether it came from a lease.
fn take_plain(shm: &Shm, ring: &Ring, cache: &mut Cache) -> Option<(Vec<u8>, bool)> {
    if let Some((i, len)) = lease::take_ready(ring, false, u64::MAX, 0) {
        let m = copy_lease(shm, i, len);
        lease::finish_plain(ring, i);
        return Some((m, true));
    }
    let mut out = Vec::new();
    let n = ring.try_get(cache, 1, u64::MAX, &mut out).expect("try_get");
    (n == 1).then_some((out, false))
}

/// Put back the MOVING leases this handle holds, as `SageQueue::settle_moving` (the models
/// set no max_deliveries, so none expires).
fn settle_moving(ring: &Ring) {
    for i in lease::moving_mine(ring) {
        assert!(matches!(lease::settle(ring, i), lease::Settle::Ready));
    }
}

/// Run `f` in a thread that may die (`Death`): None if it died, after marking its slot dead
/// (SeqCst, read by `Ring::held_by_other`), as the kernel drops a killed process's slot lock.
fn mortal<T>(shm: &Shm, slot: usize, death: Option<Death>, f: impl FnOnce() -> T) -> Option<T> {
    crate::fault::die_at(death.and_then(Death::step));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(e) if e.is::<crate::fault::Died>() => {
            shm.alive[slot].store(0, SeqCst);
            None
        }
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Every lease FREE and none counted READY.
fn check_leases_free(shm: &Shm) {
    for (i, l) in shm.leases.iter().enumerate() {
        let w = l.state.load(SeqCst);
        assert_eq!(lease::kind(w), lease::FREE, "lease {i} not FREE: {w:#x}");
    }
    assert_eq!(shm.hdr.leases.ready.load(SeqCst), 0, "READY count left");
}

/// Acked gets among plain ones: the producer (the main thread) puts `sent`, then two acked
/// consumers (`take_acked`, each acknowledging what it got at once) and a plain one
/// (`take_plain`) race for them, the acked ones claiming FREE leases, copying into them
/// before the head CAS (a lost CAS copies again), making them HELD and marking the records
/// CONSUMED. Each gives up after `PATIENCE` idle tries (three consumers that all wait for
/// everything let loom run schedules in which two take turns at yielding forever), and the
/// main thread takes what is left. Every message is delivered exactly once and intact, each
/// acked one through a lease HELD by the consumer that got it (`deliver` checks the holder
/// before and after the copy; the ack of its receipt must succeed), nothing is delivered
/// again, and at the end every lease is FREE and the ring as `check_end` wants it. The model
/// also counts the executions in which an acked get took a message, and those in which one
/// lost a head CAS after its copy, and wants both. Three threads: one preemption (20,281
/// executions, about 2 s); then the two acked consumers alone, with three (74,660
/// executions, about 7 s).
#[test]
fn loom_acked_consumers_race() {
    acked_race("acked_consumers_race", &[true, true, false], 1);
    acked_race("acked_consumers_pair", &[true, true], 3);
}

/// `loom_acked_consumers_race` with a consumer per entry of `acked` (true: acked gets, false:
/// plain ones) in slots 1.., and loom's preemption `bound`.
fn acked_race(name: &'static str, acked: &'static [bool], bound: usize) {
    let leased = std::sync::Arc::new(StdCounter::new(0));
    let lost_cas = std::sync::Arc::new(StdCounter::new(0));
    let (l, c) = (leased.clone(), lost_cas.clone());
    explore(name, bound, move || {
        let shm = Shm::with_leases(128, 2, 0, false);
        let sent = [message(0, 0, 2), message(0, 1, 17)];
        for m in &sent {
            assert_eq!(produce(&shm, 0, std::slice::from_ref(m), &[], 1, true), 1);
        }
        let total = sent.len() as u64;
        let consumers: Vec<_> = (1..=acked.len())
            .map(|slot| {
                let shm = shm.clone();
                thread::spawn(move || {
                    let ring = shm.ring(slot);
                    let mut cache = Cache::default();
                    let mut got = Vec::new();
                    let mut idle = 0;
                    while idle < PATIENCE && shm.taken.load(SeqCst) < total {
                        let m = if acked[slot - 1] {
                            take_acked(&shm, &ring, &mut cache, None).map(|(m, r)| {
                                assert_eq!(r.deliveries, 1, "a message delivered again");
                                lease::finish(&ring, r.pack(), false).expect("ack");
                                m
                            })
                        } else {
                            take_plain(&shm, &ring, &mut cache).map(|(m, again)| {
                                assert!(!again, "a message delivered again");
                                m
                            })
                        };
                        match m {
                            Some(m) => {
                                got.push((m, acked[slot - 1]));
                                shm.taken.fetch_add(1, SeqCst);
                                idle = 0;
                            }
                            None => {
                                idle += 1;
                                thread::yield_now();
                            }
                        }
                    }
                    got
                })
            })
            .collect();
        let mut got: Vec<(Vec<u8>, bool)> = consumers
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let ring = shm.ring(4);
        let mut cache = Cache::default();
        while let Some((m, again)) = take_plain(&shm, &ring, &mut cache) {
            assert!(!again, "a message delivered again");
            got.push((m, false));
        }
        let acked = got.iter().filter(|&&(_, acked)| acked).count();
        if acked > 0 {
            l.fetch_add(1, Relaxed);
        }
        // More copies into leases than messages taken into them: a head CAS was lost.
        if shm.copies.load(Relaxed) > acked {
            c.fetch_add(1, Relaxed);
        }
        let mut got: Vec<Vec<u8>> = got.into_iter().map(|(m, _)| m).collect();
        got.sort();
        let mut want = sent.to_vec();
        want.sort();
        assert_eq!(
            got, want,
            "not every message delivered exactly once, intact"
        );
        assert_eq!(shm.hdr.leases.redelivered.load(SeqCst), 0);
        check_leases_free(&shm);
        check_end(&shm, sent.len(), sent.iter().map(Vec::len).sum());
    });
    let (leased, lost_cas) = (leased.load(Relaxed), lost_cas.load(Relaxed));
    println!(
        "  executions with a message taken into a lease: {leased}, with a lost CAS: {lost_cas}"
    );
    assert!(
        leased > 0 && lost_cas > 0,
        "a race the model is for never happened"
    );
}

/// An ack racing the visibility timeout: consumer A got a message by an acked get (before the
/// threads start; its lease HELD, deadline 1 ns later, so past at any later reading of the
/// model's clock: `wait::monotonic_ns`). Then A acks it, while a recoverer runs `recover`
/// (which turns the timed-out HELD lease MOVING with gen + 1) and puts the lease back
/// (`settle_moving`: READY), and consumer B tries acked gets (`take_acked`: READY -> HELD by
/// B) until A and the recoverer are done. Exactly one of the two happens: A's ack succeeds
/// (the lease FREE), or B gets the message again, intact, second delivery, gen + 1, and A's
/// ack is refused as stale. B acks what it got, which must succeed (a stale ack never frees
/// the newer delivery), and A's receipt stays refused after that. The model counts the
/// executions of each outcome and wants both. Two preemptions: 52,274 executions, about 5 s.
#[test]
fn loom_ack_races_timeout() {
    let outcomes = std::sync::Arc::new([StdCounter::new(0), StdCounter::new(0)]);
    let seen = outcomes.clone();
    explore("ack_races_timeout", 2, move || {
        let shm = Shm::with_leases(64, 2, 1, false);
        let sent = message(0, 0, 7);
        assert_eq!(
            produce(&shm, 0, std::slice::from_ref(&sent), &[], 1, true),
            1
        );
        let (m, first) = take_acked(&shm, &shm.ring(0), &mut Cache::default(), None)
            .expect("the message, by an acked get");
        assert_eq!(m, sent);
        let done = Arc::new(a64(0));
        let acker = {
            let shm = shm.clone();
            let done = done.clone();
            thread::spawn(move || {
                let res = lease::finish(&shm.ring(0), first.pack(), false);
                done.fetch_add(1, SeqCst);
                res
            })
        };
        let recoverer = {
            let (shm, done) = (shm.clone(), done.clone());
            thread::spawn(move || {
                let ring = shm.ring(1);
                ring.recover();
                settle_moving(&ring);
                done.fetch_add(1, SeqCst);
            })
        };
        let again = {
            let (shm, done) = (shm.clone(), done.clone());
            thread::spawn(move || {
                let ring = shm.ring(2);
                let mut cache = Cache::default();
                for _ in 0..TRIES {
                    let over = done.load(SeqCst) == 2;
                    if let Some((m, r)) = take_acked(&shm, &ring, &mut cache, None) {
                        lease::finish(&ring, r.pack(), false).expect("ack of the new delivery");
                        return Some((m, r));
                    }
                    if over {
                        return None;
                    }
                    thread::yield_now();
                }
                panic!("consumer B: stuck; {}", shm.state());
            })
        };
        let acked = acker.join().unwrap();
        recoverer.join().unwrap();
        let again = again.join().unwrap();
        match (&acked, &again) {
            (Ok(None), None) => {}
            (Err(crate::error::QueueError::StaleReceipt { .. }), Some((m, r))) => {
                assert_eq!(m, &sent, "delivered again damaged");
                assert_eq!(r.deliveries, 2);
                assert_eq!(r.gen, first.gen.wrapping_add(1));
            }
            _ => panic!(
                "ack {acked:?} and delivery again {again:?}; {}",
                shm.state()
            ),
        }
        let redelivered = shm.hdr.leases.redelivered.load(SeqCst);
        assert_eq!(redelivered, u64::from(again.is_some()));
        seen[usize::from(again.is_some())].fetch_add(1, Relaxed);
        assert!(
            lease::finish(&shm.ring(0), first.pack(), false).is_err(),
            "a used receipt acked again"
        );
        check_leases_free(&shm);
        check_end(&shm, 1, sent.len());
    });
    let [acked, again] = [0, 1].map(|i| outcomes[i].load(Relaxed));
    println!(
        "  executions where the ack won: {acked}, where the message was delivered again: {again}"
    );
    assert!(acked > 0 && again > 0, "one outcome never happened");
}

/// Recovery of a dead acked consumer: consumer D takes the one message by an acked get and
/// dies at each point of it in turn (`Death`: its slot is marked dead there, as a kill
/// leaves it), while another handle runs `recover` once and puts back the MOVING leases it
/// got (`settle_moving`). Then the main thread recovers until no lease needs it (as a
/// waiter's periodic lease check does) and takes everything with plain gets. The message is
/// there exactly once, intact: still in the ring if D died before its head CAS, else READY
/// in D's lease (delivered again from it); nothing is lost (`lost` stays 0).
///
/// This model found two bugs, both fixed, both at `Death::Taken` (D won the head CAS, its
/// lease still TAKING, its record COMMITTED below the head): the message was lost (CONSUMED
/// and counted in `lost`). In `lease::recover`, the recoverer read the lease's state
/// (TAKING) and its position (still NONE) while D was alive, then D copied, took the record
/// and died, and the recoverer, now seeing D dead, took the TAKING lease with no position for
/// one that took nothing and freed it; `recover_dead_reader` then found the record with no
/// live read intent and dropped it. The position is now read once the owner is known dead
/// (which orders everything the owner did before it). And in `Ring::recover`, lease recovery
/// saw D alive, D took the record and died, and `recover_dead_reader` in the same round
/// dropped the record that D's lease held; it now leaves a record that a dead holder's lease
/// holds to the next round's lease recovery (`lease::held_by_dead`). Each fix alone still
/// fails here. It passes with three preemptions: 91, 91, 91, 528, 2,391 and 24,674
/// executions, under 3 s in all.
#[test]
fn loom_recovery_dead_acked_consumer() {
    for death in Death::ALL {
        let name = format!("recovery_dead_acked_consumer_{death:?}");
        explore(&name, 3, move || {
            let shm = Shm::with_leases(64, 2, 0, true);
            let sent = message(0, 0, 7);
            assert_eq!(
                produce(&shm, 0, std::slice::from_ref(&sent), &[], 1, true),
                1
            );
            let dying = {
                let shm = shm.clone();
                thread::spawn(move || {
                    let ring = shm.ring(1);
                    let mut cache = Cache::default();
                    mortal(&shm, 1, Some(death), || {
                        take_acked(&shm, &ring, &mut cache, Some(death))
                    })
                })
            };
            let recoverer = {
                let shm = shm.clone();
                thread::spawn(move || {
                    let ring = shm.ring(2);
                    ring.recover();
                    settle_moving(&ring);
                })
            };
            assert!(
                dying.join().unwrap().is_none(),
                "D did not die at {death:?}"
            );
            recoverer.join().unwrap();
            // D claimed lease 0; from MidCopy on, it had copied the message into it.
            let copied = shm.payloads[0][0].load(SeqCst) != 0;
            assert_eq!(
                copied,
                death != Death::Claimed,
                "D died elsewhere than {death:?}"
            );
            let ring = shm.ring(3);
            for _ in 0..TRIES {
                if !lease::need_recovery(&ring) {
                    break;
                }
                ring.recover();
                settle_moving(&ring);
            }
            assert!(
                !lease::need_recovery(&ring),
                "recovery stuck; {}",
                shm.state()
            );
            let mut cache = Cache::default();
            let mut got = Vec::new();
            while let Some(m) = take_plain(&shm, &ring, &mut cache) {
                got.push(m);
            }
            let lost = shm.hdr.rel.lost.load(SeqCst);
            assert_eq!(
                got,
                [(sent.clone(), death.took())],
                "died at {death:?}: lost {lost}; {}",
                shm.state()
            );
            assert_eq!(lost, 0, "lost");
            check_leases_free(&shm);
            check_end(&shm, 1, sent.len());
        });
    }
}
