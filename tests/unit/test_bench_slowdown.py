"""The slowdown benchmark's arm sets: make bench's four, and --size gil's six."""

from __future__ import annotations

from dataclasses import asdict

from bench import slowdown


def _result(plan: slowdown.Plan) -> dict[str, object]:
    rates = {t: {arm: [100.0 - i, 101.0 - i] for i, arm in enumerate(plan.arms)} for t in plan.targets}
    return {"plan": asdict(plan), "rates": rates,
            "ratios": {t: slowdown.ratios(r) for t, r in rates.items()}}


def test_each_plan_runs_and_shows_its_own_arms() -> None:
    gil = slowdown.PLANS["gil"]
    assert gil.arms[0] == "none" and {"agent-gil", "pyspy-gil", "pyroscope"} <= set(gil.arms)
    for round_ in range(len(gil.arms)):  # every arm once a round, in rotated order
        assert sorted(slowdown.rotated(round_, gil.arms)) == sorted(gil.arms)
    header = slowdown._rate_table(_result(gil)).splitlines()[0]
    assert header.count("|") == len(gil.arms) + 2  # target, unprofiled, one per profiled arm
    assert "Pyrometer agent --gil" in header and "bare py-spy --gil" in header
    # make bench's plans, and a result written before plans named their arms
    full = _result(slowdown.PLANS["full"])
    assert "--gil" not in slowdown._rate_table(full)
    del full["plan"]["arms"]  # type: ignore[index]
    assert list(slowdown._arms(full)) == ["agent", "pyspy", "pyroscope"]
