"""Side-by-side benchmark: SageQueue against multiprocessing.Queue, faster_fifo.Queue and zeroq.

Every scenario runs each queue in fresh processes (fork): producers put, consumers get, and
throughput is counted from the producers' first put to the consumers' last get (perf_counter
is CLOCK_MONOTONIC, shared by all processes). Results print as a table with ratios to each
peer, followed by what is not like for like, and can be written as JSON and as a PNG chart
(matplotlib, optional). zeroq (fixed-size slots, raw bytes only) takes part in the raw-bytes
scenarios only; faster-fifo and zeroq are optional peers, skipped with one line when missing.

    sage-queue bench [--quick] [--json out.json] [--png out.png] [--only small_dict,1KiB]

Progress lines go to stderr only when it is a terminal.
"""

import argparse
import importlib
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import textwrap
import time
import uuid
from types import ModuleType
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from .cli import positive_int

SMALL = {"id": 1, "data": [1, 2, 3], "meta": "SAGE", "score": 0.5}
RING = 64 * 1024 * 1024
BATCH = 64
_CTX = mp.get_context("fork")

# Scenarios whose items are raw bytes: only there do bytes-only peers (zeroq) take part.
RAW_BYTES = ("64B", "1KiB", "64KiB", "1MiB")
# Shapes of a throughput run: one message per item; batches of 64 separate messages (one
# batch call each way where the queue has one); one message holding a list of 64 items.
SINGLE, SEPARATE, ONE_LIST = "single", "separate", "one_list"
BATCH_SEPARATE = "small_dict_batch64_separate"
BATCH_ONE_LIST = "small_dict_batch64_one_list"


# ---- the queues under test, behind one small interface ----


class Impl:
    name = ""
    bytes_only = False  # True: moves raw bytes only (no objects), so only RAW_BYTES scenarios

    def make(self, item_size: int = 0) -> Any:
        """A new queue, made in the parent process; item_size is the payload size (bytes
        scenarios) or 0."""
        raise NotImplementedError

    def attach(self, q: Any) -> Any:
        """What a child process (or the round trip's parent) calls put/get on."""
        return q

    def detach(self, q: Any) -> None:
        pass

    def put(self, q: Any, item: Any) -> None:
        q.put(item)

    def get(self, q: Any) -> Any:
        return q.get()

    def put_many(self, q: Any, items: List[Any]) -> None:
        """Separate messages, one per item; without a batch call, one put per item."""
        for item in items:
            self.put(q, item)

    def get_many(self, q: Any, n: int) -> List[Any]:
        """Up to n separate messages (at least one); without a batch call, n gets."""
        return [self.get(q) for _ in range(n)]

    def close(self, q: Any) -> None:
        pass


class Sage(Impl):
    name = "sage-queue"

    def make(self, item_size: int = 0) -> Any:
        from sage_queue import SageQueue

        return SageQueue(f"bench-{uuid.uuid4().hex[:12]}", maxsize=RING)

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items)

    def get_many(self, q: Any, n: int) -> List[Any]:
        items: List[Any] = q.get_many(max_items=n)
        return items

    def close(self, q: Any) -> None:
        q.close()


class MpQueue(Impl):
    """No batch call: put_many / get_many are 64 put() / get() calls (Impl's defaults)."""

    name = "multiprocessing.Queue"

    def make(self, item_size: int = 0) -> Any:
        return _CTX.Queue()

    def close(self, q: Any) -> None:
        q.close()
        q.join_thread()


class FasterFifo(Impl):
    name = "faster-fifo"

    def make(self, item_size: int = 0) -> Any:
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=RING)

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items, block=True, timeout=60)

    def get_many(self, q: Any, n: int) -> List[Any]:
        items: List[Any] = q.get_many(block=True, timeout=60, max_messages_to_get=n)
        return items

    def get(self, q: Any) -> Any:
        return q.get(block=True, timeout=60)

    def close(self, q: Any) -> None:
        q.close()


def _zeroq() -> ModuleType:
    # zeroq ships its own stubs, but it is optional: imported by name so that mypy --strict
    # passes with and without it installed.
    return importlib.import_module("zeroq")


class ZeroQHandle(NamedTuple):
    name: str  # the shared-memory segment children attach to
    owner: Any  # the creating zeroq.Queue; closing it removes the segment


class ZeroQ(Impl):
    """zeroq as its README shows it: the parent creates the queue (element_size, capacity,
    create=True), each process attaches by name (create=False), and put/get are its blocking
    calls. Its slots are fixed-size: a message must be exactly element_size bytes (any other
    length raises ValueError) and get returns a whole slot, so element_size is the payload
    size. No batch call, no objects: raw bytes only."""

    name = "zeroq"
    bytes_only = True

    def make(self, item_size: int = 0) -> Any:
        if item_size <= 0:
            raise ValueError("zeroq moves fixed-size raw bytes: give the message size")
        # As many slots as fit in sage-queue's ring (a power of two, as zeroq requires).
        slots = max(2, min(1 << 20, 1 << ((RING // item_size).bit_length() - 1)))
        name = f"bench-zq-{uuid.uuid4().hex[:12]}"
        owner = _zeroq().Queue(name, element_size=item_size, capacity=slots, create=True)
        return ZeroQHandle(name, owner)

    def attach(self, q: Any) -> Any:
        return _zeroq().Queue(q.name, create=False)

    def detach(self, q: Any) -> None:
        q.close()

    def put(self, q: Any, item: Any) -> None:
        q.put(item, timeout=60)

    def get(self, q: Any) -> Any:
        return q.get(timeout=60)

    def close(self, q: Any) -> None:
        q.owner.close()


_told: Set[str] = set()


def _missing(name: str, hint: str) -> None:
    """One line per missing optional peer and process (not once per --runs repetition)."""
    if name not in _told:
        _told.add(name)
        print(f"{name} is not installed, skipped ({hint})", file=sys.stderr)


def available_impls() -> List[Impl]:
    impls: List[Impl] = [Sage(), MpQueue()]
    try:
        import faster_fifo  # noqa: F401

        impls.append(FasterFifo())
    except ImportError:
        _missing("faster-fifo", "pip install 'sage-queue[bench]'")
    try:
        _zeroq()
        impls.append(ZeroQ())
    except ImportError:
        _missing("zeroq", "pip install zeroq")
    return impls


def applies(impl: Impl, scenario: str) -> bool:
    return not impl.bytes_only or scenario in RAW_BYTES


# ---- process bodies ----


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


Result = Dict[str, float]


def _producer(impl: Impl, q: Any, item: Any, count: int, shape: str, out: Any) -> None:
    q = impl.attach(q)
    t0 = time.perf_counter()
    if shape == SINGLE:
        for _ in range(count):
            impl.put(q, item)
    else:
        chunk = [item] * BATCH
        for _ in range(count // BATCH):
            if shape == SEPARATE:
                impl.put_many(q, chunk)  # 64 messages
            else:
                impl.put(q, chunk)  # one message: the list of 64
    out.put(("p", t0, _peak_rss_kib()))
    impl.detach(q)


def _consumer(impl: Impl, q: Any, count: int, shape: str, out: Any) -> None:
    q = impl.attach(q)
    n = 0
    if shape == SINGLE:
        while n < count:
            impl.get(q)
            n += 1
    elif shape == SEPARATE:
        while n < count:
            n += len(impl.get_many(q, min(BATCH, count - n)))
    else:
        while n < count:
            n += len(impl.get(q))
    out.put(("c", time.perf_counter(), _peak_rss_kib()))
    impl.detach(q)


def _echo(impl: Impl, qin: Any, qout: Any, count: int) -> None:
    qin, qout = impl.attach(qin), impl.attach(qout)
    for _ in range(count):
        impl.put(qout, impl.get(qin))
    impl.detach(qin)
    impl.detach(qout)


# ---- scenarios ----


def _size(item: Any) -> int:
    return len(item) if isinstance(item, bytes) else 0


def throughput(
    impl: Impl,
    item: Any,
    count: int,
    producers: int = 1,
    consumers: int = 1,
    shape: str = SINGLE,
) -> Result:
    """Items per second from producer processes to consumer processes. shape: SINGLE (one
    message per item), SEPARATE (batches of BATCH separate messages, one batch call each way
    where the queue has one) or ONE_LIST (one message holding a list of BATCH items); count
    is in items, a multiple of BATCH per producer for the batch shapes."""
    q = impl.make(_size(item))
    out = _CTX.Queue()
    per_p = count // producers
    total = per_p * producers
    per_c = [total // consumers + (1 if i < total % consumers else 0) for i in range(consumers)]
    procs = [
        _CTX.Process(target=_consumer, args=(impl, q, per_c[i], shape, out))
        for i in range(consumers)
    ] + [
        _CTX.Process(target=_producer, args=(impl, q, item, per_p, shape, out))
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
    size = _size(item)
    secs = end - start
    res: Result = {"items_per_s": total / secs, "seconds": secs, "items": total,
           "peak_rss_mib": max(r for _, _, r in reports) / 1024}  # fmt: skip
    if size:
        res["mb_per_s"] = total * size / secs / 1e6
    return res


def round_trip(impl: Impl, item: Any, count: int) -> Result:
    made = impl.make(_size(item)), impl.make(_size(item))
    echo = _CTX.Process(target=_echo, args=(impl, *made, count))
    echo.start()
    a, b = impl.attach(made[0]), impl.attach(made[1])
    lat: List[float] = []
    for _ in range(count):
        t = time.perf_counter()
        impl.put(a, item)
        impl.get(b)
        lat.append((time.perf_counter() - t) * 1e6)
    echo.join()
    impl.detach(a)
    impl.detach(b)
    impl.close(made[0])
    impl.close(made[1])
    lat.sort()
    return {"p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)],
            "items_per_s": count / (sum(lat) / 1e6)}  # fmt: skip


def scenarios(quick: bool, scale: Optional[float] = None) -> Dict[str, Callable[[Impl], Result]]:
    """scale (fraction of the full counts) overrides quick (0.2); tests pass a tiny one."""
    k = scale if scale is not None else (0.2 if quick else 1.0)

    def n(x: int) -> int:
        return max(BATCH, int(x * k))

    return {
        "small_dict": lambda i: throughput(i, SMALL, n(200_000)),
        "64B": lambda i: throughput(i, b"x" * 64, n(200_000)),
        "1KiB": lambda i: throughput(i, b"x" * 1024, n(200_000)),
        "64KiB": lambda i: throughput(i, b"x" * 65536, n(10_000)),
        "1MiB": lambda i: throughput(i, b"x" * (1 << 20), n(1_000)),
        BATCH_SEPARATE: lambda i: throughput(
            i, SMALL, n(1_000_000) // BATCH * BATCH, shape=SEPARATE
        ),
        BATCH_ONE_LIST: lambda i: throughput(
            i, SMALL, n(1_000_000) // BATCH * BATCH, shape=ONE_LIST
        ),
        "round_trip": lambda i: round_trip(i, SMALL, n(20_000)),
        "2p_2c_small_dict": lambda i: throughput(i, SMALL, n(200_000), producers=2, consumers=2),
    }


HEADLINE = {"round_trip": "p50_us"}
MB_PER_S = ("64KiB", "1MiB")
PEERS = ("multiprocessing.Queue", "faster-fifo", "zeroq")


SCENARIOS = tuple(scenarios(True))


def headline(scenario: str, res: Result) -> float:
    if scenario in HEADLINE:
        return res[HEADLINE[scenario]]
    return res["mb_per_s"] if scenario in MB_PER_S else res["items_per_s"]


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
    scale: Optional[float] = None,
) -> Dict[str, Any]:
    impls = available_impls()
    results: Dict[str, Dict[str, Result]] = {}
    todo = {s: f for s, f in scenarios(quick, scale).items() if not only or s in only}
    progress = _show_progress()
    for s, f in todo.items():
        results[s] = {}
        for impl in (i for i in impls if applies(i, s)):
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


def notes(results: Dict[str, Dict[str, Result]]) -> List[str]:
    """What is not like for like in these results (checked against each peer's source)."""
    out: List[str] = []
    if any("zeroq" in by for by in results.values()):
        out += [
            "zeroq: fixed-size slots. A message must be exactly the slot size (element_size; any"
            " other length raises ValueError) and get returns a whole slot. Here element_size is"
            " set to the message size, so it carries no padding; messages of varying size would"
            " need padding and a length field of their own. Raw bytes only (no objects, no batch"
            " call): '-' in the other rows.",
            "zeroq: its blocking put/get poll. On a full or empty queue they sleep 1 ms"
            " (std::thread::sleep, seen as clock_nanosleep of 1,000,000 ns) and try again;"
            " nothing wakes them sooner. The other queues wake a waiting reader or writer when"
            " the other side moves.",
        ]
    if BATCH_SEPARATE in results:
        out.append(
            f"{BATCH_SEPARATE}: {BATCH} separate messages per batch call (sage-queue and"
            f" faster-fifo put_many/get_many); multiprocessing.Queue has no batch call, so it"
            f" makes {BATCH} put() and {BATCH} get() calls."
        )
    if BATCH_ONE_LIST in results:
        out.append(
            f"{BATCH_ONE_LIST}: every queue moves one message holding a list of {BATCH} dicts"
            f" (pickled as one object); items/s counts the dicts."
        )
    return out


def table(results: Dict[str, Dict[str, Result]]) -> str:
    peers = [p for p in PEERS if any(p in r for r in results.values())]
    w = max([20] + [len(s) + 2 for s in results])
    head = f"{'scenario':<{w}}{'metric':<10}{'sage-queue':>12}" + "".join(
        f"{p:>22}{'ratio':>8}" for p in peers
    )
    lines = [head, "-" * len(head)]
    for s, by in results.items():
        sage = headline(s, by["sage-queue"])
        metric = "p50 us" if s in HEADLINE else ("MB/s" if s in MB_PER_S else "items/s")
        row = f"{s:<{w}}{metric:<10}{sage:>12,.1f}"
        for p in peers:
            if p in by:
                v = headline(s, by[p])
                # Ratios read "times better": for latency, peer / sage.
                ratio = v / sage if s in HEADLINE else sage / v
                row += f"{v:>22,.1f}{ratio:>7.2f}x"
            else:  # the peer does not take part (zeroq: objects)
                row += f"{'-':>22}{'':>8}"
        lines.append(row.rstrip())
    rss = {i: max(r.get("peak_rss_mib", 0) for r in (by.get(i, {}) for by in results.values()))
           for i in ("sage-queue", *peers)}  # fmt: skip
    lines.append("peak RSS per process (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    told = notes(results)
    if told:
        lines.append("not like for like:")
        for note in told:
            lines += textwrap.wrap(note, 100, initial_indent="- ", subsequent_indent="  ")
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
    impls = [i for i in ("sage-queue", *PEERS) if any(i in by for by in results.values())]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        vals = []  # speed relative to sage-queue; 0 where the peer does not take part
        for s in names:
            sage = headline(s, results[s]["sage-queue"])
            if impl not in results[s]:
                vals.append(0.0)
                continue
            v = headline(s, results[s][impl])
            vals.append(sage / v if s in HEADLINE else v / sage)
        ax.bar([x + k * width for x in range(len(names))], vals, width, label=impl)
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
    into the native library, without any waiting. zeroq's 64 B put+get (its blocking calls,
    64 B slots) shows next to SageQueue's when zeroq is installed."""
    from sage_queue import SageQueue
    from sage_queue import _native as native

    out: Dict[str, float] = {}
    q = SageQueue(f"micro-{uuid.uuid4().hex[:12]}", maxsize=64 << 20)
    raw = native.SageQueue.open(q.name, True)
    chunk = min(count, 20_000)
    cases: List[Tuple[str, Callable[[Any], None], Callable[[], Any], Any]] = [
        ("SageQueue small dict", q.put, q.get, SMALL),
        ("SageQueue 64 B bytes", q.put, q.get, b"x" * 64),
    ]
    zq: Any = None
    try:
        zq = _zeroq().Queue(
            f"micro-zq-{uuid.uuid4().hex[:12]}", element_size=64, capacity=32_768, create=True
        )
        cases.append(("zeroq 64 B bytes", zq.put, zq.get, b"x" * 64))
    except ImportError:
        _missing("zeroq", "pip install zeroq")
    cases.append(
        ("generated methods 64 B", lambda b: raw.put(b, 0.0), lambda: raw.get(0.0), b"x" * 64)
    )
    try:
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
    finally:
        raw.detach()
        q.close()
        if zq is not None:
            zq.close()
    for k, v in out.items():
        print(f"{k:<36}{v:>8.2f} us")
    if zq is not None:
        print("(zeroq: fixed 64 B slots, raw bytes only; its put/get sleep 1 ms when full/empty,"
              " which never happens here)")  # fmt: skip
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
