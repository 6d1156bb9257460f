"""What a handle's waiting policy (``spin_us``) costs and buys: a producer process puts one
small message every --interval microseconds, a consumer process waits for each with get();
for each spin budget, the consumer's CPU use (% of one core) and the wake-up latency (put to
get returned, p50 and p99, microseconds).

    python3 bench/wait_policy.py [--interval 500] [--count 4000] [--spins 0,20,70,200]
    (PYTHONPATH=python for a source tree built with tests/dev_build.sh)
"""

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
import uuid

from sage_queue import SageQueue


def consumer(name: str, spin: int, count: int, out) -> None:
    q = SageQueue(name, create=False, spin_us=spin)
    lat = []
    start = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(count):
        sent = q.get()
        lat.append(time.perf_counter() - sent)
    wall = time.perf_counter() - t0
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
    q.close()
    out.put((cpu / wall, lat))


def run(spin: int, interval_us: int, count: int) -> tuple:
    name = f"waitpolicy-{uuid.uuid4().hex[:8]}"
    q = SageQueue(name, maxsize=1 << 20)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    p = ctx.Process(target=consumer, args=(name, spin, count, out))
    p.start()
    time.sleep(0.2)
    gap = interval_us / 1e6
    next_at = time.perf_counter()
    for _ in range(count):
        next_at += gap
        while time.perf_counter() < next_at:
            time.sleep(max(0.0, next_at - time.perf_counter() - 50e-6))
        q.put(time.perf_counter())
    cpu, lat = out.get(timeout=120)
    p.join()
    q.destroy()
    lat.sort()
    return cpu, lat[len(lat) // 2] * 1e6, lat[int(len(lat) * 0.99)] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interval", type=int, default=500, help="microseconds between puts")
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--spins", default="0,20,70,200", help="spin budgets to compare (us)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each (median)")
    args = ap.parse_args()
    print(
        f"one message every {args.interval} us, {args.count} messages, {os.cpu_count()} CPUs, "
        f"median of {args.runs}"
    )
    print(f"{'spin_us':>8} {'consumer CPU':>13} {'p50 us':>8} {'p99 us':>8}")
    for spin in (int(s) for s in args.spins.split(",")):
        runs = [run(spin, args.interval, args.count) for _ in range(args.runs)]
        cpu, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
        default = "  (default)" if spin == 70 else ""
        print(f"{spin:>8} {cpu * 100:>12.1f}% {p50:>8.1f} {p99:>8.1f}{default}")


if __name__ == "__main__":
    main()
