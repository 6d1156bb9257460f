//! Handles addressed by number, for the `raw_*` functions of the UDL.
//!
//! A generated method call clones the object handle through an extra FFI call; a hot path in a
//! binding can instead pass a plain u64 id. The registry holds weak references, so it never
//! keeps a queue alive, and ids are never reused, so a stale id can only fail with Closed.

use std::cell::RefCell;
use std::sync::{Arc, RwLock, Weak};

use crate::error::{QueueError, Result};
use crate::queue::SageQueue;

static HANDLES: RwLock<Vec<Weak<SageQueue>>> = RwLock::new(Vec::new());

/// Register `q` and return its id (ids start at 1).
pub fn register(q: &Arc<SageQueue>) -> u64 {
    let mut v = HANDLES.write().unwrap_or_else(|p| p.into_inner());
    v.push(Arc::downgrade(q));
    v.len() as u64
}

/// Forget id `id` (at close).
pub fn forget(id: u64) {
    let mut v = HANDLES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = v.get_mut(id.wrapping_sub(1) as usize) {
        *w = Weak::new();
    }
}

pub fn lookup(id: u64) -> Result<Arc<SageQueue>> {
    let v = HANDLES.read().unwrap_or_else(|p| p.into_inner());
    v.get(id.wrapping_sub(1) as usize)
        .and_then(Weak::upgrade)
        .ok_or_else(|| QueueError::closed("no open handle has this id"))
}

pub fn raw_put(id: u64, data: &[u8], timeout: f64) -> Result<()> {
    lookup(id)?.put(data, timeout)
}

pub fn raw_get(id: u64, timeout: f64) -> Result<Vec<u8>> {
    lookup(id)?.get(timeout)
}

pub fn raw_put_batch(id: u64, frames: &[u8], timeout: f64) -> Result<u32> {
    lookup(id)?.put_batch(frames, timeout)
}

pub fn raw_get_batch(id: u64, max_items: u32, max_bytes: u64, timeout: f64) -> Result<Vec<u8>> {
    lookup(id)?.get_batch(max_items, max_bytes, timeout)
}

thread_local! {
    /// The calling thread's copy-out buffer for the raw_*_view functions.
    static VIEW: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(64 << 10));
}

fn into_view(fill: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<u64> {
    VIEW.with(|v| {
        let mut v = v.borrow_mut();
        v.clear();
        fill(&mut v)?;
        Ok(v.len() as u64)
    })
}

pub fn raw_get_view(id: u64, timeout: f64) -> Result<u64> {
    let q = lookup(id)?;
    into_view(|v| q.get_into(v, timeout))
}

pub fn raw_get_batch_view(id: u64, max_items: u32, max_bytes: u64, timeout: f64) -> Result<u64> {
    let q = lookup(id)?;
    into_view(|v| q.get_batch_into(v, max_items, max_bytes, timeout))
}

pub fn raw_view_address() -> u64 {
    VIEW.with(|v| v.borrow().as_ptr() as u64)
}

pub fn raw_view_capacity() -> u64 {
    VIEW.with(|v| v.borrow().capacity() as u64)
}
