//! The two batch layouts of the UDL's batch calls: a frame buffer (each message a u32
//! little-endian length, then its bytes) and the table layout (the u32 lengths and the
//! concatenated payloads as two buffers). A malformed batch is rejected whole.

use crate::error::{QueueError, Result};
use crate::ring::Msg;

/// Split a frame buffer into payloads, rejecting it whole if any frame is malformed.
pub fn parse_frames(buf: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(QueueError::invalid(format!(
                "frame {} is cut short: {} bytes left where a 4-byte length belongs",
                out.len(),
                rest.len()
            )));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        if rest.len() - 4 < len {
            return Err(QueueError::invalid(format!(
                "frame {} says {len} bytes but only {} remain",
                out.len(),
                rest.len() - 4
            )));
        }
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

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
