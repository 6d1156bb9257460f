"""The ``sage-queue`` command line: list, inspect and remove queues, collect garbage, and run
a small multi-process demo.

    sage-queue ls              queues of this user: capacity, bytes used, messages, attached
    sage-queue stat NAME       every statistic of one queue
    sage-queue rm NAME         remove a queue (attached processes see it closed)
    sage-queue rm --force NAME   ... also a file of that name that is not a valid queue
    sage-queue gc              remove queues whose processes have all exited
    sage-queue gc --invalid    ... and this user's files that are not valid queues
    sage-queue top             live view of this user's queues (--once, --json, --prometheus)
    sage-queue demo            one producer process feeding two consumer processes
    sage-queue bench           benchmark against multiprocessing.Queue and faster-fifo
    sage-queue --version
"""

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .bridge_state import states_of
from .errors import IncompatibleQueue, NotAQueueError, QueueNotFound, SageQueueError
from .queue import (
    SageQueue,
    cleanup_invalid_queues,
    destroy_queue,
    full_name,
    list_all_sage_queues,
    queue_dir,
)

# The version when the package metadata is missing (a source tree on PYTHONPATH); the same as
# Cargo.toml's, which the wheel's metadata takes (a test keeps the two equal).
__version__ = "0.1.0"


def version() -> str:
    """This package's version: from the installed distribution's metadata, else __version__."""
    try:
        return importlib.metadata.version("sage-queue")
    except importlib.metadata.PackageNotFoundError:
        return __version__


# ---- argument types: a bad value is an argparse error (exit code 2), not a traceback ----


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _table(rows: List[List[str]], right: Set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    queues = list_all_sage_queues()
    if args.json:
        print(json.dumps(queues, indent=2))
        return 0
    if not queues:
        print(f"no queues in {queue_dir()}")
        return 0
    rows = [["NAME", "CAPACITY", "USED", "MESSAGES", "ATTACHED"]]
    for q in queues:
        if q["valid"]:
            rows.append(
                [
                    q["name"],
                    str(q["capacity"]),
                    str(q["used_bytes"]),
                    str(q["messages"]),
                    str(q["attached"]),
                ]
            )
        else:
            rows.append([q["name"], "-", "-", "-", f"- (invalid: {q['error']})"])
    print(_table(rows, right={1, 2, 3}))
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    name = full_name(args.name, args.namespace)
    try:
        # auto_cleanup=False: looking at a queue must never remove it.
        with SageQueue(
            args.name, auto_cleanup=False, namespace=args.namespace, serializer="raw",
            create=False,
        ) as q:
            stats: Dict[str, Any] = q.get_stats()
    except QueueNotFound:
        # A queue of another Ray node that this node uses: its bridge's state is here.
        bridges = states_of(name, queue_dir())["bridges"]
        if not bridges:
            raise
        stats = {"name": name, "remote": True, "bridges": bridges}
    else:
        stats["attached"] -= 1  # not counting this command's own handle (nor its pid)
        if os.getpid() in stats["pids"]:
            stats["pids"].remove(os.getpid())
        del stats["serializer"]  # this command's own choice, not the queue's
        for key in ("readers", "writers", "ref_count"):
            stats[key] = stats["attached"]
        # The gateways serving other Ray nodes (one per node that uses this queue).
        gateways = states_of(name, queue_dir())["gateways"]
        if gateways:
            stats["gateways"] = gateways
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        print(f"{key.ljust(width)}  {value}")
    return 0


def _invalid_file(name: str) -> Optional[Dict[str, Any]]:
    """The listing entry of ``name`` if it is a file of this user that is not a valid queue."""
    for info in list_all_sage_queues():
        if info["name"] == name and not info["valid"]:
            return info
    return None


def _naming_the_file(reason: str, info: Optional[Dict[str, Any]]) -> str:
    """``reason`` (why a file is not a valid queue), with the file's path if it lacks it."""
    if info is None or info["path"] in reason:
        return reason
    return f"{info['path']}: {reason}"


def cmd_rm(args: argparse.Namespace) -> int:
    name = full_name(args.name, args.namespace)
    try:
        removed = destroy_queue(name, force=args.force)
    except (NotAQueueError, IncompatibleQueue) as exc:
        info = _invalid_file(name)
        print(
            f"sage-queue: error: not removed: {_naming_the_file(str(exc), info)}; "
            f"'sage-queue rm --force {args.name}"
            f"{' --namespace ' + args.namespace if args.namespace else ''}' removes it anyway",
            file=sys.stderr,
        )
        return 1
    if removed:
        print(f"removed {name}")
        return 0
    print(f"sage-queue: no queue named {name!r} in {queue_dir()}", file=sys.stderr)
    return 1


def cmd_gc(args: argparse.Namespace) -> int:
    removed = cleanup_invalid_queues(include_invalid=args.invalid)
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} queue(s) removed")
    if not args.invalid:
        for info in list_all_sage_queues():
            if not info["valid"]:
                print(
                    f"sage-queue: kept {info['name']} ({_naming_the_file(info['error'], info)}); "
                    "'sage-queue gc --invalid' removes it",
                    file=sys.stderr,
                )
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from . import top

    if args.prometheus:
        # No sampling wait: counters and gauges only (Prometheus computes rates itself).
        sys.stdout.write(top.prometheus_text(top.records(top.sample(args.all), None)))
        return 0
    if args.json or args.once:
        recs = top.snapshot(args.interval, args.all)
        print(top.to_json(recs) if args.json else top.text_snapshot(recs, args.interval, args.sort))
        return 0
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "sage-queue: error: the live view needs a terminal; "
            "use --once, --json or --prometheus",
            file=sys.stderr,
        )
        return 1
    top.run_live(args.interval, args.sort, args.all)
    return 0


# ---- demo: module-level workers, so spawned children can import them ----


def _demo_producer(q: SageQueue, results: SageQueue, count: int, consumers: int) -> None:
    start = time.perf_counter()
    for i in range(count):
        q.put((i, f"message {i}"))
    for _ in range(consumers):
        q.put(None)
    results.put(("producer", 0, count, sum(range(count)), time.perf_counter() - start))


def _demo_consumer(q: SageQueue, results: SageQueue, index: int) -> None:
    n = total = 0
    start: Optional[float] = None
    while True:
        item = q.get()
        if start is None:
            start = time.perf_counter()
        if item is None:
            break
        n += 1
        total += item[0]
    results.put(("consumer", index, n, total, time.perf_counter() - (start or 0)))


def cmd_demo(args: argparse.Namespace) -> int:
    ctx = multiprocessing.get_context("spawn")
    tag = f"demo-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    consumers = 2
    with SageQueue(tag, maxsize=args.maxsize) as q, SageQueue(f"{tag}-results") as results:
        procs = [ctx.Process(target=_demo_consumer, args=(q, results, i)) for i in range(consumers)]
        procs.append(ctx.Process(target=_demo_producer, args=(q, results, args.count, consumers)))
        print(
            f"demo: 1 producer -> {args.count} messages -> {consumers} consumers "
            f"through queue {tag!r} ({q.maxsize} bytes)"
        )
        started = time.perf_counter()
        for p in procs:
            p.start()
        reports: List[Tuple[str, int, int, int, float]] = []
        try:
            for _ in procs:
                reports.append(results.get(timeout=args.timeout))
        except Exception as exc:
            print(f"demo failed: no report after {args.timeout} s ({type(exc).__name__})")
            for p in procs:
                p.terminate()
            return 1
        finally:
            for p in procs:
                p.join(5)
        wall = time.perf_counter() - started
    received = sent = 0
    checksum = expected = 0
    for role, index, n, total, secs in sorted(reports):
        rate = n / secs if secs > 0 else float("inf")
        label = "producer" if role == "producer" else f"consumer {index + 1}"
        print(f"{label:>10}: {n:>9} messages in {secs:6.2f} s  {rate:>12,.0f} msgs/s")
        if role == "producer":
            sent, expected = n, total
        else:
            received += n
            checksum += total
    ok = received == sent == args.count and checksum == expected
    print(
        f"{'total':>10}: {received} of {sent} messages received, each once: "
        f"{'yes' if ok else 'NO'} ({wall:.2f} s with process start-up)"
    )
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-queue",
        description="Inspect and manage sage-queue shared-memory queues "
        f"(folder: $SAGE_QUEUE_DIR, else /dev/shm; now {queue_dir()}).",
    )
    parser.add_argument("--version", action="version", version=f"sage-queue {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("ls", help="list this user's queues")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("stat", help="print every statistic of one queue")
    p.add_argument("name")
    p.add_argument("-n", "--namespace", help="namespace the queue was created in")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("rm", help="remove a queue (attached processes see it closed)")
    p.add_argument("name")
    p.add_argument("-n", "--namespace", help="namespace the queue was created in")
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="also remove a file of this name that is not a valid queue (listed as invalid)",
    )
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("gc", help="remove queues whose processes have all exited")
    p.add_argument(
        "--invalid",
        action="store_true",
        help="also remove this user's files that are not valid queues (listed as invalid)",
    )
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("top", help="live view of this user's queues (rates, waiters, pids)")
    p.add_argument(
        "-i",
        "--interval",
        type=positive_float,
        default=1.0,
        help="seconds between refreshes; with --once/--json, the rates' sampling interval "
        "(default 1)",
    )
    p.add_argument("--sort", choices=["name", "rate"], default="name", help="row order")
    p.add_argument(
        "--all", action="store_true", help="also list bridges' window queues as queues"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print one plain-text snapshot")
    mode.add_argument("--json", action="store_true", help="print one JSON snapshot")
    mode.add_argument(
        "--prometheus",
        action="store_true",
        help="print the Prometheus text exposition format (for scraping)",
    )
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("demo", help="one producer process feeding two consumer processes")
    p.add_argument("--count", type=positive_int, default=300_000, help="messages to send")
    p.add_argument("--maxsize", type=positive_int, default=1 << 20, help="queue size in bytes")
    p.add_argument(
        "--timeout", type=positive_float, default=120.0, help="give up after this many seconds"
    )
    p.set_defaults(func=cmd_demo)

    # Listed for --help; main() hands everything after "bench" to the benchmark's own parser.
    sub.add_parser("bench", help="benchmark against multiprocessing.Queue and faster-fifo")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from . import bench

        return bench.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (SageQueueError, ValueError, OSError) as exc:
        print(f"sage-queue: error: {exc}", file=sys.stderr)
        return 1
