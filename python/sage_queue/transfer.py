"""Whole batches between a queue and one bytes object, for the bridges of sage_queue.remote.

A batch travels in the table layout of the native batch calls: the payloads one after the
other, then one u32 little-endian length per message, then the u32 count. One native call
takes a batch into that layout (``take_batch``) and one puts it (``put_batch``), so a bridge
or gateway moves a batch of any size with no per-message work in Python, and Ray carries it
as a single bytes object. The messages are the queue's bytes as they are (already
serialized by whoever put them), so the layout is the same for every serializer.
"""

import array
import sys
import time
from typing import Any

from . import _fastpath as _fast
from . import _native
from .queue import SageQueue

EMPTY_BATCH = (0).to_bytes(4, "little")
_QE: Any = _native.QueueError  # the generated error class and its variants
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
        try:
            n = _fast.raw_get_many_view(q._id, max_items, max_bytes, step)
        except _QE.Empty:
            if time.monotonic() >= deadline:
                return EMPTY_BATCH
            continue
        except _QE as e:
            raise q._error(e) from None
        return bytes(_fast.view(n)[:n])


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
        try:
            done += _fast.raw_put_many(q._id, lengths, payloads, _SLICE)
        except _QE.Full:
            pass
        except _QE as e:
            raise q._error(e) from None
        if done >= count:
            return count
        if done:  # part of it went in: the rest starts after the messages put
            sizes = array.array("I")
            sizes.frombytes(batch[start : start + 4 * done])
            if sys.byteorder != "little":
                sizes.byteswap()
            lengths, payloads = batch[start + 4 * done : end], batch[sum(sizes) : start]
