"""The hot path binds the message path of the UDL (the msg_* entry points) with its own ctypes
argument lists; these tests pin that to the generated code, so a UniFFI upgrade that changes it
fails here loudly instead of misbehaving, and check the family's conventions: results by
value, failures raised by msg_error() from the calling thread's slot, the shared call status
never written."""

import ctypes
import queue
import threading

import pytest
from sage_queue import SageQueue, _fastpath
from sage_queue._native import sage_queue as gen

F = _fastpath
ST = F.STATUS


def test_pinned_to_generated_code():
    assert _fastpath.pinned() == []


def test_a_mismatched_pin_fails_the_import_loudly():
    """The direct calls are the only message path: if the generated code changed, importing
    the package fails and names what differs (no untested fallback runs instead)."""
    import subprocess
    import sys

    code = (
        "import ctypes, importlib, sys\n"
        "from sage_queue._native import sage_queue as gen\n"
        "gen._UniffiLib.uniffi_sage_queue_fn_func_msg_put.argtypes = (ctypes.c_int,)\n"
        "del sys.modules['sage_queue._fastpath']  # as a fresh import would find it\n"
        "try:\n"
        "    importlib.import_module('sage_queue._fastpath')\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("PinMismatch"), out.stdout + out.stderr
    assert "msg_put" in out.stdout


def _put(qid, body, head=b"", timeout=0.0):
    return F.put(ctypes.c_uint64(qid), len(head), head, len(body), body, F.seconds(timeout), ST)


def _take(qid, timeout=0.0):
    return F.take(ctypes.c_uint64(qid), F.seconds(timeout), ST)


def test_fast_and_generated_calls_agree(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    qid = q._id
    payloads = [b"", b"\0", b"a\0b\0", bytes(range(256)) * 10]
    for p in payloads:
        assert _put(qid, p) == 1
    for p in payloads:
        assert q.get_nowait() == p
    for p in payloads:
        assert gen.msg_put(qid, b"", p, 0.0) == 1
    for p in payloads:
        n = gen.msg_take(qid, 0.0)
        assert F.view(n)[:n].tobytes() == p
    assert gen.msg_take(qid, 0.0) == F.NOTHING


def test_failures_are_raised_by_msg_error_and_never_touch_the_status(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    assert _take(q._id) == F.NOTHING  # empty: a value, not an error
    assert _put(q._id, b"x" * 5000) == -1
    with pytest.raises(gen.QueueError.TooLarge):
        F.raise_failure()
    gen.msg_error()  # raised once, then forgotten: nothing left
    assert _put(2**63, b"x") == -1
    with pytest.raises(gen.QueueError.Closed):
        F.raise_failure()
    assert _take(2**63) == F.FAILED
    with pytest.raises(gen.QueueError.Closed):
        F.raise_failure()
    # A malformed batch is refused whole and puts nothing.
    lengths = (5).to_bytes(4, "little")
    assert F.put_batch(q._cid, 4, lengths, 3, b"abc", F.ZERO, ST) == -1
    with pytest.raises(gen.QueueError.InvalidArgument):
        F.raise_failure()
    assert q.qsize() == 0
    # NaN is refused (a timeout must be a number).
    assert _put(q._id, b"x", timeout=float("nan")) == -1
    with pytest.raises(gen.QueueError.InvalidArgument):
        F.raise_failure()
    assert F._STATUS_BLOCK.code == 0  # the shared status was never written
    _put(q._id, b"ok")
    assert q.get_nowait() == b"ok"


def test_a_failure_stays_with_its_thread(make_queue):
    """The error slot is per thread: another thread's failure is not raised here."""
    q = make_queue(maxsize=4096, serializer="raw")
    assert _put(q._id, b"x" * 5000) == -1  # this thread: TooLarge waiting
    seen = []

    def other():
        assert _put(2**63, b"x") == -1
        try:
            F.raise_failure()
        except gen.QueueError.Closed:
            seen.append("closed")

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert seen == ["closed"]
    with pytest.raises(gen.QueueError.TooLarge):
        F.raise_failure()


def test_first_attempts_report_not_now_without_an_error(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    assert gen.msg_try_take(q._id) == F.NOTHING
    assert gen.msg_try_put(q._id, b"h", b"x" * 3000) == 1
    assert gen.msg_try_put(q._id, b"", b"y" * 3000) == 0  # no room now: 0, not an error
    assert gen.msg_try_put(q._id, b"", b"z" * 5000) == -1
    with pytest.raises(gen.QueueError.TooLarge):
        gen.msg_error()
    assert gen.msg_try_take(q._id) == 3001
    assert F.view(3001)[:3001].tobytes() == b"h" + b"x" * 3000
    assert gen.msg_try_take(q._id) == F.NOTHING
    assert gen.msg_try_take(2**63) == F.FAILED
    with pytest.raises(gen.QueueError.Closed):
        gen.msg_error()
    # Through the shim: a non-blocking call on a full/empty queue raises queue.Full/Empty, a
    # blocking one waits for its timeout.
    q.put(b"a" * 4000)
    with pytest.raises(queue.Full):
        q.put_nowait(b"b" * 100)
    with pytest.raises(queue.Full):
        q.put(b"b" * 100, timeout=0.01)
    assert q.get_nowait() == b"a" * 4000
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_one_batch_format_both_ways(make_queue):
    """The generated batch methods and the message path share the table format."""
    q = make_queue(maxsize=1 << 16, serializer="raw")
    msgs = [b"", b"a", b"bc" * 100]
    lengths = b"".join(len(m).to_bytes(4, "little") for m in msgs)
    native = q._handle()
    assert native.put_batch(lengths, b"".join(msgs), 0.0) == 3
    n = F.take_batch(q._cid, F.u32(10), F.u64(1 << 20), F.ZERO, ST)
    taken = F.view(n)[:n].tobytes()
    assert taken == b"".join(msgs) + lengths + (3).to_bytes(4, "little")
    assert F.put_batch(q._cid, len(lengths), lengths, len(taken) - 16, taken, F.ZERO, ST) == 3
    assert native.get_batch(10, 1 << 20, 0.0) == taken
    with pytest.raises(gen.QueueError.Empty):
        native.get_batch(10, 1 << 20, 0.0)


def test_batches_through_fast_path(make_queue):
    q = make_queue(maxsize=1 << 16)
    q.put_many(list(range(100)))
    assert q.get_many(max_items=1000) == list(range(100))
    assert isinstance(q, SageQueue)


@pytest.mark.parametrize("size", [0, 1, 100, 64 * 1024 - 1, 64 * 1024, 1 << 20])
def test_bytes_items_skip_pickle_and_keep_their_type(make_queue, size):
    q = make_queue(maxsize=4 << 20)
    for item in (b"\x00" * size, b"\x80" * size, bytes(range(256)) * (size // 256)):
        q.put(item)
        got = q.get(timeout=5)
        assert type(got) is bytes and got == item
    # Other bytes-like types still go through pickle and keep their type.
    q.put(bytearray(b"ab"))
    got = q.get(timeout=5)
    assert type(got) is bytearray and got == bytearray(b"ab")
    q.put_many([b"\x00", b"x" * size, "s"])
    assert q.get_many(max_items=10, timeout=5) == [b"\x00", b"x" * size, "s"]


def test_tagged_bytes_readable_by_a_raw_reader(make_queue):
    q = make_queue(maxsize=1 << 16)
    raw = make_queue(name=q.name, serializer="raw")
    q.put(b"payload")
    assert raw.get(timeout=5) == b"\x00payload"


# A get that runs inside another get's unpickling (from a __reduce__ callable) must not
# overwrite the thread's view buffer that the outer load is still reading.
_nested_queue = None


def _load_nested():
    q = _nested_queue
    return ("nested", q.get(timeout=5), q.get_many(max_items=2, timeout=5))


class _Nested:
    def __reduce__(self):
        return (_load_nested, ())


def test_get_inside_unpickling_leaves_the_outer_message_intact(make_queue):
    global _nested_queue
    q = _nested_queue = make_queue(maxsize=1 << 16)
    tail = "tail-" * 200  # read by the outer load after the nested gets ran
    q.put([_Nested(), tail])
    q.put("a" * 3000)
    q.put_many(["b" * 2000, "c"])
    assert q.get(timeout=5) == [("nested", "a" * 3000, ["b" * 2000, "c"]), tail]
    # The same inside a batch load.
    q.put_many([[_Nested(), tail], "after"])
    q.put("x" * 500)
    q.put_many(["y", "z"])
    nested = [("nested", "x" * 500, ["y", "z"]), tail]
    assert q.get_many(max_items=2, timeout=5) == [nested, "after"]
    assert q.empty()
