"""SageQueue: a ``queue.Queue``-like front end over the native shared-memory queue.

Every ``SageQueue`` object is one native handle, i.e. one attachment to the named segment.
It is closed by ``close()``, by garbage collection, or at interpreter exit; after ``os.fork()``
the child re-attaches every live queue by name (a handle belongs to the process that opened
it). Blocking calls wait in native slices of at most ``_SLICE`` seconds so that signal
handlers (Ctrl-C) run between them. Objects pickle as a ``SageQueueRef``, so
``multiprocessing`` children and Ray actors receive a queue attached to the same segment.

Messages move through the message path of the UDL (``msg_*``, bound in _fastpath.py),
addressed by the handle's id (a method call costs a second FFI call to clone the object
handle). A received message lands in the calling thread's native view buffer instead of
coming back in a RustBuffer, and a pickle is loaded from there in place. The first attempt
of a put or get never waits and holds the GIL; only a call that has to wait releases it.
"""

import array
import contextlib
import ctypes
import math
import operator
import os
import pickle
import queue
import stat
import sys
import time
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    TypeVar,
)

from . import _fastpath as _fast
from . import _handles, _native, acks, aio
from .errors import (
    BatchFull,
    DeserializationError,
    MessageTooLarge,
    QueueClosed,
    QueueNotFound,
    StaleReceipt,
    from_native,
)
from .inplace import _OOB_TAG, InPlace, Loan, View, oob_size, read_oob, write_oob
from .reference import SageQueueRef, attach_reference, host_id, ray_node_id
from .serializers import (
    PickleSerializer,
    RawSerializer,
    decode,
    deserialization_error,
    encode,
    get_serializer,
    portable_spec,
    serialization_error,
    spec_name,
)

DEFAULT_MAXSIZE = 1024 * 1024
# get_many's default bound on the number of items (faster-fifo's); max_bytes bounds it too.
DEFAULT_MAX_MESSAGES = 1_000_000_000
# Longest single native wait: a signal handler (Ctrl-C) runs at most this late.
_SLICE = 0.05
_U32_MAX = 2**32 - 1
_dumps, _loads = pickle.dumps, pickle.loads

_NativeError = _native.QueueError
# The variants (nested classes the generated module adds at run time, unknown to mypy).
_QE: Any = _native.QueueError
_WAIT_ERRORS = (_QE.Empty, _QE.Full)
_STATS_FIELDS = (
    "name", "path", "capacity", "max_message_size", "used_bytes", "free_bytes", "messages",
    "attached", "msgs_in", "msgs_out", "bytes_in", "bytes_out", "waits_full", "waits_empty",
    "recovered", "lost", "unfinished_tasks", "closed", "creator_pid", "owner_uid",
    "created_unix_ms", "max_items", "pids", "consumers_waiting", "producers_waiting", "pinned",
    "pinned_bytes", "unacked", "redeliverable", "redelivered", "dead_lettered", "ack_dropped",
)  # fmt: skip
_INFO_FIELDS = (
    "name", "path", "valid", "error", "capacity", "used_bytes", "messages", "attached",
    "creator_pid",
)  # fmt: skip


# ---- names ----


def _validate_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a queue name must be a str, not {type(name).__name__}")
    try:
        _native.validate_name(name)
    except _NativeError as e:
        raise from_native(e, name) from None


def full_name(name: str, namespace: Optional[str] = None) -> str:
    """The native queue name of ``name`` in ``namespace``: ``"namespace.name"`` (validated)."""
    _validate_name(name)
    if namespace is None:
        return name
    _validate_name(namespace)
    full = f"{namespace}.{name}"
    _validate_name(full)
    return full


def _positive_int(what: str, value: Any, meaning: str) -> int:
    """``value`` as an int (any integer type, e.g. numpy's: operator.index), or ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be {meaning}, not {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be {meaning}, not {value!r}") from None
    if number <= 0:
        raise ValueError(f"{what} must be {meaning}, not {value!r}")
    return number


def _spin(micros: Any) -> int:
    value = operator.index(micros)
    if not 0 <= value <= 1_000_000:
        raise ValueError(f"spin_us must be 0 to 1,000,000 microseconds, not {micros!r}")
    return value


# ---- waiting ----


def _check_timeout(block: bool, timeout: Optional[float]) -> None:
    """queue.Queue's rule: a blocking call with a negative timeout is a ValueError; so is NaN
    (as in multiprocessing.Queue), which would otherwise wait forever."""
    if block and timeout is not None:
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if timeout != timeout:
            raise ValueError("'timeout' must be a number of seconds, not NaN")


def _wait_time(block: bool, timeout: Optional[float]) -> Optional[float]:
    """Seconds a call may wait: 0.0 = try once, None = forever (queue.Queue's rules; an
    infinite timeout also waits forever)."""
    if not block:
        return 0.0
    if timeout is None:
        return None
    _check_timeout(block, timeout)
    wait = float(timeout)
    return None if wait == math.inf else wait


# iter_async's "no sentinel".
_NO_SENTINEL: Any = object()

# The first byte of a message that carries a bytes item as it is (pickle streams start 0x80).
_BYTES_TAG = b"\x00"


_T = TypeVar("_T")


def _sliced(call: Callable[..., _T], wait: Optional[float], *args: Any) -> _T:
    """``call(*args, seconds)`` (a generated call, which raises Empty or Full when the time
    is up) until it succeeds or ``wait`` has passed, waiting at most _SLICE per call."""
    step = _SLICE if wait is None else min(wait, _SLICE)
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            return call(*args, step)
        except _WAIT_ERRORS:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                step = min(remaining, _SLICE)


def _waited(call: Callable[..., int], nothing: int, wait: Optional[float], *args: Any) -> int:
    """``call(*args, seconds, STATUS)`` (a message-path call) while it returns ``nothing``
    and ``wait`` has not passed, waiting at most _SLICE per call so that signal handlers
    run between calls; its last result (``nothing`` when the time is up, or FAILED)."""
    step = _SLICE if wait is None else min(wait, _SLICE)
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        result = call(*args, _fast.seconds(step), _ST)
        if result != nothing:
            return result
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result
            step = min(remaining, _SLICE)


# The hot path: the message-path entry points, the shared status, this thread's view.
_LOCAL = _fast.local  # .t: this thread's view buffer
_ST = _fast.STATUS
# The first attempt of a put or get: no wait, GIL held.
_TRY_PUT, _TRY_TAKE = _fast.try_put, _fast.try_take
_NOTHING, _FAILED = _fast.NOTHING, _fast.FAILED


def _table_payloads(mv: memoryview, lengths: "array.array[int]") -> Iterable[bytes]:
    """The payloads of a table-layout batch view, as bytes."""
    off = 0
    for size in lengths:
        yield mv[off : off + size].tobytes()
        off += size


def _table_lengths(mv: memoryview) -> "array.array[int]":
    """The u32 lengths of a taken batch (the table: payloads, their u32 lengths, u32 count)."""
    n = len(mv)
    count = int.from_bytes(mv[n - 4 :], "little")
    lengths = array.array("I")
    lengths.frombytes(mv[n - 4 - 4 * count : n - 4])
    if sys.byteorder != "little":
        lengths.byteswap()
    return lengths


# ---- references (reference.py; these names stay importable from here) ----

_attach_reference = attach_reference


# ---- the queue ----


_Q = TypeVar("_Q", bound="QueueConveniences")


class QueueConveniences:
    """The names of queue.Queue, multiprocessing.Queue and faster-fifo that a queue defines
    in terms of its put/get/put_many/get_many/close: one definition for SageQueue and for
    RemoteSageQueue (sage_queue.remote)."""

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        raise NotImplementedError

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None
    ) -> int:
        raise NotImplementedError

    def get_many(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = DEFAULT_MAX_MESSAGES,
        *,
        max_items: Optional[int] = None,
        max_bytes: Optional[int] = None,
    ) -> List[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # asyncio (aio.py): the same calls awaited, cancel-safe, no thread per waiter. A queue
    # names the local queue each line waits on (itself, or RemoteSageQueue._wait_target).

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """``await q.get_async()``: get() for coroutines (queue.Empty after ``timeout``)."""
        return await aio.get_async(self, timeout)

    async def put_async(self, item: Any, timeout: Optional[float] = None) -> None:
        """``await q.put_async(item)``: put() for coroutines (queue.Full after ``timeout``)."""
        await aio.put_async(self, item, timeout)

    async def get_many_async(
        self,
        timeout: Optional[float] = None,
        max_messages_to_get: int = DEFAULT_MAX_MESSAGES,
        *,
        max_items: Optional[int] = None,
        max_bytes: Optional[int] = None,
    ) -> List[Any]:
        """get_many() for coroutines: wait for one item, then take what is there."""
        return await aio.get_many_async(
            self, timeout, max_messages_to_get, max_items=max_items, max_bytes=max_bytes
        )

    async def put_many_async(self, items: Iterable[Any], timeout: Optional[float] = None) -> int:
        """put_many() for coroutines (BatchFull with ``count`` when the time ends part way)."""
        return await aio.put_many_async(self, items, timeout)

    def iter_async(self, sentinel: Any = _NO_SENTINEL) -> AsyncIterator[Any]:
        """``async for item in q.iter_async(sentinel=None):`` items as they come, until an
        item equal to ``sentinel`` (not yielded) or the queue's close ends the iteration."""
        return aio.iterate(self, sentinel, sentinel is not _NO_SENTINEL)

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for item in q:`` items as they come, until the queue is closed."""
        return aio.iterate(self)


    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def put_many_nowait(self, items: Iterable[Any]) -> int:
        """put_many without waiting (faster-fifo's name): BatchFull if not all fit now."""
        return self.put_many(items, block=False)

    def get_many_nowait(self, max_messages_to_get: int = DEFAULT_MAX_MESSAGES) -> List[Any]:
        """get_many without waiting (faster-fifo's name): queue.Empty if the queue is empty."""
        return self.get_many(False, max_messages_to_get=max_messages_to_get)

    def join_thread(self) -> None:
        """multiprocessing.Queue's join_thread: a no-op, since a put is in shared memory when
        it returns (there is no feeder thread to wait for)."""

    def cancel_join_thread(self) -> None:
        """multiprocessing.Queue's cancel_join_thread: a no-op, for the same reason (nothing is
        buffered in this process, so exiting never waits for a flush)."""

    def __enter__(self: "_Q") -> "_Q":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()


class SageQueue(QueueConveniences):
    """A named multi-producer multi-consumer queue in shared memory.

    ``SageQueue(name)`` creates the queue or attaches to it; every process that uses the same
    name (and namespace) shares it. ``maxsize`` is the ring size in BYTES, not a number of
    items (rounded up to a power of two, at least 4096, at most 1 TiB; the space is reserved
    in the queue folder at creation, QueueNoSpace if it is not there); ``max_items`` bounds
    the number of items in the queue, as ``queue.Queue``'s maxsize does, for every process
    (None: only the bytes bound). Both apply only when the queue is created. ``create=True``
    requires a new queue (QueueExists otherwise), ``create=False`` an existing one
    (QueueNotFound otherwise). The last handle to close removes the queue if
    ``auto_cleanup``.
    """

    def __init__(
        self,
        name: str,
        maxsize: int = DEFAULT_MAXSIZE,
        auto_cleanup: bool = True,
        namespace: Optional[str] = None,
        *,
        serializer: Any = "pickle",
        mode: int = 0o600,
        create: Optional[bool] = None,
        max_items: Optional[int] = None,
        spin_us: Optional[int] = None,
    ):
        self._native: Optional[_native.SageQueue] = None
        # The parent's native handle, until re-attached after fork:
        self._forked_from: Optional[_native.SageQueue] = None
        self._cid = ctypes.c_uint64(0)  # id 0 names no handle: a call on it raises Closed
        self._closed_reason: Optional[str] = None
        self.original_name = name
        self.namespace = namespace
        self.name = full_name(name, namespace)
        maxsize = _positive_int("maxsize", maxsize, "a positive number of bytes")
        bound = 0 if max_items is None else _positive_int("max_items", max_items, "None or > 0")
        self.auto_cleanup = bool(auto_cleanup)
        self._serializer_spec = serializer
        self._serializer = get_serializer(serializer)
        # Built-in pickle: bytes items skip pickling (a pickle never starts with this tag).
        self._tag_bytes = isinstance(self._serializer, PickleSerializer)
        self._protocol = getattr(self._serializer, "protocol", None)
        # Out-of-band buffers need pickle protocol 5.
        self._oob = self._tag_bytes and (self._protocol or 0) >= 5
        self._inplace: Optional[InPlace] = None
        cls = _native.SageQueue
        try:
            if create is None:
                native = cls.open_or_create(self.name, maxsize, mode, self.auto_cleanup, bound)
            elif create:
                native = cls.create(self.name, maxsize, mode, self.auto_cleanup, bound)
            else:
                native = cls.open(self.name, self.auto_cleanup)
            self.created = native.created()
            self.creator_pid = os.getpid() if self.created else native.stats().creator_pid
        except _NativeError as e:
            raise from_native(e, self.name) from None
        self.maxsize = native.capacity()
        self.max_message_size = native.max_message_size()
        self.max_items: Optional[int] = native.max_items() or None
        if spin_us is not None:
            native.set_spin_micros(_spin(spin_us))
        self.path = native.path()
        self._id = native.msg_id()
        self._cid = ctypes.c_uint64(self._id)
        self._native = native
        _handles.track(self)

    # ---- plumbing ----

    def _handle(self) -> _native.SageQueue:
        """This handle's native object (re-attached first in a forked child), or QueueClosed."""
        if self._forked_from is not None:
            self._reattach_after_fork()
        native = self._native
        if native is None:
            raise QueueClosed(self.name, self._closed_reason or "this handle was closed")
        return native

    def _open_handle(self) -> _native.SageQueue:
        """The native object for a call that does not check the queue's state itself:
        QueueClosed also when the queue was removed (by this or any process)."""
        native = self._handle()
        if native.is_closed():
            raise QueueClosed(self.name, "the queue was removed")
        return native

    def _forked(self) -> None:
        """In a forked child: stop using the inherited handle (the parent's attachment).
        Id 0 names no handle, so a direct call fails with Closed and the handle re-attaches
        (``_fast_failed``); other calls re-attach in ``_handle``."""
        if self._native is not None:
            self._forked_from = self._native
            self._cid = ctypes.c_uint64(0)
            self._id = 0

    def _reattach_after_fork(self) -> None:
        """Swap the inherited handle for one of this process. The inherited native object is
        only dropped: its Rust side sees the pid change and leaves the parent's attachment
        alone."""
        self._forked_from = None
        self._inplace = None  # the parent's views are not this process's
        try:
            native = _native.SageQueue.open(self.name, self.auto_cleanup)
        except _NativeError as e:
            self._native = None
            self._closed_reason = f"could not re-attach after fork: {from_native(e, self.name)}"
            return
        self._id = native.msg_id()
        self._cid = ctypes.c_uint64(self._id)
        self._native = native

    # ---- put / get ----

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put one item; wait for room as queue.Queue.put does (raises queue.Full).

        An item whose serialized size exceeds max_message_size raises MessageTooLarge at once.
        With the pickle serializer a ``bytes`` item is not pickled: it travels as a one-byte
        tag plus its own bytes, without being copied first.
        """
        head = None
        if not self._tag_bytes:
            data = encode(self._serializer, item)
        elif type(item) is bytes:
            head, data = _BYTES_TAG, item
        else:
            buffers: List[Any] = []
            try:
                if self._oob:
                    data = _dumps(item, self._protocol, buffer_callback=buffers.append)
                else:
                    data = _dumps(item, self._protocol)
            except Exception as exc:
                raise serialization_error(self._serializer, item, exc) from exc
            if buffers:
                # Buffers (numpy arrays) go out of band: the stream and each buffer are
                # written straight into one loan.
                return self._put_oob(data, buffers, block, timeout)
        # One direct native call that does not wait; waiting is the slow path below.
        if timeout is not None:
            _check_timeout(block, timeout)
        if head is None:
            done = _TRY_PUT(self._cid, 0, b"", len(data), data, _ST)
        else:
            done = _TRY_PUT(self._cid, 1, head, len(data), data, _ST)
        if done > 0:
            return
        if done < 0:
            self._fast_failed(head is not None)  # returns only after a fork: retry
        elif not block:
            raise queue.Full
        wait = _wait_time(block, timeout)
        self._handle()
        if head is None:
            done = _waited(_fast.put, 0, wait, self._cid, 0, b"", len(data), data)
        else:
            done = _waited(_fast.put, 0, wait, self._cid, 1, head, len(data), data)
        if done < 0:
            self._fast_failed(head is not None, retry=False)
        if done == 0:
            raise queue.Full

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Take one item; wait for one as queue.Queue.get does (raises queue.Empty).

        A message the serializer cannot load raises DeserializationError (with ``.data``);
        it is consumed, and the queue keeps every other message."""
        t = _LOCAL.t
        if t.busy:
            return self._get_copied(block, timeout)
        # One direct native call that copies a message into this thread's view buffer without
        # waiting; waiting is _wait_take.
        if timeout is not None:
            _check_timeout(block, timeout)
        try:
            n = _TRY_TAKE(self._cid, _ST)
            if n >= _FAILED:
                if n == _FAILED:
                    self._fast_failed()  # returns only after a fork: retry
                elif not block:
                    raise queue.Empty
                n = self._wait_take(block, timeout)
            mv = t.view if n <= t.view_capacity else _fast.view(n)
        except BaseException:
            _fast.discard(t)
            raise
        if not self._tag_bytes:
            return decode(self._serializer, mv[:n].tobytes())
        if n and mv[0] == 0:  # _BYTES_TAG
            return mv[1:n].tobytes()
        # A pickle loads in place; ``busy`` keeps a get inside the load (from unpickling
        # code) off the buffer meanwhile.
        try:
            t.busy = True
            return _loads(mv[:n])
        except Exception as exc:
            error: Exception = exc
            if n and mv[0] == _OOB_TAG:  # a pickle with out-of-band buffers (inplace.py)
                try:
                    return read_oob(mv[:n], copy=True)
                except Exception as exc2:
                    error = exc2
            raise deserialization_error(mv[:n].tobytes(), error) from error
        finally:
            t.busy = False

    def _wait_take(self, block: bool, timeout: Optional[float]) -> int:
        """Wait in slices for a message and copy it into this thread's view buffer; its
        length, or queue.Empty when the time is up."""
        wait = _wait_time(block, timeout)
        self._handle()
        n = _waited(_fast.take, _NOTHING, wait, self._cid)
        if n == _FAILED:
            self._fast_failed(retry=False)
        if n == _NOTHING:
            raise queue.Empty
        return n

    # ---- acknowledged gets (acks.py): at-least-once delivery ----

    def get_acked(
        self, block: bool = True, timeout: Optional[float] = None
    ) -> Tuple[Any, acks.Receipt]:
        """Take one item as get() does, but keep it until ``ack(receipt)``: returns
        ``(item, receipt)``. If this process dies (or closes this handle) first, or holds it
        past the visibility timeout (``set_ack_policy``), the message is delivered again to
        another get, with ``receipt.deliveries`` one higher. At most 64 messages of a queue
        are unacknowledged at once: with all 64 held, get_acked waits as on an empty queue."""
        if timeout is not None:
            _check_timeout(block, timeout)
        return acks.get_acked(self, _wait_time(block, timeout))

    def get_many_acked(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = DEFAULT_MAX_MESSAGES,
        *,
        max_bytes: Optional[int] = None,
    ) -> Tuple[List[Any], acks.BatchReceipt]:
        """get_many() with acknowledgement: ``(items, receipt)``, one receipt for the batch
        (``ack(receipt)`` acks them all). At most 64 items (the queue's leases). An item that
        cannot be loaded is its DeserializationError in the list (and is acked)."""
        n = operator.index(max_messages_to_get)
        if n < 1:
            raise ValueError("max_messages_to_get must be at least 1")
        if max_bytes is None:
            max_bytes = self.maxsize
        elif max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        if timeout is not None:
            _check_timeout(block, timeout)
        return acks.get_many_acked(self, _wait_time(block, timeout), min(n, 64), max_bytes)

    def ack(self, receipt: acks.AnyReceipt) -> None:
        """The message (or batch) is done: remove it for good. Raises StaleReceipt if the
        receipt is no longer valid (acked or nacked already, or delivered again after a
        timeout); any process attached to the queue may ack a receipt."""
        acks.ack(self, receipt)

    def nack(self, receipt: acks.AnyReceipt) -> None:
        """Return the message (or batch) to the queue: it is delivered again (after
        max_deliveries deliveries it goes to the dead-letter queue or is dropped)."""
        acks.nack(self, receipt)

    @contextlib.contextmanager
    def acked(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Any]:
        """``with q.acked() as item:`` acks the item on normal exit and nacks it when the
        block raises (the exception goes on; a nack refused because the message was already
        delivered again is ignored)."""
        item, receipt = self.get_acked(block, timeout)
        try:
            yield item
        except BaseException:
            try:
                self.nack(receipt)
            except StaleReceipt:
                pass
            raise
        self.ack(receipt)

    def set_ack_policy(
        self,
        max_deliveries: int = 0,
        visibility_timeout: Optional[float] = None,
        dead_letter: Optional[str] = None,
    ) -> None:
        """The queue-wide policy of acked gets (every process sees it at once):
        ``max_deliveries`` (0: no limit) deliveries after which a returned message goes to
        the ``dead_letter`` queue (the name of an existing queue) or, without one, is dropped
        and counted; ``visibility_timeout`` seconds after which an unacknowledged delivery is
        made again (None: never; a dead holder's messages are delivered again anyway)."""
        policy = _native.AckPolicy(
            max_deliveries=operator.index(max_deliveries),
            visibility_timeout=0.0 if visibility_timeout is None else float(visibility_timeout),
            dead_letter=dead_letter,
        )
        try:
            self._handle().set_ack_policy(policy)
        except _NativeError as e:
            raise from_native(e, self.name) from None

    def ack_policy(self) -> Dict[str, Any]:
        """The queue's ack policy: max_deliveries, visibility_timeout, dead_letter."""
        p = self._handle().ack_policy()
        return {
            "max_deliveries": p.max_deliveries,
            "visibility_timeout": p.visibility_timeout or None,
            "dead_letter": p.dead_letter,
        }

    # ---- asyncio (aio.py): the same calls awaited, cancel-safe, no thread per waiter ----

    async def get_async(self, timeout: Optional[float] = None) -> Any:
        """``await q.get_async()``: get() for coroutines (queue.Empty after ``timeout``)."""
        try:
            return self.get(False)  # the common case, without a second coroutine
        except queue.Empty:
            return await aio.get_async(self, timeout)

    async def put_async(self, item: Any, timeout: Optional[float] = None) -> None:
        """``await q.put_async(item)``: put() for coroutines (queue.Full after ``timeout``)."""
        try:
            self.put(item, False)
        except queue.Full:
            await aio.put_async(self, item, timeout)

    async def get_acked_async(self, timeout: Optional[float] = None) -> Tuple[Any, acks.Receipt]:
        """``item, receipt = await q.get_acked_async()``: get_acked() for coroutines."""
        result: Tuple[Any, acks.Receipt] = await aio.get_acked_async(self, timeout)
        return result

    async def join_async(self, timeout: Optional[float] = None) -> bool:
        """join() for coroutines: False when ``timeout`` ends first."""
        return await aio.join_async(self, timeout)

    # ---- in place: loans, views, out-of-band pickles (inplace.py) ----

    def loan(self, nbytes: int, block: bool = True, timeout: Optional[float] = None) -> Loan:
        """``with q.loan(nbytes) as buf:`` write one raw bytes message of ``nbytes`` in place
        (``buf`` is a writable memoryview into the ring); it is published when the block
        ends normally and given up on an exception (or a close, or the process dying).
        ``buf`` is not cleared: it holds what earlier messages left in that ring space, so
        write every byte of it. Waits for room as put does (queue.Full); MessageTooLarge if
        it can never fit. A
        get returns it as ``bytes``. One open loan per handle; consumers wait at an open
        loan, so commit soon. Not on a queue with max_items."""
        _positive_int("nbytes", nbytes + 1, "a number of bytes (0 or more)")
        if timeout is not None:
            _check_timeout(block, timeout)
        return Loan(self, operator.index(nbytes), block, timeout)

    def view(self, block: bool = True, timeout: Optional[float] = None) -> View:
        """``with q.view() as item:`` take the next item without copying it out of the
        ring: bytes (and the raw serializer's items) as a read-only memoryview, numpy arrays
        put by ``put`` as read-only arrays over the ring; other pickled data is loaded as
        get loads it. Waits as get does (queue.Empty). The message is released when the
        block ends; memoryviews from it fail afterwards, and an object made from it that is
        still referenced (a numpy array) keeps it pinned until it is garbage-collected. The
        ring space from a pinned message on is reused only after its release: hold views
        briefly. At most 64 views per handle at once."""
        if timeout is not None:
            _check_timeout(block, timeout)
        return View(self, block, timeout, self._view_item)

    def _view_item(self, mv: memoryview) -> Any:
        if not self._tag_bytes:
            if isinstance(self._serializer, RawSerializer):
                return mv
            return decode(self._serializer, mv.tobytes())
        if len(mv) and mv[0] == 0:  # _BYTES_TAG
            return mv[1:]
        if len(mv) and mv[0] == _OOB_TAG:
            return read_oob(mv, copy=False)
        try:
            return _loads(mv)
        except Exception as exc:
            raise deserialization_error(mv.tobytes(), exc) from exc

    def _loan_address(self, nbytes: int, block: bool, timeout: Optional[float]) -> int:
        """Claim a loan of ``nbytes`` and return its address (queue.Full when no room)."""
        if nbytes > self.max_message_size:
            tagged = int(self._tag_bytes)
            raise MessageTooLarge(nbytes - tagged, self.max_message_size - tagged, tag=bool(tagged))
        wait = _wait_time(block, timeout)
        self._handle()
        address = _waited(_fast.loan, _NOTHING, wait, self._cid, ctypes.c_uint64(nbytes))
        if address == _FAILED:
            self._fast_failed(retry=False)
        if address == _NOTHING:
            raise queue.Full
        return address

    def _pin(self, block: bool, timeout: Optional[float]) -> Tuple[int, int]:
        """Pin the next message: (address, length) (queue.Empty when none came)."""
        wait = _wait_time(block, timeout)
        self._handle()
        n = _waited(_fast.pin, _NOTHING, wait, self._cid)
        if n == _FAILED:
            self._fast_failed(retry=False)
        if n == _NOTHING:
            raise queue.Empty
        return _fast.pin_address(_ST), n

    def _inplace_state(self) -> InPlace:
        if self._inplace is None:
            self._inplace = InPlace(self._handle(), self._id)
        return self._inplace

    def _put_oob(
        self, stream: bytes, buffers: List[Any], block: bool, timeout: Optional[float]
    ) -> None:
        """Put a pickle stream and its out-of-band buffers as one message, written in place."""
        raws = [b.raw() for b in buffers]
        size = oob_size(stream, raws)
        if size > self.max_message_size:
            raise MessageTooLarge(size, self.max_message_size)
        if timeout is not None:
            _check_timeout(block, timeout)
        address = self._loan_address(size, block, timeout)
        dest = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
        try:
            write_oob(dest, address, stream, raws)
        except BaseException:
            dest.release()
            _fast.abort(self._cid, _ST)
            raise
        dest.release()
        if _fast.commit(self._cid, _ST) < 0:
            self._fast_failed(retry=False)

    def _get_copied(self, block: bool, timeout: Optional[float]) -> Any:
        """get() without this thread's view buffer (the generated method, which returns the
        message as bytes), for a get made while an item loads from that buffer."""
        wait = _wait_time(block, timeout)
        native = self._handle()
        try:
            data = _sliced(native.get, wait)
        except _NativeError as e:
            raise self._error(e) from None
        return self._decode(data)

    def _fast_failed(self, tagged: bool = False, retry: bool = True) -> None:
        """Raise the error of this thread's last FAILED message call as this handle's
        exception; but in a forked child whose handle is still the parent's (the call failed
        with Closed), re-attach and return when ``retry``, and the caller tries again."""
        try:
            _fast.raise_failure()
        except _NativeError as e:
            if retry and self._forked_from is not None and isinstance(e, _QE.Closed):
                self._handle()
                return
            raise self._error(e, tagged) from None

    def _decode(self, data: bytes) -> Any:
        if self._tag_bytes and data[:1] == _BYTES_TAG:
            return data[1:]
        if self._tag_bytes and data[:1] == b"\x01":  # out-of-band buffers (inplace.py)
            try:
                return read_oob(memoryview(data), copy=True)
            except Exception as exc:
                raise deserialization_error(bytes(data), exc) from exc
        return decode(self._serializer, data)

    def _error(self, e: Exception, tagged: bool = False) -> BaseException:
        """The Python exception for a native error on this handle. ``tagged``: the message
        was a bytes item plus its one-byte tag, which a size error leaves out of its numbers."""
        if self._native is None:
            return QueueClosed(self.name, self._closed_reason or "this handle was closed")
        if tagged and isinstance(e, _QE.TooLarge):
            return MessageTooLarge(e.size - 1, e.max_size - 1, tag=True)
        return from_native(e, self.name)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None
    ) -> int:
        """Put all items, in order, as one native batch; returns how many were put.

        All items are serialized first: if one fails (or can never fit), nothing is put.
        If the wait ends with only some put, raises BatchFull (a queue.Full) whose ``count``
        says how many of the first items went in."""
        payloads = self._encode_many(items)
        total = len(payloads)
        if total == 0:
            return 0
        biggest = max(payloads, key=len)
        if len(biggest) > self.max_message_size:
            tagged = self._tag_bytes and biggest[:1] == _BYTES_TAG
            raise MessageTooLarge(
                len(biggest) - tagged, self.max_message_size - tagged, tag=tagged
            )
        lengths = array.array("I", map(len, payloads))
        body = b"".join(payloads)
        wait = _wait_time(block, timeout)
        self._handle()
        step = _SLICE if wait is None else min(wait, _SLICE)
        deadline = None if wait is None else time.monotonic() + wait
        done = 0
        while True:
            head = lengths[done:].tobytes()
            put = _fast.put_batch(
                self._cid, len(head), head, len(body), body, _fast.seconds(step), _ST
            )
            if put < 0:
                self._fast_failed(retry=False)
            done += put
            if done >= total:
                return total
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BatchFull(done, total)
                step = min(remaining, _SLICE)
            if put:
                body = b"".join(payloads[done:])

    def _encode_many(self, items: Iterable[Any]) -> List[bytes]:
        """Serialize every item (bytes items tagged under pickle); errors as encode's."""
        items = items if isinstance(items, list) else list(items)
        if self._tag_bytes:
            dumps = self._serializer.dumps
            try:
                return [_BYTES_TAG + x if type(x) is bytes else dumps(x) for x in items]
            except Exception:
                pass  # encode() below raises the precise SerializationError
        return [
            _BYTES_TAG + x if self._tag_bytes and type(x) is bytes else encode(self._serializer, x)
            for x in items
        ]

    def get_many(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = DEFAULT_MAX_MESSAGES,
        *,
        max_items: Optional[int] = None,
        max_bytes: Optional[int] = None,
    ) -> List[Any]:
        """Wait for one item (as get does), then take up to ``max_messages_to_get`` items
        (``max_items`` is the same bound under a shorter name) whose serialized sizes total
        at most ``max_bytes`` (default: the ring size; always at least one item); one native
        call. The signature is faster-fifo's, except that ``timeout=None`` waits forever as
        in ``queue.Queue``.

        If some messages cannot be loaded, raises the first DeserializationError after all
        were taken; its ``items`` lists every result in order, failed ones as their error."""
        if type(block) is int:  # bool is a subclass of int; a plain int here is a mistake
            raise TypeError(
                f"get_many()'s first argument is block (a bool), not {block!r}: "
                "pass the number of items as max_messages_to_get= or max_items="
            )
        if max_items is not None:
            max_messages_to_get = max_items
        max_messages_to_get = operator.index(max_messages_to_get)
        if max_messages_to_get < 1:
            raise ValueError("max_messages_to_get must be at least 1")
        if max_bytes is None:
            max_bytes = self.maxsize
        elif max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        wait = _wait_time(block, timeout)
        native = self._handle()
        items = min(max_messages_to_get, _U32_MAX)
        t = _LOCAL.t
        if t.busy:
            # Called while an item loads from this thread's view buffer: leave the buffer be
            # (the generated method returns the batch in a new buffer).
            try:
                batch = memoryview(_sliced(native.get_batch, wait, items, max_bytes))
            except _NativeError as e:
                raise self._error(e) from None
            return self._decode_all(_table_payloads(batch, _table_lengths(batch)))
        try:
            n = _waited(_fast.take_batch, _NOTHING, wait, self._cid, _fast.u32(items),
                        _fast.u64(max_bytes))  # fmt: skip
            if n == _FAILED:
                self._fast_failed(retry=False)
            if n == _NOTHING:
                raise queue.Empty
            mv = _fast.view(n)[:n]
        except BaseException:
            _fast.discard(t)
            raise
        lengths = _table_lengths(mv)
        try:
            t.busy = True  # items load in place: a get inside a load must leave the buffer be
            if self._tag_bytes:
                try:
                    return self._load_pickles(mv, lengths)
                except Exception:
                    pass  # the loop below reports which items failed
            return self._decode_all(_table_payloads(mv, lengths))
        finally:
            t.busy = False

    def _decode_all(self, payloads: Iterable[bytes]) -> List[Any]:
        """Decode every payload; if some fail, raise the first DeserializationError after all
        were tried, with ``items`` listing every result in order (failed ones as errors)."""
        results: List[Any] = []
        first_error: Optional[DeserializationError] = None
        for data in payloads:
            try:
                results.append(self._decode(data))
            except DeserializationError as err:
                results.append(err)
                first_error = first_error or err
        if first_error is not None:
            first_error.items = results
            raise first_error
        return results

    @staticmethod
    def _load_pickles(mv: memoryview, lengths: "array.array[int]") -> List[Any]:
        """Load a batch of pickle-serializer messages straight from the buffer."""
        loads = pickle.loads
        out: List[Any] = []
        append = out.append
        off = 0
        for size in lengths:
            end = off + size
            if size and mv[off] == 0:
                append(bytes(mv[off + 1 : end]))
            else:
                append(loads(mv[off:end]))
            off = end
        return out

    # ---- state ----

    def qsize(self) -> int:
        """Messages in the queue now (counted in shared memory, across all processes)."""
        return self._open_handle().qsize()

    def empty(self) -> bool:
        return self._open_handle().is_empty()

    def full(self) -> bool:
        """Whether not even an empty message fits now."""
        return self._open_handle().is_full()

    @property
    def spin_us(self) -> int:
        """This handle's waiting policy: how many microseconds a blocking call keeps checking
        (the first 20 spinning, the rest yielding the CPU) before it sleeps on a futex. 0
        sleeps at once: least CPU while waiting, a few microseconds more per wake-up. Default
        70; settable per handle (also ``SageQueue(..., spin_us=...)``)."""
        return self._handle().spin_micros()

    @spin_us.setter
    def spin_us(self, micros: int) -> None:
        self._handle().set_spin_micros(_spin(micros))

    @property
    def closed(self) -> bool:
        """Whether this handle is closed, or the queue was removed by any process (then
        every call raises QueueClosed)."""
        native = self._native
        return native is None or native.is_closed()

    def task_done(self) -> None:
        """Mark one fetched item as processed (queue.Queue.task_done), for every process."""
        try:
            self._handle().task_done(1)
        except _NativeError as e:
            raise from_native(e, self.name) from None

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until every item ever put has been marked done; False if ``timeout`` ran out."""
        wait = _wait_time(True, timeout)
        native = self._handle()
        deadline = None if wait is None else time.monotonic() + wait
        step = _SLICE if wait is None else min(wait, _SLICE)
        try:
            while not native.join(step):
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    step = min(remaining, _SLICE)
        except _NativeError as e:
            raise from_native(e, self.name) from None
        return True

    def get_stats(self) -> Dict[str, Any]:
        """Shared statistics: every native field plus the names the C version used
        (buffer_size, available_read/write, readers, writers, ref_count, total_bytes_*,
        utilization). Counters count from the last reset_stats()."""
        try:
            s = self._handle().stats()
        except _NativeError as e:
            raise from_native(e, self.name) from None
        stats = {f: getattr(s, f) for f in _STATS_FIELDS}
        stats.update(
            buffer_size=s.capacity,
            available_read=s.used_bytes,
            available_write=s.free_bytes,
            readers=s.attached,
            writers=s.attached,
            ref_count=s.attached,
            total_bytes_written=s.bytes_in,
            total_bytes_read=s.bytes_out,
            utilization=s.used_bytes / s.capacity if s.capacity else 0.0,
            serializer=spec_name(self._serializer),
        )
        return stats

    def reset_stats(self) -> None:
        """Restart the counters of get_stats() (for every process) from zero."""
        try:
            self._handle().reset_stats()
        except _NativeError as e:
            raise from_native(e, self.name) from None

    def get_shared_memory_info(self) -> Dict[str, Any]:
        """Where and how the queue lives: names, segment path, file size, mode and owner."""
        info: Dict[str, Any] = {
            "name": self.name,
            "original_name": self.original_name,
            "namespace": self.namespace,
            "namespaced_name": self.name,
            "path": self.path,
            "shm_path": self.path,
            "queue_dir": os.path.dirname(self.path),
            "capacity": self.maxsize,
            "max_message_size": self.max_message_size,
            "auto_cleanup": self.auto_cleanup,
            "created": self.created,
            "creator_pid": self.creator_pid,
            "serializer": spec_name(self._serializer),
            "exists": False,
            "size": None,
            "mode": None,
            "owner_uid": None,
        }
        try:
            st = os.stat(self.path)
        except OSError:
            return info
        info.update(
            exists=True, size=st.st_size, mode=stat.S_IMODE(st.st_mode), owner_uid=st.st_uid
        )
        return info

    # ---- lifecycle ----

    def close(self) -> None:
        """Detach this handle (idempotent). Later calls on it raise QueueClosed. The last
        handle to close removes the queue when auto_cleanup is on."""
        native = getattr(self, "_native", None)
        if native is None:
            return
        self._native = None
        inplace = getattr(self, "_inplace", None)
        if inplace is not None and inplace.native is native:
            inplace.close()  # stays attached while views made from it are still referenced
        else:
            native.detach()

    def destroy(self) -> None:
        """Remove the queue now: every attached process sees it closed. Closes this handle."""
        native = self._native
        self._native = None
        if native is None:
            destroy_queue(self.name)
            return
        try:
            native.unlink()
        except (_QE.Closed, _QE.NotFound):
            native.detach()  # somebody else removed it already
        except _NativeError as e:
            native.detach()
            raise from_native(e, self.name) from None

    def get_reference(self) -> SageQueueRef:
        """A picklable reference: ``ref.get_queue()`` attaches by shared memory in any process
        on this machine and queue folder, and through Ray on any other node of the cluster."""
        return SageQueueRef(
            name=self.original_name,
            maxsize=self.maxsize,
            auto_cleanup=self.auto_cleanup,
            creator_pid=self.creator_pid,
            namespace=self.namespace,
            serializer=portable_spec(self._serializer_spec),
            host_id=host_id(),
            queue_dir=os.path.dirname(self.path),
            node_id=ray_node_id(),
            max_items=self.max_items or 0,
        )

    def __reduce__(self) -> Tuple[Any, Tuple[SageQueueRef]]:
        return _attach_reference, (self.get_reference(),)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        native = getattr(self, "_native", None)
        state = "closed" if native is None else f"qsize={native.qsize()}"
        return (
            f"SageQueue(name={getattr(self, 'name', '?')!r}, "
            f"maxsize={getattr(self, 'maxsize', '?')}, "
            f"serializer={spec_name(getattr(self, '_serializer', None))!r}, {state})"
        )


# ---- module functions ----


def destroy_queue(name: str, namespace: Optional[str] = None, *, force: bool = False) -> bool:
    """Remove a queue by name; attached processes see it closed. False if it did not exist.

    A file at the queue's path that is not a valid segment raises NotAQueueError and is left
    alone, unless ``force``: then it is removed if it is a regular file of this user."""
    full = full_name(name, namespace)
    try:
        _native.unlink_queue(full, bool(force))
    except _NativeError as e:
        err = from_native(e, full)
        if isinstance(err, QueueNotFound):
            return False
        raise err from None
    return True


def list_all_sage_queues() -> List[Dict[str, Any]]:
    """Every queue segment of this user in the queue folder, valid or not, as dicts."""
    try:
        infos = _native.list_queues()
    except _NativeError as e:
        raise from_native(e) from None
    return [{f: getattr(i, f) for f in _INFO_FIELDS} for i in infos]


def cleanup_invalid_queues(include_invalid: bool = False) -> List[str]:
    """Remove every queue of this user whose processes have all exited; returns their names.

    ``include_invalid``: also remove this user's files in the queue folder that are named like
    queues but are not valid segments (never modified otherwise)."""
    from .bridge_state import remove_finished

    remove_finished(queue_dir())  # the state files of bridges that ended
    try:
        return list(_native.collect_garbage(bool(include_invalid)))
    except _NativeError as e:
        raise from_native(e) from None


def queue_dir() -> str:
    """The folder queues live in: $SAGE_QUEUE_DIR, else /dev/shm."""
    return _native.queue_dir()


def max_message_size(maxsize: int) -> int:
    """The largest serialized item a queue created with this maxsize accepts."""
    return _native.max_message_size(maxsize)
