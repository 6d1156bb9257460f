"""Three languages on one queue: Python, Kotlin and Swift processes open the same named queue
at the same time (run by tests/interop/run.sh, which builds the peers first).

- every direction between two languages: counts exact, every byte checked, a CRC-32 per
  message, sizes from 0 bytes to 1 MiB, single puts/gets and batches mixed;
- mixed MPMC: a Python and a Kotlin producer together, a Swift and a Python consumer
  together, every message taken exactly once;
- a Python, a Kotlin and a Swift process attached at once see the same qsize, statistics and
  attachment count as it changes;
- messages in place: Swift and Kotlin read as views (Queue.view, SageQueue.view) the
  messages Python put with the raw serializer and wrote with loans (SageQueue.loan), and
  Python reads (get, and views) the messages Swift and Kotlin wrote with loans (Queue.loan,
  SageQueue.loan);
- acknowledged gets: a Kotlin consumer takes a message with an acked get and is killed
  (SIGKILL) mid-item; a Python consumer gets it again (deliveries 2) and acks it.

Ends with "N passed, M failed"; exits 1 if any scenario failed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import peer  # noqa: E402  (the Python peer: message format and sizes)
from sage_queue import Empty, SageQueue  # noqa: E402

TIMEOUT = 300  # seconds a scenario's processes may take
DIRECTION_COUNT = 420  # 30 rounds of the 14 sizes of "all": ~37 MB per direction
MPMC_COUNT = 1500  # per producer


def kotlin_cmd():
    build = os.path.join(REPO, "bindings", "kotlin", "build")
    with open(os.path.join(build, "jar-path")) as f:
        jar = os.path.join(REPO, f.read().strip())
    with open(os.path.join(build, "runtime-classpath")) as f:
        cp = f.read().strip()
    return ["java", "-cp", os.pathsep.join([os.path.join(build, "interop"), jar, cp]), "PeerKt"]


LANGS = {
    "python": [sys.executable, os.path.join(HERE, "peer.py")],
    "kotlin": kotlin_cmd(),
    "swift": [
        "bash",
        os.path.join(REPO, "bindings", "swift", "root.sh"),
        "run",
        "bin/sage-queue-interop-peer",
    ],
}


class Failure(Exception):
    pass


def start(lang, *args, stdin=None):
    return subprocess.Popen(
        LANGS[lang] + [str(a) for a in args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout kills all of it
    )


def kill(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def finish(p, what, deadline):
    """The JSON report a peer printed last; Failure if it failed or ran out of time."""
    try:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill(p)
        raise Failure(f"{what} did not finish in {TIMEOUT} s") from None
    lines = out.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise Failure(f"{what} exited with {p.returncode}: {out[-500:]} {err[-2000:]}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise Failure(f"{what} printed no report: {out[-500:]} {err[-2000:]}") from None


def expect(cond, what):
    if not cond:
        raise Failure(what)


def queue(tag):
    name = f"interop-{os.getpid()}-{tag}"
    # The driver holds a handle for the whole scenario, so the queue (auto_cleanup) lives on
    # between one peer's exit and another's start.
    return SageQueue(name, maxsize=peer.CAPACITY, serializer="raw", create=True)


# ---- scenarios ----


def direction(src, dst):
    count, sizes, producer = DIRECTION_COUNT, "all", 7
    want_bytes = sum(peer.size_of(s, sizes) for s in range(count))
    with queue(f"{src}-{dst}") as q:
        deadline = time.monotonic() + TIMEOUT
        cons = start(dst, "consume", q.name, producer, count, sizes)
        prod = start(src, "produce", q.name, producer, count, sizes)
        try:
            p = finish(prod, f"{src} producer", deadline)
            c = finish(cons, f"{dst} consumer", deadline)
        finally:
            for x in (prod, cons):
                if x.poll() is None:
                    kill(x)
        expect(p == {"count": count, "bytes": want_bytes}, f"producer report {p}")
        expect(c["bad"] == [], f"messages with wrong bytes or checksum: {c['bad'][:20]}")
        expect(c["count"] == count, f"consumer took {c['count']} of {count}")
        expect(c["bytes"] == want_bytes, f"consumer took {c['bytes']} bytes of {want_bytes}")
        expect(q.qsize() == 0, f"{q.qsize()} messages left")
    return f"{count} messages, {want_bytes} bytes"


def mpmc():
    count, sizes = MPMC_COUNT, "tagged"
    producers = [("python", 1), ("kotlin", 2)]
    consumers = ["swift", "python"]
    want = {(pid << 32) | s for _, pid in producers for s in range(count)}
    want_bytes = len(producers) * sum(peer.size_of(s, sizes) for s in range(count))
    with queue("mpmc") as q:
        deadline = time.monotonic() + TIMEOUT
        cons = [start(lang, "drain", q.name) for lang in consumers]
        prods = [start(lang, "produce", q.name, pid, count, sizes) for lang, pid in producers]
        try:
            for (lang, _), p in zip(producers, prods):
                r = finish(p, f"{lang} producer", deadline)
                expect(r["count"] == count, f"{lang} producer report {r}")
            for _ in consumers:  # one STOP per consumer, after every message
                q.put(peer.STOP)
            reports = [finish(c, f"{lang} consumer", deadline) for lang, c in zip(consumers, cons)]
        finally:
            for x in cons + prods:
                if x.poll() is None:
                    kill(x)
        expect(all(r["bad"] == 0 for r in reports), f"bad messages: {[r['bad'] for r in reports]}")
        tags = Counter(t for r in reports for t in r["tags"])
        dups = [t for t, n in tags.items() if n > 1]
        expect(not dups, f"{len(dups)} messages taken twice, e.g. {dups[:5]}")
        expect(set(tags) == want, f"{len(want - set(tags))} messages lost")
        got_bytes = sum(r["bytes"] for r in reports)
        expect(got_bytes == want_bytes, f"{got_bytes} bytes taken of {want_bytes}")
        expect(q.qsize() == 0, f"{q.qsize()} messages left")
    split = ", ".join(f"{lang} took {len(r['tags'])}" for lang, r in zip(consumers, reports))
    return f"{len(want)} messages, {want_bytes} bytes; {split}"


def python_to_views(lang="swift", producer=8):
    """The driver puts (raw serializer) and loans in turn; a Swift (or Kotlin) peer checks
    each message in a view."""
    count, sizes = DIRECTION_COUNT, "all"
    want_bytes = sum(peer.size_of(s, sizes) for s in range(count))
    with queue(f"python-{lang}-views") as q:
        deadline = time.monotonic() + TIMEOUT
        cons = start(lang, "consume-view", q.name, producer, count, sizes)
        loans = 0
        try:
            for seq in range(count):
                m = peer.message(producer, seq, peer.size_of(seq, sizes))
                if seq % 2:
                    q.put(m, timeout=peer.WAIT)
                else:
                    with q.loan(len(m), timeout=peer.WAIT) as buf:
                        buf[:] = m
                    loans += 1
            c = finish(cons, f"{lang} consumer (views)", deadline)
        finally:
            if cons.poll() is None:
                kill(cons)
        expect(c["bad"] == [], f"views with wrong bytes or checksum: {c['bad'][:20]}")
        expect(c["count"] == count, f"consumer viewed {c['count']} of {count}")
        expect(c["bytes"] == want_bytes, f"consumer viewed {c['bytes']} bytes of {want_bytes}")
        expect(q.qsize() == 0, f"{q.qsize()} messages left")
        expect(q.get_stats()["pinned"] == 0, "views left pinned")
    return f"{count} messages ({loans} loans), {want_bytes} bytes"


def loans_to_python(lang="swift", producer=9):
    """A Swift (or Kotlin) peer writes every message into a loan; the driver takes them by
    get and by view in turn and checks every byte."""
    count, sizes = DIRECTION_COUNT, "all"
    want_bytes = sum(peer.size_of(s, sizes) for s in range(count))
    with queue(f"{lang}-loans-python") as q:
        deadline = time.monotonic() + TIMEOUT
        prod = start(lang, "produce-loan", q.name, producer, count, sizes)
        bad, got, nbytes = [], 0, 0
        try:
            for seq in range(count):
                want = peer.message(producer, seq, peer.size_of(seq, sizes))
                if seq % 2:
                    m = q.get(timeout=peer.WAIT)
                else:
                    with q.view(timeout=peer.WAIT) as mv:
                        m = bytes(mv)
                if m != want or (len(m) >= 12 and peer.check_tagged(m) != (producer, seq)):
                    bad.append(seq)
                got += 1
                nbytes += len(m)
            p = finish(prod, f"{lang} producer (loans)", deadline)
        finally:
            if prod.poll() is None:
                kill(prod)
        expect(p == {"count": count, "bytes": want_bytes}, f"producer report {p}")
        expect(bad == [], f"messages with wrong bytes or checksum: {bad[:20]}")
        expect(nbytes == want_bytes, f"took {nbytes} bytes of {want_bytes}")
        expect(q.qsize() == 0, f"{q.qsize()} messages left")
    return f"{count} messages, {want_bytes} bytes"


def killed_mid_item(lang="kotlin", producer=12):
    """A Kotlin peer takes a message with an acknowledged get and waits without acking it;
    it is killed with SIGKILL, and the driver (Python) gets the message again with
    get_acked (deliveries 2, every byte intact) and acks it."""
    if not hasattr(SageQueue, "get_acked"):
        raise Failure("this sage_queue has no get_acked (an older installed package?)")
    m = peer.message(producer, 0, 1000)
    with queue(f"{lang}-killed-acked") as q:
        q.put(m)
        holder = start(lang, "hold-acked", q.name)
        try:
            line = holder.stdout.readline().strip()
            if not line:
                raise Failure(f"{lang} holder said nothing: {holder.stderr.read()[-2000:]}")
            r = json.loads(line)
            want = {"deliveries": 1, "bytes": len(m), "tag": [producer, 0]}
            expect(r == want, f"holder report {r}")
            stats = q.get_stats()
            expect((stats["unacked"], stats["messages"]) == (1, 0), f"before the kill: {stats}")
            try:
                q.get_acked(timeout=0)
                raise Failure("the held message was delivered while its holder lived")
            except Empty:
                pass
        finally:
            kill(holder)  # SIGKILL, mid-item
        expect(holder.returncode == -signal.SIGKILL, f"the holder exited with {holder.returncode}")
        t = time.monotonic()
        item, receipt = q.get_acked(timeout=30)
        took = time.monotonic() - t
        expect(item == m, "the message delivered again has other bytes")
        expect(receipt.deliveries == 2, f"deliveries {receipt.deliveries}, not 2")
        expect(took < 10, f"delivered again after {took:.1f} s")
        q.ack(receipt)
        stats = q.get_stats()
        got = {k: stats[k] for k in ("unacked", "redelivered", "lost", "messages")}
        want = {"unacked": 0, "redelivered": 1, "lost": 0, "messages": 0}
        expect(got == want, f"after the ack: {got}")
    return f"delivered again to python after {took:.3f} s, deliveries 2, acked"


class Inspector:
    """A peer in `inspect` mode: attached until its stdin closes."""

    def __init__(self, lang, name):
        self.lang = lang
        self.open = True
        self.p = start(lang, "inspect", name, stdin=subprocess.PIPE)
        self.line("ready")

    def line(self, want=None):
        out = self.p.stdout.readline().strip()  # the peer answers at once
        if not out or (want is not None and out != want):
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise Failure(f"{self.lang} inspector said {out!r} (wanted {want!r}) {err[-2000:]}")
        return out

    def ask(self, cmd, want=None):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.line(want)

    def stats(self):
        return json.loads(self.ask("stats"))

    def close(self):
        self.open = False
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill(self.p)


def shared_state():
    with queue("state") as q:
        for i in range(5):
            q.put(peer.message(1, i, 100 + i))
        q.get()
        views = []
        try:
            for lang in ("kotlin", "python", "swift"):
                views.append(Inspector(lang, q.name))

            def agree(step, **want):
                mine = {k: v for k, v in q.get_stats().items()}
                mine["qsize"] = q.qsize()
                seen = {"driver": mine}
                for v in views:
                    if v.open:
                        seen[v.lang] = v.stats()
                fields = ("name", "path", "capacity", "max_message_size", "used_bytes",
                          "messages", "attached", "msgs_in", "msgs_out", "bytes_in",
                          "bytes_out", "creator_pid", "qsize")  # fmt: skip
                for f in fields:
                    vals = {who: s[f] for who, s in seen.items()}
                    expect(len(set(vals.values())) == 1, f"{step}: {f} differs: {vals}")
                for f, v in want.items():
                    expect(mine[f] == v, f"{step}: {f} is {mine[f]}, not {v}")

            agree("start", attached=4, qsize=4, msgs_in=5, msgs_out=1, creator_pid=os.getpid())
            views[0].ask("get", "101")  # Kotlin takes the second message (101 bytes)
            agree("after a Kotlin get", qsize=3, msgs_out=2)
            views[1].ask("put 2", "done")  # Python puts two
            views[2].ask("put 3", "done")  # Swift puts three
            agree("after Python and Swift puts", qsize=8, msgs_in=10)
            views[0].close()
            agree("after Kotlin detached", attached=3)
            views[2].close()
            agree("after Swift detached", attached=2)
        finally:
            for v in views:
                v.close()
    return "qsize, stats and attachment counts agree at every step"


def main():
    scenarios = [
        (f"{a} -> {b}", lambda a=a, b=b: direction(a, b))
        for a, b in [
            ("python", "kotlin"),
            ("kotlin", "swift"),
            ("swift", "python"),
            ("kotlin", "python"),
            ("swift", "kotlin"),
            ("python", "swift"),
        ]
    ]
    scenarios += [
        ("MPMC: python+kotlin producers, swift+python consumers", mpmc),
        ("python, kotlin and swift see the same state", shared_state),
        ("in place: python puts and loans -> swift views", python_to_views),
        ("in place: swift loans -> python gets and views", loans_to_python),
        ("in place: python puts and loans -> kotlin views", lambda: python_to_views("kotlin", 10)),
        ("in place: kotlin loans -> python gets and views", lambda: loans_to_python("kotlin", 11)),
        ("acked: a kotlin consumer killed mid-item, its message acked by python", killed_mid_item),
    ]
    only = sys.argv[1:]
    passed = failed = 0
    for name, run in scenarios:
        if only and not any(o in name for o in only):
            continue
        t = time.monotonic()
        try:
            note = run()
            passed += 1
            print(f"ok    {name}: {note} ({time.monotonic() - t:.1f} s)", flush=True)
        except Failure as e:
            failed += 1
            print(f"FAIL  {name}: {e} ({time.monotonic() - t:.1f} s)", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
