//! The one batch format of the message path, the table: a put passes the u32 little-endian
//! lengths and the concatenated payloads as two buffers; a take returns one buffer holding
//! the payloads, then their u32 lengths, then the u32 count. A malformed batch is rejected
//! whole. (Python builds and parses it with `array` and slicing, with no loop over bytes.)

use crate::error::{QueueError, Result};
use crate::ring::Msg;

/// Split a table-layout batch (u32 little-endian lengths, concatenated payloads), rejecting
/// it whole if the lengths do not add up to the payloads.
pub fn parse_table<'a>(lengths: &[u8], payloads: &'a [u8]) -> Result<Vec<Msg<'a>>> {
    if lengths.len() % 4 != 0 {
        return Err(QueueError::invalid(format!(
            "the lengths buffer has {} bytes, not a multiple of 4",
            lengths.len()
        )));
    }
    let mut out = Vec::with_capacity(lengths.len() / 4);
    let mut rest = payloads;
    for (i, l) in lengths.chunks_exact(4).enumerate() {
        let n = u32::from_le_bytes(l.try_into().unwrap()) as usize;
        if n > rest.len() {
            return Err(QueueError::invalid(format!(
                "item {i} says {n} bytes but only {} remain",
                rest.len()
            )));
        }
        out.push(Msg(&rest[..n], &[]));
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        return Err(QueueError::invalid(format!(
            "{} payload bytes are not covered by the lengths",
            rest.len()
        )));
    }
    Ok(out)
}

/// The table of `msgs`, as a put takes it: (lengths, payloads). For Rust callers and tests.
pub fn encode_table<M: AsRef<[u8]>>(msgs: &[M]) -> (Vec<u8>, Vec<u8>) {
    let mut lengths = Vec::with_capacity(msgs.len() * 4);
    let mut payloads = Vec::new();
    for m in msgs {
        lengths.extend_from_slice(&(m.as_ref().len() as u32).to_le_bytes());
        payloads.extend_from_slice(m.as_ref());
    }
    (lengths, payloads)
}

/// The messages of a taken batch (payloads, u32 lengths, u32 count), rejecting a buffer
/// whose numbers do not add up.
pub fn parse_taken(buf: &[u8]) -> Result<Vec<&[u8]>> {
    let bad = || QueueError::invalid(format!("a taken batch of {} bytes is malformed", buf.len()));
    let count_at = buf.len().checked_sub(4).ok_or_else(bad)?;
    let count = u32::from_le_bytes(buf[count_at..].try_into().unwrap()) as usize;
    let lengths_at = count
        .checked_mul(4)
        .and_then(|n| count_at.checked_sub(n))
        .ok_or_else(bad)?;
    let payloads = &buf[..lengths_at];
    let msgs = parse_table(&buf[lengths_at..count_at], payloads)?;
    Ok(msgs.into_iter().map(|m| m.0).collect())
}
