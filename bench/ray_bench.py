"""The Ray pipeline of examples/ray_pipeline.py (source actor -> two map actors -> sink
actor) through SageQueue and through ray.util.queue.Queue, with the same actor code; prints
the throughput of each and their ratio.

    python3 bench/ray_bench.py                  # per-item put/get, then batches of 256
    python3 bench/ray_bench.py --batch 1 --sage-items 100000 --ray-items 5000
    python3 bench/ray_bench.py --cluster        # across two Ray nodes (simulated cluster)

(PYTHONPATH=python for a source tree built with tests/dev_build.sh.) ray.util.queue.Queue is
an actor: every put and get is a remote call to it. Its queue is unbounded here; the
SageQueues have a ring of --ring-mb MiB each. Items are small dicts (about 100 bytes pickled).

``--cluster`` starts two Ray nodes on this machine, each with its own queue folder (so they
share no memory, as two machines), puts the source and the sink on node A and the map
actors on node B, and compares, side by side in one run (median of --runs): SageQueues
living on node A (the map actors reach them through Ray), ray.util.queue.Queue, and
ObjectRefs passed directly (each batch is one map actor call whose result the sink gets:
the idiomatic Ray way); then 1 KiB items in batches across the nodes against the same
pipeline on one node, and the RSS of every process over --rss-items items.
"""

import argparse
import os
import platform
import statistics
import time
import uuid
from typing import Optional

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
        self.sage = not isinstance(q, RayQueue)  # a SageQueue or a RemoteSageQueue

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


def make_item(i: int, pad: int = 0) -> dict:
    item = {"id": i, "text": f"item number {i}", "score": i * 0.5}
    if pad:
        item["pad"] = "x" * pad
    return item


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@ray.remote
class Source:
    def __init__(self, out):
        self.out = Ops(out)

    def pid(self) -> int:
        return os.getpid()

    def run(self, count: int, batch: int, consumers: int, pad: int = 0) -> int:
        for start in range(0, count, batch):
            items = [make_item(i, pad) for i in range(start, min(start + batch, count))]
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

    def pid(self) -> int:
        return os.getpid()

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

    def pid(self) -> int:
        return os.getpid()

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


def run_pipeline(
    raw, mapped, items: int, batch: int, near: dict, far: Optional[dict] = None, pad: int = 0
) -> float:
    """One run; returns items per second (source start to sink done). The source and sink
    go ``near``, the map actors ``far`` (default: near too)."""
    source = Source.options(**near).remote(raw)
    mappers = [Mapper.options(**(far or near)).remote(raw, mapped) for _ in range(2)]
    sink = Sink.options(**near).remote(mapped)
    actors = [source, sink, *mappers]
    ray.get([a.__ray_ready__.remote() for a in actors])
    start = time.perf_counter()
    result = sink.run.remote(len(mappers), batch)
    runs = [m.run.remote(batch) for m in mappers]
    sent = source.run.remote(items, batch, len(mappers), pad)
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
    ap.add_argument("--cluster", action="store_true", help="across two Ray nodes (simulated)")
    ap.add_argument("--runs", type=int, default=3, help="--cluster: runs of each (median)")
    ap.add_argument("--rss-items", type=int, default=1_000_000, help="--cluster: RSS run")
    args = ap.parse_args()
    if args.cluster:
        cluster_main(args)
        return
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


# ---- across two nodes (--cluster) ----


@ray.remote
class RefMapper:
    """The map step as an actor method: each call maps one batch."""

    def map(self, items: list) -> list:
        return [
            {"id": it["id"], "upper": it["text"].upper(), "score": it["score"] * 2}
            for it in items
        ]


@ray.remote
class RefSink:
    def __init__(self):
        self.count, self.id_sum = 0, 0

    def take(self, items: list) -> None:  # Ray resolved the ObjectRef passed in
        self.count += len(items)
        self.id_sum += sum(it["id"] for it in items)

    def totals(self) -> tuple:
        return self.count, self.id_sum


@ray.remote
class RefSource:
    def run(self, count: int, batch: int, mappers: list, sink) -> int:
        pending = []
        for n, start in enumerate(range(0, count, batch)):
            items = [make_item(i) for i in range(start, min(start + batch, count))]
            mapped = mappers[n % len(mappers)].map.remote(items)
            pending.append(sink.take.remote(mapped))  # the ObjectRef goes to the sink
            if len(pending) >= 64:  # keep a bounded number of batches in flight
                ray.get(pending[:32])
                del pending[:32]
        ray.get(pending)
        return count


def objectref_run(items: int, batch: int, near: dict, far: dict) -> float:
    mappers = [RefMapper.options(**far).remote() for _ in range(2)]
    sink = RefSink.options(**near).remote()
    source = RefSource.options(**near).remote()
    actors = [source, sink, *mappers]
    ray.get([a.__ray_ready__.remote() for a in actors])
    start = time.perf_counter()
    ray.get(source.run.remote(items, batch, mappers, sink))
    count, id_sum = ray.get(sink.totals.remote())
    elapsed = time.perf_counter() - start
    if (count, id_sum) != (items, items * (items - 1) // 2):
        raise AssertionError(f"lost or duplicated items: {count} of {items}")
    for a in actors:
        ray.kill(a)
    return items / elapsed


def sage_cluster_run(
    items: int, batch: int, ring_mb: int, near: dict, far: dict, pad: int = 0
) -> float:
    tag = uuid.uuid4().hex[:8]
    raw = SageQueue(f"raybench-raw-{tag}", maxsize=ring_mb << 20)
    mapped = SageQueue(f"raybench-mapped-{tag}", maxsize=ring_mb << 20)
    try:
        return run_pipeline(raw, mapped, items, batch, near, far, pad)
    finally:
        raw.destroy()
        mapped.destroy()


def bridge_pids() -> list:
    from sage_queue.remote import RAY_NAMESPACE

    pids = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == RAY_NAMESPACE and entry["name"].startswith("sage_queue.bridge"):
            actor = ray.get_actor(entry["name"], namespace=RAY_NAMESPACE)
            pids.extend(ray.get(actor.pids.remote()))
    return pids


def cluster_main(args) -> None:
    from sage_queue.ray import simulated_cluster

    runs = args.runs
    with simulated_cluster(nodes=2) as sim:
        near, far = sim.on(0), sim.on(1)
        print(
            f"Ray {ray.__version__}, Python {platform.python_version()}, {os.cpu_count()} "
            f"CPUs; simulated cluster of 2 nodes, own queue folders; source and sink on node "
            f"A, 2 map actors on node B; median of {runs}"
        )
        rows = []
        for batch in (1, 256):
            ray_items = args.ray_items if batch == 1 else args.ray_batch_items
            sage = statistics.median(
                sage_cluster_run(args.sage_items, batch, args.ring_mb, near, far)
                for _ in range(runs)
            )
            rq = statistics.median(
                ray_cluster_run(ray_items, batch, near, far) for _ in range(runs)
            )
            refs = statistics.median(
                objectref_run(ray_items if batch == 1 else args.sage_items, batch, near, far)
                for _ in range(runs)
            )
            rows.append((batch, sage, rq, refs))
        print(
            f"{'batch':>6} {'SageQueue A->B->A':>18} {'ray Queue':>12} {'ratio':>7} "
            f"{'ObjectRefs':>12} {'ratio':>7}   (items/s)"
        )
        for batch, sage, rq, refs in rows:
            print(
                f"{batch:>6} {sage:>18,.0f} {rq:>12,.0f} {sage / rq:>6.0f}x "
                f"{refs:>12,.0f} {sage / refs:>6.1f}x"
            )
        kib = 1024
        cross = statistics.median(
            sage_cluster_run(args.sage_items, 256, args.ring_mb, near, far, kib)
            for _ in range(runs)
        )
        local = statistics.median(
            sage_cluster_run(args.sage_items, 256, args.ring_mb, near, near, kib)
            for _ in range(runs)
        )
        print(
            f"1 KiB items, batches of 256: across nodes {cross:,.0f} items/s, one node "
            f"{local:,.0f} items/s: single-node / cross-node = {local / cross:.2f}x"
        )
        # RSS of every process of one long cross-node run: after its first 10% and at its end.
        grew = rss_run(args.rss_items, args.ring_mb, near, far)
        print(
            f"RSS over {args.rss_items:,} items across nodes, growth from 10% of the items to "
            f"50% / to 100%, MiB, {len(grew)} processes (source, sink, 2 maps, bridges and "
            "gateways): " + ", ".join(f"{a / 1024:+.1f}/{b / 1024:+.1f}" for a, b in grew.values())
        )


def rss_run(items: int, ring_mb: int, near: dict, far: dict) -> dict:
    """The cross-node pipeline over ``items`` items (batches of 256), sampling the RSS of
    every process of it once a tenth of the items reached the sink, at half of them and at
    the end; returns {pid: (growth to half, growth to the end)} in KiB."""
    tag = uuid.uuid4().hex[:8]
    raw = SageQueue(f"raybench-rss-raw-{tag}", maxsize=ring_mb << 20)
    mapped = SageQueue(f"raybench-rss-mapped-{tag}", maxsize=ring_mb << 20)
    source = Source.options(**near).remote(raw)
    mappers = [Mapper.options(**far).remote(raw, mapped) for _ in range(2)]
    sink = Sink.options(**near).remote(mapped)
    actors = [source, sink, *mappers]
    try:
        pids = ray.get([a.pid.remote() for a in actors])
        result = sink.run.remote(len(mappers), 256)
        runs = [m.run.remote(256) for m in mappers]
        sent = source.run.remote(items, 256, len(mappers))
        while mapped.get_stats()["msgs_out"] < items // 10:
            time.sleep(0.05)
        everyone = pids + bridge_pids()
        first = {p: rss_kib(p) for p in everyone}
        while mapped.get_stats()["msgs_out"] < items // 2:
            time.sleep(0.05)
        half = {p: rss_kib(p) for p in everyone}
        count, _ = ray.get(result)
        end = {p: rss_kib(p) for p in everyone}
        ray.get([sent, *runs])
        if count != items:
            raise AssertionError(f"lost or duplicated items: {count} of {items}")
        return {p: (half[p] - first[p], end[p] - first[p]) for p in everyone}
    finally:
        for a in actors:
            ray.kill(a)
        raw.destroy()
        mapped.destroy()


def ray_cluster_run(items: int, batch: int, near: dict, far: dict) -> float:
    raw = RayQueue(actor_options={"num_cpus": 0, **near})
    mapped = RayQueue(actor_options={"num_cpus": 0, **near})
    try:
        return run_pipeline(raw, mapped, items, batch, near, far)
    finally:
        raw.shutdown()
        mapped.shutdown()


if __name__ == "__main__":
    main()
