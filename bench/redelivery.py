#!/usr/bin/env python3
"""Redelivery latency after a consumer's SIGKILL (issue 16), and the cost of an acked get.

    PYTHONPATH=python python3 bench/redelivery.py --rounds 200

Each round: a child process takes one message with get_acked and holds it; the parent kills
it with SIGKILL and, already waiting in get_acked (a blocking wait, or --async an awaiting
coroutine), measures the time from the kill to the message's second delivery. Prints p50,
p99 and max in ms.
"""

import argparse
import asyncio
import os
import signal
import statistics
import sys
import threading
import time


def hold(name: str, w: int) -> None:
    from sage_queue import SageQueue

    q = SageQueue(name, create=False, auto_cleanup=False)
    q.get_acked(timeout=30)
    os.write(w, b"x")
    time.sleep(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--async", dest="aio", action="store_true", help="wait with get_acked_async")
    args = ap.parse_args()
    from sage_queue import SageQueue

    q = SageQueue(f"redelivery-{os.getpid()}", maxsize=4096)
    lat = []
    try:
        for i in range(args.rounds):
            q.put(i)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    hold(q.name, w)
                finally:
                    os._exit(0)
            os.read(r, 1)
            os.close(r)
            os.close(w)
            got: dict = {}

            def wait(got: dict = got) -> None:
                if args.aio:
                    got["m"] = asyncio.run(q.get_acked_async(timeout=10))
                else:
                    got["m"] = q.get_acked(timeout=10)
                got["t"] = time.monotonic()

            t = threading.Thread(target=wait)
            t.start()
            time.sleep(0.005)  # the waiter is asleep in its wait when the kill comes
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            t.join()
            item, receipt = got["m"]
            assert item == i and receipt.deliveries == 2, (item, receipt)
            q.ack(receipt)
            lat.append((got["t"] - killed) * 1e3)
    finally:
        q.destroy()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    how = "get_acked_async" if args.aio else "get_acked"
    print(
        f"redelivery after SIGKILL, {len(lat)} rounds, waiting in {how}: "
        f"p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
