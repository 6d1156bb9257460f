"""Side-by-side benchmark: SageQueue against multiprocessing.Queue, faster-fifo, zeroq and more.

The peers: multiprocessing.Queue, faster_fifo.Queue, zeroq and, for messages read and written
in place, multiprocessing.shared_memory used by hand, Ray's object store and iceoryx2.

Every scenario runs each queue in fresh processes (fork): producers put, consumers get, and
throughput is counted from the producers' first put to the consumers' last get (perf_counter
is CLOCK_MONOTONIC, shared by all processes). Results print as a table with ratios to each
peer, followed by what is not like for like, and can be written as JSON and as a PNG chart
(matplotlib, optional). zeroq (fixed-size slots, raw bytes only) takes part in the raw-bytes
scenarios only; faster-fifo and zeroq are optional peers, skipped with one line when missing.

The in-place scenarios (issue 14) print a table of their own: numpy float32 arrays of 1, 16 and
256 MiB (numpy_*: sage-queue's get and its views against multiprocessing.Queue, faster-fifo,
shared_memory blocks used by hand and Ray's object store) and raw bytes of 64 KiB and 1 MiB
(inplace_*: sage-queue's put/get and its loans and views against iceoryx2 copying samples out
and reading them in place). Every consumer reads the first and last element of each item and
checks its size. Ray and iceoryx2 are optional, skipped with one line when missing;
numpy_256MiB is skipped when the machine lacks the memory. They are not part of the default run
(they take about three times as long as all the others): --zero-copy runs them, or name them in
--only.

    sage-queue bench [--quick] [--runs N] [--json out.json] [--png out.png] [--only NAME,...]
    sage-queue bench --zero-copy [--quick] [--runs 3]
    sage-queue bench --micro | --zero-copy-micro

Progress lines go to stderr only when it is a terminal.
"""

import argparse
import atexit
import ctypes
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import statistics
import sys
import textwrap
import time
import uuid
from types import ModuleType
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from .cli import positive_int

SMALL = {"id": 1, "data": [1, 2, 3], "meta": "SAGE", "score": 0.5}
RING = 64 * 1024 * 1024
BATCH = 64
_CTX = mp.get_context("fork")

# Scenarios whose items are raw bytes: only there do bytes-only peers (zeroq) take part.
RAW_BYTES = ("64B", "1KiB", "64KiB", "1MiB")
# Shapes of a throughput run: one message per item; batches of 64 separate messages (one
# batch call each way where the queue has one); one message holding a list of 64 items.
SINGLE, SEPARATE, ONE_LIST = "single", "separate", "one_list"
BATCH_SEPARATE = "small_dict_batch64_separate"
BATCH_ONE_LIST = "small_dict_batch64_one_list"

# In-place scenarios (issue 14): numpy float32 arrays of these sizes, and raw bytes of these
# sizes against iceoryx2; each with its number of items in a full run.
MiB = 1 << 20
ARRAYS = {"numpy_1MiB": (MiB, 1_000), "numpy_16MiB": (16 * MiB, 100),
          "numpy_256MiB": (256 * MiB, 8)}  # fmt: skip
INPLACE = {"inplace_64KiB": (64 * 1024, 20_000), "inplace_1MiB": (MiB, 2_000)}
# Groups of scenarios: each queue takes part in the groups it lists.
OBJECTS, RAW, ARRAY, INPLACE_RAW = "objects", "raw", "arrays", "inplace"
ALL_GROUPS = frozenset({OBJECTS, RAW, ARRAY, INPLACE_RAW})


def group(scenario: str) -> str:
    if scenario in RAW_BYTES:
        return RAW
    if scenario in ARRAYS:
        return ARRAY
    return INPLACE_RAW if scenario in INPLACE else OBJECTS


def ring_for(item_size: int) -> int:
    """sage-queue's ring (and faster-fifo's buffer) for items of this size: RING, or the
    power of two that holds four of them (1 GiB for 256 MiB arrays)."""
    return max(RING, 1 << (4 * item_size - 1).bit_length())


def slots_for(item_size: int) -> int:
    """How many messages of this size are in flight at most: what fits in sage-queue's ring
    (its record headers and the array's pickle header included), at most 1024. The peers that
    need a number (shared_memory slots, Ray's window, iceoryx2's subscriber buffer) get it."""
    return max(2, min(1024, ring_for(item_size) // (item_size + 4096)))


Result = Dict[str, float]


class Spec(NamedTuple):
    """One in-place run: ARRAY (numpy float32) or INPLACE_RAW (bytes) items of nbytes."""

    kind: str
    nbytes: int
    items: int


# ---- the queues under test, behind one small interface ----


class Impl:
    name = ""
    bytes_only = False  # True: moves raw bytes only (no objects), so only RAW_BYTES scenarios
    groups: FrozenSet[str] = frozenset({OBJECTS, RAW, ARRAY})  # the scenarios it takes part in

    def make(self, item_size: int = 0) -> Any:
        """A new queue, made in the parent process; item_size is the payload size (bytes
        scenarios) or 0."""
        raise NotImplementedError

    def attach(self, q: Any) -> Any:
        """What a child process (or the round trip's parent) calls put/get on."""
        return q

    def detach(self, q: Any) -> None:
        pass

    def put(self, q: Any, item: Any) -> None:
        q.put(item)

    def get(self, q: Any) -> Any:
        return q.get()

    def put_many(self, q: Any, items: List[Any]) -> None:
        """Separate messages, one per item; without a batch call, one put per item."""
        for item in items:
            self.put(q, item)

    def get_many(self, q: Any, n: int) -> List[Any]:
        """Up to n separate messages (at least one); without a batch call, n gets."""
        return [self.get(q) for _ in range(n)]

    def close(self, q: Any) -> None:
        pass

    # The in-place scenarios (moved()): the consumer attaches first, then the producer.

    def attach_sender(self, q: Any) -> Any:
        return self.attach(q)

    def attach_receiver(self, q: Any) -> Any:
        return self.attach(q)

    def send(self, q: Any, payload: Any) -> None:
        """One message (a numpy array or bytes)."""
        self.put(q, payload)

    def receive(self, q: Any, nbytes: int) -> None:
        """Take one message, check its size and read its first and last element."""
        _touch(self.get(q), nbytes)

    def move(self, spec: Spec) -> Result:
        return moved(self, spec)


class Sage(Impl):
    """put/get as they are: get returns a copy that owns its data (arrays and bytes alike)."""

    name = "sage-queue"
    groups = ALL_GROUPS

    def make(self, item_size: int = 0) -> Any:
        from sage_queue import SageQueue

        return SageQueue(f"bench-{uuid.uuid4().hex[:12]}", maxsize=ring_for(item_size))

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items)

    def get_many(self, q: Any, n: int) -> List[Any]:
        items: List[Any] = q.get_many(max_items=n)
        return items

    def close(self, q: Any) -> None:
        q.close()


class SageViews(Sage):
    """Arrays put by put() (their buffer written straight into the ring) and read by
    ``with q.view() as a:``, a read-only array over the ring."""

    name = "sage-queue views"
    groups = frozenset({ARRAY})

    def receive(self, q: Any, nbytes: int) -> None:
        with q.view() as item:
            _touch(item, nbytes)


class SageLoans(SageViews):
    """Raw bytes written in place (``with q.loan(n) as buf: buf[:] = payload``) and read in
    place (``with q.view() as mv:``)."""

    name = "sage-queue loan+view"
    groups = frozenset({INPLACE_RAW})

    def send(self, q: Any, payload: Any) -> None:
        with q.loan(len(payload)) as buf:
            buf[:] = payload


class MpQueue(Impl):
    """No batch call: put_many / get_many are 64 put() / get() calls (Impl's defaults)."""

    name = "multiprocessing.Queue"

    def make(self, item_size: int = 0) -> Any:
        return _CTX.Queue()

    def close(self, q: Any) -> None:
        q.close()
        q.join_thread()


class FasterFifo(Impl):
    name = "faster-fifo"

    def make(self, item_size: int = 0) -> Any:
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=ring_for(item_size))

    def put_many(self, q: Any, items: List[Any]) -> None:
        q.put_many(items, block=True, timeout=60)

    def get_many(self, q: Any, n: int) -> List[Any]:
        items: List[Any] = q.get_many(block=True, timeout=60, max_messages_to_get=n)
        return items

    def get(self, q: Any) -> Any:
        return q.get(block=True, timeout=60)

    def close(self, q: Any) -> None:
        q.close()


def _zeroq() -> ModuleType:
    # zeroq ships its own stubs, but it is optional: imported by name so that mypy --strict
    # passes with and without it installed.
    return importlib.import_module("zeroq")


class ZeroQHandle(NamedTuple):
    name: str  # the shared-memory segment children attach to
    owner: Any  # the creating zeroq.Queue; closing it removes the segment


class ZeroQ(Impl):
    """zeroq as its README shows it: the parent creates the queue (element_size, capacity,
    create=True), each process attaches by name (create=False), and put/get are its blocking
    calls. Its slots are fixed-size: a message must be exactly element_size bytes (any other
    length raises ValueError) and get returns a whole slot, so element_size is the payload
    size. No batch call, no objects: raw bytes only."""

    name = "zeroq"
    bytes_only = True
    groups = frozenset({RAW})

    def make(self, item_size: int = 0) -> Any:
        if item_size <= 0:
            raise ValueError("zeroq moves fixed-size raw bytes: give the message size")
        # As many slots as fit in sage-queue's ring (a power of two, as zeroq requires).
        slots = max(2, min(1 << 20, 1 << ((RING // item_size).bit_length() - 1)))
        name = f"bench-zq-{uuid.uuid4().hex[:12]}"
        owner = _zeroq().Queue(name, element_size=item_size, capacity=slots, create=True)
        return ZeroQHandle(name, owner)

    def attach(self, q: Any) -> Any:
        return _zeroq().Queue(q.name, create=False)

    def detach(self, q: Any) -> None:
        q.close()

    def put(self, q: Any, item: Any) -> None:
        q.put(item, timeout=60)

    def get(self, q: Any) -> Any:
        return q.get(timeout=60)

    def close(self, q: Any) -> None:
        q.owner.close()


def _np() -> Any:
    """numpy, imported when an array scenario runs (sage_queue itself does not need it)."""
    return importlib.import_module("numpy")


# What the in-place scenarios' items are filled with: float32 1.5, or the byte "x".
_FILLS = (1.5, ord("x"))


def _touch(item: Any, nbytes: int) -> None:
    """What every consumer does with an item of the in-place scenarios: check its size and
    read its first and last element (not a pass over the data: the transport is measured)."""
    size = item.nbytes if hasattr(item, "nbytes") else len(item)
    first, last = item[0], item[-1]
    if size != nbytes or first != last or first not in _FILLS:
        raise RuntimeError(f"got {size} bytes starting {first!r}, expected {nbytes} as sent")


def _payload(spec: Spec) -> Any:
    if spec.kind == ARRAY:
        return _np().full(spec.nbytes // 4, _FILLS[0], dtype="float32")
    return bytes([_FILLS[1]]) * spec.nbytes


class ShmHandle(NamedTuple):
    names: List[str]  # one SharedMemory block per slot
    free: Any  # multiprocessing.Queue of free slot indices
    full: Any  # multiprocessing.Queue of filled slot indices, in order
    owners: List[Any]  # the parent's SharedMemory objects (unlinked at close)
    nbytes: int


class ShmPorts(NamedTuple):
    free: Any
    full: Any
    blocks: List[Any]
    arrays: List[Any]


class SharedMemoryByHand(Impl):
    """multiprocessing.shared_memory as a user would do it: one SharedMemory block per slot,
    each as big as the array (as many slots as sage-queue's ring holds messages), a queue of
    free slot indices and a queue of filled ones (multiprocessing.Queue). The producer takes a
    free slot, copies the array into it (np.copyto) and sends its index; the consumer reads an
    array over the block (no copy) and gives the slot back. Each process attaches to the
    blocks by name once, before the clock starts."""

    name = "shared_memory by hand"
    groups = frozenset({ARRAY})

    def make(self, item_size: int = 0) -> Any:
        from multiprocessing import shared_memory

        owners = [
            shared_memory.SharedMemory(create=True, size=item_size)
            for _ in range(slots_for(item_size))
        ]
        free, full = _CTX.Queue(), _CTX.Queue()
        for i in range(len(owners)):
            free.put(i)
        return ShmHandle([o.name for o in owners], free, full, owners, item_size)

    def attach(self, q: Any) -> Any:
        from multiprocessing import shared_memory

        np = _np()
        blocks = [shared_memory.SharedMemory(name=n) for n in q.names]
        arrays = [np.ndarray((q.nbytes // 4,), dtype="float32", buffer=b.buf) for b in blocks]
        return ShmPorts(q.free, q.full, blocks, arrays)

    def send(self, q: Any, payload: Any) -> None:
        i = q.free.get()
        _np().copyto(q.arrays[i], payload)
        q.full.put(i)

    def receive(self, q: Any, nbytes: int) -> None:
        i = q.full.get()
        _touch(q.arrays[i], nbytes)
        q.free.put(i)

    def detach(self, q: Any) -> None:
        q.arrays.clear()  # the arrays export the blocks' buffers: drop them before close
        for b in q.blocks:
            b.close()
        q.free.close()
        q.full.close()

    def close(self, q: Any) -> None:
        for o in q.owners:
            o.close()
            o.unlink()
        q.free.close()
        q.full.close()


class PeerUnavailable(RuntimeError):
    """A peer that is installed but cannot run here: said in one line, then skipped."""


class PeerFailed(RuntimeError):
    """A peer whose run broke off (Ray's processes ended under it): said in one line, that
    row is left out of this run, and the peer is tried again in the next scenario."""


class RayObjectStore(Impl):
    """Ray's object store on this one node, the way Ray moves arrays between two workers: a
    producer actor ray.put()s the array (one copy into the store) and calls a consumer actor
    with the ObjectRef as a top-level argument, so Ray hands the consumer a read-only array
    over the store (no copy); at most as many calls in flight as sage-queue's ring holds
    messages (ray.wait). Measured from the producer's first ray.put to the end of the
    consumer's last call; starting Ray and the two actors is not. Ray runs in a process of
    its own (started once, see _RayHost)."""

    name = "Ray object store"
    groups = frozenset({ARRAY})

    def move(self, spec: Spec) -> Result:
        host = _ray_host()
        try:
            return host.move(spec)
        except PeerFailed:
            close_peers()  # a new Ray for the next scenario
            raise


def _iox2() -> Any:
    # Optional, and imported by name so that mypy --strict passes with or without it.
    return importlib.import_module("iceoryx2")


class Iox2Handle(NamedTuple):
    service: str  # the publish-subscribe service; its event service is service + "/wake"
    nbytes: int
    slots: int


class Iox2Ports(NamedTuple):
    port: Any  # the publisher or the subscriber
    wake: Any  # the notifier or the listener
    keep: List[Any]  # node and service factories, dropped at detach
    tick: Any = None  # the listener's longest wait (iceoryx2.Duration), a safety net


class Iceoryx2(Impl):
    """iceoryx2 publish-subscribe as its Python examples use it: a service of
    Slice[c_uint8] (overflow off, so nothing is lost: the publisher's backpressure strategy is
    RetryUntilDelivered), one subscriber whose buffer holds as many samples as sage-queue's
    ring holds messages, and an event service beside it: the publisher notifies after every
    send, the subscriber waits on its listener when nothing is there. The publisher loans a
    slice of the message's size and copies the payload into it (its Python API has no
    send_copy for slices); the subscriber copies the sample out to bytes (this class) or
    reads it in place (Iceoryx2Loans), then releases it."""

    name = "iceoryx2 copy"
    groups = frozenset({INPLACE_RAW})
    in_place = False

    def make(self, item_size: int = 0) -> Any:
        return Iox2Handle(f"sage-bench/{uuid.uuid4().hex[:12]}", item_size, slots_for(item_size))

    def _open(self, q: Any) -> Tuple[Any, Any, Any, Any]:
        iox = _iox2()
        iox.set_log_level_from_env_or(iox.LogLevel.Error)
        node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
        service = (
            node.service_builder(iox.ServiceName.new(q.service))
            .publish_subscribe(iox.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(q.slots)
            .history_size(0)
            .open_or_create()
        )
        event = node.service_builder(iox.ServiceName.new(q.service + "/wake")).event()
        return iox, node, service, event.open_or_create()

    def attach_receiver(self, q: Any) -> Any:
        iox, node, service, event = self._open(q)
        sub = service.subscriber_builder().buffer_size(q.slots).create()
        listener = event.listener_builder().create()
        return Iox2Ports(sub, listener, [node, service, event], iox.Duration.from_secs(1))

    def attach_sender(self, q: Any) -> Any:
        iox, node, service, event = self._open(q)
        pub = (
            service.publisher_builder()
            .initial_max_slice_len(q.nbytes)
            .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        return Iox2Ports(pub, event.notifier_builder().create(), [node, service, event])

    def send(self, q: Any, payload: Any) -> None:
        sample = q.port.loan_slice_uninit(len(payload))
        raw = sample.payload().as_memory_view()
        buf = raw.cast("B")
        buf[:] = payload
        buf.release()
        raw.release()
        sample.assume_init().send()
        q.wake.notify()

    def receive(self, q: Any, nbytes: int) -> None:
        sample = q.port.receive()
        while sample is None:
            q.wake.timed_wait(q.tick)  # woken by the publisher's notify
            sample = q.port.receive()
        raw = sample.payload().as_memory_view()
        mv = raw.cast("B")
        _touch(mv if self.in_place else bytes(mv), nbytes)
        mv.release()
        raw.release()
        sample.delete()

    def detach(self, q: Any) -> None:
        # A forked child leaves through os._exit: release the ports and the node here so
        # that iceoryx2 removes its files.
        q.wake.delete()
        q.port.delete()
        q.keep.clear()


class Iceoryx2Loans(Iceoryx2):
    name = "iceoryx2 loan"
    in_place = True


_told: Set[str] = set()


def _missing(name: str, hint: str) -> None:
    """One line per missing optional peer and process (not once per --runs repetition)."""
    if name not in _told:
        _told.add(name)
        print(f"{name} is not installed, skipped ({hint})", file=sys.stderr)


def _say_once(key: str, line: str) -> None:
    if key not in _told:
        _told.add(key)
        print(line, file=sys.stderr)


def available_impls(scenarios: Optional[Iterable[str]] = None) -> List[Impl]:
    """The queues that can run here, for these scenarios (default: all); a missing optional
    peer that one of them needs is said once."""
    wanted = ALL_GROUPS if scenarios is None else frozenset(group(s) for s in scenarios)
    impls: List[Impl] = [Sage()]
    if ARRAY in wanted:
        impls.append(SageViews())
    if INPLACE_RAW in wanted:
        impls.append(SageLoans())
    if wanted & MpQueue.groups:
        impls.append(MpQueue())
    if wanted & FasterFifo.groups:
        try:
            import faster_fifo  # noqa: F401

            impls.append(FasterFifo())
        except ImportError:
            _missing("faster-fifo", "pip install 'sage-queue[bench]'")
    if RAW in wanted:
        try:
            _zeroq()
            impls.append(ZeroQ())
        except ImportError:
            _missing("zeroq", "pip install zeroq")
    if ARRAY in wanted:
        impls.append(SharedMemoryByHand())
        if importlib.util.find_spec("ray") is not None:
            impls.append(RayObjectStore())
        else:
            _missing("ray", "pip install 'ray>=2.9'")
    if INPLACE_RAW in wanted:
        if importlib.util.find_spec("iceoryx2") is not None:
            impls += [Iceoryx2(), Iceoryx2Loans()]
        else:
            _missing("iceoryx2", "pip install iceoryx2")
    return impls


def applies(impl: Impl, scenario: str) -> bool:
    return group(scenario) in impl.groups


# ---- process bodies ----


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _producer(impl: Impl, q: Any, item: Any, count: int, shape: str, out: Any) -> None:
    q = impl.attach(q)
    t0 = time.perf_counter()
    if shape == SINGLE:
        for _ in range(count):
            impl.put(q, item)
    else:
        chunk = [item] * BATCH
        for _ in range(count // BATCH):
            if shape == SEPARATE:
                impl.put_many(q, chunk)  # 64 messages
            else:
                impl.put(q, chunk)  # one message: the list of 64
    out.put(("p", t0, _peak_rss_kib()))
    impl.detach(q)


def _consumer(impl: Impl, q: Any, count: int, shape: str, out: Any) -> None:
    q = impl.attach(q)
    n = 0
    if shape == SINGLE:
        while n < count:
            impl.get(q)
            n += 1
    elif shape == SEPARATE:
        while n < count:
            n += len(impl.get_many(q, min(BATCH, count - n)))
    else:
        while n < count:
            n += len(impl.get(q))
    out.put(("c", time.perf_counter(), _peak_rss_kib()))
    impl.detach(q)


def _echo(impl: Impl, qin: Any, qout: Any, count: int) -> None:
    qin, qout = impl.attach(qin), impl.attach(qout)
    for _ in range(count):
        impl.put(qout, impl.get(qin))
    impl.detach(qin)
    impl.detach(qout)


def _mover_consumer(impl: Impl, q: Any, spec: Spec, ready: Any, done: Any, out: Any) -> None:
    if spec.kind == ARRAY:
        _np()  # imported before the clock starts (unpickling an array would import it)
    q = impl.attach_receiver(q)
    ready.set()
    for _ in range(spec.items):
        impl.receive(q, spec.nbytes)
    out.put(("c", time.perf_counter(), _peak_rss_kib()))
    done.set()
    impl.detach(q)


def _mover_producer(impl: Impl, q: Any, spec: Spec, ready: Any, done: Any, out: Any) -> None:
    payload = _payload(spec)
    if not ready.wait(120):
        raise RuntimeError("the consumer did not attach")
    q = impl.attach_sender(q)
    t0 = time.perf_counter()
    for _ in range(spec.items):
        impl.send(q, payload)
    out.put(("p", t0, _peak_rss_kib()))
    done.wait(600)  # a publisher (iceoryx2) stays until its samples are taken
    impl.detach(q)


def _rates(spec: Spec, start: float, end: float, rss_kib: int) -> Result:
    secs = end - start
    return {"items_per_s": spec.items / secs, "gb_per_s": spec.items * spec.nbytes / secs / 1e9,
            "seconds": secs, "items": spec.items, "nbytes": spec.nbytes,
            "peak_rss_mib": rss_kib / 1024}  # fmt: skip


def moved(impl: Impl, spec: Spec) -> Result:
    """One producer process to one consumer process: spec.items items of spec.nbytes, sent
    with impl.send and taken with impl.receive; the consumer attaches first."""
    q = impl.make(spec.nbytes)
    out, ready, done = _CTX.Queue(), _CTX.Event(), _CTX.Event()
    procs = [
        _CTX.Process(target=body, args=(impl, q, spec, ready, done, out))
        for body in (_mover_consumer, _mover_producer)
    ]
    try:
        for p in procs:
            p.start()
        reports: Dict[str, Tuple[float, int]] = {}
        deadline = time.monotonic() + 900
        while len(reports) < 2:
            try:
                kind, t, rss = out.get(timeout=1)
                reports[kind] = (t, rss)
            except queue.Empty:
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(f"{impl.name}: a process failed ({failed})") from None
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        impl.close(q)
        out.close()
    return _rates(spec, reports["p"][0], reports["c"][0], max(r for _, r in reports.values()))


# ---- Ray, in a process of its own ----


class _RayConsumer:
    """The consumer actor: Ray resolves the ObjectRef argument to a read-only array over the
    object store before the call."""

    def take(self, item: Any, nbytes: int) -> float:
        _touch(item, nbytes)
        return time.perf_counter()

    def rss(self) -> int:
        return _peak_rss_kib()


class _RayProducer:
    def run(self, consumer: Any, nbytes: int, count: int, window: int) -> Tuple[float, float, int]:
        ray = importlib.import_module("ray")
        arr = _payload(Spec(ARRAY, nbytes, count))
        pending: List[Any] = []
        t0 = time.perf_counter()
        for _ in range(count):
            ref = ray.put(arr)
            pending.append(consumer.take.remote(ref, nbytes))
            del ref  # the call holds the object until it is done
            if len(pending) >= window:
                _, pending = ray.wait(pending, num_returns=1)
        # An actor runs its calls in order: the last one ends last.
        end = ray.get(pending)[-1] if pending else time.perf_counter()
        return t0, end, _peak_rss_kib()


def _ray_host_main(conn: Any) -> None:
    """Start Ray (workers import this module: the package's folder goes on PYTHONPATH), then
    run the Spec tuples that come in over conn until None; answer with a Result or a line."""
    try:
        ray = importlib.import_module("ray")
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH")) if p
        )
        ray.init(
            address="local",  # a new instance of its own, not a cluster running here
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=RAY_STORE,
        )
        producer_cls = ray.remote(num_cpus=0)(_RayProducer)
        consumer_cls = ray.remote(num_cpus=0)(_RayConsumer)
    except Exception as e:  # not importable, or does not start here
        conn.send(f"{type(e).__name__}: {e}")
        return
    conn.send("ready")
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            spec = Spec(*msg)
            try:
                consumer, producer = consumer_cls.remote(), producer_cls.remote()
                ray.get([consumer.rss.remote(), producer.__ray_ready__.remote()])
                run = producer.run.remote(consumer, spec.nbytes, spec.items, slots_for(spec.nbytes))
                t0, end, rss = ray.get(run)
                rss = max(rss, ray.get(consumer.rss.remote()))
                ray.kill(producer)
                ray.kill(consumer)
                conn.send(_rates(spec, t0, end, rss))
            except Exception as e:
                conn.send(f"{type(e).__name__}: {e}")
    finally:
        ray.shutdown()


class _RayHost:
    """Ray started once per benchmark, in a process forked before ray.init: no other process
    of the benchmark is forked with Ray's threads running. Closed by close_peers()."""

    def __init__(self) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_ray_host_main, args=(child,))
        self.proc.start()
        child.close()
        status = self._answer(300, PeerUnavailable)
        if status != "ready":
            self.close()
            raise PeerUnavailable(f"Ray did not start ({status})")

    def _answer(self, timeout: float, error: Callable[[str], Exception]) -> Any:
        if not self.conn.poll(timeout):
            raise error(f"Ray did not answer within {timeout:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            raise error("Ray's process ended (its raylet was lost)") from None

    def move(self, spec: Spec) -> Result:
        self.conn.send(tuple(spec))
        res = self._answer(900, PeerFailed)
        if isinstance(res, str):
            raise PeerFailed(f"Ray: {res}")
        out: Result = res
        return out

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.conn.close()


RAY_STORE = 2 << 30  # Ray's object store: room for a window of three 256 MiB arrays and more
_ray: Optional[_RayHost] = None


def _ray_host() -> _RayHost:
    global _ray
    if _ray is None:
        _ray = _RayHost()
    return _ray


def close_peers() -> None:
    """Stop what outlives one scenario (Ray)."""
    global _ray
    if _ray is not None:
        host, _ray = _ray, None
        host.close()


atexit.register(close_peers)


# ---- scenarios ----


def _size(item: Any) -> int:
    return len(item) if isinstance(item, bytes) else 0


def throughput(
    impl: Impl,
    item: Any,
    count: int,
    producers: int = 1,
    consumers: int = 1,
    shape: str = SINGLE,
) -> Result:
    """Items per second from producer processes to consumer processes. shape: SINGLE (one
    message per item), SEPARATE (batches of BATCH separate messages, one batch call each way
    where the queue has one) or ONE_LIST (one message holding a list of BATCH items); count
    is in items, a multiple of BATCH per producer for the batch shapes."""
    q = impl.make(_size(item))
    out = _CTX.Queue()
    per_p = count // producers
    total = per_p * producers
    per_c = [total // consumers + (1 if i < total % consumers else 0) for i in range(consumers)]
    procs = [
        _CTX.Process(target=_consumer, args=(impl, q, per_c[i], shape, out))
        for i in range(consumers)
    ] + [
        _CTX.Process(target=_producer, args=(impl, q, item, per_p, shape, out))
        for _ in range(producers)
    ]
    for p in procs:
        p.start()
    reports: List[Tuple[str, float, int]] = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    impl.close(q)
    start = min(t for k, t, _ in reports if k == "p")
    end = max(t for k, t, _ in reports if k == "c")
    size = _size(item)
    secs = end - start
    res: Result = {"items_per_s": total / secs, "seconds": secs, "items": total,
           "peak_rss_mib": max(r for _, _, r in reports) / 1024}  # fmt: skip
    if size:
        res["mb_per_s"] = total * size / secs / 1e6
    return res


def round_trip(impl: Impl, item: Any, count: int) -> Result:
    made = impl.make(_size(item)), impl.make(_size(item))
    echo = _CTX.Process(target=_echo, args=(impl, *made, count))
    echo.start()
    a, b = impl.attach(made[0]), impl.attach(made[1])
    lat: List[float] = []
    for _ in range(count):
        t = time.perf_counter()
        impl.put(a, item)
        impl.get(b)
        lat.append((time.perf_counter() - t) * 1e6)
    echo.join()
    impl.detach(a)
    impl.detach(b)
    impl.close(made[0])
    impl.close(made[1])
    lat.sort()
    return {"p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)],
            "items_per_s": count / (sum(lat) / 1e6)}  # fmt: skip


def scenarios(
    quick: bool, scale: Optional[float] = None, size_scale: float = 1.0
) -> Dict[str, Callable[[Impl], Result]]:
    """scale (fraction of the full counts) overrides quick (0.2); tests pass a tiny one, and
    a size_scale that shrinks the in-place scenarios' items (arrays and raw bytes)."""
    k = scale if scale is not None else (0.2 if quick else 1.0)

    def n(x: int) -> int:
        return max(BATCH, int(x * k))

    def spec(kind: str, nbytes: int, count: int) -> Spec:
        size = max(64, int(nbytes * size_scale) // 64 * 64)
        return Spec(kind, size, max(4, int(count * k)))

    def mover(s: Spec) -> Callable[[Impl], Result]:
        return lambda i: i.move(s)

    inplace = {name: mover(spec(ARRAY, *sc)) for name, sc in ARRAYS.items()}
    inplace.update({name: mover(spec(INPLACE_RAW, *sc)) for name, sc in INPLACE.items()})
    return {
        "small_dict": lambda i: throughput(i, SMALL, n(200_000)),
        "64B": lambda i: throughput(i, b"x" * 64, n(200_000)),
        "1KiB": lambda i: throughput(i, b"x" * 1024, n(200_000)),
        "64KiB": lambda i: throughput(i, b"x" * 65536, n(10_000)),
        "1MiB": lambda i: throughput(i, b"x" * (1 << 20), n(1_000)),
        BATCH_SEPARATE: lambda i: throughput(
            i, SMALL, n(1_000_000) // BATCH * BATCH, shape=SEPARATE
        ),
        BATCH_ONE_LIST: lambda i: throughput(
            i, SMALL, n(1_000_000) // BATCH * BATCH, shape=ONE_LIST
        ),
        "round_trip": lambda i: round_trip(i, SMALL, n(20_000)),
        "2p_2c_small_dict": lambda i: throughput(i, SMALL, n(200_000), producers=2, consumers=2),
        **inplace,
    }


HEADLINE = {"round_trip": "p50_us"}
MB_PER_S = ("64KiB", "1MiB")
PEERS = ("multiprocessing.Queue", "faster-fifo", "zeroq")


SCENARIOS = tuple(scenarios(True))
ZERO_COPY = tuple(s for s in SCENARIOS if group(s) in (ARRAY, INPLACE_RAW))


def _no_room(nbytes: int) -> Optional[str]:
    """Why this machine cannot take arrays of nbytes (None: it can). One run holds at most
    a ring of 4x, the producer's array and the consumer's copy, a pickle or two in flight,
    and Ray's store: 16x of available memory and 6x free in /dev/shm are asked for."""
    if nbytes < 64 * MiB:
        return None
    need_mem, need_shm = 16 * nbytes, 6 * nbytes
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        avail = info.get("MemAvailable", 0)
        st = os.statvfs("/dev/shm")
        shm = st.f_bavail * st.f_frsize
    except (OSError, ValueError, IndexError):
        return "cannot tell how much memory is free"
    if avail < need_mem:
        return f"needs {need_mem >> 30} GiB of available memory, {avail / (1 << 30):.1f} GiB here"
    if shm < need_shm:
        return f"needs {need_shm >> 30} GiB free in /dev/shm, {shm / (1 << 30):.1f} GiB here"
    return None


def _runnable(todo: Dict[str, Any], size_scale: float) -> Dict[str, Any]:
    """todo without the array scenarios this machine cannot run (each said in one line)."""
    out = {}
    for s, f in todo.items():
        if s in ARRAYS:
            if importlib.util.find_spec("numpy") is None:
                _missing("numpy", "pip install numpy; the numpy_* scenarios need it")
                continue
            why = _no_room(int(ARRAYS[s][0] * size_scale))
            if why:
                _say_once(s, f"{s} skipped: {why}")
                continue
        out[s] = f
    return out


def headline(scenario: str, res: Result) -> float:
    if scenario in HEADLINE:
        return res[HEADLINE[scenario]]
    return res["mb_per_s"] if scenario in MB_PER_S else res["items_per_s"]


_unavailable: Set[str] = set()  # peers that said PeerUnavailable: not tried again


def _show_progress() -> bool:
    """Progress lines (rewritten in place with \\r) only on a terminal, not into a log."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def run(
    quick: bool = False,
    only: Optional[Sequence[str]] = None,
    json_path: Optional[str] = None,
    png_path: Optional[str] = None,
    scale: Optional[float] = None,
    size_scale: float = 1.0,
    keep_peers: bool = False,
) -> Dict[str, Any]:
    """Run the scenarios in only (default: all but the in-place ones, ZERO_COPY, which take
    three times as long as the rest together) once and print the tables. keep_peers: leave
    Ray running for another run (median_of); close_peers() stops it."""
    results: Dict[str, Dict[str, Result]] = {}
    todo = {
        s: f
        for s, f in scenarios(quick, scale, size_scale).items()
        if (s in only if only else s not in ZERO_COPY)
    }
    todo = _runnable(todo, size_scale)
    impls = available_impls(todo)
    progress = _show_progress()
    try:
        for s, f in todo.items():
            results[s] = {}
            for impl in (i for i in impls if applies(i, s) and i.name not in _unavailable):
                if progress:
                    line = f"\r[{s}] {impl.name} ..."
                    print(line.ljust(60), end="", file=sys.stderr, flush=True)
                try:
                    results[s][impl.name] = f(impl)
                except PeerUnavailable as e:
                    _unavailable.add(impl.name)
                    print(f"\r{impl.name} skipped: {e}".ljust(60), file=sys.stderr)
                except PeerFailed as e:
                    print(f"\r{impl.name} left out of {s} in this run: {e}", file=sys.stderr)
    finally:
        if not keep_peers:
            close_peers()
    if progress:
        print("\r".ljust(60) + "\r", end="", file=sys.stderr, flush=True)
    report = {"machine": machine(), "quick": quick, "results": results}
    print(table(results))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"results written to {json_path}")
    if png_path:
        chart(results, png_path)
    return report


def machine() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}  # fmt: skip


def notes(results: Dict[str, Dict[str, Result]]) -> List[str]:
    """What is not like for like in these results (checked against each peer's source)."""
    out: List[str] = []
    if any("zeroq" in by for by in results.values()):
        out += [
            "zeroq: fixed-size slots. A message must be exactly the slot size (element_size; any"
            " other length raises ValueError) and get returns a whole slot. Here element_size is"
            " set to the message size, so it carries no padding; messages of varying size would"
            " need padding and a length field of their own. Raw bytes only (no objects, no batch"
            " call): '-' in the other rows.",
            "zeroq: its blocking put/get poll. On a full or empty queue they sleep 1 ms"
            " (std::thread::sleep, seen as clock_nanosleep of 1,000,000 ns) and try again;"
            " nothing wakes them sooner. The other queues wake a waiting reader or writer when"
            " the other side moves.",
        ]
    if BATCH_SEPARATE in results:
        out.append(
            f"{BATCH_SEPARATE}: {BATCH} separate messages per batch call (sage-queue and"
            f" faster-fifo put_many/get_many); multiprocessing.Queue has no batch call, so it"
            f" makes {BATCH} put() and {BATCH} get() calls."
        )
    if BATCH_ONE_LIST in results:
        out.append(
            f"{BATCH_ONE_LIST}: every queue moves one message holding a list of {BATCH} dicts"
            f" (pickled as one object); items/s counts the dicts."
        )
    return out


def _split(results: Dict[str, Dict[str, Result]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the queue scenarios, the in-place scenarios)."""
    old = {s: by for s, by in results.items() if group(s) in (OBJECTS, RAW)}
    return old, {s: by for s, by in results.items() if s not in old}


def table(results: Dict[str, Dict[str, Result]]) -> str:
    """The queue scenarios' table, then the in-place scenarios' table (when they ran)."""
    old, new = _split(results)
    parts = [queue_table(old)] if old or not new else []
    if new:
        parts.append(inplace_table(new))
    return "\n\n".join(parts)


def queue_table(results: Dict[str, Dict[str, Result]]) -> str:
    peers = [p for p in PEERS if any(p in r for r in results.values())]
    w = max([20] + [len(s) + 2 for s in results])
    head = f"{'scenario':<{w}}{'metric':<10}{'sage-queue':>12}" + "".join(
        f"{p:>22}{'ratio':>8}" for p in peers
    )
    lines = [head, "-" * len(head)]
    for s, by in results.items():
        sage = headline(s, by["sage-queue"])
        metric = "p50 us" if s in HEADLINE else ("MB/s" if s in MB_PER_S else "items/s")
        row = f"{s:<{w}}{metric:<10}{sage:>12,.1f}"
        for p in peers:
            if p in by:
                v = headline(s, by[p])
                # Ratios read "times better": for latency, peer / sage.
                ratio = v / sage if s in HEADLINE else sage / v
                row += f"{v:>22,.1f}{ratio:>7.2f}x"
            else:  # the peer does not take part (zeroq: objects)
                row += f"{'-':>22}{'':>8}"
        lines.append(row.rstrip())
    rss = {i: max(r.get("peak_rss_mib", 0) for r in (by.get(i, {}) for by in results.values()))
           for i in ("sage-queue", *peers)}  # fmt: skip
    lines.append("peak RSS per process (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    told = notes(results)
    if told:
        lines.append("not like for like:")
        for note in told:
            lines += textwrap.wrap(note, 100, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(lines)


# The in-place table: the rows of each scenario in this order; sage-queue's get is the base.
INPLACE_ROWS = (
    "sage-queue",
    "sage-queue views",
    "sage-queue loan+view",
    "multiprocessing.Queue",
    "faster-fifo",
    "shared_memory by hand",
    "Ray object store",
    "iceoryx2 copy",
    "iceoryx2 loan",
)
LABELS = {"sage-queue": "sage-queue get"}
# Issue 14's targets over the in-place table: (scenario, queue, >= ratio x, of this queue).
TARGETS = (
    ("numpy_16MiB", "sage-queue views", 2.0, "sage-queue"),
    ("numpy_16MiB", "sage-queue views", 1.0, "Ray object store"),
    ("inplace_1MiB", "sage-queue", 1.0, "iceoryx2 copy"),
    ("inplace_1MiB", "sage-queue loan+view", 0.8, "iceoryx2 loan"),
)


def targets(results: Dict[str, Dict[str, Result]]) -> List[Tuple[str, float, bool]]:
    """(what, measured ratio of items/s, met) for each target whose rows are in results."""
    out = []
    for s, mine, want, other in TARGETS:
        by = results.get(s, {})
        if mine in by and other in by:
            ratio = by[mine]["items_per_s"] / by[other]["items_per_s"]
            what = f"{s}: {LABELS.get(mine, mine)} >= {want:g}x {LABELS.get(other, other)}"
            out.append((what, ratio, ratio >= want))
    return out


def inplace_notes(results: Dict[str, Dict[str, Result]]) -> List[str]:
    """What is not like for like in the in-place table."""
    present = {i for by in results.values() for i in by}
    flight = ", ".join(
        f"{s} {slots_for(int(next(iter(by.values()))['nbytes']))}"
        for s, by in results.items()
        if by
    )
    out = [
        "Every consumer checks each item's size and reads its first and last element; none"
        " reads all of it (summing the data would add one pass over each item to every row)."
        f" In flight at most: what sage-queue's ring holds ({flight} messages); the peers"
        " that need a number (shared_memory slots, Ray's window, iceoryx2's subscriber"
        " buffer) get the same.",
    ]
    if any(s in ARRAYS for s in results):
        out.append(
            "numpy: sage-queue's put writes the array's buffer into the ring (one copy, pickle"
            " protocol 5 out of band); get copies the message into the thread's buffer and the"
            " data from there into a bytearray the new array owns (two copies); views hand out a"
            " read-only array over the ring, valid inside the with block."
            " multiprocessing.Queue and faster-fifo pickle the array into bytes, move the bytes"
            " (a pipe; faster-fifo's shared buffer) and unpickle a new array."
        )
    if any(s in ARRAYS or s in INPLACE for s in results):
        out.append(
            "sage-queue frees a consumed message's ring space without touching its bytes (each"
            " record header carries a tag of its position, so stale bytes never read as a"
            " record). A ring whose consumer keeps up reuses its first 4 MiB (a claim past them"
            " in an empty ring starts the next lap)."
        )
    if "shared_memory by hand" in present:
        out.append(
            "shared_memory by hand: fixed-size blocks made for this one array (shape and dtype"
            " do not travel: both sides know them), the slot indices go through two"
            " multiprocessing.Queues (pipes), one copy into the block (np.copyto); nothing"
            " frees a slot held by a process that died."
        )
    if "Ray object store" in present:
        out.append(
            "Ray object store: a producer actor ray.put()s each array (one copy into the store)"
            " and calls a consumer actor with the ObjectRef as argument (one actor call per"
            " item); the consumer gets a read-only array over the store. Ray's start and the"
            " actors' start are not counted."
        )
    if present & {"iceoryx2 copy", "iceoryx2 loan"}:
        out += [
            "iceoryx2: publish-subscribe is broadcast: every subscriber gets every sample. With"
            " one subscriber it acts as a queue; several consumers would each get everything,"
            " where sage-queue's share the work. The publisher's slice length is set when it is"
            " created (initial_max_slice_len, here the message size).",
            "iceoryx2: when the subscriber's buffer is full its publisher waits by polling"
            " (RetryUntilDelivered: spin, yield, sleep), not by being woken; the subscriber is"
            " woken through a second (event) service: notify() after every send,"
            " listener.timed_wait() when nothing is there. Both iceoryx2 rows loan a sample and"
            " copy the payload into it (the Python API has no send_copy for slices): they"
            " differ only in the subscriber, which copies the sample out to bytes or reads it"
            " in place.",
            "inplace_*: sage-queue get is put(bytes) (one copy into the ring) and get() (two"
            " copies: into the thread's buffer, then out to bytes); loan+view copies the payload"
            " into a loan (standing in for writing it in place) and reads it through a view.",
        ]
    return out


def inplace_table(results: Dict[str, Dict[str, Result]]) -> str:
    w = max([16] + [len(s) + 2 for s in results])
    head = (f"{'in place':<{w}}{'queue':<24}{'items/s':>12}{'GB/s':>9}{'vs get':>9}"
            f"{'peak RSS MiB':>14}")  # fmt: skip
    lines = [
        "one producer process -> one consumer process; GB/s: payload bytes per second;"
        " vs get: items/s over sage-queue get's",
        head,
        "-" * len(head),
    ]
    fewer = False
    for s, by in results.items():
        base = by.get("sage-queue", {}).get("items_per_s")
        first = True
        for impl in [i for i in INPLACE_ROWS if i in by] + [i for i in by if i not in INPLACE_ROWS]:
            res = by[impl]
            vs = f"{res['items_per_s'] / base:>8.2f}x" if base else f"{'-':>9}"
            n = res.get("runs", 0)
            runs = f"  * from {n:.0f} run{'s' if n != 1 else ''}" if n else ""
            fewer = fewer or bool(runs)
            lines.append(
                f"{s if first else '':<{w}}{LABELS.get(impl, impl):<24}"
                f"{res['items_per_s']:>12,.1f}{res['gb_per_s']:>9.2f}{vs}"
                f"{res['peak_rss_mib']:>14,.0f}{runs}"
            )
            first = False
    if fewer:
        lines.append("* its run broke off in the other runs (said above)")
    met = targets(results)
    if met:
        lines.append("targets (issue 14), items/s ratios from this table:")
        for what, ratio, ok in met:
            lines.append(f"  {what:<58}{ratio:>6.2f}x  {'met' if ok else 'NOT met'}")
    lines.append("not like for like:")
    for note in inplace_notes(results):
        lines += textwrap.wrap(note, 100, initial_indent="- ", subsequent_indent="  ")
    return "\n".join(lines)


def chart(results: Dict[str, Dict[str, Result]], path: str) -> None:
    """A bar chart of the queue scenarios (the in-place ones are in their table only)."""
    results = _split(results)[0]
    if not results:
        print("no chart written: it shows the queue scenarios, and none ran", file=sys.stderr)
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no chart written", file=sys.stderr)
        return
    names = list(results)
    impls = [i for i in ("sage-queue", *PEERS) if any(i in by for by in results.values())]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        vals = []  # speed relative to sage-queue; 0 where the peer does not take part
        for s in names:
            sage = headline(s, results[s]["sage-queue"])
            if impl not in results[s]:
                vals.append(0.0)
                continue
            v = headline(s, results[s][impl])
            vals.append(sage / v if s in HEADLINE else v / sage)
        ax.bar([x + k * width for x in range(len(names))], vals, width, label=impl)
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=20)
    ax.set_ylabel("speed relative to sage-queue")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"chart written to {path}")


def median_of(
    runs: int, json_path: Optional[str] = None, png_path: Optional[str] = None, **kw: Any
) -> Dict[str, Any]:
    """Run the whole suite `runs` times and keep each number's median."""
    try:
        reports = [run(keep_peers=True, **kw) for _ in range(runs)]
    finally:
        close_peers()
    merged = reports[0]
    results: Dict[str, Dict[str, Result]] = {}
    for report in reports:  # every row any run has (a peer may be missing from one run)
        for s, by in report["results"].items():
            for impl in by:
                results.setdefault(s, {}).setdefault(impl, {})
    for s, by in results.items():
        for impl, res in by.items():
            done = [r["results"][s][impl] for r in reports if impl in r["results"].get(s, {})]
            for key in done[0]:
                res[key] = statistics.median(d[key] for d in done)
            if len(done) < runs:
                res["runs"] = len(done)  # the table says so
    merged["results"] = results
    merged["runs"] = runs
    print(f"\nmedian of {runs} runs:")
    print(table(merged["results"]))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(merged, fh, indent=2)
        print(f"results written to {json_path}")
    if png_path:
        chart(merged["results"], png_path)
    return merged


def micro(count: int = 100_000) -> Dict[str, float]:
    """Microseconds per call in one process, queue never empty or full: the cost of crossing
    into the native library, without any waiting. zeroq's 64 B put+get (its blocking calls,
    64 B slots) shows next to SageQueue's when zeroq is installed."""
    from sage_queue import SageQueue
    from sage_queue import _fastpath as fast
    from sage_queue import _native as native

    out: Dict[str, float] = {}
    q = SageQueue(f"micro-{uuid.uuid4().hex[:12]}", maxsize=64 << 20)
    raw = native.SageQueue.open(q.name, True)
    chunk = min(count, 20_000)
    cases: List[Tuple[str, Callable[[Any], None], Callable[[], Any], Any]] = [
        ("SageQueue small dict", q.put, q.get, SMALL),
        # An acknowledged get and its ack (acks.py), counted as the "get".
        ("SageQueue small dict acked", q.put, lambda: q.ack(q.get_acked()[1]), SMALL),
        ("SageQueue 64 B bytes", q.put, q.get, b"x" * 64),
    ]
    zq: Any = None
    try:
        zq = _zeroq().Queue(
            f"micro-zq-{uuid.uuid4().hex[:12]}", element_size=64, capacity=32_768, create=True
        )
        cases.append(("zeroq 64 B bytes", zq.put, zq.get, b"x" * 64))
    except ImportError:
        _missing("zeroq", "pip install zeroq")
    cases.append(
        ("generated methods 64 B", lambda b: raw.put(b, 0.0), lambda: raw.get(0.0), b"x" * 64)
    )
    # The floor of the shim's path: its two direct calls (_fastpath.py) and the bytes made
    # from the view, with no wrapper code at all around them.
    bare = SageQueue(f"micro-bare-{uuid.uuid4().hex[:12]}", maxsize=64 << 20, serializer="raw")
    cid, st = bare._cid, fast.STATUS

    def bare_put(b: bytes) -> None:
        fast.try_put(cid, 0, b"", 64, b, st)

    def bare_get() -> bytes:
        n = fast.try_take(cid, st)
        return bytes(fast.view(n)[:n])

    cases.append(("direct calls alone 64 B", bare_put, bare_get, b"x" * 64))
    try:
        for label, put, get, item in cases:
            tp = tg = 0.0
            for _ in range(max(1, count // chunk)):
                t0 = time.perf_counter()
                for _ in range(chunk):
                    put(item)
                t1 = time.perf_counter()
                for _ in range(chunk):
                    get()
                tp += t1 - t0
                tg += time.perf_counter() - t1
            n = max(1, count // chunk) * chunk
            out[f"{label}: put"] = tp / n * 1e6
            out[f"{label}: get"] = tg / n * 1e6
    finally:
        raw.detach()
        q.close()
        bare.close()
        if zq is not None:
            zq.close()
    for k, v in out.items():
        print(f"{k:<36}{v:>8.2f} us")
    plain, acked = out["SageQueue small dict: get"], out["SageQueue small dict acked: get"]
    print(f"acked get + ack / plain get (small dict): {acked / plain:.2f}x")
    pair = {k: out[f"{k}: put"] + out[f"{k}: get"] for k in ("SageQueue 64 B bytes",
            "direct calls alone 64 B")}  # fmt: skip
    print(f"64 B put+get: SageQueue {pair['SageQueue 64 B bytes']:.2f} us, its two direct calls"
          f" and the bytes alone {pair['direct calls alone 64 B']:.2f} us")  # fmt: skip
    if zq is not None:
        print("(zeroq: fixed 64 B slots, raw bytes only; its put/get sleep 1 ms when full/empty,"
              " which never happens here)")  # fmt: skip
    return out


def scenario_list(text: str) -> List[str]:
    """argparse type of --only: comma-separated names from SCENARIOS."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        what = f"unknown scenario {', '.join(map(repr, unknown))}" if unknown else "no scenario"
        raise argparse.ArgumentTypeError(f"{what} (choose from {', '.join(SCENARIOS)})")
    return names


def zero_copy_micro(
    reps: int = 15,
    view_sizes: Sequence[int] = (MiB, 16 * MiB, 256 * MiB),
    put_size: int = 128 * MiB,
) -> Dict[str, float]:
    """In one process: microseconds from view() until a numpy array put by put() is there
    (median of reps, per array size), and put() of a put_size array against one memcpy of it
    (np.copyto into a preallocated array, the two timed by turns), as medians and their
    ratio. Sizes this machine has no room for are left out with one line.

    Each repetition puts two arrays, then opens a view of the first (right after the put's
    copy went through the caches: "after a put") and, holding it, a view of the second
    (right after the first view: "back to back")."""
    from sage_queue import SageQueue

    np = _np()
    sizes = []
    for size in view_sizes:
        why = _no_room(size)
        if why:
            print(f"view of {_size_name(size)} left out: {why}", file=sys.stderr)
        else:
            sizes.append(size)
    out: Dict[str, float] = {}
    ring = ring_for(max([put_size, *sizes]))
    q = SageQueue(f"micro-zc-{uuid.uuid4().hex[:12]}", maxsize=ring)
    try:
        for size in sizes:
            arr = _payload(Spec(ARRAY, size, 1))
            cold, warm = [], []
            for _ in range(reps):
                q.put(arr)
                q.put(arr)
                t0 = time.perf_counter()
                with q.view() as a:
                    t1 = time.perf_counter()
                    with q.view() as b:
                        t2 = time.perf_counter()
                        _touch(b, size)
                    _touch(a, size)
                # The arrays keep their messages pinned: released here, outside the timing.
                del a, b
                cold.append(t1 - t0)
                warm.append(t2 - t1)
            name = _size_name(size)
            out[f"view of a {name} array, back to back: us"] = statistics.median(warm) * 1e6
            out[f"view of a {name} array, after a put: us"] = statistics.median(cold) * 1e6
            del arr
        arr = _payload(Spec(ARRAY, put_size, 1))
        dst = np.empty_like(arr)
        np.copyto(dst, arr)
        for _ in range(ring // put_size + 1):  # every page of the ring written once first
            q.put(arr)
            with q.view():
                pass
        puts, copies = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            q.put(arr)
            t1 = time.perf_counter()
            np.copyto(dst, arr)
            t2 = time.perf_counter()
            with q.view():
                pass
            puts.append(t1 - t0)
            copies.append(t2 - t1)
        name = _size_name(put_size)
        out[f"put of a {name} array: ms"] = statistics.median(puts) * 1e3
        out[f"np.copyto of a {name} array: ms"] = statistics.median(copies) * 1e3
        out["put / memcpy"] = statistics.median(puts) / statistics.median(copies)
    finally:
        q.close()
    for k, v in out.items():
        print(f"{k:<46}{v:>10.2f}{'x' if k == 'put / memcpy' else ''}")
    for when in ("back to back", "after a put"):
        views = [v for k, v in out.items() if k.startswith("view of") and when in k]
        if views:
            ok = max(views) <= 20
            print(f"target: a view opens in <= 20 us at every size ({when}):"
                  f" {'met' if ok else 'NOT met'} (at most {max(views):.1f} us)")  # fmt: skip
    ok = out["put / memcpy"] <= 1.6
    print(f"target: put <= 1.6x one memcpy: {'met' if ok else 'NOT met'}"
          f" ({out['put / memcpy']:.2f}x)")  # fmt: skip
    return out


def _size_name(nbytes: int) -> str:
    if nbytes >= MiB and nbytes % MiB == 0:
        return f"{nbytes // MiB} MiB"
    return f"{nbytes // 1024} KiB" if nbytes % 1024 == 0 else f"{nbytes} B"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="sage-queue bench", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer items per scenario")
    ap.add_argument(
        "--only",
        type=scenario_list,
        metavar="NAME[,NAME...]",
        help=f"comma-separated scenarios, of: {', '.join(SCENARIOS)}",
    )
    ap.add_argument("--json", dest="json_path", help="write results as JSON here")
    ap.add_argument("--png", dest="png_path", help="save a chart here (needs matplotlib)")
    ap.add_argument("--runs", type=positive_int, default=1, help="repeat and report medians")
    ap.add_argument(
        "--zero-copy",
        action="store_true",
        help=f"the in-place scenarios, not in the default run (with --only: those as well):"
        f" {', '.join(ZERO_COPY)}",
    )
    ap.add_argument("--micro", action="store_true", help="only: us per put and per get")
    ap.add_argument(
        "--zero-copy-micro",
        action="store_true",
        help="only: us to open a view of an array, and put of a 128 MiB array over one memcpy",
    )
    a = ap.parse_args(argv)
    if a.micro:
        micro()
        return 0
    if a.zero_copy_micro:
        zero_copy_micro()
        return 0
    only = a.only
    if a.zero_copy:
        only = list(only or []) + [s for s in ZERO_COPY if s not in (only or [])]
    kw: Dict[str, Any] = dict(quick=a.quick, only=only, json_path=a.json_path, png_path=a.png_path)
    if a.runs > 1:
        median_of(a.runs, **kw)
    else:
        run(**kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
