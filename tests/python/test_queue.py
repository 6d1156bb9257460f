"""queue.Queue semantics within one process: Empty/Full, timeouts, nowait, threads,
task_done/join, batches, close, stats and repr."""

import queue
import threading
import time

import pytest
import sage_queue
from sage_queue import BatchFull, QueueClosed, SageQueue

LONG = 10.0  # a wait that must never be reached


def fill(q, item=b"x" * 100):
    """Put items without waiting until the queue is full; returns how many went in."""
    n = 0
    while True:
        try:
            q.put_nowait(item)
        except queue.Full:
            return n
        n += 1


def test_fifo_order_and_qsize(make_queue):
    q = make_queue()
    assert q.empty() and q.qsize() == 0
    for i in range(50):
        q.put(i)
    assert q.qsize() == 50 and not q.empty()
    assert [q.get() for _ in range(50)] == list(range(50))
    assert q.empty() and q.qsize() == 0


def test_get_nowait_on_empty_raises_empty(make_queue):
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(False, LONG)  # block=False ignores the timeout


def test_put_nowait_on_full_raises_full(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    n = fill(q)
    assert n > 0
    assert q.qsize() == n
    with pytest.raises(queue.Full):
        q.put_nowait(b"x" * 100)
    with pytest.raises(queue.Full):
        q.put(b"x" * 100, block=False)
    # Taking one makes room for one again.
    assert q.get() == b"x" * 100
    q.put_nowait(b"x" * 100)


def test_full_means_not_even_an_empty_message_fits(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    assert not q.full()
    fill(q, b"x" * 500)
    fill(q, b"")
    assert q.full()
    q.get()
    assert not q.full()


def test_get_timeout_raises_empty_after_about_the_timeout(make_queue):
    q = make_queue()
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 5


def test_put_timeout_raises_full_after_about_the_timeout(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    fill(q)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(b"x" * 100, timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 5


def test_zero_timeout_tries_once(make_queue):
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    q.put(1, timeout=0)
    assert q.get(timeout=0) == 1


def test_negative_timeout_is_rejected(make_queue):
    q = make_queue()
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(ValueError):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError):
        q.join(timeout=-1)


def test_blocked_get_wakes_on_put_from_another_thread(make_queue):
    q = make_queue()
    t = threading.Timer(0.2, q.put, args=("late",))
    t.start()
    try:
        assert q.get(timeout=LONG) == "late"
    finally:
        t.join()


def test_blocked_put_wakes_on_get_from_another_thread(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    n = fill(q)
    t = threading.Timer(0.2, q.get)
    t.start()
    try:
        q.put(b"y" * 100, timeout=LONG)
    finally:
        t.join()
    assert q.qsize() == n
    items = [q.get_nowait() for _ in range(n)]
    assert items[-1] == b"y" * 100


def test_many_threads_share_one_handle(make_queue):
    q = make_queue()
    got = []
    lock = threading.Lock()

    def produce(ident):
        for i in range(300):
            q.put((ident, i))

    def consume():
        while True:
            item = q.get(timeout=LONG)
            if item is None:
                return
            with lock:
                got.append(item)

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join()
    for _ in consumers:
        q.put(None)
    for t in consumers:
        t.join()
    assert sorted(got) == sorted((i, n) for i in range(4) for n in range(300))


def test_task_done_and_join(make_queue):
    q = make_queue()
    assert q.join(timeout=0) is True  # nothing was ever put
    for i in range(3):
        q.put(i)
    assert q.join(timeout=0.1) is False
    for _ in range(3):
        q.get()
    assert q.join(timeout=0.1) is False  # fetched is not done
    for _ in range(3):
        q.task_done()
    assert q.join(timeout=0) is True
    assert q.join() is True


def test_task_done_too_many_times_raises_value_error(make_queue):
    q = make_queue()
    with pytest.raises(ValueError):
        q.task_done()
    q.put("a")
    q.get()
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()


def test_join_returns_when_another_thread_finishes_the_work(make_queue):
    q = make_queue()
    for i in range(5):
        q.put(i)

    def worker():
        for _ in range(5):
            q.get(timeout=LONG)
            time.sleep(0.02)
            q.task_done()

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert q.join(timeout=LONG) is True
    finally:
        t.join()
    assert q.get_stats()["unfinished_tasks"] == 0


def test_join_from_another_thread(make_queue):
    q = make_queue()
    q.put("job")
    joined = threading.Event()
    t = threading.Thread(target=lambda: q.join() and joined.set())
    t.start()
    time.sleep(0.1)
    assert not joined.is_set()
    q.get()
    q.task_done()
    t.join(LONG)
    assert joined.is_set()


def test_put_many_and_get_many(make_queue):
    q = make_queue()
    assert q.put_many([]) == 0
    assert q.put_many(range(100)) == 100
    assert q.qsize() == 100
    assert q.get_many(max_items=30) == list(range(30))
    assert q.get_many(max_items=1000) == list(range(30, 100))
    with pytest.raises(queue.Empty):
        q.get_many(max_items=10, block=False)
    with pytest.raises(queue.Empty):
        q.get_many(max_items=10, timeout=0.1)
    with pytest.raises(ValueError):
        q.get_many(max_items=0)


def test_get_many_max_bytes(make_queue):
    q = make_queue(serializer="raw")
    q.put_many([bytes([i]) * 100 for i in range(5)])
    assert q.get_many(max_items=10, max_bytes=250) == [b"\x00" * 100, b"\x01" * 100]
    assert q.get_many(max_items=10, max_bytes=10) == [b"\x02" * 100]  # always at least one
    assert len(q.get_many(max_items=10)) == 2


def test_get_many_waits_for_the_first_item(make_queue):
    q = make_queue()
    t = threading.Timer(0.2, q.put_many, args=([1, 2, 3],))
    t.start()
    try:
        assert q.get_many(max_items=10, timeout=LONG) == [1, 2, 3]
    finally:
        t.join()


def test_put_many_partial_raises_batch_full_with_count(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    items = [bytes([i]) * 1000 for i in range(10)]
    with pytest.raises(BatchFull) as info:
        q.put_many(items, timeout=0.2)
    err = info.value
    assert isinstance(err, queue.Full)
    assert 0 < err.count < 10 and err.total == 10
    assert q.qsize() == err.count
    assert q.get_many(max_items=100) == items[: err.count]  # the first ones, in order


def test_put_many_nowait_on_full_queue(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    fill(q)
    with pytest.raises(queue.Full) as info:
        q.put_many([b"a", b"b"], block=False)
    assert info.value.count == 0


def test_put_many_finishes_when_room_appears(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    items = [bytes([i]) * 1000 for i in range(10)]
    got = []

    def drain():
        while len(got) < 10:
            got.extend(q.get_many(max_items=3, timeout=LONG))

    t = threading.Thread(target=drain)
    t.start()
    try:
        assert q.put_many(items, timeout=LONG) == 10
    finally:
        t.join(LONG)
    assert got == items


def test_close_is_idempotent_and_later_calls_raise_queue_closed(make_queue):
    q = make_queue()
    q.put(1)
    q.close()
    q.close()
    assert q.closed
    calls = [
        lambda: q.put(1),
        lambda: q.get(),
        lambda: q.put_nowait(1),
        lambda: q.get_nowait(),
        q.qsize,
        q.empty,
        q.full,
        q.task_done,
        q.join,
        q.get_stats,
        q.reset_stats,
        lambda: q.put_many([1]),
        lambda: q.get_many(max_items=1),
    ]
    for call in calls:
        with pytest.raises(QueueClosed) as info:
            call()
        assert isinstance(info.value, RuntimeError)
        assert "closed" in str(info.value)
    assert "closed" in repr(q)


def test_close_wakes_a_get_blocked_in_another_thread(make_queue):
    q = make_queue()
    errors = []

    def blocked():
        try:
            q.get(timeout=LONG)
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    q.close()
    t.join(LONG)
    assert time.monotonic() - start < 5
    assert len(errors) == 1 and isinstance(errors[0], QueueClosed)


def test_context_manager_closes(qname, queue_dir):
    with SageQueue(qname) as q:
        q.put("x")
        assert q.get() == "x"
    assert q.closed
    with pytest.raises(QueueClosed):
        q.qsize()


def test_destroy_closes_the_queue_for_every_handle(make_queue, qname):
    a = make_queue(qname)
    b = make_queue(qname)
    a.put(1)
    a.destroy()
    with pytest.raises(QueueClosed) as info:
        b.put(2)
    assert "unlinked" in str(info.value)
    with pytest.raises(QueueClosed):
        a.put(2)
    assert sage_queue.destroy_queue(qname) is False  # already gone
    with make_queue(qname, create=True) as fresh:  # the name is free again
        assert fresh.qsize() == 0


def test_get_stats_keys_and_values(make_queue):
    q = make_queue(serializer="raw")
    q.put(b"abc")
    q.put(b"defg")
    q.get()
    stats = q.get_stats()
    for key in (
        "buffer_size", "available_read", "available_write", "readers", "writers", "ref_count",
        "total_bytes_written", "total_bytes_read", "utilization", "messages", "msgs_in",
        "msgs_out", "waits_full", "waits_empty", "recovered", "lost", "unfinished_tasks",
        "attached", "capacity", "max_message_size", "creator_pid",
    ):  # fmt: skip
        assert key in stats, key
    assert stats["buffer_size"] == q.maxsize
    assert stats["messages"] == 1
    assert stats["msgs_in"] == 2 and stats["msgs_out"] == 1
    assert stats["total_bytes_written"] == 7 and stats["total_bytes_read"] == 3
    assert stats["ref_count"] == stats["attached"] == 1
    assert stats["available_read"] + stats["available_write"] == stats["buffer_size"]
    assert 0 < stats["utilization"] <= 1
    q.reset_stats()
    stats = q.get_stats()
    assert stats["msgs_in"] == 0 and stats["total_bytes_written"] == 0
    assert stats["messages"] == 1  # the contents are not statistics


def test_stats_count_attachments_of_this_process(make_queue, qname):
    a = make_queue(qname)
    b = make_queue(qname)
    assert a.get_stats()["attached"] == 2
    b.close()
    assert a.get_stats()["attached"] == 1


def test_repr(make_queue, qname):
    q = make_queue(qname)
    q.put(1)
    text = repr(q)
    assert qname in text and "qsize=1" in text and "pickle" in text


def test_maxsize_is_rounded_and_kept_by_later_opens(make_queue, qname):
    q = make_queue(qname, maxsize=5000)
    assert q.maxsize == 8192
    other = make_queue(qname, maxsize=1 << 20)
    assert other.maxsize == 8192
    assert make_queue(maxsize=1).maxsize == 4096
    for bad in (0, -1, 1.5, "big"):
        with pytest.raises(ValueError):
            SageQueue("never-made", maxsize=bad)


def test_create_flag(make_queue, qname):
    with pytest.raises(sage_queue.QueueNotFound) as info:
        SageQueue(qname, create=False)
    assert isinstance(info.value, FileNotFoundError)
    q = make_queue(qname, create=True)
    assert q.created
    with pytest.raises(sage_queue.QueueExists) as info:
        SageQueue(qname, create=True)
    assert isinstance(info.value, FileExistsError)
    opened = make_queue(qname, create=False)
    assert not opened.created
    q.put("shared")
    assert opened.get() == "shared"


def test_namespace(make_queue, qname):
    q = make_queue(qname, namespace="tenant1")
    assert q.name == f"tenant1.{qname}"
    assert q.original_name == qname and q.namespace == "tenant1"
    other_tenant = make_queue(qname, namespace="tenant2")
    q.put("one")
    with pytest.raises(queue.Empty):
        other_tenant.get_nowait()
    info = q.get_shared_memory_info()
    assert info["namespace"] == "tenant1" and info["name"] == q.name
    assert sage_queue.destroy_queue(qname, namespace="tenant1") is True
    with pytest.raises(QueueClosed):
        q.get_nowait()


def test_list_all_sage_queues(make_queue, qname):
    q = make_queue(qname, maxsize=4096)
    q.put_many([1, 2])
    infos = {i["name"]: i for i in sage_queue.list_all_sage_queues()}
    info = infos[qname]
    assert info["valid"] and info["error"] is None
    assert info["capacity"] == 4096 and info["messages"] == 2 and info["attached"] == 1
    assert info["path"] == q.path


def test_messages_of_changing_sizes_in_several_threads(make_queue):
    """Received messages are copied out of a per-thread native buffer that grows (and moves)
    for large messages; small and large ones must come out intact in every thread."""
    q = make_queue(maxsize=1 << 20, serializer="raw")
    sizes = [0, 10, 70_000, 5, 300_000, 1, 100_000, 64 * 1024, 64 * 1024 + 1, 3, 200_000]
    errors = []

    def intact(item):
        # Threads may receive each other's messages: check the shape, not the origin.
        return len(set(item)) <= 1 and len(item) in sizes

    def round_trips(seed):
        try:
            for i, n in enumerate(sizes):
                q.put(bytes([(seed + i) % 256]) * n, timeout=LONG)
                assert intact(q.get(timeout=LONG))
            q.put_many([b"a" * 200_000, b"b"], timeout=LONG)
            assert all(intact(item) for item in q.get_many(max_items=2, timeout=LONG))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=round_trips, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    round_trips(100)
    for t in threads:
        t.join(LONG)
    assert errors == []
    while True:
        try:
            assert intact(q.get_nowait())
        except queue.Empty:
            break


def test_waiting_policy_per_handle(make_queue):
    """spin_us: how long a wait checks before it sleeps; 0 sleeps at once and still wakes."""
    q = make_queue()
    assert q.spin_us == 70
    sleeper = make_queue(q.name, spin_us=0)
    assert sleeper.spin_us == 0 and q.spin_us == 70  # per handle
    threading.Timer(0.1, q.put, args=("wake",)).start()
    assert sleeper.get(timeout=LONG) == "wake"
    q.spin_us = 500
    assert q.spin_us == 500
    for bad in (-1, 10**7, 1.5):
        with pytest.raises((ValueError, TypeError)):
            q.spin_us = bad
