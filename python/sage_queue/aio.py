"""asyncio for SageQueue: ``await q.get_async()``, ``put_async``, ``get_many_async``,
``put_many_async``, ``join_async``, ``get_acked_async`` and ``async for item in q.iter_async()``.

Each call reads the queue's state (``msg_line_state``), makes the same non-waiting call as
``get_nowait``/``put_nowait`` in the event loop's thread, and while that finds nothing (or
no room) awaits the native ``msg_ready_async``: a UniFFI future that resolves when the state
moved on from the one read before the try, and never takes or puts anything itself. So a
message is taken only by a call that returns it, with no await between the take and the
return, and cancelling a waiting call (a timeout, a ``task.cancel()``) can never lose,
duplicate or half-put a message.

No thread per waiter and no polling: the waits of every coroutine of the process are served
by the native watcher threads (one per 127 queues waited on at once), which sleep on the
queues' wake words. Each event loop has one native ``ReadyFd``: an eventfd the loop watches
(``loop.add_reader``). A watcher's wake only notes the wait and makes that fd readable; the
loop then resumes the woken coroutines, each of which polls its own wait right before it
tries again (as a UniFFI future is polled in its task). So no Python runs outside the loop,
any loop that has ``add_reader`` works (the default, uvloop, one per thread), and an idle
program whose coroutines all wait uses no CPU. Where io_uring's futex waits are available
(Linux 6.7+), the loop's thread also sleeps on those wake words itself, so a put wakes the
loop directly instead of through a watcher (one thread wake-up instead of two; see
``ready_fd.rs``). The loop's calls that follow a wake (``woken``, ``poll``) are direct calls
(``_fastpath.py``). (Kotlin and Swift await the same
``msg_ready_async`` as UniFFI futures; for asyncio that path woke an idle await about 1.3x
slower, through a foreign-thread callback and ``call_soon_threadsafe``.)
Exceptions are those of the blocking calls: ``queue.Empty``/``queue.Full`` when the timeout
ends, ``QueueClosed`` when the queue is closed or removed while waiting.
"""

import asyncio
import math
import os
import queue
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
)

from . import _fastpath as _fast
from . import _native
from .errors import BatchFull, from_native

if TYPE_CHECKING:
    from .queue import SageQueue

DATA, SPACE, TASKS = 0, 1, 2
_ST = _fast.STATUS
_FOREVER = -1.0


def _deadline(timeout: Optional[float]) -> Optional[float]:
    """The monotonic time a call must end by (None: never), with queue.Queue's checks."""
    if timeout is None or timeout == math.inf:
        return None
    if timeout != timeout:
        raise ValueError("'timeout' must be a number of seconds, not NaN")
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + timeout


def _target(q: Any, line: int) -> "SageQueue":
    """The local queue whose ``line`` a handle waits on: a SageQueue itself, or the window a
    RemoteSageQueue names (``_wait_target``)."""
    target: SageQueue = q._wait_target(line) if hasattr(q, "_wait_target") else q
    return target


def _state(q: Any, line: int) -> int:
    """The line's state, read before a try (msg_line_state; see the UDL)."""
    target = _target(q, line)
    target._handle()  # QueueClosed on a closed handle
    state: int = _fast.line_state(target._cid, line, _fast.STATUS)
    if state == _fast.FAILED:
        target._fast_failed(retry=False)
    return state


_FAILED, _PENDING = 2, 3  # ReadyFd.poll: the wait failed (error() raises why); it goes on


class _LoopWaits:
    """One event loop's waits: its native ReadyFd (an eventfd the loop reads) and, by token,
    the future that resumes the coroutine of each wait in progress."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # No reference to the loop: this object is its value in a WeakKeyDictionary.
        self.native = _native.ReadyFd()  # type: ignore[no-untyped-call]
        self.futures: Dict[int, asyncio.Future[None]] = {}
        loop.add_reader(self.native.fd(), self._woken)

    def _woken(self) -> None:
        """The fd is readable: resume the coroutines whose waits were woken."""
        handle = self.native._handle
        while True:
            token = _fast.ready_woken(_fast.ready_clone(handle, _ST), _ST)
            if not token:
                return
            future = self.futures.pop(token, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def wait(self, id_: int, line: int, seen: int, timeout: float) -> bool:
        """msg_ready_async(id_, line, seen, timeout), awaited through the fd."""
        token = self.native.start(id_, line, seen, timeout)  # QueueError if it failed
        if token < 2:
            return bool(token)
        ended = False
        try:
            while True:
                future = asyncio.get_running_loop().create_future()
                self.futures[token] = future
                await future
                # Polled here, right before the caller tries again (as a UniFFI future is
                # polled in its task): till then the watcher counts this waiter in flight.
                code = _fast.ready_poll(_fast.ready_clone(self.native._handle, _ST), token, _ST)
                if code != _PENDING:
                    break
            ended = True  # the native side forgot the wait (poll ended it)
            if code == _FAILED:
                self.native.error(token)  # raises the wait's QueueError
            return bool(code)
        finally:
            self.futures.pop(token, None)
            if not ended:
                # Cancelled (a timeout of the caller, task.cancel()): drop the native wait,
                # which leaves the watcher.
                self.native.cancel(token)


# Each process's loops' waits (a forked child makes its own: the parent's watcher threads and
# eventfds are not its to use; its inherited entries are kept, never freed, there).
_LOOPS: Dict[int, "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaits]"] = {}


def _loop_waits() -> _LoopWaits:
    loop = asyncio.get_running_loop()
    per_loop = _LOOPS.setdefault(os.getpid(), weakref.WeakKeyDictionary())
    waits = per_loop.get(loop)
    if waits is None:
        waits = per_loop[loop] = _LoopWaits(loop)
    return waits


async def _ready(q: Any, line: int, seen: int, deadline: Optional[float]) -> bool:
    """Wait until ``q``'s ``line`` moved on from ``seen`` (read before the failed try); False
    when the deadline passed.

    ``q`` is a SageQueue, or a handle that names the local queue its ``line`` waits on
    (``_wait_target(line)``) and checks its own health between waits of at most
    ``_wait_slice`` seconds (a RemoteSageQueue: its bridge)."""
    target = _target(q, line)
    slice_ = getattr(q, "_wait_slice", None)
    while True:
        left = _FOREVER if deadline is None else deadline - time.monotonic()
        if deadline is not None and left <= 0:
            return False
        step = left if slice_ is None else (slice_ if left < 0 else min(left, slice_))
        target._handle()  # QueueClosed on a closed handle
        try:
            if await _loop_waits().wait(target._id, line, seen, step):
                return True
        except _native.QueueError as e:
            raise target._error(e) from None
        if slice_ is None:
            return False
        q._check(force=True)  # the handle's health (raises if it cannot go on)


async def _taken(q: Any, attempt: Callable[[], Any], timeout: Optional[float]) -> Any:
    """``attempt()`` (a non-waiting take that raises queue.Empty) until it returns, awaiting
    the data line between tries; queue.Empty when the timeout ends first."""
    deadline = _deadline(timeout)
    while True:
        seen = _state(q, DATA)
        try:
            return attempt()
        except queue.Empty:
            pass
        if not await _ready(q, DATA, seen, deadline):
            raise queue.Empty


async def get_async(q: Any, timeout: Optional[float] = None) -> Any:
    return await _taken(q, lambda: q.get(block=False), timeout)


async def get_acked_async(q: "SageQueue", timeout: Optional[float] = None) -> Any:
    """get_acked() for coroutines: ``(item, receipt)``. Returned messages (a nack, a
    timed-out or dead holder) wake it as a put does."""
    return await _taken(q, lambda: q.get_acked(block=False), timeout)


async def put_async(q: Any, item: Any, timeout: Optional[float] = None) -> None:
    deadline = _deadline(timeout)
    while True:
        seen = _state(q, SPACE)
        try:
            q.put(item, block=False)
            return
        except queue.Full:
            pass
        if not await _ready(q, SPACE, seen, deadline):
            raise queue.Full


async def get_many_async(
    q: Any,
    timeout: Optional[float] = None,
    max_messages_to_get: int = 1_000_000_000,
    *,
    max_items: Optional[int] = None,
    max_bytes: Optional[int] = None,
) -> List[Any]:
    items: List[Any] = await _taken(
        q,
        lambda: q.get_many(
            False, None, max_messages_to_get, max_items=max_items, max_bytes=max_bytes
        ),
        timeout,
    )
    return items


async def put_many_async(q: Any, items: Iterable[Any], timeout: Optional[float] = None) -> int:
    """Put every item in order, as many per try as fit (whole messages); BatchFull (a
    queue.Full, with ``count``) when the timeout ends part way. A cancelled call may have put
    a prefix of the items, never part of one."""
    deadline = _deadline(timeout)
    rest = items if isinstance(items, list) else list(items)
    total, done = len(rest), 0
    while True:
        seen = _state(q, SPACE)
        try:
            done += q.put_many(rest[done:], block=False)
            return total
        except BatchFull as e:
            done += e.count
        except queue.Full:
            pass
        if not await _ready(q, SPACE, seen, deadline):
            if done:
                raise BatchFull(done, total)
            raise queue.Full


async def join_async(q: "SageQueue", timeout: Optional[float] = None) -> bool:
    """Wait until every item put was marked done (task_done); False when the timeout ends
    (``join``'s meaning with a timeout)."""
    deadline = _deadline(timeout)
    native = q._handle()
    while True:
        seen = _state(q, TASKS)
        try:
            if native.join(0.0):
                return True
        except _native.QueueError as e:
            raise from_native(e, q.name) from None
        if not await _ready(q, TASKS, seen, deadline):
            return False


async def iterate(
    q: Any, sentinel: Any = None, stop_on_sentinel: bool = False
) -> AsyncIterator[Any]:
    """Items as they come, until the queue is closed (QueueClosed ends the iteration) or,
    with ``stop_on_sentinel``, an item equal to ``sentinel`` arrives (not yielded)."""
    from .errors import QueueClosed

    while True:
        try:
            item = await get_async(q)
        except QueueClosed:
            return
        if stop_on_sentinel and item == sentinel:
            return
        yield item
