//! Attachment slots and process liveness.
//!
//! Each handle owns one slot of the table in the segment. Ownership is an open-file-description
//! (OFD) write lock on byte `i` of the segment file: the kernel drops it when the handle's file
//! is closed or its process dies, so a crashed attacher can never look alive, whatever pid is
//! reused later. The slot's generation grows at every attach, so work tagged with an old
//! generation is known to belong to a dead owner. Counting live slots and the "am I the last
//! one?" check are lock probes, never stored counters that a crash could leave wrong.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use crate::error::{QueueError, Result};
use crate::layout::{Slot, NONE, SLOT_COUNT};

fn flock(kind: i32, start: u64, len: u64) -> libc::flock {
    // SAFETY: libc::flock is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// Try to take (`F_WRLCK`) or drop (`F_UNLCK`) an OFD lock on `[start, start+len)`.
/// Ok(false) when another open file description holds a conflicting lock.
fn set_lock(file: &File, kind: i32, start: u64, len: u64) -> io::Result<bool> {
    let fl = flock(kind, start, len);
    // SAFETY: fd is open for the life of `file`; `fl` is a valid flock for F_OFD_SETLK.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// A lock held by another open file description in `[start, start+len)`, as `(start, end)`.
/// F_OFD_GETLK reports *some* conflicting lock (the first in the kernel's list, which is in
/// order of locking), not necessarily the one with the lowest offset.
fn foreign_lock(file: &File, start: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let mut fl = flock(libc::F_WRLCK, start, len);
    // SAFETY: fd is open; `fl` is a valid, writable flock for F_OFD_GETLK.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    let at = fl.l_start as u64;
    // l_len 0 means "to the end of the file".
    let end = if fl.l_len == 0 {
        u64::MAX
    } else {
        at + fl.l_len as u64
    };
    Ok(Some((at, end)))
}

/// Take a free slot (one whose lock nobody holds), stamp it, and return its index and generation.
pub fn attach(file: &File, slots: &[Slot]) -> Result<(u32, u32)> {
    let pid = std::process::id();
    let first = pid as usize % SLOT_COUNT;
    for k in 0..SLOT_COUNT {
        let i = (first + k) % SLOT_COUNT;
        if set_lock(file, libc::F_WRLCK, i as u64, 1)
            .map_err(|e| QueueError::io("cannot lock attachment slot", e))?
        {
            let s = &slots[i];
            let gen = s.gen.load(Ordering::Relaxed).wrapping_add(1) & GEN_MASK;
            s.claim_start.store(NONE, Ordering::Relaxed);
            s.read_start.store(NONE, Ordering::Relaxed);
            s.loan_start.store(NONE, Ordering::Relaxed);
            s.pin_start.store(NONE, Ordering::Relaxed);
            s.pid.store(pid, Ordering::Relaxed);
            s.gen.store(gen, Ordering::Release);
            return Ok((i as u32, gen));
        }
    }
    Err(QueueError::Io {
        reason: format!("all {SLOT_COUNT} attachment slots of this queue are in use"),
    })
}

/// Generations are 24 bits so an owner fits in the release-lock word with its slot.
pub const GEN_MASK: u32 = (1 << 24) - 1;

/// Give a slot back (the caller's own, taken by `attach` through this same file).
pub fn detach(file: &File, slots: &[Slot], slot: u32) {
    let s = &slots[slot as usize];
    s.claim_start.store(NONE, Ordering::Release);
    s.read_start.store(NONE, Ordering::Release);
    s.loan_start.store(NONE, Ordering::Release);
    s.pin_start.store(NONE, Ordering::Release);
    s.pid.store(0, Ordering::Release);
    let _ = set_lock(file, libc::F_UNLCK, slot as u64, 1);
}

/// Whether another open file description holds slot `i`'s lock.
pub fn held_by_other(file: &File, i: u32) -> bool {
    // An error probing is treated as "alive": waiting is always safe, recovering is not.
    foreign_lock(file, i as u64, 1).map_or(true, |l| l.is_some())
}

/// The pids stamped in the slots held by other open file descriptions (live attachers).
pub fn other_pids(file: &File, slots: &[Slot]) -> Vec<u32> {
    held_ranges(file)
        .into_iter()
        .flat_map(|(start, end)| start..end)
        .filter_map(|i| slots.get(i as usize))
        .map(|s| s.pid.load(Ordering::Acquire))
        .filter(|&pid| pid != 0)
        .collect()
}

/// The byte ranges locked by other open file descriptions in the slot table, one per lock.
///
/// A probe finds one lock anywhere in its range, so the parts of the range on either side of
/// it are probed again (2n+1 probes for n locks).
fn held_ranges(file: &File) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let mut todo = vec![(0u64, SLOT_COUNT as u64)];
    while let Some((start, end)) = todo.pop() {
        if start >= end {
            continue;
        }
        if let Ok(Some((at, until))) = foreign_lock(file, start, end - start) {
            found.push((at.max(start), until.min(end)));
            todo.push((start, at.max(start)));
            todo.push((until.min(end), end));
        }
    }
    found
}

/// If no other open file description holds any slot, lock the whole table (so nobody can
/// attach meanwhile) and return true; the lock goes away with `unlock_table` or the file.
pub fn lock_table_if_unused(file: &File) -> bool {
    set_lock(file, libc::F_WRLCK, 0, SLOT_COUNT as u64).unwrap_or(false)
}

pub fn unlock_table(file: &File) {
    let _ = set_lock(file, libc::F_UNLCK, 0, SLOT_COUNT as u64);
}
