#!/usr/bin/env python3
"""Kill -9 torture test for sage-queue: N producer and M consumer processes on one small
queue, with random message sizes, while a controller SIGKILLs and restarts random workers.

    PYTHONPATH=python python3 tests/torture/torture.py --rounds 1000
    PYTHONPATH=python python3 tests/torture/torture.py --seconds 600

Every message is (producer id, seq, length, crc32) + payload. A quarter of the puts are loans
(written in place, published at the block's end) and a quarter of the gets are views (read in
place, released at the block's end), so kills land inside those too. A producer appends its seq
to its own log only AFTER put() returns; a consumer appends "producer seq" to its log only
AFTER get() returns. A restarted producer gets a new producer id (fresh seq numbers). At the
end the controller stops the producers, lets the consumers drain the queue, and checks:

* no (producer, seq) was ever received twice, and every payload matched its length and crc;
* every logged put was received, except at most one message per killed consumer: a message
  taken by a consumer that is killed before it logged it is gone with it (inside get() the
  queue's recovery counts it in stats "lost"; after get() returned it was delivered);
* nothing was received that was never put: a producer's received seqs are its logged seqs plus,
  if it was killed, at most the one seq it was putting (committed before put() returned);
* while messages were waiting and a consumer was alive, msgs_out never stood still for 1 s
  or more (--max-stall).
"""

import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HEADER = struct.Struct("<IQII")  # producer id, seq, payload length, crc32 of payload
_BLOCK = random.Random(1).randbytes(1 << 17)


def payload_for(pid: int, seq: int, n: int) -> bytes:
    off = (pid * 7919 + seq * 104729) % (len(_BLOCK) - n) if n < len(_BLOCK) else 0
    return _BLOCK[off : off + n]


def random_size(rng: random.Random, max_size: int) -> int:
    # Log-uniform over 0 .. max_size: many small messages, regular large ones.
    if rng.random() < 0.05:
        return 0
    return min(max_size, int(max_size ** rng.random()))


# ---- workers (run as separate interpreters: `torture.py --role producer|consumer`) ----


def run_producer(args) -> None:
    from sage_queue import SageQueue

    q = SageQueue(args.queue, create=False, auto_cleanup=False, serializer="raw")
    rng = random.Random(args.id * 1000003 + os.getpid())
    fd = os.open(
        os.path.join(args.dir, f"prod-{args.id}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    stop = os.path.join(args.dir, "stop")
    seq = 0
    while True:
        if seq % 16 == 0 and os.path.exists(stop):
            break
        n = random_size(rng, args.max_size)
        body = payload_for(args.id, seq, n)
        head = HEADER.pack(args.id, seq, n, zlib.crc32(body))
        if rng.random() < 0.25:
            # A loan: written in place, published at the block's end (a kill before that
            # publishes nothing).
            with q.loan(len(head) + n) as buf:
                buf[: len(head)] = head
                buf[len(head) :] = body
        else:
            q.put(head + body)
        os.write(fd, b"%d\n" % seq)  # logged only after put() returned
        seq += 1
        if seq % 64 == 0:
            q.put(b"")  # an empty message now and then (consumers ignore it)
    os.close(fd)
    q.close()


def run_consumer(args) -> None:
    import queue as _queue

    from sage_queue import SageQueue

    q = SageQueue(args.queue, create=False, auto_cleanup=False, serializer="raw")
    fd = os.open(
        os.path.join(args.dir, f"cons-{args.id}.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    stop = os.path.join(args.dir, "stop-consumers")
    rng = random.Random(args.id * 7777 + os.getpid())
    while True:
        try:
            if rng.random() < 0.25:
                # A view: read in place, released at the block's end (a kill before that
                # loses it, as a kill inside get() does).
                with q.view(timeout=0.1) as v:
                    m = bytes(v)
            else:
                m = q.get(timeout=0.1)
        except _queue.Empty:
            if os.path.exists(stop):
                break
            continue
        if not m:
            continue
        if len(m) < HEADER.size:
            os.write(fd, b"BAD short %d\n" % len(m))
            continue
        pid, seq, n, crc = HEADER.unpack_from(m)
        body = m[HEADER.size :]
        ok = len(body) == n and zlib.crc32(body) == crc
        os.write(fd, b"%d %d%s\n" % (pid, seq, b"" if ok else b" BAD"))  # after get() returned
    os.close(fd)
    q.close()


# ---- controller ----


class Worker:
    def __init__(self, role: str, wid: int, args, env):
        self.role, self.id = role, wid
        self.log = os.path.join(args.dir, f"{'prod' if role == 'producer' else 'cons'}-{wid}.log")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--role",
            role,
            "--id",
            str(wid),
            "--queue",
            args.queue,
            "--dir",
            args.dir,
            "--max-size",
            str(args.max_size),
        ]
        self.proc = subprocess.Popen(cmd, env=env)
        self.killed = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """The worker has attached (it creates its log right after opening the queue)."""
        return os.path.exists(self.log)


def read_lines(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    # A line cut by SIGKILL cannot happen with one small write(), but ignore a partial tail.
    return (
        [ln for ln in lines[:-1] if ln] if not data.endswith(b"\n") else [ln for ln in lines if ln]
    )


def check(workdir: str, producers, consumers):
    """Returns (report dict, list of failures)."""
    failures = []
    put = {}  # producer id -> set of logged seqs
    for w in producers:
        seqs = [int(x) for x in read_lines(os.path.join(workdir, f"prod-{w.id}.log"))]
        if seqs != list(range(len(seqs))):
            failures.append(f"producer {w.id}: log not 0..n-1")
        put[w.id] = set(seqs)
    got = {}
    dups, bad = [], []
    for w in consumers:
        for ln in read_lines(os.path.join(workdir, f"cons-{w.id}.log")):
            parts = ln.split()
            if parts[0] == b"BAD" or parts[-1] == b"BAD":
                bad.append((w.id, ln))
                continue
            key = (int(parts[0]), int(parts[1]))
            if key in got:
                dups.append(key)
            got[key] = w.id
    if dups:
        failures.append(f"{len(dups)} messages received twice, e.g. {dups[:5]}")
    if bad:
        failures.append(f"{len(bad)} corrupt messages, e.g. {bad[:5]}")
    killed_p = {w.id for w in producers if w.killed}
    phantom = []
    for pid, seq in got:
        seqs = put.get(pid)
        if seqs is None:
            phantom.append((pid, seq))
        elif seq not in seqs and not (pid in killed_p and seq == len(seqs)):
            phantom.append((pid, seq))
    if phantom:
        failures.append(f"{len(phantom)} received messages never put, e.g. {phantom[:5]}")
    missing = [(pid, s) for pid, seqs in put.items() for s in seqs if (pid, s) not in got]
    killed_c = sum(1 for w in consumers if w.killed)
    if len(missing) > killed_c:
        failures.append(
            f"{len(missing)} logged puts never received (allowed: {killed_c}, one per "
            f"killed consumer), e.g. {sorted(missing)[:10]}"
        )
    report = dict(
        messages_put=sum(len(s) for s in put.values()),
        messages_received=len(got),
        missing=len(missing),
        killed_producers=len(killed_p),
        killed_consumers=killed_c,
    )
    return report, failures


def controller(args) -> int:
    from sage_queue import SageQueue

    rng = random.Random(args.seed)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    workdir = tempfile.mkdtemp(prefix="sq-torture-", dir=shm)
    args.dir = workdir
    env = dict(os.environ)
    env["SAGE_QUEUE_DIR"] = workdir
    import sage_queue

    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sage_queue.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    os.environ["SAGE_QUEUE_DIR"] = workdir
    args.queue = f"torture-{os.getpid()}"
    q = SageQueue(args.queue, args.ring, auto_cleanup=False, serializer="raw", create=True)
    args.max_size = min(args.max_size, q.max_message_size - HEADER.size)
    next_id = [0]

    def spawn(role):
        next_id[0] += 1
        return Worker(role, next_id[0], args, env)

    producers = [spawn("producer") for _ in range(args.producers)]
    consumers = [spawn("consumer") for _ in range(args.consumers)]
    all_p, all_c = list(producers), list(consumers)

    longest = 0.0
    longest_at = None
    last_out = None
    last_change = time.monotonic()

    def monitor():
        nonlocal longest, longest_at, last_out, last_change
        s = q.get_stats()
        now = time.monotonic()
        waiting = s["messages"] > 0 and any(c.alive() and c.ready() for c in consumers)
        if s["msgs_out"] != last_out or not waiting:
            last_out = s["msgs_out"]
            last_change = now
        else:
            stall = now - last_change
            if stall > longest:
                longest, longest_at = stall, dict(messages=s["messages"], used=s["used_bytes"])

    def watch(seconds):
        end = time.monotonic() + seconds
        while True:
            monitor()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.005, left))

    t0 = time.monotonic()
    rounds = 0
    watch(0.5)
    try:
        while rounds < args.rounds and (
            args.seconds is None or time.monotonic() - t0 < args.seconds
        ):
            watch(rng.uniform(0.02, 0.2))
            pool = producers + consumers
            victim = rng.choice(pool)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            victim.killed = True
            new = spawn(victim.role)
            group, allg = (producers, all_p) if victim.role == "producer" else (consumers, all_c)
            group[group.index(victim)] = new
            allg.append(new)
            rounds += 1
            for w in producers + consumers:
                if not w.alive():
                    raise RuntimeError(f"{w.role} {w.id} exited with {w.proc.returncode}")
        # Stop the producers, drain, stop the consumers.
        open(os.path.join(workdir, "stop"), "w").close()
        for w in producers:
            w.proc.wait(timeout=60)
            if w.proc.returncode != 0:
                raise RuntimeError(f"producer {w.id} exited with {w.proc.returncode}")
        deadline = time.monotonic() + 60
        while q.get_stats()["messages"] > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue did not drain: {q.get_stats()}")
            watch(0.05)
        open(os.path.join(workdir, "stop-consumers"), "w").close()
        for w in consumers:
            w.proc.wait(timeout=60)
            if w.proc.returncode != 0:
                raise RuntimeError(f"consumer {w.id} exited with {w.proc.returncode}")
        stats = q.get_stats()
        report, failures = check(workdir, all_p, all_c)
    finally:
        for w in all_p + all_c:
            if w.alive():
                w.proc.kill()
                w.proc.wait()
        q.destroy()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if longest >= args.max_stall:
        failures.append(f"longest stall {longest:.3f} s >= {args.max_stall} s ({longest_at})")
    print(f"rounds survived: {rounds}  time: {time.monotonic() - t0:.1f} s")
    print(
        f"messages checked: {report['messages_received']} received of {report['messages_put']} "
        f"logged puts; lost: {report['missing']} (killed consumers: {report['killed_consumers']}, "
        f"killed producers: {report['killed_producers']})"
    )
    print(
        f"queue stats: lost={stats['lost']} recovered={stats['recovered']} "
        f"msgs_in={stats['msgs_in']} msgs_out={stats['msgs_out']}"
    )
    print(f"longest stall: {longest * 1000:.1f} ms")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("OK")
    return 1 if failures else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=1000, help="kill/restart rounds (default 1000)")
    p.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (default: no limit)"
    )
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--ring", type=int, default=256 * 1024, help="ring bytes (default 256 KiB)")
    p.add_argument(
        "--max-size", type=int, default=64 * 1024, help="largest payload (default 64 KiB)"
    )
    p.add_argument("--max-stall", type=float, default=1.0, help="longest allowed stall, s")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the logs folder")
    p.add_argument("--role", choices=["producer", "consumer"], help=argparse.SUPPRESS)
    p.add_argument("--id", type=int, help=argparse.SUPPRESS)
    p.add_argument("--queue", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "producer":
        run_producer(args)
        return 0
    if args.role == "consumer":
        run_consumer(args)
        return 0
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"seed: {args.seed}")
    return controller(args)


if __name__ == "__main__":
    sys.exit(main())
