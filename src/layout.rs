//! The byte layout of a segment: header, attachment slots, ring of records.
//!
//! ```text
//! offset  size    what
//! 0       128     Identity (written once before the file is published, then read-only):
//!                 magic "SAGEQUE1", version, data offset, capacity, slot count, owner uid,
//!                 creator pid, creation time, the queue-wide `closed` word, and max_items
//!                 (the item bound at offset 56; 0 = none, which is what segments written
//!                 before the bound existed hold there, so they read as unbounded), and the
//!                 record tag key at offset 64 (random per segment, see `tag`).
//! 128     128     Producers' line: tail (next byte position to claim), msgs_in, bytes_in,
//!                 waits_full.
//! 256     128     Consumers' line: head (next position to take), msgs_out, bytes_out,
//!                 waits_empty.
//! 384     128     Release line: released (every byte from it up to `released + cap` is
//!                 free or belongs to a live claim), the release lock (owner slot and
//!                 generation), recovered and lost record counts.
//! 512     128     Wake word for consumers: data_seq, data_waiters (futex).
//! 640     128     Wake word for producers: space_seq, space_waiters (futex).
//! 768     128     Tasks: tasks_done, join_seq, join_waiters (futex).
//! 896     128     Statistics baselines taken by reset_stats.
//! 1024    128     Item bound (used only when max_items > 0, see bound.rs): count, the bound
//!                 lock (owner slot and generation) and its journal (kind, count before, two
//!                 positions, a number). Zero in older segments, which are unbounded.
//! 1152    128     Leases (lease.rs): READY leases (a hint), redelivered, dead-lettered and
//!                 dropped counts, and the ack policy (max_deliveries, visibility timeout).
//! 4096    64*1024 Attachment slots, 64 bytes each: generation, pid (read by `stats`), and
//!                 the slot's intents: loan (an open loan's record), claim (a producer's
//!                 range), read (a consumer's range), pin (its views' range).
//!                 Liveness of slot i is an OFD write lock on byte i of the file, which the
//!                 kernel drops when the process dies.
//! 69632   cap     The ring: records at 16-byte aligned positions. Positions are u64 byte counts
//!                 that only grow; a position's place in the ring is `pos % cap`.
//! +cap    4096    The lease table: LEASES entries of 64 bytes (lease.rs).
//! +4096   4096    The dead-letter queue's name: u32 length, then the bytes.
//! +4096   LEASES*stride  Lease payloads, one unacknowledged message each. The file is sparse
//!                 here: a lease's pages are reserved (fallocate) the first time a message
//!                 that long is leased, so only what acked gets use takes memory.
//! ```
//!
//! A record is a 16-byte header followed by `len` payload bytes, padded to 16. The header is
//! the record's tag word, `tag(key, pos)`, then its state word `len << 32 | state`. States:
//! WRITING, COMMITTED, PADDING (filler up to the end of the lap, at a wrap or to start the
//! next lap early; only its header is written), DEAD (a dead writer's claim, skipped),
//! CONSUMED; and EMPTY, read for a header whose tag word is not its position's tag: nothing
//! written there yet in this lap. A record never crosses the end of the ring.
//!
//! Freed bytes are not zeroed: they keep whatever the last lap left there (old headers, user
//! payloads). A stale word can never pass for a header because a header is valid only with
//! its position's tag: `tag` is a bijection of the position (so no earlier lap's tag matches
//! a later position), keyed with the segment's random key (so a payload cannot carry a valid
//! tag of a position not yet written, except by guessing 64 bits; it is not a cryptographic
//! MAC: whoever can read the segment can read the key, and could write the ring anyway). A
//! producer writes the state word first and the tag word after it (Release); a reader loads
//! the tag word first (Acquire), so a valid tag shows the state word of this lap
//! (`Ring::header`).

use self::sync::{AtomicU32, AtomicU64};

/// The atomics of the shared structures and of the ring protocol: std's, or loom's when the
/// crate is built with `--cfg loom` to model check the protocol (src/loom_tests.rs).
pub(crate) mod sync {
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
}

pub const MAGIC: u64 = u64::from_le_bytes(*b"SAGEQUE1");
/// 2: slots carry a loan intent and a pin intent (loans and views in place).
/// 3: a lease table and lease payloads after the ring (acknowledged gets).
/// 4: 16-byte record headers with a tag word; freed bytes are no longer zeroed.
pub const VERSION: u32 = 4;
pub const SLOT_COUNT: usize = 1024;
pub const SLOT_SIZE: usize = 64;
pub const SLOTS_OFFSET: usize = 4096;
pub const DATA_OFFSET: usize = SLOTS_OFFSET + SLOT_COUNT * SLOT_SIZE;
pub const MIN_CAPACITY: u64 = 4096;
/// Capacities are powers of two up to 2^40 bytes; a record length fits in 32 bits.
pub const MAX_CAPACITY: u64 = 1 << 40;
pub const RECORD_HEADER: u64 = 16;
/// Marks an empty intent.
pub const NONE: u64 = u64::MAX;

pub const EMPTY: u32 = 0;
pub const WRITING: u32 = 1;
pub const COMMITTED: u32 = 2;
pub const PADDING: u32 = 3;
pub const DEAD: u32 = 4;
pub const CONSUMED: u32 = 5;

#[inline]
pub fn word(len: u64, state: u32) -> u64 {
    (len << 32) | state as u64
}
#[inline]
pub fn word_len(w: u64) -> u64 {
    w >> 32
}
#[inline]
pub fn word_state(w: u64) -> u32 {
    w as u32
}
/// The tag word of a record header at position `pos` in a segment whose key is `key`:
/// splitmix64's finalizer of `pos ^ key`. Every step of it (an add, xor-shifts, multiplies
/// by odd numbers) is invertible, so distinct positions have distinct tags.
#[inline]
pub fn tag(key: u64, pos: u64) -> u64 {
    let mut z = (pos ^ key).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes a record with `len` payload bytes occupies in the ring: a multiple of 16, so
/// records (and payloads) are 16-byte aligned and the room left at the end of a lap always
/// holds a padding record's header.
#[inline]
pub fn span(len: u64) -> u64 {
    (RECORD_HEADER + len + 15) & !15
}

/// Round a requested capacity up to the power of two the ring uses (at least MIN_CAPACITY).
/// None when that power of two is above MAX_CAPACITY: such a request is refused, not clamped.
pub fn round_capacity(requested: u64) -> Option<u64> {
    let cap = requested.max(MIN_CAPACITY).checked_next_power_of_two()?;
    (cap <= MAX_CAPACITY).then_some(cap)
}

/// The largest payload a ring of `capacity` bytes accepts: one record filling the whole ring,
/// and a record's length fits in 32 bits.
pub fn max_message(capacity: u64) -> u64 {
    capacity.min(1 << 32) - RECORD_HEADER
}

/// How many messages a queue holds unacknowledged at once (one lease each).
pub const LEASES: usize = 64;
pub const LEASE_SIZE: usize = 64;
/// The most payload bytes one lease holds: a message of a ring up to 1 GiB.
pub fn lease_bytes(capacity: u64) -> u64 {
    max_message(capacity.min(1 << 30))
}
/// The distance between two leases' payloads (page aligned).
pub fn lease_stride(capacity: u64) -> u64 {
    (lease_bytes(capacity) + 4095) & !4095
}
/// Bytes from the start of the file to the end of the dead-letter name page: the part of
/// the file reserved at creation.
pub fn reserved_len(capacity: u64) -> u64 {
    DATA_OFFSET as u64 + capacity + 8192
}
/// The whole file's length.
pub fn file_len(capacity: u64) -> u64 {
    reserved_len(capacity) + LEASES as u64 * lease_stride(capacity)
}

#[repr(C, align(128))]
pub struct Identity {
    pub magic: u64,
    pub version: u32,
    pub data_offset: u32,
    pub capacity: u64,
    pub slot_count: u32,
    pub owner_uid: u32,
    pub creator_pid: u32,
    pub _reserved: u32,
    pub created_unix_ms: u64,
    pub closed: AtomicU32,
    /// The most messages the queue holds at once (0: no bound). Offset 56.
    pub max_items: u64,
    /// The key of the record headers' tags (`tag`), random per segment. Offset 64.
    pub tag_key: u64,
}

#[repr(C, align(128))]
pub struct ProducerLine {
    pub tail: AtomicU64,
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub waits_full: AtomicU64,
}

#[repr(C, align(128))]
pub struct ConsumerLine {
    pub head: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub waits_empty: AtomicU64,
}

#[repr(C, align(128))]
pub struct ReleaseLine {
    pub released: AtomicU64,
    pub lock: AtomicU64,
    pub recovered: AtomicU64,
    pub lost: AtomicU64,
}

#[repr(C, align(128))]
pub struct WakeLine {
    pub seq: AtomicU32,
    pub waiters: AtomicU32,
}

#[repr(C, align(128))]
pub struct TaskLine {
    pub tasks_done: AtomicU64,
    pub join_seq: AtomicU32,
    pub join_waiters: AtomicU32,
}

#[repr(C, align(128))]
pub struct Baselines {
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub waits_full: AtomicU64,
    pub waits_empty: AtomicU64,
    pub recovered: AtomicU64,
    pub lost: AtomicU64,
}

/// The item bound's shared state (bound.rs): see its header comment for the protocol.
#[repr(C, align(128))]
pub struct ItemLine {
    /// Messages counted against max_items (WRITING or COMMITTED records at or above head).
    pub count: AtomicU64,
    /// Owner word of the bound lock (slot + 1 << 32 | generation), 0 when free.
    pub lock: AtomicU64,
    /// Journal of the lock holder's step: kind (0 none), the count before, and the step's
    /// positions and number.
    pub j_kind: AtomicU64,
    pub j_count: AtomicU64,
    pub j_from: AtomicU64,
    pub j_to: AtomicU64,
    pub j_n: AtomicU64,
}

/// The leases' shared counters and the ack policy (lease.rs).
#[repr(C, align(128))]
pub struct LeaseLine {
    /// Leases READY to be delivered again (a hint: consumers look at the table when > 0).
    pub ready: AtomicU64,
    /// Deliveries of a message after its first.
    pub redelivered: AtomicU64,
    /// Messages moved to the dead-letter queue after max_deliveries.
    pub dead_lettered: AtomicU64,
    /// Messages dropped after max_deliveries (no dead-letter queue, or it refused them).
    pub dropped: AtomicU64,
    /// Deliveries after which a message is dead-lettered or dropped (0: no limit).
    pub max_deliveries: AtomicU64,
    /// A lease held longer than this (ns) is delivered again (0: no timeout).
    pub visibility_ns: AtomicU64,
    /// Counts messages returned to the queue (a lease made READY) and leases freed, so that
    /// the async data line (watch.rs) moves on for them as it does for a put.
    pub returned: AtomicU64,
}

/// One lease: a message taken by an acknowledged get and not yet acknowledged, kept here
/// so that the ring can free its record at once and the message survives its consumer.
#[repr(C, align(64))]
pub struct Lease {
    /// gen << 32 | owner << 3 | kind (lease.rs): every change of hands is one CAS on it.
    pub state: AtomicU64,
    /// The ring position of the record being taken into this lease (TAKING), or NONE.
    pub pos: AtomicU64,
    pub len: AtomicU64,
    /// How many times the message was delivered (1 at its first delivery).
    pub deliveries: AtomicU64,
    /// When a HELD lease times out (CLOCK_MONOTONIC ns, 0: never).
    pub deadline: AtomicU64,
    /// Payload bytes already reserved in the file for this lease.
    pub reserved: AtomicU64,
}

#[repr(C)]
pub struct Header {
    pub id: Identity,
    pub prod: ProducerLine,
    pub cons: ConsumerLine,
    pub rel: ReleaseLine,
    pub data_wake: WakeLine,
    pub space_wake: WakeLine,
    pub tasks: TaskLine,
    pub base: Baselines,
    pub items: ItemLine,
    pub leases: LeaseLine,
}

#[repr(C, align(64))]
pub struct Slot {
    pub gen: AtomicU32,
    pub pid: AtomicU32,
    /// The position of this handle's open loan (a WRITING record it will commit), or NONE.
    pub loan_start: AtomicU64,
    pub claim_start: AtomicU64,
    pub claim_end: AtomicU64,
    pub read_start: AtomicU64,
    pub read_end: AtomicU64,
    /// The range covering this handle's pinned views (COMMITTED records below the head that
    /// it reads in place), or pin_start NONE. It may cover records of others too: that only
    /// delays their recovery while this handle lives.
    pub pin_start: AtomicU64,
    pub pin_end: AtomicU64,
}

// loom's atomics are larger than the real ones; the model never maps a segment.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Header>() == 1280);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Lease>() == LEASE_SIZE);
const _: () = assert!(LEASES * LEASE_SIZE <= 4096);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(Identity, max_items) == 56);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Identity>() == 128);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Header>() <= SLOTS_OFFSET);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);
const _: () = assert!(DATA_OFFSET % 4096 == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_capacity() {
        assert_eq!(span(0), 16);
        assert_eq!(span(1), 32);
        assert_eq!(span(16), 32);
        assert_eq!(span(17), 48);
        assert_eq!(round_capacity(0), Some(4096));
        assert_eq!(round_capacity(5000), Some(8192));
        assert_eq!(round_capacity(65536), Some(65536));
        assert_eq!(round_capacity(MAX_CAPACITY), Some(MAX_CAPACITY));
        assert_eq!(round_capacity(MAX_CAPACITY + 1), None);
        assert_eq!(round_capacity(u64::MAX), None);
        assert_eq!(max_message(4096), 4080);
        assert_eq!(span(max_message(4096)), 4096);
        assert!(max_message(1 << 33) < 1 << 32);
        let w = word(123, COMMITTED);
        assert_eq!((word_len(w), word_state(w)), (123, COMMITTED));
    }
}
