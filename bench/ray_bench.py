"""The Ray pipeline of examples/ray_pipeline.py (source actor -> two map actors -> sink
actor) through SageQueue and through ray.util.queue.Queue, with the same actor code; prints
the throughput of each and their ratio.

    python3 bench/ray_bench.py                  # per-item put/get, then batches of 256
    python3 bench/ray_bench.py --batch 1 --sage-items 100000 --ray-items 5000

(PYTHONPATH=python for a source tree built with tests/dev_build.sh.) ray.util.queue.Queue is
an actor: every put and get is a remote call to it. Its queue is unbounded here; the
SageQueues have a ring of --ring-mb MiB each. Items are small dicts (about 100 bytes pickled).
"""

import argparse
import os
import platform
import time
import uuid

import ray
from ray.util.queue import Empty as RayEmpty
from ray.util.queue import Queue as RayQueue
from sage_queue import SageQueue
from sage_queue.ray import colocate, runtime_env

STOP = None


class Ops:
    """put/get and batch put/get over either queue kind (the actors use only this)."""

    def __init__(self, q):
        self.q = q
        self.sage = isinstance(q, SageQueue)

    def put(self, item) -> None:
        self.q.put(item)

    def get(self):
        return self.q.get()

    def put_batch(self, items: list) -> None:
        if self.sage:
            self.q.put_many(items)
        else:
            self.q.put_nowait_batch(items)  # unbounded: never Full

    def get_batch(self, k: int) -> list:
        if self.sage:
            return self.q.get_many(max_items=k)
        # Ray's queue has no blocking batch get: take k if there are k, else what is there,
        # else wait for one.
        try:
            return self.q.get_nowait_batch(k)
        except RayEmpty:
            pass
        n = self.q.qsize()
        if n:
            try:
                return self.q.get_nowait_batch(min(n, k))
            except RayEmpty:
                pass
        return [self.q.get()]


def make_item(i: int) -> dict:
    return {"id": i, "text": f"item number {i}", "score": i * 0.5}


@ray.remote
class Source:
    def __init__(self, out):
        self.out = Ops(out)

    def run(self, count: int, batch: int, consumers: int) -> int:
        for start in range(0, count, batch):
            items = [make_item(i) for i in range(start, min(start + batch, count))]
            if batch == 1:
                self.out.put(items[0])
            else:
                self.out.put_batch(items)
        for _ in range(consumers):
            self.out.put(STOP)
        return count


@ray.remote
class Mapper:
    def __init__(self, inq, outq):
        self.inq, self.outq = Ops(inq), Ops(outq)

    def run(self, batch: int) -> int:
        done = 0
        while True:
            items = [self.inq.get()] if batch == 1 else self.inq.get_batch(batch)
            stops = sum(1 for it in items if it is STOP)
            data = [
                {"id": it["id"], "upper": it["text"].upper(), "score": it["score"] * 2}
                for it in items
                if it is not STOP
            ]
            if len(data) == 1:
                self.outq.put(data[0])
            elif data:
                self.outq.put_batch(data)
            done += len(data)
            if stops:
                for _ in range(stops - 1):  # sentinels taken beyond our own go back
                    self.inq.put(STOP)
                self.outq.put(STOP)
                return done


@ray.remote
class Sink:
    def __init__(self, inq):
        self.inq = Ops(inq)

    def run(self, producers: int, batch: int) -> tuple:
        count, id_sum = 0, 0
        while producers:
            for item in [self.inq.get()] if batch == 1 else self.inq.get_batch(batch):
                if item is STOP:
                    producers -= 1
                else:
                    count += 1
                    id_sum += item["id"]
        return count, id_sum


def run_pipeline(raw, mapped, items: int, batch: int, near: dict) -> float:
    """One run; returns items per second (source start to sink done)."""
    source = Source.options(**near).remote(raw)
    mappers = [Mapper.options(**near).remote(raw, mapped) for _ in range(2)]
    sink = Sink.options(**near).remote(mapped)
    actors = [source, sink, *mappers]
    ray.get([a.__ray_ready__.remote() for a in actors])
    start = time.perf_counter()
    result = sink.run.remote(len(mappers), batch)
    runs = [m.run.remote(batch) for m in mappers]
    sent = source.run.remote(items, batch, len(mappers))
    count, id_sum = ray.get(result)
    elapsed = time.perf_counter() - start
    ray.get([sent, *runs])
    if (count, id_sum) != (items, items * (items - 1) // 2):
        raise AssertionError(f"pipeline lost or duplicated items: {count} of {items}")
    for a in actors:
        ray.kill(a)
    return items / elapsed


def sage_run(items: int, batch: int, ring_mb: int) -> float:
    tag = uuid.uuid4().hex[:8]
    raw = SageQueue(f"raybench-raw-{tag}", maxsize=ring_mb << 20)
    mapped = SageQueue(f"raybench-mapped-{tag}", maxsize=ring_mb << 20)
    try:
        return run_pipeline(raw, mapped, items, batch, colocate(raw))
    finally:
        raw.destroy()
        mapped.destroy()


def ray_run(items: int, batch: int) -> float:
    raw = RayQueue(actor_options={"num_cpus": 0})
    mapped = RayQueue(actor_options={"num_cpus": 0})
    try:
        return run_pipeline(raw, mapped, items, batch, {})
    finally:
        raw.shutdown()
        mapped.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--batch", type=int, action="append", help="items per batch call; 1 = put/get (repeatable)"
    )
    ap.add_argument("--sage-items", type=int, default=100_000)
    ap.add_argument("--ray-items", type=int, default=4_000, help="items per-item through Ray")
    ap.add_argument("--ray-batch-items", type=int, default=50_000, help="items in batch runs")
    ap.add_argument("--ring-mb", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best counts")
    args = ap.parse_args()
    batches = args.batch or [1, 256]

    ray.init(include_dashboard=False, runtime_env=runtime_env(), log_to_driver=False)
    print(
        f"Ray {ray.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        "pipeline: source -> 2 map actors -> sink (best of "
        f"{args.repeat})"
    )
    print(f"{'batch':>6} {'SageQueue items/s':>18} {'ray Queue items/s':>18} {'ratio':>7}")
    try:
        for batch in batches:
            ray_items = args.ray_items if batch == 1 else args.ray_batch_items
            sage = max(sage_run(args.sage_items, batch, args.ring_mb) for _ in range(args.repeat))
            rq = max(ray_run(ray_items, batch) for _ in range(args.repeat))
            print(f"{batch:>6} {sage:>18,.0f} {rq:>18,.0f} {sage / rq:>6.0f}x")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
