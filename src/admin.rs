//! What concerns a queue folder rather than one handle: the statistics records, listing,
//! removing by name (also files that are not queues, when asked), garbage collection, and
//! marking a queue closed for every attacher.

use std::sync::atomic::Ordering::*;

use crate::attach;
use crate::error::{QueueError, Result};
use crate::layout;
use crate::name;
use crate::ring::{Me, Ring};
use crate::segment::{self, Segment};
use crate::wait;

pub struct QueueStats {
    pub name: String,
    pub path: String,
    pub capacity: u64,
    pub max_message_size: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub messages: u64,
    pub attached: u32,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub waits_full: u64,
    pub waits_empty: u64,
    pub recovered: u64,
    pub lost: u64,
    pub unfinished_tasks: u64,
    pub closed: bool,
    pub creator_pid: u32,
    pub owner_uid: u32,
    pub created_unix_ms: u64,
    pub max_items: u64,
    pub pids: Vec<u32>,
    pub consumers_waiting: u32,
    pub producers_waiting: u32,
    pub pinned: u32,
    pub pinned_bytes: u64,
    pub unacked: u32,
    pub redeliverable: u32,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub ack_dropped: u64,
}

pub struct QueueInfo {
    pub name: String,
    pub path: String,
    pub valid: bool,
    pub error: Option<String>,
    pub capacity: u64,
    pub used_bytes: u64,
    pub messages: u64,
    pub attached: u32,
    pub creator_pid: u32,
}

/// Mark a queue closed for every attacher and wake all of its sleepers.
pub(crate) fn mark_closed(seg: &Segment) {
    let h = seg.header();
    h.id.closed.store(1, SeqCst);
    wait::wake(&h.data_wake);
    wait::wake(&h.space_wake);
    wait::wake_tasks(&h.tasks);
    // Sleepers that announced themselves after our check still time out within SLICE.
}

/// The statistics record of `seg`; `pids` are the attached processes' (the caller's
/// included), so `attached` is their number.
/// `me`: the asking handle (whose own slot a lock probe through its file cannot see), or
/// None when reading without a handle.
pub(crate) fn stats_of(seg: &Segment, name: &str, pids: Vec<u32>, me: Option<Me>) -> QueueStats {
    let h = seg.header();
    let me = me.unwrap_or(Me {
        slot: u32::MAX,
        gen: 0,
    });
    let (pinned, pinned_bytes) = Ring::new(seg, me).pinned();
    let (unacked, redeliverable) = crate::lease::counts(seg.leases());
    let b = &h.base;
    let since =
        |now: u64, base: &std::sync::atomic::AtomicU64| now.saturating_sub(base.load(Relaxed));
    let msgs_in = h.prod.msgs_in.load(Acquire);
    let msgs_out = h.cons.msgs_out.load(Acquire);
    let tail = h.prod.tail.load(Acquire);
    let released = h.rel.released.load(Acquire);
    let used = tail.saturating_sub(released).min(seg.capacity);
    QueueStats {
        name: name.to_string(),
        path: seg.path.display().to_string(),
        capacity: seg.capacity,
        max_message_size: layout::max_message(seg.capacity),
        used_bytes: used,
        free_bytes: seg.capacity - used,
        messages: msgs_in.saturating_sub(msgs_out) + redeliverable as u64,
        attached: pids.len() as u32,
        msgs_in: since(msgs_in, &b.msgs_in),
        msgs_out: since(msgs_out, &b.msgs_out),
        bytes_in: since(h.prod.bytes_in.load(Relaxed), &b.bytes_in),
        bytes_out: since(h.cons.bytes_out.load(Relaxed), &b.bytes_out),
        waits_full: since(h.prod.waits_full.load(Relaxed), &b.waits_full),
        waits_empty: since(h.cons.waits_empty.load(Relaxed), &b.waits_empty),
        recovered: since(h.rel.recovered.load(Relaxed), &b.recovered),
        lost: since(h.rel.lost.load(Relaxed), &b.lost),
        unfinished_tasks: msgs_in.saturating_sub(h.tasks.tasks_done.load(Acquire)),
        closed: h.id.closed.load(Acquire) != 0,
        creator_pid: h.id.creator_pid,
        owner_uid: h.id.owner_uid,
        created_unix_ms: h.id.created_unix_ms,
        max_items: h.id.max_items,
        pids,
        pinned,
        pinned_bytes,
        unacked,
        redeliverable,
        redelivered: h.leases.redelivered.load(Relaxed),
        dead_lettered: h.leases.dead_lettered.load(Relaxed),
        ack_dropped: h.leases.dropped.load(Relaxed),
        consumers_waiting: h.data_wake.waiters.load(Relaxed),
        producers_waiting: h.space_wake.waiters.load(Relaxed),
    }
}

pub fn queue_dir() -> String {
    segment::queue_dir().display().to_string()
}

pub fn validate_name(name: &str) -> Result<()> {
    name::validate(name)
}

/// The largest message of a queue of `capacity` bytes; a capacity above the largest queue
/// (which `create` refuses) saturates to the largest queue's.
pub fn max_message_size(capacity: u64) -> u64 {
    layout::max_message(layout::round_capacity(capacity).unwrap_or(layout::MAX_CAPACITY))
}

/// The statistics of queue `name`, read from its header without attaching (so a reader such
/// as `sage-queue top` never holds a queue, is never counted, never removes one).
pub fn queue_stats(name: &str) -> Result<QueueStats> {
    name::validate(name)?;
    let path = segment::segment_path(name);
    let seg = Segment::open(&path, name, false)?;
    let pids = attach::other_pids(&seg.file, seg.slots());
    Ok(stats_of(&seg, name, pids, None))
}

/// Remove queue `name`'s segment. A file there that is not a valid segment (NotAQueue, or
/// Incompatible: another layout version) is left alone and its error returned, unless `force`:
/// then it is removed if it is a regular file of this user (never a symbolic link's target,
/// never another user's file).
pub fn unlink_queue(name: &str, force: bool) -> Result<()> {
    name::validate(name)?;
    let path = segment::segment_path(name);
    match Segment::open(&path, name, false) {
        Ok(seg) => {
            mark_closed(&seg);
            seg.unlink_if_ours().map(|_| ())
        }
        Err(QueueError::NotAQueue { .. } | QueueError::Incompatible { .. }) if force => {
            segment::remove_invalid(&path)
        }
        Err(e) => Err(e),
    }
}

/// This user's segment files in the queue folder: (queue name, path).
fn own_segments() -> Result<Vec<(String, std::path::PathBuf)>> {
    let dir = segment::queue_dir();
    let uid = segment::euid();
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| QueueError::io(&format!("cannot list {}", dir.display()), e))?;
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let f = e.file_name();
            let n = name::parse_file_name(uid, f.to_str()?)?.to_string();
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

pub fn list_queues() -> Result<Vec<QueueInfo>> {
    Ok(own_segments()?
        .into_iter()
        .map(|(n, path)| match Segment::open(&path, &n, false) {
            Ok(seg) => {
                let s = stats_of(&seg, &n, attach::other_pids(&seg.file, seg.slots()), None);
                QueueInfo {
                    name: n,
                    path: s.path,
                    valid: true,
                    error: None,
                    capacity: s.capacity,
                    used_bytes: s.used_bytes,
                    messages: s.messages,
                    attached: s.attached,
                    creator_pid: s.creator_pid,
                }
            }
            Err(e) => QueueInfo {
                name: n,
                path: path.display().to_string(),
                valid: false,
                error: Some(e.to_string()),
                capacity: 0,
                used_bytes: 0,
                messages: 0,
                attached: 0,
                creator_pid: 0,
            },
        })
        .collect())
}

/// Remove every segment of this user whose attached processes have all exited; with
/// `include_invalid`, also this user's regular files named like segments that are not
/// segments at all (NotAQueue; a segment of another layout version may be in use and is kept).
/// Returns the queue names removed.
pub fn collect_garbage(include_invalid: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (n, path) in own_segments()? {
        let seg = match Segment::open(&path, &n, false) {
            Ok(seg) => seg,
            Err(QueueError::NotAQueue { .. }) if include_invalid => {
                if segment::remove_invalid(&path).is_ok() {
                    removed.push(n);
                }
                continue;
            }
            Err(_) => continue, // not a valid segment: never touched unless asked
        };
        if attach::lock_table_if_unused(&seg.file) {
            if seg.unlink_if_ours().unwrap_or(false) {
                removed.push(n);
            }
            attach::unlock_table(&seg.file);
        }
    }
    segment::remove_stale_temp_files();
    Ok(removed)
}
