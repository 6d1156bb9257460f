"""Helpers for the tests: unique names, the environment of `python -c` children, and the
worker functions that multiprocessing children run (importable, so "spawn" works too)."""

import os
import sys
import time
import uuid

import sage_queue
from sage_queue import SageQueue


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def child_env() -> dict:
    """Environment for `python -c` children: this sage_queue importable, same queue folder."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sage_queue.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH")) if p)
    return env


def python() -> str:
    return sys.executable


# ---- multiprocessing workers ----


def put_by_name(name: str, items: list) -> None:
    with SageQueue(name, create=False) as q:
        for item in items:
            q.put(item)


def put_into(q: SageQueue, items: list) -> None:
    """q arrives pickled (spawn) or inherited (fork); the child closes it explicitly."""
    for item in items:
        q.put(item)
    q.close()


def put_from_ref(ref, items: list) -> None:
    q = ref.get_queue()
    for item in items:
        q.put(item)
    q.close()


def report_attachment(q: SageQueue, out: SageQueue) -> None:
    """Put this child's pid and the queue's attached count seen from here."""
    q.put(os.getpid())
    out.put(q.get_stats()["attached"])


def attach_and_leave(name: str, message) -> None:
    """Attach by name, put one message and exit without closing (the exit must detach)."""
    q = SageQueue(name, create=False)
    q.put(message)


_kept = []


def attach_wait_exit(name: str, attached, release) -> None:
    """Attach, signal `attached`, wait for `release`, then exit without closing (the queue
    stays referenced, so only the exit hooks can close it)."""
    q = SageQueue(name, create=False)
    _kept.append(q)
    q.put("child attached")
    attached.set()
    release.wait(30)


def producer(q: SageQueue, ident: int, count: int) -> None:
    for seq in range(count):
        q.put((ident, seq))


def batch_producer(q: SageQueue, ident: int, count: int, chunk: int) -> None:
    for start in range(0, count, chunk):
        q.put_many([(ident, seq) for seq in range(start, min(count, start + chunk))])


def consumer(q: SageQueue, results: SageQueue, ident: int) -> None:
    """Take items until a None sentinel; report (ident, items in the order seen)."""
    seen = []
    while True:
        item = q.get(timeout=60)
        if item is None:
            break
        seen.append(item)
    results.put((ident, seen))


def batch_consumer(q: SageQueue, results: SageQueue, ident: int) -> None:
    seen = []
    while True:
        items = q.get_many(max_items=100, timeout=60)
        seen.extend(i for i in items if i is not None)
        sentinels = items.count(None)
        if sentinels:
            q.put_many([None] * (sentinels - 1))  # the others' sentinels go back
            break
    results.put((ident, seen))


def endless_producer(q: SageQueue, ident: int) -> None:
    seq = 0
    while True:
        q.put((ident, seq))
        seq += 1


def take_and_mark_done(name: str, count: int) -> None:
    with SageQueue(name, create=False) as q:
        for _ in range(count):
            q.get(timeout=30)
            time.sleep(0.01)
            q.task_done()


def get_with_json_ref(ref, out: SageQueue) -> None:
    """The reference carries the json module as the serializer."""
    q = ref.get_queue()
    out.put(q.get(timeout=30))
    q.close()
