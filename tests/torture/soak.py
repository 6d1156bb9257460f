#!/usr/bin/env python3
"""Soak test for sage-queue: N producers and M consumers exchange random-size messages
(0 B - 64 KiB) on one small queue for a while, with exact counts, while the controller
samples the memory of every process.

    PYTHONPATH=python python3 tests/torture/soak.py --minutes 10

Checks: every message put was received exactly once, intact (crc32), and no process's memory
grows over time. The exactly-once check takes constant memory: each consumer sees a producer's
seqs strictly increasing and sums their count, first, second and third powers; the totals over
all consumers must equal those of 0..n-1 for a producer that put n.

RSS (VmRSS in /proc/PID/status) includes the mapped ring pages a process has touched
(RssShmem, at most the segment size), so the check is on growth: after a warm-up of
10% of the run, VmRSS may not grow by more than --margin (default 16 MiB) and RssAnon (the
process's private heap) may not grow by more than --margin either; VmRSS must also stay below
its private memory after warm-up (VmRSS - RssShmem) + segment size + margin.
"""

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HEADER = struct.Struct("<IQII")
_BLOCK = random.Random(1).randbytes(1 << 17)


def payload_for(pid, seq, n):
    off = (pid * 7919 + seq * 104729) % (len(_BLOCK) - n) if n < len(_BLOCK) else 0
    return _BLOCK[off : off + n]


def run_producer(args):
    from sage_queue import SageQueue

    q = SageQueue(args.queue, create=False, auto_cleanup=False, serializer="raw")
    rng = random.Random(args.id)
    end = time.monotonic() + args.seconds
    seq = 0
    while time.monotonic() < end:
        for _ in range(64):
            n = 0 if rng.random() < 0.05 else min(args.max_size, int(args.max_size ** rng.random()))
            body = payload_for(args.id, seq, n)
            q.put(HEADER.pack(args.id, seq, n, zlib.crc32(body)) + body)
            seq += 1
    q.put(HEADER.pack(args.id, 2**64 - 1, seq, 0))  # end marker: how many were put
    q.close()


def run_consumer(args):
    import queue as _queue

    from sage_queue import SageQueue

    q = SageQueue(args.queue, create=False, auto_cleanup=False, serializer="raw")
    # Per producer, in constant memory (a bitmap of seqs would grow with the run and spoil
    # the memory check): [count, last seq, sum of seq, of seq^2, of seq^3]. One consumer sees
    # each producer's messages in put order, so its seqs must strictly increase.
    seen = {}
    ends = {}
    bad = dups = 0
    stop = os.path.join(args.dir, "stop")
    while True:
        try:
            m = q.get(timeout=0.1)
        except _queue.Empty:
            if os.path.exists(stop):
                break
            continue
        pid, seq, n, crc = HEADER.unpack_from(m)
        if seq == 2**64 - 1:
            ends[pid] = n
            continue
        body = m[HEADER.size :]
        if len(body) != n or zlib.crc32(body) != crc:
            bad += 1
        acc = seen.get(pid)
        if acc is None:
            acc = seen[pid] = [0, -1, 0, 0, 0]
        if seq <= acc[1]:
            dups += 1  # a repeat, or out of order
        acc[0] += 1
        acc[1] = seq
        acc[2] += seq
        acc[3] += seq * seq
        acc[4] += seq * seq * seq
    q.close()
    with open(os.path.join(args.dir, f"cons-{args.id}.out"), "wb") as f:
        import pickle

        pickle.dump(dict(seen=seen, ends=ends, bad=bad, dups=dups), f)


def mem(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        return None
    return out


def controller(args):
    import pickle

    import sage_queue
    from sage_queue import SageQueue

    workdir = tempfile.mkdtemp(
        prefix="sq-soak-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    args.dir = workdir
    env = dict(os.environ, SAGE_QUEUE_DIR=workdir)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sage_queue.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    os.environ["SAGE_QUEUE_DIR"] = workdir
    args.queue = f"soak-{os.getpid()}"
    q = SageQueue(args.queue, args.ring, auto_cleanup=False, serializer="raw", create=True)
    args.max_size = min(args.max_size, q.max_message_size - HEADER.size)
    seg_size = os.stat(q.path).st_size

    def spawn(role, i):
        return subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--role",
                role,
                "--id",
                str(i),
                "--queue",
                args.queue,
                "--dir",
                workdir,
                "--seconds",
                str(args.seconds),
                "--max-size",
                str(args.max_size),
            ],
            env=env,
        )

    prods = [spawn("producer", i) for i in range(args.producers)]
    cons = [spawn("consumer", 100 + i) for i in range(args.consumers)]
    procs = {"controller": os.getpid()}
    procs.update({f"producer{i}": p.pid for i, p in enumerate(prods)})
    procs.update({f"consumer{i}": p.pid for i, p in enumerate(cons)})
    samples = {k: [] for k in procs}  # name -> [(t, mem)]
    t0 = time.monotonic()
    failures = []
    try:
        while any(p.poll() is None for p in prods):
            t = time.monotonic() - t0
            for k, pid in procs.items():
                m = mem(pid)
                if m:
                    samples[k].append((t, m))
            time.sleep(min(1.0, max(0.1, args.seconds / 100)))
        for p in prods:
            if p.wait() != 0:
                failures.append(f"producer exited with {p.returncode}")
        while q.qsize() > 0 and time.monotonic() - t0 < args.seconds + 60:
            time.sleep(0.05)
        open(os.path.join(workdir, "stop"), "w").close()
        for p in cons:
            if p.wait(timeout=60) != 0:
                failures.append(f"consumer exited with {p.returncode}")
        stats = q.get_stats()
        # Exact counts.
        ends, bad, dups = {}, 0, 0
        got = {}  # producer id -> summed [count, _, sum, sum of squares, sum of cubes]
        for i in range(args.consumers):
            with open(os.path.join(workdir, f"cons-{100 + i}.out"), "rb") as f:
                r = pickle.load(f)
            ends.update(r["ends"])
            bad += r["bad"]
            dups += r["dups"]
            for pid, acc in r["seen"].items():
                tot = got.setdefault(pid, [0, 0, 0, 0, 0])
                for k in (0, 2, 3, 4):
                    tot[k] += acc[k]
        total = sum(ends.values())
        received = sum(v[0] for v in got.values())
        if len(ends) != args.producers:
            failures.append(f"end markers from {len(ends)} of {args.producers} producers")
        for pid, n in ends.items():
            # Exactly seqs 0..n-1, each once: the count and the first three power sums agree.
            s1 = n * (n - 1) // 2
            want = (n, s1, (n - 1) * n * (2 * n - 1) // 6, s1 * s1)
            acc = got.get(pid, [0, 0, 0, 0, 0])
            have = (acc[0], acc[2], acc[3], acc[4])
            if have != want:
                failures.append(
                    f"producer {pid}: received {have[0]} of {n} (or not each seq once: "
                    f"power sums {have[1:]} != {want[1:]})"
                )
        if dups or bad:
            failures.append(f"{dups} duplicates, {bad} corrupt messages")
        if stats["lost"] or stats["recovered"]:
            failures.append(
                f"lost={stats['lost']} recovered={stats['recovered']} without any crash"
            )
        # Memory.
        warm = max(1.0, args.seconds * 0.1)
        mem_lines = []
        for k, ss in samples.items():
            if len(ss) < 3:
                continue
            first = ss[0][1]
            base = [m for t, m in ss if t >= warm] or [ss[-1][1]]
            b0, peak = (
                base[0],
                {key: max(m.get(key, 0) for m in base) for key in ("VmRSS", "RssAnon")},
            )
            growth = peak["VmRSS"] - b0["VmRSS"]
            anon_growth = peak["RssAnon"] - b0.get("RssAnon", 0)
            mem_lines.append(
                f"  {k:12} VmRSS first {first['VmRSS'] >> 10} KiB, "
                f"after warm-up {b0['VmRSS'] >> 10} KiB, "
                f"peak {peak['VmRSS'] >> 10} KiB; RssAnon growth {anon_growth >> 10} KiB"
            )
            if growth > args.margin or anon_growth > args.margin:
                failures.append(
                    f"{k}: memory grew after warm-up (VmRSS +{growth >> 10} KiB, "
                    f"RssAnon +{anon_growth >> 10} KiB)"
                )
            # Private memory after warm-up, plus at most the whole segment mapped, plus margin.
            limit = b0["VmRSS"] - b0.get("RssShmem", 0) + seg_size + args.margin
            if peak["VmRSS"] > limit:
                failures.append(
                    f"{k}: VmRSS {peak['VmRSS']} > private memory + segment + margin = {limit}"
                )
    finally:
        for p in prods + cons:
            if p.poll() is None:
                p.kill()
                p.wait()
        q.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"soak: {time.monotonic() - t0:.1f} s, {args.producers} producers, "
        f"{args.consumers} consumers, "
        f"ring {args.ring >> 10} KiB"
    )
    print(
        f"messages: {received} received of {total} put; msgs_out={stats['msgs_out']} "
        f"bytes_out={stats['bytes_out']} waits_full={stats['waits_full']} "
        f"waits_empty={stats['waits_empty']}"
    )
    print("memory (sampled from /proc/PID/status):")
    print("\n".join(mem_lines))
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("OK")
    return 1 if failures else 0


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--ring", type=int, default=256 * 1024)
    p.add_argument("--max-size", type=int, default=64 * 1024)
    p.add_argument("--margin", type=int, default=16 << 20, help="allowed memory growth, bytes")
    p.add_argument("--role", choices=["producer", "consumer"], help=argparse.SUPPRESS)
    p.add_argument("--id", type=int, help=argparse.SUPPRESS)
    p.add_argument("--queue", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 60 * (args.minutes if args.minutes is not None else 5)
    if args.role == "producer":
        run_producer(args)
        return 0
    if args.role == "consumer":
        run_consumer(args)
        return 0
    return controller(args)


if __name__ == "__main__":
    sys.exit(main())
