"""The public API of sage_queue in fully typed code; CI checks it with ``mypy --strict``
against the installed wheel, and it runs as it is:

    python3 examples/typed_usage.py
    (PYTHONPATH=python for a source tree built with tests/dev_build.sh)
"""

import queue
import uuid
from typing import Any, Dict, List

import sage_queue
from sage_queue import (
    MessageTooLarge,
    QueueClosed,
    SageQueue,
    SageQueueRef,
    destroy_queue,
    list_all_sage_queues,
)


def put_and_get(q: SageQueue) -> None:
    q.put({"id": 1, "tags": ["a", "b"]}, timeout=1.0)
    item: Any = q.get(timeout=1.0)
    assert item == {"id": 1, "tags": ["a", "b"]}
    q.task_done()  # join() waits until every item put was marked done
    q.put_nowait("no wait")
    assert q.get_nowait() == "no wait"
    q.task_done()
    try:
        q.get(timeout=0.01)
    except queue.Empty:  # sage_queue.Empty is the same class
        pass
    else:
        raise AssertionError("an empty queue returned an item")


def batches(q: SageQueue) -> None:
    q.put_many([1, 2, 3], timeout=1.0)
    size: int = q.qsize()
    assert size == 3 and not q.empty() and not q.full()
    got: List[Any] = q.get_many(max_items=10, timeout=1.0)
    assert got == [1, 2, 3]
    for _ in got:
        q.task_done()


def tasks(q: SageQueue) -> None:
    q.put("job")
    assert not q.join(timeout=0.01)  # "job" is not done yet
    q.get()
    q.task_done()
    finished: bool = q.join(timeout=1.0)
    assert finished


def statistics(q: SageQueue) -> Dict[str, Any]:
    stats: Dict[str, Any] = q.get_stats()
    messages: int = stats["messages"]
    assert messages == q.qsize()
    return stats


def reference(q: SageQueue) -> None:
    ref: SageQueueRef = q.get_reference()
    name: str = ref.full_name
    with ref.get_queue() as other:  # a second handle on the same queue
        other.put(name)
        assert q.get(timeout=1.0) == name
        q.task_done()


def limits(name: str) -> None:
    with SageQueue(name, maxsize=4096, create=True) as small:
        try:
            small.put(b"x" * (small.max_message_size + 1))
        except MessageTooLarge as e:  # also a ValueError
            too_big: int = e.size
            assert too_big > e.max_size
        filled = 0
        try:
            while True:
                small.put_nowait(b"x" * 512)
                filled += 1
        except queue.Full:  # sage_queue.Full is the same class
            assert filled > 0
    try:
        small.put(b"late")
    except QueueClosed as e:  # also a RuntimeError
        assert e.name == name
    else:
        raise AssertionError("a closed handle accepted an item")


def main() -> int:
    name = f"typed-{uuid.uuid4().hex[:12]}"
    with SageQueue(name, maxsize=1 << 16, auto_cleanup=False) as q:
        put_and_get(q)
        batches(q)
        tasks(q)
        statistics(q)
        reference(q)
        names: List[str] = [info["name"] for info in list_all_sage_queues()]
        assert q.name in names
    removed: bool = destroy_queue(name)  # auto_cleanup=False kept it after close
    assert removed and not destroy_queue(name)
    limits(f"{name}-small")
    print(f"sage-queue: the typed example ran, queues in {sage_queue.queue_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
