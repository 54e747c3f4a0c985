"""Cause scoring on constructed spikes with known answers, the hard cases included.

Each scenario is a 10-minute baseline of 20 requests/s (latency grows with size) and a
one-minute spike; only what the scenario changes differs from the baseline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pyrometer.collector.analysis.causes import rank
from pyrometer.collector.analysis.evidence import (
    CodeProfile,
    EventInfo,
    GpuSample,
    ResourcePoint,
    SpikeContext,
)
from pyrometer.collector.analysis.sizes import fit_beta
from pyrometer.collector.storage.reads import RequestSample
from support.spikes import END, ONSET, SPIKE, START, STEP, T0, S

# the engine's kinds are always checked too, and without engine data never score
KINDS = {"gpu_throttling", "deploy", "payload_size", "traffic_surge", "code_path",
         "host_pressure", "engine_queueing", "batch_saturation", "kv_cache_pressure",
         "prompt_tokens_shift"}
BASE_SHARES = {"serve (app.py)": 1.0, "model_forward (inference.py)": 0.7,
               "preprocess (inference.py)": 0.2, "postprocess_render_json (inference.py)": 0.04}


def latency_of(size: float) -> float:
    return 10.0 + 0.02 * size


def requests(t_from: int, t_to: int, rng: random.Random, rate: int = 20, size_factor: float = 1.0,
             slow: float = 1.0, version: str = "v1",
             latency: Callable[[float], float] = latency_of) -> list[RequestSample]:
    out = []
    for second in range((t_to - t_from) // S):
        for _ in range(rate):
            size = size_factor * rng.lognormvariate(math.log(1000) - 0.18, 0.6)
            ms = slow * latency(size) * rng.lognormvariate(0, 0.1)
            out.append(RequestSample(t_from + second * S + rng.randrange(S), ms, size, version))
    return out


def profile(requests: int, per_request: float, shares: dict[str, float]) -> CodeProfile:
    total = round(requests * per_request)
    return CodeProfile({fn: round(share * total) for fn, share in shares.items()}, total, requests)


def resources(other_cores: float = 0.05, target: float = 0.6, psi_cpu: float = 2.0
              ) -> list[ResourcePoint]:
    return [ResourcePoint(T0 + i * STEP, target, target + other_cores, 2, psi_cpu, 0.0, 0.0, 2e9)
            for i in range(60)]


def scenario(seed: int = 7, spike_requests: list[RequestSample] | None = None,
             spike_profile: CodeProfile | None = None, spike_resources: list[ResourcePoint]
             | None = None, **fields: Any) -> SpikeContext:
    rng = random.Random(seed)
    base = requests(T0, START, rng)
    inside = spike_requests if spike_requests is not None else requests(
        START, END, rng, slow=2.5)
    spike_res = spike_resources or [ResourcePoint(START + i * STEP, 0.6, 0.65, 2, 2.0, 0.0, 0.0,
                                                  2e9) for i in range(6)]
    ctx = SpikeContext(
        spike=SPIKE, step_ns=STEP, baseline_start_ns=T0, requests=tuple(base + inside),
        resources=tuple(resources() + spike_res),
        baseline_profile=profile(len(base), 5.0, BASE_SHARES),
        spike_profile=spike_profile or profile(len(inside), 5.0, BASE_SHARES),
    )
    return replace(ctx, **fields)


def top(ctx: SpikeContext) -> list[str]:
    ranking = rank(ctx)
    assert {c.kind for c in ranking.checked} == KINDS
    assert all(0 < c.score <= 1 and c.explanation for c in ranking.causes)
    return [c.kind for c in ranking.causes]


def test_payload_shift_beats_code_path() -> None:
    rng = random.Random(11)
    inside = requests(START, END, rng, size_factor=2.5)
    shifted = {**BASE_SHARES, "model_forward (inference.py)": 0.8,
               "preprocess (inference.py)": 0.13, "postprocess_render_json (inference.py)": 0.03}
    ctx = scenario(spike_requests=inside, spike_profile=profile(len(inside), 10.0, shifted))
    ranking = rank(ctx)
    assert top(ctx)[0] == "payload_size"
    payload = ranking.causes[0]
    assert payload.score > 0.6 and payload.z > 5
    assert payload.evidence["explained"] > 0.7  # type: ignore[operator]
    code = next(c for c in ranking.checked if c.kind == "code_path")
    assert code.score < 0.2


def test_payload_shift_during_a_deploy_is_the_payload() -> None:
    rng = random.Random(12)
    inside = requests(START, END, rng, size_factor=2.5, version="v2")
    deploy = EventInfo(ONSET - 5 * S, "deploy", "v2", "v1")
    ctx = scenario(spike_requests=inside, events=(deploy,))
    kinds = top(ctx)
    assert kinds[0] == "payload_size" and "deploy" in kinds
    scores = {c.kind: c.score for c in rank(ctx).causes}
    assert scores["deploy"] < 0.5 < scores["payload_size"]


def test_a_slower_version_is_the_deploy_not_its_code_path() -> None:
    rng = random.Random(13)
    inside = requests(START, END, rng, slow=2.0, version="v2")
    slow = {"serve (app.py)": 1.0, "model_forward_slow (inference.py)": 0.85,
            "preprocess (inference.py)": 0.1, "postprocess_render_json (inference.py)": 0.02}
    deploy = EventInfo(ONSET - 3 * S, "deploy", "v2", "v1")
    ctx = scenario(spike_requests=inside, spike_profile=profile(len(inside), 10.0, slow),
                   events=(EventInfo(ONSET - 3 * S, "restart", "v2"), deploy))
    kinds = top(ctx)
    assert kinds[:2] == ["deploy", "code_path"]
    assert rank(ctx).causes[0].score > 0.8


def costly_flag(deploy: EventInfo, version: str = "v1") -> SpikeContext:
    """A runtime flag's code path: a new function takes 40% of the work, each request
    twice the CPU, at the same sizes and rate, requests of `version`; `deploy` posted."""
    rng = random.Random(14)
    inside = requests(START, END, rng, slow=2.0, version=version)
    costly = {**BASE_SHARES, "postprocess_render_json_costly (inference.py)": 0.4}
    busy = [ResourcePoint(START + i * STEP, 1.2, 1.25, 2, 6.0, 0.0, 0.0, 2e9) for i in range(6)]
    return scenario(spike_requests=inside, spike_profile=profile(len(inside), 10.0, costly),
                    spike_resources=busy, events=(deploy,))


def test_a_code_path_after_a_deploy_that_changed_nothing_is_not_the_deploys() -> None:
    # the quick evaluation's decoy (there 15 s, seven of its 2 s steps, before the onset):
    # a deploy that no request carries and whose first requests were no slower; the
    # flag's code path did not come with it
    ranking = rank(costly_flag(EventInfo(ONSET - 35 * S, "deploy", "v9", "v1")))
    code = ranking.causes[0]
    assert code.kind == "code_path" and code.score > 0.8, ranking.causes
    assert code.evidence["came_with_deploy"] is False
    assert "came with the deploy" not in code.explanation
    deploy = next(c for c in ranking.checked if c.kind == "deploy")
    assert deploy.score == 0 and "unchanged across it" in deploy.note


def test_a_code_path_that_a_carried_deploy_brought_is_the_deploys() -> None:
    ranking = rank(costly_flag(EventInfo(ONSET - 3 * S, "deploy", "v2", "v1"), version="v2"))
    code = next(c for c in ranking.checked if c.kind == "code_path")
    assert code.evidence["came_with_deploy"] is True
    assert code.explanation.endswith("(came with the deploy)")
    assert [c.kind for c in ranking.causes][:2] == ["deploy", "code_path"]


def test_a_deploy_after_the_onset_does_not_explain_it() -> None:
    ctx = scenario(events=(EventInfo(ONSET + 40 * S, "deploy", "v2", "v1"),))
    ranking = rank(ctx)
    assert "deploy" not in [c.kind for c in ranking.causes]
    note = next(c.note for c in ranking.checked if c.kind == "deploy")
    assert "after the onset" in note


def test_a_cause_that_begins_with_the_main_rise_explains_an_escalating_spike() -> None:
    # a mild rise (a neighbour's burst) runs into the real spike: larger inputs 20 s in.
    # The payload began after the spike's onset, but with its main rise.
    rng = random.Random(20)
    mild = requests(START, START + 20 * S, rng, slow=1.3)
    heavy = requests(START + 20 * S, END, rng, size_factor=4.0, slow=1.5)
    peak = sorted(r.latency_ms for r in heavy)[int(0.99 * len(heavy))]
    spike = replace(SPIKE, baseline_ms=90.0, peak_ms=peak)
    ctx = scenario(spike_requests=mild + heavy, spike=spike)
    kinds = top(ctx)
    assert kinds[0] == "payload_size", rank(ctx).checked
    # the same inputs arriving after the main rise explain nothing
    late = requests(START, START + 25 * S, rng, slow=3.0) + requests(
        START + 25 * S, END, rng, size_factor=4.0, slow=1.5)
    note = next(c.note for c in rank(scenario(spike_requests=late)).checked
                if c.kind == "payload_size")
    assert "after the spike's onset" in note


def test_traffic_surge_shows_rate_and_queueing_with_flat_cost() -> None:
    rng = random.Random(14)
    inside = requests(START, END, rng, rate=45, slow=2.0)
    busy = [ResourcePoint(START + i * STEP, 1.3, 1.35, 2, 20.0, 0.0, 0.0, 2e9) for i in range(6)]
    ctx = scenario(spike_requests=inside, spike_resources=busy,
                   spike_profile=profile(len(inside), 5.2, BASE_SHARES))
    kinds = top(ctx)
    assert kinds[0] == "traffic_surge"
    assert "host_pressure" not in kinds  # the target's own CPU is not host pressure


def test_a_surge_that_busies_its_clients_too_is_the_surge() -> None:
    # the load generator and the collector share the host: their CPU rises with the
    # traffic, and the target's CPU per request stays flat
    rng = random.Random(19)
    inside = requests(START, END, rng, rate=45, slow=2.5)
    shared = [ResourcePoint(START + i * STEP, 1.3, 2.0, 2, 60.0, 0.0, 0.0, 2e9) for i in range(6)]
    ctx = scenario(spike_requests=inside, spike_resources=shared,
                   spike_profile=profile(len(inside), 6.5, BASE_SHARES))
    assert top(ctx) == ["traffic_surge"]


def test_code_path_change_beats_host_pressure() -> None:
    rng = random.Random(15)
    inside = requests(START, END, rng, slow=1.6)
    costly = {**BASE_SHARES, "model_forward (inference.py)": 0.5,
              "postprocess_render_json_costly (inference.py)": 0.31,
              "postprocess_render_json (inference.py)": 0.0}
    busy = [ResourcePoint(START + i * STEP, 1.0, 1.05, 2, 10.0, 0.0, 0.0, 2e9) for i in range(6)]
    ctx = scenario(spike_requests=inside, spike_profile=profile(len(inside), 7.0, costly),
                   spike_resources=busy)
    ranking = rank(ctx)
    assert [c.kind for c in ranking.causes][0] == "code_path"
    assert "postprocess_render_json_costly" in ranking.causes[0].explanation
    assert "0% -> 31%" in ranking.causes[0].explanation


def test_a_neighbour_busy_during_a_code_path_change_is_not_the_cause() -> None:
    # a shared host: another process takes a core while the flag is on; the target's own
    # CPU per request doubled, so the slowdown is its own work
    rng = random.Random(17)
    inside = requests(START, END, rng, slow=1.8)
    costly = {**BASE_SHARES, "model_forward (inference.py)": 0.45,
              "postprocess_render_json_costly (inference.py)": 0.4,
              "postprocess_render_json (inference.py)": 0.0}
    busy = [ResourcePoint(START + i * STEP, 1.2, 2.0, 2, 40.0, 0.0, 0.0, 2e9) for i in range(6)]
    ctx = scenario(spike_requests=inside, spike_profile=profile(len(inside), 9.0, costly),
                   spike_resources=busy)
    ranking = rank(ctx)
    assert [c.kind for c in ranking.causes] == ["code_path"]
    host = next(c for c in ranking.checked if c.kind == "host_pressure")
    assert "its work grew" in host.note


def test_larger_inputs_with_a_busier_load_generator_are_the_payload() -> None:
    # the client's own CPU grows with the payloads it builds: a knock-on, not pressure
    rng = random.Random(18)
    inside = requests(START, END, rng, size_factor=2.5)
    knock_on = [ResourcePoint(START + i * STEP, 1.1, 1.9, 2, 25.0, 0.0, 0.0, 2e9)
                for i in range(6)]
    ctx = scenario(spike_requests=inside, spike_resources=knock_on,
                   spike_profile=profile(len(inside), 9.0, BASE_SHARES))
    assert top(ctx) == ["payload_size"]


def test_host_readings_without_the_targets_say_so_rather_than_nan() -> None:
    # the web page's incident: host readings, none of the target's process (seen there as
    # "other processes' CPU nan -> nan of 16 cores")
    host_only = tuple(replace(p, target_cpu_cores=None) for p in scenario().resources)
    host = next(c for c in rank(scenario(resources=host_only)).checked if c.kind == "host_pressure")
    assert "nan" not in host.explanation, host.explanation
    assert "other processes' CPU unknown (no readings of the target's process)" in host.explanation


def test_host_cpu_pressure_from_another_process() -> None:
    rng = random.Random(16)
    inside = requests(START, END, rng, slow=1.8)
    burn = [ResourcePoint(START + i * STEP, 0.7, 2.0, 2, 45.0, 0.0, 0.0, 2e9) for i in range(6)]
    # descheduled, the target's samples per request grow, but evenly across functions
    ctx = scenario(spike_requests=inside, spike_resources=burn,
                   spike_profile=profile(len(inside), 7.5, BASE_SHARES))
    ranking = rank(ctx)
    assert [c.kind for c in ranking.causes] == ["host_pressure"]
    assert ranking.causes[0].evidence["spike_other_cpu_cores"] == 1.3


def gpu_readings(throttle_from: int, throttle_to: int) -> tuple[GpuSample, ...]:
    out = []
    for t in range(T0, END, S):
        hot = throttle_from <= t < throttle_to
        out.append(GpuSample(t, "pod/0", ("hw_thermal_slowdown",) if hot else (), False,
                             1100.0 if hot else 1980.0, 1980.0, 92.0 if hot else 70.0, 89.0,
                             replayed=True))
    return tuple(out)


def test_gpu_throttling_in_step_with_the_spike() -> None:
    ctx = scenario(gpu=gpu_readings(ONSET - 2 * S, END))
    ranking = rank(ctx)
    assert [c.kind for c in ranking.causes] == ["gpu_throttling"]
    cause = ranking.causes[0]
    assert cause.score > 0.9 and cause.evidence["replayed"] is True
    assert "hw_thermal_slowdown" in cause.explanation and "89 C" in cause.explanation


def test_a_throttle_episode_that_starts_after_the_spike_does_not_explain_it() -> None:
    ctx = scenario(gpu=gpu_readings(ONSET + 30 * S, END))
    ranking = rank(ctx)
    assert ranking.unexplained and ranking.causes == ()
    note = next(c.note for c in ranking.checked if c.kind == "gpu_throttling")
    assert "after the spike's onset" in note


def test_nothing_scores_so_it_is_unexplained_with_what_was_checked() -> None:
    ranking = rank(scenario())
    assert ranking.unexplained and ranking.causes == ()
    assert {c.kind for c in ranking.checked} == KINDS
    assert all(c.note for c in ranking.checked)


def test_the_size_relation_is_learned_from_the_baseline() -> None:
    rng = random.Random(1)
    power = requests(T0, T0 + 60 * S, rng, latency=lambda size: size ** 0.8)
    assert abs((fit_beta(power) or 0) - 0.8) < 0.05
    assert fit_beta(power[:10]) is None  # too few to tell


def creeping_gpu(seed: int = 3) -> tuple[GpuSample, ...]:
    """A slow thermal creep: from the baseline's middle the temperature climbs 70 -> 88 C,
    the SM clock steps down 1980 -> 1400 MHz with sw_thermal_slowdown on ever more
    readings; inside the spike it is pinned at 1100 MHz and 90 C."""
    rng = random.Random(seed)
    out = []
    creep_from = T0 + 300 * S
    for t in range(T0, END, S):
        if t >= START:
            out.append(GpuSample(t, "pod/0", ("sw_thermal_slowdown",), False, 1100.0, 1980.0,
                                 90.0, 89.0, replayed=True))
            continue
        f = max(0.0, (t - creep_from) / (START - creep_from))
        hot = rng.random() < 0.6 * f
        out.append(GpuSample(t, "pod/0", ("sw_thermal_slowdown",) if hot else (), False,
                             1980.0 - 580.0 * f, 1980.0, 70.0 + 18.0 * f, 89.0, replayed=True))
    return tuple(out)


def test_a_slow_thermal_creep_is_still_gpu_throttling() -> None:
    # the baseline already holds half the creep: its throttled share and clock have moved
    ranking = rank(scenario(gpu=creeping_gpu()))
    assert [c.kind for c in ranking.causes][:1] == ["gpu_throttling"], ranking.checked
    assert ranking.causes[0].score > 0.5, ranking.causes[0]


def test_a_short_spike_of_fifteen_seconds_is_found_and_explained() -> None:
    # a 15 s burst of large inputs, on 5 s steps: three buckets
    rng = random.Random(8)
    end = START + 15 * S
    inside = requests(START, end, rng, size_factor=3.0)
    short = replace(SPIKE, end_ns=end)
    ctx = replace(scenario(spike_requests=inside, spike_profile=profile(len(inside), 5.0 * 2.2,
                                                                       BASE_SHARES)),
                  spike=short, step_ns=5 * S)
    assert top(ctx)[:1] == ["payload_size"]
