//! Leases: acknowledged gets (at-least-once delivery). A message taken by an acked get is
//! copied into a lease before the ring lets go of it, so the ring frees its record at once
//! (an unacknowledged message never holds back the ring) and the message survives its
//! consumer: `ack` frees the lease, `nack`, a timeout or the consumer's death make it READY,
//! and the next get delivers it again (with its delivery count one higher), or after
//! max_deliveries it goes to the dead-letter queue (queue.rs) or is dropped.
//!
//! A lease's `state` word is `gen << 32 | owner << 3 | kind`; `owner` is the holder's slot + 1
//! (11 bits) and the low 18 bits of the slot's generation, 0 when nobody holds it. Every change
//! of hands is one CAS on that word, so a crash leaves a lease in one named state:
//! - FREE: unused. An acked get claims it: FREE -> TAKING (owner = the getter).
//! - TAKING: the getter copies the record at `pos` into the lease's payload, then CASes the
//!   ring's head (ring.rs, Finish::Lease), then stores HELD. If the head CAS fails it copies
//!   again; with nothing to take it frees the lease.
//! - HELD: delivered and not yet acknowledged. A receipt names (lease, gen): `ack` CASes
//!   HELD -> FREE with gen + 1, `nack` HELD -> MOVING with gen + 1; a stale receipt (its gen is
//!   past: the lease timed out and went to someone else) matches nothing and is refused.
//! - MOVING: its holder is putting it back (READY), dead-lettering or dropping it.
//! - READY: waiting to be delivered again (owner 0). A get CASes READY -> MOVING (owned by
//!   it); an acked get then counts the delivery and stores HELD (same gen, so the previous
//!   receipt, whose gen is one lower, stays refused), a plain get copies it out and frees it.
//!
//! Recovery (under the ring's release lock, `recover`) for a lease whose owner is dead:
//! TAKING whose record is still COMMITTED below the head, unfinished and covered by no live
//! read intent was taken by that consumer (its copy was made before the head CAS, so it is
//! intact): the record becomes CONSUMED and the lease MOVING; any other TAKING lease took
//! nothing and becomes FREE. HELD: its record becomes CONSUMED if it is not yet, and the lease
//! MOVING. MOVING: taken over. A HELD lease past its deadline becomes MOVING too (with gen + 1:
//! its holder's receipt is refused). A lease's position is read only once its owner is known
//! dead, and the ring's dead-reader recovery leaves a record that a dead holder's lease holds
//! to this one (the consumer may die between the two: src/loom_tests.rs). MOVING leases are
//! then put back by `queue.rs`, outside the lock (dead-lettering opens another queue).

use crate::layout::sync::Ordering::*;

use crate::error::{QueueError, Result};
use crate::layout::{Lease, LeaseLine, LEASES, NONE};
use crate::ring::Ring;
use crate::wait;

pub const FREE: u64 = 0;
pub const TAKING: u64 = 1;
pub const HELD: u64 = 2;
pub const MOVING: u64 = 3;
pub const READY: u64 = 4;

#[inline]
pub fn kind(w: u64) -> u64 {
    w & 7
}
#[inline]
pub fn gen(w: u64) -> u32 {
    (w >> 32) as u32
}
#[inline]
fn owner(w: u64) -> u32 {
    ((w >> 3) & 0x1FFF_FFFF) as u32
}
#[inline]
fn pack(gen: u32, owner: u32, kind: u64) -> u64 {
    ((gen as u64) << 32) | ((owner as u64) << 3) | kind
}

/// This ring's handle as a lease owner.
fn me(ring: &Ring) -> u32 {
    let (slot1, gen18) = ring.lease_owner();
    (slot1 << 18) | gen18
}

fn alive(ring: &Ring, o: u32) -> bool {
    ring.lease_owner_alive(o >> 18, o & 0x3FFFF)
}

/// What an acked get hands out for one message: the lease, its generation and the delivery
/// count, packed in a u64 (`index | deliveries << 16 | gen << 32`; never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub index: u32,
    pub gen: u32,
    pub deliveries: u32,
}

impl Receipt {
    pub fn pack(self) -> u64 {
        self.index as u64 | ((self.deliveries.min(0xFFFF) as u64) << 16) | ((self.gen as u64) << 32)
    }
    pub fn unpack(v: u64) -> Result<Receipt> {
        let r = Receipt {
            index: (v & 0xFFFF) as u32,
            deliveries: ((v >> 16) & 0xFFFF) as u32,
            gen: (v >> 32) as u32,
        };
        if r.index as usize >= LEASES || r.deliveries == 0 {
            return Err(QueueError::invalid(format!("{v} is not a receipt")));
        }
        Ok(r)
    }
}

/// Claim up to `n` FREE leases for an acked get (FREE -> TAKING, owned by this handle).
pub fn claim(ring: &Ring, n: usize, out: &mut Vec<usize>) {
    let mine = me(ring);
    for (i, l) in ring.leases.iter().enumerate() {
        if out.len() >= n {
            break;
        }
        let w = l.state.load(Acquire);
        if kind(w) != FREE {
            continue;
        }
        if l.state
            .compare_exchange(w, pack(gen(w), mine, TAKING), AcqRel, Relaxed)
            .is_ok()
        {
            l.pos.store(NONE, Release);
            out.push(i);
        }
    }
}

/// Give back claimed leases that took nothing (TAKING -> FREE).
pub fn unclaim(ring: &Ring, leases: &[usize]) {
    for &i in leases {
        let l = &ring.leases[i];
        l.pos.store(NONE, Relaxed);
        let w = l.state.load(Acquire);
        debug_assert_eq!(kind(w), TAKING);
        l.state.store(pack(gen(w), 0, FREE), Release);
    }
}

/// After the head CAS: the first `n` claimed leases hold their messages (TAKING -> HELD),
/// first delivery, with a deadline `visibility_ns` from now (0: none).
pub fn hold(ring: &Ring, leases: &[usize], n: usize, visibility_ns: u64) {
    let deadline = deadline(visibility_ns);
    for &i in &leases[..n] {
        let l = &ring.leases[i];
        l.deliveries.store(1, Relaxed);
        l.deadline.store(deadline, Relaxed);
        let w = l.state.load(Acquire);
        l.state.store(pack(gen(w), owner(w), HELD), Release);
    }
}

fn deadline(visibility_ns: u64) -> u64 {
    if visibility_ns == 0 {
        0
    } else {
        wait::monotonic_ns().saturating_add(visibility_ns).max(1)
    }
}

/// The receipt of lease `i` while this handle holds it, if it still does.
pub fn receipt_if_held(ring: &Ring, i: usize) -> Option<Receipt> {
    let l = &ring.leases[i];
    let w = l.state.load(Acquire);
    (kind(w) == HELD && owner(w) == me(ring)).then(|| Receipt {
        index: i as u32,
        gen: gen(w),
        deliveries: l.deliveries.load(Relaxed) as u32,
    })
}

/// Take a READY lease, for an acked get (READY -> HELD, one more delivery) or a plain one
/// (READY -> MOVING): returns its index and length, or None.
pub fn take_ready(
    ring: &Ring,
    acked: bool,
    max_len: u64,
    visibility_ns: u64,
) -> Option<(usize, u64)> {
    let line = &ring.hdr.leases;
    if line.ready.load(Acquire) == 0 {
        return None;
    }
    let mine = me(ring);
    for (i, l) in ring.leases.iter().enumerate() {
        let w = l.state.load(Acquire);
        if kind(w) != READY {
            continue;
        }
        let len = l.len.load(Relaxed);
        if len > max_len {
            continue;
        }
        if l.state
            .compare_exchange(w, pack(gen(w), mine, MOVING), AcqRel, Relaxed)
            .is_err()
        {
            continue;
        }
        line.ready.fetch_sub(1, AcqRel);
        line.redelivered.fetch_add(1, Relaxed);
        if acked {
            l.deliveries.fetch_add(1, Relaxed);
            l.deadline.store(deadline(visibility_ns), Relaxed);
            l.state.store(pack(gen(w), mine, HELD), Release);
        }
        crate::fault::hook(crate::fault::Step::Serving);
        return Some((i, l.len.load(Relaxed)));
    }
    None
}

/// A plain get copied lease `i` out: free it (MOVING -> FREE, gen + 1).
pub fn finish_plain(ring: &Ring, i: usize) {
    let l = &ring.leases[i];
    let w = l.state.load(Acquire);
    l.state
        .store(pack(gen(w).wrapping_add(1), 0, FREE), Release);
    wake(ring);
}

fn wake(ring: &Ring) {
    wait::wake(&ring.hdr.data_wake);
}

/// Acknowledge (`nack` false: the lease becomes FREE) or return (MOVING, for the caller to
/// put back with `settle`) the message a receipt names. Refused if the lease is no longer
/// the delivery the receipt was given for.
pub fn finish(ring: &Ring, receipt: u64, nack: bool) -> Result<Option<usize>> {
    let r = Receipt::unpack(receipt)?;
    let l = &ring.leases[r.index as usize];
    let w = l.state.load(Acquire);
    if kind(w) != HELD || gen(w) != r.gen {
        return Err(QueueError::StaleReceipt {
            reason: format!(
                "receipt {receipt} ({} of this message) is no longer valid: the message was \
                 already acknowledged, returned, or delivered again after its holder died or \
                 timed out",
                ordinal(r.deliveries)
            ),
        });
    }
    let to = if nack {
        pack(r.gen.wrapping_add(1), me(ring), MOVING)
    } else {
        pack(r.gen.wrapping_add(1), 0, FREE)
    };
    if l.state.compare_exchange(w, to, AcqRel, Relaxed).is_err() {
        // Lost to a timeout (or another holder of the same receipt).
        return finish(ring, receipt, nack);
    }
    if nack {
        Ok(Some(r.index as usize))
    } else {
        wake(ring);
        Ok(None)
    }
}

fn ordinal(n: u32) -> String {
    match n {
        1 => "first delivery".into(),
        2 => "second delivery".into(),
        3 => "third delivery".into(),
        n => format!("delivery {n}"),
    }
}

/// What to do with a MOVING lease this handle holds.
pub enum Settle {
    /// It is READY again.
    Ready,
    /// It was delivered max_deliveries times: the caller dead-letters or drops it, then calls
    /// `drop_moving`.
    Expired { len: u64 },
}

/// Put a MOVING lease held by this handle back (READY), unless max_deliveries says it expired.
pub fn settle(ring: &Ring, i: usize) -> Settle {
    let l = &ring.leases[i];
    let line: &LeaseLine = &ring.hdr.leases;
    crate::fault::hook(crate::fault::Step::Moving);
    let max = line.max_deliveries.load(Relaxed);
    if max > 0 && l.deliveries.load(Relaxed) >= max {
        return Settle::Expired {
            len: l.len.load(Relaxed),
        };
    }
    let w = l.state.load(Acquire);
    l.pos.store(NONE, Relaxed);
    line.ready.fetch_add(1, AcqRel);
    l.state.store(pack(gen(w), 0, READY), Release);
    wake(ring);
    Settle::Ready
}

/// A MOVING lease that expired was dead-lettered (`dead_lettered`) or dropped: free it.
pub fn drop_moving(ring: &Ring, i: usize, dead_lettered: bool) {
    let line = &ring.hdr.leases;
    if dead_lettered {
        line.dead_lettered.fetch_add(1, Relaxed);
    } else {
        line.dropped.fetch_add(1, Relaxed);
    }
    finish_plain(ring, i);
}

/// The MOVING leases this handle holds (left by recovery, or by a nack that failed midway).
pub fn moving_mine(ring: &Ring) -> Vec<usize> {
    let mine = me(ring);
    (0..ring.leases.len())
        .filter(|&i| {
            let w = ring.leases[i].state.load(Acquire);
            kind(w) == MOVING && owner(w) == mine
        })
        .collect()
}

/// Whether recovery has work among the leases: a holder died or a deadline passed (a cheap
/// scan, without the release lock).
pub fn need_recovery(ring: &Ring) -> bool {
    let mut now = None;
    ring.leases.iter().any(|l| {
        let w = l.state.load(Acquire);
        match kind(w) {
            FREE | READY => false,
            k => {
                if !alive(ring, owner(w)) {
                    return true;
                }
                let d = l.deadline.load(Relaxed);
                k == HELD && d != 0 && d < *now.get_or_insert_with(wait::monotonic_ns)
            }
        }
    })
}

/// Under the release lock (Ring::recover): resolve the leases of dead holders and timed-out
/// leases as the header comment says. Returns true if anything changed.
pub fn recover(ring: &Ring) -> bool {
    let mine = me(ring);
    let mut changed = false;
    let mut now = None;
    for l in ring.leases {
        let w = l.state.load(Acquire);
        let k = kind(w);
        if k == FREE || k == READY {
            continue;
        }
        if alive(ring, owner(w)) {
            let d = l.deadline.load(Relaxed);
            if k == HELD && d != 0 && d < *now.get_or_insert_with(wait::monotonic_ns) {
                // Timed out: its holder's receipt is refused from now on.
                changed |= take_back(l, w, mine);
            }
            continue;
        }
        // Only now that the owner is known dead: read earlier, these could be older than its
        // last steps (a TAKING lease's position still NONE when it had taken its record).
        let (pos, len) = (l.pos.load(Acquire), l.len.load(Acquire));
        let to = match k {
            TAKING => {
                if pos != NONE && ring.taken_by_dead(pos, len) {
                    if !ring.consume_dead(pos, len) {
                        continue;
                    }
                    l.deliveries.store(1, Relaxed);
                    pack(gen(w).wrapping_add(1), mine, MOVING)
                } else if pos != NONE && ring.live_reader_at(pos) {
                    // A live consumer is finishing that record: decide once it has.
                    continue;
                } else {
                    pack(gen(w), 0, FREE)
                }
            }
            HELD => {
                if pos != NONE && ring.taken_by_dead(pos, len) {
                    ring.consume_dead(pos, len);
                }
                pack(gen(w).wrapping_add(1), mine, MOVING)
            }
            _ => pack(gen(w), mine, MOVING),
        };
        changed |= l.state.compare_exchange(w, to, AcqRel, Relaxed).is_ok();
    }
    changed
}

/// Under the release lock: whether a TAKING or HELD lease whose owner is dead holds the
/// record at `pos` (that owner took it: `recover` resolves it, the record is not lost).
pub fn held_by_dead(ring: &Ring, pos: u64) -> bool {
    ring.leases.iter().any(|l| {
        let w = l.state.load(Acquire);
        // The position after the owner is known dead, as in `recover`.
        matches!(kind(w), TAKING | HELD) && !alive(ring, owner(w)) && l.pos.load(Acquire) == pos
    })
}

/// Take a HELD lease (state word `w`) back to be put back by `mine` (HELD -> MOVING, gen + 1:
/// its receipt is refused from now on). False if its state moved on meanwhile.
fn take_back(l: &Lease, w: u64, mine: u32) -> bool {
    l.state
        .compare_exchange(
            w,
            pack(gen(w).wrapping_add(1), mine, MOVING),
            AcqRel,
            Relaxed,
        )
        .is_ok()
}

/// The leases' statistics: (held unacknowledged, READY to be delivered again).
pub fn counts(leases: &[Lease]) -> (u32, u32) {
    let (mut held, mut ready) = (0, 0);
    for l in leases {
        match kind(l.state.load(Acquire)) {
            TAKING | HELD | MOVING => held += 1,
            READY => ready += 1,
            _ => {}
        }
    }
    (held, ready)
}

/// A handle closing: the messages it holds unacknowledged become MOVING (to be delivered
/// again; their receipts are refused from now on) and its TAKING leases FREE. Returns true if
/// it now holds MOVING leases for `settle`.
pub fn release_all(ring: &Ring) -> bool {
    let mine = me(ring);
    let mut moving = false;
    for l in ring.leases {
        let w = l.state.load(Acquire);
        if owner(w) != mine {
            continue;
        }
        match kind(w) {
            HELD => moving |= take_back(l, w, mine),
            TAKING => l.state.store(pack(gen(w), 0, FREE), Release),
            MOVING => moving = true,
            _ => {}
        }
    }
    moving
}
