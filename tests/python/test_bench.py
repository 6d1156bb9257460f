"""The benchmark (sage_queue.bench) with tiny counts: every scenario runs for every queue that
takes part, the batch rows come in both shapes, zeroq joins the raw-bytes rows and --micro,
and the table says what is not like for like. Nothing here looks at timings."""

import importlib.util
import sys

import pytest
from sage_queue import bench

HAS_ZEROQ = importlib.util.find_spec("zeroq") is not None
HAS_FASTER_FIFO = importlib.util.find_spec("faster_fifo") is not None
TINY = 0.0005  # of the full counts: every scenario moves a few hundred items at most
needs_zeroq = pytest.mark.skipif(not HAS_ZEROQ, reason="zeroq is not installed")


def test_both_batch_shapes_are_scenarios_usable_with_only():
    assert "small_dict_batch64" not in bench.SCENARIOS  # the old row mixed the two shapes
    names = "small_dict_batch64_separate,small_dict_batch64_one_list,64B"
    assert bench.scenario_list(names) == names.split(",")
    assert bench.main(["--only", "small_dict_batch64_one_list", "--quick", "--runs", "1"]) == 0


def test_every_scenario_runs_with_tiny_counts_and_the_table_has_the_new_rows(capsys):
    report = bench.run(scale=TINY)
    results = report["results"]
    assert list(results) == list(bench.SCENARIOS)
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
    for s in bench.SCENARIOS:
        assert s in rows, out
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
    for impl in bench.available_impls():
        if impl.bytes_only:
            continue
        res = bench.throughput(impl, bench.SMALL, 3 * bench.BATCH, shape=shape)
        assert res["items"] == 3 * bench.BATCH, impl.name


def test_two_producers_two_consumers_with_tiny_counts():
    for impl in bench.available_impls():
        if not impl.bytes_only:
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


@needs_zeroq
def test_micro_shows_zeroq_next_to_sage_queue_64_bytes(capsys):
    out = bench.micro(count=200)
    keys = list(out)
    i = keys.index("SageQueue 64 B bytes: get")
    assert keys[i + 1 : i + 3] == ["zeroq 64 B bytes: put", "zeroq 64 B bytes: get"]
    assert "fixed 64 B slots" in capsys.readouterr().out
