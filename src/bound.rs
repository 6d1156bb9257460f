//! The item bound (`max_items`): at most that many messages in a queue at once, exactly,
//! across processes, whatever process is killed at whatever step.
//!
//! State (layout::ItemLine, used only when the identity's max_items > 0): `count`, a lock
//! whose owner word names a slot and its generation, and the lock holder's journal.
//!
//! Invariant, whenever the lock is free (or held by a live process between its steps):
//!
//! ```text
//! count = the number of message records at or above `head` whose header is WRITING or
//!         COMMITTED
//! ```
//!
//! Records of messages that were taken (below `head`), padding, DEAD records and claimed
//! places whose header was never written do not count. Since every message in the queue
//! (committed, not taken) is such a record, `count <= max_items` bounds the messages in the
//! queue, and a producer that sees `count + k <= max_items` under the lock can add k.
//!
//! Every step that changes what the invariant counts takes the lock, so the invariant is kept
//! step by step:
//! - put: under the lock, read `count`, cut the batch to `max_items - count`, claim ring space
//!   (in a bounded queue only the lock holder moves `tail`), write the records' WRITING
//!   headers, then `count += k`. The copy and the COMMITTED stores come after the unlock
//!   (WRITING -> COMMITTED does not change the count);
//! - take: under the lock, scan, CAS `head` past j committed records, then `count -= j`;
//!   the copy-out and CONSUMED stores come after the unlock (below head: not counted);
//! - recovery turning a dead producer's WRITING record at `head` into DEAD: under the lock,
//!   `count -= 1`, then the header CAS. A claimed place with no header (EMPTY) becomes DEAD
//!   without the lock: it was never counted. Moving `head` past padding and DEAD records
//!   (`skip_fillers`) and releasing records below `head` need no lock: nothing counted moves.
//!
//! Crashes: the lock holder writes its journal (kind, the count before, the step's positions
//! and number) before it changes anything, and clears it after the count is right. A process
//! that finds the lock held by a dead owner (the slot lock probe of attach.rs: the kernel drops
//! a dead process's locks) takes it over with a CAS and, before its own step, repairs from the
//! journal by computing the count from the ring, which nobody else can change in a counted way
//! while the lock is held:
//! - PUT (count before, `tail` before): the dead holder's claim is `[tail before, tail)`; its
//!   records there are padding, then WRITING headers, then nothing (headers are written in
//!   order and a dead process's stores stay). count = count before + the WRITING headers.
//!   (The head cannot pass a WRITING or EMPTY record, so only its padding may have been
//!   skipped; the walk starts at max(tail before, head).)
//! - TAKE (count before, head before h, the CAS's target p, j records): the range [h, p) holds
//!   a committed record that only this CAS could move `head` past (other takers need the lock,
//!   `skip_fillers` stops at committed records), so `head >= p` exactly when the CAS happened.
//!   count = count before - (j if it happened, else 0).
//! - DEAD (count before, position h, the WRITING header word w): the step is redone:
//!   count = count before - 1, and if `head` is still h and the header there is still w, it
//!   becomes DEAD (once DEAD it never reads w again at an unmoved head).
//!
//! Each repair is a function of the journal and the ring, so a repairer killed while
//! repairing leaves the journal in place and the next one computes the same result. A holder
//! killed after clearing the journal left the count right and only the lock word behind.
//! Hence a kill at any step neither loses nor invents room: the count always equals what the
//! invariant says once the lock is taken, and the bound is never exceeded.
//!
//! A live holder that is stopped (SIGSTOP, a debugger) keeps the lock: other handles give up
//! after LOCK_PATIENCE and report Full/Empty as a queue without room or messages would.

use std::time::{Duration, Instant};

use crate::layout::sync::Ordering::*;
use crate::layout::*;
use crate::ring::Ring;

/// Journal kinds.
const PUT: u64 = 1;
const TAKE: u64 = 2;
const DEAD_STEP: u64 = 3;

/// How long a handle waits for a live holder of the bound lock before it gives up this try.
const LOCK_PATIENCE: Duration = Duration::from_millis(5);

/// The bound lock, held. Dropping it clears the journal, then frees the lock.
pub struct ItemsGuard<'r> {
    line: &'r ItemLine,
}

impl ItemsGuard<'_> {
    pub fn count(&self) -> u64 {
        self.line.count.load(Acquire)
    }

    pub fn set_count(&self, c: u64) {
        self.line.count.store(c, SeqCst);
    }

    /// Write the journal of the next step (count before, positions, number), kind last.
    fn journal(&self, kind: u64, count: u64, from: u64, to: u64, n: u64) {
        let l = self.line;
        l.j_count.store(count, Relaxed);
        l.j_from.store(from, Relaxed);
        l.j_to.store(to, Relaxed);
        l.j_n.store(n, Relaxed);
        l.j_kind.store(kind, SeqCst);
    }

    pub fn journal_put(&self, count: u64, tail: u64) {
        self.journal(PUT, count, tail, 0, 0);
    }

    pub fn journal_take(&self, count: u64, head: u64, to: u64, items: u64) {
        self.journal(TAKE, count, head, to, items);
    }

    /// The step journaled last did not happen (its CAS failed) or is complete.
    pub fn clear_journal(&self) {
        self.line.j_kind.store(0, SeqCst);
    }
}

impl Drop for ItemsGuard<'_> {
    fn drop(&mut self) {
        self.clear_journal();
        self.line.lock.store(0, SeqCst);
    }
}

impl<'a> Ring<'a> {
    /// The bound of this queue (0: none).
    pub fn max_items(&self) -> u64 {
        self.hdr.id.max_items
    }

    /// How many more messages the bound allows now (u64::MAX without a bound).
    pub fn items_room(&self) -> u64 {
        match self.max_items() {
            0 => u64::MAX,
            max => max.saturating_sub(self.hdr.items.count.load(Acquire)),
        }
    }

    /// Take the bound lock, taking it over (and repairing the count) from a dead holder.
    /// None when a live holder keeps it longer than LOCK_PATIENCE.
    pub fn lock_items(&self) -> Option<ItemsGuard<'_>> {
        let line = &self.hdr.items;
        let mine = self.owner_word();
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            let o = line.lock.load(Acquire);
            let out_of_patience = tries >= 64 && cfg!(not(loom)) && start.elapsed() > LOCK_PATIENCE;
            if o == 0 {
                if line.lock.compare_exchange(0, mine, SeqCst, Relaxed).is_ok() {
                    return Some(ItemsGuard { line });
                }
            } else if (tries % 256 == 64 || out_of_patience) && !self.owner_alive(o) {
                // A lock probe (a system call): only now and then, and always before giving up.
                if line.lock.compare_exchange(o, mine, SeqCst, Relaxed).is_ok() {
                    self.repair_items();
                    return Some(ItemsGuard { line });
                }
            } else if out_of_patience {
                return None;
            }
            tries += 1;
            // The loom model (src/loom_tests.rs) must yield to its own scheduler to let the
            // holder run.
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            if tries < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// With the lock taken over from a dead holder: finish or undo its journaled step (see the
    /// module comment), then clear the journal.
    fn repair_items(&self) {
        let line = &self.hdr.items;
        let before = line.j_count.load(Acquire);
        let from = line.j_from.load(Acquire);
        match line.j_kind.load(Acquire) {
            PUT => {
                let tail = self.hdr.prod.tail.load(Acquire);
                let mut p = from.max(self.hdr.cons.head.load(Acquire));
                let mut written = 0;
                while p < tail && p - from < self.capacity() {
                    let w = self.header(p, Acquire);
                    let Ok(s) = self.check_span(p, w, tail) else {
                        break;
                    };
                    match word_state(w) {
                        PADDING => {}
                        WRITING => written += 1,
                        _ => break,
                    }
                    p += s;
                }
                line.count.store(before + written, SeqCst);
            }
            TAKE => {
                let to = line.j_to.load(Acquire);
                let taken = line.j_n.load(Acquire);
                let done = self.hdr.cons.head.load(Acquire) >= to;
                let after = if done {
                    before.saturating_sub(taken)
                } else {
                    before
                };
                line.count.store(after, SeqCst);
            }
            DEAD_STEP => {
                let w = line.j_n.load(Acquire);
                line.count.store(before.saturating_sub(1), SeqCst);
                if self.hdr.cons.head.load(Acquire) == from
                    && self
                        .hword(from)
                        .compare_exchange(w, dead_word(w), SeqCst, Relaxed)
                        .is_ok()
                {
                    self.hdr.rel.recovered.fetch_add(1, Relaxed);
                }
            }
            _ => {}
        }
        line.j_kind.store(0, SeqCst);
    }

    /// Recovery of a dead producer's WRITING record `w` at head `h` in a bounded queue: under
    /// the lock, count -= 1 and the header becomes DEAD. False if the lock is busy or the
    /// record changed.
    pub fn kill_counted_record(&self, h: u64, w: u64) -> bool {
        let Some(g) = self.lock_items() else {
            return false;
        };
        if self.hdr.cons.head.load(Acquire) != h || self.header(h, Acquire) != w {
            return false;
        }
        let c = g.count();
        g.journal(DEAD_STEP, c, h, 0, w);
        crate::fault::hook(crate::fault::Step::Counting);
        g.set_count(c.saturating_sub(1));
        let ok = self
            .hword(h)
            .compare_exchange(w, dead_word(w), SeqCst, Relaxed)
            .is_ok();
        if !ok {
            // Nobody else writes a dead producer's header while we hold both locks; should a
            // corrupt file make it differ anyway, the record was not removed: undo.
            g.set_count(c);
        }
        drop(g);
        ok
    }
}

/// The DEAD header that replaces WRITING header `w` (same span).
fn dead_word(w: u64) -> u64 {
    word(span(word_len(w)) - RECORD_HEADER, DEAD)
}
