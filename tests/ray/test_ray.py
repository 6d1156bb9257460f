"""SageQueue between Ray actors and tasks, on a local Ray instance that this module starts.

Run: python3 -m pytest tests/ray -q   (skipped when Ray is not installed)
"""

import dataclasses
import os
import pickle
import shutil
import sys
import tempfile

import pytest

ray = pytest.importorskip("ray")

import sage_queue  # noqa: E402
import sage_queue.ray as sqray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402
from sage_queue import SageQueue, SageQueueRef  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ray_helpers as rh  # noqa: E402

FOREIGN_HOST = "some-other-node/00000000-0000-0000-0000-000000000000"
CALL_TIMEOUT = 60


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance (2 CPUs, no dashboard) whose workers import this sage_queue and
    ray_helpers and use the same fresh queue folder as the test process."""
    qdir = tempfile.mkdtemp(
        prefix="sage-queue-ray-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(sage_queue.__file__)))
    pythonpath = os.pathsep.join(p for p in (pkg_parent, HERE, os.environ.get("PYTHONPATH")) if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGE_QUEUE_DIR", qdir)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=sqray.runtime_env({"env_vars": {"PYTHONPATH": pythonpath}}),
        )
        try:
            yield qdir
        finally:
            ray.shutdown()
            shutil.rmtree(qdir, ignore_errors=True)


@pytest.fixture
def make_queue(ray_cluster):
    made = []

    def make(maxsize=1 << 20, **kwargs):
        q = SageQueue(rh.unique_name(), maxsize=maxsize, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.destroy()


def get(refs, timeout=CALL_TIMEOUT):
    return ray.get(refs, timeout=timeout)


def attached(q) -> int:
    return q.get_stats()["attached"]


# ---- passing queues around ----


def test_workers_use_the_same_queue_folder(ray_cluster):
    env = get(rh.worker_env.remote())
    assert env["queue_dir"] == sage_queue.queue_dir() == ray_cluster
    assert env["node_id"] == ray.get_runtime_context().get_node_id()


def test_queue_and_reference_as_task_arguments(make_queue):
    q = make_queue()
    seen_by_task = get(rh.put_items.remote(q, ["a", "b"]))
    assert seen_by_task == 2  # the driver's handle and the task's
    get(rh.put_items.remote(q.get_reference(), ["c"]))
    assert [q.get(timeout=5) for _ in range(3)] == ["a", "b", "c"]
    # the task's attachment ends with the task (its argument is released)
    assert rh.wait_until(lambda: attached(q) == 1, timeout=10)


def test_queues_inside_other_objects_and_the_object_store(make_queue):
    q1, q2 = make_queue(), make_queue()
    tag = get(rh.put_into_nested.remote({"queues": [q1, q2.get_reference()], "tag": "x"}))
    assert tag == "x"
    assert q1.get(timeout=5) == ("first", "x")
    assert q2.get(timeout=5) == ("second", "x")
    # through ray.put / ray.get: the getter attaches its own handle
    stored = ray.put({"q": q1, "ref": q2.get_reference()})
    back = get(stored)
    assert isinstance(back["q"], SageQueue) and back["q"] is not q1
    assert isinstance(back["ref"], SageQueueRef)
    back["q"].put("via object store")
    assert q1.get(timeout=5) == "via object store"
    assert attached(q1) == 2
    back["q"].close()
    assert attached(q1) == 1


def test_queue_as_actor_return_value(make_queue):
    q = make_queue()
    actor = rh.QueueUser.remote(q.get_reference())
    returned = get(actor.queue.remote())
    assert isinstance(returned, SageQueue) and returned.name == q.name
    assert attached(q) == 3  # driver, actor, and the returned handle
    get(actor.put.remote("from actor"))
    assert returned.get(timeout=5) == "from actor"
    returned.close()
    ray.kill(actor)
    assert rh.wait_until(lambda: attached(q) == 1)


# ---- actors exchanging items ----


def test_producer_and_consumer_actors_exchange_10000_items(make_queue):
    n = 10_000
    q = make_queue(maxsize=1 << 16)  # small ring: the producer waits for room many times
    producer = rh.QueueUser.remote(q)
    consumer = rh.QueueUser.remote(q)
    got = consumer.get_n.remote(n)
    sent = producer.put_range.remote(0, n)
    assert get(sent) == n
    assert get(got) == list(range(n))
    assert q.qsize() == 0
    stats = q.get_stats()
    assert stats["msgs_in"] == stats["msgs_out"] == n
    assert stats["lost"] == 0
    for a in (producer, consumer):
        ray.kill(a)


def test_async_actors_await_the_queue_without_blocking_their_loop(make_queue):
    """Async Ray actors: two consumers in one actor await concurrently (and the actor still
    answers other calls meanwhile) while an async producer actor puts."""
    n = 2000
    q = make_queue(maxsize=1 << 14)
    consumer = rh.AsyncUser.options(max_concurrency=8).remote(q)
    producer = rh.AsyncUser.remote(q)
    halves = [consumer.get_n.remote(n // 2), consumer.get_n.remote(n // 2)]
    assert get(consumer.ping.remote()) == "pong"  # the loop is free while both wait
    assert get(producer.put_range.remote(0, n)) == n
    got = get(halves[0]) + get(halves[1])
    assert sorted(got) == list(range(n))
    assert q.get_stats()["lost"] == 0
    for a in (producer, consumer):
        ray.kill(a)


def test_pipeline_with_two_parallel_map_actors_delivers_every_item_once(make_queue):
    n = 5_000
    source_q, sink_q = make_queue(maxsize=1 << 16), make_queue(maxsize=1 << 16)
    source = rh.Source.remote(source_q)
    mappers = [rh.Mapper.remote(source_q, sink_q, i) for i in range(2)]
    sink = rh.Sink.remote(sink_q)
    result = sink.run.remote(producers=len(mappers))
    mapped = [m.run.remote() for m in mappers]
    assert get(source.run.remote(n, consumers=len(mappers))) == n
    items = get(result)
    counts = get(mapped)
    assert sum(counts) == n
    assert sorted(i for i, _, _ in items) == list(range(n))  # every item, exactly once
    assert all(sq == i * i for i, sq, _ in items)
    assert {ident for _, _, ident in items} <= {0, 1}
    assert source_q.qsize() == sink_q.qsize() == 0
    for a in (source, sink, *mappers):
        ray.kill(a)


# ---- actor death and restart ----


def test_killed_actor_detaches_and_the_survivors_continue(make_queue):
    q = make_queue(maxsize=1 << 16)
    victim = rh.QueueUser.remote(q)
    survivors = [rh.QueueUser.remote(q) for _ in range(2)]
    get([a.pid.remote() for a in (victim, *survivors)])
    assert attached(q) == 4
    blocked = victim.block_get.remote()  # the victim waits inside get() when it is killed
    ray.kill(victim)
    with pytest.raises(ray.exceptions.RayActorError):
        get(blocked)
    assert rh.wait_until(lambda: attached(q) == 3), q.get_stats()
    # the queue keeps working, and the survivors see every item exactly once
    n = 2_000
    take = [s.drain_until.remote("stop") for s in survivors]
    q.put_many(list(range(n)))
    q.put_many(["stop", "stop"])
    got = get(take)
    assert sorted(got[0] + got[1]) == list(range(n))
    stats = q.get_stats()
    assert stats["lost"] == 0 and q.qsize() == 0
    assert get([s.attached.remote() for s in survivors]) == [3, 3]
    for s in survivors:
        ray.kill(s)
    assert rh.wait_until(lambda: attached(q) == 1)


def test_actor_restarted_by_ray_reattaches_by_reference(make_queue):
    q = make_queue()
    actor = rh.QueueUser.options(max_restarts=1).remote(q.get_reference())
    first_pid = get(actor.pid.remote())
    assert attached(q) == 2
    ray.kill(actor, no_restart=False)  # Ray restarts it: __init__ runs again with the ref

    def restarted() -> bool:
        try:
            return get(actor.pid.remote(), timeout=10) != first_pid
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False

    assert rh.wait_until(restarted, timeout=60)
    assert rh.wait_until(lambda: attached(q) == 2)
    get(actor.put.remote("after restart"))
    assert q.get(timeout=5) == "after restart"
    q.put("to the new process")
    assert get(actor.get.remote()) == "to the new process"
    ray.kill(actor)
    assert rh.wait_until(lambda: attached(q) == 1)


# ---- node locality ----


def test_reference_from_another_host_is_refused(make_queue):
    q = make_queue()
    q.put("local item")
    foreign = dataclasses.replace(q.get_reference(), host_id=FOREIGN_HOST)
    assert not foreign.is_local()
    # same name as an existing local queue: it must not attach to that one
    with pytest.raises(RuntimeError, match="node-local") as info:
        foreign.get_queue()
    message = str(info.value)
    assert FOREIGN_HOST in message
    assert "node_affinity" in message or "colocate" in message
    with pytest.raises(RuntimeError, match="node-local"):
        pickle.loads(pickle.dumps(foreign)).get_queue()
    assert attached(q) == 1
    # in an actor the same error ends its construction
    actor = rh.QueueUser.remote(foreign)
    with pytest.raises(ray.exceptions.RayActorError, match="node-local"):
        get(actor.pid.remote())
    assert attached(q) == 1 and q.get(timeout=1) == "local item"
    # and there is no Ray node to place actors next to it
    with pytest.raises(sqray.QueueNodeNotFound, match="node-local"):
        sqray.node_affinity(foreign)


def test_a_reference_from_an_earlier_boot_is_refused(make_queue):
    q = make_queue()
    ref = q.get_reference()
    hostname = ref.host_id.rsplit("/", 1)[0]
    stale = dataclasses.replace(ref, host_id=f"{hostname}/not-this-boot")
    with pytest.raises(RuntimeError, match="node-local"):
        stale.get_queue()
    assert attached(q) == 1
    # a reference that is not from this process's machine is placed by its host name
    assert sqray.node_id(stale) == ray.get_runtime_context().get_node_id()


def test_node_affinity_and_colocated_actors(make_queue):
    q = make_queue()
    here = ray.get_runtime_context().get_node_id()
    strategy = sqray.node_affinity(q)
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert strategy.node_id == here and strategy.soft is False
    opts = sqray.colocate(q.get_reference(), max_restarts=2)
    assert opts["max_restarts"] == 2 and opts["scheduling_strategy"].node_id == here
    actors = sqray.start_actors(rh.QueueUser, 2, q, q)
    assert get([a.node_id.remote() for a in actors]) == [here, here]
    assert get(rh.worker_env.options(**sqray.colocate(q)).remote())["node_id"] == here
    get([a.put.remote(i) for i, a in enumerate(actors)])
    assert sorted(q.get_many(max_items=2, timeout=5)) == [0, 1]
    for a in actors:
        ray.kill(a)


def test_create_queue_inside_an_actor(ray_cluster):
    name = rh.unique_name()
    hosted = sqray.create_queue(name, maxsize=1 << 16, node=ray.get_runtime_context().get_node_id())
    assert hosted.ref.name == name and hosted.ref.maxsize == 1 << 16
    assert hosted.node_id == ray.get_runtime_context().get_node_id()
    assert sqray.node_id(hosted) == hosted.node_id
    user = rh.QueueUser.options(**sqray.colocate(hosted)).remote(hosted.ref)
    get(user.put_range.remote(0, 100))
    q = hosted.get_queue()
    assert q.get_many(max_items=100, timeout=5) == list(range(100))
    assert attached(q) == 3  # owner, actor, driver
    ray.kill(user)
    q.close()
    assert rh.wait_until(lambda: ray.get(hosted.owner.stats.remote())["attached"] == 1)
    # the owner alone keeps the queue alive
    again = hosted.ref.get_queue()
    assert attached(again) == 2
    again.close()
    hosted.destroy()
    with pytest.raises(sage_queue.QueueNotFound):
        hosted.ref.get_queue()
