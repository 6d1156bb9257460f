"""The `sage-queue` command line, run as `python -m sage_queue` in a child process."""

import multiprocessing
import os
import subprocess

import pytest
import sage_queue
import sq_helpers as h
from sage_queue import SageQueue


def cli(*args, timeout=60):
    return subprocess.run(
        [h.python(), "-m", "sage_queue", *args],
        env=h.child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ls_lists_queues_with_their_numbers(make_queue, qname):
    empty = cli("ls")
    assert empty.returncode == 0 and "no queues" in empty.stdout
    q = make_queue(qname, maxsize=8192)
    q.put_many(["a", "b", "c"])
    res = cli("ls")
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split() == ["NAME", "CAPACITY", "USED", "MESSAGES", "ATTACHED"]
    (row,) = [r.split() for r in rows if r.split()[0] == qname]
    assert row[1] == "8192" and int(row[2]) > 0 and row[3] == "3" and row[4] == "1"


def test_ls_shows_a_foreign_file_as_invalid(queue_dir, qname):
    with open(os.path.join(queue_dir, f"sq-{os.geteuid()}-{qname}"), "wb") as f:
        f.write(b"junk")
    res = cli("ls")
    assert res.returncode == 0 and qname in res.stdout and "invalid" in res.stdout


def test_stat_prints_every_statistic(make_queue, qname):
    q = make_queue(qname)
    q.put_many([1, 2])
    q.get()
    res = cli("stat", qname)
    assert res.returncode == 0, res.stderr
    stats = dict(line.split(None, 1) for line in res.stdout.splitlines())
    assert stats["messages"] == "1" and stats["msgs_in"] == "2" and stats["msgs_out"] == "1"
    assert stats["attached"] == "1" and stats["name"] == qname
    assert q.qsize() == 1  # looking did not change anything
    assert os.path.exists(q.path)


def test_stat_of_a_missing_queue_fails(qname):
    res = cli("stat", qname)
    assert res.returncode == 1 and "does not exist" in res.stderr and "Errno" not in res.stderr


def test_rm_removes_a_queue(make_queue, qname):
    q = make_queue(qname, namespace="ns")
    res = cli("rm", qname, "--namespace", "ns")
    assert res.returncode == 0, res.stderr
    assert not os.path.exists(q.path)
    with pytest.raises(sage_queue.QueueClosed):  # attached handles see it closed
        q.put(1)
    res = cli("rm", qname, "--namespace", "ns")
    assert res.returncode == 1


def test_bad_name_is_an_error_not_a_traceback():
    res = cli("rm", "bad name")
    assert res.returncode == 1 and "invalid queue name" in res.stderr
    assert "Traceback" not in res.stderr


def test_gc_removes_only_abandoned_queues(queue_dir, qname):
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_leave_a_queue, args=(qname,))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    live = SageQueue(h.unique_name())
    res = cli("gc")
    assert res.returncode == 0, res.stderr
    assert f"removed {qname}" in res.stdout and live.name not in res.stdout
    assert os.listdir(queue_dir) == [os.path.basename(live.path)]
    live.close()


def _leave_a_queue(name):
    q = SageQueue(name, auto_cleanup=False)
    q.put("orphan")
    q.close()


def test_demo_runs():
    res = cli("demo", "--count", "3000", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "msgs/s" in res.stdout and "each once: yes" in res.stdout


def test_no_command_prints_help():
    res = cli()
    assert res.returncode == 2 and "usage" in res.stdout
