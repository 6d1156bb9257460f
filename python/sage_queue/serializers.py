"""Serializers: how an item becomes the bytes of one message and back.

A serializer is any object with ``dumps(item) -> bytes`` and ``loads(bytes) -> item``.
Built in: ``"pickle"`` (the default, highest protocol) and ``"raw"`` (bytes-like items pass
unchanged and come back as ``bytes``). Modules such as ``json`` or ``marshal`` work too: a
``dumps`` returning ``str`` is encoded as UTF-8.
"""

import functools
import importlib
import pickle
import types
from typing import Any

from .errors import DeserializationError, SerializationError

_BYTES_LIKE = (bytes, bytearray, memoryview)


class PickleSerializer:
    """pickle with a fixed protocol (default: the highest this Python knows)."""

    name = "pickle"

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL):
        self.protocol = protocol
        # C callables, not methods: no Python frame on the message path.
        self.dumps = functools.partial(pickle.dumps, protocol=protocol)
        self.loads = pickle.loads

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self.protocol})"


class RawSerializer:
    """No serialization: bytes, bytearray and memoryview go in, bytes come out."""

    name = "raw"

    def dumps(self, item: Any) -> bytes:
        if isinstance(item, bytes):
            return item
        if isinstance(item, (bytearray, memoryview)):
            return bytes(item)
        raise TypeError(
            f"the raw serializer moves bytes-like items only, not {type(item).__name__}"
        )

    def loads(self, data: bytes) -> bytes:
        return data

    def __repr__(self) -> str:
        return "RawSerializer()"


def get_serializer(spec: Any) -> Any:
    """The serializer object for ``spec``: "pickle" (or None), "raw", or an object with
    ``dumps`` and ``loads``."""
    if spec is None or spec == "pickle":
        return PickleSerializer()
    if spec == "raw":
        return RawSerializer()
    if isinstance(spec, str):
        raise ValueError(f"unknown serializer {spec!r} (use 'pickle', 'raw' or an object)")
    if callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None)):
        return spec
    raise TypeError(f"a serializer needs dumps() and loads() methods, got {spec!r}")


def spec_name(serializer: Any) -> str:
    """A short name for repr and stats."""
    name = getattr(serializer, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(serializer, types.ModuleType):
        return serializer.__name__
    return type(serializer).__name__


def encode(serializer: Any, item: Any) -> bytes:
    """Serialize one item; any failure becomes SerializationError."""
    try:
        data = serializer.dumps(item)
    except Exception as exc:
        raise serialization_error(serializer, item, exc) from exc
    if isinstance(data, bytes):
        return data
    if isinstance(data, _BYTES_LIKE):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    raise SerializationError(
        f"{spec_name(serializer)}.dumps() returned {type(data).__name__}, not bytes"
    )


def serialization_error(serializer: Any, item: Any, exc: Exception) -> SerializationError:
    """The error for an item that ``serializer`` failed to dump with ``exc``."""
    return SerializationError(
        f"cannot serialize {type(item).__name__} with {spec_name(serializer)}: {exc}"
    )


def decode(serializer: Any, data: bytes) -> Any:
    """Deserialize one message; any failure becomes DeserializationError carrying the bytes."""
    try:
        return serializer.loads(data)
    except Exception as exc:
        raise deserialization_error(data, exc) from exc


def deserialization_error(data: bytes, exc: Exception) -> DeserializationError:
    """The error for a message of ``data`` whose loading failed with ``exc``."""
    return DeserializationError(data, f"{type(exc).__name__}: {exc}")


def portable_spec(spec: Any) -> Any:
    """A picklable description of ``spec`` for a queue reference, or None if it has none.

    Names stay names, a module travels as ("module", its name), any other object travels
    pickled if pickle accepts it."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, types.ModuleType):
        return ("module", spec.__name__)
    try:
        pickle.dumps(spec)
    except Exception:
        return None
    return spec


def from_portable_spec(spec: Any) -> Any:
    """Undo portable_spec: a value that get_serializer accepts."""
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "module":
        return importlib.import_module(spec[1])
    return spec
