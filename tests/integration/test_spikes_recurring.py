"""A fault that comes back: the second spike's baseline leaves the first one out.

A runtime flag turns a costly code path on for 40 s, off, and on again 200 s later,
inside the second spike's 5-minute baseline. The detector leaves the first spike out of
that baseline's latency; the profile the code-path scorer compares against, and the
request count it divides by, must leave it out too, or the second spike is judged
partly against itself (the costly function already "in the baseline").
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pyrometer.agent.shared.model import SampleKey, Telemetry
from pyrometer.collector.analysis.detect import DetectConfig
from pyrometer.collector.analysis.gather import SpikeQuery, analyze, baseline_parts
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.model import Profile, merge
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.telemetry_builder import S, host, process, request

FLAG_ON = ((400, 440), (600, 640))  # seconds after BASE_NS
FORWARD = stack("serve", "model_forward")
COSTLY = stack("serve", "postprocess_render_json_costly")


def _flagged(at_s: float) -> bool:
    return any(lo <= at_s < hi for lo, hi in FLAG_ON)


def _window(at_s: int, rng: random.Random) -> Telemetry:
    on = _flagged(at_s)
    reqs = tuple(request(at_s + i / 10 + 0.05, latency_ms=(15 if on else 5) * rng.uniform(0.9, 1.1),
                         request_bytes=round(rng.lognormvariate(6.7, 0.2)))
                 for i in range(100))  # 10 requests/s
    cpu = 0.6 if on else 0.3  # the flag doubles the work per request
    return Telemetry(requests=reqs,
                     process=tuple(process(at_s + k, cpu_user=cpu, cpu_system=0.0)
                                   for k in range(10)),
                     host=tuple(host(at_s + k) for k in range(10)))


def fill(store: DuckDBStore) -> None:
    agent, decoder, rng = StreamEncoder(agent_id="a"), StreamDecoder(), random.Random(9)
    batches = []
    for seq, at_s in enumerate(range(0, 700, 10), 1):
        counts = {SampleKey(FORWARD): 100, **({SampleKey(COSTLY): 100} if _flagged(at_s) else {})}
        batches.append(decoder.decode(agent.batch(
            seq, counts, start_ns=BASE_NS + at_s * S, telemetry=_window(at_s, rng)), NOW_NS))
    store.commit(batches)


@pytest.mark.integration
def test_a_recurring_code_path_is_judged_against_the_time_it_was_off(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "pyrometer.duckdb")
    try:
        fill(store)
        query = SpikeQuery("svc", BASE_NS + 350 * S, BASE_NS + 700 * S,
                           DetectConfig(step_ns=10 * S, baseline_ns=300 * S))
        spikes = analyze(store, query).spikes
        whole_baseline = store.profile("svc", BASE_NS + 300 * S, BASE_NS + 600 * S)
    finally:
        store.close()
    assert [(s.spike.start_ns - BASE_NS) // S for s in spikes] == [400, 600]
    for analysed in spikes:
        first = analysed.ranking.causes[0]
        assert first.kind == "code_path", analysed.ranking.causes
        top = first.evidence["functions"][0]  # type: ignore[index]
        assert top["function"].startswith("postprocess_render_json_costly")
        # off in the baseline (the first spike's 40 s left out of the second's)
        assert top["baseline_share"] == 0.0, top
    second = spikes[1].ranking.causes[0].evidence
    # 26 windows of the 30 in [300, 600) are outside the first spike: FORWARD's 100 each
    assert second["baseline_samples"] == 26 * 100
    assert whole_baseline.total == 30 * 100 + 4 * 100  # what the baseline read once held


def test_baseline_parts_leave_out_what_is_excluded() -> None:
    assert baseline_parts(0, 100, ()) == [(0, 100)]
    assert baseline_parts(0, 100, [(40, 60), (-10, 5), (90, 200)]) == [(5, 40), (60, 90)]
    assert baseline_parts(0, 100, [(50, 60), (55, 70)]) == [(0, 50), (70, 100)]
    assert baseline_parts(0, 100, [(0, 100)]) == []
    assert baseline_parts(0, 100, [(100, 120), (-20, 0)]) == [(0, 100)]


def test_profiles_of_disjoint_windows_merge_into_one() -> None:
    a = Profile("svc", 0, 10, ((FORWARD, 5), (COSTLY, 2)), rate_hz=100.0)
    b = Profile("svc", 20, 30, ((COSTLY, 4),), rate_hz=100.0, resolution="1m")
    merged = merge([a, b], 0, 30)
    assert merged.samples == ((COSTLY, 6), (FORWARD, 5))
    assert (merged.start_ns, merged.end_ns, merged.resolution) == (0, 30, "1m")
    assert merge([a], 0, 10) is a
    with pytest.raises(ValueError, match="no profiles"):
        merge([], 0, 10)
