"""Direct calls to the generated module's ``raw_*`` entry points, for the message hot path.

A call through the generated Python wrapper costs several microseconds (argument checks, a
lowered ForeignBytes structure, a fresh call status); a ctypes call to the same exported
function costs a fraction of that. This module binds the message functions of
``sage_queue.udl`` to new ctypes function objects over the SAME library symbols, with
argument lists that are ABI-identical to the generated ones on x86-64 and aarch64 Linux: a
``ForeignBytes {int32 len; uint8_t *data}`` passed by value travels in two integer registers,
exactly like separate ``len`` and ``data`` arguments. Errors are lifted by the generated error
converter, so they are the generated exception classes. The ``raw_try_*`` first attempts,
which never wait, are called holding the GIL (no hand-over to other threads and back).

``pinned()`` compares what this module assumes with the generated module and returns the
differences. This is the only message path of the shim, so when there is any difference (a
UniFFI upgrade changed the generated code, or another platform) importing the package fails
with PinMismatch, listing them, instead of misbehaving or quietly taking an untested path.
"""

import ctypes
import platform
import sys
import threading
from typing import Any, Callable, List, TypeVar

from ._native import sage_queue as _gen

_u64, _u32, _i64, _f64 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int64, ctypes.c_double
_STATUS = _gen._UniffiRustCallStatus
_STATUS_PTR = ctypes.POINTER(_STATUS)
_FB = _gen._UniffiForeignBytes

# Symbol -> (generated argtypes, generated restype, our argtypes, our restype).
_SIGNATURES = {
    "uniffi_sage_queue_fn_func_raw_put": (
        (_u64, _FB, _f64, _STATUS_PTR), None,
        (_u64, _i64, ctypes.c_char_p, _f64, ctypes.c_void_p), None,
    ),
    "uniffi_sage_queue_fn_func_raw_put_pair": (
        (_u64, _FB, _FB, _f64, _STATUS_PTR), None,
        (_u64, _i64, ctypes.c_char_p, _i64, ctypes.c_char_p, _f64, ctypes.c_void_p), None,
    ),
    "uniffi_sage_queue_fn_func_raw_put_many": (
        (_u64, _FB, _FB, _f64, _STATUS_PTR), _u32,
        (_u64, _i64, ctypes.c_char_p, _i64, ctypes.c_char_p, _f64, ctypes.c_void_p), _u32,
    ),
    "uniffi_sage_queue_fn_func_raw_get_many_view": (
        (_u64, _u32, _u64, _f64, _STATUS_PTR), _u64,
        (_u64, _u32, _u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_raw_get_view": (
        (_u64, _f64, _STATUS_PTR), _u64,
        (_u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_raw_try_put_pair": (
        (_u64, _FB, _FB, _STATUS_PTR), ctypes.c_int8,
        (_u64, _i64, ctypes.c_char_p, _i64, ctypes.c_char_p, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_raw_try_get_view": (
        (_u64, _STATUS_PTR), _u64,
        (_u64, ctypes.c_void_p), _u64,
    ),
}  # fmt: skip

_LAYOUTS = {
    _FB: [("len", ctypes.c_int32), ("data", ctypes.POINTER(ctypes.c_char))],
    _gen._UniffiRustBuffer: [
        ("capacity", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("data", ctypes.POINTER(ctypes.c_char)),
    ],
    _STATUS: [("code", ctypes.c_int8), ("error_buf", _gen._UniffiRustBuffer)],
}


def pinned() -> List[str]:
    """Differences between what this module assumes and the generated module (empty: none)."""
    problems: List[str] = []
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64")):
        problems.append(f"ABI not checked on {sys.platform}/{platform.machine()}")
    for struct, fields in _LAYOUTS.items():
        if list(struct._fields_) != fields:
            problems.append(f"{struct.__name__} fields are {struct._fields_}")
    for name, (args, res, _, _) in _SIGNATURES.items():
        fn = getattr(_gen._UniffiLib, name, None)
        if fn is None:
            problems.append(f"{name} is not in the generated module")
        elif tuple(fn.argtypes) != args or fn.restype is not res:
            problems.append(f"{name} is {fn.argtypes} -> {fn.restype}")
    for helper in ("_uniffi_check_call_status", "_UniffiFfiConverterTypeQueueError"):
        if not hasattr(_gen, helper):
            problems.append(f"{helper} is not in the generated module")
    return problems


class PinMismatch(ImportError):
    """The generated module is not what the direct calls were pinned to."""


_PROBLEMS = pinned()
if _PROBLEMS:
    raise PinMismatch(
        "sage_queue's direct calls do not match the generated module (rebuild, or update "
        "_fastpath.py to the new generated code): " + "; ".join(_PROBLEMS)
    )


def _bind(name: str, holding_gil: bool = False) -> Any:
    """A new function object for the symbol (the generated one stays untouched), called with
    ctypes values built once (c_uint64 id, c_double timeout, c_void_p status): with no
    argtypes, ctypes passes them as they are, a Python int as a C int (the ForeignBytes
    length is an int32) and bytes as a pointer to their buffer, which costs much less than
    converting every argument on every call.

    ``holding_gil``: call without releasing the GIL (the ``PyDLL`` calling convention), which
    saves a GIL hand-over per call; only for calls that never wait (timeout 0)."""
    lib = _gen._UniffiLib
    if holding_gil:
        lib = ctypes.PyDLL(lib._name, handle=lib._handle)
    fn = lib[name]
    fn.argtypes = None
    fn.restype = _SIGNATURES[name][3]
    return fn


class Thread:
    """One thread's reusable call status, and where its native view buffer is.

    The view buffer is the per-thread Rust buffer that ``raw_*_view`` calls fill; it moves
    only when it grows, so ``view(n)`` asks for its place again only when ``n`` exceeds the
    capacity last seen. ``busy`` is set while an item is loaded straight from the buffer: a
    get that runs inside that load (from unpickling code) must not overwrite it."""

    __slots__ = ("status", "address", "view", "view_capacity", "busy")

    def __init__(self) -> None:
        self.status = _STATUS()
        self.address = ctypes.c_void_p(ctypes.addressof(self.status))
        self.view = memoryview(b"")
        self.view_capacity = -1
        self.busy = False


class _Local(threading.local):
    def __init__(self) -> None:
        self.t = Thread()


# ``local.t`` is the calling thread's Thread (one thread-local lookup, then plain slots).
local = _Local()


def view(n: int) -> memoryview:
    """This thread's view buffer (as bytes), just filled with ``n`` bytes by a view call."""
    t = local.t
    if n > t.view_capacity:
        address, capacity = _gen.raw_view_address(), _gen.raw_view_capacity()
        t.view = memoryview((ctypes.c_char * capacity).from_address(address)).cast("B")
        t.view_capacity = capacity
    return t.view


def discard(t: Thread) -> None:
    """Forget what a call that an exception interrupted may have left in this thread's state.

    A signal handler's exception (Ctrl-C) can leave a call between the native return and the
    status check: the status may hold an error that belongs to that call (its buffer is freed
    here, so no later call sees it) and the view buffer may have moved unseen. Every path that
    uses the thread's status or view calls this when any exception leaves it, and every call
    clears the status code before it starts, so nothing of one call survives into the next."""
    if t.status.code:
        try:
            raise_status(t.status)
        except BaseException:
            pass
    t.view_capacity = -1


def raise_status(st: Any) -> None:
    """Raise the error a failed call left in `st` (a generated QueueError), and reset it."""
    try:
        _gen._uniffi_check_call_status(  # type: ignore[no-untyped-call]
            _gen._UniffiFfiConverterTypeQueueError, st
        )
    finally:
        st.code = 0


_R = TypeVar("_R")


def call(fn: Callable[..., _R], *args: Any) -> _R:
    """``fn(*args, status)`` with this thread's status: cleared first, checked after, and
    discarded (with the view's place) if any exception interrupts the call."""
    t = local.t
    st = t.status
    st.code = 0
    try:
        result = fn(*args, t.address)
    except BaseException:
        discard(t)
        raise
    if st.code:
        raise_status(st)
    return result


def seconds(timeout: float) -> ctypes.c_double:
    """A timeout as the c_double the entry points take."""
    return _ZERO if timeout == 0.0 else ctypes.c_double(timeout)


_ZERO = ctypes.c_double(0.0)
NOTHING = 2**64 - 1  # try_get_view's "empty now"

# The bound entry points:
# put(id, len, data, timeout, status); put_pair(id, len, head, len, body, timeout, status);
# get_view(id, timeout, status) -> u64;
# put_many(id, len, lengths, len, payloads, timeout, status) -> u32;
# get_many_view(id, max_items, max_bytes, timeout, status) -> u64.
put: Callable[..., None] = _bind("uniffi_sage_queue_fn_func_raw_put")
put_pair: Callable[..., None] = _bind("uniffi_sage_queue_fn_func_raw_put_pair")
get_view: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_raw_get_view")
# First attempts, which never wait, holding the GIL:
# try_put_pair(id, len, head, len, body, status) -> int8 (0: no room now);
# try_get_view(id, status) -> u64 (NOTHING: empty now).
try_put_pair: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_func_raw_try_put_pair", holding_gil=True
)
try_get_view: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_func_raw_try_get_view", holding_gil=True
)
put_many: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_raw_put_many")
get_many_view: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_raw_get_many_view")


def raw_put(qid: int, data: bytes, timeout: float) -> None:
    """The generated raw_put's signature and behaviour, over the direct entry point."""
    call(put, ctypes.c_uint64(qid), len(data), data, seconds(timeout))


def raw_put_pair(qid: int, head: bytes, body: bytes, timeout: float) -> None:
    call(put_pair, ctypes.c_uint64(qid), len(head), head, len(body), body, seconds(timeout))


def raw_get_view(qid: int, timeout: float) -> int:
    return call(get_view, ctypes.c_uint64(qid), seconds(timeout))


def raw_put_many(qid: int, lengths: bytes, payloads: bytes, timeout: float) -> int:
    return call(
        put_many, ctypes.c_uint64(qid), len(lengths), lengths, len(payloads), payloads,
        seconds(timeout),
    )  # fmt: skip


def raw_get_many_view(qid: int, max_items: int, max_bytes: int, timeout: float) -> int:
    return call(
        get_many_view, ctypes.c_uint64(qid), ctypes.c_uint32(max_items),
        ctypes.c_uint64(max_bytes), seconds(timeout),
    )  # fmt: skip
