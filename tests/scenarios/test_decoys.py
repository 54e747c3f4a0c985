"""Decoy change events: planned before the fault without moving it, and accepted by a
real collector's events API as ordinary change events."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from scenarios import decoys, harness
from scenarios.plan import (
    BASE_VERSION,
    DECOY_LEADS_S,
    FULL_RUN_ONLY_DECOYS,
    QUICK_DECOYS,
    plan_runs,
)


def test_full_runs_have_decoys_before_the_fault_and_one_quick_run_too() -> None:
    _, full = plan_runs(quick=False, runs=3, seed=2024)
    _, plain = plan_runs(quick=False, runs=3, seed=2024, decoys=False)
    _, quick = plan_runs(quick=True, runs=1, seed=2024)
    assert [replace(p, decoys={}) for p in full] == plain  # decoys move no fault
    assert all(not p.decoys for p in plain)
    assert [p.scenario for p in quick if p.decoys] == list(QUICK_DECOYS)
    for plan in full:
        assert set(plan.decoys) == set(DECOY_LEADS_S)
    for plan in [p for p in quick if p.decoys]:  # no real restart in the quick mode
        assert set(plan.decoys) == set(DECOY_LEADS_S) - set(FULL_RUN_ONLY_DECOYS)
    for plan in full + [p for p in quick if p.decoys]:
        for kind, at_s in plan.decoys.items():
            low, high = DECOY_LEADS_S[kind]
            assert low <= plan.fault_at_s - at_s <= high + 0.05


def test_the_decoy_deploy_names_a_version_no_request_carries() -> None:
    _, plans = plan_runs(quick=False, runs=1, seed=2024, scenarios=("code_path",))
    body = decoys.body(plans[0], "deploy", "svc")
    assert body["kind"] == "deploy" and body["version"] != BASE_VERSION
    assert "decoy" not in str(body).lower()  # nothing the analysis could read as a label
    assert decoys.body(plans[0], "config", "svc")["kind"] == "config"


@pytest.mark.integration
def test_decoys_reach_the_events_api(tmp_path: Path) -> None:
    _, plans = plan_runs(quick=False, runs=1, seed=2024, scenarios=("code_path",))
    plan = replace(plans[0], decoys={"deploy": 0.0, "config": 0.2})
    stack = harness.Stack(tmp_path, plan, harness.SETTINGS)
    try:
        _, api = stack.start_collector()
        anchor = time.time()
        posted = decoys.post_due(plan, api, "svc", anchor, until=anchor + 60)
        assert [(p["kind"], p["status"]) for p in posted] == [("deploy", 201), ("config", 201)]
        status, listing = harness.api_get(api, "/api/v1/events", {
            "service": "svc", "from": f"{anchor - 5:.3f}", "to": f"{time.time() + 5:.3f}"})
        assert status == 200
        assert [(e["kind"], e["source"]) for e in listing["events"]] == [("deploy", "api"),
                                                                         ("config", "api")]
        # a decoy planned for after the fault is not posted before it
        late = replace(plan, decoys={"deploy": 120.0})
        assert decoys.post_due(late, api, "svc", anchor, until=anchor + 60) == []
    finally:
        stack.close()


def test_the_restart_decoy_restarts_the_server_and_posts_nothing() -> None:
    _, plans = plan_runs(quick=False, runs=1, seed=2024, scenarios=("code_path",))
    plan = replace(plans[0], decoys={"restart": 0.0})
    restarts: list[float] = []
    # no collector: an attempt to post would fail to connect
    done = decoys.post_due(plan, "http://127.0.0.1:9", "svc", time.time(), until=time.time() + 60,
                           restart=lambda: restarts.append(time.time()))
    assert len(restarts) == 1 and [(d["kind"], d["status"]) for d in done] == [("restart", None)]
    with pytest.raises(ValueError, match="nothing can restart"):
        decoys.post_due(plan, "http://127.0.0.1:9", "svc", time.time(), until=time.time() + 60)
