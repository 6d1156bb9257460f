//! The queue handle the UDL exposes: argument checks, timeouts and blocking, the waiting
//! policy, attach/detach, tasks. Statistics and the folder-wide functions are admin.rs; the
//! batch layout batch.rs; the id-addressed message path message.rs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::admin::{mark_closed, stats_of, QueueStats};
use crate::attach;
use crate::batch::parse_table;
use crate::error::{QueueError, Result};
use crate::layout::{self, span, WakeLine};
use crate::lease;
use crate::name;
use crate::ring::{Cache, Me, Msg, Ring};
use crate::segment::{self, Segment};
use crate::wait::{self, Deadline};

/// Longest single futex sleep; between sleeps a waiter checks for dead processes.
const SLICE: Duration = Duration::from_millis(10);
/// How long an operation may see no progress before it looks for dead processes' leftovers.
const RECOVER_AFTER: Duration = Duration::from_millis(10);
/// The default waiting policy: before sleeping on the futex, a waiter checks for this many
/// microseconds, spinning for the first SPIN_BUSY_MAX of them and yielding between checks for
/// the rest. A handle can change it (`set_spin_micros`; 0 sleeps at once).
pub const DEFAULT_SPIN_MICROS: u32 = 70;
const SPIN_BUSY_MAX: u32 = 20;

/// Timeouts of the UDL: seconds, negative or +inf = forever, 0 = try once, NaN is refused.
pub type Timeout = f64;

struct Local {
    cache: Cache,
    stuck_since: Option<Instant>,
}

/// An acked get's scratch state (lock order: `local` before `acked`).
#[derive(Default)]
struct Acked {
    /// When an acked get last looked for dead holders' and timed-out leases.
    leases_checked: Option<Instant>,
    /// The leases an acked get claimed (reused).
    claimed: Vec<usize>,
}

/// How often an acked get looks for leases to deliver again (a dead holder's, or timed out)
/// while messages keep coming (waiting gets look every SLICE anyway).
const LEASE_CHECK: Duration = Duration::from_millis(20);

/// A message taken by an acknowledged get (the UDL's AckedMessage).
pub struct AckedMessage {
    pub data: Vec<u8>,
    pub receipt: u64,
    pub deliveries: u32,
}

/// The queue-wide policy of acknowledged gets (the UDL's AckPolicy).
pub struct AckPolicy {
    pub max_deliveries: u32,
    pub visibility_timeout: f64,
    pub dead_letter: Option<String>,
}

pub struct SageQueue {
    seg: Segment,
    name: String,
    me: Me,
    pid: u32,
    created: bool,
    auto_cleanup: bool,
    closed: AtomicBool,
    msg_id: std::sync::atomic::AtomicU64,
    /// This handle's spin budget in microseconds before a wait sleeps (its waiting policy).
    spin_micros: AtomicU32,
    local: Mutex<Local>,
    /// This handle's open loan (position, length), if any: at most one at a time.
    loan: Mutex<Option<(u64, u64)>>,
    /// This handle's pinned views (position, length), in position order. Lock order: `local`
    /// (held by a take) before `pins`.
    pins: Mutex<Vec<(u64, u64)>>,
    /// Held while this handle puts back the MOVING leases it holds (lease.rs), so two of its
    /// threads never settle the same one. Lock order: `local` before `settling`.
    settling: Mutex<()>,
    acked: Mutex<Acked>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The most views one handle may hold pinned at once.
pub const MAX_VIEWS: usize = 64;

/// The range a slot's pin intent must cover for `pins` (in position order).
fn pin_range(pins: &[(u64, u64)]) -> (u64, u64) {
    match (pins.first(), pins.last()) {
        (Some(&(first, _)), Some(&(last, len))) => (first, last + span(len)),
        _ => (layout::NONE, 0),
    }
}

impl SageQueue {
    // ---- constructors ----

    pub fn create(
        name: &str,
        capacity: u64,
        mode: u32,
        auto_cleanup: bool,
        max_items: u64,
    ) -> Result<Self> {
        name::validate(name)?;
        if capacity == 0 {
            return Err(QueueError::invalid("capacity must be at least 1 byte"));
        }
        let Some(rounded) = layout::round_capacity(capacity) else {
            return Err(QueueError::invalid(format!(
                "capacity {capacity} bytes is above the largest queue, {} bytes (1 TiB)",
                layout::MAX_CAPACITY
            )));
        };
        let dir = segment::queue_dir();
        let (mut seg, tmp) = Segment::create_unpublished(&dir, rounded, mode, max_items)?;
        // Take the first slot before the name appears, so no closer can remove it under us.
        let (slot, gen) = match attach::attach(&seg.file, seg.slots()) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        seg.publish(&tmp, &segment::segment_path(name), name)?;
        Ok(Self::from_parts(
            seg,
            name,
            Me { slot, gen },
            true,
            auto_cleanup,
        ))
    }

    pub fn open(name: &str, auto_cleanup: bool) -> Result<Self> {
        name::validate(name)?;
        let path = segment::segment_path(name);
        for _ in 0..100 {
            let seg = Segment::open(&path, name, true)?;
            if seg.header().id.closed.load(Acquire) != 0 {
                // Left behind by an unlink that did not finish: the queue is gone.
                let _ = seg.unlink_if_ours();
                continue;
            }
            let (slot, gen) = attach::attach(&seg.file, seg.slots())?;
            // A last closer may have removed the file between our open and our attach.
            if seg.is_linked() && seg.header().id.closed.load(Acquire) == 0 {
                return Ok(Self::from_parts(
                    seg,
                    name,
                    Me { slot, gen },
                    false,
                    auto_cleanup,
                ));
            }
            attach::detach(&seg.file, seg.slots(), slot);
        }
        Err(QueueError::NotFound {
            name: name.to_string(),
        })
    }

    pub fn open_or_create(
        name: &str,
        capacity: u64,
        mode: u32,
        auto_cleanup: bool,
        max_items: u64,
    ) -> Result<Self> {
        name::validate(name)?;
        for _ in 0..100 {
            match Self::open(name, auto_cleanup) {
                Err(QueueError::NotFound { .. }) => {}
                other => return other,
            }
            match Self::create(name, capacity, mode, auto_cleanup, max_items) {
                Err(QueueError::AlreadyExists { .. }) => {}
                other => return other,
            }
        }
        Err(QueueError::Io {
            reason: format!("queue {name:?} kept appearing and disappearing"),
        })
    }

    fn from_parts(seg: Segment, name: &str, me: Me, created: bool, auto_cleanup: bool) -> Self {
        SageQueue {
            seg,
            name: name.to_string(),
            me,
            pid: std::process::id(),
            created,
            auto_cleanup,
            closed: AtomicBool::new(false),
            msg_id: std::sync::atomic::AtomicU64::new(0),
            spin_micros: AtomicU32::new(DEFAULT_SPIN_MICROS),
            local: Mutex::new(Local {
                cache: Cache::default(),
                stuck_since: None,
            }),
            acked: Mutex::new(Acked::default()),
            loan: Mutex::new(None),
            pins: Mutex::new(Vec::new()),
            settling: Mutex::new(()),
        }
    }

    // ---- plumbing ----

    fn ring(&self) -> Ring<'_> {
        Ring::new(&self.seg, self.me)
    }

    fn local(&self) -> MutexGuard<'_, Local> {
        lock(&self.local)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Acquire) {
            return Err(QueueError::closed("this handle was closed"));
        }
        if self.seg.header().id.closed.load(Acquire) != 0 {
            return Err(QueueError::closed("the queue was unlinked"));
        }
        Ok(())
    }

    /// The segment's header (for the async watcher, watch.rs).
    pub(crate) fn header(&self) -> &crate::layout::Header {
        self.seg.header()
    }

    fn any_closed(&self) -> bool {
        self.closed.load(Acquire) || self.seg.header().id.closed.load(Acquire) != 0
    }

    /// Run `attempt` until it yields a value, spinning briefly and then sleeping on `line`
    /// until `ready` says another attempt may succeed. Between sleeps, and whenever the queue
    /// has made no progress for RECOVER_AFTER, leftovers of dead processes are recovered.
    fn blocking<T>(
        &self,
        deadline: Deadline,
        line: &WakeLine,
        waits: &std::sync::atomic::AtomicU64,
        on_timeout: QueueError,
        mut attempt: impl FnMut(&Ring, &mut Cache) -> Result<Option<T>>,
        ready: impl Fn(&Ring) -> bool,
    ) -> Result<T> {
        let ring = self.ring();
        let mut counted = false;
        loop {
            self.check_open()?;
            {
                let mut local = self.local();
                let l = &mut *local;
                let got = attempt(&ring, &mut l.cache)
                    .map_err(|e| segment::in_file(&self.seg.path, e))?;
                if let Some(v) = got {
                    l.stuck_since = None;
                    return Ok(v);
                }
                let since = *l.stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECOVER_AFTER {
                    l.stuck_since = Some(Instant::now());
                    // Recovery reads the slots: not past the end of a shortened file.
                    if let Some(reason) = self.seg.shrunk() {
                        return Err(QueueError::Closed { reason });
                    }
                    let recovered = ring.recover();
                    self.settle_moving(&ring);
                    if recovered {
                        continue;
                    }
                }
            }
            if deadline.is_immediate() {
                return Err(on_timeout);
            }
            // About to wait: a segment file someone shortened would raise SIGBUS at the next
            // touch of a missing page, so check (one fstat) and fail instead.
            if let Some(reason) = self.seg.shrunk() {
                return Err(QueueError::Closed { reason });
            }
            let budget = self.spin_micros.load(Relaxed);
            let busy = budget.min(SPIN_BUSY_MAX);
            let (busy, polite) = (
                Duration::from_micros(busy as u64),
                Duration::from_micros((budget - busy) as u64),
            );
            if budget > 0 && wait::spin(busy, polite, || ready(&ring) || self.any_closed()) {
                continue;
            }
            if !counted {
                waits.fetch_add(1, Relaxed);
                counted = true;
            }
            let Some(slice) = deadline.next_slice(SLICE) else {
                return Err(on_timeout);
            };
            wait::sleep_unless(line, slice, || ready(&ring) || self.any_closed());
        }
    }

    // ---- messages ----

    pub fn put(&self, data: &[u8], timeout: Timeout) -> Result<()> {
        self.put_pair(data, &[], timeout)
    }

    /// Put one message made of `head` followed by `body`.
    pub fn put_pair(&self, head: &[u8], body: &[u8], timeout: Timeout) -> Result<()> {
        let msg = Msg(head, body);
        self.check_size(msg.len() as usize)?;
        let h = self.seg.header();
        let need = span(msg.len());
        self.blocking(
            Deadline::from_secs(timeout)?,
            &h.space_wake,
            &h.prod.waits_full,
            QueueError::Full,
            |ring, cache| {
                if ring.try_put(cache, &[msg]) == 1 {
                    return Ok(Some(()));
                }
                ring.release();
                Ok((ring.try_put(cache, &[msg]) == 1).then_some(()))
            },
            |ring| ring.has_space(need) && ring.items_room() > 0,
        )
    }

    pub fn get(&self, timeout: Timeout) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_into(&mut out, timeout)?;
        Ok(out)
    }

    /// `get`, appending the message to `out`.
    pub fn get_into(&self, out: &mut Vec<u8>, timeout: Timeout) -> Result<()> {
        self.take(1, u64::MAX, timeout, out, |_| {})
    }

    /// Wait up to `timeout` for a message, then take up to `max_items` (payloads totalling at
    /// most `max_bytes`, at least one), their payloads appended to `out`; `taken` gets the
    /// (position, length) of each.
    fn take(
        &self,
        max_items: u32,
        max_bytes: u64,
        timeout: Timeout,
        out: &mut Vec<u8>,
        mut taken: impl FnMut(&[(u64, u64)]),
    ) -> Result<()> {
        if max_items == 0 {
            return Err(QueueError::invalid("max_items must be at least 1"));
        }
        let h = self.seg.header();
        self.blocking(
            Deadline::from_secs(timeout)?,
            &h.data_wake,
            &h.cons.waits_empty,
            QueueError::Empty,
            |ring, cache| {
                // Messages to deliver again (lease.rs) go first.
                let mut again = Vec::new();
                let mut bytes = 0;
                while again.len() < max_items as usize {
                    let room = if again.is_empty() {
                        u64::MAX
                    } else {
                        max_bytes.saturating_sub(bytes)
                    };
                    let Some((i, len)) = lease::take_ready(ring, false, room, 0) else {
                        break;
                    };
                    self.copy_lease(i, len, out);
                    lease::finish_plain(ring, i);
                    self.returned();
                    again.push((layout::NONE, len));
                    bytes += len;
                }
                if !again.is_empty() {
                    taken(&again);
                    return Ok(Some(()));
                }
                let n = ring.try_get(cache, max_items as usize, max_bytes, out)?;
                if n > 0 {
                    taken(cache.taken());
                }
                Ok((n > 0).then_some(()))
            },
            |ring| ring.head_ready(),
        )
    }

    /// Put a batch in the table layout (batch.rs): u32 little-endian `lengths`, concatenated
    /// `payloads`, in order; when the timeout ends part way, the ones
    /// already put stay put and the count says how many (Full only when none was put).
    pub fn put_batch(&self, lengths: &[u8], payloads: &[u8], timeout: Timeout) -> Result<u32> {
        let msgs = parse_table(lengths, payloads)?;
        self.put_msgs(&msgs, timeout)
    }

    /// Put `msgs` in order; when the deadline ends part way, the count put so far.
    fn put_msgs(&self, msgs: &[Msg], timeout: Timeout) -> Result<u32> {
        for m in msgs {
            self.check_size(m.len() as usize)?;
        }
        let h = self.seg.header();
        let deadline = Deadline::from_secs(timeout)?;
        let mut done = 0usize;
        while done < msgs.len() {
            let need = span(msgs[done].len());
            let res = self.blocking(
                deadline,
                &h.space_wake,
                &h.prod.waits_full,
                QueueError::Full,
                |ring, cache| {
                    let mut n = ring.try_put(cache, &msgs[done..]);
                    if n == 0 {
                        ring.release();
                        n = ring.try_put(cache, &msgs[done..]);
                    }
                    Ok((n > 0).then_some(n))
                },
                |ring| ring.has_space(need) && ring.items_room() > 0,
            );
            match res {
                Ok(n) => done += n,
                Err(QueueError::Full) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done as u32)
    }

    /// Wait up to `timeout` for one message, then take up to `max_items` (payloads totalling
    /// at most `max_bytes`, at least one) in the table layout, appended to `out`: the
    /// payloads, then their u32 little-endian lengths, then the u32 count.
    pub fn get_batch_into(
        &self,
        out: &mut Vec<u8>,
        max_items: u32,
        max_bytes: u64,
        timeout: Timeout,
    ) -> Result<()> {
        let mut lens: Vec<u32> = Vec::new();
        self.take(max_items, max_bytes, timeout, out, |records| {
            lens.extend(records.iter().map(|&(_, len)| len as u32))
        })?;
        for l in &lens {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&(lens.len() as u32).to_le_bytes());
        Ok(())
    }

    /// `get_batch_into` into a new buffer (the UDL method).
    pub fn get_batch(&self, max_items: u32, max_bytes: u64, timeout: Timeout) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_batch_into(&mut out, max_items, max_bytes, timeout)?;
        Ok(out)
    }

    // ---- acknowledged gets (lease.rs) ----

    /// Wait up to `timeout` for a message, then take up to `max_items` (payloads totalling at
    /// most `max_bytes`, at least one) into leases: appended to `out` as one payload (`batch`
    /// false, max_items 1) or in the table layout, with one receipt each in `receipts`.
    /// Messages delivered again go first. At most LEASES messages are unacknowledged at once:
    /// with every lease held, a get waits as if the queue were empty.
    pub fn get_acked_into(
        &self,
        out: &mut Vec<u8>,
        receipts: &mut Vec<u64>,
        batch: bool,
        max_items: u32,
        max_bytes: u64,
        timeout: Timeout,
    ) -> Result<()> {
        if max_items == 0 {
            return Err(QueueError::invalid("max_items must be at least 1"));
        }
        let max_items = if batch { max_items as usize } else { 1 };
        let h = self.seg.header();
        let mut lens: Vec<u32> = Vec::new();
        self.blocking(
            Deadline::from_secs(timeout)?,
            &h.data_wake,
            &h.cons.waits_empty,
            QueueError::Empty,
            |ring, cache| {
                let n =
                    self.take_acked(ring, cache, max_items, max_bytes, out, receipts, &mut lens)?;
                Ok((n > 0).then_some(()))
            },
            // With every lease held, a message in the ring cannot be taken: wait for an ack
            // (which wakes this line) instead of spinning on it.
            |ring| {
                ring.hdr.leases.ready.load(SeqCst) > 0
                    || (ring.head_ready() && lease::counts(ring.leases).0 < layout::LEASES as u32)
            },
        )?;
        if batch {
            for l in &lens {
                out.extend_from_slice(&l.to_le_bytes());
            }
            out.extend_from_slice(&(lens.len() as u32).to_le_bytes());
        }
        Ok(())
    }

    /// One attempt of an acked get (see `get_acked_into`). Returns the number taken.
    #[allow(clippy::too_many_arguments)]
    fn take_acked(
        &self,
        ring: &Ring,
        cache: &mut Cache,
        max_items: usize,
        max_bytes: u64,
        out: &mut Vec<u8>,
        receipts: &mut Vec<u64>,
        lens: &mut Vec<u32>,
    ) -> Result<usize> {
        self.check_leases(ring);
        let vis = self.seg.header().leases.visibility_ns.load(Relaxed);
        // Messages delivered again first.
        let mut bytes = 0u64;
        while lens.len() < max_items {
            let room = if lens.is_empty() {
                u64::MAX
            } else {
                max_bytes.saturating_sub(bytes)
            };
            let Some((i, len)) = lease::take_ready(ring, true, room, vis) else {
                break;
            };
            self.deliver(ring, i, len, out, receipts, lens);
            bytes += len;
        }
        if !lens.is_empty() {
            return Ok(lens.len());
        }
        let mut acked = lock(&self.acked);
        let claimed = &mut acked.claimed;
        claimed.clear();
        lease::claim(ring, max_items, claimed);
        if claimed.is_empty() {
            return Ok(0);
        }
        let most = layout::lease_bytes(self.seg.capacity);
        let claimed = &*claimed;
        let res = ring.try_take_leased(
            cache,
            claimed.len(),
            max_bytes,
            &mut |ring, j, pos, len| {
                if len > most {
                    return Err(QueueError::TooLarge {
                        size: len,
                        max_size: most,
                    });
                }
                self.fill_lease(ring, claimed[j], pos, len)
            },
            &mut |n| lease::hold(ring, claimed, n, vis),
        );
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                lease::unclaim(ring, claimed);
                return Err(e);
            }
        };
        lease::unclaim(ring, &claimed[n..]);
        for &i in &claimed[..n] {
            let len = ring.leases[i].len.load(Relaxed);
            self.deliver(ring, i, len, out, receipts, lens);
        }
        Ok(lens.len())
    }

    /// Copy the record at `pos` (`len` bytes) into lease `i` (before the head CAS: the copy
    /// is kept only if the CAS succeeds).
    fn fill_lease(&self, ring: &Ring, i: usize, pos: u64, len: u64) -> Result<()> {
        let l = &ring.leases[i];
        if l.reserved.load(Relaxed) < len {
            self.seg.reserve_lease(i, len)?;
            l.reserved.fetch_max(len, Relaxed);
        }
        // SAFETY: the record's `len` payload bytes lie inside the ring (the scan checked its
        // span), and lease i's payload holds lease_bytes >= len bytes, reserved in the file
        // above; the two regions never overlap. The ring bytes may be rewritten meanwhile if
        // another consumer took the record: then the head CAS fails and the copy is dropped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                ring.payload_address(pos) as *const u8,
                self.seg.lease_payload(i),
                len as usize,
            );
        }
        l.len.store(len, Relaxed);
        l.pos.store(pos, Release);
        Ok(())
    }

    /// Append lease `i`'s `len` payload bytes to `out`.
    fn copy_lease(&self, i: usize, len: u64, out: &mut Vec<u8>) {
        let len = len.min(layout::lease_bytes(self.seg.capacity)) as usize;
        // SAFETY: lease i's payload lies inside the mapping and holds at least `len` bytes;
        // its holder (this handle) is the only writer while it is HELD or MOVING.
        out.extend_from_slice(unsafe {
            std::slice::from_raw_parts(self.seg.lease_payload(i), len)
        });
    }

    /// Hand lease `i` (HELD by this handle) to the caller: its payload, receipt and length.
    /// If it timed out meanwhile (and so may be someone else's now), it is not delivered.
    fn deliver(
        &self,
        ring: &Ring,
        i: usize,
        len: u64,
        out: &mut Vec<u8>,
        receipts: &mut Vec<u64>,
        lens: &mut Vec<u32>,
    ) {
        // Copied aside first when `out` has no room: a copy that is then dropped must not
        // move `out` (see Ring::take).
        let before = lease::receipt_if_held(ring, i);
        let mut aside = Vec::new();
        let room = out.capacity() - out.len() >= len as usize;
        let mark = out.len();
        self.copy_lease(i, len, if room { &mut *out } else { &mut aside });
        match (before, lease::receipt_if_held(ring, i)) {
            (Some(a), Some(b)) if a == b => {
                out.extend_from_slice(&aside);
                receipts.push(a.pack());
                lens.push(len as u32);
            }
            _ => out.truncate(mark),
        }
    }

    /// Every LEASE_CHECK: if a lease's holder died or its deadline passed, recover (which
    /// makes such leases MOVING) and put them back.
    fn check_leases(&self, ring: &Ring) {
        {
            let mut acked = lock(&self.acked);
            let now = Instant::now();
            match acked.leases_checked {
                Some(t) if now.duration_since(t) < LEASE_CHECK => return,
                _ => acked.leases_checked = Some(now),
            }
        }
        self.return_leases(ring);
    }

    /// Return the messages of dead holders and timed-out deliveries to the queue now.
    fn return_leases(&self, ring: &Ring) {
        if lease::need_recovery(ring) {
            ring.recover();
        }
        self.settle_moving(ring);
    }

    /// For async waits on the data line (message.rs): whether messages are held
    /// unacknowledged now (then a waiter looks for dead holders and timeouts in slices), and
    /// that look.
    pub(crate) fn leases_held(&self) -> bool {
        lease::counts(self.seg.leases()).0 > 0
    }
    pub(crate) fn return_leases_now(&self) {
        self.return_leases(&self.ring());
    }

    /// A message came back to the queue or a lease was freed: the async data line moves on
    /// (watch.rs), as for a put.
    fn returned(&self) {
        let h = self.seg.header();
        h.leases.returned.fetch_add(1, SeqCst);
        // After the count: a waiter woken here reads the new state.
        wait::wake(&h.data_wake);
    }

    /// Put back the MOVING leases this handle holds: READY, or past max_deliveries into the
    /// dead-letter queue (or dropped).
    fn settle_moving(&self, ring: &Ring) {
        let _one = lock(&self.settling);
        for i in lease::moving_mine(ring) {
            let settled = lease::settle(ring, i);
            self.returned();
            if let lease::Settle::Expired { len } = settled {
                let mut payload = Vec::new();
                self.copy_lease(i, len, &mut payload);
                let sent = self
                    .ack_policy()
                    .dead_letter
                    .filter(|n| *n != self.name)
                    .and_then(|n| SageQueue::open(&n, false).ok())
                    .is_some_and(|dlq| dlq.put(&payload, 0.0).is_ok());
                lease::drop_moving(ring, i, sent);
            }
        }
    }

    /// Acknowledge a message taken by an acked get: its lease is freed. StaleReceipt if the
    /// receipt is no longer valid (already acked or nacked, or delivered again).
    pub fn ack(&self, receipt: u64) -> Result<()> {
        self.check_open()?;
        lease::finish(&self.ring(), receipt, false)?;
        self.returned();
        Ok(())
    }

    /// Return a message taken by an acked get to the queue (it is delivered again, its count
    /// one higher, unless max_deliveries dead-letters or drops it). StaleReceipt as `ack`.
    pub fn nack(&self, receipt: u64) -> Result<()> {
        self.check_open()?;
        let ring = self.ring();
        lease::finish(&ring, receipt, true)?;
        self.settle_moving(&ring);
        Ok(())
    }

    pub fn get_acked(&self, timeout: Timeout) -> Result<AckedMessage> {
        let mut out = Vec::new();
        let mut receipts = Vec::new();
        self.get_acked_into(&mut out, &mut receipts, false, 1, u64::MAX, timeout)?;
        let receipt = receipts[0];
        Ok(AckedMessage {
            data: out,
            receipt,
            deliveries: lease::Receipt::unpack(receipt)?.deliveries,
        })
    }

    pub fn get_acked_batch(
        &self,
        max_items: u32,
        max_bytes: u64,
        timeout: Timeout,
    ) -> Result<Vec<AckedMessage>> {
        let mut out = Vec::new();
        let mut receipts = Vec::new();
        self.get_acked_into(&mut out, &mut receipts, true, max_items, max_bytes, timeout)?;
        let msgs = crate::batch::parse_taken(&out)?;
        msgs.into_iter()
            .zip(receipts)
            .map(|(m, receipt)| {
                Ok(AckedMessage {
                    data: m.to_vec(),
                    receipt,
                    deliveries: lease::Receipt::unpack(receipt)?.deliveries,
                })
            })
            .collect()
    }

    /// Set the queue-wide ack policy (every process sees it at once).
    pub fn set_ack_policy(&self, policy: AckPolicy) -> Result<()> {
        self.check_open()?;
        let vis = policy.visibility_timeout;
        if !(vis >= 0.0 && vis.is_finite()) {
            return Err(QueueError::invalid(format!(
                "visibility_timeout must be a finite number of seconds >= 0, not {vis}"
            )));
        }
        if let Some(n) = &policy.dead_letter {
            name::validate(n)?;
            if *n == self.name {
                return Err(QueueError::invalid(
                    "a queue cannot be its own dead-letter queue",
                ));
            }
        }
        let line = &self.seg.header().leases;
        line.max_deliveries
            .store(policy.max_deliveries as u64, Relaxed);
        line.visibility_ns.store((vis * 1e9) as u64, Relaxed);
        let name = policy.dead_letter.unwrap_or_default();
        let page = self.seg.dead_letter_page();
        // SAFETY: the page is 4096 bytes inside the mapping; a name has at most 200 bytes.
        // The length goes last: a reader (`ack_policy`) never sees a longer name than written
        // (a racing change of the policy may show a mix, which fails validation and drops).
        unsafe {
            std::ptr::write_volatile(page as *mut u32, 0);
            std::ptr::copy_nonoverlapping(name.as_ptr(), page.add(4), name.len());
            std::ptr::write_volatile(page as *mut u32, name.len() as u32);
        }
        Ok(())
    }

    pub fn ack_policy(&self) -> AckPolicy {
        let line = &self.seg.header().leases;
        let page = self.seg.dead_letter_page();
        // SAFETY: as in set_ack_policy; the length is clamped to the name's maximum.
        let name = unsafe {
            let len = (std::ptr::read_volatile(page as *const u32) as usize).min(200);
            String::from_utf8_lossy(std::slice::from_raw_parts(page.add(4), len)).into_owned()
        };
        AckPolicy {
            max_deliveries: line.max_deliveries.load(Relaxed).min(u32::MAX as u64) as u32,
            visibility_timeout: line.visibility_ns.load(Relaxed) as f64 / 1e9,
            dead_letter: (!name.is_empty() && name::validate(&name).is_ok()).then_some(name),
        }
    }

    // ---- loans and views: messages written and read in place ----

    /// Claim room for one message of `len` bytes and return the address (in this process's
    /// mapping) where the caller writes it; `commit_loan` publishes it, `abort_loan` (or a
    /// close, or the process dying) gives the room back. One open loan per handle; not on a
    /// queue with max_items. Until it is committed, consumers wait at it (messages put after
    /// it are taken after it).
    pub fn loan(&self, len: u64, timeout: Timeout) -> Result<u64> {
        self.check_open()?;
        if self.max_items() > 0 {
            return Err(QueueError::invalid(
                "loans are not available on a queue with max_items (use put)",
            ));
        }
        self.check_size(len as usize)?;
        let mut open = lock(&self.loan);
        if open.is_some() {
            return Err(QueueError::invalid(
                "this handle already has an open loan: commit or abort it first \
                 (or loan from another handle)",
            ));
        }
        let h = self.seg.header();
        let pos = self.blocking(
            Deadline::from_secs(timeout)?,
            &h.space_wake,
            &h.prod.waits_full,
            QueueError::Full,
            |ring, cache| {
                let mut pos = ring.loan(cache, len);
                if pos.is_none() {
                    ring.release();
                    pos = ring.loan(cache, len);
                }
                Ok(pos)
            },
            |ring| ring.has_space(span(len)),
        )?;
        *open = Some((pos, len));
        Ok(self.ring().payload_address(pos))
    }

    /// Publish this handle's open loan (InvalidArgument if there is none).
    pub fn commit_loan(&self) -> Result<()> {
        self.end_loan(true)
    }

    /// Give up this handle's open loan: nothing is published and its room is freed.
    pub fn abort_loan(&self) -> Result<()> {
        self.end_loan(false)
    }

    fn end_loan(&self, commit: bool) -> Result<()> {
        let Some((pos, len)) = lock(&self.loan).take() else {
            return Err(QueueError::invalid("this handle has no open loan"));
        };
        if commit {
            self.check_open()?;
        }
        self.ring().end_loan(pos, len, commit);
        Ok(())
    }

    /// Take the next message and pin it in place: (address, length) of its payload in this
    /// process's mapping, readable until `unpin(address)`. The ring space from a pinned
    /// message on cannot be reused until it is released; at most MAX_VIEWS per handle.
    pub fn pin(&self, timeout: Timeout) -> Result<(u64, u64)> {
        self.check_open()?;
        if lock(&self.pins).len() >= MAX_VIEWS {
            return Err(QueueError::invalid(format!(
                "this handle holds {MAX_VIEWS} views already: release one first"
            )));
        }
        let h = self.seg.header();
        let (pos, len) = self.blocking(
            Deadline::from_secs(timeout)?,
            &h.data_wake,
            &h.cons.waits_empty,
            QueueError::Empty,
            |ring, cache| {
                ring.try_pin(cache, &mut |r, q, n| {
                    let mut pins = lock(&self.pins);
                    pins.push((q, n));
                    r.set_pins(pin_range(&pins));
                })
            },
            |ring| ring.ring_head_ready(),
        )?;
        Ok((self.ring().payload_address(pos), len))
    }

    /// Release the view pinned at `address` (InvalidArgument if this handle has none there).
    pub fn unpin(&self, address: u64) -> Result<()> {
        let ring = self.ring();
        let mut pins = lock(&self.pins);
        let Some(i) = pins
            .iter()
            .position(|&(q, _)| ring.payload_address(q) == address)
        else {
            return Err(QueueError::invalid(
                "this handle has no view at that address (released already?)",
            ));
        };
        let (pos, len) = pins.remove(i);
        ring.unpin(pos, len, pin_range(&pins));
        Ok(())
    }

    fn check_size(&self, len: usize) -> Result<()> {
        let max = self.max_message_size();
        if len as u64 > max {
            return Err(QueueError::TooLarge {
                size: len as u64,
                max_size: max,
            });
        }
        Ok(())
    }

    // ---- state ----

    pub fn qsize(&self) -> u64 {
        let h = self.seg.header();
        let out = h.cons.msgs_out.load(Acquire);
        // Messages returned by nack, a timeout or a dead holder count until delivered again.
        h.prod.msgs_in.load(Acquire).saturating_sub(out) + h.leases.ready.load(Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// No room for an empty message, or as many messages as max_items.
    pub fn is_full(&self) -> bool {
        let ring = self.ring();
        if ring.items_room() == 0 {
            return true;
        }
        ring.release();
        ring.free_bytes() < span(0)
    }

    /// The most messages this queue holds at once (0: no bound), fixed when it was created.
    pub fn max_items(&self) -> u64 {
        self.seg.header().id.max_items
    }

    pub fn capacity(&self) -> u64 {
        self.seg.capacity
    }

    pub fn max_message_size(&self) -> u64 {
        layout::max_message(self.seg.capacity)
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    pub fn path(&self) -> String {
        self.seg.path.display().to_string()
    }

    pub fn created(&self) -> bool {
        self.created
    }

    pub fn is_closed(&self) -> bool {
        self.any_closed()
    }

    /// This handle's waiting policy: how many microseconds a wait checks before it sleeps on
    /// the futex (the first 20 spinning, the rest yielding the CPU between checks). 0 sleeps
    /// at once: least CPU, a wake-up costs a futex wake. The default is DEFAULT_SPIN_MICROS.
    pub fn set_spin_micros(&self, micros: u32) {
        self.spin_micros.store(micros, Relaxed);
    }

    pub fn spin_micros(&self) -> u32 {
        self.spin_micros.load(Relaxed)
    }

    pub fn stats(&self) -> Result<QueueStats> {
        self.check_open()?;
        let mut pids = attach::other_pids(&self.seg.file, self.seg.slots());
        if !self.closed.load(Acquire) {
            pids.push(self.pid);
        }
        pids.sort_unstable();
        Ok(stats_of(&self.seg, &self.name, pids, Some(self.me)))
    }

    pub fn reset_stats(&self) -> Result<()> {
        self.check_open()?;
        let h = self.seg.header();
        let b = &h.base;
        b.msgs_in.store(h.prod.msgs_in.load(Relaxed), Relaxed);
        b.bytes_in.store(h.prod.bytes_in.load(Relaxed), Relaxed);
        b.waits_full.store(h.prod.waits_full.load(Relaxed), Relaxed);
        b.msgs_out.store(h.cons.msgs_out.load(Relaxed), Relaxed);
        b.bytes_out.store(h.cons.bytes_out.load(Relaxed), Relaxed);
        b.waits_empty
            .store(h.cons.waits_empty.load(Relaxed), Relaxed);
        b.recovered.store(h.rel.recovered.load(Relaxed), Relaxed);
        b.lost.store(h.rel.lost.load(Relaxed), Relaxed);
        Ok(())
    }

    // ---- tasks ----

    pub fn task_done(&self, count: u64) -> Result<()> {
        self.check_open()?;
        let h = self.seg.header();
        let t = &h.tasks;
        let mut done = t.tasks_done.load(SeqCst);
        loop {
            let put = h.prod.msgs_in.load(SeqCst);
            if done + count > put {
                return Err(QueueError::invalid(
                    "task_done() called more times than there were items",
                ));
            }
            match t
                .tasks_done
                .compare_exchange(done, done + count, SeqCst, SeqCst)
            {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        wait::wake_tasks(t);
        Ok(())
    }

    pub fn join(&self, timeout: Timeout) -> Result<bool> {
        let h = self.seg.header();
        let t = &h.tasks;
        let deadline = Deadline::from_secs(timeout)?;
        let finished = || t.tasks_done.load(SeqCst) >= h.prod.msgs_in.load(SeqCst);
        loop {
            self.check_open()?;
            if finished() {
                return Ok(true);
            }
            let Some(slice) = deadline.next_slice(SLICE) else {
                return Ok(false);
            };
            let seq = t.join_seq.load(SeqCst);
            t.join_waiters.fetch_add(1, SeqCst);
            if !finished() && !self.any_closed() {
                wait::futex_wait(&t.join_seq, seq, slice);
            }
            t.join_waiters.fetch_sub(1, SeqCst);
        }
    }

    // ---- lifecycle ----

    pub fn msg_id(self: std::sync::Arc<Self>) -> u64 {
        let _guard = self.local();
        match self.msg_id.load(Acquire) {
            0 => {
                let id = crate::registry::register(&self);
                self.msg_id.store(id, Release);
                id
            }
            id => id,
        }
    }

    pub fn detach(&self) {
        if self.closed.swap(true, AcqRel) {
            return;
        }
        // A handle inherited through fork() belongs to the parent's slot; leave it alone.
        if std::process::id() == self.pid && self.seg.shrunk().is_none() {
            // This process's async waiters on this handle (watch.rs) see it closed now.
            let h = self.seg.header();
            wait::wake(&h.data_wake);
            wait::wake(&h.space_wake);
            wait::wake_tasks(&h.tasks);
        }
        if std::process::id() != self.pid {
            return;
        }
        let _guard = self.local();
        let id = self.msg_id.load(Acquire);
        if id != 0 {
            crate::registry::forget(id);
        }
        if self.seg.shrunk().is_some() {
            // Its slot is past the end of a shortened file: touching it would raise SIGBUS.
            // The slot's lock goes away when the file is closed.
            return;
        }
        // A loan left open publishes nothing; views left pinned are released.
        if let Some((pos, len)) = lock(&self.loan).take() {
            self.ring().end_loan(pos, len, false);
        }
        let pins = std::mem::take(&mut *lock(&self.pins));
        for (pos, len) in pins {
            self.ring().unpin(pos, len, (layout::NONE, 0));
        }
        // Messages this handle holds unacknowledged are delivered again.
        let ring = self.ring();
        if lease::release_all(&ring) {
            self.settle_moving(&ring);
        }
        attach::detach(&self.seg.file, self.seg.slots(), self.me.slot);
        if self.auto_cleanup && attach::lock_table_if_unused(&self.seg.file) {
            let _ = self.seg.unlink_if_ours();
            attach::unlock_table(&self.seg.file);
        }
    }

    pub fn unlink(&self) -> Result<()> {
        if self.closed.load(Acquire) {
            return Err(QueueError::closed("this handle was closed"));
        }
        if self.seg.shrunk().is_none() {
            mark_closed(&self.seg);
        }
        let res = self.seg.unlink_if_ours();
        self.detach();
        res.map(|_| ())
    }
}

impl Drop for SageQueue {
    fn drop(&mut self) {
        self.detach();
    }
}
