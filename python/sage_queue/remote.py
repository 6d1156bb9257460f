"""RemoteSageQueue: a queue that lives on another Ray node, used with the SageQueue API, and
the two actors that carry its items through Ray: this node's bridge and the queue node's
gateway.

How an item travels from a producer on node B to a queue on node A::

    RemoteSageQueue.put -> B's outbound window (a shared-memory queue on B)
        -> B's bridge actor takes a batch -> one Ray actor call
        -> A's gateway actor puts the batch into the queue (shared memory on A)

and back to a consumer on node B::

    A's gateway takes a batch (it waits for the first item) -> returned through Ray
        -> B's bridge puts it into B's inbound window (shared memory on B) -> RemoteSageQueue.get

Every process of node B that uses the queue shares B's two windows and B's one bridge (a
detached actor found by name); each bridge owns one gateway, placed on the queue's node. One
batch is in flight each way per bridge, so batches keep per-producer order, and a batch is as
large as what accumulated meanwhile: under load, one Ray call carries many items.

Flow control: the inbound window holds at most ``window`` items (``$SAGE_QUEUE_WINDOW``,
default 1024) and the ring's bytes, and the bridge asks the gateway only for the room left,
so a node never holds more than its window plus one batch of items taken from the queue. The
outbound window has the same bound: a producer's put waits once it is full.

Losses are counted from cumulative counters that outlive the actors: the windows' own
counters (in shared memory on B) and the gateway's (a small state file on A). What the
gateway took from the queue and never reached B's inbound window, and what the bridge took
from the outbound window and never reached the queue, is ``in_transit`` while both actors
live and ``lost`` once one of them died.
"""

import contextlib
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, TypeVar

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import aio
from .bridge_state import bridge_key, read_state, state_path, window_names, write_state
from .errors import BatchFull, QueueClosed, QueueNotLocal, QueueUnavailable
from .queue import DEFAULT_MAX_MESSAGES, QueueConveniences, SageQueue, _wait_time
from .reference import SageQueueRef, attach_reference, host_id, queue_folder, ray_node_id
from .transfer import batch_count, put_batch, take_batch

T = TypeVar("T")

DEFAULT_WINDOW_ITEMS = 1024
WINDOW_ENV = "SAGE_QUEUE_WINDOW"
RAY_NAMESPACE = "sage_queue"
# The gateway waits this long for a first item per pull; a bridge stops within about as long.
PULL_WAIT = 0.2
# A waiting handle checks its bridge this often (so it learns of a failure within about this).
CHECK_EVERY = 0.1
# An idle bridge looks for waiting consumers this often; task_done() calls go on this often.
IDLE_POLL = 0.02
TASKS_EVERY = 0.05
# A bridge asks this often whether its queue still exists.
CHECK_QUEUE_EVERY = 1.0
# A Ray call to the gateway that takes longer than this means the queue's node is gone.
CALL_TIMEOUT = 60.0


def process_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (to tell it from a later process with its pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _actor_gone(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            ray.exceptions.RayActorError,
            ray.exceptions.ActorUnavailableError,
            ray.exceptions.GetTimeoutError,
            ray.exceptions.NodeDiedError,
        ),
    )


def _cause(exc: BaseException) -> BaseException:
    """The exception a remote method raised, out of Ray's wrapper."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        return exc.cause if isinstance(exc.cause, BaseException) else exc
    return exc


# ---- the gateway: on the queue's node ----


@ray.remote(num_cpus=0, max_concurrency=4)  # type: ignore[call-overload]
class Gateway:
    """Moves batches between the queue (shared memory on its node) and one bridge. Its
    counters (items taken for the bridge, items put from it) live in a state file next to
    the queue, so the next gateway of the same bridge continues them."""

    def __init__(self, ref: SageQueueRef) -> None:
        if ref.host_id and ref.host_id != host_id():
            raise QueueNotLocal(ref.full_name, ref.host_id, host_id(), ref.queue_dir)
        os.environ["SAGE_QUEUE_DIR"] = ref.queue_dir

        def open_raw() -> SageQueue:
            return SageQueue(
                ref.name, ref.maxsize, ref.auto_cleanup, ref.namespace, serializer="raw",
                create=False,
            )  # fmt: skip

        self._pull_q, self._push_q, self._misc_q = open_raw(), open_raw(), open_raw()
        self._state_path = state_path(ref, ref.queue_dir, "gateway")
        self._queue = ref.full_name
        old = read_state(self._state_path)
        self._lock = threading.Lock()
        self._sent = int(old.get("sent", 0))
        self._received = int(old.get("received", 0))
        self._returned = int(old.get("returned", 0))
        self._save()

    def _save(self) -> None:
        with self._lock:
            write_state(self._state_path, {"queue": self._queue, **self.counters()})

    def counters(self) -> Dict[str, int]:
        return {"sent": self._sent, "received": self._received, "returned": self._returned}

    def pid(self) -> int:
        return os.getpid()

    def pull(self, max_items: int, max_bytes: int, wait: float) -> bytes:
        """A batch (sage_queue.transfer) of up to ``max_items`` messages (``max_bytes`` in
        total, at least one), waiting up to ``wait`` seconds for the first; an empty batch
        if none came."""
        batch = take_batch(self._pull_q, max_items, max_bytes, wait)
        count = batch_count(batch)
        if count:
            self._sent += count
            self._save()
        return batch

    def push(self, batch: bytes) -> int:
        """Put every message of the batch, in order, waiting for room as long as it takes."""
        count = put_batch(self._push_q, batch)
        self._received += count
        self._save()
        return count

    def give_back(self, batch: bytes) -> int:
        """Put back messages a bridge had brought to its node and nobody there took."""
        count = put_batch(self._push_q, batch)
        self._returned += count
        self._save()
        return count

    def forget(self) -> None:
        """The queue was removed: remove this gateway's state file too."""
        with contextlib.suppress(OSError):
            os.unlink(self._state_path)

    def check(self) -> None:
        """Raise QueueClosed if the queue was removed (a bridge asks now and then)."""
        self._misc_q._open_handle()

    def task_done(self, count: int) -> None:
        if count:
            self._misc_q._open_handle().task_done(count)

    def join(self, timeout: Optional[float]) -> bool:
        return self._misc_q.join(timeout)

    def stats(self) -> Dict[str, Any]:
        return self._misc_q.get_stats()


# ---- the bridge: on each node that uses the queue ----


@ray.remote(num_cpus=0, max_concurrency=8)  # type: ignore[call-overload]
class Bridge:
    """This node's end of a remote queue: two window queues in the node's shared memory and
    two threads that carry batches between them and the gateway."""

    def __init__(self, ref: SageQueueRef, window: int, folder: str) -> None:
        os.environ["SAGE_QUEUE_DIR"] = folder
        self._ref = ref
        self._window = window
        self._state_path = state_path(ref, folder, "bridge")
        self._status = "ok"
        self._reason = ""
        in_name, out_name = window_names(ref)
        # Create or open: a bridge that died leaves its windows, and this one carries on.
        self._in = SageQueue(
            in_name, ref.maxsize, auto_cleanup=False, serializer="raw", max_items=window
        )
        self._out = SageQueue(
            out_name, ref.maxsize, auto_cleanup=False, serializer="raw", max_items=window
        )
        self._gateway = Gateway.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(ref.node_id, soft=False)
        ).remote(ref)
        gw = ray.get(self._gateway.counters.remote(), timeout=CALL_TIMEOUT)
        self._taken_back = int(read_state(self._state_path).get("taken_back", 0))
        # What earlier bridges and gateways of this pair left unaccounted is lost.
        self._lost = self._unaccounted(gw)
        self._moved = {
            "items_in": 0, "items_out": 0, "bytes_in": 0, "bytes_out": 0, "items_given_back": 0
        }  # fmt: skip
        self._tasks_forwarded = self._tasks_done_here()
        self._tasks_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(loop,), daemon=True)
            for loop in (self._pull_loop, self._push_loop, self._task_loop)
        ]
        for t in self._threads:
            t.start()
        self._save()

    # -- accounting --

    def _unaccounted(self, gw: Dict[str, int]) -> int:
        """Items taken from one side and not (yet) put on the other: the gateway's sent minus
        the inbound window's puts, plus the outbound window's takes minus the gateway's
        received. In flight while both actors live; lost once one died."""
        inn, out = self._in.get_stats(), self._out.get_stats()
        pulled = max(0, gw["sent"] - inn["msgs_in"])
        pushed = max(0, out["msgs_out"] - gw["received"])
        given_back = max(0, self._taken_back - gw["returned"])
        return int(pulled + pushed + given_back)

    def _tasks_done_here(self) -> int:
        s = self._in.get_stats()
        return int(s["msgs_in"] - s["unfinished_tasks"])

    def _save(self) -> None:
        write_state(
            self._state_path,
            {
                "status": self._status,
                "reason": self._reason,
                "pid": os.getpid(),
                "owner_node": self._ref.node_id,
                "queue": self._ref.full_name,
                "window_items": self._window,
                "window_bytes": self._ref.maxsize,
                "lost": self._lost,
                "taken_back": self._taken_back,
                **self._moved,
            },
        )

    # -- the loops --

    def _run(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # the gateway or the queue went away
            cause = _cause(exc)
            if isinstance(cause, QueueClosed):
                self._finish("closed", "the queue was removed")
            elif _actor_gone(cause):
                self._finish(
                    "unavailable",
                    f"the queue's node (Ray node {self._ref.node_id}) cannot be reached: "
                    f"{type(cause).__name__}",
                )
            else:
                self._finish("unavailable", f"the bridge failed: {cause!r}")

    def _finish(self, status: str, reason: str) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._status, self._reason = status, reason
        # Items still in the outbound window can no longer reach the queue.
        self._lost += self._out.qsize() if status != "closed" else 0
        self._save()
        if status == "closed":
            # The queue is gone for good: remove the windows and end this actor (and with it
            # its gateway); handles read "closed" in the state file.
            self._in.destroy()
            self._out.destroy()
            with contextlib.suppress(Exception):
                ray.get(self._gateway.forget.remote(), timeout=CALL_TIMEOUT)
            ray.get_runtime_context().current_actor.__ray_terminate__.remote()

    def _pull_loop(self) -> None:
        """Bring batches to this node while its consumers want them: a consumer waits on the
        inbound window now, or waited on it or took from it since the last pull (a node whose
        processes only put never pulls). Items wait here only while consumers are attached:
        when the last handle of the node closed, what is left goes back to the queue."""
        first = self._in.get_stats()
        seen = (first["msgs_out"], first["waits_empty"])
        next_attach_check = last_pull = 0.0
        while not self._stop.is_set():
            stats = self._in.get_stats()
            now = time.monotonic()
            if now >= next_attach_check:
                next_attach_check = now + 0.1
                if stats["messages"] and stats["attached"] <= 1:
                    self._give_back()
                    continue
            # A consumer asleep on the window (a blocked get, or an awaiting coroutine's
            # watcher) is demand too.
            demand = (stats["msgs_out"], stats["waits_empty"]) != seen or stats[
                "consumers_waiting"
            ] > 0
            room = self._window - stats["messages"]
            if not demand or room <= 0 or stats["free_bytes"] < stats["capacity"] // 4:
                # Look again in 1 ms while the node's consumers were busy lately, else in
                # IDLE_POLL (an idle bridge costs next to nothing; a consumer that starts
                # waiting is seen within that).
                self._stop.wait(0.001 if now - last_pull < 0.5 else IDLE_POLL)
                continue
            seen = (stats["msgs_out"], stats["waits_empty"])
            last_pull = now
            call = self._gateway.pull.remote(room, stats["free_bytes"] // 2, PULL_WAIT)
            batch = ray.get(call, timeout=CALL_TIMEOUT)
            count = put_batch(self._in, batch)
            if count:
                self._moved["items_in"] += count
                self._moved["bytes_in"] += len(batch) - 4 - 4 * count
                self._save()

    def _give_back(self) -> None:
        """Return the inbound window's items to the queue (nobody on this node is left)."""
        batch = take_batch(self._in, self._window, self._ref.maxsize, 0.0)
        count = batch_count(batch)
        if not count:
            return
        self._taken_back += count
        self._save()  # counted before they travel: a death on the way is a counted loss
        ray.get(self._gateway.give_back.remote(batch), timeout=None)
        self._moved["items_given_back"] += count
        self._save()

    def _push_loop(self) -> None:
        while not self._stop.is_set():
            batch = take_batch(self._out, self._window, self._ref.maxsize, PULL_WAIT)
            count = batch_count(batch)
            if not count:
                continue
            ray.get(self._gateway.push.remote(batch), timeout=None)
            self._moved["items_out"] += count
            self._moved["bytes_out"] += len(batch) - 4 - 4 * count
            self._save()

    def _task_loop(self) -> None:
        """Hand task_done() calls on, and now and then ask whether the queue still exists (a
        bridge whose node only puts, or is idle, would not learn it otherwise)."""
        next_check = 0.0
        while not self._stop.wait(TASKS_EVERY):
            self.forward_tasks()
            if time.monotonic() >= next_check:
                ray.get(self._gateway.check.remote(), timeout=CALL_TIMEOUT)
                next_check = time.monotonic() + CHECK_QUEUE_EVERY

    # -- called by handles --

    def forward_tasks(self) -> None:
        """Hand task_done() calls made on this node's inbound window on to the queue (from
        the task loop and from join, one at a time: a count must never go on twice)."""
        with self._tasks_lock:
            done = self._tasks_done_here()
            if done > self._tasks_forwarded:
                ray.get(self._gateway.task_done.remote(done - self._tasks_forwarded))
                self._tasks_forwarded = done

    def info(self) -> Dict[str, Any]:
        in_name, out_name = window_names(self._ref)
        pid = os.getpid()
        return {
            "status": self._status,
            "reason": self._reason,
            "pid": pid,
            "start": process_start(pid),
            "in": in_name,
            "out": out_name,
            "state": self._state_path,
        }

    def flush(self, timeout: Optional[float]) -> bool:
        """Wait until this node's outbound window is empty and its last batch was put."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            out = self._out.get_stats()
            gw = ray.get(self._gateway.counters.remote(), timeout=CALL_TIMEOUT)
            if out["messages"] == 0 and out["msgs_out"] - gw["received"] <= self._lost:
                return True
            if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(0.002)

    def join(self, timeout: Optional[float]) -> bool:
        start = time.monotonic()
        if not self.flush(timeout):
            return False
        self.forward_tasks()
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        joined: bool = ray.get(self._gateway.join.remote(left))
        return joined

    def stats(self) -> Dict[str, Any]:
        owner = ray.get(self._gateway.stats.remote(), timeout=CALL_TIMEOUT)
        gw = ray.get(self._gateway.counters.remote(), timeout=CALL_TIMEOUT)
        inn, out = self._in.get_stats(), self._out.get_stats()
        in_transit = max(0, self._unaccounted(gw) - self._lost)
        return {
            **owner,
            "remote": True,
            "owner_node": self._ref.node_id,
            "bridge_node": ray_node_id(),
            "bridge_pid": os.getpid(),
            "window_items": self._window,
            "window_bytes": self._ref.maxsize,
            "inbound_window_items": inn["messages"],
            "inbound_window_bytes": inn["used_bytes"],
            "outbound_window_items": out["messages"],
            "outbound_window_bytes": out["used_bytes"],
            "in_transit_items": in_transit + inn["messages"] + out["messages"],
            "in_transit_bytes": inn["used_bytes"] + out["used_bytes"],
            "lost_in_transit": self._lost,
            "bytes_moved_in": self._moved["bytes_in"],
            "bytes_moved_out": self._moved["bytes_out"],
            "items_moved_in": self._moved["items_in"],
            "items_moved_out": self._moved["items_out"],
            "items_given_back": self._moved["items_given_back"],
        }

    def pids(self) -> List[int]:
        """This bridge's process and its gateway's (for RSS measurements)."""
        return [os.getpid(), ray.get(self._gateway.pid.remote(), timeout=CALL_TIMEOUT)]

    def stop(self) -> None:
        self._finish("stopped", "the bridge was stopped")


# ---- the handle ----


class RemoteSageQueue(QueueConveniences):
    """The SageQueue API for a queue on another Ray node (``SageQueueRef.get_queue()`` gives
    one there). Puts and gets use this node's shared-memory windows, so a call costs about
    a local one; batches cross nodes through this node's bridge actor. ``qsize()``,
    ``get_stats()`` and ``join()`` ask the queue's node through Ray (milliseconds).

    When this node's bridge dies, or the queue's node leaves the cluster, calls raise
    ``QueueUnavailable`` within about ``CHECK_EVERY`` seconds of their next wait (a get first
    returns what already reached this node). When the queue is removed, they raise
    ``QueueClosed``."""

    def __init__(self, ref: SageQueueRef, serializer: Any = "pickle") -> None:
        self._ref = ref
        self.name = ref.full_name
        self.original_name = ref.name
        self.namespace = ref.namespace
        self.maxsize = ref.maxsize
        self.max_items = ref.max_items or None
        self.auto_cleanup = ref.auto_cleanup
        self.creator_pid = ref.creator_pid
        here = ray_node_id()
        window = int(os.environ.get(WINDOW_ENV, DEFAULT_WINDOW_ITEMS))
        bridge = Bridge.options(  # type: ignore[attr-defined]
            name=f"sage_queue.bridge.{here}.{bridge_key(ref)}",
            namespace=RAY_NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(ref, window, queue_folder())
        try:
            info = ray.get(bridge.info.remote(), timeout=CALL_TIMEOUT)
        except Exception as exc:
            raise QueueUnavailable(
                self.name, f"could not start this node's bridge: {_cause(exc)!r}"
            ) from None
        self._bridge = bridge
        self._bridge_pid: int = info["pid"]
        self._bridge_start: Optional[str] = info["start"]
        self._state_path: str = info["state"]
        self._next_check = 0.0
        self._closed = False
        self._check(force=True, info=info)
        self._in = SageQueue(info["in"], create=False, serializer=serializer, auto_cleanup=False)
        self._out = SageQueue(
            info["out"], create=False, serializer=serializer, auto_cleanup=False
        )
        self.max_message_size = self._in.max_message_size

    # -- health --

    def _check(self, force: bool = False, info: Optional[Dict[str, Any]] = None) -> None:
        """Raise QueueUnavailable (QueueClosed) if this node's bridge died or reports that
        the queue cannot be reached (was removed). Checks at most every CHECK_EVERY s."""
        if self._closed:
            raise QueueClosed(self.name, "this handle was closed")
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY
        state = info if info is not None else read_state(self._state_path)
        if state.get("status") == "closed":
            raise QueueClosed(self.name, "the queue was removed")
        if state.get("status") not in (None, "ok"):
            raise QueueUnavailable(self.name, str(state.get("reason")))
        if process_start(self._bridge_pid) != self._bridge_start:
            raise QueueUnavailable(
                self.name,
                f"this node's bridge actor (pid {self._bridge_pid}) died; open the "
                "reference again to start a new one (items in this node's windows are kept; "
                "a batch it was carrying is lost and counted)",
            )

    def _waiting(self, attempt: Callable[[float], T], block: bool, timeout: Optional[float]) -> T:
        """``attempt(seconds)`` (a get or put on a window) in slices of at most CHECK_EVERY,
        checking the bridge between them, until it succeeds or ``timeout`` has passed."""
        wait = _wait_time(block, timeout)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return attempt(CHECK_EVERY if left is None else min(CHECK_EVERY, left))
            except (queue.Empty, queue.Full):
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            except QueueClosed:
                self._check(force=True)
                raise
            self._check(force=True)

    # -- asyncio: QueueConveniences' calls (aio.py), waiting on this node's windows --

    _wait_slice = CHECK_EVERY  # aio checks the bridge between waits of at most this

    def _wait_target(self, line: int) -> SageQueue:
        """The local window a coroutine waits on: items come into ``_in``, go out of ``_out``."""
        return self._in if line == aio.DATA else self._out

    # -- put / get --

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put one item into this node's outbound window (waits while the window is full)."""
        self._check()
        out = self._out
        try:
            out.put(item, False)
            return
        except queue.Full:
            if not block:
                raise
        self._waiting(lambda s: out.put(item, True, s), block, timeout)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Take one item from this node's inbound window (waits for the bridge to bring one)."""
        try:
            return self._in.get(False)
        except queue.Empty:
            self._check()
            if not block:
                raise
        return self._waiting(lambda s: self._in.get(True, s), block, timeout)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None
    ) -> int:
        """Put all items, in order, into this node's outbound window; BatchFull (with the
        count put) if the wait ends part way, as SageQueue.put_many."""
        self._check()
        items = list(items)
        done = 0

        def attempt(seconds: float) -> int:
            nonlocal done
            try:
                done += self._out.put_many(items[done:], True, seconds)
            except BatchFull as err:
                done += err.count
                raise queue.Full from None
            return done

        try:
            return self._waiting(attempt, block, timeout) if items else 0
        except queue.Full:
            if done:
                raise BatchFull(done, len(items)) from None
            raise

    def get_many(
        self,
        block: bool = True,
        timeout: Optional[float] = None,
        max_messages_to_get: int = DEFAULT_MAX_MESSAGES,
        *,
        max_items: Optional[int] = None,
        max_bytes: Optional[int] = None,
    ) -> List[Any]:
        inn = self._in
        n = max_messages_to_get if max_items is None else max_items
        try:
            return inn.get_many(False, max_items=n, max_bytes=max_bytes)
        except queue.Empty:
            self._check()
            if not block:
                raise
        return self._waiting(
            lambda s: inn.get_many(True, s, max_items=n, max_bytes=max_bytes), block, timeout
        )

    # -- state, through Ray --

    def _ask(self, call: Any) -> Any:
        self._check(force=True)
        try:
            return ray.get(call, timeout=CALL_TIMEOUT)
        except Exception as exc:
            cause = _cause(exc)
            if isinstance(cause, (QueueClosed, QueueUnavailable)):
                raise cause from None
            self._check(force=True)
            raise QueueUnavailable(self.name, f"the bridge did not answer: {cause!r}") from None

    def get_stats(self) -> Dict[str, Any]:
        """The queue's statistics (from its node) plus this node's bridge: ``owner_node``,
        ``window_items``/``window_bytes``, ``in_transit_items``/``in_transit_bytes``,
        ``bytes_moved_in``/``bytes_moved_out``, ``lost_in_transit``."""
        stats: Dict[str, Any] = self._ask(self._bridge.stats.remote())
        return stats

    def qsize(self) -> int:
        """Messages in the queue plus those in transit to or from this node."""
        s = self.get_stats()
        return int(s["messages"] + s["in_transit_items"])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether this node's outbound window is full (a put would wait)."""
        self._check()
        return self._out.full()

    def task_done(self) -> None:
        """Mark one item taken on this node as processed; the bridge hands it on."""
        self._check()
        self._in.task_done()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait until this node's puts reached the queue and every item put there is done."""
        _wait_time(True, timeout)
        joined: bool = self._ask(self._bridge.join.remote(timeout))
        return joined

    # -- lifecycle --

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Detach this handle (the bridge keeps carrying for the node's other handles)."""
        if not self._closed:
            self._closed = True
            self._in.close()
            self._out.close()

    def get_reference(self) -> SageQueueRef:
        return self._ref

    def __reduce__(self) -> Any:
        return attach_reference, (self._ref,)

    def __repr__(self) -> str:
        return f"RemoteSageQueue(name={self.name!r}, owner_node={self._ref.node_id!r})"
