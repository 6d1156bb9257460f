"""Ray helpers: queues shared by actors and tasks on one node and across the nodes of a cluster.

A ``SageQueue`` or ``SageQueueRef`` can be passed to Ray tasks and actors as an argument, as a
return value, or inside other objects (lists, dicts, dataclasses): a queue pickles as its
reference, and the process that unpickles it attaches to the queue by name. Each attachment
is one handle; it goes away when the handle is closed or garbage-collected, or when the
process dies (also by ``ray.kill``), so ``q.get_stats()["attached"]`` stays exact.

A queue is shared memory on one node. A process on that node (same machine and queue folder)
attaches by shared memory; a process on any other node of the cluster gets a
``RemoteSageQueue`` with the same API, whose items travel between the nodes in batches
through Ray (``sage_queue.remote``). Placing a queue's heavy users on its node is still the
fastest::

    from sage_queue import SageQueue
    from sage_queue.ray import colocate

    q = SageQueue("stage1", maxsize=1 << 22)
    worker = Worker.options(**colocate(q)).remote(q)

``create_queue`` makes a queue on a chosen node (inside a small owner actor that keeps it
alive) and hands back its reference; ``start_actors`` starts N actors next to a queue;
``simulated_cluster`` runs several Ray nodes on this machine, each with its own queue folder,
so they behave as separate machines (for tests, demos and benchmarks).

Queues live in ``$SAGE_QUEUE_DIR`` (default ``/dev/shm``). If the driver sets it, the Ray
workers must see the same value: pass ``runtime_env=sage_queue.ray.runtime_env()`` to
``ray.init`` (a local Ray instance started by the driver inherits its environment anyway).
"""

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple, Union, cast

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .queue import DEFAULT_MAXSIZE, SageQueue
from .reference import SageQueueRef, host_id

if TYPE_CHECKING:
    from .remote import RemoteSageQueue

__all__ = [
    "HostedQueue",
    "SimulatedCluster",
    "QueueNodeNotFound",
    "colocate",
    "create_queue",
    "node_affinity",
    "node_id",
    "runtime_env",
    "simulated_cluster",
    "start_actors",
]


class QueueNodeNotFound(RuntimeError):
    """No live Ray node runs on the host that holds the queue's shared memory."""


@dataclass(frozen=True)
class HostedQueue:
    """A queue created by ``create_queue``: its reference, the owner actor that keeps it
    alive, and the Ray node it lives on. Pickles (into actors too) like its fields."""

    ref: SageQueueRef
    owner: Any  # ray.actor.ActorHandle of _QueueOwner
    node_id: str

    def get_queue(self) -> "Union[SageQueue, RemoteSageQueue]":
        """Attach to the queue (on the queue's node only)."""
        return self.ref.get_queue()

    def destroy(self) -> None:
        """Remove the queue (every attached process sees it closed) and stop the owner."""
        try:
            ray.get(self.owner.destroy.remote())
        finally:
            ray.kill(self.owner)


QueueLike = Union[SageQueue, SageQueueRef, HostedQueue]


def _reference(queue: QueueLike) -> SageQueueRef:
    if isinstance(queue, SageQueueRef):
        return queue
    if isinstance(queue, SageQueue):
        return queue.get_reference()
    if isinstance(queue, HostedQueue):
        return queue.ref
    raise TypeError(
        f"expected a SageQueue, SageQueueRef or HostedQueue, not {type(queue).__name__}"
    )


def node_id(queue: QueueLike) -> str:
    """The Ray node id (hex) of the node whose machine holds the queue's shared memory.

    A reference made inside the cluster names its node, which is used while it is alive and
    on the reference's host. Otherwise a queue made in this process (or on this machine and
    folder) belongs to this process's node, and any other is found by the host name in its
    reference among the live nodes of the cluster.
    """
    if isinstance(queue, HostedQueue):
        return queue.node_id
    ref = _reference(queue)
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialized: call ray.init() first")
    hostname = ref.host_id.rsplit("/", 1)[0]
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    for n in alive:
        if n["NodeID"] == ref.node_id and n.get("NodeManagerHostname") == hostname:
            return ref.node_id
    if ref.is_local():
        here: str = ray.get_runtime_context().get_node_id()
        return here
    candidates: List[str] = sorted(
        n["NodeID"] for n in alive if n.get("NodeManagerHostname") == hostname
    )
    if not candidates:
        raise QueueNodeNotFound(
            f"queue {ref.full_name!r} is node-local to host {ref.host_id!r}, and no live Ray "
            f"node of this cluster runs there (this process is on {host_id()!r}); "
            "its actors must run on the machine that created it"
        )
    return candidates[0]


def node_affinity(queue: QueueLike, soft: bool = False) -> NodeAffinitySchedulingStrategy:
    """A Ray scheduling strategy that places an actor or task on the queue's node.

    ``soft=False`` (the default) fails to schedule rather than run elsewhere: a process on
    another machine could not attach anyway."""
    return NodeAffinitySchedulingStrategy(node_id=node_id(queue), soft=soft)


def colocate(queue: QueueLike, soft: bool = False, **options: Any) -> Dict[str, Any]:
    """Options for ``.options(**colocate(q))`` on an actor class or remote function: the
    node affinity of ``queue`` plus any other ``options`` given."""
    return {"scheduling_strategy": node_affinity(queue, soft), **options}


def runtime_env(base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``base`` (a Ray runtime_env) with this process's ``SAGE_QUEUE_DIR`` added to its
    env_vars when it is set, so that workers look for queues in the same folder."""
    env = dict(base or {})
    qdir = os.environ.get("SAGE_QUEUE_DIR")
    if qdir:
        env["env_vars"] = {**env.get("env_vars", {}), "SAGE_QUEUE_DIR": qdir}
    return env


def start_actors(
    actor_cls: Any, n: int, near: QueueLike, *args: Any, soft: bool = False, **kwargs: Any
) -> List[Any]:
    """Start ``n`` actors of ``actor_cls`` (a ``@ray.remote`` class) on the node of queue
    ``near``, each with ``*args, **kwargs``; returns their handles."""
    opts = colocate(near, soft)
    return [actor_cls.options(**opts).remote(*args, **kwargs) for _ in range(n)]


@ray.remote(num_cpus=0)
class _QueueOwner:
    """Holds one handle of a queue so that the queue lives as long as this actor."""

    def __init__(self, name: str, maxsize: int, kwargs: Dict[str, Any]) -> None:
        self._queue = SageQueue(name, maxsize, **kwargs)

    def where(self) -> Tuple[SageQueueRef, str]:
        return self._queue.get_reference(), ray.get_runtime_context().get_node_id()

    def stats(self) -> Dict[str, Any]:
        return self._queue.get_stats()

    def destroy(self) -> None:
        self._queue.destroy()


def create_queue(
    name: str,
    maxsize: int = DEFAULT_MAXSIZE,
    *,
    node: Optional[str] = None,
    soft: bool = False,
    actor_options: Optional[Dict[str, Any]] = None,
    **queue_kwargs: Any,
) -> HostedQueue:
    """Create (or open) queue ``name`` inside a small owner actor and return it as a
    ``HostedQueue`` (reference, owner actor, node id).

    ``node`` is a Ray node id (default: wherever Ray puts the owner, normally this node);
    ``queue_kwargs`` go to ``SageQueue`` (``auto_cleanup``, ``namespace``, ``serializer``,
    ``create``, ...). The owner keeps one handle, so the queue outlives every other handle
    until ``destroy()`` or until the owner actor ends (it ends with the last handle to it,
    unless ``actor_options`` says ``lifetime="detached"``)."""
    opts: Dict[str, Any] = dict(actor_options or {})
    if node is not None:
        opts.setdefault(
            "scheduling_strategy", NodeAffinitySchedulingStrategy(node_id=node, soft=soft)
        )
    # @ray.remote made _QueueOwner an actor class; type checkers keep the plain class.
    owner = cast(Any, _QueueOwner).options(**opts).remote(name, maxsize, queue_kwargs)
    ref, where = ray.get(owner.where.remote())
    return HostedQueue(ref=ref, owner=owner, node_id=where)


@dataclass
class SimulatedCluster:
    """The nodes of ``simulated_cluster``: ``on(i)`` are the options that place an actor or
    task on node ``i`` (node 0 runs this driver), ``node_ids[i]`` and ``queue_dirs[i]`` its
    Ray node id and queue folder; ``cluster`` is the ``ray.cluster_utils.Cluster``."""

    cluster: Any
    node_ids: List[str]
    queue_dirs: List[str]

    def on(self, i: int) -> Dict[str, Any]:
        """Options that put an actor or task on node ``i``: a sliver of the node's own
        resource, and no CPU (an actor given a resource keeps its CPU while it lives, so a
        pipeline of several actors would not fit on one simulated node otherwise); add
        ``num_cpus`` to reserve CPUs as well."""
        return {"resources": {f"sq_node_{i}": 0.001}, "num_cpus": 0}


@contextlib.contextmanager
def simulated_cluster(
    nodes: int = 2, num_cpus: int = 2, env_vars: Optional[Dict[str, str]] = None, **init: Any
) -> Iterator[SimulatedCluster]:
    """Run ``nodes`` Ray nodes on this machine, each with its own fresh queue folder (so,
    for sage-queue, separate machines: no node can map another's queues), connect this
    process to the first (its queue folder becomes this process's ``$SAGE_QUEUE_DIR`` for
    the duration), and yield a ``SimulatedCluster``. ``env_vars`` are given to every node's
    workers; ``init`` goes to ``ray.init``."""
    from ray.cluster_utils import Cluster

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    dirs = [tempfile.mkdtemp(prefix=f"sage-queue-node{i}-", dir=shm) for i in range(nodes)]

    def args(i: int) -> Dict[str, Any]:
        env = {**(env_vars or {}), "SAGE_QUEUE_DIR": dirs[i]}
        return {"num_cpus": num_cpus, "resources": {f"sq_node_{i}": 1}, "env_vars": env}

    old_dir = os.environ.get("SAGE_QUEUE_DIR")
    cluster = Cluster(initialize_head=True, head_node_args={**args(0), "include_dashboard": False})
    try:
        added = [cluster.add_node(**args(i)) for i in range(1, nodes)]
        cluster.wait_for_nodes()
        os.environ["SAGE_QUEUE_DIR"] = dirs[0]
        init.setdefault("log_to_driver", False)
        ray.init(address=cluster.address, **init)
        ids = [ray.get_runtime_context().get_node_id()] + [n.node_id for n in added]
        yield SimulatedCluster(cluster=cluster, node_ids=ids, queue_dirs=dirs)
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
        if old_dir is None:
            os.environ.pop("SAGE_QUEUE_DIR", None)
        else:
            os.environ["SAGE_QUEUE_DIR"] = old_dir
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
