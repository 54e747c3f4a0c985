"""The evaluation's seed sets: held-out runs are drawn from their own fixed seeds and are
scored and reported apart from the in-sample runs the scorers were tuned on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scenarios import metrics, report
from scenarios.plan import DESCRIPTIONS, HELD_OUT_SEEDS, IN_SAMPLE_SEED, plan_runs

NS = 1_000_000_000


def test_held_out_seeds_are_fixed_distinct_and_not_the_tuning_seed() -> None:
    assert IN_SAMPLE_SEED == 2024 and IN_SAMPLE_SEED not in HELD_OUT_SEEDS
    assert len(set(HELD_OUT_SEEDS)) == len(HELD_OUT_SEEDS) >= 3


def test_both_sets_plan_apart_and_in_sample_is_unchanged() -> None:
    _, alone = plan_runs(quick=False, runs=3, seed=IN_SAMPLE_SEED)
    _, both = plan_runs(quick=False, runs=3, seed=IN_SAMPLE_SEED,
                        seed_sets=("held-out", "in-sample"))
    inside = [p for p in both if p.seed_set == "in-sample"]
    held = [p for p in both if p.seed_set == "held-out"]
    assert inside == alone  # adding the held-out set does not move the in-sample runs
    assert len(held) == len(inside) == len(DESCRIPTIONS) * 3
    assert not {p.seed for p in held} & {p.seed for p in inside}
    assert {p.fault_at_s for p in held} != {p.fault_at_s for p in inside}
    assert both.index(inside[0]) < both.index(held[0])  # in-sample first in each pass


def test_seed_set_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="held-out seed"):
        plan_runs(quick=False, runs=1, seed=HELD_OUT_SEEDS[0], seed_sets=("in-sample", "held-out"))
    with pytest.raises(ValueError, match="only"):
        plan_runs(quick=False, runs=len(HELD_OUT_SEEDS) + 1, seed=1, seed_sets=("held-out",))
    with pytest.raises(ValueError, match="seed sets"):
        plan_runs(quick=False, runs=1, seed=1, seed_sets=("tuned",))


def _record(seed_set: str, detected: bool) -> dict[str, Any]:
    spikes = [{"start_ns": 105 * NS, "end_ns": 120 * NS, "onset_ns": 105 * NS,
               "causes": [{"kind": "code_path", "score": 0.9, "z": 3.0}]}] if detected else []
    return {"plan": {"scenario": "code_path", "seed_set": seed_set, "index": 0, "seed": 1,
                     "magnitude": {}, "expected": "code_path", "fault_at_s": 1.0, "fault_s": 1.0},
            "window": {"from": 0.0, "to": 400.0},
            "truth": {"kind": "code_path", "start": 100.0, "end": 130.0},
            "spikes": {"status": "ok", "spikes": spikes}}


def test_held_out_is_scored_and_reported_apart() -> None:
    records = [_record("in-sample", True), _record("held-out", False)]
    scores = metrics.score(records, baseline_s=60, slack_s=10)
    assert scores["code_path"]["recall"] == 1.0
    assert scores["code_path (held-out)"]["recall"] == 0.0
    meta = {"mode": "full", "started": "t", "seed": 2024, "runs_total": 2, "api_baseline": "60s",
            "api_step": "2s", "percentile": "p95", "slack_s": 10.0,
            "held_out_seeds": list(HELD_OUT_SEEDS[:1])}
    text = report.markdown(scores, meta, [r["plan"] for r in records])
    inside, held = text.index("### In-sample"), text.index("### Held-out")
    assert inside < text.index("| code_path | 1 | 1.00") < held < text.index("| code_path | 1 | 0.00")
    assert f"seeds {HELD_OUT_SEEDS[0]}: never tuned on" in text
    assert text.count("- **code_path**") == 1


def test_the_null_soak_holds_an_hour_of_analysed_time() -> None:
    timing, plans = plan_runs(quick=False, runs=3, seed=IN_SAMPLE_SEED,
                              seed_sets=("in-sample", "held-out"))
    nulls = [p for p in plans if p.scenario == "null"]
    baseline_s = 60.0  # FULL's api_baseline: the part of each run that cannot be analysed
    assert timing.api_baseline == "60s"
    assert sum(p.total_s - baseline_s for p in nulls) >= 3600
    faulted = [p for p in plans if p.scenario != "null"]
    assert all(p.total_s == round(p.fault_at_s + p.fault_s + timing.tail_s, 1) for p in faulted)
    _, quick = plan_runs(quick=True, runs=1, seed=IN_SAMPLE_SEED, scenarios=("null",))
    assert quick[0].total_s <= 95  # the quick mode stays compressed


def test_the_report_says_which_runs_had_decoys_and_noise() -> None:
    _, plans = plan_runs(quick=True, runs=1, seed=IN_SAMPLE_SEED)
    text = report._conditions([p.as_dict() for p in plans])
    assert "Decoys in the runs of code_path:" in text
    assert "Noise in the runs of traffic_surge:" in text
    _, full = plan_runs(quick=False, runs=1, seed=IN_SAMPLE_SEED, scenarios=("code_path", "null"))
    text = report._conditions([p.as_dict() for p in full])
    assert "Decoys in every run" in text and "Noise in every run" in text
    assert report._conditions([replace(p, decoys={}, noise=False).as_dict() for p in full]) == ""
