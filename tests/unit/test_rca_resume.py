"""Resuming the evaluation: the runs an earlier results JSON already holds are kept (and
re-scored), not run again; only this evaluation's own plans are kept; what cannot be
resumed is refused with the reason, before anything runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scenarios import harness, run
from scenarios.plan import IN_SAMPLE_SEED, RunPlan, plan_runs


def _plans() -> list[RunPlan]:
    return plan_runs(quick=False, runs=1, seed=IN_SAMPLE_SEED,
                     scenarios=("payload_size", "deploy", "code_path"))[1]


def _record(plan: RunPlan, workdir: Path, **extra: Any) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    return {"plan": plan.as_dict(), "workdir": str(workdir), **extra}


def _results(tmp_path: Path, runs: list[dict[str, Any]], mode: str = "full") -> Path:
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"meta": {"mode": mode}, "runs": runs}))
    return path


@pytest.fixture
def requeried(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stands in for starting a collector on each kept database; records which were asked."""
    asked: list[str] = []

    def fake(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        asked.extend(r["plan"]["scenario"] for r in records)
        return [dict(r, requeried=True) for r in records]

    monkeypatch.setattr(run, "requery_records", fake)
    return asked


def test_kept_runs_are_requeried_and_only_the_rest_run(
        tmp_path: Path, requeried: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    payload, deploy, code = _plans()
    other_seed = replace(payload, seed=payload.seed + 1)
    earlier = _results(tmp_path, [
        _record(payload, tmp_path / "a"),
        _record(deploy, tmp_path / "b", error="collector did not start"),  # failed: run again
        _record(other_seed, tmp_path / "c"),  # another evaluation's draw: not this one's
    ])
    kept = run.resumable(earlier, [payload, deploy, code], "full")
    assert requeried == ["payload_size"]
    assert [r["plan"]["scenario"] for r in kept] == ["payload_size"] and kept[0]["requeried"]

    ran: list[str] = []

    def fake_run(plan: RunPlan, timing: object, workdir: Path) -> dict[str, Any]:
        ran.append(plan.scenario)
        return {"plan": plan.as_dict(), "workdir": str(workdir), "error": "not really run"}

    monkeypatch.setattr(harness, "run_one", fake_run)
    monkeypatch.setattr(run, "_write", lambda out, meta, records: {})
    records = run.run_all([payload, deploy, code], None, tmp_path, {"mode": "full"},
                          tmp_path / "out.md", kept)
    assert ran == ["deploy", "code_path"]
    assert [r["plan"]["scenario"] for r in records] == ["payload_size", "deploy", "code_path"]


def test_what_cannot_be_resumed_is_refused_with_the_reason(
        tmp_path: Path, requeried: list[str]) -> None:
    payload = _plans()[0]
    gone = _record(payload, tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    with pytest.raises(ValueError, match="work folders of 1 kept run"):
        run.resumable(_results(tmp_path, [gone]), [payload], "full")
    with pytest.raises(ValueError, match="a quick evaluation, this one is full"):
        run.resumable(_results(tmp_path, [], mode="quick"), [payload], "full")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a results JSON"):
        run.resumable(tmp_path / "broken.json", [payload], "full")
    with pytest.raises(ValueError, match="not a results JSON"):
        run.resumable(tmp_path / "absent.json", [payload], "full")
    assert requeried == []  # nothing was asked of any collector
