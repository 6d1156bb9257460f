"""Actors and tasks for tests/ray/test_ray.py. They live in their own module, which the Ray
workers import (the test puts this folder on the workers' PYTHONPATH)."""

import os
import time
import uuid

import ray
from sage_queue import SageQueue, queue_dir


def unique_name(prefix: str = "ray") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- tasks ----


@ray.remote
def put_items(q, items) -> int:
    """q is a SageQueue (pickled as its reference) or a SageQueueRef."""
    if not isinstance(q, SageQueue):
        q = q.get_queue()
    for item in items:
        q.put(item)
    return q.get_stats()["attached"]


@ray.remote
def put_into_nested(bundle) -> str:
    """bundle = {"queues": [q1, ref2], "tag": str}: queues inside other objects."""
    first, second = bundle["queues"]
    first.put(("first", bundle["tag"]))
    second.get_queue().put(("second", bundle["tag"]))
    return bundle["tag"]


@ray.remote
def worker_env() -> dict:
    return {"queue_dir": queue_dir(), "node_id": ray.get_runtime_context().get_node_id()}


# ---- actors ----


@ray.remote
class QueueUser:
    """Attaches to ``q`` when Ray constructs it (also after a restart)."""

    def __init__(self, q):
        self.q = q if isinstance(q, SageQueue) else q.get_queue()

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def attached(self) -> int:
        return self.q.get_stats()["attached"]

    def queue(self) -> SageQueue:
        """Return the queue itself: the caller receives its own attachment."""
        return self.q

    def put(self, item) -> None:
        self.q.put(item)

    def put_range(self, start: int, count: int) -> int:
        for i in range(start, start + count):
            self.q.put(i)
        return count

    def get(self, timeout: float = 10.0):
        return self.q.get(timeout=timeout)

    def get_n(self, count: int, timeout: float = 30.0) -> list:
        return [self.q.get(timeout=timeout) for _ in range(count)]

    def drain_until(self, stop, timeout: float = 30.0) -> list:
        """Get items until ``stop`` arrives; returns the items before it."""
        out = []
        while (item := self.q.get(timeout=timeout)) != stop:
            out.append(item)
        return out

    def block_get(self):
        """Wait for an item without a deadline (the test kills us meanwhile)."""
        return self.q.get()


@ray.remote
class Source:
    def __init__(self, out):
        self.out = out

    def run(self, count: int, consumers: int) -> int:
        for i in range(count):
            self.out.put(i)
        for _ in range(consumers):
            self.out.put(None)
        return count


@ray.remote
class Mapper:
    def __init__(self, inq, outq, ident: int):
        self.inq, self.outq, self.ident = inq, outq, ident

    def run(self) -> int:
        done = 0
        while (item := self.inq.get(timeout=60)) is not None:
            self.outq.put((item, item * item, self.ident))
            done += 1
        self.outq.put(None)
        return done


@ray.remote
class Sink:
    def __init__(self, inq):
        self.inq = inq

    def run(self, producers: int) -> list:
        out = []
        while producers:
            item = self.inq.get(timeout=60)
            if item is None:
                producers -= 1
            else:
                out.append(item)
        return out


@ray.remote
class AsyncUser:
    """An async actor (async def methods run on the actor's event loop): several calls
    await the same queue at once without blocking the loop."""

    def __init__(self, q):
        self.q = q

    async def get_n(self, n: int) -> list:
        return [await self.q.get_async(timeout=60) for _ in range(n)]

    async def put_range(self, start: int, stop: int) -> int:
        for i in range(start, stop):
            await self.q.put_async(i, timeout=60)
        return stop - start

    async def ping(self) -> str:
        return "pong"
