//! Random table batches to put_batch and msg_put_batch on a real queue: Ok or a typed error,
//! never a panic; a malformed table is InvalidArgument and a message too large TooLarge, with
//! nothing put; on Ok(n) exactly the first n messages were put, intact, and come back out of
//! get_batch / msg_take_batch through parse_taken. And parse_taken on random buffers never
//! panics and accepts exactly the well-formed ones.
//!
//! Input: byte 0 chooses put_batch (even) or msg_put_batch (odd); bytes 1-2 split the rest
//! into the lengths buffer and the payloads. The whole input after byte 0 is also given to
//! parse_taken as a taken batch.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sage_queue::{
    msg_error, msg_put_batch, msg_take_batch, msg_view_address, parse_taken, QueueError, SageQueue,
    FAILED, NOTHING,
};

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
        let id = q.clone().msg_id();
        (q, id)
    })
}

/// The messages of a table (u32 little-endian lengths, concatenated payloads), if it is well
/// formed: a reference parser, independent of the crate's.
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

/// The messages of a taken batch (payloads, u32 lengths, u32 count), if it is well formed.
fn taken(buf: &[u8]) -> Option<Vec<Vec<u8>>> {
    let count_at = buf.len().checked_sub(4)?;
    let count = u32::from_le_bytes(buf[count_at..].try_into().unwrap()) as usize;
    let lengths_at = count_at.checked_sub(count.checked_mul(4)?)?;
    table(&buf[lengths_at..count_at], &buf[..lengths_at])
}

/// Everything in the queue, taken in batches through the Rust API or the message path.
fn drain(q: &SageQueue, id: u64, by_id: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let got = if by_id {
            let n = msg_take_batch(id, 7, 5000, 0.0);
            if n == NOTHING {
                break;
            }
            assert_ne!(n, FAILED, "msg_take_batch failed: {:?}", msg_error());
            // SAFETY: this thread's view holds the n bytes just taken until its next take.
            let view =
                unsafe { std::slice::from_raw_parts(msg_view_address() as *const u8, n as usize) };
            parse_taken(view)
                .expect("a taken batch that parse_taken refuses")
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        } else {
            match q.get_batch(7, 5000, 0.0) {
                Ok(b) => parse_taken(&b)
                    .expect("a taken batch that parse_taken refuses")
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                Err(QueueError::Empty) => break,
                Err(e) => panic!("get_batch failed: {e:?}"),
            }
        };
        assert!(!got.is_empty(), "a batch take returned no message");
        out.extend(got);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let rest = &data[1..];
    // parse_taken on any buffer: no panic, and Ok exactly for the well-formed ones.
    let parsed = parse_taken(rest).map(|v| v.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
    match (&parsed, taken(rest)) {
        (Ok(got), Some(want)) => assert_eq!(got, &want),
        (Err(QueueError::InvalidArgument { .. }), None) => {}
        (got, want) => panic!("parse_taken: {got:?}, a reference parser: {want:?}"),
    }

    let (q, id) = queue();
    let by_id = data[0] % 2 == 1;
    assert!(drain(q, *id, by_id).is_empty());
    assert_eq!(q.qsize(), 0);
    let split = match rest {
        [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
        _ => 0,
    };
    let rest = rest.get(2..).unwrap_or(&[]);
    let (lengths, payloads) = rest.split_at(split.min(rest.len()));
    let expected = table(lengths, payloads);
    let res = if by_id {
        match msg_put_batch(*id, lengths, payloads, 0.0) {
            -1 => Err(msg_error().expect_err("-1 without an error")),
            // 0: none put (no room for the first, or an empty batch); checked below.
            n => Ok(u32::try_from(n).expect("msg_put_batch returned a negative count")),
        }
    } else {
        q.put_batch(lengths, payloads, 0.0)
    };
    assert_eq!(msg_error(), Ok(()), "an error left behind");
    let max = q.max_message_size() as usize;
    match (res, expected) {
        (Ok(n), Some(want)) => {
            assert!(n as usize <= want.len());
            assert!(n > 0 || want.is_empty(), "nothing put into an empty queue");
            assert_eq!(q.qsize(), n as u64, "qsize after Ok({n})");
            assert_eq!(
                drain(q, *id, by_id),
                want[..n as usize],
                "not the first {n}"
            );
        }
        (Ok(n), None) => panic!("Ok({n}) for a malformed table"),
        (Err(e), want) => {
            assert_eq!(q.qsize(), 0, "an error but something was put: {e:?}");
            match (&e, want) {
                (QueueError::InvalidArgument { .. }, None) => {}
                (QueueError::TooLarge { size, max_size }, Some(want)) => {
                    assert_eq!(*max_size as usize, max);
                    assert!(want
                        .iter()
                        .any(|m| m.len() == *size as usize && m.len() > max));
                }
                // The queue is empty: the first message (at most max) always fits.
                (e, want) => panic!("{e:?} for {:?} messages", want.map(|w| w.len())),
            }
        }
    }
});
