//! The ring protocol: claim -> write -> commit -> consume -> release, and recovery of the
//! claims of dead processes.
//!
//! Producers claim space with one CAS on `tail` after announcing the range in their slot's
//! claim intent, write a WRITING header (`publish`), copy the payload, then store COMMITTED.
//! Consumers read `tail` (so the header they look at belongs to the current lap), see
//! COMMITTED at `head`, copy the payloads out, announce a read intent, CAS `head` past the
//! record(s) (a failed CAS discards the copy, which may be torn), then store CONSUMED. A view
//! pins its record instead: it stays COMMITTED below `head`, covered by the slot's pin intent,
//! until released. After the CAS only the COMMITTED records a consumer took are its own:
//! padding and dead records below `head` may be freed and their place reused at once, so it
//! never reads them again. The holder of the release lock (a producer that needs room, a consumer after taking a quarter
//! of the ring, any consumer while a producer waits for room) walks the consumed records in
//! order and advances `released` past them; every byte at or above `released` (up to
//! `released + capacity`) is free or belongs to a live claim. Freed bytes are not zeroed: a
//! header is valid only with its position's tag (layout.rs), written after its state word, so
//! a reader takes whatever an earlier lap left in the ring for EMPTY (`header`).
//! A claim past the first 4 MiB of a lap in an empty ring pads to the lap's end and starts
//! the next lap (`wrap_early`): a ring whose consumers keep up reuses the start of its memory,
//! which stays in the CPU's caches.
//!
//! Recovery (run by waiters that see no progress) uses the intents and the slot locks:
//! - a record at `head` still EMPTY/WRITING whose range no live producer intent covers belongs
//!   to a dead producer: it becomes DEAD and is skipped;
//! - a COMMITTED record below `head` at `released` that no live read intent covers was taken by
//!   a dead consumer: it becomes CONSUMED (counted as lost), unless that consumer's lease holds
//!   it (lease.rs: lease recovery takes it);
//! - a release lock held by a dead owner is taken over.

#[cfg(not(loom))]
use std::fs::File;

#[cfg(not(loom))]
use crate::attach;
use crate::error::{QueueError, Result};
#[cfg(loom)]
use crate::layout::sync::AtomicU32;
use crate::layout::sync::{fence, AtomicU64, Ordering, Ordering::*};
use crate::layout::*;
#[cfg(not(loom))]
use crate::segment::Segment;
use crate::wait;

/// One message to put: the concatenation of two byte slices (the second is often empty), so
/// a caller can add a small header to a large body without copying the body first.
#[derive(Clone, Copy)]
pub struct Msg<'m>(pub &'m [u8], pub &'m [u8]);

impl Msg<'_> {
    pub fn len(&self) -> u64 {
        (self.0.len() + self.1.len()) as u64
    }
}

/// This handle's identity in the segment.
#[derive(Clone, Copy)]
pub struct Me {
    pub slot: u32,
    pub gen: u32,
}

impl Me {
    fn owner_word(self) -> u64 {
        ((self.slot as u64 + 1) << 32) | self.gen as u64
    }
}

/// Cursor values this handle saw last (cursors only grow, so a cached value is a safe lower
/// bound; it is refreshed only when it is not enough), and `try_get`'s reusable list of the
/// records it is taking.
#[derive(Default)]
pub struct Cache {
    pub tail: u64,
    pub released: u64,
    taking: Vec<(u64, u64)>,
    /// Where a take copies first when its output buffer has no room (see `take`).
    spill: Vec<u8>,
    /// `wrap_early` does not look before the tail reaches this position.
    wrap_check: u64,
}

impl Cache {
    /// The (position, length) of each record the last successful take took, in order.
    pub fn taken(&self) -> &[(u64, u64)] {
        &self.taking
    }
}

/// A view of a mapped segment for one handle.
pub struct Ring<'a> {
    pub hdr: &'a Header,
    slots: &'a [Slot],
    #[cfg(not(loom))]
    file: &'a File,
    /// The lease table (lease.rs); its recovery runs with the ring's.
    pub(crate) leases: &'a [crate::layout::Lease],
    #[cfg(not(loom))]
    data: *mut u8,
    /// In the loom model (src/loom_tests.rs) the ring is an array of 8-byte words.
    #[cfg(loom)]
    data: &'a [AtomicU64],
    /// In the loom model: yield right after taking records, so loom runs other threads in
    /// that window (its bounded search did not reach it otherwise).
    #[cfg(loom)]
    yield_at_taken: bool,
    /// In the loom model: per slot, whether its handle is alive (0: it died); empty when
    /// every slot is (see `held_by_other`).
    #[cfg(loom)]
    alive: &'a [AtomicU32],
    /// In the loom model: per ring word, 1 from a producer's write of it until the release
    /// of its record (the model's check that producers write only free bytes, see
    /// `write_payload`); the real ring keeps no such record.
    #[cfg(loom)]
    used: &'a [AtomicU64],
    /// The segment's tag key (layout::tag).
    key: u64,
    cap: u64,
    mask: u64,
    /// The offset in a lap from which a claim may start the next lap early (`wrap_early`);
    /// NONE: never.
    early_wrap: u64,
    me: Me,
}

/// A claim this far into a lap may start the next lap early (`wrap_early`), in a ring larger
/// than this: a few large messages' worth, which stays in the CPU's last-level cache.
#[cfg(not(loom))]
const EARLY_WRAP_AT: u64 = 4 << 20;

/// What a take does with the records it took.
enum Finish<'s> {
    /// Copy each payload out (appended to the buffer), then mark it CONSUMED.
    Copy(&'s mut Vec<u8>),
    /// Pin it (one record): the callback records the pin and sets the pin intent.
    Pin(&'s mut dyn FnMut(&Ring, u64, u64)),
    /// Copy record j (position, length) into lease j before the head CAS (`copy`; an error
    /// takes nothing), make the taken leases HELD after it (`held(items)`), then mark the
    /// records CONSUMED (lease.rs).
    Lease {
        copy: &'s mut dyn FnMut(&Ring, usize, u64, u64) -> Result<()>,
        held: &'s mut dyn FnMut(usize),
    },
}

/// What a producer's claim got.
enum Claim {
    /// `count` records starting at `pos`.
    Got {
        pos: u64,
        count: usize,
    },
    NoSpace,
}

impl<'a> Ring<'a> {
    #[cfg(not(loom))]
    pub fn new(seg: &'a Segment, me: Me) -> Ring<'a> {
        Ring {
            hdr: seg.header(),
            slots: seg.slots(),
            file: &seg.file,
            leases: seg.leases(),
            data: seg.data(),
            key: seg.header().id.tag_key,
            cap: seg.capacity,
            mask: seg.capacity - 1,
            // At most 64 laps per ring's worth of bytes put: positions (u64) last.
            early_wrap: match EARLY_WRAP_AT.max(seg.capacity / 64) {
                w if w < seg.capacity => w,
                _ => NONE,
            },
            me,
        }
    }

    /// A ring over `data` (`8 * data.len()` bytes, a power of two) with the lease table
    /// `leases` for the loom model; `alive` says which slots' handles are alive (empty: all);
    /// `used` is the model's record of written words (one per word of `data`); laps start
    /// early from offset `early_wrap` (NONE: never).
    #[cfg(loom)]
    #[allow(clippy::too_many_arguments)]
    pub fn for_model(
        hdr: &'a Header,
        slots: &'a [Slot],
        data: &'a [AtomicU64],
        leases: &'a [crate::layout::Lease],
        alive: &'a [AtomicU32],
        used: &'a [AtomicU64],
        me: Me,
        yield_at_taken: bool,
        early_wrap: u64,
    ) -> Ring<'a> {
        let cap = 8 * data.len() as u64;
        assert!(cap.is_power_of_two());
        assert_eq!(used.len(), data.len());
        Ring {
            hdr,
            slots,
            data,
            leases,
            yield_at_taken,
            alive,
            used,
            key: hdr.id.tag_key,
            cap,
            mask: cap - 1,
            early_wrap,
            me,
        }
    }

    fn my_slot(&self) -> &Slot {
        &self.slots[self.me.slot as usize]
    }

    /// This handle as a lock owner word.
    pub(crate) fn owner_word(&self) -> u64 {
        self.me.owner_word()
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.cap
    }

    // ---- raw access: the only code that touches ring bytes ----

    /// The word at ring offset `idx` (8-aligned, below the capacity).
    #[cfg(not(loom))]
    fn ring_word(&self, idx: u64) -> &AtomicU64 {
        debug_assert!(idx % 8 == 0 && idx < self.cap);
        // SAFETY: callers pass an 8-aligned offset below the capacity (see `tword`, `hword`),
        // and the ring starts page aligned, so the word is aligned and inside the mapping,
        // which lives as long as 'a.
        unsafe { &*(self.data.add(idx as usize) as *const AtomicU64) }
    }

    /// The tag word of the record header at `pos` (layout.rs).
    fn tword(&self, pos: u64) -> &AtomicU64 {
        // Record positions are 16-aligned in a well-formed segment, but the cursors they come
        // from are read from the shared file: rounding down keeps an unaligned (corrupt) one
        // from making the header's accesses run past the end of the ring and of the mapping.
        self.ring_word(pos & self.mask & !15)
    }

    /// The state word (`len << 32 | state`) of the record header at `pos`, right after its
    /// tag word. Read it through `header` unless the record is known to be this lap's (the
    /// caller claimed or took it).
    pub(crate) fn hword(&self, pos: u64) -> &AtomicU64 {
        // Rounded down as in `tword`: the word after it is still inside the ring.
        self.ring_word((pos & self.mask & !15) + 8)
    }

    /// Whether the tag word at `pos` is this position's tag: a header was written there in
    /// this lap. `ord`: Acquire, or SeqCst where the caller's wait protocol needs it.
    fn tagged(&self, pos: u64, ord: Ordering) -> bool {
        self.tword(pos).load(ord) == tag(self.key, pos)
    }

    /// The state word of the record at `pos`, or 0 (EMPTY) while no header of this lap is
    /// there: the tag word is read first, so a valid tag shows this lap's state word or a
    /// later one (see `publish`). Whatever stale bytes the ring holds read as EMPTY.
    pub(crate) fn header(&self, pos: u64, ord: Ordering) -> u64 {
        if !self.tagged(pos, ord) {
            return word(0, EMPTY);
        }
        self.hword(pos).load(ord)
    }

    /// Write the header of a record at `pos` claimed by this handle (or, in recovery, by a dead
    /// one): the state word, then the tag word with `ord` (Release or SeqCst), which makes the
    /// header valid (`header`). Later states go to the state word alone.
    fn publish(&self, pos: u64, w: u64, ord: Ordering) {
        self.hword(pos).store(w, Relaxed);
        self.tword(pos).store(tag(self.key, pos), ord);
    }

    /// Copy `msg` (its parts one after the other) into the payload of the record at `pos`.
    #[cfg(not(loom))]
    fn write_payload(&self, pos: u64, msg: &Msg) {
        let idx = ((pos & self.mask) + RECORD_HEADER) as usize;
        debug_assert!(idx as u64 + msg.len() <= self.cap);
        // SAFETY: the caller claimed [pos, pos + span(len)) which lies within one lap
        // (claims never cross the ring's end), so the destination is inside the ring; no other
        // process reads or writes these bytes until the record is COMMITTED.
        unsafe {
            let dst = self.data.add(idx);
            std::ptr::copy_nonoverlapping(msg.0.as_ptr(), dst, msg.0.len());
            std::ptr::copy_nonoverlapping(msg.1.as_ptr(), dst.add(msg.0.len()), msg.1.len());
        }
    }

    /// Append the payload of the record at `pos` (of `len` bytes) to `out`.
    #[cfg(not(loom))]
    fn read_payload(&self, pos: u64, len: u64, out: &mut Vec<u8>) {
        let idx = ((pos & self.mask) + RECORD_HEADER) as usize;
        debug_assert!(idx as u64 + len <= self.cap);
        out.reserve(len as usize);
        // SAFETY: the record was COMMITTED and this consumer won the head CAS for it, so its
        // bytes are stable until it is marked CONSUMED; `check_span` verified that the payload
        // lies within the ring; `out` has room for `len` more bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data.add(idx),
                out.as_mut_ptr().add(out.len()),
                len as usize,
            );
            out.set_len(out.len() + len as usize);
        }
    }

    // The same in the loom model: the ring is words, payloads are copied a word at a time
    // with Relaxed accesses (the header word's Release store and Acquire load order them, as
    // they order the plain byte copies above).

    #[cfg(loom)]
    fn ring_word(&self, idx: u64) -> &AtomicU64 {
        &self.data[(idx / 8) as usize]
    }

    #[cfg(loom)]
    fn write_payload(&self, pos: u64, msg: &Msg) {
        let idx = ((pos & self.mask) + RECORD_HEADER) as usize;
        debug_assert!(idx as u64 + msg.len() <= self.cap);
        let mut bytes = msg.0.iter().chain(msg.1).copied();
        let mut left = msg.len() as usize;
        let mut w = idx / 8;
        while left > 0 {
            // The model's check of the ring invariant: claimed bytes are free (released since
            // they were last written). The release's marks reach this producer the way
            // `released` does, as the zeroing of freed bytes did before it was dropped.
            // A plain load (not a swap, which always reads the newest value): it may see
            // any store that the claim is not ordered after, as the zero check did.
            let was = self.used[w].load(Relaxed);
            assert_eq!(was, 0, "claimed payload word {w} is still in use");
            self.used[w].store(1, Relaxed);
            let n = left.min(8);
            let mut b = [0u8; 8];
            b[..n].iter_mut().for_each(|x| *x = bytes.next().unwrap());
            self.data[w].store(u64::from_le_bytes(b), Relaxed);
            left -= n;
            w += 1;
        }
    }

    #[cfg(loom)]
    fn read_payload(&self, pos: u64, len: u64, out: &mut Vec<u8>) {
        let idx = ((pos & self.mask) + RECORD_HEADER) as usize;
        debug_assert!(idx as u64 + len <= self.cap);
        let mut left = len as usize;
        let mut w = idx / 8;
        while left > 0 {
            let n = left.min(8);
            out.extend_from_slice(&self.data[w].load(Relaxed).to_le_bytes()[..n]);
            left -= n;
            w += 1;
        }
    }

    /// The model's record of a release: the payload words of the record with header `w` at
    /// `pos` are free again (a padding's were never written). The real ring does nothing here.
    #[cfg(loom)]
    fn model_free(&self, pos: u64, w: u64) {
        if word_state(w) != PADDING {
            for q in (pos + RECORD_HEADER..pos + span(word_len(w))).step_by(8) {
                self.used[((q & self.mask) / 8) as usize].store(0, Relaxed);
            }
        }
    }

    /// The span of a record with header `w` at `pos`, if it stays within the lap and below `limit`.
    pub(crate) fn check_span(&self, pos: u64, w: u64, limit: u64) -> Result<u64> {
        let s = span(word_len(w));
        let to_end = self.cap - (pos & self.mask);
        if s > to_end || pos + s > limit {
            return Err(QueueError::corrupt(format!(
                "record at position {pos} claims {s} bytes past the end of its lap or the tail"
            )));
        }
        Ok(s)
    }

    // ---- producers ----

    /// Bytes free for producers according to `released` (refreshed when the cache says no).
    pub fn free_bytes(&self) -> u64 {
        let t = self.hdr.prod.tail.load(Acquire);
        let r = self.hdr.rel.released.load(Acquire);
        (r + self.cap).saturating_sub(t)
    }

    /// Claim room for a prefix of `spans` (at least one) that fits before the ring's end.
    fn claim(&self, cache: &mut Cache, spans: &[u64]) -> Claim {
        let me = self.my_slot();
        let mut refreshed = false;
        loop {
            let t = self.hdr.prod.tail.load(Acquire);
            let to_end = self.cap - (t & self.mask);
            let free = (cache.released + self.cap).saturating_sub(t);
            let limit = free.min(to_end);
            let mut total = 0;
            let mut count = 0;
            for &s in spans {
                if total + s > limit {
                    break;
                }
                total += s;
                count += 1;
            }
            let mut padding = count == 0 && spans[0] > to_end && to_end <= free;
            if !padding && self.wrap_early(cache, t, spans[0]) {
                padding = true;
            }
            if count == 0 && !padding {
                if refreshed {
                    return Claim::NoSpace;
                }
                cache.released = self.hdr.rel.released.load(Acquire);
                refreshed = true;
                continue;
            }
            let claim = if padding { to_end } else { total };
            me.claim_end.store(t + claim, Relaxed);
            // Release: a recoverer that sees this intent also sees every intent this handle
            // announced before it (an open loan's loan_start in particular).
            me.claim_start.store(t, Release);
            if self
                .hdr
                .prod
                .tail
                .compare_exchange(t, t + claim, AcqRel, Relaxed)
                .is_err()
            {
                // Withdraw the intent: this retry may return NoSpace, and a stale intent of a
                // live handle would stop recovery of the dead writer of the range it names.
                me.claim_start.store(NONE, Release);
                continue;
            }
            crate::fault::hook(crate::fault::Step::Claimed);
            if padding {
                // Fill the rest of the lap, then claim again at the start of the next one.
                self.publish(
                    t,
                    word(to_end.saturating_sub(RECORD_HEADER), PADDING),
                    SeqCst,
                );
                me.claim_start.store(NONE, Release);
                wait::wake(&self.hdr.data_wake);
                continue;
            }
            return Claim::Got { pos: t, count };
        }
    }

    /// Whether a claim at `t` should pad to the end of the lap and start the next one now,
    /// although its first record (of span `first`) fits here: when the tail is past
    /// `early_wrap` in its lap (4 MiB, or 1/64 of a ring larger than 256 MiB) and every
    /// message put has been taken (the head is at `t`). A ring whose consumers keep up then
    /// reuses the start of its memory over and over (what stays in the CPU's caches), as a
    /// pool of buffers does, instead of walking all of it; a ring holding messages never pads
    /// early. As the padding is at the head, a consumer skips it and a producer that needs its
    /// room frees it at once (release), so the ring's room is not reduced. Positions grow at
    /// most 64 times as fast as the bytes put. The padding costs nothing to free: its bytes
    /// were never written (see release_locked). A claim that finds messages in the ring does
    /// not look again (a load of the consumers' cursor) for the next eighth of `early_wrap`.
    fn wrap_early(&self, cache: &mut Cache, t: u64, first: u64) -> bool {
        let off = t & self.mask;
        if off < self.early_wrap || t < cache.wrap_check {
            return false;
        }
        cache.wrap_check = t + self.early_wrap / 8;
        if self.hdr.cons.head.load(Acquire) != t {
            return false;
        }
        let need = self.cap - off + first;
        if (cache.released + self.cap).saturating_sub(t) < need {
            // Consumers release lazily (a take: a quarter of the ring at a time; a view's
            // end: only for a waiting producer): free what they consumed now.
            self.release();
            cache.released = self.hdr.rel.released.load(Acquire);
        }
        (cache.released + self.cap).saturating_sub(t) >= need
    }

    /// Put a prefix of `msgs` that fits now; returns how many were put (0: no space).
    pub fn try_put(&self, cache: &mut Cache, msgs: &[Msg]) -> usize {
        let mut spans_buf = [0u64; 64];
        let mut n = msgs.len().min(spans_buf.len());
        for (s, m) in spans_buf.iter_mut().zip(msgs) {
            *s = span(m.len());
        }
        // A bounded queue claims under the bound lock, as many as the bound allows (bound.rs).
        let mut bound = None;
        if self.max_items() > 0 {
            let Some(g) = self.lock_items() else {
                return 0;
            };
            let before = g.count();
            n = n.min(self.max_items().saturating_sub(before) as usize);
            if n == 0 {
                return 0;
            }
            g.journal_put(before, self.hdr.prod.tail.load(Acquire));
            bound = Some((g, before));
        }
        let Claim::Got { pos, count } = self.claim(cache, &spans_buf[..n]) else {
            return 0;
        };
        let msgs = &msgs[..count];
        // Headers first, so a crash mid-copy leaves records whose length recovery can read.
        let mut p = pos;
        for m in msgs {
            self.publish(p, word(m.len(), WRITING), Release);
            p += span(m.len());
        }
        fence(Release);
        if let Some((g, before)) = bound {
            crate::fault::hook(crate::fault::Step::Counting);
            g.set_count(before + count as u64);
            drop(g);
        }
        crate::fault::hook(crate::fault::Step::Written);
        let mut p = pos;
        let mut bytes = 0;
        for m in msgs {
            self.write_payload(p, m);
            p += span(m.len());
            bytes += m.len();
        }
        let mut p = pos;
        for m in msgs {
            self.hword(p).store(word(m.len(), COMMITTED), Release);
            p += span(m.len());
        }
        self.my_slot().claim_start.store(NONE, Release);
        self.hdr.prod.msgs_in.fetch_add(count as u64, Relaxed);
        self.hdr.prod.bytes_in.fetch_add(bytes, Relaxed);
        fence(SeqCst);
        wait::wake(&self.hdr.data_wake);
        count
    }

    /// Whether a message of `span` bytes could be claimed now (used while waiting).
    pub fn has_space(&self, s: u64) -> bool {
        let t = self.hdr.prod.tail.load(SeqCst);
        let r = self.hdr.rel.released.load(SeqCst);
        let free = (r + self.cap).saturating_sub(t);
        s <= free || self.releasable_at_released()
    }

    // ---- loans: a record claimed now, written in place by the caller, committed later ----

    /// Claim room for one message of `len` bytes and write its WRITING header; the loan's
    /// position, recorded in this slot's loan intent until `end_loan`. None: no room now.
    /// (Not for a queue with max_items: the bound counts a record from its claim, and an
    /// abandoned loan would have to give that back at a place other than the head.)
    pub fn loan(&self, cache: &mut Cache, len: u64) -> Option<u64> {
        debug_assert_eq!(self.max_items(), 0);
        let Claim::Got { pos, .. } = self.claim(cache, &[span(len)]) else {
            return None;
        };
        self.publish(pos, word(len, WRITING), Release);
        let me = self.my_slot();
        me.loan_start.store(pos, Release);
        me.claim_start.store(NONE, Release);
        crate::fault::hook(crate::fault::Step::Loaned);
        Some(pos)
    }

    /// Publish (`commit`) or give up the loan at `pos`: its record becomes COMMITTED, or
    /// DEAD (consumers skip it, the releaser frees it), and the loan intent is cleared.
    pub fn end_loan(&self, pos: u64, len: u64, commit: bool) {
        let state = if commit { COMMITTED } else { DEAD };
        self.hword(pos).store(word(len, state), SeqCst);
        self.my_slot().loan_start.store(NONE, Release);
        if commit {
            self.hdr.prod.msgs_in.fetch_add(1, Relaxed);
            self.hdr.prod.bytes_in.fetch_add(len, Relaxed);
        }
        fence(SeqCst);
        wait::wake(&self.hdr.data_wake);
    }

    /// Write a loan's payload (the loom model's stand-in for the foreign caller's writes).
    #[cfg(loom)]
    pub(crate) fn write_loan(&self, pos: u64, payload: &[u8]) {
        self.write_payload(pos, &Msg(payload, &[]));
    }

    /// Read a pinned record's payload (the loom model's stand-in for a view's reads).
    #[cfg(loom)]
    pub(crate) fn read_pinned(&self, pos: u64, len: u64, out: &mut Vec<u8>) {
        self.read_payload(pos, len, out);
    }

    /// Where the payload of the record at `pos` starts in this process's mapping.
    #[cfg(not(loom))]
    pub fn payload_address(&self, pos: u64) -> u64 {
        // Positions are in the ring (the record was claimed or taken by this handle).
        self.data as u64 + (pos & self.mask) + RECORD_HEADER
    }

    // ---- consumers ----

    /// Take up to `max_items` committed messages (payload total <= max_bytes, at least one)
    /// from the head, their payloads appended to `out` one after the other (their positions
    /// and lengths are then `cache.taken()`). Returns the number taken.
    pub fn try_get(
        &self,
        cache: &mut Cache,
        max_items: usize,
        max_bytes: u64,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        self.take(cache, max_items, max_bytes, Finish::Copy(out))
    }

    /// Take the next committed message and pin it: it stays COMMITTED (so nothing releases
    /// its bytes) until `unpin`. `on_pin(ring, pos, len)` runs after the head CAS, while the
    /// read intent still covers the record: it must record the pin and widen this slot's pin
    /// intent over it (`set_pins`). Returns (position, length).
    pub fn try_pin(
        &self,
        cache: &mut Cache,
        on_pin: &mut dyn FnMut(&Ring, u64, u64),
    ) -> Result<Option<(u64, u64)>> {
        let n = self.take(cache, 1, u64::MAX, Finish::Pin(on_pin))?;
        Ok((n == 1).then(|| cache.taking[0]))
    }

    /// Take up to `max_items` committed messages into leases (lease.rs): see Finish::Lease.
    pub fn try_take_leased(
        &self,
        cache: &mut Cache,
        max_items: usize,
        max_bytes: u64,
        copy: &mut dyn FnMut(&Ring, usize, u64, u64) -> Result<()>,
        held: &mut dyn FnMut(usize),
    ) -> Result<usize> {
        self.take(cache, max_items, max_bytes, Finish::Lease { copy, held })
    }

    /// Set this slot's pin intent to `range` (start NONE: no pins). Pins are added at the end
    /// (positions grow) and removed anywhere, so storing the end before the start means a
    /// recoverer reading start, then end, between the stores sees a range that covers every
    /// record pinned before and after.
    pub fn set_pins(&self, range: (u64, u64)) {
        let me = self.my_slot();
        if range.0 != NONE {
            me.pin_end.store(range.1, Release);
        }
        me.pin_start.store(range.0, Release);
    }

    /// Release the pinned record at `pos`: it becomes CONSUMED (the releaser may free it) and
    /// the pin intent becomes `rest`, the range of this handle's remaining pins. It frees ring
    /// space only for a producer waiting for room: otherwise producers release when they
    /// need room (or start a lap early), zeroing memory they are about to write, and a
    /// view's consumer, often the slower side, spends nothing on it.
    pub fn unpin(&self, pos: u64, len: u64, rest: (u64, u64)) {
        self.hword(pos).store(word(len, CONSUMED), SeqCst);
        self.set_pins(rest);
        if self.hdr.space_wake.waiters.load(SeqCst) > 0 {
            self.release();
        }
    }

    /// The messages pinned now by live handles, and their bytes (walking each pin range;
    /// a snapshot for statistics).
    pub fn pinned(&self) -> (u32, u64) {
        let (mut count, mut bytes) = (0u32, 0u64);
        let head = self.hdr.cons.head.load(Acquire);
        for (i, s) in self.slots.iter().enumerate() {
            let (start, end) = (s.pin_start.load(Acquire), s.pin_end.load(Acquire));
            if start == NONE || !self.slot_alive(i as u32) {
                continue;
            }
            let (mut p, end) = (start, end.min(head));
            while p < end && p - start < self.cap {
                let w = self.header(p, Acquire);
                let Ok(sp) = self.check_span(p, w, end) else {
                    break;
                };
                if word_state(w) == COMMITTED {
                    count += 1;
                    bytes += word_len(w);
                }
                p += sp;
            }
        }
        (count, bytes)
    }

    fn take(
        &self,
        cache: &mut Cache,
        max_items: usize,
        max_bytes: u64,
        mut finish: Finish,
    ) -> Result<usize> {
        let me = self.my_slot();
        // A bounded queue takes under the bound lock and counts what it took (bound.rs).
        let mut bound = None;
        if self.max_items() > 0 {
            bound = Some(match self.lock_items() {
                Some(g) => g,
                None => return Ok(0),
            });
        }
        'retry: loop {
            let h = self.hdr.cons.head.load(Acquire);
            if h >= cache.tail {
                cache.tail = self.hdr.prod.tail.load(Acquire);
                if h >= cache.tail {
                    return Ok(0);
                }
            }
            // Every position below cache.tail was claimed in this lap, so headers there are
            // zero (not yet written) or this lap's records.
            let mut p = h;
            let mut bytes = 0u64;
            cache.taking.clear();
            while p < cache.tail && cache.taking.len() < max_items {
                let w = self.header(p, Acquire);
                // While the head stays at `h` these headers are this lap's; if another consumer
                // moved it, they may be anything, and the head CAS below fails anyway.
                let bad = match word_state(w) {
                    COMMITTED => {
                        let len = word_len(w);
                        if !cache.taking.is_empty() && bytes + len > max_bytes {
                            break;
                        }
                        match self.check_span(p, w, cache.tail) {
                            Ok(s) => {
                                cache.taking.push((p, len));
                                p += s;
                                bytes += len;
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    PADDING | DEAD => match self.check_span(p, w, cache.tail) {
                        Ok(s) => {
                            p += s;
                            None
                        }
                        Err(e) => Some(e),
                    },
                    EMPTY | WRITING | CONSUMED => break,
                    s => Some(QueueError::corrupt(format!(
                        "record at position {p} has unknown state {s}"
                    ))),
                };
                if let Some(e) = bad {
                    if self.hdr.cons.head.load(Acquire) != h {
                        continue 'retry;
                    }
                    return Err(e);
                }
            }
            if p == h {
                if self.hdr.cons.head.load(Acquire) != h {
                    continue;
                }
                return Ok(0);
            }
            // A plain take copies first and takes after: the copy is kept only if the head
            // CAS below succeeds, which proves nobody else took these records (so nobody
            // released or rewrote them) while it ran; positions never repeat, so a head back
            // at `h` is always this lap's. A consumer stopped mid-copy therefore holds back
            // nothing: only the few stores between the CAS and CONSUMED are a window.
            let copied_from = match &mut finish {
                Finish::Copy(out) => {
                    // A copy that may be dropped must never move `out`: a binding caches
                    // where the calling thread's view buffer is and asks again only when a
                    // result is longer than the buffer was. So a copy that does not fit goes
                    // to the spill buffer, appended to `out` only after the head CAS (when
                    // `out` grows for a result longer than it was).
                    let mark = out.len();
                    let need: u64 = cache.taking.iter().map(|&(_, len)| len).sum();
                    let spilled = ((out.capacity() - out.len()) as u64) < need;
                    let dst: &mut Vec<u8> = if spilled {
                        cache.spill.clear();
                        &mut cache.spill
                    } else {
                        out
                    };
                    for &(q, len) in &cache.taking {
                        self.read_payload(q, len, dst);
                    }
                    #[cfg(loom)]
                    if self.yield_at_taken {
                        loom::thread::yield_now();
                    }
                    Some((mark, spilled))
                }
                Finish::Lease { copy, .. } => {
                    // Nothing announced yet: an error leaves no trace.
                    for (j, &(q, len)) in cache.taking.iter().enumerate() {
                        copy(self, j, q, len)?;
                    }
                    crate::fault::hook(crate::fault::Step::LeaseCopied);
                    None
                }
                Finish::Pin(_) => None,
            };
            me.read_end.store(p, Relaxed);
            // Release: a recoverer that sees this intent also sees the pin intent of any view
            // this handle opened before it.
            me.read_start.store(h, Release);
            let items = cache.taking.len();
            let before = match &bound {
                Some(g) if items > 0 => {
                    let c = g.count();
                    g.journal_take(c, h, p, items as u64);
                    Some(c)
                }
                _ => None,
            };
            if self
                .hdr
                .cons
                .head
                .compare_exchange(h, p, AcqRel, Relaxed)
                .is_err()
            {
                // Withdraw the intent: this retry may return without taking anything, and a
                // stale intent of a live handle would stop recovery of a dead reader's record.
                me.read_start.store(NONE, Release);
                if let Some(g) = &bound {
                    g.clear_journal();
                }
                // The copy may be torn (others took, released and rewrote the records).
                if let (Finish::Copy(out), Some((mark, false))) = (&mut finish, copied_from) {
                    out.truncate(mark);
                }
                continue;
            }
            if let (Some(c), Some(g)) = (before, &bound) {
                crate::fault::hook(crate::fault::Step::Counting);
                g.set_count(c.saturating_sub(items as u64));
            }
            if items > 0 {
                // Clears the journal and frees the bound lock before the copy-out.
                drop(bound.take());
            }
            if items == 0 {
                // Only padding or dead records: skipped; the releaser frees them.
                me.read_start.store(NONE, Release);
                continue;
            }
            self.hdr.cons.msgs_out.fetch_add(items as u64, Relaxed);
            self.hdr.cons.bytes_out.fetch_add(bytes, Relaxed);
            crate::fault::hook(crate::fault::Step::Taken);
            #[cfg(loom)]
            if self.yield_at_taken {
                loom::thread::yield_now();
            }
            // Only the COMMITTED records the scan found are ours now. The padding and dead
            // records between them are free once the head is past them: a releaser may zero
            // them and a producer reuse their place, so their headers are never read again.
            match &mut finish {
                Finish::Copy(out) => {
                    if let Some((_, true)) = copied_from {
                        out.extend_from_slice(&cache.spill);
                    }
                    for &(q, len) in &cache.taking {
                        self.hword(q).store(word(len, CONSUMED), SeqCst);
                    }
                }
                Finish::Lease { held, .. } => {
                    // The leases own the messages before their records are freed.
                    held(items);
                    crate::fault::hook(crate::fault::Step::Leased);
                    for &(q, len) in &cache.taking {
                        self.hword(q).store(word(len, CONSUMED), SeqCst);
                    }
                }
                Finish::Pin(on_pin) => {
                    // The pin intent covers the record before the read intent goes.
                    let (q, len) = cache.taking[0];
                    on_pin(self, q, len);
                    crate::fault::hook(crate::fault::Step::Pinned);
                }
            }
            me.read_start.store(NONE, Release);
            if self.max_items() > 0 {
                // Producers may wait for the bound.
                wait::wake(&self.hdr.space_wake);
            }
            // Others may have taken and released past `p` meanwhile: then there is no backlog.
            // A pin leaves the releasing to others (producers release when they need room),
            // so opening a view costs the same whatever was consumed before it.
            let backlog = p.saturating_sub(self.hdr.rel.released.load(Relaxed));
            let pinning = matches!(finish, Finish::Pin(_));
            if !pinning && (backlog >= self.cap / 4 || self.hdr.space_wake.waiters.load(SeqCst) > 0)
            {
                self.release();
            }
            return Ok(items);
        }
    }

    /// Whether a get may find something now (used while waiting): a message returned to
    /// the queue (lease.rs), or a record at the head ready to take or skip.
    pub fn head_ready(&self) -> bool {
        self.hdr.leases.ready.load(SeqCst) > 0 || self.ring_head_ready()
    }

    /// Whether the record at the head is ready to take or skip (a view waits for this only:
    /// views do not take returned messages).
    pub fn ring_head_ready(&self) -> bool {
        let h = self.hdr.cons.head.load(SeqCst);
        let t = self.hdr.prod.tail.load(SeqCst);
        h < t
            && matches!(
                word_state(self.header(h, SeqCst)),
                COMMITTED | PADDING | DEAD
            )
    }

    // ---- release ----

    fn releasable_at_released(&self) -> bool {
        let r = self.hdr.rel.released.load(SeqCst);
        let h = self.hdr.cons.head.load(SeqCst);
        r < h
            && matches!(
                word_state(self.header(r, SeqCst)),
                CONSUMED | PADDING | DEAD
            )
    }

    /// Move the head past padding and dead records, which need no consumer. Producers do this
    /// too, so a wrap-around padding never waits for a consumer to come by.
    fn skip_fillers(&self) {
        loop {
            let h = self.hdr.cons.head.load(Acquire);
            let t = self.hdr.prod.tail.load(Acquire);
            if h >= t {
                return;
            }
            let w = self.header(h, Acquire);
            if !matches!(word_state(w), PADDING | DEAD) {
                return;
            }
            let Ok(s) = self.check_span(h, w, t) else {
                return;
            };
            let _ = self
                .hdr
                .cons
                .head
                .compare_exchange(h, h + s, AcqRel, Relaxed);
        }
    }

    /// Zero and free every consumed record at `released`, if nobody else is doing it.
    pub fn release(&self) {
        self.skip_fillers();
        let owner = self.me.owner_word();
        // Rounds that freed nothing: a record that looks releasable but cannot be freed (a
        // corrupt length) must not keep this loop going.
        let mut idle = 0;
        while idle < 2 {
            if self
                .hdr
                .rel
                .lock
                .compare_exchange(0, owner, SeqCst, Relaxed)
                .is_err()
            {
                return; // the holder re-checks after unlocking
            }
            let freed = self.release_locked();
            self.hdr.rel.lock.store(0, SeqCst);
            if freed {
                idle = 0;
                wait::wake(&self.hdr.space_wake);
            } else {
                idle += 1;
            }
            if !self.releasable_at_released() {
                return;
            }
        }
    }

    /// With the release lock held: free the consumed, padding and dead records at `released`
    /// (all below the head) by advancing `released` past them. Their bytes are not zeroed:
    /// the next lap's headers carry that lap's tags, so nothing left here can be read as
    /// one of them (layout.rs). True if anything was freed.
    fn release_locked(&self) -> bool {
        let start = self.hdr.rel.released.load(Acquire);
        let head = self.hdr.cons.head.load(Acquire);
        let mut r = start;
        while r < head && r - start < self.cap {
            let w = self.header(r, Acquire);
            if !matches!(word_state(w), CONSUMED | PADDING | DEAD) {
                break;
            }
            match self.check_span(r, w, head) {
                Ok(s) => {
                    #[cfg(loom)]
                    self.model_free(r, w);
                    r += s;
                }
                Err(_) => break,
            }
        }
        if r == start {
            return false;
        }
        crate::fault::hook(crate::fault::Step::Releasing);
        self.hdr.rel.released.store(r, SeqCst);
        true
    }

    // ---- recovery ----

    fn slot_alive(&self, i: u32) -> bool {
        i == self.me.slot || self.held_by_other(i)
    }

    /// Whether another handle holds slot `i` (a lock probe on the segment file).
    #[cfg(not(loom))]
    fn held_by_other(&self, i: u32) -> bool {
        attach::held_by_other(self.file, i)
    }

    /// In the loom model a slot is alive until the model marks it dead (a thread that stopped
    /// mid-step, as a killed process does); without `alive` every slot is. SeqCst, as the
    /// kernel's lock release and probe: a handle that sees the slot dead sees everything its
    /// owner did before it died.
    #[cfg(loom)]
    fn held_by_other(&self, i: u32) -> bool {
        self.alive
            .get(i as usize)
            .is_none_or(|a| a.load(SeqCst) != 0)
    }

    /// Whether the owner of a lease (slot + 1 and the low 18 bits of the slot's generation,
    /// lease.rs) is alive.
    pub(crate) fn lease_owner_alive(&self, slot1: u32, gen18: u32) -> bool {
        let slot = slot1.wrapping_sub(1);
        if slot as usize >= self.slots.len() {
            return false;
        }
        if slot == self.me.slot {
            return gen18 == self.me.gen & 0x3FFFF;
        }
        self.slots[slot as usize].gen.load(Acquire) & 0x3FFFF == gen18 && self.held_by_other(slot)
    }

    /// This handle as a lease owner (slot + 1, low 18 bits of its generation).
    pub(crate) fn lease_owner(&self) -> (u32, u32) {
        (self.me.slot + 1, self.me.gen & 0x3FFFF)
    }

    /// Under the release lock: whether the COMMITTED record of `len` bytes at `pos` was taken
    /// (below the head, not yet consumed or freed) by a consumer that is dead (no live read
    /// or pin intent covers it).
    pub(crate) fn taken_by_dead(&self, pos: u64, len: u64) -> bool {
        let r = self.hdr.rel.released.load(Acquire);
        let h = self.hdr.cons.head.load(Acquire);
        pos >= r
            && pos < h
            && self.header(pos, Acquire) == word(len, COMMITTED)
            && !self.live_intent(pos, pos + 8, true)
    }

    /// Whether a live read or pin intent covers the record at `pos`.
    pub(crate) fn live_reader_at(&self, pos: u64) -> bool {
        self.live_intent(pos, pos + 8, true)
    }

    /// Under the release lock: mark the record at `pos` (see `taken_by_dead`) CONSUMED.
    pub(crate) fn consume_dead(&self, pos: u64, len: u64) -> bool {
        self.hword(pos)
            .compare_exchange(word(len, COMMITTED), word(len, CONSUMED), SeqCst, Relaxed)
            .is_ok()
    }

    pub(crate) fn owner_alive(&self, owner: u64) -> bool {
        let slot = ((owner >> 32) as u32).wrapping_sub(1);
        let gen = owner as u32;
        if slot as usize >= self.slots.len() {
            return false;
        }
        if slot == self.me.slot {
            return gen == self.me.gen;
        }
        self.slots[slot as usize].gen.load(Acquire) == gen && self.held_by_other(slot)
    }

    /// Whether a live slot's intent overlaps [from, to) in the ring (compared by place in the
    /// ring, not by lap, which can only make recovery wait longer, never act wrongly): the
    /// read and pin intents when `reads`, else the claim and loan intents.
    fn live_intent(&self, from: u64, to: u64, reads: bool) -> bool {
        let overlaps = |start: u64, end: u64| {
            if start == NONE {
                return false;
            }
            let d = start.wrapping_sub(from) & self.mask;
            d < to - from || d + end.saturating_sub(start) > self.cap
        };
        self.slots.iter().enumerate().any(|(i, s)| {
            let hit = if reads {
                overlaps(s.read_start.load(Acquire), s.read_end.load(Acquire))
                    || overlaps(s.pin_start.load(Acquire), s.pin_end.load(Acquire))
            } else {
                // The claim intent first: `loan` sets loan_start before it clears claim_start,
                // so reading them in the other order could miss both.
                let claim = overlaps(s.claim_start.load(Acquire), s.claim_end.load(Acquire));
                let loan = s.loan_start.load(Acquire);
                claim || overlaps(loan, loan.wrapping_add(RECORD_HEADER))
            };
            hit && self.slot_alive(i as u32)
        })
    }

    /// Undo what dead processes left half done, under the release lock (taken over from a dead
    /// holder if need be), so one recoverer at a time sees stable cursors. Returns true if
    /// anything changed.
    pub fn recover(&self) -> bool {
        let rel = &self.hdr.rel;
        let mine = self.me.owner_word();
        let o = rel.lock.load(Acquire);
        if o != 0 && self.owner_alive(o) {
            return false;
        }
        if rel.lock.compare_exchange(o, mine, SeqCst, Relaxed).is_err() {
            return false;
        }
        let mut changed = false;
        if o != 0 {
            // A dead holder left nothing half done: a release is a single store of
            // `released`, which the release below makes again if it was not made.
            changed = true;
        }
        for _ in 0..1024 {
            // Leases first: a dead consumer's record that a lease holds is not lost.
            let leased = crate::lease::recover(self);
            if !(leased | self.recover_dead_reader() | self.recover_dead_writer()) {
                break;
            }
            changed = true;
        }
        rel.lock.store(0, SeqCst);
        if changed {
            wait::wake(&self.hdr.space_wake);
            wait::wake(&self.hdr.data_wake);
        }
        self.release();
        changed
    }

    /// Under the release lock: a COMMITTED record at `released` below the head whose consumer
    /// died becomes CONSUMED (lost with that consumer), then everything releasable is freed.
    fn recover_dead_reader(&self) -> bool {
        let r = self.hdr.rel.released.load(Acquire);
        let h = self.hdr.cons.head.load(Acquire);
        if r >= h {
            return false;
        }
        let w = self.header(r, Acquire);
        if word_state(w) != COMMITTED || self.check_span(r, w, h).is_err() {
            return false;
        }
        if self.live_intent(r, r + 8, true) {
            return false;
        }
        if crate::lease::held_by_dead(self, r) {
            // Its consumer died after the lease recovery of this round saw it alive: the lease
            // holds the message, and the next round's lease recovery takes the record.
            return true;
        }
        if self
            .hword(r)
            .compare_exchange(w, word(word_len(w), CONSUMED), SeqCst, Relaxed)
            .is_err()
        {
            return false;
        }
        self.hdr.rel.lost.fetch_add(1, Relaxed);
        // Its consumer can never call task_done for it.
        self.hdr.tasks.tasks_done.fetch_add(1, SeqCst);
        wait::wake_tasks(&self.hdr.tasks);
        self.release_locked();
        true
    }

    /// Under the release lock: a record at the head that is still EMPTY or WRITING, claimed by
    /// a producer that died, becomes DEAD. While we hold the lock nobody else can resolve it, so
    /// the head cannot move past it and the header we read stays this lap's.
    fn recover_dead_writer(&self) -> bool {
        let h = self.hdr.cons.head.load(Acquire);
        let t = self.hdr.prod.tail.load(Acquire);
        if h >= t {
            return false;
        }
        let w = self.header(h, Acquire);
        let lap_end = (h | self.mask) + 1;
        let end = match word_state(w) {
            WRITING => match self.check_span(h, w, t) {
                Ok(s) => h + s,
                Err(_) => return false,
            },
            EMPTY => {
                // Nothing was written: the claim (at least an empty record's span) ends at the
                // next header written in this lap after it.
                let limit = t.min(lap_end);
                let mut p = h + span(0);
                while p < limit && !self.tagged(p, Acquire) {
                    p += 16;
                }
                p.min(limit)
            }
            _ => return false,
        };
        if self.live_intent(h, end, false) || self.hdr.cons.head.load(Acquire) != h {
            return false;
        }
        if self.max_items() > 0 && word_state(w) == WRITING {
            // A counted record: the count goes down with it, under the bound lock.
            if !self.kill_counted_record(h, w) {
                return false;
            }
            self.hdr.rel.recovered.fetch_add(1, Relaxed);
            return true;
        }
        let dead = word(end - h - RECORD_HEADER, DEAD);
        if word_state(w) == EMPTY {
            // No header yet, and its dead producer writes none: give it one of this lap.
            if self.tagged(h, Acquire) {
                return false;
            }
            self.publish(h, dead, SeqCst);
        } else if self
            .hword(h)
            .compare_exchange(w, dead, SeqCst, Relaxed)
            .is_err()
        {
            return false;
        }
        self.hdr.rel.recovered.fetch_add(1, Relaxed);
        true
    }
}
