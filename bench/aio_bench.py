"""asyncio consumers side by side: ``await q.get_async()``, ``run_in_executor(None, q.get)``
and ``ray.util.queue.Queue.get_async`` (skipped with one line when Ray is not installed).

    PYTHONPATH=python python3 bench/aio_bench.py [--items 200000] [--runs 3] [--no-ray]

Throughput: a producer process puts small dicts as fast as it can; one coroutine consumes
them; items/s from the first to the last item. Wake-up latency: the consumer awaits an empty
queue, the producer puts one item stamped with ``time.perf_counter()`` (CLOCK_MONOTONIC,
shared by processes) every 2 ms; latency = arrival - stamp, p50 and p99. The floor of any
fd-driven wake of this loop, measured the same way with no queue at all: the producer writes
its stamp to a pipe that an ``add_reader`` callback reads. Idle CPU: 1,000 coroutines await an
empty queue for 2 s; the process's CPU time over that time.
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import struct
import sys
import time
import uuid
from typing import Any, Dict, List

SMALL = {"id": 1, "data": [1, 2, 3], "meta": "SAGE", "score": 0.5}
CTX = mp.get_context("fork")


def _produce(name: str, n: int, pause: float) -> None:
    from sage_queue import SageQueue

    q = SageQueue(name)
    for _ in range(n):
        if pause:
            time.sleep(pause)
            q.put(time.perf_counter())
        else:
            q.put(SMALL)
    q.close()


def _sage(maxsize: int = 64 << 20) -> Any:
    from sage_queue import SageQueue

    return SageQueue(f"aio-bench-{uuid.uuid4().hex[:10]}", maxsize=maxsize)


def throughput(kind: str, n: int) -> float:
    q = _sage()
    p = CTX.Process(target=_produce, args=(q.name, n, 0.0))

    async def consume() -> float:
        loop = asyncio.get_running_loop()
        first = None
        for _ in range(n):
            if kind == "get_async":
                await q.get_async()
            else:
                await loop.run_in_executor(None, q.get)
            if first is None:
                first = time.perf_counter()
        assert first is not None
        return (n - 1) / (time.perf_counter() - first)

    p.start()
    rate = asyncio.run(consume())
    p.join()
    q.close()
    return rate


def _percentiles(lat: List[float]) -> Dict[str, float]:
    """p50 and p99 of sorted latencies in seconds, in microseconds."""
    return {"p50_us": lat[len(lat) // 2] * 1e6, "p99_us": lat[int(len(lat) * 0.99)] * 1e6}


def latency(kind: str, n: int) -> Dict[str, float]:
    q = _sage(1 << 20)
    p = CTX.Process(target=_produce, args=(q.name, n, 0.002))

    async def consume() -> List[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(n):
            if kind == "get_async":
                stamp = await q.get_async()
            else:
                stamp = await loop.run_in_executor(None, q.get)
            out.append(time.perf_counter() - stamp)
        return out

    p.start()
    lat = sorted(asyncio.run(consume()))
    p.join()
    q.close()
    return _percentiles(lat)


def _stamp_pipe(w: int, n: int) -> None:
    for _ in range(n):
        time.sleep(0.002)
        os.write(w, struct.pack("d", time.perf_counter()))


def pipe_floor(n: int) -> Dict[str, float]:
    """The wake of an idle loop by a pipe the producer writes (no queue): the floor under
    ``latency``."""
    r, w = os.pipe()
    p = CTX.Process(target=_stamp_pipe, args=(w, n))

    async def consume() -> List[float]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(n):
            fut = loop.create_future()
            loop.add_reader(r, lambda f=fut: f.done() or f.set_result(os.read(r, 8)))
            data = await fut
            loop.remove_reader(r)
            out.append(time.perf_counter() - struct.unpack("d", data)[0])
        return out

    p.start()
    lat = sorted(asyncio.run(consume()))
    p.join()
    os.close(r)
    os.close(w)
    return _percentiles(lat)


def idle_cpu(waiters: int = 1000, seconds: float = 2.0) -> float:
    """Fraction of one core used while ``waiters`` coroutines await an empty queue."""
    q = _sage(1 << 16)

    async def main() -> float:
        tasks = [asyncio.ensure_future(q.get_async()) for _ in range(waiters)]
        await asyncio.sleep(0.5)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(seconds)
        after = resource.getrusage(resource.RUSAGE_SELF)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return used / seconds

    share = asyncio.run(main())
    q.close()
    return share


def ray_queue(n: int) -> float:
    import ray
    from ray.util.queue import Queue

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        q = Queue()

        @ray.remote
        def produce(q: Any, n: int) -> None:
            for _ in range(n):
                q.put(SMALL)

        async def consume() -> float:
            first = None
            for _ in range(n):
                await q.get_async()
                if first is None:
                    first = time.perf_counter()
            assert first is not None
            return (n - 1) / (time.perf_counter() - first)

        done = produce.remote(q, n)
        rate = asyncio.run(consume())
        ray.get(done)
        return rate
    finally:
        ray.shutdown()


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args(argv)
    rows: Dict[str, List[float]] = {"get_async": [], "run_in_executor": []}
    lats: Dict[str, List[Dict[str, float]]] = {"get_async": [], "run_in_executor": []}
    floor: List[Dict[str, float]] = []
    for _ in range(a.runs):
        for kind in rows:
            rows[kind].append(throughput(kind, a.items if kind == "get_async" else a.items // 10))
            lats[kind].append(latency(kind, 500))
        floor.append(pipe_floor(500))
    ray_rate = None
    if not a.no_ray:
        try:
            ray_rate = ray_queue(2000)
        except ImportError:
            print("ray is not installed: ray.util.queue.Queue skipped")
    cpu = idle_cpu()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"median of {a.runs} runs, small dicts from a producer process to one coroutine:")
    print(f"{'consumer':<34}{'items/s':>12}{'wake p50 us':>14}{'wake p99 us':>14}")
    for kind in rows:
        p50 = statistics.median(x["p50_us"] for x in lats[kind])
        p99 = statistics.median(x["p99_us"] for x in lats[kind])
        print(f"{'SageQueue ' + kind:<34}{med[kind]:>12,.0f}{p50:>14.1f}{p99:>14.1f}")
    if ray_rate is not None:
        print(f"{'ray.util.queue.Queue get_async':<34}{ray_rate:>12,.0f}")
    p50, p99 = (statistics.median(x[k] for x in floor) for k in ("p50_us", "p99_us"))
    print(f"{'a pipe and add_reader (no queue)':<34}{'-':>12}{p50:>14.1f}{p99:>14.1f}")
    ratio = med["get_async"] / med["run_in_executor"]
    print(f"get_async / run_in_executor: {ratio:.1f}x")
    if ray_rate:
        print(f"get_async / ray.util.queue.Queue.get_async: {med['get_async'] / ray_rate:.0f}x")
    print(f"idle CPU, 1,000 coroutines awaiting an empty queue: {cpu * 100:.2f}% of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
