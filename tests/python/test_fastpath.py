"""The hot path binds the generated module's raw_* entry points with its own ctypes argument
lists; these tests pin that to the generated code, so a UniFFI upgrade that changes it fails
here loudly instead of misbehaving."""

import queue

import pytest
from sage_queue import SageQueue, _fastpath
from sage_queue._native import sage_queue as gen


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
        "gen._UniffiLib.uniffi_sage_queue_fn_func_raw_put.argtypes = (ctypes.c_int,)\n"
        "del sys.modules['sage_queue._fastpath']  # as a fresh import would find it\n"
        "try:\n"
        "    importlib.import_module('sage_queue._fastpath')\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("PinMismatch"), out.stdout + out.stderr
    assert "raw_put" in out.stdout


def test_fast_and_generated_calls_agree(make_queue):
    q = make_queue(maxsize=1 << 16, serializer="raw")
    qid = q._id
    payloads = [b"", b"\0", b"a\0b\0", bytes(range(256)) * 10]
    for p in payloads:
        _fastpath.raw_put(qid, p, 0.0)
    for p in payloads:
        assert q.get_nowait() == p
    for p in payloads:
        gen.raw_put(qid, p, 0.0)
    for p in payloads:
        assert q.get_nowait() == p


def test_fast_errors_are_generated_exceptions(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    with pytest.raises(gen.QueueError.Empty):
        _fastpath.raw_get_view(q._id, 0.0)
    with pytest.raises(gen.QueueError.TooLarge):
        _fastpath.raw_put(q._id, b"x" * 5000, 0.0)
    # The status was reset: the next call succeeds.
    _fastpath.raw_put(q._id, b"ok", 0.0)
    assert q.get_nowait() == b"ok"
    with pytest.raises(gen.QueueError.Closed):
        _fastpath.raw_put(2**63, b"x", 0.0)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)


def test_first_attempts_report_not_now_without_an_error(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    assert gen.raw_try_get_view(q._id) == _fastpath.NOTHING
    assert gen.raw_try_put_pair(q._id, b"h", b"x" * 3000)
    assert not gen.raw_try_put_pair(q._id, b"", b"y" * 3000)  # no room now: False, not Full
    with pytest.raises(gen.QueueError.TooLarge):
        gen.raw_try_put_pair(q._id, b"", b"z" * 5000)
    assert gen.raw_try_get_view(q._id) == 3001
    assert _fastpath.view(3001)[:3001].tobytes() == b"h" + b"x" * 3000
    assert gen.raw_try_get_view(q._id) == _fastpath.NOTHING
    with pytest.raises(gen.QueueError.Closed):
        gen.raw_try_get_view(2**63)
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
