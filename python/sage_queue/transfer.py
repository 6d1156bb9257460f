"""Whole batches between a queue and one bytes object, for the bridges of sage_queue.remote.

A batch travels in the one batch format of the native message path (the table): the payloads
one after the other, then one u32 little-endian length per message, then the u32 count. One
native call takes a batch into that layout (``take_batch``) and one puts it (``put_batch``),
so a bridge or gateway moves a batch of any size with no per-message work in Python, and Ray
carries it as a single bytes object. The messages are the queue's bytes as they are (already
serialized by whoever put them), so the layout is the same for every serializer.
"""

import array
import sys
import time

from . import _fastpath as _fast
from .queue import SageQueue

EMPTY_BATCH = (0).to_bytes(4, "little")
# Longest single native wait, so that a removed queue or a stop is noticed.
_SLICE = 0.05


def batch_count(batch: bytes) -> int:
    """The number of messages in a batch."""
    return int.from_bytes(batch[-4:], "little")


def take_batch(q: SageQueue, max_items: int, max_bytes: int, wait: float) -> bytes:
    """Wait up to ``wait`` seconds for a message, then take up to ``max_items`` messages
    (``max_bytes`` in total, at least one) as one batch; EMPTY_BATCH if none came.
    Raises QueueClosed (and the other queue errors) as SageQueue's calls do."""
    deadline = time.monotonic() + wait
    q._handle()
    while True:
        step = max(0.0, min(_SLICE, deadline - time.monotonic()))
        n = _fast.take_batch(q._cid, _fast.u32(max_items), _fast.u64(max_bytes),
                             _fast.seconds(step), _fast.STATUS)  # fmt: skip
        if n == _fast.FAILED:
            q._fast_failed(retry=False)
        if n != _fast.NOTHING:
            return bytes(_fast.view(n)[:n])
        if time.monotonic() >= deadline:
            return EMPTY_BATCH


def put_batch(q: SageQueue, batch: bytes) -> int:
    """Put every message of ``batch``, in order, waiting for room as long as it takes (in
    slices, so a removed queue raises QueueClosed); returns the count."""
    count = batch_count(batch)
    if count == 0:
        return 0
    end = len(batch) - 4
    start = end - 4 * count  # the lengths are batch[start:end], the payloads batch[:start]
    lengths, payloads = batch[start:end], batch[:start]
    q._handle()
    done = 0
    while True:
        put = _fast.put_batch(q._cid, len(lengths), lengths, len(payloads), payloads,
                              _fast.seconds(_SLICE), _fast.STATUS)  # fmt: skip
        if put < 0:
            q._fast_failed(retry=False)
        done += put
        if done >= count:
            return count
        if done:  # part of it went in: the rest starts after the messages put
            sizes = array.array("I")
            sizes.frombytes(batch[start : start + 4 * done])
            if sys.byteorder != "little":
                sizes.byteswap()
            lengths, payloads = batch[start + 4 * done : end], batch[sum(sizes) : start]
