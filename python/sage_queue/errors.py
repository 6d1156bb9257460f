"""Exceptions of sage_queue and the one place where native errors become Python exceptions.

Waiting errors are the standard ``queue.Empty`` and ``queue.Full``; every other error is a
subclass of ``SageQueueError`` and of the built-in exception a caller would expect (a bad name
is a ``ValueError``, a missing queue a ``FileNotFoundError``, a closed queue a ``RuntimeError``).
"""

import errno
import queue
from typing import Any, List, Optional, Tuple

from . import _native


class SageQueueError(Exception):
    """Base class of every sage_queue error except queue.Empty and queue.Full."""

    _fields: Tuple[str, ...] = ()

    def __reduce__(self) -> Any:
        # Rebuild from the constructor's own arguments, so errors survive pickling (e.g. when
        # a multiprocessing pool sends them back to the parent).
        if not self._fields:
            return super().__reduce__()
        return type(self), tuple(getattr(self, f) for f in self._fields)


class QueueClosed(SageQueueError, RuntimeError):
    """The handle was closed, or the queue was removed (unlinked) by someone."""

    _fields = ("name", "reason")

    def __init__(self, name: str, reason: str = "this handle was closed"):
        super().__init__(f"queue {name!r} is closed: {reason}")
        self.name = name
        self.reason = reason


class InvalidQueueName(SageQueueError, ValueError):
    """A queue name or namespace that the native core rejects."""

    _fields = ("name", "reason")

    def __init__(self, name: str, reason: str):
        super().__init__(f"invalid queue name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class MessageTooLarge(SageQueueError, ValueError):
    """A serialized item larger than the queue's largest message; it can never fit.

    ``size`` and ``max_size`` count what the caller gave: for a ``bytes`` item under the
    pickle serializer (``tag``), its own length and the largest such item, which is one byte
    below the queue's max_message_size (the item travels with a one-byte tag).
    ``needed_maxsize`` is the smallest ``maxsize`` of a queue that takes it (None: none can)."""

    _fields = ("size", "max_size", "tag")

    def __init__(self, size: int, max_size: int, tag: bool = False):
        self.size = size
        self.max_size = max_size
        self.tag = tag
        self.needed_maxsize = needed_maxsize(size + tag)
        kind = "a bytes item" if tag else "a message"
        text = f"{kind} of {size} bytes is larger than this queue's limit of {max_size} bytes"
        if tag:
            text += " for bytes items (the pickle serializer adds a one-byte tag to them)"
        if self.needed_maxsize is None:
            largest = _native.max_message_size(MAX_CAPACITY) - tag
            text += f"; no queue can hold it (the largest message is {largest} bytes): split it"
        else:
            text += f"; this item needs maxsize >= {self.needed_maxsize}"
        super().__init__(text)


# The largest ring a queue can have (bytes); see the native layout.
MAX_CAPACITY = 1 << 40


def needed_maxsize(message_bytes: int) -> Optional[int]:
    """The smallest queue maxsize (a power of two) whose largest message holds
    ``message_bytes``, or None if no queue can."""
    capacity = 4096
    while _native.max_message_size(capacity) < message_bytes:
        capacity *= 2
        if capacity > MAX_CAPACITY:
            return None
    return capacity


class _OSErrorMessage(OSError):
    """An OSError with an errno whose str() is just the message (no "[Errno N]" prefix)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class QueueNotFound(SageQueueError, _OSErrorMessage, FileNotFoundError):
    """No queue of that name exists (for this user, in the queue folder)."""

    _fields = ("name",)

    def __init__(self, name: str):
        super().__init__(errno.ENOENT, f"queue {name!r} does not exist")
        self.name = name


class QueueNotLocal(SageQueueError, RuntimeError):
    """A reference to a queue whose shared memory this process cannot map: on another machine,
    in another queue folder, or on this machine before it rebooted. Under Ray, references
    reach such queues through Ray instead (unless local-only is asked)."""

    _fields = ("name", "owner_host", "this_host", "owner_dir", "this_dir", "how")

    def __init__(
        self,
        name: str,
        owner_host: str,
        this_host: str,
        owner_dir: str = "",
        this_dir: str = "",
        how: str = "",
    ):
        if owner_host and owner_host != this_host:
            if owner_host.rsplit("/", 1)[0] == this_host.rsplit("/", 1)[0]:
                where = (
                    f"was made before this machine last booted (reference {owner_host!r}, now "
                    f"{this_host!r})"
                )
            else:
                where = (
                    f"lives in the shared memory of host {owner_host!r}, not of this one "
                    f"({this_host!r})"
                )
        else:
            where = f"lives in queue folder {owner_dir!r}, and this process uses {this_dir!r}"
        how = how or (
            "a process connected to the same Ray cluster gets a remote handle through Ray; "
            "outside Ray only processes on the queue's machine and folder can attach"
        )
        super().__init__(
            f"queue {name!r} is node-local and {where}; {how}. To keep Ray actors and tasks "
            "on the queue's node: actor_cls.options(**sage_queue.ray.colocate(queue)), or "
            "scheduling_strategy=sage_queue.ray.node_affinity(queue)"
        )
        self.name = name
        self.owner_host = owner_host
        self.this_host = this_host
        self.owner_dir = owner_dir
        self.this_dir = this_dir
        self.how = how


class QueueUnavailable(SageQueueError, RuntimeError):
    """A queue reached through Ray from another node can no longer be reached: this node's
    bridge actor died, or the queue's node left the cluster. Items in flight between the nodes
    may be lost (at most the transfer window; see the README's guarantees)."""

    _fields = ("name", "reason")

    def __init__(self, name: str, reason: str):
        super().__init__(f"queue {name!r} is unavailable: {reason}")
        self.name = name
        self.reason = reason


class QueueExists(SageQueueError, _OSErrorMessage, FileExistsError):
    """A queue of that name already exists and create=True was asked."""

    _fields = ("name",)

    def __init__(self, name: str):
        super().__init__(errno.EEXIST, f"queue {name!r} already exists")
        self.name = name


class NotAQueueError(SageQueueError, ValueError):
    """The file at the queue's path is not a sage-queue segment; it is left untouched."""

    _fields = ("reason",)

    def __init__(self, reason: str):
        super().__init__(f"not a sage-queue segment: {reason}")
        self.reason = reason


class IncompatibleQueue(SageQueueError, ValueError):
    """A sage-queue segment written by another, incompatible layout version."""

    _fields = ("reason",)

    def __init__(self, reason: str):
        super().__init__(f"incompatible sage-queue segment: {reason}")
        self.reason = reason


class QueuePermissionError(SageQueueError, _OSErrorMessage, PermissionError):
    """The segment exists but this process may not use it."""

    _fields = ("reason",)

    def __init__(self, reason: str):
        super().__init__(errno.EACCES, f"permission denied: {reason}")
        self.reason = reason


class QueueIOError(SageQueueError, OSError):
    """An operating-system error inside the native core."""

    def __init__(self, message: str):
        super().__init__(message)


class QueueNoSpace(SageQueueError, _OSErrorMessage):
    """The queue folder has no room for the ring asked for; nothing was created. The message
    names the folder, the bytes asked and the bytes free."""

    _fields = ("reason",)

    def __init__(self, reason: str):
        super().__init__(errno.ENOSPC, reason)
        self.reason = reason


class StaleReceipt(SageQueueError, ValueError):
    """An ack or nack whose receipt is no longer valid: the message was already acknowledged
    or returned, or delivered again after its holder died or its visibility timeout passed.
    The newer delivery is untouched."""


class InvalidArgument(SageQueueError, ValueError):
    """An argument the native core rejects (e.g. task_done() called too many times)."""


class BatchFull(queue.Full):
    """put_many() ran out of time with only ``count`` of ``total`` items put (in order)."""

    def __init__(self, count: int, total: int):
        super().__init__(f"queue full: put {count} of {total} items before the timeout")
        self.count = count
        self.total = total

    def __reduce__(self) -> Any:
        return type(self), (self.count, self.total)


def from_native(err: Exception, name: Optional[str] = None) -> BaseException:
    """Translate a native ``QueueError`` into the sage_queue / standard exception to raise.

    ``name`` is the queue the call was about, used when the native error carries none.
    Anything that is not a native QueueError is returned unchanged.
    """
    e: Any = _native.QueueError  # its variants are set at run time, unknown to mypy
    if isinstance(err, e.Empty):
        return queue.Empty()
    if isinstance(err, e.Full):
        return queue.Full()
    if isinstance(err, e.TooLarge):
        return MessageTooLarge(err.size, err.max_size)
    if isinstance(err, e.Closed):
        return QueueClosed(name or "?", err.reason)
    if isinstance(err, e.InvalidName):
        return InvalidQueueName(err.name, err.reason)
    if isinstance(err, e.NotFound):
        return QueueNotFound(err.name)
    if isinstance(err, e.AlreadyExists):
        return QueueExists(err.name)
    if isinstance(err, e.NotAQueue):
        return NotAQueueError(err.reason)
    if isinstance(err, e.Incompatible):
        return IncompatibleQueue(err.reason)
    if isinstance(err, e.PermissionDenied):
        return QueuePermissionError(err.reason)
    if isinstance(err, e.InvalidArgument):
        return InvalidArgument(err.reason)
    if isinstance(err, e.NoSpace):
        return QueueNoSpace(err.reason)
    if isinstance(err, e.StaleReceipt):
        return StaleReceipt(err.reason)
    if isinstance(err, e.Io):
        return QueueIOError(err.reason)
    return err


class SerializationError(SageQueueError, TypeError):
    """An item the queue's serializer cannot turn into bytes; nothing was put."""


class DeserializationError(SageQueueError, ValueError):
    """A message the serializer could not load. It was taken off the queue; its bytes are
    in ``data`` (the queue keeps every other message). Raised by ``get_many``, ``items``
    lists every result of the batch in order, failed ones as their error."""

    items: Optional[List[Any]] = None

    _fields = ("data", "reason")

    def __init__(self, data: bytes, reason: str):
        super().__init__(f"cannot deserialize a message of {len(data)} bytes: {reason}")
        self.data = data
        self.reason = reason
