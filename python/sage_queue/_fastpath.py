"""Direct calls to the message path of ``sage_queue.udl`` (the ``msg_*`` entry points).

A call through the generated Python wrapper costs several microseconds (argument checks, a
lowered ForeignBytes structure, a fresh call status); a ctypes call to the same exported
function costs a fraction of that. This module binds the message functions to new ctypes
function objects over the SAME library symbols, with argument lists that are ABI-identical to
the generated ones on x86-64 and aarch64 Linux: a ``ForeignBytes {int32 len; uint8_t *data}``
passed by value travels in two integer registers, exactly like separate ``len`` and ``data``
arguments. The message calls report by value and never write the call status, so every
thread passes the one ``STATUS`` here and nothing checks it; a FAILED result is lifted by the
generated ``msg_error()``, so errors are the generated exception classes. Calls that never
wait (timeout 0) are made holding the GIL (no hand-over to other threads and back).

``pinned()`` compares what this module assumes with the generated module and returns the
differences. This is the only message path of the shim, so when there is any difference (a
UniFFI upgrade changed the generated code, or another platform) importing the package fails
with PinMismatch, listing them, instead of misbehaving or quietly taking an untested path.
"""

import ctypes
import platform
import sys
import threading
from typing import Any, Callable, List, NoReturn, Optional

from ._native import sage_queue as _gen

_u64, _u32, _i64, _f64 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int64, ctypes.c_double
_STATUS = _gen._UniffiRustCallStatus
_STATUS_PTR = ctypes.POINTER(_STATUS)
_FB = _gen._UniffiForeignBytes

_B = (_i64, ctypes.c_char_p)  # a ForeignBytes as its two registers: length, data
# Symbol -> (generated argtypes, generated restype, our argtypes, our restype).
_SIGNATURES = {
    "uniffi_sage_queue_fn_func_msg_put": (
        (_u64, _FB, _FB, _f64, _STATUS_PTR), ctypes.c_int8,
        (_u64, *_B, *_B, _f64, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_try_put": (
        (_u64, _FB, _FB, _STATUS_PTR), ctypes.c_int8,
        (_u64, *_B, *_B, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_try_take": (
        (_u64, _STATUS_PTR), _u64,
        (_u64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_take": (
        (_u64, _f64, _STATUS_PTR), _u64,
        (_u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_put_batch": (
        (_u64, _FB, _FB, _f64, _STATUS_PTR), _i64,
        (_u64, *_B, *_B, _f64, ctypes.c_void_p), _i64,
    ),
    "uniffi_sage_queue_fn_func_msg_take_batch": (
        (_u64, _u32, _u64, _f64, _STATUS_PTR), _u64,
        (_u64, _u32, _u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_loan": (
        (_u64, _u64, _f64, _STATUS_PTR), _u64,
        (_u64, _u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_commit": (
        (_u64, _STATUS_PTR), ctypes.c_int8,
        (_u64, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_abort": (
        (_u64, _STATUS_PTR), ctypes.c_int8,
        (_u64, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_pin": (
        (_u64, _f64, _STATUS_PTR), _u64,
        (_u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_pin_address": (
        (_STATUS_PTR,), _u64,
        (ctypes.c_void_p,), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_unpin": (
        (_u64, _u64, _STATUS_PTR), ctypes.c_int8,
        (_u64, _u64, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_take_acked": (
        (_u64, _f64, _STATUS_PTR), _u64,
        (_u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_take_acked_batch": (
        (_u64, _u32, _u64, _f64, _STATUS_PTR), _u64,
        (_u64, _u32, _u64, _f64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_receipt": (
        (_u32, _STATUS_PTR), _u64,
        (_u32, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_ack": (
        (_u64, _u64, _STATUS_PTR), ctypes.c_int8,
        (_u64, _u64, ctypes.c_void_p), ctypes.c_int8,
    ),
    "uniffi_sage_queue_fn_func_msg_line_state": (
        (_u64, ctypes.c_uint8, _STATUS_PTR), _u64,
        (_u64, ctypes.c_uint8, ctypes.c_void_p), _u64,
    ),
    # The event loop's ReadyFd (aio.py): methods, each called with a handle from clone.
    "uniffi_sage_queue_fn_clone_readyfd": (
        (_u64, _STATUS_PTR), _u64,
        (_u64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_method_readyfd_woken": (
        (_u64, _STATUS_PTR), _u64,
        (_u64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_method_readyfd_poll": (
        (_u64, _u64, _STATUS_PTR), _u64,
        (_u64, _u64, ctypes.c_void_p), _u64,
    ),
    "uniffi_sage_queue_fn_func_msg_nack": (
        (_u64, _u64, _STATUS_PTR), ctypes.c_int8,
        (_u64, _u64, ctypes.c_void_p), ctypes.c_int8,
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
    for helper in ("msg_error", "msg_view_address", "msg_view_capacity"):
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


def _bind(name: str, holding_gil: bool = False, typed: bool = False) -> Any:
    """A new function object for the symbol (the generated one stays untouched), called with
    ctypes values built once (c_uint64 id, c_double timeout, the status address): with no
    argtypes, ctypes passes them as they are, a Python int as a C int (the ForeignBytes
    length is an int32) and bytes as a pointer to their buffer, which costs much less than
    converting every argument on every call.

    ``holding_gil``: call without releasing the GIL (the ``PyDLL`` calling convention), which
    saves a GIL hand-over per call; only for calls that never wait (timeout 0).

    ``typed``: keep our argtypes, so ctypes converts each argument (for calls passed plain
    Python ints that need not fit a C int, such as object handles)."""
    lib = _gen._UniffiLib
    if holding_gil:
        lib = ctypes.PyDLL(lib._name, handle=lib._handle)
    fn = lib[name]
    fn.argtypes = _SIGNATURES[name][2] if typed else None
    fn.restype = _SIGNATURES[name][3]
    return fn


# The one call status every thread passes: the message calls never write it.
_STATUS_BLOCK = _STATUS()
STATUS = ctypes.c_void_p(ctypes.addressof(_STATUS_BLOCK))
NOTHING = 2**64 - 1  # msg_take(_batch): nothing came before the timeout
FAILED = 2**64 - 2  # msg_take(_batch): failed, raise_failure() raises why
ZERO = ctypes.c_double(0.0)  # the timeout "try once"


class Thread:
    """Where this thread's native view buffer is, as a memoryview.

    The view buffer is the per-thread Rust buffer that msg_take and msg_take_batch fill; it
    moves only when it grows, so ``view(n)`` asks for its place again only when ``n`` exceeds
    the capacity last seen. ``busy`` is set while an item is loaded straight from the buffer:
    a get that runs inside that load (from unpickling code) must not overwrite it."""

    __slots__ = ("view", "view_capacity", "busy")

    def __init__(self) -> None:
        self.view = memoryview(b"")
        self.view_capacity = -1
        self.busy = False


class _Local(threading.local):
    def __init__(self) -> None:
        self.t = Thread()


# ``local.t`` is the calling thread's Thread (one thread-local lookup, then plain slots).
local = _Local()


def view(n: int) -> memoryview:
    """This thread's view buffer (as bytes), just filled with ``n`` bytes by a take."""
    t = local.t
    if n > t.view_capacity:
        address, capacity = _gen.msg_view_address(), _gen.msg_view_capacity()
        t.view = memoryview((ctypes.c_char * capacity).from_address(address)).cast("B")
        t.view_capacity = capacity
    return t.view


def discard(t: Thread) -> None:
    """Forget where the view buffer is, after an exception interrupted a take.

    A signal handler's exception (Ctrl-C) can leave a take between the native return and
    the check of its length, when the buffer may have moved unseen; every path that uses the
    view calls this when any exception leaves it. (A failure's error waits in a native
    per-thread slot that only the FAILED result of the same call reads, so nothing of an
    interrupted call can pass for a later call's.)"""
    t.view_capacity = -1


def raise_failure() -> NoReturn:
    """Raise the error of this thread's last FAILED message call (a generated QueueError)."""
    _gen.msg_error()
    raise RuntimeError("a sage-queue message call failed without an error")


def seconds(timeout: Optional[float]) -> ctypes.c_double:
    """A timeout as the c_double the entry points take (None: forever)."""
    if timeout is None:
        return _FOREVER
    return ZERO if timeout == 0.0 else ctypes.c_double(timeout)


_FOREVER = ctypes.c_double(-1.0)
u32, u64 = ctypes.c_uint32, ctypes.c_uint64  # for the integer arguments that are not int32

# The bound entry points, each called with STATUS last:
# put(id, len, head, len, body, timeout) -> int8: 1 put, 0 no room in time, -1 FAILED;
# take(id, timeout) -> u64: length in the view, NOTHING or FAILED;
# put_batch(id, len, lengths, len, payloads, timeout) -> int64: count put, or -1 FAILED;
# take_batch(id, max_items, max_bytes, timeout) -> u64: as take, a table in the view.
put: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_put")
take: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_take")
put_batch: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_put_batch")
take_batch: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_take_batch")
# First attempts, which never wait, holding the GIL:
# try_put(id, len, head, len, body) -> int8: 1 put, 0 no room now, -1 FAILED;
# try_take(id) -> u64: length in the view, NOTHING or FAILED.
try_put: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_try_put", holding_gil=True)
try_take: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_try_take", holding_gil=True)
# Loans and views in place (inplace.py), each called with STATUS last:
# loan(id, len, timeout) -> u64: the address to write at, NOTHING (no room in time) or FAILED;
# commit(id) / abort(id) -> int8: 1, or -1 FAILED; pin(id, timeout) -> u64: the pinned
# message's length, NOTHING or FAILED; pin_address() -> u64: where this thread's last pin is;
# unpin(id, address) -> int8: 1, or -1 FAILED.
loan: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_loan")
commit: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_commit", holding_gil=True)
abort: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_abort", holding_gil=True)
pin: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_pin")
pin_address: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_func_msg_pin_address", holding_gil=True
)
unpin: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_unpin", holding_gil=True)
# Acknowledged gets (acks.py), each called with STATUS last:
# take_acked(id, timeout) / take_acked_batch(id, max_items, max_bytes, timeout) -> u64: as
# take / take_batch; receipt(i) -> u64: receipt i of this thread's last acked take (0: none);
# ack(id, receipt) / nack(id, receipt) -> int8: 1, or -1 FAILED.
take_acked: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_take_acked")
take_acked_batch: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_take_acked_batch")
receipt: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_receipt", holding_gil=True)
ack: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_ack", holding_gil=True)
nack: Callable[..., int] = _bind("uniffi_sage_queue_fn_func_msg_nack", holding_gil=True)
# Async waits (aio.py), called with STATUS last:
# line_state(id, line) -> u64: the line's state to read before a try, or FAILED.
line_state: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_func_msg_line_state", holding_gil=True
)
# An event loop's ReadyFd (aio.py), each called with plain ints (typed) and STATUS last. A
# method consumes the handle it is given, as the generated methods' calls do, so each call
# passes a new one:
# ready_clone(handle) -> u64: a handle of the same ReadyFd (the generated object's _handle);
# ready_woken(handle) -> u64: the next woken token, 0 when none is left;
# ready_poll(handle, token) -> u64: as ReadyFd.poll.
ready_clone: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_clone_readyfd", holding_gil=True, typed=True
)
ready_woken: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_method_readyfd_woken", holding_gil=True, typed=True
)
ready_poll: Callable[..., int] = _bind(
    "uniffi_sage_queue_fn_method_readyfd_poll", holding_gil=True, typed=True
)
