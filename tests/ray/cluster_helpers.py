"""Actors for tests/ray/test_cluster.py (a Ray cluster of several nodes on this machine, each
node with its own queue folder). The Ray workers import this module from the test folder."""

import os
import queue
import time
import zlib

import ray
from sage_queue import QueueClosed, QueueUnavailable, SageQueue, SageQueueRef


def make_item(tag, seq, size=64):
    payload = (f"{tag}:{seq}:".encode() * (size // 8 + 1))[:size]
    return (tag, seq, payload, zlib.crc32(payload))


def check_item(item):
    tag, seq, payload, crc = item
    return zlib.crc32(payload) == crc


@ray.remote(num_cpus=0)
class Producer:
    """Puts items ``(tag, seq, payload, crc)`` into a queue it received (pickled)."""

    def __init__(self, q, tag):
        self.q = q.get_queue() if isinstance(q, SageQueueRef) else q
        self.tag = tag
        self.sent = 0  # puts that returned

    def where(self):
        return {
            "kind": type(self.q).__name__,
            "node": ray.get_runtime_context().get_node_id(),
            "queue_dir": os.environ.get("SAGE_QUEUE_DIR"),
        }

    def produce(self, n, batch=1, size=64):
        start = self.sent
        while self.sent < start + n:
            k = min(batch, start + n - self.sent)
            items = [make_item(self.tag, self.sent + i, size) for i in range(k)]
            if batch == 1:
                self.q.put(items[0])
            else:
                self.q.put_many(items)
            self.sent += k
        return self.sent

    def produce_until_error(self, n, pause=0.0005):
        """Put until ``n`` are put or a call fails; returns (sent, error name, error time)."""
        while self.sent < n:
            try:
                self.q.put(make_item(self.tag, self.sent), timeout=30)
            except (QueueUnavailable, QueueClosed, queue.Full) as exc:
                return self.sent, type(exc).__name__, time.time(), str(exc)
            self.sent += 1
            time.sleep(pause)
        return self.sent, None, time.time(), ""

    def put(self, item, timeout=None):
        self.q.put(item, timeout=timeout)

    def put_until_full(self, timeout):
        """Put until a put raises queue.Full; returns (count put, seconds the last call took)."""
        count = 0
        while True:
            t0 = time.monotonic()
            try:
                self.q.put(make_item(self.tag, count, 256), timeout=timeout)
            except queue.Full:
                return count, time.monotonic() - t0
            count += 1

    def stats(self):
        return self.q.get_stats()

    def join(self, timeout):
        return self.q.join(timeout=timeout)

    def qsize(self):
        return self.q.qsize()


@ray.remote(num_cpus=0, max_concurrency=2)
class Consumer:
    """Takes items until it has seen ``sentinels`` Nones (or a call fails); reports what it
    took, in order, with checksum and order checks."""

    def __init__(self, q, collector=None):
        self.q = q.get_queue() if isinstance(q, SageQueueRef) else q
        self.collector = collector
        self.taken = []

    def where(self):
        return {
            "kind": type(self.q).__name__,
            "node": ray.get_runtime_context().get_node_id(),
        }

    def consume(self, sentinels=1, batch=1, report_every=50, timeout=120):
        bad, seen_stop, pending = 0, 0, []
        error = None
        while seen_stop < sentinels:
            try:
                got = self.q.get_many(timeout=timeout, max_items=batch) if batch > 1 else [
                    self.q.get(timeout=timeout)
                ]
            except (QueueUnavailable, QueueClosed, queue.Empty) as exc:
                error = (type(exc).__name__, time.time(), str(exc))
                break
            for item in got:
                if item is None:
                    seen_stop += 1
                    continue
                bad += not check_item(item)
                self.taken.append((item[0], item[1]))
                pending.append((item[0], item[1]))
            if self.collector is not None and len(pending) >= report_every:
                ray.get(self.collector.add.remote(pending))
                pending = []
        if self.collector is not None and pending:
            ray.get(self.collector.add.remote(pending))
        self.q.close()  # what this node's bridge brought and nobody took goes back
        return {"taken": self.taken, "bad": bad, "error": error}

    def count(self):
        return len(self.taken)

    def get_timed(self, timeout):
        t0 = time.monotonic()
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return ("Empty", time.monotonic() - t0, time.time())
        return (item, time.monotonic() - t0, time.time())

    def get_timed_async(self, timeout):
        """get_timed through ``await q.get_async()`` (the remote handle's asyncio)."""
        import asyncio

        async def main():
            return await self.q.get_async(timeout=timeout)

        t0 = time.monotonic()
        try:
            item = asyncio.run(main())
        except queue.Empty:
            return ("Empty", time.monotonic() - t0, time.time())
        return (item, time.monotonic() - t0, time.time())


@ray.remote(num_cpus=0)
class Collector:
    """Receives what consumers on a node that may be removed have taken."""

    def __init__(self):
        self.items = []

    def add(self, items):
        self.items.extend(items)

    def all(self):
        return self.items


@ray.remote(num_cpus=0)
def open_here(ref, local_only=None):
    """Open a reference on this node; returns the handle's kind, or the error's."""
    try:
        q = ref.get_queue(local_only=local_only)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    kind = type(q).__name__
    attached = q.get_stats()["attached"] if isinstance(q, SageQueue) else None
    q.close()
    return kind, attached


@ray.remote(num_cpus=0)
class Worker:
    """Takes items and marks each done (task_done) after it."""

    def __init__(self, q):
        self.q = q

    def where(self):
        return type(self.q).__name__

    def take_and_mark_done(self, n, timeout=60):
        for _ in range(n):
            self.q.get(timeout=timeout)
            self.q.task_done()
        return n
