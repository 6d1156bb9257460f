//! Random buffers to put_batch and raw_put_many on a real queue: Ok or a typed error, never a
//! panic; on error nothing was put; on Ok(n) exactly the first n frames were put, intact.
//!
//! Input: byte 0 chooses put_batch (even) or raw_put_many (odd); for raw_put_many bytes 1-2
//! split the rest into the lengths table and the payloads.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sage_queue::{parse_frames, raw_put_many, SageQueue};

#[path = "common.rs"]
mod common;

fn queue() -> &'static (Arc<SageQueue>, u64) {
    static Q: OnceLock<(Arc<SageQueue>, u64)> = OnceLock::new();
    Q.get_or_init(|| {
        common::queue_dir();
        let q = Arc::new(
            SageQueue::open_or_create(
                &format!("fz-batch-{}", std::process::id()),
                16384,
                0o600,
                true,
                0,
            )
            .expect("create queue"),
        );
        let id = q.clone().raw_id();
        (q, id)
    })
}

/// The expected messages of a table-layout batch, if it is well formed.
fn table(lengths: &[u8], payloads: &[u8]) -> Option<Vec<Vec<u8>>> {
    if lengths.len() % 4 != 0 {
        return None;
    }
    let mut at = 0usize;
    let mut out = Vec::new();
    for c in lengths.chunks_exact(4) {
        let n = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
        let end = at.checked_add(n)?;
        out.push(payloads.get(at..end)?.to_vec());
        at = end;
    }
    (at == payloads.len()).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let (q, id) = queue();
    while q.get(0.0).is_ok() {}
    assert_eq!(q.qsize(), 0);
    let (res, expected) = if data[0] % 2 == 0 {
        let frames = &data[1..];
        let expected = parse_frames(frames)
            .ok()
            .map(|v| v.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
        (q.put_batch(frames, 0.0), expected)
    } else {
        let rest = &data[1..];
        let split = if rest.len() >= 2 {
            u16::from_le_bytes([rest[0], rest[1]]) as usize
        } else {
            0
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let split = split.min(rest.len());
        let (lengths, payloads) = rest.split_at(split);
        (
            raw_put_many(*id, lengths, payloads, 0.0),
            table(lengths, payloads),
        )
    };
    match res {
        Ok(n) => {
            let expected = expected.expect("Ok for a malformed batch");
            assert!(n as usize <= expected.len());
            assert_eq!(q.qsize(), n as u64, "qsize after Ok({n})");
            for want in expected.iter().take(n as usize) {
                assert_eq!(&q.get(0.0).expect("a put message"), want);
            }
            assert!(q.get(0.0).is_err(), "more messages than Ok({n}) said");
        }
        Err(_) => assert_eq!(q.qsize(), 0, "an error but something was put"),
    }
});
