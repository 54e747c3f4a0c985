"""The LLM-serving scenarios of the evaluation, planned but not run: their magnitudes,
truths, injectors and load, the stack they start, and the random baseline they are
scored against (ten kinds where the engine's metrics are scraped, six elsewhere)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from scenarios import faults, harness, metrics
from scenarios.plan import (
    CAUSES,
    DESCRIPTIONS,
    ENGINE_KINDS,
    KINDS,
    LLM_RATE,
    LLM_SCENARIOS,
    LLM_WORDS,
    QUICK_SCENARIOS,
    RunPlan,
    kinds_for,
    plan_runs,
)

TRUTHS = {"llm_queueing": "engine_queueing", "llm_prompt_shift": "prompt_tokens_shift",
          "llm_kv_pressure": "kv_cache_pressure"}


def test_they_are_full_mode_scenarios_with_one_true_engine_cause_each() -> None:
    _, full = plan_runs(quick=False, runs=3, seed=2024)
    assert {p.scenario for p in full} >= set(LLM_SCENARIOS)
    assert set(LLM_SCENARIOS) <= set(DESCRIPTIONS)
    _, quick = plan_runs(quick=True, runs=3, seed=2024)
    assert [p.scenario for p in quick] == list(QUICK_SCENARIOS)  # the quick mode as it was
    for name, truth in TRUTHS.items():
        assert CAUSES[name] == (truth,) and truth in ENGINE_KINDS
        plans = [p for p in full if p.scenario == name]
        assert len(plans) == 3 and all(p.llm and p.noise and p.decoys for p in plans)
        assert all(p.expected == truth and p.base_rate == LLM_RATE for p in plans)
    assert not any(p.llm for p in full if p.scenario not in LLM_SCENARIOS)


@pytest.mark.parametrize(("name", "key", "weak_to_strong"), [
    ("llm_queueing", "max_num_seqs", [7, 6, 5]),
    ("llm_prompt_shift", "text_words", [LLM_WORDS * 2, LLM_WORDS * 2.5, LLM_WORDS * 3]),
    ("llm_kv_pressure", "kv_blocks", [30, 28, 26]),
])  # fmt: skip
def test_magnitudes_cycle_weak_middling_strong(name: str, key: str, weak_to_strong: list[float]) -> None:
    _, plans = plan_runs(quick=False, runs=4, seed=2024, scenarios=(name,))
    assert [p.magnitude[key] for p in plans] == [*weak_to_strong, weak_to_strong[0]]
    _, held = plan_runs(quick=False, runs=3, seed=2024, scenarios=(name,), seed_sets=("held-out",))
    assert [p.magnitude for p in held] == [p.magnitude for p in plans[:3]]
    assert {p.fault_at_s for p in held} != {p.fault_at_s for p in plans[:3]}


def _plan(name: str, index: int = 0) -> RunPlan:
    _, plans = plan_runs(quick=False, runs=3, seed=2024, scenarios=(name,))
    return plans[index]


@pytest.mark.parametrize(("name", "key"), [("llm_queueing", "max_num_seqs"),
                                           ("llm_kv_pressure", "kv_blocks")])
def test_limit_faults_write_the_flag_then_leave_the_default(tmp_path: Path, name: str,
                                                            key: str) -> None:
    plan = _plan(name, 2)
    inject = faults.injector(plan)
    assert inject.load_steps(plan) == []  # arrivals unchanged
    stack = SimpleNamespace(flags_file=tmp_path / "flags")
    inject.start(stack)  # type: ignore[arg-type]
    assert (tmp_path / "flags").read_text() == f"{key}={plan.magnitude[key]}\n"
    inject.stop(stack)  # type: ignore[arg-type]
    assert (tmp_path / "flags").read_text() == ""


def test_the_prompt_shift_is_a_load_step_and_back_to_the_llm_base() -> None:
    plan = _plan("llm_prompt_shift", 1)
    steps = faults.injector(plan).load_steps(plan)
    assert steps == [{"at": plan.fault_at_s, "text_words": LLM_WORDS * 2.5},
                     {"at": plan.fault_at_s + plan.fault_s, "text_words": LLM_WORDS}]
    output = "\n".join(f"loadgen step: {json.dumps({'unix': 1000.0 + i})}" for i in range(2))
    truth = harness._truth(plan, 900.0, None, None, output)
    assert truth is not None
    assert (truth["kind"], truth["start"], truth["end"]) == ("prompt_tokens_shift", 1000.0, 1001.0)


def test_the_stack_starts_the_streamed_token_server_and_scrapes_it(tmp_path: Path) -> None:
    llm = harness.Stack(tmp_path / "llm", _plan("llm_queueing"), harness.SETTINGS)
    demo = harness.Stack(tmp_path / "demo", _plan("code_path"), harness.SETTINGS)
    assert (llm.llm, llm.script) == (True, "llm_server.py")
    assert (demo.llm, demo.script) == (False, "model_server.py")
    assert (harness.gpu_sim.DEMO / llm.script).is_file()


def test_the_random_baseline_counts_the_engine_kinds_in_llm_scenarios_only() -> None:
    assert kinds_for("llm_kv_pressure") == KINDS + ENGINE_KINDS
    assert kinds_for("code_path") == KINDS
    rng = random.Random(1)
    assert metrics.random_ac(["kv_cache_pressure"], 1, rng, kinds_for("llm_kv_pressure")) == \
        pytest.approx(1 / 10, abs=0.03)
    assert metrics.random_ac(["kv_cache_pressure"], 3, rng, kinds_for("llm_kv_pressure")) == \
        pytest.approx(3 / 10, abs=0.04)
    ns = 1_000_000_000
    spike = {"start_ns": 105 * ns, "end_ns": 130 * ns, "onset_ns": 105 * ns,
             "causes": [{"kind": "engine_queueing", "score": 0.8, "z": 3.0},
                        {"kind": "kv_cache_pressure", "score": 0.9, "z": 1.0}]}
    record = {"plan": {"scenario": "llm_kv_pressure", "magnitude": {}},
              "window": {"from": 0.0, "to": 400.0},
              "truth": {"kind": "kv_cache_pressure", "start": 100.0, "end": 140.0},
              "spikes": {"status": "ok", "spikes": [spike]}}
    row = metrics.score([record], baseline_s=60, slack_s=10)["llm_kv_pressure"]
    assert (row["ac1_pyrometer"], row["ac1_max_z"], row["ac3_max_z"]) == (1.0, 0.0, 1.0)
    assert row["ac1_random"] == pytest.approx(1 / 10, abs=0.03)
    assert sorted(metrics.rank_max_z(spike, kinds_for("llm_kv_pressure"))) == sorted(KINDS + ENGINE_KINDS)
