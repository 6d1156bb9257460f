"""Serializers: pickle round trips of common types, raw bytes, custom serializers, and
items that cannot be serialized or deserialized."""

import collections
import dataclasses
import datetime
import decimal
import fractions
import json
import math
import pickle
import queue
import threading
import uuid

import pytest
from sage_queue import (
    DeserializationError,
    PickleSerializer,
    SageQueue,
    SerializationError,
)


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = "p"


Pair = collections.namedtuple("Pair", "left right")

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**200,
    -(2**100) + 7,
    3.14159,
    -0.0,
    math.inf,
    1e-300,
    complex(1.5, -2),
    "",
    "plain",
    "unicode: héllo ☃ 𝄞 中文",
    b"",
    b"\x00\xffbytes",
    bytearray(b"mutable"),
    (),
    (1, "two", 3.0),
    [1, [2, [3, [4]]]],
    {"a": 1, "nested": {"list": [1, 2, {"deep": (None,)}]}, 3: "int key"},
    {1, 2, 3},
    frozenset({"x", "y"}),
    datetime.datetime(2024, 5, 17, 13, 45, 1, 123456),
    datetime.datetime(2024, 5, 17, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    datetime.date(1999, 12, 31),
    datetime.timedelta(days=3, seconds=5),
    decimal.Decimal("1.10"),
    fractions.Fraction(1, 3),
    Point(1, 2.5),
    Pair("l", "r"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    ValueError("an exception"),
    b"\xab" * 200_000,
    list(range(10_000)),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_pickle_round_trip(make_queue, value):
    q = make_queue()
    q.put(value)
    got = q.get(timeout=5)
    assert type(got) is type(value)
    if isinstance(value, Exception):
        assert got.args == value.args
    else:
        assert got == value


def test_nan_round_trips(make_queue):
    q = make_queue()
    q.put(math.nan)
    assert math.isnan(q.get())


def test_numpy_arrays_round_trip(make_queue):
    np = pytest.importorskip("numpy")
    q = make_queue()
    arrays = [np.arange(12, dtype=np.int64).reshape(3, 4), np.linspace(0, 1, 5), np.float32(2.5)]
    q.put_many(arrays)
    for want, got in zip(arrays, q.get_many(max_items=10)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_pickle_uses_the_highest_protocol(make_queue, qname):
    q = make_queue(qname)
    raw = make_queue(qname, serializer="raw")
    q.put([1, 2])
    data = raw.get()
    assert data[0] == 0x80 and data[1] == pickle.HIGHEST_PROTOCOL


def test_unpicklable_item_raises_and_puts_nothing(make_queue):
    q = make_queue()
    for bad in (lambda: 1, threading.Lock()):
        with pytest.raises(SerializationError) as info:
            q.put(bad)
        assert isinstance(info.value, TypeError)
        with pytest.raises(SerializationError):
            q.put_many([1, bad, 3])
    assert q.qsize() == 0


def test_failed_unpickle_raises_with_the_bytes_and_keeps_the_rest(make_queue, qname):
    q = make_queue(qname)
    raw = make_queue(qname, serializer="raw")
    q.put("before")
    raw.put(b"this is not a pickle")
    q.put("after")
    assert q.get() == "before"
    with pytest.raises(DeserializationError) as info:
        q.get()
    assert isinstance(info.value, ValueError)
    assert info.value.data == b"this is not a pickle"
    assert q.get() == "after"
    assert q.qsize() == 0


def test_failed_unpickle_in_get_many_keeps_every_result(make_queue, qname):
    q = make_queue(qname)
    raw = make_queue(qname, serializer="raw")
    q.put(1)
    raw.put(b"junk")
    q.put(3)
    with pytest.raises(DeserializationError) as info:
        q.get_many(max_items=10)
    items = info.value.items
    assert items[0] == 1 and items[2] == 3
    assert isinstance(items[1], DeserializationError) and items[1].data == b"junk"
    assert q.qsize() == 0


def test_deserialization_error_pickles(make_queue):
    err = DeserializationError(b"abc", "broken")
    back = pickle.loads(pickle.dumps(err))
    assert back.data == b"abc" and str(back) == str(err)


def test_raw_serializer(make_queue):
    q = make_queue(serializer="raw")
    q.put(b"bytes")
    q.put(bytearray(b"bytearray"))
    q.put(memoryview(b"memoryview"))
    q.put(b"")
    assert [q.get() for _ in range(4)] == [b"bytes", b"bytearray", b"memoryview", b""]
    q.put(bytearray(b"t"))
    assert type(q.get()) is bytes
    with pytest.raises(SerializationError):
        q.put("a str is not bytes")
    with pytest.raises(SerializationError):
        q.put(123)
    assert q.qsize() == 0


class JsonLines:
    """A custom serializer: any object with dumps/loads."""

    def dumps(self, item):
        return json.dumps(item).encode()

    def loads(self, data):
        return json.loads(data)


def test_custom_serializer_object(make_queue, qname):
    q = make_queue(qname, serializer=JsonLines())
    q.put({"k": [1, 2, "three"]})
    assert q.get() == {"k": [1, 2, "three"]}
    raw = make_queue(qname, serializer="raw")
    q.put([1, 2])
    assert raw.get() == b"[1, 2]"
    with pytest.raises(SerializationError):
        q.put(object())


def test_a_module_can_be_the_serializer(make_queue):
    q = make_queue(serializer=json)  # json.dumps returns str: sent as UTF-8
    q.put({"é": 1})
    assert q.get() == {"é": 1}


def test_pickle_serializer_with_a_chosen_protocol(make_queue, qname):
    q = make_queue(qname, serializer=PickleSerializer(protocol=2))
    raw = make_queue(qname, serializer="raw")
    q.put("x")
    assert raw.get()[:2] == b"\x80\x02"


def test_unknown_serializer_is_rejected(qname):
    with pytest.raises(ValueError):
        SageQueue(qname, serializer="yaml")
    with pytest.raises(TypeError):
        SageQueue(qname, serializer=42)


def test_get_timeout_still_applies_with_raw(make_queue):
    q = make_queue(serializer="raw")
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
