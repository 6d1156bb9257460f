//! Handles addressed by number, for the message path of the UDL (message.rs).
//!
//! A generated method call clones the object handle through an extra FFI call; a hot path in a
//! binding can instead pass a plain u64 id. The table takes no lock (a lock held by another
//! thread at `fork()` would stay held forever in the child): ids come from a counter and are
//! never reused, slots live in chunks that are allocated once and never freed, and each slot
//! holds a weak reference, so the table never keeps a queue alive and a stale id can only fail
//! with Closed. A forgotten slot's weak reference is leaked on purpose (a lookup may be reading
//! it): that is one small allocation per handle ever opened, the queue itself is freed.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};
use std::sync::{Arc, Weak};

use crate::error::{QueueError, Result};
use crate::queue::SageQueue;

const CHUNK: usize = 1024;
const CHUNKS: usize = 4096;

type Chunk = [AtomicPtr<SageQueue>; CHUNK];

static NEXT: AtomicU64 = AtomicU64::new(1);
static TABLE: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

/// The slot of `id`, allocating its chunk if `create`.
fn slot(id: u64, create: bool) -> Option<&'static AtomicPtr<SageQueue>> {
    let i = id.checked_sub(1)? as usize;
    let cell = TABLE.get(i / CHUNK)?;
    let mut chunk = cell.load(Acquire);
    if chunk.is_null() {
        if !create {
            return None;
        }
        let fresh = Box::into_raw(Box::new(
            [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNK],
        ));
        chunk = match cell.compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                winner
            }
        };
    }
    // SAFETY: chunks are allocated once and never freed, so the pointer stays valid forever.
    Some(unsafe { &(*chunk)[i % CHUNK] })
}

/// Register `q` and return its id (0 if this process has used up its 4 million ids).
pub fn register(q: &Arc<SageQueue>) -> u64 {
    let id = NEXT.fetch_add(1, Relaxed);
    match slot(id, true) {
        Some(s) => {
            s.store(Weak::into_raw(Arc::downgrade(q)) as *mut SageQueue, Release);
            id
        }
        None => 0,
    }
}

/// Forget `id` (at close). The weak reference is leaked, see the module comment.
pub fn forget(id: u64) {
    if let Some(s) = slot(id, false) {
        s.store(std::ptr::null_mut(), Release);
    }
}

pub fn lookup(id: u64) -> Result<Arc<SageQueue>> {
    let p = slot(id, false).map_or(std::ptr::null_mut(), |s| s.load(Acquire));
    if p.is_null() {
        return Err(QueueError::closed("no open handle has this id"));
    }
    // SAFETY: `p` came from Weak::into_raw and that weak reference is never released, so the
    // allocation it points to stays valid; ManuallyDrop keeps us from releasing it here.
    let weak = ManuallyDrop::new(unsafe { Weak::from_raw(p as *const SageQueue) });
    weak.upgrade()
        .ok_or_else(|| QueueError::closed("no open handle has this id"))
}
