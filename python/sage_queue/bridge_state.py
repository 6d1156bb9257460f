"""The small state files of bridges and gateways (sage_queue.remote), and their names.

A bridge writes ``.sq-bridge-<key>.json`` in its node's queue folder (status, counters,
window); a gateway writes ``.sq-gateway-<key>.json`` in the queue's folder (items taken for
its bridge, put from it, given back). They outlive the actors, so a new bridge can count what
a dead one lost, and ``sage-queue stat`` shows them without Ray. Kept free of Ray imports.
"""

import hashlib
import json
import os
import threading
from typing import Any, Dict, List, Tuple

from .reference import SageQueueRef


def bridge_key(ref: SageQueueRef) -> str:
    """One short key per queue (its machine, folder, Ray node and name)."""
    text = f"{ref.host_id}|{ref.queue_dir}|{ref.node_id}|{ref.full_name}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def window_names(ref: SageQueueRef) -> Tuple[str, str]:
    """The inbound and outbound window queues of ``ref`` on a node (queue names)."""
    stem = f"__sq_bridge.{ref.full_name[:120]}.{bridge_key(ref)}"
    return f"{stem}.in", f"{stem}.out"


def state_path(ref: SageQueueRef, folder: str, side: str) -> str:
    """The state file of a bridge (``side="bridge"``, in the node's queue folder) or of a
    gateway (``side="gateway"``, in the queue's folder)."""
    return os.path.join(folder, f".sq-{side}-{bridge_key(ref)}.json")


def read_state(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            state: Dict[str, Any] = json.load(f)
            return state
    except (OSError, ValueError):
        return {}


def write_state(path: str, state: Dict[str, Any]) -> None:
    """Replace the file whole (a reader never sees half of it)."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def states_of(queue: str, folder: str) -> Dict[str, List[Dict[str, Any]]]:
    """The bridge and gateway state files in ``folder`` that belong to queue ``queue``."""
    found: Dict[str, List[Dict[str, Any]]] = {"bridges": [], "gateways": []}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for name in names:
        for side, key in (("bridge", "bridges"), ("gateway", "gateways")):
            if name.startswith(f".sq-{side}-") and name.endswith(".json"):
                state = read_state(os.path.join(folder, name))
                if state.get("queue") == queue:
                    found[key].append(state)
    return found


def remove_finished(folder: str) -> List[str]:
    """Remove the state files of bridges that ended (their queue was removed or became
    unreachable) and whose process is gone; returns the files removed."""
    removed: List[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(".sq-bridge-") and name.endswith(".json")):
            continue
        path = os.path.join(folder, name)
        state = read_state(path)
        if state.get("status") in (None, "ok") or process_alive(int(state.get("pid", 0))):
            continue
        try:
            os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (False for pid 0 or less)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
