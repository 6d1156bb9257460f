"""Messages written and read in place in the ring: loans, views, and pickles whose large
buffers travel out of band.

A loan (``SageQueue.loan``) is room for one message claimed in the ring, written through a
writable memoryview and published by the commit at the end of the ``with`` block; an
exception (or a close, or the process dying) publishes nothing and frees the room. A view
(``SageQueue.view``) pins the next message where it lies: the item is built over the ring's
bytes (a read-only memoryview, or numpy arrays whose data stay in the ring) and the message is
released when the block ends and nothing made from it is still alive. The memoryviews handed
out are released at the block's end, so using one afterwards raises ValueError; an object made
from them that is still referenced (a numpy array) keeps the message pinned, and the handle
attached, until it is garbage-collected, so it never sees reused memory.

Out-of-band pickles (pickle protocol 5): ``put`` collects the large buffers of an item (numpy
arrays, bytes-like objects that support it) instead of copying them into the pickle stream,
and writes the stream and every buffer into one loan: one copy of the payload. The message:

    byte 0      _OOB_TAG (1); bytes 1-3 zero
    bytes 4-7   u32 n, the number of buffers
    bytes 8-15  u64 the pickle stream's length
    16 + 16*i   u64 offset and u64 length of buffer i (from the message's first byte)
    then        the stream, then the buffers, each starting at a 64-byte aligned address
"""

import ctypes
import pickle
import struct
import threading
import weakref
from typing import Any, Callable, List, Optional, Sequence

from . import _fastpath as _fast

_OOB_TAG = 1
_HEAD = struct.Struct("<B3xIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64


# ---- out-of-band pickles ----


def oob_size(stream: bytes, buffers: Sequence[memoryview]) -> int:
    """Bytes to loan for an out-of-band message (room for aligning every buffer)."""
    header = _HEAD.size + _ENTRY.size * len(buffers)
    return header + len(stream) + sum(b.nbytes + _ALIGN - 1 for b in buffers)


def write_oob(dest: memoryview, address: int, stream: bytes, buffers: Sequence[memoryview]) -> None:
    """Write an out-of-band message into ``dest`` (the loan, at ``address``)."""
    at = _HEAD.size + _ENTRY.size * len(buffers)
    _HEAD.pack_into(dest, 0, _OOB_TAG, len(buffers), len(stream))
    dest[at : at + len(stream)] = stream
    at += len(stream)
    for i, buf in enumerate(buffers):
        at += -(address + at) % _ALIGN
        _ENTRY.pack_into(dest, _HEAD.size + _ENTRY.size * i, at, buf.nbytes)
        dest[at : at + buf.nbytes] = buf.cast("B") if buf.ndim != 1 or buf.format != "B" else buf
        at += buf.nbytes


def read_oob(mv: memoryview, copy: bool) -> Any:
    """Load an out-of-band message: its buffers copied into bytearrays (``copy``: the item
    owns its data) or as read-only views of ``mv``."""
    tag, count, stream_len = _HEAD.unpack_from(mv, 0)
    if tag != _OOB_TAG:
        raise pickle.UnpicklingError(f"not an out-of-band message (first byte {tag})")
    buffers: List[Any] = []
    for i in range(count):
        off, size = _ENTRY.unpack_from(mv, _HEAD.size + _ENTRY.size * i)
        if off + size > len(mv):
            raise pickle.UnpicklingError("an out-of-band buffer runs past the message")
        part = mv[off : off + size]
        buffers.append(bytearray(part) if copy else part.toreadonly())
    at = _HEAD.size + _ENTRY.size * count
    return pickle.loads(mv[at : at + stream_len], buffers=buffers)


# ---- the handle's views and loans ----


class InPlace:
    """A handle's views that outlived their block (still referenced) and its deferred
    detach: a handle closed while such views exist stays attached until the last is gone."""

    def __init__(self, native: Any, qid: int) -> None:
        self.native = native
        self.cid = ctypes.c_uint64(qid)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.detach_pending = False

    def pinned(self) -> None:
        with self.lock:
            self.outstanding += 1

    def released(self, address: int) -> None:
        """A view's last reference is gone (or its block ended): unpin it; detach if the
        handle was closed meanwhile and this was the last one."""
        _fast.unpin(self.cid, ctypes.c_uint64(address), _fast.STATUS)  # FAILED: closed already
        with self.lock:
            self.outstanding -= 1
            detach = self.detach_pending and self.outstanding == 0
        if detach:
            self.native.detach()

    def close(self) -> None:
        """Detach now, or when the last outstanding view is released."""
        with self.lock:
            if self.outstanding:
                self.detach_pending = True
                return
        self.native.detach()


class Loan:
    """``with q.loan(nbytes) as buf:`` fill ``buf`` (a writable memoryview of ``nbytes``);
    the message is published at the block's normal end and given up on an exception.

    ``commit()`` and ``abort()`` do the same explicitly. A buffer still referenced at commit
    (a numpy array made from it, a memoryview slice) would let writes reach a published
    message: the commit then gives the loan up and raises BufferError."""

    def __init__(self, q: Any, nbytes: int, block: bool, timeout: Optional[float]) -> None:
        self._q = q
        self._nbytes = nbytes
        self._block = block
        self._timeout = timeout
        self._mv: Optional[memoryview] = None
        self._base: Any = None
        self._cid: Any = None

    def __enter__(self) -> memoryview:
        q = self._q
        tag = 1 if q._tag_bytes else 0
        address = q._loan_address(self._nbytes + tag, self._block, self._timeout)
        self._cid = q._cid
        base = (ctypes.c_char * (self._nbytes + tag)).from_address(address)
        whole = memoryview(base).cast("B")
        if tag:
            whole[0] = 0  # the bytes tag: a get returns the payload as bytes
        self._base = base
        self._mv = whole[tag:]
        whole.release()
        return self._mv

    def _end(self, commit: bool) -> None:
        mv, base, self._mv, self._base = self._mv, self._base, None, None
        if mv is None:
            raise ValueError("this loan was committed or given up already")
        mv.release()
        # Anything made from the buffer (a slice, a numpy array) keeps the ctypes object
        # alive: then a write could reach the published message.
        alive = weakref.ref(base)
        del base
        referenced = alive() is not None
        ok = (_fast.commit if commit and not referenced else _fast.abort)(self._cid, _fast.STATUS)
        if ok < 0:
            self._q._fast_failed(retry=False)
        if commit and referenced:
            raise BufferError(
                "the loan's buffer is still referenced (a numpy array or memoryview made "
                "from it): nothing was published; drop such references before the commit"
            )

    def commit(self) -> None:
        self._end(True)

    def abort(self) -> None:
        self._end(False)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._mv is None:
            return  # ended inside the block
        self._end(exc_type is None)


class View:
    """``with q.view() as item:`` the next message, read in place (see the module comment)."""

    def __init__(
        self, q: Any, block: bool, timeout: Optional[float], build: Callable[[memoryview], Any]
    ) -> None:
        self._q = q
        self._block = block
        self._timeout = timeout
        self._build = build
        self._mv: Optional[memoryview] = None
        self._item: Optional[memoryview] = None
        self._base: Any = None

    def __enter__(self) -> Any:
        q = self._q
        address, n = q._pin(self._block, self._timeout)
        inplace: InPlace = q._inplace_state()
        inplace.pinned()
        base = (ctypes.c_char * n).from_address(address) if n else (ctypes.c_char * 1)()
        # Unpinned when the last object made from the bytes is gone: at the block's end,
        # unless the caller keeps one.
        weakref.finalize(base, inplace.released, address)
        self._base = base
        self._mv = memoryview(base).cast("B")[:n].toreadonly()
        try:
            item = self._build(self._mv)
        except BaseException:
            self._release()
            raise
        if isinstance(item, memoryview):
            self._item = item  # released at the block's end too
        return item

    def _release(self) -> None:
        for mv in (self._item, self._mv):
            if mv is not None:
                mv.release()
        self._item = self._mv = self._base = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._release()
