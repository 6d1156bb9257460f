"""A blocking call ended by a signal handler's exception leaves nothing behind for the next call.

Each case interrupts one blocking call (get, get_many, put, put_many, join) with an exception
raised by a SIGALRM handler (KeyboardInterrupt, as Ctrl-C raises, or an ordinary exception),
then makes one more call of every kind on the same thread, on the same handle or on another
handle of the same queue, and checks the exact contents of the queue afterwards: nothing lost,
nothing put twice, no stale error.
"""

import queue
import signal
import uuid
from contextlib import contextmanager

import pytest
from sage_queue import SageQueue

ALARM = 0.15  # the interrupted call waits this long before the handler raises


class Alarm(Exception):
    """What an ordinary signal handler might raise."""


@contextmanager
def raised_by_signal_after(seconds, exc_type):
    def handler(signum, frame):
        raise exc_type("interrupted by a signal")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with pytest.raises(exc_type):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def item(i):
    return f"item-{i:05d}"  # every item pickles to the same size


def fill(q, start=0):
    """Put items until the queue is full; returns them."""
    items = []
    while True:
        try:
            q.put_nowait(item(start + len(items)))
        except queue.Full:
            return items
        items.append(item(start + len(items)))


def drain(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


# ---- the interrupted calls: (setup returning the contents, the blocking call, the contents
# after it was interrupted) ----

NEW = [item(90000 + i) for i in range(10)]


def room_for_three(q):
    items = fill(q)
    assert [q.get_nowait() for _ in range(3)] == items[:3]
    return items[3:]


INTERRUPTED = {
    "get": (lambda q: [], lambda q: q.get(), lambda c: c),
    "get_many": (lambda q: [], lambda q: q.get_many(), lambda c: c),
    "put": (fill, lambda q: q.put("never"), lambda c: c),
    "put_many": (room_for_three, lambda q: q.put_many(NEW), lambda c: c + NEW[:3]),
    "join": (lambda q: [q.put("unfinished"), "unfinished"][1:], lambda q: q.join(), lambda c: c),
}


# ---- the calls after: each takes (handle, other handle, contents) and returns the contents ----


def make_room(other, contents, n):
    """If the queue is full, take the first n items through the other handle."""
    if other.full():
        assert [other.get_nowait() for _ in range(n)] == contents[:n]
        return contents[n:]
    return contents


def then_put(h, other, contents):
    contents = make_room(other, contents, 1)
    h.put("precious", timeout=2)
    return contents + ["precious"]


def then_put_nowait(h, other, contents):
    contents = make_room(other, contents, 1)
    h.put_nowait("precious")
    return contents + ["precious"]


def then_put_many(h, other, contents):
    contents = make_room(other, contents, 2)
    assert h.put_many(["p1", "p2"], timeout=2) == 2
    return contents + ["p1", "p2"]


def then_get(h, other, contents):
    if not contents:
        other.put("late")
        contents = ["late"]
    assert h.get(timeout=2) == contents[0]
    return contents[1:]


def then_get_nowait(h, other, contents):
    if not contents:
        other.put("late")
        contents = ["late"]
    assert h.get_nowait() == contents[0]
    return contents[1:]


def then_get_many(h, other, contents):
    if not contents:
        other.put_many(["l1", "l2"])
        contents = ["l1", "l2"]
    assert h.get_many(timeout=2, max_messages_to_get=2) == contents[:2]
    return contents[2:]


def then_state(h, other, contents):
    assert h.qsize() == len(contents)
    assert h.empty() == (not contents)
    assert other.qsize() == len(contents)
    return contents


def then_tasks(h, other, contents):
    unfinished = h.get_stats()["unfinished_tasks"]
    for _ in range(unfinished):
        h.task_done()
    assert h.join(timeout=2) is True
    with pytest.raises(ValueError):
        h.task_done()  # one more than there were items
    return contents


AFTER = {
    "put": then_put,
    "put_nowait": then_put_nowait,
    "put_many": then_put_many,
    "get": then_get,
    "get_nowait": then_get_nowait,
    "get_many": then_get_many,
    "qsize_empty": then_state,
    "task_done_join": then_tasks,
}


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, Alarm], ids=["ctrl-c", "handler"])
@pytest.mark.parametrize("on", ["same", "other"])
@pytest.mark.parametrize("after", list(AFTER))
@pytest.mark.parametrize("interrupted", list(INTERRUPTED))
def test_call_after_an_interrupted_call(interrupted, after, on, exc_type):
    name = f"pytest-intr-{uuid.uuid4().hex[:10]}"
    q = SageQueue(name, maxsize=4096)
    other = SageQueue(name)
    setup, blocking, effect = INTERRUPTED[interrupted]
    try:
        contents = setup(q)
        with raised_by_signal_after(ALARM, exc_type):
            blocking(q)
        contents = effect(contents)
        assert other.qsize() == len(contents), "the interrupted call changed the queue"
        handle = q if on == "same" else other
        helper = other if on == "same" else q
        contents = AFTER[after](handle, helper, contents)
        # The next call on this thread must also be clean, and nothing may be lost.
        assert drain(SageQueue(name)) == contents
        q.put("after")
        assert q.get(timeout=2) == "after"
        stats = other.get_stats()
        assert stats["lost"] == 0 and stats["messages"] == 0
    finally:
        q.destroy()
        other.close()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, Alarm], ids=["ctrl-c", "handler"])
def test_issue_example_put_after_interrupted_get(exc_type):
    """The reported sequence: an interrupted get, then a put on a new handle, then a get."""
    name = f"pytest-intr-{uuid.uuid4().hex[:10]}"
    q = SageQueue(name, maxsize=1 << 16)
    try:
        with raised_by_signal_after(0.2, exc_type):
            q.get()
        SageQueue(name).put("precious")  # raised queue.Empty before the fix
        assert q.qsize() == 1
        assert q.get(timeout=1) == "precious"
        assert q.qsize() == 0
        with pytest.raises(queue.Empty):
            q.get(timeout=0.05)
    finally:
        q.destroy()


def test_interrupted_put_on_full_queue_then_get():
    """Also reported: an interrupted put on a full queue, then get raised queue.Full and the
    item it had taken was gone."""
    name = f"pytest-intr-{uuid.uuid4().hex[:10]}"
    q = SageQueue(name, maxsize=4096)
    try:
        items = fill(q)
        with raised_by_signal_after(0.2, KeyboardInterrupt):
            q.put("never")
        assert q.qsize() == len(items)
        assert q.get() == items[0]
        assert q.qsize() == len(items) - 1
        assert drain(q) == items[1:]
    finally:
        q.destroy()


def test_many_interrupts_in_a_row_lose_nothing():
    """Interrupt gets again and again while a thread-free producer pattern runs in between:
    every item put is received exactly once."""
    name = f"pytest-intr-{uuid.uuid4().hex[:10]}"
    q = SageQueue(name, maxsize=1 << 16)
    got = []
    try:
        for i in range(20):
            with raised_by_signal_after(0.02, Alarm):
                q.get()
            q.put(i)
            got.append(q.get(timeout=1))
            with raised_by_signal_after(0.02, Alarm):
                q.get_many(timeout=5)
        assert got == list(range(20))
        assert q.get_stats()["lost"] == 0
    finally:
        q.destroy()
