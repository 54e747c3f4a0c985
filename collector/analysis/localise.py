"""Which instance a spike is on: a service-wide spike that only one instance carries.

A fleet's latency series is all its instances together, so a fault on one of four
replicas shows as a smaller service-wide spike whose stacks, resources and GPU readings
are diluted by three healthy replicas: the code-path share of a costly function that
doubled on one instance rises by a quarter of that fleet-wide. An on-call engineer
needs the instance named first ("on rca-b"), and the causes judged on its data.

The rule, per instance with enough requests on both sides: the ratio of its latency
percentile (the spike's own: p95, p99 or max) inside the spike to the one in the
baseline. The spike is localised to the instance with the largest ratio when that ratio
is at least `MIN_RATIO` and every other instance's rise (ratio - 1) is at most
`MAX_OTHER_SHARE` of it: others on a shared host slow a little beside a busy neighbour,
and that must not un-localise the spike, while a traffic surge or a fleet-wide deploy
slows them all alike and localises nothing. With one instance there is nothing to say.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.analysis.robust import quantile
from pyrometer.collector.storage.reads import InstanceLatency, RequestRow

MIN_RATIO = 1.5
MAX_OTHER_SHARE = 0.35
MIN_SPIKE_REQUESTS = 20
MIN_BASELINE_REQUESTS = 50
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}

# one instance's percentile in the baseline and inside the spike, and their ratio; the
# store computes it where the requests are (Store.instance_latency), every request counted
InstanceRise = InstanceLatency


@dataclass(frozen=True, slots=True)
class Localisation:
    instance: str | None  # the one instance that carries the spike; None: several or unknown
    rises: tuple[InstanceRise, ...]  # every instance with enough requests, largest ratio first


def localise(latencies: Sequence[InstanceLatency]) -> Localisation:
    """See the module docstring; `latencies` are every instance's, from the baseline's and
    the spike's requests."""
    rises = sorted(
        (r for r in latencies
         if r.spike_requests >= MIN_SPIKE_REQUESTS and r.baseline_requests >= MIN_BASELINE_REQUESTS),
        key=lambda r: (-r.ratio if not math.isnan(r.ratio) else math.inf, r.instance))
    if len(rises) < 2 or math.isnan(rises[0].ratio):
        return Localisation(None, tuple(rises))
    top, others = rises[0], rises[1:]
    alone = top.ratio >= MIN_RATIO and all(
        not (o.ratio - 1 > MAX_OTHER_SHARE * (top.ratio - 1)) for o in others)
    return Localisation(top.instance if alone else None, tuple(rises))


def instance_latencies(rows: Sequence[RequestRow], baseline: tuple[Nanos, Nanos],
                       spike: tuple[Nanos, Nanos], q: float) -> list[InstanceLatency]:
    """What `Store.instance_latency` computes, from request rows in memory: the reference
    its SQL is tested against, and the input of localise's own tests."""
    before: dict[str, list[float]] = {}
    inside: dict[str, list[float]] = {}
    for row in rows:
        side = (before if baseline[0] <= row.time_ns < baseline[1]
                else inside if spike[0] <= row.time_ns < spike[1] else None)
        if side is not None:
            side.setdefault(row.instance, []).append(row.latency_ns / 1_000_000)
    return [InstanceLatency(name, quantile(before.get(name, []), q),
                            quantile(inside.get(name, []), q),
                            len(before.get(name, [])), len(inside.get(name, [])))
            for name in sorted(set(before) | set(inside))]
