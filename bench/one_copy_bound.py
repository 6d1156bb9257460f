"""The ceiling of a single-copy ``get`` of 1 MiB raw bytes, side by side with the peer of
issue 14's target: producer process -> consumer process, median of ``--runs`` alternating
runs of each row, through ``sage-queue bench``'s in-place mover (same ring, same number of
messages in flight, same producer).

    PYTHONPATH=python python3 bench/one_copy_bound.py [--runs 3]

Rows: sage-queue ``get`` (two copies on the consumer side: the native take into the
thread's buffer, then the bytes object); a consumer that makes only the native take (the one
copy any ``get`` must make, and no bytes object: what a single-copy ``get`` could reach at
most); iceoryx2 copying each sample out to bytes (skipped with one line when not installed).
"""

import argparse
import statistics
from typing import Any, Dict, List

from sage_queue import bench
from sage_queue import queue as sq


class SageTakeOnly(bench.Sage):
    """The consumer makes the native take alone: ring -> this thread's buffer."""

    name = "sage-queue native take only"

    def receive(self, q: Any, nbytes: int) -> None:
        n = sq._TRY_TAKE(q._cid, sq._ST)
        if n >= sq._FAILED:
            n = q._wait_take(True, None)
        assert n == nbytes + 1, n  # the raw bytes tag, then the payload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=int, default=2_000)
    args = ap.parse_args()
    impls: List[bench.Impl] = [bench.Sage(), SageTakeOnly()]
    try:
        bench._iox2()
        impls.append(bench.Iceoryx2())
    except ImportError:
        print("iceoryx2 is not installed (pip install iceoryx2): its row is skipped")
    spec = bench.Spec(bench.INPLACE_RAW, bench.MiB, args.items)
    rates: Dict[str, List[float]] = {}
    for r in range(args.runs):
        for impl in impls:
            rate = float(impl.move(spec)["items_per_s"])
            rates.setdefault(impl.name, []).append(rate)
            print(f"run {r + 1}: {impl.name:30s} {rate:10,.0f} items/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ref = med.get("iceoryx2 copy")
    print(f"\nmedian of {args.runs}, 1 MiB raw bytes, one producer -> one consumer process:")
    for name, rate in med.items():
        ratio = f"{rate / ref:.2f}x iceoryx2 copy" if ref else ""
        print(f"  {name:30s} {rate:10,.0f} items/s  {ratio}")


if __name__ == "__main__":
    main()
