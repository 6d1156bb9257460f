"""Acknowledged gets (acks.py): ack, nack, the acked() block, batches, fencing of stale
receipts, the visibility timeout, max_deliveries with a dead-letter queue, mixed plain and
acked consumers, a ring that keeps flowing while a message stays unacknowledged, receipts
acked by another process, and redelivery after a holder's SIGKILL (a real child process),
with its latency bounded generously."""

import os
import pickle
import queue
import signal
import subprocess
import textwrap
import time

import pytest
import sq_helpers as h
from sage_queue import BatchReceipt, Receipt, SageQueue, StaleReceipt


def child(code: str, *args: str) -> subprocess.Popen:
    """A `python -c` child importing the same sage_queue (the wheel, or the source tree)."""
    return subprocess.Popen(
        [h.python(), "-c", textwrap.dedent(code), *args],
        env=h.child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_ack_removes_and_a_second_ack_is_refused(make_queue):
    q = make_queue(maxsize=4096)
    q.put({"job": 1})
    item, receipt = q.get_acked(timeout=1)
    assert item == {"job": 1} and receipt.deliveries == 1
    assert q.get_stats()["unacked"] == 1 and q.qsize() == 0
    q.ack(receipt)
    assert q.get_stats()["unacked"] == 0
    with pytest.raises(StaleReceipt):
        q.ack(receipt)
    with pytest.raises(queue.Empty):
        q.get_acked(block=False)
    with pytest.raises(TypeError):
        q.ack(42)


def test_nack_delivers_again_with_a_higher_count(make_queue):
    q = make_queue(maxsize=4096)
    q.put("again")
    _, first = q.get_acked()
    q.nack(first)
    assert q.qsize() == 1 and not q.empty()
    item, second = q.get_acked(timeout=1)
    assert (item, second.deliveries) == ("again", 2)
    with pytest.raises(StaleReceipt):
        q.ack(first)  # fenced: cannot remove the newer delivery
    with pytest.raises(StaleReceipt):
        q.nack(first)
    q.ack(second)
    assert q.get_stats()["redelivered"] == 1


def test_acked_block_acks_on_exit_and_nacks_on_error(make_queue):
    q = make_queue(maxsize=4096)
    q.put("ok")
    with q.acked(timeout=1) as item:
        assert item == "ok"
    assert q.get_stats()["unacked"] == 0 and q.qsize() == 0
    q.put("fails")
    with pytest.raises(ValueError):
        with q.acked(timeout=1):
            raise ValueError("processing failed")
    item, receipt = q.get_acked(timeout=1)
    assert (item, receipt.deliveries) == ("fails", 2)
    q.ack(receipt)


def test_batches_have_one_receipt(make_queue):
    q = make_queue(maxsize=1 << 16)
    q.put_many(list(range(10)))
    items, receipt = q.get_many_acked(max_messages_to_get=8)
    assert items == list(range(8)) and isinstance(receipt, BatchReceipt) and len(receipt) == 8
    assert q.get_stats()["unacked"] == 8
    q.ack(receipt)
    items, receipt = q.get_many_acked(timeout=1)
    assert items == [8, 9]
    q.nack(receipt)
    assert sorted(q.get_many(timeout=1)) == [8, 9]  # a plain get takes returned messages
    assert q.get_stats()["unacked"] == 0


def test_receipts_pickle_and_another_process_acks(make_queue):
    q = make_queue(maxsize=4096)
    q.put("shared")
    _, receipt = q.get_acked()
    data = pickle.dumps(receipt)
    assert pickle.loads(data) == receipt
    p = child(
        """
        import pickle, sys
        from sage_queue import SageQueue
        q = SageQueue(sys.argv[1], create=False)
        q.ack(pickle.loads(bytes.fromhex(sys.argv[2])))
        print("acked")
        """,
        q.name,
        data.hex(),
    )
    assert p.communicate(timeout=60)[0].strip() == "acked"
    assert q.get_stats()["unacked"] == 0
    with pytest.raises(StaleReceipt):
        q.ack(receipt)


def test_visibility_timeout_delivers_again(make_queue):
    q = make_queue(maxsize=4096)
    q.set_ack_policy(visibility_timeout=0.1)
    assert q.ack_policy()["visibility_timeout"] == pytest.approx(0.1)
    q.put("slow")
    _, first = q.get_acked()
    start = time.monotonic()
    item, second = q.get_acked(timeout=10)
    assert time.monotonic() - start >= 0.08
    assert (item, second.deliveries) == ("slow", 2)
    with pytest.raises(StaleReceipt):
        q.ack(first)
    q.ack(second)


def test_max_deliveries_goes_to_the_dead_letter_queue(make_queue):
    dlq = make_queue(maxsize=4096)
    q = make_queue(maxsize=4096)
    q.set_ack_policy(max_deliveries=3, dead_letter=dlq.name)
    q.put("poison")
    for n in (1, 2, 3):
        item, receipt = q.get_acked(timeout=1)
        assert receipt.deliveries == n
        q.nack(receipt)
    with pytest.raises(queue.Empty):
        q.get_acked(timeout=0.05)
    assert dlq.get(timeout=1) == "poison"
    assert q.get_stats()["dead_lettered"] == 1
    q.set_ack_policy(max_deliveries=1)
    q.put("dropped")
    _, receipt = q.get_acked()
    q.nack(receipt)
    assert q.empty() and q.get_stats()["ack_dropped"] == 1
    with pytest.raises(ValueError):
        q.set_ack_policy(visibility_timeout=-1)


def test_the_queue_flows_while_a_message_is_unacknowledged(make_queue):
    q = make_queue(maxsize=4096, serializer="raw")
    q.put(b"held")
    held, receipt = q.get_acked()
    body = bytes(1000)
    # 100 ring-fulls from another process through the same 4 KiB ring.
    p = child(
        """
        import sys
        from sage_queue import SageQueue
        q = SageQueue(sys.argv[1], create=False, serializer="raw")
        for _ in range(400):
            q.put(bytes(1000), timeout=30)
        """,
        q.name,
    )
    for i in range(400):
        if i % 2:
            assert q.get(timeout=30) == body
        else:
            with q.acked(timeout=30) as item:
                assert item == body
    assert p.wait(timeout=60) == 0
    q.ack(receipt)
    assert held == b"held" and q.get_stats()["unacked"] == 0


def test_a_killed_holders_message_is_delivered_again_quickly(make_queue):
    q = make_queue(maxsize=4096)
    latencies = []
    for round in range(5):
        q.put({"round": round})
        p = child(
            """
            import sys, time
            from sage_queue import SageQueue
            q = SageQueue(sys.argv[1], create=False)
            item, receipt = q.get_acked(timeout=30)
            print("holding", flush=True)
            time.sleep(60)
            """,
            q.name,
        )
        assert p.stdout.readline().strip() == "holding"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        killed = time.monotonic()
        item, receipt = q.get_acked(timeout=10)
        latencies.append(time.monotonic() - killed)
        assert (item, receipt.deliveries) == ({"round": round}, 2)
        q.ack(receipt)
    stats = q.get_stats()
    assert (stats["unacked"], stats["lost"], stats["redelivered"]) == (0, 0, 5)
    assert max(latencies) < 2.0, latencies  # generous: typically 10-30 ms


def test_closing_a_handle_returns_what_it_held(make_queue, qname):
    q = make_queue(qname, maxsize=4096)
    other = SageQueue(qname, create=False)
    q.put("orphan")
    _, receipt = other.get_acked()
    other.close()
    item, again = q.get_acked(timeout=1)
    assert (item, again.deliveries) == ("orphan", 2)
    q.ack(again)


def test_receipt_repr_and_types():
    r = Receipt(3 | (2 << 16) | (7 << 32))
    assert r.deliveries == 2 and "deliveries=2" in repr(r)
    assert BatchReceipt([r]).deliveries == 2


def test_get_acked_async_wakes_for_returned_messages(make_queue):
    import asyncio
    import threading

    q = make_queue(maxsize=4096)
    q.put("first")
    _, receipt = q.get_acked()

    async def main():
        # A nack from another thread wakes the waiting coroutine at once.
        threading.Timer(0.2, q.nack, (receipt,)).start()
        start = time.monotonic()
        item, again = await q.get_acked_async(timeout=10)
        assert (item, again.deliveries) == ("first", 2)
        assert time.monotonic() - start < 5
        # A delivery that times out while the coroutine waits is delivered to it.
        q.set_ack_policy(visibility_timeout=0.3)
        q.put("second")
        _, held = q.get_acked()
        item, late = await q.get_acked_async(timeout=10)
        assert (item, late.deliveries) == ("second", 2)
        q.ack(late)
        q.ack(again)
        with pytest.raises(StaleReceipt):
            q.ack(held)
        with pytest.raises(queue.Empty):
            await q.get_acked_async(timeout=0.05)

    asyncio.run(main())


def test_receipts_of_another_queue_are_refused(make_queue):
    a, b = make_queue(maxsize=4096), make_queue(maxsize=4096)
    a.put("A")
    b.put("B")
    _, ra = a.get_acked()
    _, rb = b.get_acked()
    with pytest.raises(StaleReceipt):
        b.ack(ra)
    b.ack(rb)
    a.ack(ra)
