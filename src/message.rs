//! The message path of the UDL: the one family of calls every language moves messages
//! through, addressed by a handle's id (registry.rs).
//!
//! The calls report by value: "nothing before the timeout" is a value (0 or NOTHING), and a
//! failure returns FAILED and leaves its typed error in a slot of the calling thread, which
//! `msg_error` raises. Nothing is ever written to the UniFFI call status (a panic is caught
//! here and becomes an error too), so a binding may share one status between threads and
//! needs no per-call status check. Taken messages are copied into the calling thread's view
//! buffer, whose address a binding reads again only when it grows.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::time::Instant;

use crate::error::{QueueError, Result};
use crate::registry::lookup;
use crate::wait::Deadline;
use crate::watch::{self, Line};

/// msg_take / msg_take_batch: nothing came before the timeout.
pub const NOTHING: u64 = u64::MAX;
/// msg_take / msg_take_batch: the call failed; msg_error raises why.
pub const FAILED: u64 = u64::MAX - 1;

thread_local! {
    /// The calling thread's copy-out buffer for taken messages.
    static VIEW: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(64 << 10));
    /// The address of the calling thread's last pinned view.
    static PIN_ADDRESS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The receipts of the calling thread's last acked take, in message order.
    static RECEIPTS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// The error of the calling thread's last failed message call.
    static LAST_ERROR: RefCell<Option<QueueError>> = const { RefCell::new(None) };
}

/// Run `f`; a panic becomes an error (nothing may unwind into the foreign caller's status).
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(QueueError::Io {
            reason: format!("internal error (a bug in sage-queue): {what}"),
        })
    })
}

/// Keep `e` for msg_error and return `failed`.
fn fail<T>(e: QueueError, failed: T) -> T {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
    failed
}

/// Clear the view, fill it, and return its length.
fn into_view(fill: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<u64> {
    VIEW.with(|v| {
        let mut v = v.borrow_mut();
        v.clear();
        fill(&mut v)?;
        Ok(v.len() as u64)
    })
}

/// A take's outcome as a value: the view's length, NOTHING, or FAILED.
fn taken(res: Result<u64>) -> u64 {
    match res {
        Ok(n) => n,
        Err(QueueError::Empty) => NOTHING,
        Err(e) => fail(e, FAILED),
    }
}

pub fn msg_put(id: u64, head: &[u8], body: &[u8], timeout: f64) -> i8 {
    match guarded(|| lookup(id)?.put_pair(head, body, timeout)) {
        Ok(()) => 1,
        Err(QueueError::Full) => 0,
        Err(e) => fail(e, -1),
    }
}

pub fn msg_try_put(id: u64, head: &[u8], body: &[u8]) -> i8 {
    msg_put(id, head, body, 0.0)
}

pub fn msg_take(id: u64, timeout: f64) -> u64 {
    taken(guarded(|| {
        let q = lookup(id)?;
        into_view(|v| q.get_into(v, timeout))
    }))
}

pub fn msg_try_take(id: u64) -> u64 {
    msg_take(id, 0.0)
}

pub fn msg_put_batch(id: u64, lengths: &[u8], payloads: &[u8], timeout: f64) -> i64 {
    match guarded(|| lookup(id)?.put_batch(lengths, payloads, timeout)) {
        Ok(n) => i64::from(n),
        Err(QueueError::Full) => 0,
        Err(e) => fail(e, -1),
    }
}

pub fn msg_take_batch(id: u64, max_items: u32, max_bytes: u64, timeout: f64) -> u64 {
    taken(guarded(|| {
        let q = lookup(id)?;
        into_view(|v| q.get_batch_into(v, max_items, max_bytes, timeout))
    }))
}

/// An acked take (queue.rs `get_acked_into`): the view holds the payload (`batch` false) or
/// the table (`batch` true), RECEIPTS one receipt per message.
fn take_acked(id: u64, batch: bool, max_items: u32, max_bytes: u64, timeout: f64) -> u64 {
    RECEIPTS.with(|r| r.borrow_mut().clear());
    taken(guarded(|| {
        let q = lookup(id)?;
        RECEIPTS.with(|r| {
            let mut r = r.borrow_mut();
            into_view(|v| q.get_acked_into(v, &mut r, batch, max_items, max_bytes, timeout))
        })
    }))
}

pub fn msg_take_acked(id: u64, timeout: f64) -> u64 {
    take_acked(id, false, 1, u64::MAX, timeout)
}

pub fn msg_take_acked_batch(id: u64, max_items: u32, max_bytes: u64, timeout: f64) -> u64 {
    take_acked(id, true, max_items, max_bytes, timeout)
}

/// The receipt of message `index` of the calling thread's last acked take (0: none).
pub fn msg_receipt(index: u32) -> u64 {
    RECEIPTS.with(|r| r.borrow().get(index as usize).copied().unwrap_or(0))
}

pub fn msg_ack(id: u64, receipt: u64) -> i8 {
    done(guarded(|| lookup(id)?.ack(receipt)))
}

pub fn msg_nack(id: u64, receipt: u64) -> i8 {
    done(guarded(|| lookup(id)?.nack(receipt)))
}

/// A call that returns 1 or FAILED (-1) as a value.
fn done(res: Result<()>) -> i8 {
    match res {
        Ok(()) => 1,
        Err(e) => fail(e, -1),
    }
}

pub fn msg_loan(id: u64, len: u64, timeout: f64) -> u64 {
    match guarded(|| lookup(id)?.loan(len, timeout)) {
        Ok(address) => address,
        Err(QueueError::Full) => NOTHING,
        Err(e) => fail(e, FAILED),
    }
}

pub fn msg_commit(id: u64) -> i8 {
    done(guarded(|| lookup(id)?.commit_loan()))
}

pub fn msg_abort(id: u64) -> i8 {
    done(guarded(|| lookup(id)?.abort_loan()))
}

pub fn msg_pin(id: u64, timeout: f64) -> u64 {
    taken(guarded(|| {
        let (address, len) = lookup(id)?.pin(timeout)?;
        PIN_ADDRESS.with(|a| a.set(address));
        Ok(len)
    }))
}

pub fn msg_pin_address() -> u64 {
    PIN_ADDRESS.with(|a| a.get())
}

pub fn msg_unpin(id: u64, address: u64) -> i8 {
    done(guarded(|| lookup(id)?.unpin(address)))
}

// ---- async: awaited by Kotlin coroutines, Swift tasks and Python's asyncio ----

/// The lines `msg_ready_async` waits on, by number.
pub const READY_DATA: u8 = 0;
pub const READY_SPACE: u8 = 1;
pub const READY_TASKS: u8 = 2;

pub(crate) fn line_of(line: u8) -> Result<Line> {
    match line {
        READY_DATA => Ok(Line::Data),
        READY_SPACE => Ok(Line::Space),
        READY_TASKS => Ok(Line::Tasks),
        other => Err(QueueError::invalid(format!(
            "line must be 0 (data), 1 (space) or 2 (tasks), not {other}"
        ))),
    }
}

/// The state of `line` (watch.rs `line_state`) for a caller to read before its non-waiting
/// try, and to give `msg_ready_async` if the try finds nothing (or no room). FAILED when the
/// id or the line is bad (msg_error raises why).
pub fn msg_line_state(id: u64, line: u8) -> u64 {
    match guarded(|| Ok(lookup(id)?.line_state(line_of(line)?))) {
        Ok(v) => v,
        Err(e) => fail(e, FAILED),
    }
}

/// Wait, without a thread per waiter (watch.rs), until `line` moved on from the state `seen`
/// that the caller read before its try (a message committed, room returned, a task done), or
/// the queue closed: true then; false when the timeout ends first. It never takes or puts:
/// the caller tries its non-waiting call again (and waits again if someone else was faster),
/// so cancelling this wait (dropping the future) can lose or duplicate nothing.
pub async fn msg_ready_async(id: u64, line: u8, seen: u64, timeout: f64) -> Result<bool> {
    let q = lookup(id)?;
    let line = line_of(line)?;
    let deadline = Deadline::from_secs(timeout)?;
    if q.moved_on(line, seen) {
        return Ok(true);
    }
    if deadline.is_immediate() {
        return Ok(false);
    }
    let end = deadline.end();
    loop {
        // While messages are held unacknowledged, a data waiter wakes every LEASE_SLICE to
        // return those of dead holders and timed-out ones: nobody else may be taking (whose
        // takes would), and that is what moves the line on for them.
        let slice = (line == Line::Data && q.leases_held()).then(|| Instant::now() + LEASE_SLICE);
        let until = match (end, slice) {
            (Some(e), Some(s)) => Some(e.min(s)),
            (e, s) => e.or(s),
        };
        watch::ready(q.clone(), line, seen, until).await;
        if q.moved_on(line, seen) {
            return Ok(true);
        }
        if slice.is_none() {
            // Woken before the end (the line moved on and back, or the handle closed): the
            // caller tries again.
            return Ok(end.is_none_or(|e| Instant::now() < e));
        }
        q.return_leases_now();
        if q.moved_on(line, seen) {
            return Ok(true);
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return Ok(false);
        }
    }
}

/// How often an async data waiter looks for leases to return while messages are held
/// unacknowledged (their holders may die or time out while nobody takes).
const LEASE_SLICE: std::time::Duration = std::time::Duration::from_millis(20);

pub fn msg_view_address() -> u64 {
    VIEW.with(|v| v.borrow().as_ptr() as u64)
}

pub fn msg_view_capacity() -> u64 {
    VIEW.with(|v| v.borrow().capacity() as u64)
}

pub fn msg_error() -> Result<()> {
    match LAST_ERROR.with(|slot| slot.borrow_mut().take()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
