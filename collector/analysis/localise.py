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
from pyrometer.collector.storage.reads import RequestRow

MIN_RATIO = 1.5
MAX_OTHER_SHARE = 0.35
MIN_SPIKE_REQUESTS = 20
MIN_BASELINE_REQUESTS = 50
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}


@dataclass(frozen=True, slots=True)
class InstanceRise:
    """One instance's latency percentile in the baseline and inside the spike."""

    instance: str
    baseline_ms: float
    spike_ms: float
    baseline_requests: int
    spike_requests: int

    @property
    def ratio(self) -> float:
        return self.spike_ms / self.baseline_ms if self.baseline_ms > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Localisation:
    instance: str | None  # the one instance that carries the spike; None: several or unknown
    rises: tuple[InstanceRise, ...]  # every instance with enough requests, largest ratio first


def localise(rows: Sequence[RequestRow], baseline: tuple[Nanos, Nanos],
             spike: tuple[Nanos, Nanos], percentile: str) -> Localisation:
    """See the module docstring; `rows` are the requests of the baseline and the spike."""
    q = QUANTILES[percentile]
    before: dict[str, list[float]] = {}
    inside: dict[str, list[float]] = {}
    for row in rows:
        side = (before if baseline[0] <= row.time_ns < baseline[1]
                else inside if spike[0] <= row.time_ns < spike[1] else None)
        if side is not None:
            side.setdefault(row.instance, []).append(row.latency_ns / 1_000_000)
    rises = sorted(
        (InstanceRise(name, quantile(before[name], q), quantile(lat, q), len(before[name]), len(lat))
         for name, lat in inside.items()
         if len(lat) >= MIN_SPIKE_REQUESTS and len(before.get(name, ())) >= MIN_BASELINE_REQUESTS),
        key=lambda r: (-r.ratio if not math.isnan(r.ratio) else math.inf, r.instance))
    if len(rises) < 2 or math.isnan(rises[0].ratio):
        return Localisation(None, tuple(rises))
    top, others = rises[0], rises[1:]
    alone = top.ratio >= MIN_RATIO and all(
        not (o.ratio - 1 > MAX_OTHER_SHARE * (top.ratio - 1)) for o in others)
    return Localisation(top.instance if alone else None, tuple(rises))
