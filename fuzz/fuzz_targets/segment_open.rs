//! Open arbitrary bytes as a segment file: SageQueue::open must return Ok or a typed error,
//! never panic, hang or read out of bounds; if it opens, gets, puts and stats must behave too.
//!
//! Input: byte 0 chooses the mode.
//! - even: the rest of the input is the whole file (random header fields and lengths);
//! - 3 mod 4: the edits below are written into a valid segment after it was opened (another
//!   process corrupting a queue in use), and the calls must still stay inside the segment;
//! - 1 mod 4: a valid segment (a few messages in it) is mutated by the rest of the input, read
//!   as 14-byte edits: region (1), offset (4), width (1: 1, 2, 4 or 8 bytes), value (8 -> use
//!   `width` bytes), where region picks the identity header, the cursor lines, the slots or the
//!   ring; a trailing byte may shorten or lengthen the file.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sage_queue::SageQueue;

#[path = "common.rs"]
mod common;

const NAME: &str = "fz";
const DATA_OFFSET: usize = 4096 + 1024 * 64;

fn template() -> &'static Vec<u8> {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        common::queue_dir();
        let q = SageQueue::create("fz-template", 4096, 0o600, false, 0).expect("create template");
        for i in 0..5u8 {
            q.put(&vec![i; 100 * i as usize + 1], 0.0).expect("put");
        }
        q.get(0.0).expect("get");
        let bytes = std::fs::read(q.path()).expect("read template");
        q.unlink().expect("unlink template");
        bytes
    })
}

/// The edits `data` describes, as (file offset, bytes) against the template, and the trailing
/// byte that may change the file's length.
fn edits(data: &[u8]) -> (Vec<(usize, Vec<u8>)>, Option<u8>) {
    let len = template().len();
    let mut chunks = data.chunks_exact(14);
    let mut out = Vec::new();
    for e in &mut chunks {
        let region = e[0] % 4;
        let off = u32::from_le_bytes([e[1], e[2], e[3], e[4]]) as usize;
        let (base, size) = match region {
            0 => (0, 128),                         // identity
            1 => (128, 1024 - 128),                // cursors, locks, stats
            2 => (4096, 64 * 8),                   // the first slots
            _ => (DATA_OFFSET, len - DATA_OFFSET), // the ring
        };
        let width = 1usize << (e[5] % 4);
        let at = (base + off % size) & !(width - 1);
        let end = (at + width).min(len);
        out.push((at, e[6..6 + (end - at)].to_vec()));
    }
    (out, chunks.remainder().first().copied())
}

fn mutate(data: &[u8]) -> Vec<u8> {
    let mut seg = template().clone();
    let (edits, resize) = edits(data);
    for (at, b) in edits {
        seg[at..at + b.len()].copy_from_slice(&b);
    }
    if let Some(b) = resize {
        match b % 4 {
            0 => seg.truncate(seg.len() - 1 - (b as usize * 64)),
            1 => seg.extend(std::iter::repeat(0).take(4096 * (b as usize % 3 + 1))),
            _ => {}
        }
    }
    seg
}

/// Calls that must return a value or a typed error, never panic, hang or touch memory outside
/// the segment.
fn exercise(q: &SageQueue) {
    for _ in 0..4 {
        let _ = q.get(0.0);
    }
    let _ = q.put(b"fuzz", 0.0);
    let _ = q.put(&[7u8; 300], 0.0);
    let _ = q.get_batch(8, 1 << 20, 0.0);
    let _ = q.stats();
    let _ = q.qsize();
    let _ = q.get(0.0);
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let dir = common::queue_dir();
    let path = dir.join(format!("sq-{}-{}", common::euid(), NAME));
    let _ = std::fs::remove_file(&path);
    if data[0] % 4 == 3 {
        // Corruption while open: another process with write access changes the shared memory
        // of a queue this one already uses (open checks can no longer help).
        use std::os::unix::fs::FileExt;
        std::fs::write(&path, template()).expect("write segment");
        let q = SageQueue::open(NAME, false).expect("open the template");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open for writing");
        for (at, b) in edits(&data[1..]).0 {
            file.write_all_at(&b, at as u64)
                .expect("edit the live segment");
        }
        exercise(&q);
        q.detach();
        let _ = std::fs::remove_file(&path);
        return;
    }
    let bytes = if data[0] % 2 == 0 {
        data[1..].to_vec()
    } else {
        mutate(&data[1..])
    };
    std::fs::write(&path, &bytes).expect("write segment");
    match SageQueue::open(NAME, false) {
        Ok(q) => {
            exercise(&q);
            q.detach();
        }
        // A valid segment whose `closed` word is set opens, then reads as an unlinked queue
        // (NotFound) after the attachment was made and undone: its slot generation changed.
        Err(sage_queue::QueueError::NotFound { .. }) => {}
        Err(e) => {
            // A typed error: the file failed a check and must be unchanged.
            let after = std::fs::read(&path).expect("read back");
            assert!(
                after == bytes,
                "a file that failed to open was modified: {e:?}"
            );
        }
    }
    let _ = std::fs::remove_file(&path);
});
