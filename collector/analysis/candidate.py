"""What every cause scorer returns, and the facts about a spike they share.

A scorer is a function `(SpikeContext, Facts) -> Cause`. `Facts` are computed once
per spike: the size model (how much of the rise the requests' sizes explain), the
target's cost per request, the deploy or restart event at the onset if there was one,
and the arrivals.

Cost per request comes two ways: profile samples per request, and the target's CPU
time per completed request from the process readings. The second tells work that grew
per request (a code path, larger inputs, a slower version) from requests that merely
waited (a surge's queue, a neighbour taking the cores, a throttled device): a sampling
profiler also counts a thread that is runnable but descheduled; its CPU time does not.
The arrivals say whether clearly more requests came: a surge drives the clients,
proxies and collectors beside the target too, so a rise in their CPU is the surge's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.evidence import EventInfo, SpikeContext, summarize
from pyrometer.collector.analysis.robust import Baseline, quantile, ramp, ratio
from pyrometer.collector.analysis.sizes import SizeModel, size_model

if TYPE_CHECKING:  # deploy_checks imports this module
    from pyrometer.collector.analysis.deploy_checks import AcrossEvent

KINDS = ("gpu_throttling", "deploy", "payload_size", "traffic_surge", "code_path",
         "host_pressure", "engine_queueing", "batch_saturation", "kv_cache_pressure",
         "prompt_tokens_shift")
CHANGE_EVENT_KINDS = frozenset({"deploy", "restart", "rollback", "config"})
# evidence key of the share (0..1) of the latency rise a cause accounts for, where its
# scorer can tell; causes that name one are ranked among themselves by it (causes.py)
SHARE = "share_of_rise"


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
class Arrivals:
    """Requests by start time per step: the baseline's, and the spike's mean.

    The mean, not the median: a surge's extra requests are what it adds, and its queue
    drains after it ends, so a long spike holds fewer surging steps than calm ones.
    """

    baseline: Baseline
    spike_per_step: float
    z: float
    onset_ns: Nanos | None

    @property
    def ratio(self) -> float:
        return ratio(self.spike_per_step, self.baseline.median)

    @property
    def surge(self) -> float:
        """0..1: how clearly more requests arrived than the baseline's."""
        return ramp(self.z, 2, 5) * ramp(self.ratio, 1.15, 1.5)


def arrivals(ctx: SpikeContext) -> Arrivals | None:
    """The arrivals signal, or None without request records."""
    if not ctx.requests:
        return None
    per_step = {i: float(n) for i, n in ctx.arrivals_per_step().items()}
    signal = summarize(ctx, per_step, floor_abs=2.0, floor_rel=0.05)
    spike_steps = -(-(ctx.spike.end_ns - ctx.spike.start_ns) // ctx.step_ns)
    value = sum(per_step.get(i, 0.0) for i in range(spike_steps)) / spike_steps
    return Arrivals(signal.baseline, value, signal.baseline.z(value) if signal.baseline.n
                    else 0.0, signal.onset_ns)


@dataclass(frozen=True, slots=True)
class Facts:
    sizes: SizeModel | None
    cost_ratio: float  # working profile samples per request, spike over baseline; NaN unknown
    change_event: EventInfo | None  # a deploy/restart shortly before or at the onset
    cpu_ratio: float = math.nan  # target CPU seconds per request, spike over baseline
    arrivals: Arrivals | None = None
    # the change event's own check, done once for the scorers that ask it (the deploy's
    # and the code path's; scorers_deploy.check_change): whether requests carry its
    # version (None: not checked), and when none do, latency per request across it
    change_carried: bool | None = None
    across: AcrossEvent | None = None

    @property
    def surge(self) -> float:
        return self.arrivals.surge if self.arrivals is not None else 0.0

    @property
    def size_explained(self) -> float:
        return self.sizes.explained if self.sizes is not None else 0.0


Scorer = Callable[[SpikeContext, Facts], Cause]


def lookback_ns(ctx: SpikeContext) -> Nanos:
    """How long before the onset a deploy may come and still count as "shortly before"."""
    return max(3 * ctx.step_ns, 60 * NANOS_PER_SECOND)


def change_event(ctx: SpikeContext) -> EventInfo | None:
    """The change event nearest the onset within [onset - lookback, onset + tolerance]
    (or up to the main rise's onset + tolerance: see `timing`)."""
    onset = ctx.spike.onset_ns
    until = max(onset, main_rise_ns(ctx)) + ctx.tolerance_ns
    near = [e for e in ctx.events if e.kind in CHANGE_EVENT_KINDS
            and onset - lookback_ns(ctx) <= e.time_ns <= until]
    # a deploy names the version; prefer it over the restart recorded beside it
    return min(near, key=lambda e: (e.kind != "deploy", abs(e.time_ns - onset)), default=None)


def facts(ctx: SpikeContext) -> Facts:
    cost = math.nan
    if ctx.spike_profile is not None and ctx.baseline_profile is not None:
        # the working samples: waiting frames grow with any slowdown (waiting.py)
        cost = ratio(ctx.spike_profile.working_per_request,
                     ctx.baseline_profile.working_per_request)
    return Facts(size_model(ctx), cost, change_event(ctx), cpu_per_request_ratio(ctx),
                 arrivals(ctx))


MIN_CPU_REQUESTS = 20  # fewer completed requests on either side: no ratio


def cpu_per_request_ratio(ctx: SpikeContext) -> float:
    """The target's CPU seconds per completed request, spike over baseline; NaN unknown.

    Totals over each side (CPU in the steps that have a reading, over the requests that
    ended in those steps), so that a step with few completions does not dominate.
    """
    cpu = {ctx.bucket_index(p.start_ns): p.target_cpu_cores for p in ctx.resources
           if p.target_cpu_cores is not None}
    done = ctx.completions_per_step()
    spike_buckets = -(-(ctx.spike.end_ns - ctx.spike.start_ns) // ctx.step_ns)
    sides: dict[bool, list[float]] = {True: [0.0, 0.0], False: [0.0, 0.0]}
    for i, cores in cpu.items():
        inside = 0 <= i < spike_buckets
        if not inside and not (i < 0 and ctx.in_baseline(ctx.spike.start_ns + i * ctx.step_ns)):
            continue
        sides[inside][0] += cores
        sides[inside][1] += done.get(i, 0)
    (b_cpu, b_n), (s_cpu, s_n) = sides[False], sides[True]
    if b_n < MIN_CPU_REQUESTS or s_n < MIN_CPU_REQUESTS:
        return math.nan
    return ratio(s_cpu / s_n, b_cpu / b_n)


def timing(ctx: SpikeContext, onset_ns: Nanos | None) -> tuple[float, str]:
    """(1, "") when the candidate began by the spike's onset (within tolerance), else 0.

    A candidate whose onset comes clearly after the spike's cannot have caused it. One
    allowance: a spike that escalates (a mild rise, then one that reaches half its peak
    only later) has a second onset, that of its main rise; a candidate that began by
    then caused the bulk of the spike, whatever set off the mild start. One that began
    after both explains neither.
    """
    if onset_ns is None or onset_ns <= ctx.spike.onset_ns + ctx.tolerance_ns:
        return 1.0, ""
    if onset_ns <= main_rise_ns(ctx) + ctx.tolerance_ns:
        return 1.0, ""
    late = (onset_ns - ctx.spike.onset_ns) / NANOS_PER_SECOND
    return 0.0, f"began {late:.0f}s after the spike's onset, so it does not explain it"


QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1.0}


def main_rise_ns(ctx: SpikeContext) -> Nanos:
    """Start of the spike's first step whose percentile reaches half the peak's rise.

    Steps on the detector's grid, of the requests that ended in them; the spike's onset
    when no step does (a peak the records no longer show) or when the first one does.
    """
    half = ctx.spike.baseline_ms + 0.5 * (ctx.spike.peak_ms - ctx.spike.baseline_ms)
    q = QUANTILES.get(ctx.percentile, 0.99)
    steps = ctx.buckets((r for r in ctx.requests if ctx.in_spike(r.end_ns)), lambda r: r.end_ns)
    for i in sorted(steps):
        if quantile([r.latency_ms for r in steps[i]], q) >= half:
            return max(ctx.spike.onset_ns, ctx.spike.start_ns + i * ctx.step_ns)
    return ctx.spike.onset_ns


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
