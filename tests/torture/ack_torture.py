#!/usr/bin/env python3
"""Kill -9 torture in ack mode: at-least-once delivery under consumer crashes.

    PYTHONPATH=python python3 tests/torture/ack_torture.py --rounds 1000

A producer process puts --messages numbered messages into a small queue while this controller
runs rounds: each round forks two consumers that loops get_acked -> forward (item, deliveries)
to a results queue -> ack, and kills them with SIGKILL after a random 2-32 ms (at any step:
inside get_acked, between the forward and the ack, inside the ack). One consumer that is never
killed runs throughout. At the end a clean consumer drains the queue.

Checks: every message put was forwarded at least once; a message forwarded more than once was
delivered again (its later deliveries count up), which happens only after its consumer was
killed, so the redeliveries are at most the kills; nothing is lost (stats lost 0), nothing is
left unacknowledged, and the queue ends empty. Prints "OK" and the counts.
"""

import argparse
import os
import random
import signal
import sys
import time


def consume(name, results_name, deadline):
    from sage_queue import SageQueue

    q = SageQueue(name, create=False, auto_cleanup=False)
    out = SageQueue(results_name, create=False, auto_cleanup=False)
    while time.monotonic() < deadline:
        try:
            item, receipt = q.get_acked(timeout=0.05)
        except Exception:  # queue.Empty
            continue
        time.sleep(0.0002)  # the work: most of a consumer's time is spent holding a lease
        out.put((item, receipt.deliveries), timeout=30)
        q.ack(receipt)


def produce(name, n):
    from sage_queue import SageQueue

    q = SageQueue(name, create=False, auto_cleanup=False)
    for i in range(n):
        q.put(i, timeout=60)


def fork(fn, *args):
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        finally:
            os._exit(0)
    return pid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--messages", type=int, default=0, help="default: 40 per round, at least 1000")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = args.messages or max(1000, 40 * args.rounds)
    rng = random.Random(args.seed)

    from sage_queue import SageQueue

    tag = f"{os.getpid()}"
    q = SageQueue(f"acktorture-{tag}", maxsize=16384)
    results = SageQueue(f"acktorture-out-{tag}", maxsize=1 << 22)
    start = time.monotonic()
    producer = fork(produce, q.name, n)
    steady = fork(consume, q.name, results.name, start + 3600)
    kills = 0
    for _ in range(args.rounds):
        pids = [fork(consume, q.name, results.name, start + 3600) for _ in range(2)]
        for pid in pids:
            time.sleep(0.002 + rng.random() * 0.03)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
    os.waitpid(producer, 0)
    # Let the steady consumer drain everything (redeliveries included), then stop it.
    seen = {}
    redeliveries = 0
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            item, deliveries = results.get(timeout=0.5)
        except Exception:
            if len(seen) == n and q.qsize() == 0 and q.get_stats()["unacked"] == 0:
                break
            continue
        seen.setdefault(item, []).append(deliveries)
        redeliveries += deliveries > 1
    os.kill(steady, signal.SIGKILL)
    os.waitpid(steady, 0)
    stats = q.get_stats()
    missing = [i for i in range(n) if i not in seen]
    bad = {i: d for i, d in seen.items() if len(d) > 1 and sorted(d) != sorted(set(d))}
    duplicates = sum(len(d) - 1 for d in seen.values())
    print(
        f"rounds survived: {args.rounds}, messages {n}, kills {kills}, "
        f"forwarded twice or more {duplicates}, redelivered {stats['redelivered']}, "
        f"lost {stats['lost']}, unacked {stats['unacked']}, queue {q.qsize()}, "
        f"{time.monotonic() - start:.1f} s"
    )
    ok = (
        not missing
        and not bad
        and stats["lost"] == 0
        and stats["unacked"] == 0
        and q.qsize() == 0
        and stats["redelivered"] <= kills + 1
        and duplicates <= stats["redelivered"]
    )
    q.destroy()
    results.destroy()
    if not ok:
        print(f"FAILED: missing {missing[:20]}, repeated deliveries {dict(list(bad.items())[:5])}")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
