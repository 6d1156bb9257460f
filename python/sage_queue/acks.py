"""Acknowledged gets: at-least-once delivery for SageQueue.

``item, receipt = q.get_acked()`` takes a message and keeps it in one of the queue's 64
leases (shared memory, after the ring) until ``q.ack(receipt)``; ``q.nack(receipt)`` returns
it to the queue. While unacknowledged it is invisible to other consumers, and its ring space
is free at once, so a message held for minutes holds back nothing. If the holder's process
dies (or closes its handle), or holds it longer than the queue's visibility timeout, the
message is delivered again to the next get (acked or plain), with ``receipt.deliveries`` one
higher; the old receipt is then refused (StaleReceipt) and can never remove the newer
delivery. After ``max_deliveries`` a returned message goes to the dead-letter queue, or is
dropped and counted (``set_ack_policy``). Plain ``get`` on the same queue stays at-most-once.

This module holds the receipts and the calls; SageQueue's methods of the same names call
them. Every call goes through the message path (``_fastpath``): msg_take_acked,
msg_take_acked_batch, msg_receipt, msg_ack and msg_nack.
"""

import pickle
import queue
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Tuple, Union

from . import _fastpath as _fast
from .errors import StaleReceipt, from_native

if TYPE_CHECKING:
    from .queue import SageQueue

_NativeError = Exception


class Receipt:
    """What ``get_acked`` hands out with a message: pass it to ``ack`` or ``nack``. It is
    a plain value (it pickles), so another process attached to the queue can ack it too."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    @property
    def deliveries(self) -> int:
        """How many times this message was delivered (1 the first time)."""
        return (self.value >> 16) & 0xFFFF

    def __reduce__(self) -> Tuple[Any, Tuple[int]]:
        return Receipt, (self.value,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Receipt) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Receipt(lease={self.value & 0xFFFF}, deliveries={self.deliveries})"


class BatchReceipt:
    """The receipts of a batch taken by ``get_many_acked``: one ``ack`` or ``nack`` for all
    (``receipts`` lists them, in message order, to settle them one by one instead)."""

    __slots__ = ("receipts",)

    def __init__(self, receipts: Sequence[Receipt]) -> None:
        self.receipts = list(receipts)

    @property
    def deliveries(self) -> int:
        """The highest delivery count in the batch."""
        return max((r.deliveries for r in self.receipts), default=0)

    def __len__(self) -> int:
        return len(self.receipts)

    def __iter__(self) -> Iterator[Receipt]:
        return iter(self.receipts)

    def __reduce__(self) -> Tuple[Any, Tuple[List[Receipt]]]:
        return BatchReceipt, (self.receipts,)

    def __repr__(self) -> str:
        return f"BatchReceipt({len(self.receipts)} messages)"


AnyReceipt = Union[Receipt, BatchReceipt]

_ST = _fast.STATUS
_TAKE_ACKED, _RECEIPT, _ACK = _fast.take_acked, _fast.receipt, _fast.ack
_FAILED = _fast.FAILED
_loads = pickle.loads
# The bound entry points take integers as C ints unless given as ctypes values.
_U32, _U64 = _fast.u32, _fast.u64
_FIRST = _fast.u32(0)


def _take(q: "SageQueue", batch: bool, wait: Optional[float], *limits: Any) -> int:
    """One acked take through the message path: the view's length (raises queue.Empty)."""
    t = _fast.local.t
    call = _fast.take_acked_batch if batch else _fast.take_acked
    try:
        n = _queue._waited(call, _fast.NOTHING, wait, q._cid, *limits)
        if n == _fast.FAILED:
            q._fast_failed(retry=False)
        if n == _fast.NOTHING:
            raise queue.Empty
        return n
    except BaseException:
        _fast.discard(t)
        raise


def get_acked(q: "SageQueue", wait: Optional[float]) -> Tuple[Any, Receipt]:
    t = _fast.local.t
    if t.busy:
        # Called while an item loads from this thread's view buffer: the generated method
        # returns the message in a new buffer instead.
        try:
            m = _queue._sliced(q._handle().get_acked, wait)
        except _NativeError as e:
            raise q._error(e) from None
        receipt = Receipt(m.receipt)
        return _decoded(q, bytes(m.data), receipt), receipt
    # The first attempt does not wait (as get's); waiting is _take.
    n = _TAKE_ACKED(q._cid, _fast.ZERO, _ST)
    if n >= _FAILED:
        if n == _FAILED:
            q._fast_failed()  # returns only after a fork: then wait below
        elif wait == 0.0:
            raise queue.Empty
        n = _take(q, False, wait)
    receipt = Receipt(_RECEIPT(_FIRST, _ST))
    mv = t.view if n <= t.view_capacity else _fast.view(n)
    if q._tag_bytes and n:
        if mv[0] == 0:  # a bytes item
            return mv[1:n].tobytes(), receipt
        if mv[0] == 0x80:  # a pickle: loaded in place, as get() does
            try:
                t.busy = True
                return _loads(mv[:n]), receipt
            except Exception:
                pass  # reported with the message's bytes below
            finally:
                t.busy = False
    return _decoded(q, mv[:n].tobytes(), receipt), receipt


def _decoded(q: "SageQueue", data: bytes, receipt: Receipt) -> Any:
    try:
        return q._decode(data)
    except Exception:
        # The error carries the message's bytes, as a plain get's does: it is consumed.
        ack(q, receipt)
        raise


def get_many_acked(
    q: "SageQueue", wait: Optional[float], max_items: int, max_bytes: int
) -> Tuple[List[Any], BatchReceipt]:
    if _fast.local.t.busy:
        raise RuntimeError("get_many_acked() cannot run while an item loads from the queue")
    n = _take(q, True, wait, _fast.u32(max_items), _fast.u64(max_bytes))
    mv = _fast.view(n)[:n]
    lengths = _queue._table_lengths(mv)
    payloads = [bytes(p) for p in _queue._table_payloads(mv, lengths)]
    receipts = BatchReceipt([Receipt(_RECEIPT(_U32(i), _ST)) for i in range(len(payloads))])
    items = []
    for data, r in zip(payloads, receipts):
        try:
            items.append(_decoded(q, data, r))
        except Exception as err:
            items.append(err)
    return items, receipts


def ack(q: "SageQueue", receipt: AnyReceipt) -> None:
    if type(receipt) is Receipt and _ACK(q._cid, _U64(receipt.value), _ST) == 1:
        return
    _settle(q, receipt, _fast.ack)


def nack(q: "SageQueue", receipt: AnyReceipt) -> None:
    _settle(q, receipt, _fast.nack)


def _settle(q: "SageQueue", receipt: AnyReceipt, call: Any) -> None:
    """Ack or nack every receipt given; StaleReceipt (after settling the rest) for the first
    one that is no longer valid."""
    if isinstance(receipt, Receipt):
        receipts = [receipt]
    elif isinstance(receipt, BatchReceipt):
        receipts = receipt.receipts
    else:
        raise TypeError(f"expected a Receipt or BatchReceipt, not {type(receipt).__name__}")
    first: Optional[BaseException] = None
    for r in receipts:
        if call(q._cid, _U64(r.value), _ST) == 1:
            continue
        try:
            _fast.raise_failure()
        except _NativeError as e:
            err = from_native(e, q.name)
            if not isinstance(err, StaleReceipt):
                raise err from None
            first = first or err
    if first is not None:
        raise first


# queue.py imports this module and uses its classes; its helpers (_waited, _sliced, the
# table readers) are looked up at call time, so this import comes last.
from . import queue as _queue  # noqa: E402
