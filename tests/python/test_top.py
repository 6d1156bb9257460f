"""`sage-queue top`: --once, --json, --prometheus and the live curses view (through a real
terminal: tmux), against real queues and real producer/consumer processes."""

import json
import math
import os
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest
import sq_helpers as h
from sage_queue import SageQueue
from sage_queue.top import RECORD_KEYS

# A child that attaches to a queue by name (auto_cleanup on, SageQueue's default), says
# "ready" (after its first put, for a producer) and then works until it is killed: puts
# (paced) or gets; or, "idle", stays attached until its stdin closes, then closes the queue.
CHILD = """
import sys, time
from sage_queue import SageQueue
role, name = sys.argv[1], sys.argv[2]
q = SageQueue(name, create=False)
if role == "producer":
    q.put(b"x" * 100)
print("ready", flush=True)
if role == "idle":
    sys.stdin.read()
    q.close()
    sys.exit(0)
while True:
    if role == "producer":
        q.put(b"x" * 100)
        time.sleep(0.001)
    else:
        try:
            q.get(timeout=0.2)
        except Exception:
            pass
"""


def cli(*args, timeout=120):
    """Run `python -m sage_queue ARGS`; returns (process, stdout, stderr) once it exited."""
    proc = subprocess.Popen(
        [h.python(), "-m", "sage_queue", *args],
        env=h.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=timeout)
    return proc, out, err


def start_child(role, name):
    """A producer, consumer or idle process attached to queue `name`, once it is ready."""
    proc = subprocess.Popen(
        [h.python(), "-c", CHILD, role, name],
        env=h.child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready or proc.stdout.readline().strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"the {role} did not start")
    return proc


def stop(*procs):
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(60)
        p.stdin.close()
        p.stdout.close()


def finish(idle):
    """Let an idle child close its queue and exit; returns its exit code."""
    idle.stdin.close()
    code = idle.wait(60)
    idle.stdout.close()
    return code


def not_a_queue_file(queue_dir, name, content=b"junk"):
    path = os.path.join(queue_dir, f"sq-{os.geteuid()}-{name}")
    with open(path, "wb") as f:
        f.write(content)
    return path


# The cells of a queue's row of the table (the FILL column is two tokens: bar and percent).
COLUMNS = ["name", "depth", "bytes", "bar", "fill", "put/s", "get/s", "putB/s", "getB/s",
           "att", "pwait", "cwait", "pin", "unack", "redlv", "lost", "recov", "maxitems", "closed",
           "pids"]  # fmt: skip


def row_of(text, name):
    """The cells of queue `name`'s row in a screen or --once output, or None."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == name and len(cells) >= len(COLUMNS) - 1:
            return dict(zip(COLUMNS, cells))
    return None


# ---- --once, --json ----


def test_once_prints_each_queue_without_counting_itself(make_queue):
    bounded = make_queue(h.unique_name("a"), max_items=50)
    bounded.put_many([1, 2, 3])
    make_queue(h.unique_name("b"))
    proc, out, err = cli("top", "--once", "--interval", "0.2")
    assert proc.returncode == 0, err
    assert "without attaching" in out  # the view says top is not attached
    row = row_of(out, bounded.name)
    assert row is not None, out
    assert row["depth"] == "3" and row["maxitems"] == "50" and row["fill"] == "6%"
    assert row["put/s"] == "0" and row["closed"] == "no"
    # Only this test process is attached: top reads without attaching.
    assert row["att"] == "1" and row["pids"] == str(os.getpid())
    assert f"top is pid {proc.pid})" in out


def test_once_with_no_queues():
    proc, out, err = cli("top", "--once", "--interval", "0.1")
    assert proc.returncode == 0, err
    assert "no queues in" in out


def test_json_rates_while_a_producer_puts(make_queue):
    q = make_queue(h.unique_name("rates"), maxsize=1 << 22)
    producer = start_child("producer", q.name)
    consumer = start_child("consumer", q.name)
    try:
        proc, out, err = cli("top", "--json", "--interval", "0.5")
    finally:
        stop(producer, consumer)
    assert proc.returncode == 0, err
    recs = json.loads(out)
    assert all(list(r) == list(RECORD_KEYS) for r in recs)  # the same keys, in order
    (rec,) = [r for r in recs if r["name"] == q.name]
    assert rec["valid"] is True and rec["error"] is None and rec["remote"] is False
    assert rec["put_msgs_per_s"] > 0 and rec["put_bytes_per_s"] > 0
    assert rec["get_msgs_per_s"] > 0 and rec["get_bytes_per_s"] > 0
    assert 0 < rec["rate_interval_s"] < 60
    assert rec["msgs_in"] >= rec["msgs_out"] > 0
    assert sorted(rec["pids"]) == sorted([os.getpid(), producer.pid, consumer.pid])
    assert rec["attached"] == 3 and proc.pid not in rec["pids"]
    assert rec["max_items"] is None and rec["closed"] is False
    assert rec["producers_waiting"] >= 0 and rec["consumers_waiting"] >= 0


def test_invalid_segment_is_shown_with_its_error(make_queue, queue_dir):
    good = make_queue(h.unique_name("good"))
    good.put("x")
    bad = h.unique_name("bad")
    not_a_queue_file(queue_dir, bad)
    proc, out, err = cli("top", "--once", "--interval", "0.1")
    assert proc.returncode == 0, err
    (line,) = [line for line in out.splitlines() if line.split()[:1] == [bad]]
    assert "invalid: not a sage-queue segment" in line and "Traceback" not in err
    assert row_of(out, good.name)["depth"] == "1"
    proc, out, err = cli("top", "--json", "--interval", "0.1")
    assert proc.returncode == 0, err
    recs = {r["name"]: r for r in json.loads(out)}
    assert recs[bad]["valid"] is False and "not a sage-queue segment" in recs[bad]["error"]
    assert recs[bad]["messages"] is None and list(recs[bad]) == list(RECORD_KEYS)
    assert recs[good.name]["messages"] == 1


def test_bridge_and_gateway_state_files_are_shown(make_queue, queue_dir):
    q = make_queue(h.unique_name("served"))
    bridge = {"queue": q.name, "status": "ok", "pid": os.getpid(), "owner_node": "n" * 20,
              "window_items": 1024, "window_bytes": 1 << 20, "lost": 2, "taken_back": 0,
              "items_in": 5, "items_out": 7, "bytes_in": 100, "bytes_out": 140,
              "items_given_back": 1}  # fmt: skip
    with open(os.path.join(queue_dir, ".sq-bridge-00112233445566aa.json"), "w") as f:
        json.dump(bridge, f)
    with open(os.path.join(queue_dir, ".sq-gateway-00112233445566bb.json"), "w") as f:
        json.dump({"queue": q.name, "sent": 9, "received": 8, "returned": 1}, f)
    proc, out, err = cli("top", "--once", "--interval", "0.1")
    assert proc.returncode == 0, err
    assert "bridge 00112233: ok" in out and "window 1024 items/1.00M" in out
    assert "moved in 5/100B, out 7/140B" in out and "lost 2" in out
    assert "gateway 00112233:  sent to its bridge 9  received from it 8  given back 1" in out
    proc, out, err = cli("top", "--json", "--interval", "0.1")
    (rec,) = [r for r in json.loads(out) if r["name"] == q.name]
    assert rec["bridges"][0]["window_items"] == 1024 and rec["bridges"][0]["alive"] is True
    assert rec["bridges"][0]["key"] == "00112233445566aa"
    assert rec["gateways"] == [{"key": "00112233445566bb", "queue": q.name, "sent": 9,
                                "received": 8, "returned": 1}]  # fmt: skip


def test_stat_leaves_its_own_pid_out(make_queue):
    q = make_queue(h.unique_name("stat"))
    proc, out, err = cli("stat", q.name, "--json")
    assert proc.returncode == 0, err
    stats = json.loads(out)
    assert stats["pids"] == [os.getpid()] and stats["attached"] == 1
    assert stats["producers_waiting"] == 0 and stats["consumers_waiting"] == 0


def test_live_view_needs_a_terminal():
    proc, out, err = cli("top")
    assert proc.returncode == 1 and "--once, --json or --prometheus" in err


# ---- --prometheus ----

METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
SAMPLE = re.compile(rf"^({METRIC})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (?P<value>\S+)$")


def parse_prometheus(text):
    """Parse the text exposition format strictly (every rule this output relies on):
    returns {family: {"type", "help", "samples": {frozenset(labels): value}}}."""
    assert text.endswith("\n") and "\n\n" not in text
    families, current = {}, None
    for line in text[:-1].split("\n"):
        if line.startswith("# "):
            kind, name, rest = (line[2:].split(" ", 2) + [""])[:3]
            assert kind in ("HELP", "TYPE"), line
            assert re.fullmatch(METRIC, name), line
            fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            assert not fam["samples"], f"{kind} after samples of {name}"
            if kind == "TYPE":
                assert fam["type"] is None and rest in ("counter", "gauge"), line
                fam["type"] = rest
            else:
                assert fam["help"] is None and rest, line
                fam["help"] = rest
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, body, value = m.group(1), m.group(2) or "", m.group("value")
        # All samples of a family follow its HELP and TYPE lines, together.
        assert name == current, f"{name} is not grouped under its TYPE line"
        labels = {}
        for k, v in re.findall(LABEL, body):
            assert k not in labels, line
            labels[k] = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g[1], g[1]), v)
        key = frozenset(labels.items())
        fam = families[name]
        assert key not in fam["samples"], f"duplicate sample {line}"
        fam["samples"][key] = float(value)
        assert not math.isnan(fam["samples"][key]) or value == "NaN"
    for name, fam in families.items():
        assert fam["type"] and fam["help"] and fam["samples"], name
        if fam["type"] == "counter":
            assert name.endswith("_total") and all(v >= 0 for v in fam["samples"].values())
    return families


def value(families, name, **labels):
    return families[name]["samples"][frozenset(labels.items())]


def test_prometheus_text_is_valid_and_matches_the_queues(make_queue, queue_dir):
    q = make_queue(h.unique_name("prom"), max_items=100)
    q.put_many(list(range(12)))
    q.get()
    bad = h.unique_name("bad")
    not_a_queue_file(queue_dir, bad)
    child = start_child("idle", q.name)
    try:
        proc, out, err = cli("top", "--prometheus")
    finally:
        stop(child)
    assert proc.returncode == 0, err
    fams = parse_prometheus(out)
    name = q.name
    assert value(fams, "sage_queue_messages", queue=name) == q.qsize() == 11
    assert value(fams, "sage_queue_msgs_in_total", queue=name) == 12
    assert value(fams, "sage_queue_msgs_out_total", queue=name) == 1
    assert value(fams, "sage_queue_max_items", queue=name) == 100
    assert value(fams, "sage_queue_fill_ratio", queue=name) == pytest.approx(0.11)
    assert value(fams, "sage_queue_capacity_bytes", queue=name) == q.maxsize
    assert value(fams, "sage_queue_used_bytes", queue=name) > 0
    assert value(fams, "sage_queue_attached_processes", queue=name) == 2
    for pid in (os.getpid(), child.pid):
        assert value(fams, "sage_queue_attached_handles", queue=name, pid=str(pid)) == 1
    handles = fams["sage_queue_attached_handles"]["samples"]
    assert str(proc.pid) not in {dict(k)["pid"] for k in handles}
    assert value(fams, "sage_queue_closed", queue=name) == 0
    assert value(fams, "sage_queue_consumers_waiting", queue=name) == 0
    assert fams["sage_queue_msgs_in_total"]["type"] == "counter"
    assert fams["sage_queue_messages"]["type"] == "gauge"
    assert value(fams, "sage_queue_valid", queue=name) == 1
    assert value(fams, "sage_queue_valid", queue=bad) == 0
    (labels,) = [dict(k) for k in fams["sage_queue_invalid_info"]["samples"]]
    assert labels["queue"] == bad and "not a sage-queue segment" in labels["error"]
    assert frozenset({("queue", bad)}) not in fams["sage_queue_messages"]["samples"]


def test_prometheus_of_an_empty_folder_is_empty():
    proc, out, err = cli("top", "--prometheus")
    assert proc.returncode == 0 and out == "", err


# ---- the live view, in a real terminal ----


class Tmux:
    """A tmux server of its own: a unique socket in the test's temporary folder (so nothing
    is left behind), killed at the end."""

    def __init__(self, tmp):
        self.socket = os.path.join(tmp, f"tmux-{uuid.uuid4().hex[:8]}")
        self.conf = os.path.join(tmp, "tmux.conf")
        with open(self.conf, "w") as f:
            f.write("set -g default-terminal screen\n")

    def run(self, *args, check=True):
        res = subprocess.run(
            ["tmux", "-S", self.socket, "-f", self.conf, *args],
            capture_output=True, text=True, timeout=60, env=h.child_env(),
        )  # fmt: skip
        if check:
            assert res.returncode == 0, res.stderr
        return res

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "top").stdout

    def wait(self, what, ok):
        """The screen, once ok(screen) is true."""
        return wait_for(what, lambda: (lambda s: s if ok(s) else None)(self.screen()))

    def kill(self):
        self.run("kill-server", check=False)


def wait_for(what, check, timeout=60.0):
    """Poll `check()` until it returns a true value (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rate(screen, name):
    row = row_of(screen, name)
    return None if row is None else row["put/s"]


def test_live_view_in_a_terminal(make_queue, queue_dir):
    busy = make_queue(h.unique_name("busy"), maxsize=1 << 22)
    still = make_queue(h.unique_name("still"))
    still.put_many(list(range(7)))
    bad = h.unique_name("bad")
    not_a_queue_file(queue_dir, bad)
    # A queue whose only handle is a child's, with auto_cleanup: top must not keep it alive.
    passing = h.unique_name("passing")
    SageQueue(passing, auto_cleanup=False).close()
    owner = start_child("idle", passing)
    producer = start_child("producer", busy.name)
    consumer = start_child("consumer", busy.name)
    tmp = tempfile.mkdtemp()
    tmux = Tmux(tmp)
    env = h.child_env()
    exit_file = os.path.join(tmp, "exit")
    # The shell writes top's exit code when top has exited.
    command = " ".join(
        ["env", f"SAGE_QUEUE_DIR={shlex.quote(queue_dir)}",
         f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])}",
         shlex.quote(h.python()), "-m", "sage_queue", "top;",
         "echo", "$?", ">", shlex.quote(exit_file + ".tmp"), ";",
         "mv", shlex.quote(exit_file + ".tmp"), shlex.quote(exit_file)]
    )  # fmt: skip
    try:
        tmux.run("new-session", "-d", "-s", "top", "-x", "180", "-y", "40", command)
        screen = tmux.wait("the queues on the screen",
                           lambda s: row_of(s, still.name) and row_of(s, busy.name))  # fmt: skip
        assert row_of(screen, still.name)["depth"] == "7"
        assert re.search(rf"{bad} +invalid: not a sage-queue segment", screen)
        assert "without attaching" in screen
        top_pid = int(re.search(r"top is pid (\d+)\)", screen)[1])
        assert str(top_pid) not in row_of(screen, busy.name)["pids"].split(",")
        row = row_of(screen, busy.name)
        assert sorted(row["pids"].split(",")) == sorted(
            str(p) for p in (os.getpid(), producer.pid, consumer.pid)
        )
        # The rate column moves: "-" before two reads, then what the producer puts.
        wait_for("a put rate", lambda: rate(tmux.screen(), busy.name) not in (None, "-", "0"))
        assert rate(tmux.screen(), still.name) in ("-", "0")
        # The queue owned by the child goes away when the child exits (auto_cleanup is the
        # child's; top's brief reads do not keep it alive), and leaves the view.
        passing_path = os.path.join(queue_dir, f"sq-{os.geteuid()}-{passing}")
        assert os.path.exists(passing_path) and row_of(tmux.screen(), passing)
        assert finish(owner) == 0
        wait_for("the child's queue removed", lambda: not os.path.exists(passing_path))
        wait_for("the queue gone from the view", lambda: passing not in tmux.screen())
        # Sorting by rate puts the busy queue first.
        tmux.run("send-keys", "-t", "top", "s")
        screen = tmux.wait("sorted by rate", lambda s: "sorted by rate" in s)
        names = {busy.name, still.name, bad}
        rows = [line.split()[0] for line in screen.splitlines()
                if line.split()[:1] and line.split()[0] in names]  # fmt: skip
        assert rows == [busy.name, still.name, bad]  # busiest first, no rate last
        # The producer stops: the put rate falls back to 0.
        stop(producer, consumer)
        wait_for("the put rate back to 0", lambda: rate(tmux.screen(), busy.name) == "0")
        # A smaller terminal: the view is drawn again at the new size.
        tmux.run("resize-window", "-t", "top", "-x", "90", "-y", "12")
        screen = tmux.wait(
            "the view at 90 columns",
            lambda s: "sage-queue top" in s and max(map(len, s.splitlines())) <= 90,
        )
        assert busy.name in screen and len(screen.splitlines()) <= 12
        tmux.run("send-keys", "-t", "top", "q")
        wait_for("top to exit", lambda: os.path.exists(exit_file))
        with open(exit_file) as f:
            assert f.read().strip() == "0"
        with pytest.raises(ProcessLookupError):
            os.kill(top_pid, 0)
    finally:
        stop(*[p for p in (owner, producer, consumer) if not p.stdout.closed])
        tmux.kill()
        shutil.rmtree(tmp, ignore_errors=True)
