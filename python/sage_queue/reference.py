"""SageQueueRef: the small picklable description of a queue, and where a queue lives.

A reference names the queue and says where its shared memory is: the machine (host name and
kernel boot id), the queue folder on that machine, and, when it was made inside a Ray cluster,
the Ray node. A process attaches by shared memory when it is on the same machine and uses the
same queue folder; under Ray, anywhere else it gets a remote handle (``sage_queue.remote``)
that reaches the queue through Ray; outside Ray it gets ``QueueNotLocal``.
"""

import functools
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from . import _native
from .errors import QueueNotLocal
from .serializers import from_portable_spec

if TYPE_CHECKING:
    from .queue import SageQueue
    from .remote import RemoteSageQueue

# Set to "1" to keep the strict local-only behaviour under Ray too (QueueNotLocal).
LOCAL_ONLY_ENV = "SAGE_QUEUE_LOCAL_ONLY"


@functools.cache
def host_id() -> str:
    """This machine's identity for references: hostname and kernel boot id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"


def queue_folder() -> str:
    """This process's queue folder (the native core's rule: $SAGE_QUEUE_DIR, else /dev/shm),
    as an absolute path."""
    return os.path.realpath(_native.queue_dir())


def ray_node_id() -> str:
    """The Ray node id (hex) of this process, or "" when it is not connected to Ray.
    Ray is never imported here: only a process that already uses it has a node."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


@dataclass(frozen=True)
class SageQueueRef:
    """A small picklable description of a queue; ``get_queue()`` attaches to it from any
    process on the same machine and queue folder, and from any Ray node of the cluster."""

    name: str
    maxsize: int
    auto_cleanup: bool
    creator_pid: int
    namespace: Optional[str] = None
    serializer: Any = "pickle"
    host_id: str = ""
    queue_dir: str = ""  # the queue folder on that host ("": this process's)
    node_id: str = ""  # the Ray node that holds the segment ("": made outside Ray)
    max_items: int = 0  # the queue's item bound (0: none)

    @property
    def full_name(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}.{self.name}"

    @property
    def size(self) -> int:
        """The ring size in bytes (same as maxsize)."""
        return self.maxsize

    def is_local(self) -> bool:
        """Whether this process can attach by shared memory: the reference was made on this
        machine (and boot) for the same queue folder."""
        if self.host_id and self.host_id != host_id():
            return False
        return not self.queue_dir or os.path.realpath(self.queue_dir) == queue_folder()

    def get_queue(
        self, serializer: Any = None, *, local_only: Optional[bool] = None
    ) -> "Union[SageQueue, RemoteSageQueue]":
        """Attach to the queue (it must exist). ``serializer`` overrides the reference's.

        On the queue's machine and folder: a ``SageQueue`` (shared memory). Elsewhere, in a
        process connected to Ray: a ``RemoteSageQueue`` with the same API, carried by Ray,
        unless ``local_only`` (default: ``$SAGE_QUEUE_LOCAL_ONLY`` is "1"), which raises
        ``QueueNotLocal`` as outside Ray."""
        if serializer is None:
            if self.serializer is None:
                raise ValueError(
                    f"the serializer of queue {self.full_name!r} could not be pickled into "
                    "its reference; pass serializer= to get_queue()"
                )
            serializer = from_portable_spec(self.serializer)
        if self.is_local():
            from .queue import SageQueue

            return SageQueue(
                self.name,
                self.maxsize,
                self.auto_cleanup,
                self.namespace,
                serializer=serializer,
                create=False,
            )
        if local_only is None:
            local_only = os.environ.get(LOCAL_ONLY_ENV) == "1"
        here = ray_node_id()
        # A reference naming this very node that is not local here (another host or boot,
        # another folder) is inconsistent: never go through Ray to a queue of this node.
        if not local_only and self.node_id and here and self.node_id != here:
            from .remote import RemoteSageQueue

            return RemoteSageQueue(self, serializer)
        raise QueueNotLocal(
            self.full_name,
            self.host_id,
            host_id(),
            owner_dir=self.queue_dir,
            this_dir=queue_folder(),
            how=(
                "this process asked for local queues only (local_only, SAGE_QUEUE_LOCAL_ONLY=1)"
                if local_only
                else "the reference names this very Ray node, where the queue is not"
                if here and self.node_id == here
                else ""
            ),
        )


def attach_reference(ref: SageQueueRef) -> "Union[SageQueue, RemoteSageQueue]":
    """What a pickled SageQueue becomes in the process that loads it."""
    return ref.get_queue()
