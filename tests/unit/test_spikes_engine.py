"""The engine scorers (agent --scrape) on constructed spikes with known answers.

The same timeline as test_spikes_causes: ten minutes of steady baseline at 20 requests/s,
then a one-minute spike in which the requests take 2.5 times as long; the engine's
readings arrive every 5 s and say what happened inside it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from pyrometer.collector.analysis.candidate import Cause
from pyrometer.collector.analysis.causes import order, rank
from pyrometer.collector.analysis.evidence import (
    CodeProfile,
    EngineSample,
    ResourcePoint,
    SpikeContext,
    engine_steps,
)
from pyrometer.collector.storage.reads import RequestSample
from support.spikes import END, SPIKE, START, STEP, T0, S

ENGINE_KINDS = {"engine_queueing", "batch_saturation", "kv_cache_pressure", "prompt_tokens_shift"}
SCRAPE = 5 * S

Series = Callable[[bool, random.Random], float]  # (inside the spike, rng) -> value


def engine(rng: random.Random, **series: tuple[Series, int]) -> tuple[EngineSample, ...]:
    """Readings every 5 s from T0 to END; each metric's (value, count) from its function."""
    out = []
    for t in range(T0 + SCRAPE, END, SCRAPE):
        inside = START <= t < END
        for metric, (value, count) in series.items():
            out.append(EngineSample(t, metric, value(inside, rng), count, "vllm", "llama"))
    return tuple(out)


def steady(base: float, spike: float | None = None, noise: float = 0.05) -> Series:
    return lambda inside, rng: max(0.0, (spike if inside and spike is not None else base)
                                   * rng.lognormvariate(0, noise))


def scenario(seed: int = 3, sizes: float = 1.0, **series: tuple[Series, int]) -> SpikeContext:
    rng = random.Random(seed)
    reqs = []
    for second in range((END - T0) // S):
        t = T0 + second * S
        for _ in range(20):
            slow = 2.5 if t >= START else 1.0
            size = 1000 * rng.lognormvariate(0, 0.3) * (sizes if t >= START else 1.0)
            reqs.append(RequestSample(t + rng.randrange(S), slow * 40 * rng.lognormvariate(0, 0.1),
                                      size))
    base_n = sum(1 for r in reqs if r.end_ns < START)
    flat = CodeProfile({"serve (app.py)": 500}, 500, 100)
    return SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(reqs),
        resources=tuple(ResourcePoint(T0 + i * STEP, 0.6, 0.65, 2) for i in range(66)),
        baseline_profile=CodeProfile(flat.functions, 5 * base_n, base_n),
        spike_profile=CodeProfile(flat.functions, 5 * (len(reqs) - base_n), len(reqs) - base_n),
        engine=engine_steps(engine(rng, **series), SPIKE.start_ns, STEP),
    )


def causes(ctx: SpikeContext) -> list[str]:
    ranking = rank(ctx)
    assert ENGINE_KINDS <= {c.kind for c in ranking.checked}
    return [c.kind for c in ranking.causes if c.score >= 0.2]


def test_queueing_ranks_first_when_queue_time_and_waiting_rise_with_flat_compute() -> None:
    ctx = scenario(queue_time_s=(steady(0.02 * 100, 1.5 * 100), 100),
                   compute_time_s=(steady(0.04 * 100), 100),
                   requests_waiting=(steady(0.5, 30.0, 0.3), 0))
    ranking = rank(ctx)
    assert causes(ctx)[0] == "engine_queueing", ranking.checked
    first = ranking.causes[0]
    assert first.evidence["queue_time_ms_spike"] > 10 * first.evidence["queue_time_ms_baseline"]
    assert 0.9 < first.evidence["compute_time_ratio"] < 1.1
    assert "queue" in first.explanation


def test_queueing_names_the_share_of_the_rise_its_queue_time_explains() -> None:
    # requests 40 -> 100 ms (median); the engine's queue 10 -> 40 ms per request: half
    ctx = scenario(queue_time_s=(steady(0.01 * 100, 0.04 * 100, 0.02), 100),
                   compute_time_s=(steady(0.03 * 100, noise=0.02), 100),
                   requests_waiting=(steady(0.5, 8.0, 0.3), 0))
    queueing = next(c for c in rank(ctx).checked if c.kind == "engine_queueing")
    assert math.isclose(queueing.evidence["share_of_rise"], 30 / 60, abs_tol=0.06), queueing.evidence
    # a queue seen only as a count of waiting requests says nothing of time: no share
    counted = scenario(requests_waiting=(steady(0.5, 30.0, 0.3), 0))
    queueing = next(c for c in rank(counted).checked if c.kind == "engine_queueing")
    assert queueing.score > 0 and "share_of_rise" not in queueing.evidence


def test_queueing_does_not_fire_when_compute_per_request_grew_too() -> None:
    ctx = scenario(queue_time_s=(steady(0.02 * 100, 0.2 * 100), 100),
                   compute_time_s=(steady(0.04 * 100, 0.12 * 100), 100))
    assert "engine_queueing" not in causes(ctx)


def test_kv_cache_pressure_with_preemptions() -> None:
    ctx = scenario(kv_cache_usage=(steady(0.5, 0.99, 0.01), 0),
                   preemptions=(lambda inside, rng: float(rng.randint(3, 8)) if inside else 0.0, 0))
    ranking = rank(ctx)
    assert causes(ctx)[0] == "kv_cache_pressure", ranking.checked
    kv = ranking.causes[0]
    assert kv.evidence["preemptions_per_s_spike"] > 0.2 and kv.evidence["preemptions_per_s_baseline"] == 0
    assert kv.evidence["kv_cache_usage_spike_max"] > 0.95


def test_a_queue_behind_a_full_kv_cache_is_the_caches_doing() -> None:
    # what the streamed-token demo showed with its KV cache cut: the queue grew (requests
    # wait for room), compute per request flat, the cache full and sequences preempted;
    # queueing alone scores 0.95, more than the cache's 0.9 at most
    ctx = scenario(queue_time_s=(steady(0.01 * 100, 1.2 * 100), 100),
                   compute_time_s=(steady(0.3 * 100), 100),
                   requests_waiting=(steady(0.2, 20.0, 0.3), 0),
                   kv_cache_usage=(steady(0.05, 0.99, 0.01), 0),
                   preemptions=(lambda inside, rng: float(rng.randint(3, 8)) if inside else 0.0, 0))
    ranking = rank(ctx)
    assert causes(ctx)[:2] == ["kv_cache_pressure", "engine_queueing"], ranking.causes
    queue = ranking.causes[1]
    assert "follows from kv_cache_pressure" in queue.explanation
    assert queue.evidence["queue_time_ms_spike"] > 100  # its evidence kept
    # the same queue with the cache roomy: the queue is the cause
    roomy = scenario(queue_time_s=(steady(0.01 * 100, 1.2 * 100), 100),
                     compute_time_s=(steady(0.3 * 100), 100),
                     requests_waiting=(steady(0.2, 20.0, 0.3), 0),
                     kv_cache_usage=(steady(0.05, 0.1, 0.01), 0),
                     preemptions=(steady(0.0), 0))
    assert causes(roomy)[0] == "engine_queueing"


def test_larger_payloads_at_an_engine_counting_tokens_rank_below_the_token_shift() -> None:
    # prompts three times longer, seen both in bytes on the wire and in the engine's
    # prompt-token counters: the engine's count ranks first, the bytes just below
    ctx = scenario(sizes=3.0, prompt_tokens=(steady(500.0 * 100, 1500.0 * 100), 0),
                   requests=(steady(100.0, noise=0.0), 0))
    ranking = rank(ctx)
    assert causes(ctx)[0] == "prompt_tokens_shift", ranking.causes


def test_batch_saturation_at_the_configured_limit_with_requests_waiting() -> None:
    ctx = scenario(requests_running=(steady(60.0, 256.0, 0.0), 0),
                   max_running=(steady(256.0, noise=0.0), 0),
                   requests_waiting=(steady(0.0, 12.0, 0.2), 0))
    ranking = rank(ctx)
    assert "batch_saturation" in causes(ctx), ranking.checked
    sat = next(c for c in ranking.causes if c.kind == "batch_saturation")
    assert sat.evidence["limit_source"] == "configured" and sat.evidence["batch_limit"] == 256


def test_prompt_token_shift_from_the_engines_counters() -> None:
    # bytes on the wire barely move (sizes 1.05x), tokens per request quadruple
    ctx = scenario(sizes=1.05, prompt_tokens=(steady(500.0 * 100, 2000.0 * 100), 0),
                   requests=(steady(100.0, noise=0.0), 0))
    ranking = rank(ctx)
    assert causes(ctx)[0] == "prompt_tokens_shift", ranking.checked
    shift = ranking.causes[0]
    assert math.isclose(shift.evidence["tokens_ratio"], 4.0, rel_tol=0.1)
    assert "payload_size" not in causes(ctx)


def test_no_engine_metrics_no_engine_cause_and_a_note() -> None:
    ctx = scenario()
    ranking = rank(ctx)
    notes = {c.kind: c.note for c in ranking.checked if c.kind in ENGINE_KINDS}
    assert set(notes) == ENGINE_KINDS
    assert all("no engine metrics" in note for note in notes.values()), notes
    assert not ENGINE_KINDS & {c.kind for c in ranking.causes}


def test_steady_engine_metrics_explain_nothing() -> None:
    ctx = scenario(queue_time_s=(steady(2.0), 100), compute_time_s=(steady(4.0), 100),
                   requests_waiting=(steady(1.0), 0), requests_running=(steady(20.0), 0),
                   kv_cache_usage=(steady(0.4), 0), preemptions=(steady(0.0), 0),
                   prompt_tokens=(steady(50000.0), 0), requests=(steady(100.0), 0))
    assert not ENGINE_KINDS & set(causes(ctx))


def test_a_share_never_lifts_a_cause_above_the_more_direct_account_of_it() -> None:
    # a queue behind a full KV cache is capped below it; its share of the rise (0.6, more
    # than the payload's 0.3) may order it against the payload, never above the cache
    verdicts = (Cause("payload_size", 0.8, 3.0, "larger", {"share_of_rise": 0.3}),
                Cause("kv_cache_pressure", 0.7, 2.0, "full"),
                Cause("engine_queueing", 0.9, 5.0, "queue", {"share_of_rise": 0.6}))
    ranked = order(verdicts).causes
    kinds = [c.kind for c in ranked]
    assert kinds.index("kv_cache_pressure") < kinds.index("engine_queueing"), ranked
    assert "(follows from kv_cache_pressure)" in ranked[kinds.index("engine_queueing")].explanation
    # with nothing capped, the shares order the two that split the rise
    free = order((verdicts[0], Cause("engine_queueing", 0.7, 5.0, "queue", {"share_of_rise": 0.6})))
    assert [c.kind for c in free.causes] == ["engine_queueing", "payload_size"]
