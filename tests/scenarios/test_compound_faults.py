"""Overlapping faults and a gradual onset: their load schedules, and how AC@k reads a
fault with two true causes."""

from __future__ import annotations

import random

import pytest

from scenarios import faults, metrics
from scenarios.plan import BASE_RATE, RAMP_STEPS, RunPlan, plan_runs


def _plan(name: str, index: int = 0) -> RunPlan:
    _, plans = plan_runs(quick=False, runs=3, seed=2024, scenarios=(name,))
    return [p for p in plans if p.index == index][0]


def test_the_ramp_climbs_in_equal_steps_then_drops_back() -> None:
    plan = _plan("gradual_surge", 1)
    steps = faults.injector(plan).load_steps(plan)
    assert len(steps) == RAMP_STEPS + 1
    rates = [s["rate"] for s in steps]
    assert rates[:-1] == sorted(rates[:-1]) and rates[-2] == plan.magnitude["rate"]
    assert rates[-1] == BASE_RATE and rates[0] > BASE_RATE
    assert steps[0]["at"] == plan.fault_at_s and steps[-1]["at"] == plan.fault_at_s + plan.fault_s
    assert steps[-2]["at"] < plan.fault_at_s + plan.magnitude["ramp_s"] < steps[-1]["at"]
    assert plan.causes == ("traffic_surge",) and plan.expected == "traffic_surge"


def test_the_overlap_surge_joins_the_flag_later_and_ends_with_it() -> None:
    for index in range(3):
        plan = _plan("overlap", index)
        join, end = faults.injector(plan).load_steps(plan)
        assert join == {"at": plan.fault_at_s + plan.magnitude["offset_s"],
                        "rate": plan.magnitude["rate"]}
        assert end == {"at": plan.fault_at_s + plan.fault_s, "rate": BASE_RATE}
        assert end["at"] - join["at"] >= 10  # the two faults really overlap
        assert plan.causes == ("code_path", "traffic_surge")


@pytest.mark.parametrize(("order", "k", "expected"), [
    (["code_path", "traffic_surge", "deploy"], 1, True),
    (["traffic_surge", "deploy", "code_path"], 1, True),
    (["deploy", "code_path", "traffic_surge"], 1, False),
    (["deploy", "code_path", "traffic_surge"], 3, True),
    (["code_path", "deploy", "host_pressure", "traffic_surge"], 3, False),
])  # fmt: skip
def test_two_true_causes(order: list[str], k: int, expected: bool) -> None:
    assert metrics.hit(order, ["code_path", "traffic_surge"], k) is expected


def test_random_ranking_with_two_true_causes() -> None:
    rng = random.Random(1)
    # first cause one of two: 2/6; both among the first three: C(4,1)/C(6,3) = 1/5
    assert metrics.random_ac(["code_path", "traffic_surge"], 1, rng) == pytest.approx(1 / 3, abs=0.04)
    assert metrics.random_ac(["code_path", "traffic_surge"], 3, rng) == pytest.approx(1 / 5, abs=0.04)
    assert metrics.random_ac("code_path", 3, rng) == pytest.approx(1 / 2, abs=0.04)


def test_one_of_two_runs_two_instances_and_flips_the_flag() -> None:
    plan = _plan("one_of_two")
    assert plan.instances == 2 and plan.causes == ("code_path",)
    assert isinstance(faults.injector(plan), faults.Flag)
    assert _plan("code_path").instances == 1


def test_a_fault_on_one_instance_counts_whether_its_spike_named_that_instance() -> None:
    def record(named: str | None) -> dict[str, object]:
        spike = {"start_ns": 100 * 10**9, "end_ns": 130 * 10**9, "onset_ns": 101 * 10**9,
                 "instance": named, "causes": [{"kind": "code_path", "score": 0.9, "z": 5}]}
        return {"plan": {"scenario": "one_of_two"},
                "truth": {"kind": "code_path", "start": 100.0, "end": 130.0, "instance": "rca-b"},
                "window": {"from": 0.0, "to": 200.0}, "spikes": {"spikes": [spike]}}

    row = metrics.score_scenario([record("rca-b"), record(None), record("rca-a")], 60.0, 10.0)
    assert (row["instance_named"], row["instance_faults"]) == (1, 3)
    assert row["ac1_pyrometer"] == 1.0
    plain = metrics.score_scenario([{**record("rca-b"), "truth": {
        "kind": "code_path", "start": 100.0, "end": 130.0}}], 60.0, 10.0)
    assert plain["instance_named"] is None
