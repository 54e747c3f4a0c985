"""What every cause scorer returns, and the facts about a spike they share.

A scorer is a function `(SpikeContext, Facts) -> Cause`. `Facts` are computed once
per spike: the size model (how much of the rise the requests' sizes explain), the
target's CPU cost per request (samples per request, spike over baseline), and the
deploy or restart event at the onset if there was one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pyrometer.agent.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.evidence import EventInfo, SpikeContext
from pyrometer.collector.analysis.robust import ratio
from pyrometer.collector.analysis.sizes import SizeModel, size_model

KINDS = ("gpu_throttling", "deploy", "payload_size", "traffic_surge", "code_path",
         "host_pressure")
CHANGE_EVENT_KINDS = frozenset({"deploy", "restart", "rollback", "config"})


@dataclass(frozen=True, slots=True)
class Cause:
    """One candidate's verdict on one spike.

    `score` is 0..1 (0: does not explain it); `z` is the robust z of the candidate's
    main signal, spike against baseline (0 without data); `note` says, for the
    "checked" list, what was looked at when nothing scored.
    """

    kind: str
    score: float
    z: float
    explanation: str
    evidence: Mapping[str, object] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    sizes: SizeModel | None
    cost_ratio: float  # samples per request, spike over baseline; NaN when unknown
    change_event: EventInfo | None  # a deploy/restart shortly before or at the onset

    @property
    def size_explained(self) -> float:
        return self.sizes.explained if self.sizes is not None else 0.0


Scorer = Callable[[SpikeContext, Facts], Cause]


def lookback_ns(ctx: SpikeContext) -> Nanos:
    """How long before the onset a deploy may come and still count as "shortly before"."""
    return max(3 * ctx.step_ns, 60 * NANOS_PER_SECOND)


def change_event(ctx: SpikeContext) -> EventInfo | None:
    """The change event nearest the onset within [onset - lookback, onset + tolerance]."""
    onset = ctx.spike.onset_ns
    near = [e for e in ctx.events if e.kind in CHANGE_EVENT_KINDS
            and onset - lookback_ns(ctx) <= e.time_ns <= onset + ctx.tolerance_ns]
    # a deploy names the version; prefer it over the restart recorded beside it
    return min(near, key=lambda e: (e.kind != "deploy", abs(e.time_ns - onset)), default=None)


def facts(ctx: SpikeContext) -> Facts:
    cost = math.nan
    if ctx.spike_profile is not None and ctx.baseline_profile is not None:
        cost = ratio(ctx.spike_profile.per_request, ctx.baseline_profile.per_request)
    return Facts(size_model(ctx), cost, change_event(ctx))


def timing(ctx: SpikeContext, onset_ns: Nanos | None) -> tuple[float, str]:
    """(1, "") when the candidate began by the spike's onset (within tolerance), else 0.

    A candidate whose onset comes clearly after the spike's cannot have caused it.
    """
    if onset_ns is None or onset_ns <= ctx.spike.onset_ns + ctx.tolerance_ns:
        return 1.0, ""
    late = (onset_ns - ctx.spike.onset_ns) / NANOS_PER_SECOND
    return 0.0, f"began {late:.0f}s after the spike's onset, so it does not explain it"


def none(kind: str, note: str, z: float = 0.0, evidence: Mapping[str, object] | None = None
         ) -> Cause:
    """A candidate that does not score, with what was checked."""
    return Cause(kind, 0.0, z, note, evidence or {}, note)


def pct(x: float) -> str:
    return "?" if math.isnan(x) else f"{x * 100:+.0f}%"


def num(x: float | None, digits: int = 3) -> float | None:
    """A value for JSON evidence: rounded, and None instead of NaN."""
    if x is None or math.isnan(x) or math.isinf(x):
        return None
    return round(x, digits)
