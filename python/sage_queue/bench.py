"""Side-by-side benchmark: SageQueue against multiprocessing.Queue and faster_fifo.Queue.

Every scenario runs each queue in fresh processes (fork): producers put, consumers get, and
throughput is counted from the producers' first put to the consumers' last get (perf_counter
is CLOCK_MONOTONIC, shared by all processes). Results print as a table with ratios to each
peer, and can be written as JSON and as a PNG chart (matplotlib, optional).

    sage-queue bench [--quick] [--json out.json] [--png out.png] [--only small_dict,1KiB]

Progress lines go to stderr only when it is a terminal.
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .cli import positive_int

SMALL = {"id": 1, "data": [1, 2, 3], "meta": "SAGE", "score": 0.5}
RING = 64 * 1024 * 1024
BATCH = 64
_CTX = mp.get_context("fork")


# ---- the queues under test, behind one small interface ----


class Impl:
    name = ""

    def make(self) -> Any:
        raise NotImplementedError

    def put(self, q: Any, item: Any) -> None:
        q.put(item)

    def get(self, q: Any) -> Any:
        return q.get()

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put(items)

    def get_many(self, q: Any) -> List[Any]:
        items: List[Any] = q.get()
        return items

    def close(self, q: Any) -> None:
        pass


class Sage(Impl):
    name = "sage-queue"

    def make(self) -> Any:
        from sage_queue import SageQueue

        return SageQueue(f"bench-{uuid.uuid4().hex[:12]}", maxsize=RING)

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items)

    def get_many(self, q: Any) -> List[Any]:
        items: List[Any] = q.get_many(max_items=BATCH)
        return items

    def close(self, q: Any) -> None:
        q.close()


class MpQueue(Impl):
    name = "multiprocessing.Queue"

    def make(self) -> Any:
        return _CTX.Queue()

    def close(self, q: Any) -> None:
        q.close()
        q.join_thread()


class FasterFifo(Impl):
    name = "faster-fifo"

    def make(self) -> Any:
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=RING)

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items, block=True, timeout=60)

    def get_many(self, q: Any) -> List[Any]:
        items: List[Any] = q.get_many(block=True, timeout=60, max_messages_to_get=BATCH)
        return items

    def get(self, q: Any) -> Any:
        return q.get(block=True, timeout=60)

    def close(self, q: Any) -> None:
        q.close()


def available_impls() -> List[Impl]:
    impls: List[Impl] = [Sage(), MpQueue()]
    try:
        import faster_fifo  # noqa: F401

        impls.append(FasterFifo())
    except ImportError:
        print("faster-fifo is not installed: pip install 'sage-queue[bench]'", file=sys.stderr)
    return impls


# ---- process bodies ----


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


Result = Dict[str, float]


def _producer(impl: Impl, q: Any, item: Any, count: int, batched: bool, out: Any) -> None:
    t0 = time.perf_counter()
    if batched:
        chunk = [item] * BATCH
        for _ in range(count // BATCH):
            impl.put_many(q, chunk)
    else:
        for _ in range(count):
            impl.put(q, item)
    out.put(("p", t0, _peak_rss_kib()))


def _consumer(impl: Impl, q: Any, count: int, batched: bool, out: Any) -> None:
    n = 0
    if batched:
        while n < count:
            n += len(impl.get_many(q))
    else:
        while n < count:
            impl.get(q)
            n += 1
    out.put(("c", time.perf_counter(), _peak_rss_kib()))


def _echo(impl: Impl, qin: Any, qout: Any, count: int) -> None:
    for _ in range(count):
        impl.put(qout, impl.get(qin))


# ---- scenarios ----


def throughput(
    impl: Impl,
    item: Any,
    count: int,
    producers: int = 1,
    consumers: int = 1,
    batched: bool = False,
) -> Result:
    q = impl.make()
    out = _CTX.Queue()
    per_p = count // producers
    total = per_p * producers
    per_c = [total // consumers + (1 if i < total % consumers else 0) for i in range(consumers)]
    procs = [
        _CTX.Process(target=_consumer, args=(impl, q, per_c[i], batched, out))
        for i in range(consumers)
    ] + [
        _CTX.Process(target=_producer, args=(impl, q, item, per_p, batched, out))
        for _ in range(producers)
    ]
    for p in procs:
        p.start()
    reports: List[Tuple[str, float, int]] = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    impl.close(q)
    start = min(t for k, t, _ in reports if k == "p")
    end = max(t for k, t, _ in reports if k == "c")
    size = len(item) if isinstance(item, bytes) else None
    secs = end - start
    res: Result = {"items_per_s": total / secs, "seconds": secs, "items": total,
           "peak_rss_mib": max(r for _, _, r in reports) / 1024}  # fmt: skip
    if size:
        res["mb_per_s"] = total * size / secs / 1e6
    return res


def round_trip(impl: Impl, item: Any, count: int) -> Result:
    a, b = impl.make(), impl.make()
    echo = _CTX.Process(target=_echo, args=(impl, a, b, count))
    echo.start()
    lat: List[float] = []
    for _ in range(count):
        t = time.perf_counter()
        impl.put(a, item)
        impl.get(b)
        lat.append((time.perf_counter() - t) * 1e6)
    echo.join()
    impl.close(a)
    impl.close(b)
    lat.sort()
    return {"p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)],
            "items_per_s": count / (sum(lat) / 1e6)}  # fmt: skip


def scenarios(quick: bool) -> Dict[str, Callable[[Impl], Result]]:
    k = 0.2 if quick else 1.0

    def n(x: int) -> int:
        return max(BATCH, int(x * k))

    return {
        "small_dict": lambda i: throughput(i, SMALL, n(200_000)),
        "1KiB": lambda i: throughput(i, b"x" * 1024, n(200_000)),
        "64KiB": lambda i: throughput(i, b"x" * 65536, n(10_000)),
        "1MiB": lambda i: throughput(i, b"x" * (1 << 20), n(1_000)),
        "small_dict_batch64": lambda i: throughput(
            i, SMALL, n(1_000_000) // BATCH * BATCH, batched=True
        ),
        "round_trip": lambda i: round_trip(i, SMALL, n(20_000)),
        "2p_2c_small_dict": lambda i: throughput(i, SMALL, n(200_000), producers=2, consumers=2),
    }


HEADLINE = {"round_trip": "p50_us"}


SCENARIOS = tuple(scenarios(True))


def headline(scenario: str, res: Result) -> float:
    if scenario in HEADLINE:
        return res[HEADLINE[scenario]]
    return res["mb_per_s"] if scenario in ("64KiB", "1MiB") else res["items_per_s"]


def _show_progress() -> bool:
    """Progress lines (rewritten in place with \\r) only on a terminal, not into a log."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def run(
    quick: bool = False,
    only: Optional[Sequence[str]] = None,
    json_path: Optional[str] = None,
    png_path: Optional[str] = None,
) -> Dict[str, Any]:
    impls = available_impls()
    results: Dict[str, Dict[str, Result]] = {}
    todo = {s: f for s, f in scenarios(quick).items() if not only or s in only}
    progress = _show_progress()
    for s, f in todo.items():
        results[s] = {}
        for impl in impls:
            if progress:
                print(f"\r[{s}] {impl.name} ...".ljust(60), end="", file=sys.stderr, flush=True)
            results[s][impl.name] = f(impl)
    if progress:
        print("\r".ljust(60) + "\r", end="", file=sys.stderr, flush=True)
    report = {"machine": machine(), "quick": quick, "results": results}
    print(table(results))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"results written to {json_path}")
    if png_path:
        chart(results, png_path)
    return report


def machine() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}  # fmt: skip


def table(results: Dict[str, Dict[str, Result]]) -> str:
    peers = [p for p in ("multiprocessing.Queue", "faster-fifo")
             if any(p in r for r in results.values())]  # fmt: skip
    head = f"{'scenario':<20}{'metric':<10}{'sage-queue':>12}" + "".join(
        f"{p:>22}{'ratio':>8}" for p in peers
    )
    lines = [head, "-" * len(head)]
    for s, by in results.items():
        sage = headline(s, by["sage-queue"])
        metric = "p50 us" if s in HEADLINE else ("MB/s" if s in ("64KiB", "1MiB") else "items/s")
        row = f"{s:<20}{metric:<10}{sage:>12,.1f}"
        for p in peers:
            if p in by:
                v = headline(s, by[p])
                # Ratios read "times better": for latency, peer / sage.
                ratio = v / sage if s in HEADLINE else sage / v
                row += f"{v:>22,.1f}{ratio:>7.2f}x"
        lines.append(row)
    rss = {i: max(r.get("peak_rss_mib", 0) for r in (by.get(i, {}) for by in results.values()))
           for i in ("sage-queue", *peers)}  # fmt: skip
    lines.append("peak RSS per process (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    return "\n".join(lines)


def chart(results: Dict[str, Dict[str, Result]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no chart written", file=sys.stderr)
        return
    names = list(results)
    impls = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        vals = []
        for s in names:
            sage = headline(s, results[s]["sage-queue"])
            v = headline(s, results[s][impl])
            vals.append(v / sage if s in HEADLINE else sage / v)
        ax.bar([x + k * width for x in range(len(names))], [1 / v for v in vals], width,
               label=impl)  # fmt: skip
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=20)
    ax.set_ylabel("speed relative to sage-queue")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"chart written to {path}")


def median_of(
    runs: int, json_path: Optional[str] = None, png_path: Optional[str] = None, **kw: Any
) -> Dict[str, Any]:
    """Run the whole suite `runs` times and keep each number's median."""
    reports = [run(**kw) for _ in range(runs)]
    merged = reports[0]
    for s, by in merged["results"].items():
        for impl, res in by.items():
            for key in res:
                res[key] = statistics.median(r["results"][s][impl][key] for r in reports)
    merged["runs"] = runs
    print(f"\nmedian of {runs} runs:")
    print(table(merged["results"]))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(merged, fh, indent=2)
        print(f"results written to {json_path}")
    if png_path:
        chart(merged["results"], png_path)
    return merged


def micro(count: int = 100_000) -> Dict[str, float]:
    """Microseconds per call in one process, queue never empty or full: the cost of crossing
    into the native library, without any waiting."""
    from sage_queue import SageQueue
    from sage_queue import _native as native

    out: Dict[str, float] = {}
    q = SageQueue(f"micro-{uuid.uuid4().hex[:12]}", maxsize=64 << 20)
    raw = native.SageQueue.open(q.name, True)
    chunk = min(count, 20_000)
    cases: List[Tuple[str, Callable[[Any], None], Callable[[], Any], Any]] = [
        ("SageQueue small dict", q.put, q.get, SMALL),
        ("SageQueue 64 B bytes", q.put, q.get, b"x" * 64),
        ("generated methods 64 B", lambda b: raw.put(b, 0.0), lambda: raw.get(0.0), b"x" * 64),
    ]
    for label, put, get, item in cases:
        tp = tg = 0.0
        for _ in range(max(1, count // chunk)):
            t0 = time.perf_counter()
            for _ in range(chunk):
                put(item)
            t1 = time.perf_counter()
            for _ in range(chunk):
                get()
            tp += t1 - t0
            tg += time.perf_counter() - t1
        n = max(1, count // chunk) * chunk
        out[f"{label}: put"] = tp / n * 1e6
        out[f"{label}: get"] = tg / n * 1e6
    raw.detach()
    q.close()
    for k, v in out.items():
        print(f"{k:<36}{v:>8.2f} us")
    return out


def scenario_list(text: str) -> List[str]:
    """argparse type of --only: comma-separated names from SCENARIOS."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        what = f"unknown scenario {', '.join(map(repr, unknown))}" if unknown else "no scenario"
        raise argparse.ArgumentTypeError(f"{what} (choose from {', '.join(SCENARIOS)})")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="sage-queue bench", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer items per scenario")
    ap.add_argument(
        "--only",
        type=scenario_list,
        metavar="NAME[,NAME...]",
        help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}",
    )
    ap.add_argument("--json", dest="json_path", help="write results as JSON here")
    ap.add_argument("--png", dest="png_path", help="save a chart here (needs matplotlib)")
    ap.add_argument("--runs", type=positive_int, default=1, help="repeat and report medians")
    ap.add_argument("--micro", action="store_true", help="only: us per put and per get")
    a = ap.parse_args(argv)
    if a.micro:
        micro()
        return 0
    kw: Dict[str, Any] = dict(
        quick=a.quick, only=a.only, json_path=a.json_path, png_path=a.png_path
    )
    if a.runs > 1:
        median_of(a.runs, **kw)
    else:
        run(**kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
