"""The `sage-queue` command line, run as `python -m sage_queue` in a child process."""

import multiprocessing
import os
import pty
import re
import subprocess

import pytest
import sage_queue
import sq_helpers as h
from sage_queue import SageQueue

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, timeout=60):
    return subprocess.run(
        [h.python(), "-m", "sage_queue", *args],
        env=h.child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_with_terminal_stderr(*args, timeout=120):
    """Run the CLI with stderr on a pseudo-terminal; returns (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [h.python(), "-m", "sage_queue", *args],
        env=h.child_env(),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout), out.decode(), err.decode()


def not_a_queue_file(queue_dir, name, content=b""):
    """A file named like a queue of this user that is not one; returns its path."""
    path = os.path.join(queue_dir, f"sq-{os.geteuid()}-{name}")
    with open(path, "wb") as f:
        f.write(content)
    return path


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
    # Acknowledged gets: held, returned and delivered-again messages.
    q.put_many([3, 4])
    _, held = q.get_acked()
    _, returned = q.get_acked()
    q.nack(returned)
    stats = dict(line.split(None, 1) for line in cli("stat", qname).stdout.splitlines())
    assert (stats["unacked"], stats["redeliverable"], stats["redelivered"]) == ("1", "1", "0")
    assert stats["dead_lettered"] == "0" and stats["ack_dropped"] == "0"
    q.ack(held)


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


# ---- argument checks: argparse errors (exit code 2), never a traceback or a silent run ----


def _argparse_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "usage:" in res.stderr and "Traceback" not in res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


def test_bench_only_rejects_an_unknown_scenario_and_lists_the_choices():
    res = cli("bench", "--only", "bogus")
    _argparse_error(res, "--only", "'bogus'", "small_dict", "round_trip", "2p_2c_small_dict")
    res = cli("bench", "--only", "round_trip,bogus")
    _argparse_error(res, "'bogus'")
    res = cli("bench", "--only", ",")
    _argparse_error(res, "no scenario")


@pytest.mark.parametrize("runs", ["0", "-1", "two"])
def test_bench_runs_must_be_a_positive_integer(runs):
    res = cli("bench", "--runs", runs, "--quick", "--only", "round_trip", timeout=120)
    _argparse_error(res, "--runs")


@pytest.mark.parametrize(
    "option, value",
    [("--count", "-5"), ("--count", "0"), ("--count", "1.5"), ("--maxsize", "0"),
     ("--timeout", "-1"), ("--timeout", "nan")],
)  # fmt: skip
def test_demo_rejects_values_that_are_not_positive(option, value):
    res = cli("demo", option, value, timeout=120)
    _argparse_error(res, option)
    assert "msgs/s" not in res.stdout


def test_version_is_the_package_version():
    with open(os.path.join(REPO, "Cargo.toml")) as f:
        (cargo_version,) = re.findall(r'(?m)^version\s*=\s*"([^"]+)"', f.read())[:1]
    res = cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"sage-queue {cargo_version}"


def test_bench_progress_goes_only_to_a_terminal():
    res = cli("bench", "--quick", "--only", "round_trip", timeout=180)
    assert res.returncode == 0, res.stderr
    assert "round_trip" in res.stdout  # the table
    assert "\r" not in res.stderr and "..." not in res.stderr, repr(res.stderr)
    code, out, err = cli_with_terminal_stderr("bench", "--quick", "--only", "round_trip")
    assert code == 0, err
    assert "round_trip" in out
    assert "\r[round_trip] sage-queue ..." in err


# ---- files that are not queues: rm --force and gc --invalid ----


def test_rm_refuses_a_file_that_is_not_a_queue_and_names_it(queue_dir, qname):
    path = not_a_queue_file(queue_dir, qname)
    res = cli("rm", qname)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert path in res.stderr and f"sage-queue rm --force {qname}" in res.stderr, res.stderr
    assert os.path.exists(path)


@pytest.mark.parametrize("content", [b"", b"junk" * 1000])
def test_rm_force_removes_a_file_that_is_not_a_queue(queue_dir, qname, content):
    path = not_a_queue_file(queue_dir, qname, content)
    res = cli("rm", "--force", qname)
    assert res.returncode == 0, res.stderr
    assert f"removed {qname}" in res.stdout
    assert not os.path.exists(path)
    res = cli("rm", "--force", qname)  # nothing left to remove
    assert res.returncode == 1 and "no queue named" in res.stderr


def test_rm_force_removes_a_valid_queue_too(make_queue, qname):
    q = make_queue(qname, namespace="ns")
    res = cli("rm", "-f", qname, "-n", "ns")
    assert res.returncode == 0, res.stderr
    assert f"removed ns.{qname}" in res.stdout and not os.path.exists(q.path)


def test_gc_keeps_a_file_that_is_not_a_queue_and_says_so(queue_dir, qname):
    path = not_a_queue_file(queue_dir, qname)
    res = cli("gc")
    assert res.returncode == 0, res.stderr
    assert "0 queue(s) removed" in res.stdout
    assert path in res.stderr and "sage-queue gc --invalid" in res.stderr, res.stderr
    assert os.path.exists(path)


def test_gc_invalid_removes_files_that_are_not_queues(queue_dir, qname):
    path = not_a_queue_file(queue_dir, qname)
    junk = not_a_queue_file(queue_dir, qname + "-junk", b"junk")
    live = SageQueue(h.unique_name())
    try:
        res = cli("gc", "--invalid")
        assert res.returncode == 0, res.stderr
        assert f"removed {qname}" in res.stdout and f"removed {qname}-junk" in res.stdout
        assert live.name not in res.stdout and "gc --invalid" not in res.stderr
        assert not os.path.exists(path) and not os.path.exists(junk)
        assert os.listdir(queue_dir) == [os.path.basename(live.path)]
    finally:
        live.close()
