"""A pipeline over two Ray nodes: a source on node A feeds map actors on node B, which feed a
sink on node A, through two SageQueues that live on node A.

    node A: source --[raw]--------------------------------> (bridge of B) --> map 0, map 1
    node A: sink   <--[mapped]-- (bridge of B) <-------------------------------- map 0, map 1

The source and the sink use the queues by shared memory; the map actors on node B get
remote handles with the same API, whose items cross between the nodes in batches through
Ray. Without ``--address`` the example starts a simulated cluster of two Ray nodes on this
machine, each with its own queue folder, so they cannot share memory, as two machines.

    python3 examples/ray_cluster_pipeline.py [--address ADDR] [--items 100000] [--batch 256]
    (PYTHONPATH=python for a source tree built with tests/dev_build.sh)
"""

import argparse
import contextlib
import time
import uuid
from typing import Any, Dict, Iterator, List

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sage_queue import SageQueue
from sage_queue.ray import simulated_cluster

STOP = None  # end of stream: one per consumer


@ray.remote
class Source:
    def __init__(self, out: SageQueue):
        self.out = out

    def run(self, count: int, batch: int, consumers: int) -> int:
        for start in range(0, count, batch):
            items = [{"id": i, "text": f"item number {i}"} for i in range(start, start + batch)]
            self.out.put_many(items[: count - start])
        for _ in range(consumers):
            self.out.put(STOP)
        return count


@ray.remote
class Mapper:
    def __init__(self, inq: SageQueue, outq: SageQueue):
        self.inq, self.outq = inq, outq  # remote handles on node B

    def kind(self) -> str:
        return type(self.inq).__name__

    def run(self, batch: int) -> int:
        done = 0
        while True:
            items = self.inq.get_many(max_items=batch)
            data = [
                {"id": it["id"], "upper": it["text"].upper()} for it in items if it is not STOP
            ]
            if data:
                self.outq.put_many(data)
            done += len(data)
            stops = sum(1 for it in items if it is STOP)
            if stops:  # sentinels come after every item; give back any beyond our own
                for _ in range(stops - 1):
                    self.inq.put(STOP)
                self.outq.put(STOP)
                return done


@ray.remote
class Sink:
    def __init__(self, inq: SageQueue):
        self.inq = inq

    def run(self, producers: int, batch: int) -> Dict[str, int]:
        count, id_sum = 0, 0
        while producers:
            for item in self.inq.get_many(max_items=batch):
                if item is STOP:
                    producers -= 1
                else:
                    count += 1
                    id_sum += item["id"]
        return {"count": count, "id_sum": id_sum}


@contextlib.contextmanager
def two_nodes(address: str) -> Iterator[List[Dict[str, Any]]]:
    """Scheduling options for node A (this driver's) and node B (another one)."""
    if not address:
        with simulated_cluster(nodes=2) as sim:
            yield [sim.on(0), sim.on(1)]
        return
    ray.init(address=address)
    try:
        here = ray.get_runtime_context().get_node_id()
        others = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
        if not others:
            raise SystemExit("the cluster has one node; run without --address to simulate two")
        yield [
            {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}
            for node in (here, others[0])
        ]
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--address", default="", help="a Ray cluster (default: simulate one)")
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=256, help="items per put_many/get_many")
    ap.add_argument("--mappers", type=int, default=2)
    args = ap.parse_args()

    with two_nodes(args.address) as (node_a, node_b):
        tag = uuid.uuid4().hex[:8]
        raw = SageQueue(f"cluster-raw-{tag}", maxsize=4 << 20)
        mapped = SageQueue(f"cluster-mapped-{tag}", maxsize=4 << 20)
        try:
            source = Source.options(**node_a).remote(raw)
            mappers = [
                Mapper.options(**node_b).remote(raw, mapped) for _ in range(args.mappers)
            ]
            sink = Sink.options(**node_a).remote(mapped)
            kinds = ray.get([m.kind.remote() for m in mappers])
            print(f"map actors on node B hold: {kinds}")

            start = time.perf_counter()
            result = sink.run.remote(producers=len(mappers), batch=args.batch)
            per_mapper = [m.run.remote(args.batch) for m in mappers]
            ray.get(source.run.remote(args.items, args.batch, consumers=len(mappers)))
            totals = ray.get(result)
            elapsed = time.perf_counter() - start

            n = args.items
            assert totals == {"count": n, "id_sum": n * (n - 1) // 2}, totals
            print(f"items per map actor: {ray.get(per_mapper)}")
            print(
                f"{n} items A -> B -> A in {elapsed:.3f} s: {n / elapsed:,.0f} items/s "
                f"(batch {args.batch})"
            )
        finally:
            raw.destroy()
            mapped.destroy()


if __name__ == "__main__":
    main()
