"""bench/freeze.py (a stopped worker and a frozen pipeline) with tiny numbers: it completes and
its counts agree with each other. Nothing here looks at timings; the arithmetic of a freeze
is checked on made-up arrival times."""

import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "freeze.py")


@pytest.fixture(scope="module")
def freeze():
    spec = importlib.util.spec_from_file_location("freeze_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_counts(r, pauses):
    assert r["pauses"] == pauses
    assert len(r["pause_gaps_ms"]) == pauses
    assert 0 <= r["freezes"] <= pauses
    assert len(r["freeze_list"]) == r["freezes"]
    assert 0 <= r["frozen_to_end"] <= r["freezes"]
    assert r["controls"] == pauses and len(r["control_gaps_ms"]) == pauses
    assert 0 <= r["quiet_controls"] <= pauses
    # A freeze is a long gap inside a pause, so it overlaps a pause in the list of long gaps.
    assert r["freezes"] <= sum(1 for g in r["long_gaps"] if g["pauses"])
    assert 0 <= r["victim_seen_stopped"] <= pauses
    assert 0 <= r["other_seen_running"] <= pauses
    assert 0 <= r["arrivals_in_pauses_by_other"] <= r["arrivals_in_pauses"] <= r["received"]
    # Every message sent arrived exactly once, whatever the pauses did.
    assert r["sent"] > 0
    assert r["received"] == r["sent"]
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["unknown"] == 0


def test_run_completes_with_consistent_counts(freeze):
    r = freeze.run(pauses=10, pause_ms=50, baseline_s=0.4, seed=1)
    check_counts(r, 10)
    text = freeze.report(r)
    assert f"freezes: {r['freezes']} of 10 pauses" in text
    assert f"{r['sent']} sent, {r['received']} received, 0 lost, 0 duplicated" in text


def test_views_positive_control_completes_with_consistent_counts(freeze):
    r = freeze.run(pauses=5, pause_ms=50, baseline_s=0.4, seed=2, views=True)
    check_counts(r, 5)
    assert "through views" in freeze.report(r)


def test_main_prints_the_report(freeze, capsys):
    argv = ["--pauses", "3", "--pause-ms", "20", "--baseline-s", "0.3", "--seed", "3"]
    assert freeze.main(argv) == 0
    out = capsys.readouterr().out
    assert "of 3 pauses" in out and "throughput:" in out and "seed: 3" in out


def test_analyze_follows_the_definition(freeze):
    """Made-up arrivals every 10 ms from 0 to 2 s (seconds), except none in 0.5-0.7 and none
    in 1.3-1.36; three pauses and two control windows; a freeze is a 95 ms gap."""
    times = [i / 100 for i in range(201) if not (50 < i < 70 or 130 < i < 136)]
    who = [i % 2 for i in range(len(times))]
    pauses = [
        # in the 200 ms hole from 0.5 on, until SIGCONT: a freeze lasting to the end
        {"victim": 0, "start": 0.45, "end": 0.6, "victim_state": "T", "other_state": "S"},
        # a 60 ms hole only: below the threshold
        {"victim": 1, "start": 1.25, "end": 1.40, "victim_state": "T", "other_state": "R"},
        # nothing arrives until SIGCONT, but the other worker was stopped: not counted
        {"victim": 0, "start": 0.52, "end": 0.67, "victim_state": "T", "other_state": "T"},
    ]
    controls = [(0.1, 0.25), (0.55, 0.7)]  # the second falls in the hole: noise
    r = freeze.analyze(times, who, pauses, [(0.0, 0.4)], (0.4, 2.0), controls, 0.095)
    assert r["pauses"] == 3 and r["freezes"] == 1 and r["frozen_to_end"] == 1
    f = r["freeze_list"][0]
    assert f["pause"] == 0 and f["gap_ms"] == pytest.approx(100.0)  # 0.50 to the end, 0.60
    assert r["quiet_controls"] == 1
    assert r["pause_gaps_ms"] == pytest.approx([60.0, 100.0, 150.0])
    assert r["longest_gap_paused_ms"] == pytest.approx(200.0)
    assert [(g["pauses"], g["phase"]) for g in r["long_gaps"]] == [([0, 2], "with pauses")]
    assert r["long_gaps"][0]["gap_ms"] == pytest.approx(200.0)
    assert r["victim_seen_stopped"] == 3 and r["other_seen_running"] == 2
    assert r["rate_unpaused"] == pytest.approx(41 / 0.4)
