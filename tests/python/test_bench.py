"""The benchmark (sage_queue.bench) with tiny counts: every scenario runs for every queue that
takes part, the batch rows come in both shapes, zeroq joins the raw-bytes rows and --micro,
and the table says what is not like for like. The in-place scenarios (issue 14: numpy arrays
and raw bytes against shared_memory by hand, Ray and iceoryx2) run with tiny items too, and
--zero-copy-micro with tiny arrays. Nothing here looks at timings."""

import importlib.util
import sys

import numpy as np
import pytest
from sage_queue import bench

HAS_ZEROQ = importlib.util.find_spec("zeroq") is not None
HAS_FASTER_FIFO = importlib.util.find_spec("faster_fifo") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_IOX2 = importlib.util.find_spec("iceoryx2") is not None
TINY = 0.0005  # of the full counts: every scenario moves a few hundred items at most
TINY_SIZE = 1 / 1024  # of the in-place scenarios' item sizes: 1 KiB for a 1 MiB array
QUEUE_SCENARIOS = [s for s in bench.SCENARIOS if s not in bench.ZERO_COPY]
needs_zeroq = pytest.mark.skipif(not HAS_ZEROQ, reason="zeroq is not installed")
needs_iox2 = pytest.mark.skipif(not HAS_IOX2, reason="iceoryx2 is not installed")


def test_both_batch_shapes_are_scenarios_usable_with_only():
    assert "small_dict_batch64" not in bench.SCENARIOS  # the old row mixed the two shapes
    names = "small_dict_batch64_separate,small_dict_batch64_one_list,64B"
    assert bench.scenario_list(names) == names.split(",")
    assert bench.main(["--only", "small_dict_batch64_one_list", "--quick", "--runs", "1"]) == 0


def test_every_scenario_runs_with_tiny_counts_and_the_table_has_the_new_rows(capsys):
    report = bench.run(scale=TINY)  # the default run: the in-place scenarios are not in it
    results = report["results"]
    assert list(results) == QUEUE_SCENARIOS
    for s, by in results.items():
        assert "sage-queue" in by and "multiprocessing.Queue" in by
        if HAS_FASTER_FIFO:
            assert "faster-fifo" in by
        # zeroq takes part exactly in the raw-bytes rows (bytes only).
        assert ("zeroq" in by) == (HAS_ZEROQ and s in bench.RAW_BYTES), (s, list(by))
        for res in by.values():
            assert res["items_per_s"] > 0
    for shape in (bench.BATCH_SEPARATE, bench.BATCH_ONE_LIST):
        for res in results[shape].values():
            assert res["items"] % bench.BATCH == 0 and res["items"] > 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for s in QUEUE_SCENARIOS:
        assert s in rows, out
    assert "in place" not in out
    assert "not like for like:" in out
    assert "multiprocessing.Queue has no batch call" in out
    assert "one message holding a list of 64 dicts" in out
    if HAS_ZEROQ:
        assert "zeroq" in out.splitlines()[0]
        assert rows["small_dict"].rstrip().endswith("-")  # zeroq: not a bytes row
        assert rows["64B"].rstrip().endswith("x")
        assert "fixed-size slots" in out and "sleep 1 ms" in out


@pytest.mark.parametrize("shape", [bench.SEPARATE, bench.ONE_LIST, bench.SINGLE])
def test_each_queue_moves_every_item_in_each_shape(shape):
    for impl in bench.available_impls(QUEUE_SCENARIOS):
        if bench.OBJECTS not in impl.groups:
            continue
        res = bench.throughput(impl, bench.SMALL, 3 * bench.BATCH, shape=shape)
        assert res["items"] == 3 * bench.BATCH, impl.name


def test_two_producers_two_consumers_with_tiny_counts():
    for impl in bench.available_impls(QUEUE_SCENARIOS):
        if bench.OBJECTS in impl.groups:
            res = bench.throughput(impl, bench.SMALL, 130, producers=2, consumers=2)
            assert res["items"] == 130, impl.name


class Recorder:
    def __init__(self):
        self.calls = []

    def put(self, item):
        self.calls.append("put")

    def get(self):
        self.calls.append("get")
        return bench.SMALL


def test_multiprocessing_queue_batches_are_separate_put_and_get_calls():
    rec = Recorder()
    mpq = bench.MpQueue()
    mpq.put_many(rec, [bench.SMALL] * bench.BATCH)
    assert rec.calls == ["put"] * bench.BATCH
    rec.calls.clear()
    assert len(mpq.get_many(rec, bench.BATCH)) == bench.BATCH
    assert rec.calls == ["get"] * bench.BATCH


def test_table_marks_missing_peers_and_prints_only_the_notes_that_apply():
    res = {"items_per_s": 100.0, "mb_per_s": 1.0, "p50_us": 10.0, "peak_rss_mib": 1.0}
    results = {
        "small_dict": {"sage-queue": res, "multiprocessing.Queue": res},
        "1KiB": {"sage-queue": res, "multiprocessing.Queue": res, "zeroq": res},
    }
    text = bench.table(results)
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["zeroq", "ratio"]
    assert lines[2].startswith("small_dict") and lines[2].endswith("-")
    assert lines[3].startswith("1KiB") and lines[3].endswith("1.00x")
    assert "zeroq: fixed-size slots" in text and "sleep 1 ms" in text
    assert "batch call" in text  # zeroq has none
    assert bench.BATCH_SEPARATE not in text and bench.BATCH_ONE_LIST not in text
    plain = bench.table({"small_dict": {"sage-queue": res, "multiprocessing.Queue": res}})
    assert "zeroq" not in plain and "not like for like" not in plain


def test_a_missing_zeroq_is_skipped_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "zeroq", None)  # import zeroq -> ImportError
    monkeypatch.setattr(bench, "_told", set())
    for _ in range(3):  # as with --runs 3: said once
        assert "zeroq" not in [i.name for i in bench.available_impls()]
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "zeroq" in line] == [
        "zeroq is not installed, skipped (pip install zeroq)"
    ]
    out = bench.micro(count=200)
    assert not any(k.startswith("zeroq") for k in out)
    assert "SageQueue 64 B bytes: put" in out


@needs_zeroq
def test_zeroq_slots_fit_the_message_and_children_attach_by_name():
    impl = bench.ZeroQ()
    handle = impl.make(1024)
    try:
        assert handle.owner.element_size == 1024
        slots = handle.owner.maxsize
        assert slots & (slots - 1) == 0 and slots * 1024 <= bench.RING
        q = impl.attach(handle)  # what each child process does
        impl.put(q, b"y" * 1024)
        assert impl.get(handle.owner) == b"y" * 1024
        with pytest.raises(ValueError):  # fixed-size slots: other lengths are refused
            impl.put(q, b"y" * 10)
        impl.detach(q)
    finally:
        impl.close(handle)
    with pytest.raises(ValueError):
        impl.make(0)  # objects: no slot size


@needs_zeroq
def test_zeroq_runs_the_raw_bytes_scenarios_and_not_the_others():
    impl = bench.ZeroQ()
    for size in (64, 1024, 65536):
        res = bench.throughput(impl, b"x" * size, 200)
        assert res["items"] == 200 and res["mb_per_s"] > 0
    assert all(bench.applies(impl, s) == (s in bench.RAW_BYTES) for s in bench.SCENARIOS)
    assert bench.applies(bench.Sage(), "small_dict")
    assert not bench.applies(impl, "inplace_1MiB")  # raw bytes, but iceoryx2's rows


@needs_zeroq
def test_micro_shows_zeroq_next_to_sage_queue_64_bytes(capsys):
    out = bench.micro(count=200)
    keys = list(out)
    i = keys.index("SageQueue 64 B bytes: get")
    assert keys[i + 1 : i + 3] == ["zeroq 64 B bytes: put", "zeroq 64 B bytes: get"]
    assert "fixed 64 B slots" in capsys.readouterr().out


# ---- the in-place scenarios (issue 14) ----

ARRAY_ROWS = ["sage-queue", "sage-queue views", "multiprocessing.Queue"]
ARRAY_ROWS += ["faster-fifo"] if HAS_FASTER_FIFO else []
ARRAY_ROWS += ["shared_memory by hand"] + (["Ray object store"] if HAS_RAY else [])
RAW_ROWS = ["sage-queue", "sage-queue loan+view"]
RAW_ROWS += ["iceoryx2 copy", "iceoryx2 loan"] if HAS_IOX2 else []


def test_in_place_scenarios_run_with_tiny_items_and_print_their_table(capsys):
    report = bench.run(scale=TINY, size_scale=TINY_SIZE, only=list(bench.ZERO_COPY))
    results = report["results"]
    assert list(results) == list(bench.ZERO_COPY) == [
        "numpy_1MiB", "numpy_16MiB", "numpy_256MiB", "inplace_64KiB", "inplace_1MiB"
    ]  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    for s, by in results.items():
        size, count = bench.ARRAYS.get(s) or bench.INPLACE[s]
        rows = ARRAY_ROWS if s in bench.ARRAYS else RAW_ROWS
        if "Ray object store" not in by and "Ray object store" in captured.err:
            rows = [r for r in rows if r != "Ray object store"]  # Ray failed here: said so
        assert list(by) == rows, s
        for res in by.values():
            assert res["items"] == max(4, int(count * TINY)) and res["nbytes"] == size // 1024
            assert res["items_per_s"] > 0 and res["gb_per_s"] > 0
    assert "one producer process -> one consumer process" in out
    assert "scenario" not in out  # no queue table: none of its scenarios ran
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("numpy_1MiB"))
    assert "sage-queue get" in lines[first] and lines[first].rstrip().split()[-2] == "1.00x"
    assert "sage-queue views" in lines[first + 1]
    assert "targets (issue 14)" in out
    assert "numpy_16MiB: sage-queue views >= 2x sage-queue get" in out
    assert ("inplace_1MiB: sage-queue loan+view >= 0.8x iceoryx2 loan" in out) == HAS_IOX2
    assert "reads its first and last element" in out
    assert "shared_memory by hand: fixed-size blocks" in out
    assert ("publish-subscribe is broadcast" in out) == HAS_IOX2
    ray_ran = any("Ray object store" in by for by in results.values())
    assert ("Ray object store: a producer actor" in out) == ray_ran
    assert ray_ran or not HAS_RAY or "Ray object store" in captured.err


def test_the_zero_copy_flags_select_the_in_place_runs(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(bench, "zero_copy_micro", lambda: seen.update(micro=True))
    assert bench.main(["--zero-copy", "--quick"]) == 0
    assert seen["only"] == list(bench.ZERO_COPY) and seen["quick"]
    assert bench.main(["--zero-copy", "--only", "64B,numpy_16MiB"]) == 0
    assert seen["only"] == ["64B", "numpy_16MiB"] + [
        s for s in bench.ZERO_COPY if s != "numpy_16MiB"
    ]
    assert bench.scenario_list("inplace_1MiB,numpy_256MiB") == ["inplace_1MiB", "numpy_256MiB"]
    assert bench.main(["--zero-copy-micro"]) == 0 and seen["micro"]


def test_each_in_place_peer_moves_every_item_between_processes():
    for impl in bench.available_impls(bench.ZERO_COPY):
        if isinstance(impl, bench.RayObjectStore):
            continue  # Ray: the scenario test above
        for kind in (bench.ARRAY, bench.INPLACE_RAW):
            if any(bench.group(s) == kind for s in bench.SCENARIOS if bench.applies(impl, s)):
                res = impl.move(bench.Spec(kind, 8192, 50))
                assert res["items"] == 50 and res["nbytes"] == 8192, impl.name


def test_views_and_loans_hand_out_read_only_items_over_the_ring(monkeypatch):
    got = []

    def touch(item, nbytes):
        bench_touch(item, nbytes)
        if isinstance(item, np.ndarray):
            got.append(("array", item.flags.writeable, item.flags.owndata or item.base is None))
        else:
            got.append((type(item).__name__, getattr(item, "readonly", True), None))

    bench_touch = bench._touch
    monkeypatch.setattr(bench, "_touch", touch)
    arr = bench._payload(bench.Spec(bench.ARRAY, 4096, 1))
    raw = bench._payload(bench.Spec(bench.INPLACE_RAW, 4096, 1))
    q = bench.Sage().make(4096)
    try:
        for impl, payload in ((bench.Sage(), arr), (bench.SageViews(), arr),
                              (bench.Sage(), raw), (bench.SageLoans(), raw)):  # fmt: skip
            impl.send(q, payload)
            impl.receive(q, 4096)
    finally:
        q.close()
    assert got == [
        ("array", True, False),  # get: an array over its own copy (a bytearray)
        ("array", False, False),  # views: read-only, over the ring
        ("bytes", True, None),
        ("memoryview", True, None),  # loan+view: a read-only memoryview
    ]


def test_touch_refuses_an_item_that_is_not_what_was_sent():
    bench._touch(b"x" * 10, 10)
    bench._touch(np.full(4, 1.5, dtype="float32"), 16)
    for item, nbytes in ((b"x" * 10, 11), (bytes(10), 10), (b"x" * 9 + b"y", 10)):
        with pytest.raises(RuntimeError):
            bench._touch(item, nbytes)


@needs_iox2
def test_iceoryx2_ports_in_one_process_copy_out_and_read_in_place():
    for impl in (bench.Iceoryx2(), bench.Iceoryx2Loans()):
        h = impl.make(4096)
        sub = impl.attach_receiver(h)  # the consumer attaches first, as in moved()
        pub = impl.attach_sender(h)
        for _ in range(3):
            impl.send(pub, b"x" * 4096)
        for _ in range(3):
            impl.receive(sub, 4096)
        impl.detach(pub)
        impl.detach(sub)
        impl.close(h)


def test_missing_ray_and_iceoryx2_are_skipped_with_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in ("ray", "iceoryx2") else real(n)
    )
    monkeypatch.setattr(bench, "_told", set())
    for _ in range(3):
        names = [i.name for i in bench.available_impls(bench.ZERO_COPY)]
        assert "Ray object store" not in names and "iceoryx2 copy" not in names
        assert "sage-queue views" in names and "shared_memory by hand" in names
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "ray" in line or "iceoryx2" in line] == [
        "ray is not installed, skipped (pip install 'ray>=2.9')",
        "iceoryx2 is not installed, skipped (pip install iceoryx2)",
    ]
    # The queue scenarios do not mention them.
    monkeypatch.setattr(bench, "_told", set())
    bench.available_impls(QUEUE_SCENARIOS)
    assert "ray" not in capsys.readouterr().err


def test_a_peer_that_cannot_start_is_skipped_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(bench, "_unavailable", set())
    calls = []

    def refuse(self, spec):
        calls.append(spec)
        raise bench.PeerUnavailable("Ray did not start (test)")

    monkeypatch.setattr(bench.RayObjectStore, "move", refuse)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object())  # "installed"
    monkeypatch.setattr(
        bench, "available_impls", lambda todo: [bench.Sage(), bench.RayObjectStore()]
    )
    report = bench.run(scale=TINY, size_scale=TINY_SIZE, only=["numpy_1MiB", "numpy_16MiB"])
    assert [list(by) for by in report["results"].values()] == [["sage-queue"]] * 2
    assert len(calls) == 1  # not tried again after it said so
    err = capsys.readouterr().err
    assert err.count("Ray object store skipped: Ray did not start (test)") == 1


def test_a_run_that_breaks_off_leaves_its_row_out_of_that_run_only(monkeypatch, capsys):
    monkeypatch.setattr(bench, "_unavailable", set())
    calls = []

    def flaky(self, spec):
        calls.append(spec)
        if len(calls) == 1:
            raise bench.PeerFailed("Ray's process ended (test)")
        return bench._rates(spec, 0.0, 1.0, 1024)

    monkeypatch.setattr(bench.RayObjectStore, "move", flaky)
    monkeypatch.setattr(
        bench, "available_impls", lambda todo: [bench.Sage(), bench.RayObjectStore()]
    )
    merged = bench.median_of(2, scale=TINY, size_scale=TINY_SIZE, only=["numpy_1MiB"])
    assert len(calls) == 2  # tried again in the next run
    by = merged["results"]["numpy_1MiB"]
    assert by["Ray object store"]["runs"] == 1 and "runs" not in by["sage-queue"]
    captured = capsys.readouterr()
    assert "Ray object store left out of numpy_1MiB in this run: Ray's process ended (test)" in (
        captured.err
    )
    final = captured.out.split("median of 2 runs:")[1]
    assert "* from 1 run" in final and "* its run broke off in the other runs" in final


def test_arrays_too_big_for_this_machine_are_skipped_with_one_line(monkeypatch, capsys):
    assert bench._no_room(bench.MiB) is None
    assert "available memory" in bench._no_room(1 << 50)
    monkeypatch.setattr(bench, "_told", set())
    monkeypatch.setattr(bench, "_no_room", lambda n: "needs more (test)" if n > 1 << 17 else None)
    report = bench.run(scale=TINY, size_scale=TINY_SIZE, only=["numpy_1MiB", "numpy_256MiB"])
    assert list(report["results"]) == ["numpy_1MiB"]  # 1 KiB here; numpy_256MiB 256 KiB
    assert "numpy_256MiB skipped: needs more (test)" in capsys.readouterr().err


def test_in_place_table_orders_rows_and_says_which_targets_are_met():
    def res(items_per_s):
        return {"items_per_s": items_per_s, "gb_per_s": 1.0, "peak_rss_mib": 10.0,
                "nbytes": 16 * bench.MiB, "items": 10}  # fmt: skip

    results = {
        "numpy_16MiB": {
            "Ray object store": res(50),
            "sage-queue views": res(300),
            "sage-queue": res(100),
        },  # fmt: skip
        "inplace_1MiB": {
            "sage-queue": res(90),
            "iceoryx2 copy": res(100),
            "sage-queue loan+view": res(80),
            "iceoryx2 loan": res(100),
        },  # fmt: skip
    }
    assert bench.targets(results) == [
        ("numpy_16MiB: sage-queue views >= 2x sage-queue get", 3.0, True),
        ("numpy_16MiB: sage-queue views >= 1x Ray object store", 6.0, True),
        ("inplace_1MiB: sage-queue get >= 1x iceoryx2 copy", 0.9, False),
        ("inplace_1MiB: sage-queue loan+view >= 0.8x iceoryx2 loan", 0.8, True),
    ]
    text = bench.table(results)
    lines = text.splitlines()
    labels = [line[16:40].strip() for line in lines[3:10]]  # the queue column
    assert labels == [
        "sage-queue get", "sage-queue views", "Ray object store",
        "sage-queue get", "sage-queue loan+view", "iceoryx2 copy", "iceoryx2 loan",
    ]  # fmt: skip
    firsts = [line[:16].strip() for line in lines[3:10]]
    assert firsts == ["numpy_16MiB", "", "", "inplace_1MiB", "", "", ""]
    assert [line.split()[-2] for line in lines[3:6]] == ["1.00x", "3.00x", "0.50x"]
    told = [line for line in lines if line.startswith("  numpy_16MiB:") or "  inplace_" in line]
    assert [line.split()[-1] for line in told] == ["met", "met", "met", "met"]
    assert "0.90x  NOT met" in told[2]
    assert "shared_memory by hand" not in text  # no note for a peer that did not run
    assert "scenario" not in text.splitlines()[0]


def test_zero_copy_micro_with_tiny_arrays(capsys):
    out = bench.zero_copy_micro(reps=3, view_sizes=(4096, 1 << 16), put_size=1 << 16)
    assert set(out) == {
        "view of a 4 KiB array, back to back: us", "view of a 4 KiB array, after a put: us",
        "view of a 64 KiB array, back to back: us", "view of a 64 KiB array, after a put: us",
        "put of a 64 KiB array: ms", "np.copyto of a 64 KiB array: ms", "put / memcpy",
    }  # fmt: skip
    assert all(v > 0 for v in out.values())
    text = capsys.readouterr().out
    assert "target: a view opens in <= 20 us at every size (back to back)" in text
    assert "target: put <= 1.6x one memcpy" in text
