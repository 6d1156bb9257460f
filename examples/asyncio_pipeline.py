"""asyncio with sage-queue: an async producer, async consumers, and an async Ray actor.

    python3 examples/asyncio_pipeline.py          # asyncio only (another process produces)
    python3 examples/asyncio_pipeline.py --ray    # also an async Ray actor awaiting the queue

A coroutine awaits ``q.get_async()`` / ``q.put_async()`` without blocking its event loop and
without a thread per waiter; cancelling one (``asyncio.wait_for`` timing out) never loses a
message. ``async for item in q.iter_async(sentinel=None)`` ends at the sentinel.
"""

import argparse
import asyncio
import multiprocessing as mp
import uuid

from sage_queue import SageQueue

N = 1000


def producer(name: str) -> None:
    q = SageQueue(name)
    for i in range(N):
        q.put({"id": i, "text": f"doc {i}"})
    for _ in range(2):
        q.put(None)  # one sentinel per consumer
    q.close()


async def consumer(q: SageQueue, label: str) -> int:
    seen = 0
    async for item in q.iter_async(sentinel=None):
        seen += 1
        await asyncio.sleep(0)  # the work on an item: other coroutines run meanwhile
        if item["id"] % 250 == 0:
            print(f"{label} got {item['id']}")
    return seen


async def main(name: str) -> None:
    q = SageQueue(name, maxsize=1 << 20)
    proc = mp.get_context("spawn").Process(target=producer, args=(name,))
    proc.start()
    counts = await asyncio.gather(consumer(q, "consumer A"), consumer(q, "consumer B"))
    proc.join()
    print(f"received {sum(counts)} items ({counts[0]} + {counts[1]})")
    try:
        await asyncio.wait_for(q.get_async(), timeout=0.1)  # cancelled: loses nothing
    except asyncio.TimeoutError:
        print("an empty queue: the await timed out and was cancelled cleanly")
    q.close()


def with_ray(name: str) -> None:
    import ray

    @ray.remote
    class AsyncSink:
        def __init__(self, q: SageQueue) -> None:
            self.q = q

        async def drain(self, n: int) -> int:
            return len([await self.q.get_async(timeout=60) for _ in range(n)])

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        q = SageQueue(name + "-ray", maxsize=1 << 20)
        sink = AsyncSink.remote(q)
        done = sink.drain.remote(N)

        async def feed() -> None:
            for i in range(N):
                await q.put_async(i)

        asyncio.run(feed())
        print(f"the async Ray actor received {ray.get(done, timeout=120)} items")
        q.close()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--ray", action="store_true", help="also run an async Ray actor")
    args = ap.parse_args()
    queue_name = f"aio-example-{uuid.uuid4().hex[:8]}"
    asyncio.run(main(queue_name))
    if args.ray:
        with_ray(queue_name)
