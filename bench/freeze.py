"""Does a stopped consumer freeze a pipeline? A 2-stage pipeline of processes

    producer -> queue A -> 2 workers -> queue B -> sink

moves small messages (1 KiB bytes by default) through small rings (8 KiB by default, so both
rings wrap every few messages) as fast as it can, while this script sends SIGSTOP to one of
the two workers, chosen at random, at random moments (--pauses times), and SIGCONT
--pause-ms later. The sink records the time (CLOCK_MONOTONIC, shared by all processes) of
every arrival and which worker forwarded it.

Why: a consumer stopped between taking a message and finishing its copy used to hold back the
release of everything behind it in the ring; once the ring wrapped, every producer and
consumer waited for it (an earlier measurement, of an older build and not reproduced here:
5 of 120 pauses of 150 ms of one worker froze the whole pipeline for the full pause). A plain
get now copies first and takes after, so the window should be a few stores. This script
measures the build it imports; it cannot run the old code.

Definitions (the output repeats them):

- pause window: from the return of os.kill(worker, SIGSTOP) to just before
  os.kill(worker, SIGCONT), measured in this process.
- longest gap of a window: the longest stretch of the window in which the sink received
  nothing; the window's own edges count as edges, so a window with no arrival at all has a
  gap as long as the window.
- freeze: a pause window whose longest gap is at least --freeze-ms (default: 2/3 of
  --pause-ms, 100 ms for 150 ms pauses) while the other worker was not stopped (its
  /proc/<pid>/stat state, read at the end of the pause, is not T; this script never stops
  both). "frozen to the end": a freeze whose gap lasts until SIGCONT (what a held ring does).
- long gaps: every stretch of at least --freeze-ms without an arrival, in any phase, with the
  pauses it overlaps (none: the pipeline stalled with both workers running, e.g. the machine
  did not run the sink) or how long after the last SIGCONT it began.
- noise floor: the same test on as many windows of the same length placed at random in the
  phases without pauses (a machine shared with other work can stall the sink by itself).
- throughput: messages received by the sink per second, in the phases without pauses (half
  before the pauses, half after) and in the phase with pauses (first SIGSTOP - one interval
  to the last SIGCONT + one interval).

    PYTHONPATH=python python3 bench/freeze.py [--pauses 120] [--pause-ms 150] [--quick]

--views is a positive control, not the measurement: the workers read A through views, which
pin a message by design while it is put to B, so a pause inside one holds ring A; it shows
what a freeze looks like in this script's output.

run() is the core (tests/python/test_freeze_script.py calls it with tiny numbers); analyze()
is the arithmetic, a pure function of the recorded times.
"""

import argparse
import array
import bisect
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sage_queue import SageQueue

_CTX = mp.get_context("fork")
_END = b"end"  # shorter than any message: the end of the stream
_HEADER = 9  # 8 bytes of sequence number, 1 byte: which worker forwarded it (0xff: none yet)
_NOW = time.monotonic


# ---- the pipeline's processes ----


def _producer(name_a: str, msg_bytes: int, workers: int, stop: Any, sent: Any) -> None:
    q = SageQueue(name_a, create=False)
    body = b"\xff" + bytes(msg_bytes - _HEADER)
    seq = 0
    while not stop.value:
        q.put(seq.to_bytes(8, "little") + body)
        seq += 1
    sent.value = seq
    for _ in range(workers):
        q.put(_END)
    q.close()


def _worker(wid: int, name_a: str, name_b: str, views: bool) -> None:
    qa = SageQueue(name_a, create=False)
    qb = SageQueue(name_b, create=False)
    tag = bytes([wid])
    while True:
        if views:
            # The positive control: the message stays pinned in A while it is put to B.
            with qa.view() as m:
                done = len(m) < _HEADER
                if not done:
                    qb.put(b"".join((m[:8], tag, m[_HEADER:])))
        else:
            m = qa.get()
            done = len(m) < _HEADER
            if not done:
                qb.put(m[:8] + tag + m[_HEADER:])
        if done:
            qb.put(_END)
            break
    qa.close()
    qb.close()


def _sink(name_b: str, workers: int, out_dir: str, ready: Any) -> None:
    q = SageQueue(name_b, create=False)
    times = array.array("d")
    who = array.array("B")
    seqs = array.array("Q")
    now, get = _NOW, q.get
    ends = 0
    while ends < workers:
        m = get()
        t = now()
        if len(m) < _HEADER:
            ends += 1
            continue
        times.append(t)
        who.append(m[8])
        seqs.append(int.from_bytes(m[:8], "little"))
        if not ready.value:
            ready.value = 1
    q.close()
    for name, arr in (("times", times), ("who", who), ("seqs", seqs)):
        with open(os.path.join(out_dir, name), "wb") as f:
            arr.tofile(f)


def _state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (T: stopped), or "?"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _load(out_dir: str, name: str, code: str) -> "array.array[Any]":
    arr = array.array(code)
    path = os.path.join(out_dir, name)
    with open(path, "rb") as f:
        arr.frombytes(f.read())
    return arr


# ---- the arithmetic ----


def longest_gap(times: Sequence[float], start: float, end: float) -> Tuple[float, float]:
    """(length, start) of the longest stretch of [start, end] with no time of ``times``
    (sorted) in it; the window's edges count as edges."""
    i = bisect.bisect_left(times, start)
    j = bisect.bisect_right(times, end)
    prev, best, at = start, 0.0, start
    for k in range(i, j):
        t = times[k]
        if t - prev > best:
            best, at = t - prev, prev
        prev = t
    if end - prev > best:
        best, at = end - prev, prev
    return best, at


def gaps_over(times: Sequence[float], start: float, end: float, min_s: float) -> List[Tuple]:
    """(start, length) of every stretch of [start, end] of at least ``min_s`` with no time of
    ``times`` (sorted) in it; the window's edges count as edges."""
    i = bisect.bisect_left(times, start)
    j = bisect.bisect_right(times, end)
    out, prev = [], start
    for k in range(i, j):
        t = times[k]
        if t - prev >= min_s:
            out.append((prev, t - prev))
        prev = t
    if end - prev >= min_s:
        out.append((prev, end - prev))
    return out


def _count(times: Sequence[float], start: float, end: float) -> int:
    return bisect.bisect_right(times, end) - bisect.bisect_left(times, start)


def _pct(sorted_values: List[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def analyze(
    times: Sequence[float],
    who: Sequence[int],
    pauses: List[Dict[str, Any]],
    unpaused: List[Tuple[float, float]],
    paused: Tuple[float, float],
    controls: List[Tuple[float, float]],
    freeze_s: float,
) -> Dict[str, Any]:
    """Freezes, the noise floor, gaps and rates from the sink's arrival ``times`` (sorted),
    the worker of each (``who``), the ``pauses`` ({victim, start, end, victim_state,
    other_state}), the phases without pauses, the phase with them and the ``controls``
    (windows without pauses). Times in seconds; the result's gaps in ms."""
    freezes = []
    pause_gaps = []
    other_msgs = victim_msgs = 0
    for i, p in enumerate(pauses):
        gap, at = longest_gap(times, p["start"], p["end"])
        pause_gaps.append(gap * 1e3)
        i0 = bisect.bisect_left(times, p["start"])
        i1 = bisect.bisect_right(times, p["end"])
        by_victim = sum(1 for k in range(i0, i1) if who[k] == p["victim"])
        victim_msgs += by_victim
        other_msgs += i1 - i0 - by_victim
        p["gap_ms"] = gap * 1e3
        other_stopped = p.get("other_state", "?") in ("T", "t")
        if gap >= freeze_s and not other_stopped:
            freezes.append(
                {
                    "pause": i,
                    "gap_ms": gap * 1e3,
                    "gap_from_ms": (at - p["start"]) * 1e3,
                    # no arrival after the gap's start: it lasted until SIGCONT
                    "to_end": i1 == i0 or times[i1 - 1] <= at,
                    "victim": p["victim"],
                    "arrivals": i1 - i0,
                }
            )
    control_gaps = [longest_gap(times, a, b)[0] * 1e3 for a, b in controls]
    unpaused_n = sum(_count(times, a, b) for a, b in unpaused)
    unpaused_s = sum(b - a for a, b in unpaused)
    unpaused_longest = max((longest_gap(times, a, b)[0] for a, b in unpaused), default=0.0)
    paused_longest = longest_gap(times, *paused)[0]
    # Every gap of at least freeze_s anywhere, and where it lies: overlapping which pauses,
    # or how long after the last SIGCONT.
    origin = min([paused[0]] + [a for a, _ in unpaused])
    long_gaps = []
    for phase, (a, b) in [("without pauses", w) for w in unpaused] + [("with pauses", paused)]:
        for g0, g in gaps_over(times, a, b, freeze_s):
            over = [i for i, p in enumerate(pauses) if p["start"] < g0 + g and g0 < p["end"]]
            ends = [p["end"] for p in pauses if p["end"] <= g0]
            long_gaps.append(
                {
                    "at_s": g0 - origin,
                    "gap_ms": g * 1e3,
                    "phase": phase,
                    "pauses": over,
                    "after_sigcont_ms": (g0 - max(ends)) * 1e3 if ends and not over else None,
                }
            )
    long_gaps.sort(key=lambda x: x["at_s"])
    held = [(p["end"] - p["start"]) * 1e3 for p in pauses]
    return {
        "pauses": len(pauses),
        "held_ms_mean": sum(held) / len(held) if held else 0.0,
        "held_ms_max": max(held, default=0.0),
        "victim_seen_stopped": sum(1 for p in pauses if p.get("victim_state") in ("T", "t")),
        "other_seen_running": sum(
            1 for p in pauses if p.get("other_state", "?") not in ("T", "t", "Z", "X", "?")
        ),
        "freeze_ms": freeze_s * 1e3,
        "freezes": len(freezes),
        "frozen_to_end": sum(1 for f in freezes if f["to_end"]),
        "freeze_list": freezes,
        "pause_gaps_ms": sorted(pause_gaps),
        "controls": len(controls),
        "quiet_controls": sum(1 for g in control_gaps if g >= freeze_s * 1e3),
        "control_gaps_ms": sorted(control_gaps),
        "arrivals_in_pauses": other_msgs + victim_msgs,
        "arrivals_in_pauses_by_other": other_msgs,
        "longest_gap_paused_ms": paused_longest * 1e3,
        "long_gaps": long_gaps,
        "longest_gap_unpaused_ms": unpaused_longest * 1e3,
        "rate_unpaused": unpaused_n / unpaused_s if unpaused_s > 0 else 0.0,
        "rate_paused": _count(times, *paused) / (paused[1] - paused[0]),
        "unpaused_s": unpaused_s,
        "paused_s": paused[1] - paused[0],
    }


# ---- the run ----


def run(
    pauses: int = 120,
    pause_ms: float = 150.0,
    freeze_ms: Optional[float] = None,
    baseline_s: float = 10.0,
    ring_bytes: int = 8192,
    msg_bytes: int = 1024,
    seed: Optional[int] = None,
    progress: bool = False,
    views: bool = False,
) -> Dict[str, Any]:
    """Run the pipeline: ``baseline_s / 2`` without pauses, ``pauses`` pauses of ``pause_ms``
    (random intervals of pause_ms/3 to 5*pause_ms/3 between them, a random worker each
    time), ``baseline_s / 2`` without pauses again; then stop it and return analyze()'s
    result plus the message counts (sent, received, lost, duplicated) and the settings.
    ``views``: the workers read A through views, which pin each message while it is put to
    B (by design): the positive control, to see what a held ring looks like here."""
    if msg_bytes < _HEADER + 1:
        raise ValueError(f"msg_bytes must be at least {_HEADER + 1}")
    if pauses < 1 or pause_ms <= 0 or baseline_s <= 0:
        raise ValueError("pauses, pause_ms and baseline_s must be positive")
    freeze_s = (pause_ms * 2 / 3 if freeze_ms is None else freeze_ms) / 1e3
    pause_s = pause_ms / 1e3
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:10]
    qa = SageQueue(f"freeze-{tag}-a", maxsize=ring_bytes)
    qb = SageQueue(f"freeze-{tag}-b", maxsize=ring_bytes)
    out_dir = tempfile.mkdtemp(prefix="sage-freeze-")
    stop = _CTX.RawValue("b", 0)
    sent = _CTX.RawValue("q", -1)
    ready = _CTX.RawValue("b", 0)
    procs = [_CTX.Process(target=_sink, args=(qb.name, 2, out_dir, ready), name="sink")]
    workers = [
        _CTX.Process(target=_worker, args=(w, qa.name, qb.name, views), name=f"worker{w}")
        for w in range(2)
    ]
    procs += workers
    procs.append(
        _CTX.Process(target=_producer, args=(qa.name, msg_bytes, 2, stop, sent), name="producer")
    )
    records: List[Dict[str, Any]] = []
    load_start = os.getloadavg()
    try:
        for p in procs:
            p.start()
        deadline = _NOW() + 60
        while not ready.value:
            if _NOW() > deadline or any(p.exitcode is not None for p in procs):
                raise RuntimeError("the pipeline did not start")
            time.sleep(0.01)
        time.sleep(0.3)  # warm up
        t0 = _NOW()
        time.sleep(baseline_s / 2)
        t1 = _NOW()
        lo, hi = pause_s / 3, pause_s * 5 / 3
        for i in range(pauses):
            time.sleep(rng.uniform(lo, hi))
            v = rng.randrange(2)
            victim, other = workers[v].pid, workers[1 - v].pid
            assert victim is not None and other is not None
            try:
                os.kill(victim, signal.SIGSTOP)
                start = _NOW()
                time.sleep(pause_s)
                victim_state, other_state = _state(victim), _state(other)
                end = _NOW()
            finally:
                os.kill(victim, signal.SIGCONT)
            records.append(
                {
                    "victim": v,
                    "start": start,
                    "end": end,
                    "victim_state": victim_state,
                    "other_state": other_state,
                }
            )
            if progress and (i + 1) % 20 == 0:
                print(f"  {i + 1} pauses", file=sys.stderr, flush=True)
        time.sleep(rng.uniform(lo, hi))
        t2 = _NOW()
        time.sleep(baseline_s / 2)
        t3 = _NOW()
        stop.value = 1
        for p in procs:
            p.join(60)
        hung = [p.name for p in procs if p.exitcode is None]
        failed = [f"{p.name}: exit {p.exitcode}" for p in procs if p.exitcode not in (0, None)]
        if hung or failed:
            raise RuntimeError(f"the pipeline did not finish: hung {hung}, failed {failed}")
        times = _load(out_dir, "times", "d")
        who = _load(out_dir, "who", "B")
        seqs = _load(out_dir, "seqs", "Q")
    finally:
        stop.value = 1
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                if p in workers:
                    os.kill(p.pid, signal.SIGCONT)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                p.join(10)
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGKILL)
                p.join(10)
        shutil.rmtree(out_dir, ignore_errors=True)
        qa.destroy()
        qb.destroy()
    load_end = os.getloadavg()

    # Control windows: as many as pauses, of the same length, at random in the unpaused phases.
    unpaused = [(t0, t1), (t2, t3)]
    controls = []
    for _ in range(pauses):
        a, b = unpaused[0] if rng.random() < 0.5 else unpaused[1]
        s = rng.uniform(a, max(a, b - pause_s))
        controls.append((s, min(b, s + pause_s)))
    result = analyze(times, who, records, unpaused, (t1, t2), controls, freeze_s)

    n_sent = sent.value
    seen = bytearray(max(n_sent, 0))
    dup = bogus = 0
    for s in seqs:
        if s >= n_sent:
            bogus += 1
        elif seen[s]:
            dup += 1
        else:
            seen[s] = 1
    result.update(
        sent=n_sent,
        received=len(seqs),
        lost=n_sent - (len(seqs) - dup - bogus),
        duplicated=dup,
        unknown=bogus,
        pause_ms=pause_ms,
        ring_bytes=qa.maxsize,
        msg_bytes=msg_bytes,
        cpus=os.cpu_count(),
        load=(load_start[0], load_end[0]),
        seed=seed,
        views=views,
    )
    return result


_MAX_LINES = 12  # of freezes and of long gaps listed


def _ms(x: float) -> str:
    """Milliseconds rounded down to 0.1 (99.96 is not shown as the 100 it falls short of)."""
    return f"{math.floor(x * 10) / 10:.1f}"


def report(r: Dict[str, Any]) -> str:
    """The result of run() as text."""
    n = r["pauses"]
    pg, cg = r["pause_gaps_ms"], r["control_gaps_ms"]
    fm = f"{r['freeze_ms']:.1f}".rstrip("0").rstrip(".")
    share = (
        r["arrivals_in_pauses_by_other"] / r["arrivals_in_pauses"]
        if r["arrivals_in_pauses"]
        else 0.0
    )
    long_gaps = r["long_gaps"]
    overlapping = sum(1 for g in long_gaps if g["pauses"])
    rate_ratio = r["rate_paused"] / r["rate_unpaused"] if r["rate_unpaused"] else 0.0
    lines = [
        "pipeline: producer -> A -> 2 workers -> B -> sink; "
        f"rings of {r['ring_bytes']} bytes, messages of {r['msg_bytes']} bytes; workers read "
        + (
            "A through views (pinned while put to B: the positive control)"
            if r["views"]
            else "with get (copy, then take)"
        ),
        f"machine: {r['cpus']} CPUs, load average {r['load'][0]:.2f} at start, "
        f"{r['load'][1]:.2f} at end",
        f"pauses: {n} SIGSTOPs of one worker of {r['pause_ms']:g} ms (held "
        f"{r['held_ms_mean']:.1f} ms on average, at most {r['held_ms_max']:.1f} ms); stopped "
        f"worker seen stopped (state T) in {r['victim_seen_stopped']}/{n}, other worker seen "
        f"not stopped in {r['other_seen_running']}/{n}",
        f"freeze = a pause in which the sink received nothing for >= {fm} ms while the other "
        "worker was not stopped",
        f"freezes: {r['freezes']} of {n} pauses ({r['frozen_to_end']} of them lasting until "
        "SIGCONT)",
    ]
    for f in r["freeze_list"][:_MAX_LINES]:
        lines.append(
            f"  pause {f['pause']}: worker {f['victim']} stopped, nothing for "
            f"{_ms(f['gap_ms'])} ms from {f['gap_from_ms']:.1f} ms into the pause; "
            f"{f['arrivals']} arrivals in the pause"
        )
    if r["freezes"] > _MAX_LINES:
        lines.append(f"  ... and {r['freezes'] - _MAX_LINES} more")
    lines += [
        f"noise floor: {r['quiet_controls']} of {r['controls']} windows of "
        f"{r['pause_ms']:g} ms without any pause also had nothing for >= {fm} ms",
        f"longest gap in a pause window (ms): median {_ms(_pct(pg, 0.5))}, "
        f"p90 {_ms(_pct(pg, 0.9))}, max {_ms(max(pg, default=0.0))}",
        f"longest gap in a window without pause (ms): median {_ms(_pct(cg, 0.5))}, "
        f"p90 {_ms(_pct(cg, 0.9))}, max {_ms(max(cg, default=0.0))}",
        f"longest gap between arrivals: {_ms(r['longest_gap_paused_ms'])} ms in the phase "
        f"with pauses, {_ms(r['longest_gap_unpaused_ms'])} ms in the phases without",
        f"gaps >= {fm} ms anywhere: {len(long_gaps)} ({overlapping} overlapping a pause)",
    ]
    for g in long_gaps[:_MAX_LINES]:
        if g["pauses"]:
            where = "overlapping pause " + ", ".join(str(i) for i in g["pauses"])
        elif g["after_sigcont_ms"] is not None:
            where = f"no pause; {g['after_sigcont_ms']:.1f} ms after the last SIGCONT"
        else:
            where = "no pause"
        lines.append(
            f"  at {g['at_s']:.3f} s ({g['phase']}): {_ms(g['gap_ms'])} ms without an arrival, "
            + where
        )
    if len(long_gaps) > _MAX_LINES:
        lines.append(f"  ... and {len(long_gaps) - _MAX_LINES} more")
    lines += [
        f"during the pauses the sink received {r['arrivals_in_pauses']} messages, "
        f"{share:.1%} of them through the worker that was running",
        f"throughput: {r['rate_unpaused']:,.0f} msg/s without pauses "
        f"({r['unpaused_s']:.1f} s), {r['rate_paused']:,.0f} msg/s with pauses "
        f"({r['paused_s']:.1f} s, {rate_ratio:.0%} of the rate without)",
        f"messages: {r['sent']} sent, {r['received']} received, {r['lost']} lost, "
        f"{r['duplicated']} duplicated",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--pauses", type=int, default=None, help="SIGSTOPs (default 120)")
    ap.add_argument("--pause-ms", type=float, default=150.0, help="length of each (ms)")
    ap.add_argument(
        "--freeze-ms", type=float, default=None, help="gap that counts (default 2/3 pause-ms)"
    )
    ap.add_argument(
        "--baseline-s", type=float, default=None, help="seconds without pauses (default 10)"
    )
    ap.add_argument("--ring-bytes", type=int, default=8192, help="size of both rings")
    ap.add_argument("--msg-bytes", type=int, default=1024, help="size of each message")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--quick", action="store_true", help="20 pauses, 2 s without pauses")
    ap.add_argument(
        "--views",
        action="store_true",
        help="positive control: workers read A through views (which pin by design)",
    )
    args = ap.parse_args(argv)
    pauses = args.pauses if args.pauses is not None else (20 if args.quick else 120)
    baseline = args.baseline_s if args.baseline_s is not None else (2.0 if args.quick else 10.0)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    r = run(
        pauses=pauses,
        pause_ms=args.pause_ms,
        freeze_ms=args.freeze_ms,
        baseline_s=baseline,
        ring_bytes=args.ring_bytes,
        msg_bytes=args.msg_bytes,
        seed=seed,
        progress=True,
        views=args.views,
    )
    print(report(r))
    print(f"seed: {seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
