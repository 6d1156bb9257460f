"""Loans (writes in place), views (reads in place) and numpy arrays without copies: lifetimes,
the ring's wrap, producers waiting behind a pinned view, abandoned loans, SIGKILL while
holding either, and numpy round trips through get and view."""

import multiprocessing as mp
import os
import queue
import signal
import time

import numpy as np
import pytest
from sage_queue import InvalidArgument, MessageTooLarge, QueueClosed

CTX = mp.get_context("fork")


# ---- loans ----


def test_loan_publishes_raw_bytes_on_normal_exit(make_queue):
    q = make_queue(maxsize=1 << 16)
    with q.loan(10) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == 10
        buf[:] = b"0123456789"
    assert q.get_nowait() == b"0123456789"
    raw = make_queue(maxsize=1 << 16, serializer="raw")
    with raw.loan(3) as buf:
        buf[:] = b"abc"
    assert raw.get_nowait() == b"abc"
    with q.loan(0):
        pass
    assert q.get_nowait() == b""


def test_an_exception_in_the_block_publishes_nothing_and_frees_the_room(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    for round_ in range(20):  # more than the ring holds: the room is reused
        with pytest.raises(RuntimeError):
            with q.loan(1000) as buf:
                buf[:4] = b"half"
                raise RuntimeError("boom")
        q.put(b"r%d" % round_)
        assert q.get_nowait() == b"r%d" % round_
    assert q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.get_stats()["lost"] == 0


def test_commit_and_abort_by_hand_and_a_loan_ends_once(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    loan = q.loan(2)
    buf = loan.__enter__()
    buf[:] = b"ok"
    loan.commit()
    with pytest.raises(ValueError):
        loan.commit()
    with pytest.raises(ValueError):
        buf[0] = 1  # released at the commit
    loan = q.loan(2)
    loan.__enter__()
    loan.abort()
    assert q.get_nowait() == b"ok"
    assert q.qsize() == 0


def test_a_buffer_still_referenced_at_commit_publishes_nothing(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    with pytest.raises(BufferError):
        with q.loan(8) as buf:
            keep = buf[2:]  # a slice would let writes reach a published message
            keep[:] = b"xxxxxx"
    assert q.qsize() == 0
    q.put(b"next")
    assert q.get_nowait() == b"next"
    del keep


def test_loan_errors(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    with pytest.raises(MessageTooLarge):
        with q.loan(5000):
            pass
    with q.loan(10):
        with pytest.raises(InvalidArgument, match="open loan"):
            with q.loan(10):
                pass
        q.put(b"a put from the same handle works meanwhile")
    assert q.qsize() == 2
    bounded = make_queue(maxsize=4096, max_items=4)
    with pytest.raises(InvalidArgument, match="max_items"):
        with bounded.loan(10):
            pass
    full = make_queue(maxsize=4096, serializer="raw")
    full.put(b"x" * 4000)
    with pytest.raises(queue.Full):
        with full.loan(500, block=False):
            pass
    with pytest.raises(queue.Full):
        with full.loan(500, timeout=0.05):
            pass
    with pytest.raises(ValueError):
        q.loan(-1)


def test_consumers_wait_at_an_open_loan_and_get_it_after_the_commit(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    reader = make_queue(name=q.name, serializer="raw")
    loan = q.loan(4)
    buf = loan.__enter__()
    q.put(b"after")  # from the same handle, behind the loan
    with pytest.raises(queue.Empty):
        reader.get(timeout=0.05)
    buf[:] = b"loan"
    loan.commit()
    assert reader.get(timeout=5) == b"loan"
    assert reader.get(timeout=5) == b"after"


def test_closing_a_handle_gives_its_open_loan_up(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    other = make_queue(name=q.name, serializer="raw")
    loan = q.loan(4)
    loan.__enter__()[:] = b"lost"
    q.close()
    other.put(b"next")
    assert other.get(timeout=5) == b"next"
    assert other.qsize() == 0


# ---- views ----


def test_view_reads_in_place_and_fails_after_release(make_queue):
    q = make_queue(maxsize=1 << 16)
    q.put(b"payload")
    with q.view() as item:
        assert isinstance(item, memoryview) and item.readonly
        assert bytes(item) == b"payload"
        assert q.get_stats()["pinned"] == 1
        assert q.get_stats()["pinned_bytes"] == len(b"payload") + 1
    with pytest.raises(ValueError):
        item[0]
    assert q.get_stats()["pinned"] == 0
    q.put({"a": 1})
    with q.view() as item:
        assert item == {"a": 1}
    raw = make_queue(maxsize=1 << 16, serializer="raw")
    raw.put(b"raw")
    with raw.view() as item:
        assert bytes(item) == b"raw"
    with pytest.raises(queue.Empty):
        with raw.view(block=False):
            pass
    with pytest.raises(queue.Empty):
        with raw.view(timeout=0.05):
            pass


def test_views_across_the_wrap_in_any_release_order(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    seq = 0
    for round_ in range(60):
        size = 100 + (round_ * 37) % 700
        msgs = [bytes([seq + i & 0xFF]) * size for i in range(3)]
        seq += 3
        for m in msgs:
            q.put(m)
        views = [q.view(timeout=5) for _ in msgs]
        items = [v.__enter__() for v in views]
        assert [bytes(i) for i in items] == msgs
        order = [1, 0, 2] if round_ % 2 else [2, 1, 0]
        for k in order:
            views[k].__exit__(None, None, None)
    assert q.qsize() == 0 and q.get_stats()["pinned"] == 0


def _fill(name, count, size, done):
    from sage_queue import SageQueue

    q = SageQueue(name, serializer="raw")
    for i in range(count):
        q.put(bytes([i & 0xFF]) * size, timeout=30)
    done.set()
    q.close()


def test_producers_wait_behind_a_held_view_and_nothing_is_corrupted(make_queue):
    q = make_queue(maxsize=8192, serializer="raw")
    q.put(b"P" * 1000)
    done = CTX.Event()
    with q.view() as pinned:
        p = CTX.Process(target=_fill, args=(q.name, 40, 1000, done))
        p.start()
        got = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < 7:
            try:
                got.append(q.get(timeout=0.2))
            except queue.Empty:
                pass
        assert not done.wait(0.5), "the producer went past a pinned message's space"
        assert bytes(pinned) == b"P" * 1000
    while len(got) < 40:
        got.append(q.get(timeout=10))
    p.join(10)
    assert done.is_set()
    assert got == [bytes([i & 0xFF]) * 1000 for i in range(40)]


def test_a_handle_holds_at_most_64_views(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    for i in range(65):
        q.put(b"%d" % i)
    views = [q.view(timeout=5) for _ in range(64)]
    for v in views:
        v.__enter__()
    with pytest.raises(InvalidArgument, match="64 views"):
        with q.view(timeout=1):
            pass
    for v in views:
        v.__exit__(None, None, None)
    with q.view(timeout=1) as item:
        assert bytes(item) == b"64"


def test_a_view_kept_alive_by_an_array_stays_pinned_and_the_handle_attached(make_queue):
    q = make_queue(maxsize=1 << 20)
    other = make_queue(name=q.name)
    q.put({"x": np.arange(1000, dtype=np.int64)})
    with q.view() as item:
        kept = item["x"]
    del item
    assert other.get_stats()["pinned"] == 1
    q.close()  # deferred: the array still reads the ring
    assert other.get_stats()["attached"] == 2
    assert kept.sum() == sum(range(1000))
    del kept
    assert other.get_stats()["pinned"] == 0
    assert other.get_stats()["attached"] == 1
    with pytest.raises(QueueClosed):
        q.get_nowait()


# ---- a holder killed with SIGKILL ----


def _hold(name, what, ready):
    from sage_queue import SageQueue

    q = SageQueue(name, serializer="raw")
    if what == "view":
        with q.view(timeout=10):
            ready.set()
            time.sleep(60)
    else:
        with q.loan(1000) as buf:
            buf[:] = b"L" * 1000
            ready.set()
            time.sleep(60)


@pytest.mark.parametrize("what", ["view", "loan"])
def test_sigkill_while_holding_frees_it(make_queue, what):
    q = make_queue(maxsize=8192, serializer="raw")
    if what == "view":
        q.put(b"V" * 1000)
    ready = CTX.Event()
    p = CTX.Process(target=_hold, args=(q.name, what, ready))
    p.start()
    assert ready.wait(10)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    # The ring is usable again: fill it several times over.
    for i in range(40):
        q.put(bytes([i]) * 1000, timeout=10)
        assert q.get(timeout=10) == bytes([i]) * 1000
    stats = q.get_stats()
    assert stats["pinned"] == 0 and q.qsize() == 0
    if what == "view":
        assert stats["lost"] == 1  # taken by a consumer that died holding it
    else:
        assert stats["recovered"] == 1  # the dead producer's claim was skipped


# ---- numpy ----


ARRAYS = [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.arange(10, dtype=np.int64),
    np.array([True, False, True]),
    (np.arange(6) + 1j * np.arange(6)).astype(np.complex128),
    np.arange(300, dtype=np.uint8),
    np.arange(8, dtype=np.float16),
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
    np.arange(20, dtype=np.int32)[::3],  # not contiguous: pickled in band
    np.zeros((0, 5), dtype=np.float32),
    np.array(3.5),
    np.arange(1 << 18, dtype=np.float32).reshape(512, 512),
]


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_numpy_round_trips_through_get_and_view(make_queue, arr):
    q = make_queue(maxsize=4 << 20)
    q.put(arr)
    got = q.get(timeout=5)
    assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    assert got.flags.writeable  # get owns its data
    q.put(arr)
    with q.view(timeout=5) as seen:
        assert seen.dtype == arr.dtype and seen.shape == arr.shape
        assert np.array_equal(seen, arr)
        if arr.nbytes and (arr.flags.c_contiguous or arr.flags.f_contiguous) and arr.ndim:
            assert not seen.flags.writeable  # a read-only view of the ring
            assert seen.flags.f_contiguous == arr.flags.f_contiguous


def test_objects_mixing_arrays_and_data(make_queue):
    q = make_queue(maxsize=8 << 20)
    a = np.arange(1 << 16, dtype=np.float64)
    b = np.ones((64, 64), dtype=np.int16)
    item = {"id": 7, "arrays": [a, b, a], "text": "doc", "nested": {"b": b, "n": None}}
    q.put(item)
    got = q.get(timeout=5)
    assert got["id"] == 7 and got["text"] == "doc" and got["nested"]["n"] is None
    assert np.array_equal(got["arrays"][0], a) and np.array_equal(got["nested"]["b"], b)
    q.put(item)
    with q.view(timeout=5) as seen:
        arr = seen["arrays"][0]
        assert np.array_equal(arr, a)
        assert arr.ctypes.data % 64 == 0  # buffers start 64-byte aligned in the ring
        assert not arr.flags.owndata
    q.put_many([item, {"plain": 1}])  # put_many pickles in band: still equal
    got = q.get_many(max_items=2, timeout=5)
    assert np.array_equal(got[0]["arrays"][1], b) and got[1] == {"plain": 1}


def test_out_of_band_message_read_by_get_many_and_a_second_handle(make_queue):
    q = make_queue(maxsize=8 << 20)
    other = make_queue(name=q.name)
    arrays = [np.full(1000, i, dtype=np.int32) for i in range(5)]
    for a in arrays:
        q.put(a)
    got = other.get_many(max_items=10, timeout=5)
    assert len(got) == 5 and all(np.array_equal(g, a) for g, a in zip(got, arrays))


def test_a_large_array_goes_in_with_one_copy_and_fits_exactly(make_queue):
    q = make_queue(maxsize=64 << 20)
    a = np.random.default_rng(1).random(4 << 20 // 8)  # 4 MiB
    q.put(a)
    with q.view(timeout=5) as seen:
        assert np.array_equal(seen, a)
    with pytest.raises(MessageTooLarge):
        q.put(np.zeros(80 << 20 >> 3))
    assert q.qsize() == 0
