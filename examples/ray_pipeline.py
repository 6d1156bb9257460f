"""A Ray pipeline over SageQueues: a source actor feeds two map actors, which feed a sink.

    source --[raw]--> map 0 --\\
                  \\--> map 1 ---[mapped]--> sink

Every actor runs in its own Ray worker process and attaches to the queues it is given (a
SageQueue pickles as its reference). The actors are placed on the node that holds the
queues' shared memory with ``sage_queue.ray.colocate``, which matters on a multi-node
cluster: a queue is node-local.

    python3 examples/ray_pipeline.py [--items 200000] [--batch 256] [--ring-mb 4]
    (PYTHONPATH=python for a source tree built with tests/dev_build.sh)
"""

import argparse
import time
import uuid

import ray
from sage_queue import SageQueue
from sage_queue.ray import colocate, runtime_env

STOP = None  # end of stream: one per consumer


@ray.remote
class Source:
    def __init__(self, out: SageQueue):
        self.out = out  # attached when Ray builds the actor

    def run(self, count: int, batch: int, consumers: int) -> int:
        for start in range(0, count, batch):
            stop = min(start + batch, count)
            items = [{"id": i, "text": f"item number {i}"} for i in range(start, stop)]
            if batch == 1:
                self.out.put(items[0])
            else:
                self.out.put_many(items)
        for _ in range(consumers):
            self.out.put(STOP)
        return count


@ray.remote
class Mapper:
    def __init__(self, inq: SageQueue, outq: SageQueue):
        self.inq, self.outq = inq, outq

    @staticmethod
    def transform(item: dict) -> dict:
        text = item["text"]
        return {"id": item["id"], "words": len(text.split()), "upper": text.upper()}

    def run(self, batch: int) -> int:
        done = 0
        while True:
            items = [self.inq.get()] if batch == 1 else self.inq.get_many(max_items=batch)
            stops = sum(1 for it in items if it is STOP)
            data = [self.transform(it) for it in items if it is not STOP]
            if len(data) == 1:
                self.outq.put(data[0])
            elif data:
                self.outq.put_many(data)
            done += len(data)
            if stops:
                # Sentinels come after every item; give back any taken beyond our own one.
                for _ in range(stops - 1):
                    self.inq.put(STOP)
                self.outq.put(STOP)
                return done


@ray.remote
class Sink:
    def __init__(self, inq: SageQueue):
        self.inq = inq

    def run(self, producers: int, batch: int) -> dict:
        count, id_sum = 0, 0
        while producers:
            for item in [self.inq.get()] if batch == 1 else self.inq.get_many(max_items=batch):
                if item is STOP:
                    producers -= 1
                else:
                    count += 1
                    id_sum += item["id"]
        return {"count": count, "id_sum": id_sum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument(
        "--batch", type=int, default=256, help="items per put_many/get_many (1: put/get)"
    )
    ap.add_argument("--ring-mb", type=int, default=4, help="ring size of each queue in MiB")
    args = ap.parse_args()

    # runtime_env(): the workers look for queues where this process does ($SAGE_QUEUE_DIR)
    ray.init(include_dashboard=False, runtime_env=runtime_env())
    tag = uuid.uuid4().hex[:8]
    raw = SageQueue(f"pipeline-raw-{tag}", maxsize=args.ring_mb << 20)
    mapped = SageQueue(f"pipeline-mapped-{tag}", maxsize=args.ring_mb << 20)
    try:
        near = colocate(raw)  # scheduling options: the node that holds the queues
        source = Source.options(**near).remote(raw)
        mappers = [Mapper.options(**near).remote(raw, mapped) for _ in range(2)]
        sink = Sink.options(**near).remote(mapped)
        ray.get([a.__ray_ready__.remote() for a in (source, sink, *mappers)])
        attached = [q.get_stats()["attached"] for q in (raw, mapped)]
        print(f"handles attached to the two queues: {attached}")

        start = time.perf_counter()
        result = sink.run.remote(producers=len(mappers), batch=args.batch)
        per_mapper = [m.run.remote(args.batch) for m in mappers]
        sent = source.run.remote(args.items, args.batch, consumers=len(mappers))
        totals = ray.get(result)
        elapsed = time.perf_counter() - start
        ray.get(sent)

        n = args.items
        assert totals == {"count": n, "id_sum": n * (n - 1) // 2}, totals
        print(f"items per map actor: {ray.get(per_mapper)}")
        print(
            f"{n} items through source -> 2 maps -> sink in {elapsed:.3f} s: "
            f"{n / elapsed:,.0f} items/s (batch {args.batch})"
        )
    finally:
        raw.destroy()
        mapped.destroy()
        ray.shutdown()


if __name__ == "__main__":
    main()
