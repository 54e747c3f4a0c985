"""Which instance a spike is on (collector/analysis/localise.py)."""

from __future__ import annotations

import random

from pyrometer.collector.analysis.localise import QUANTILES, Localisation, instance_latencies
from pyrometer.collector.analysis.localise import localise as localise_latencies
from pyrometer.collector.storage.reads import RequestRow

S = 1_000_000_000
BASELINE = (0, 300 * S)
SPIKE = (300 * S, 360 * S)


def rows(instance: str, base_ms: float, spike_ms: float, per_s: float = 5.0,
         seed: int = 1) -> list[RequestRow]:
    rng = random.Random(f"{instance}/{seed}")
    out = []
    t = 0.0
    while t < 360:
        ms = (spike_ms if t >= 300 else base_ms) * rng.uniform(0.8, 1.2)
        out.append(RequestRow(round(t * S), round(ms * 1e6), 1000, None, "1.0.0", "/p", 200,
                              instance))
        t += 1 / per_s
    return out


def localise(requests: list[RequestRow], baseline: tuple[int, int], spike: tuple[int, int],
             percentile: str) -> Localisation:
    return localise_latencies(instance_latencies(requests, baseline, spike, QUANTILES[percentile]))


def test_a_spike_one_instance_carries_is_named_for_it() -> None:
    found = localise(rows("a", 20, 22) + rows("b", 20, 60), BASELINE, SPIKE, "p95")
    assert found.instance == "b"
    assert [r.instance for r in found.rises] == ["b", "a"]
    assert found.rises[0].ratio > 2.5 and found.rises[1].ratio < 1.2


def test_a_spike_every_instance_shares_is_named_for_none() -> None:
    found = localise(rows("a", 20, 50) + rows("b", 20, 60), BASELINE, SPIKE, "p99")
    assert found.instance is None and len(found.rises) == 2


def test_one_instance_or_too_few_requests_localises_nothing() -> None:
    assert localise(rows("a", 20, 60), BASELINE, SPIKE, "p95").instance is None
    few = rows("a", 20, 22) + rows("b", 20, 60, per_s=0.2)  # 12 requests in the spike
    found = localise(few, BASELINE, SPIKE, "p95")
    assert found.instance is None and [r.instance for r in found.rises] == ["a"]


def test_a_neighbour_slowed_a_little_beside_the_broken_one_still_localises() -> None:
    # on a shared host the healthy instance slows too, by much less (ratio 1.3 vs 3)
    assert localise(rows("a", 20, 26) + rows("b", 20, 60), BASELINE, SPIKE, "p95").instance == "b"
    # but not when it slowed by half as much as the broken one
    assert localise(rows("a", 20, 40) + rows("b", 20, 60), BASELINE, SPIKE, "p95").instance is None
