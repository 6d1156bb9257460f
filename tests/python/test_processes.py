"""Several processes on one queue: children by name, by pickled queue and by reference
(spawn and fork), the fork rule, many producers and consumers, a producer killed with
SIGKILL, clean-up after children exit, and Ctrl-C during a blocked call."""

import multiprocessing
import os
import pickle
import queue
import signal
import subprocess
import time

import pytest
import sage_queue
import sq_helpers as h
from sage_queue import SageQueue, SageQueueRef

CONTEXTS = ["spawn", "fork"]
LONG = 60


def run(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def finish(*procs):
    for p in procs:
        p.join(LONG)
        assert p.exitcode == 0, f"{p.name} exit code {p.exitcode}"


@pytest.mark.parametrize("method", CONTEXTS)
def test_child_by_name(method, make_queue, qname):
    q = make_queue(qname)
    ctx = multiprocessing.get_context(method)
    finish(run(ctx, h.put_by_name, qname, ["a", "b"]))
    assert [q.get(timeout=LONG), q.get(timeout=LONG)] == ["a", "b"]
    assert q.get_stats()["attached"] == 1


@pytest.mark.parametrize("method", CONTEXTS)
def test_child_by_queue_object(method, make_queue):
    q = make_queue()
    ctx = multiprocessing.get_context(method)
    finish(run(ctx, h.put_into, q, [1, 2, 3]))
    assert q.get_many(max_items=10, timeout=LONG) == [1, 2, 3]
    assert q.get_stats()["attached"] == 1
    q.put("parent still attached")
    assert q.get() == "parent still attached"


@pytest.mark.parametrize("method", CONTEXTS)
def test_child_by_reference(method, make_queue):
    q = make_queue(namespace="ns")
    ctx = multiprocessing.get_context(method)
    finish(run(ctx, h.put_from_ref, q.get_reference(), ["by ref"]))
    assert q.get(timeout=LONG) == "by ref"


def test_reference_is_small_and_picklable(make_queue, qname):
    q = make_queue(qname, maxsize=8192, namespace="ns", serializer="raw")
    ref = q.get_reference()
    assert isinstance(ref, SageQueueRef)
    assert (ref.name, ref.namespace, ref.maxsize, ref.size) == (qname, "ns", 8192, 8192)
    assert ref.auto_cleanup is True and ref.creator_pid == os.getpid()
    assert ref.serializer == "raw" and ref.is_local() and ref.host_id
    blob = pickle.dumps(ref)
    assert len(blob) < 1000
    back = pickle.loads(blob)
    assert back == ref
    with back.get_queue() as other:
        q.put(b"raw")
        assert other.get() == b"raw"
        assert other.name == q.name


def test_pickled_queue_attaches_to_the_same_segment(make_queue):
    q = make_queue()
    copy = pickle.loads(pickle.dumps(q))
    try:
        assert copy.path == q.path and copy.maxsize == q.maxsize
        assert q.get_stats()["attached"] == 2
        copy.put("via copy")
        assert q.get() == "via copy"
    finally:
        copy.close()


def test_reference_from_another_host_is_refused(make_queue):
    q = make_queue()
    ref = q.get_reference()
    foreign = SageQueueRef(**{**ref.__dict__, "host_id": "elsewhere/0000"})
    assert not foreign.is_local()
    with pytest.raises(RuntimeError, match="host"):
        foreign.get_queue()


def test_reference_without_transferable_serializer(make_queue):
    class Local:
        def dumps(self, x):
            return repr(x).encode()

        def loads(self, b):
            return b.decode()

    q = make_queue(serializer=Local())
    ref = q.get_reference()
    assert ref.serializer is None
    with pytest.raises(ValueError, match="serializer"):
        ref.get_queue()
    with ref.get_queue(serializer="raw") as other:
        q.put(5)
        assert other.get() == b"5"


def test_json_module_serializer_travels_with_the_reference(make_queue):
    import json

    q = make_queue(serializer=json)
    out = make_queue()
    ctx = multiprocessing.get_context("spawn")
    q.put({"k": [1, 2]})
    finish(run(ctx, h.get_with_json_ref, q.get_reference(), out))
    assert out.get(timeout=LONG) == {"k": [1, 2]}


def test_forked_child_gets_its_own_attachment(make_queue):
    q = make_queue()
    out = make_queue()
    ctx = multiprocessing.get_context("fork")
    p = run(ctx, h.report_attachment, q, out)
    finish(p)
    assert q.get(timeout=LONG) == p.pid
    assert out.get(timeout=LONG) == 2  # seen from the child: the parent's and its own
    stats = q.get_stats()
    assert stats["attached"] == 1  # the child's attachment went with it, ours stayed
    assert os.path.exists(q.path)
    q.put("parent")
    assert q.get() == "parent"


def test_raw_os_fork_child_reattaches_and_parent_keeps_its_handle(make_queue):
    q = make_queue()
    pid = os.fork()
    if pid == 0:  # child: use the inherited object, exit without closing
        code = 1
        try:
            q.put(("child", os.getpid(), q.get_stats()["attached"]))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    who, child_pid, attached = q.get(timeout=LONG)
    assert (who, child_pid, attached) == ("child", pid, 2)
    assert q.get_stats()["attached"] == 1
    q.put("still mine")
    assert q.get() == "still mine"


@pytest.mark.parametrize("method", CONTEXTS)
def test_four_producers_three_consumers_exactly_once_in_order(method, make_queue):
    ctx = multiprocessing.get_context(method)
    q = make_queue(maxsize=64 * 1024)
    results = make_queue()
    count = 1500
    consumers = [run(ctx, h.consumer, q, results, i) for i in range(3)]
    producers = [run(ctx, h.producer, q, i, count) for i in range(4)]
    finish(*producers)
    for _ in consumers:
        q.put(None)
    reports = [results.get(timeout=LONG) for _ in consumers]
    finish(*consumers)
    everything = []
    for _, seen in reports:
        for ident in range(4):
            seqs = [s for i, s in seen if i == ident]
            assert seqs == sorted(seqs), "per-producer order broken within a consumer"
        everything.extend(seen)
    assert sorted(everything) == [(i, s) for i in range(4) for s in range(count)]
    assert q.qsize() == 0


def test_batches_between_processes(make_queue):
    ctx = multiprocessing.get_context("fork")
    q = make_queue(maxsize=16 * 1024)
    results = make_queue()
    count = 2000
    consumers = [run(ctx, h.batch_consumer, q, results, i) for i in range(2)]
    producers = [run(ctx, h.batch_producer, q, i, count, 64) for i in range(2)]
    finish(*producers)
    q.put_many([None, None])
    reports = [results.get(timeout=LONG) for _ in consumers]
    finish(*consumers)
    everything = [item for _, seen in reports for item in seen]
    assert sorted(everything) == [(i, s) for i in range(2) for s in range(count)]


def test_task_done_and_join_across_processes(make_queue, qname):
    q = make_queue(qname)
    q.put_many(range(5))
    ctx = multiprocessing.get_context("spawn")
    p = run(ctx, h.take_and_mark_done, qname, 5)
    assert q.join(timeout=LONG) is True
    finish(p)


def test_producer_killed_mid_stream_leaves_the_queue_usable(make_queue):
    ctx = multiprocessing.get_context("fork")
    q = make_queue(maxsize=16 * 1024)
    victim = run(ctx, h.endless_producer, q, 0)
    count = 3000
    survivor = run(ctx, h.producer, q, 1, count)
    got = {0: [], 1: []}
    deadline = time.monotonic() + LONG
    killed = False
    while len(got[1]) < count or not killed:
        assert time.monotonic() < deadline, f"stuck: {len(got[1])} of {count} received"
        ident, seq = q.get(timeout=LONG)
        got[ident].append(seq)
        if not killed and len(got[0]) >= 300:
            os.kill(victim.pid, signal.SIGKILL)
            killed = True
    victim.join(LONG)
    finish(survivor)
    assert killed and victim.exitcode == -signal.SIGKILL
    while True:  # drain what the victim left
        try:
            ident, seq = q.get(timeout=0.5)
        except queue.Empty:
            break
        got[ident].append(seq)
    assert got[1] == list(range(count))  # the survivor lost nothing, kept its order
    assert got[0] == list(range(len(got[0])))  # the victim's messages: a prefix, in order
    assert q.qsize() == 0 and q.empty()
    stats = q.get_stats()
    assert stats["lost"] <= 1 and stats["attached"] == 1
    q.put_many(["after", "the kill"])
    assert q.get_many(max_items=10, timeout=LONG) == ["after", "the kill"]


@pytest.mark.parametrize("method", CONTEXTS)
def test_no_file_left_after_a_child_attached_and_exited(method, queue_dir, qname):
    ctx = multiprocessing.get_context(method)
    q = SageQueue(qname)
    finish(run(ctx, h.attach_and_leave, qname, "left behind"))
    assert q.get(timeout=LONG) == "left behind"
    q.close()
    assert os.listdir(queue_dir) == []


@pytest.mark.parametrize("method", CONTEXTS)
def test_last_child_to_exit_removes_the_queue(method, queue_dir, qname):
    """The parent closes first; the child, exiting without close(), is the last handle."""
    ctx = multiprocessing.get_context(method)
    attached, release = ctx.Event(), ctx.Event()
    q = SageQueue(qname)
    p = run(ctx, h.attach_wait_exit, qname, attached, release)
    assert attached.wait(LONG)
    assert q.get(timeout=LONG) == "child attached"
    q.close()
    assert os.listdir(queue_dir) != []
    release.set()
    finish(p)
    assert os.listdir(queue_dir) == []


BLOCKED = {
    "get": "q.get()",
    "get_many": "q.get_many(max_items=10)",
    "put": "q.put(b'x' * 2000); q.put(b'x' * 2000); q.put(b'x' * 2000)",
    "put_many": "q.put_many([b'x' * 2000] * 3)",
    "join": "q.put(b'job'); q.join()",
}


@pytest.mark.parametrize("call", sorted(BLOCKED))
def test_ctrl_c_interrupts_a_blocked_call(call, qname):
    code = (
        "import signal, sys, sage_queue\n"
        # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored;
        # the child stands for an interactive program, so it takes Python's default handler.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"q = sage_queue.SageQueue({qname!r}, maxsize=4096, serializer='raw')\n"
        "print('ready', flush=True)\n"
        "try:\n"
        f"    {BLOCKED[call]}\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', flush=True)\n"
        "    q.close()\n"
        "    sys.exit(42)\n"
        "sys.exit(1)\n"
    )
    child = subprocess.Popen(
        [h.python(), "-c", code],
        env=h.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it block
        start = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        elapsed = time.monotonic() - start
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 42, err
    assert "KeyboardInterrupt" in out
    assert elapsed < 2.0


def test_queue_errors_pickle(qname):
    for err in (
        sage_queue.QueueClosed(qname, "why"),
        sage_queue.QueueNotFound(qname),
        sage_queue.MessageTooLarge(10, 5),
        sage_queue.BatchFull(2, 5),
        sage_queue.InvalidQueueName("a b", "space"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
