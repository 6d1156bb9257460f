"""The registry of this process's live queue handles: each is closed at interpreter exit (and
at the exit of a multiprocessing child, which skips atexit), and is told after os.fork() that
it now belongs to the parent (it re-attaches on its first use in the child).
"""

import atexit
import multiprocessing.util
import os
import threading
import weakref
from typing import Any, List, Protocol


class Handle(Protocol):
    """What the registry needs of a handle (SageQueue)."""

    def close(self) -> None: ...

    def _forked(self) -> None: ...


_live: "weakref.WeakSet[Handle]" = weakref.WeakSet()
_live_lock = threading.Lock()


def track(q: "Handle") -> None:
    """Close ``q`` at exit, and tell it when this process forks."""
    with _live_lock:
        _live.add(q)


def _live_queues() -> List["Handle"]:
    # Closed queues may still be in the set; callers skip them. (close() never takes the
    # lock: it can run from __del__ while this thread holds it.)
    if _live_lock.acquire(timeout=5):
        try:
            return list(_live)
        finally:
            _live_lock.release()
    return []


def _close_all() -> None:
    for q in _live_queues():
        try:
            q.close()
        except Exception:
            pass


def _mark_all_forked_in_child() -> None:
    """After fork, in the child: every live handle is the parent's attachment. Each re-attaches
    on its first use in the child (so a child that never uses its queues pays nothing)."""
    global _live_lock
    _live_lock = threading.Lock()  # another parent thread may have held the old one
    for q in list(_live):
        q._forked()


def _close_all_at_child_exit(_obj: Any) -> None:
    # multiprocessing children end with os._exit(), skipping atexit; they do run the
    # finalizers registered after their start, so register one there.
    multiprocessing.util.Finalize(None, _close_all, exitpriority=0)


atexit.register(_close_all)
os.register_at_fork(after_in_child=_mark_all_forked_in_child)
multiprocessing.util.register_after_fork(_close_all, _close_all_at_child_exit)
