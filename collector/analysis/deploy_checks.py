"""What a deploy or restart that no request carries changed, measured at the event.

Three checks (scorers_deploy.py says when each is asked):

- `cost_across`: for an event inside the spike later than the onset's tolerance (which
  only the allowance for a spike whose main rise came later lets through), the target's
  CPU seconds per request in the spike's steps after the event against its steps before
  it. A late event that escalated the spike made each request costlier from there on; one
  that changed nothing leaves the cost where the spike had already taken it (an
  in-sample run: a decoy deploy 12 s into a spike a costlier code path began was credited
  with the CPU per request the code path had raised since the onset). Not known without
  CPU readings or a whole step with enough requests on each side; then `cost_step` judges.
- `across_event`: the requests that began after the event and ended in the first half
  of the time from it to the spike's onset (outside earlier spikes), size-adjusted,
  against the baseline's requests before the event, in units of the baseline's own
  step-to-step variation (scaled to the number of requests compared: a median of few
  requests wobbles more than a step's). Only the first half: a change the event made
  shows from its first requests, while the detected onset can lag the real one by
  several steps, and a fault that began in those steps is not the event's doing (a
  held-out run: a decoy deploy 26 s before the onset, a code path switched on 15 s
  after it and detected 11 s late, and the whole gap read +33%, z 4.9). An event less
  than two steps before the onset leaves no such half (the onset itself is only known
  to a step): then the check is not known and `cost_step` judges.
- `cost_step`: the target's CPU seconds per request over the spike against the
  baseline's, divided by what the requests' sizes predict (the baseline's
  latency-per-size relation; at the baseline's load latency is mostly the work), and
  judged against the spread of the baseline steps' own ratios. Without CPU readings,
  profile samples per request, with wider thresholds: a sampling profiler also counts
  threads that wait for a core, so samples per request grow under any slowdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.analysis.candidate import Facts, pct
from pyrometer.collector.analysis.evidence import EventInfo, SpikeContext
from pyrometer.collector.analysis.robust import Baseline, median, ramp
from pyrometer.collector.storage.reads import RequestSample

MIN_ACROSS_REQUESTS = 10
MIN_STEP_REQUESTS = 5  # a baseline step with fewer completions gives no CPU-per-request value


def residuals(requests: Sequence[RequestSample], facts: Facts) -> list[float]:
    """Size-adjusted log latencies, or plain log latencies where requests carry no size."""
    out = []
    for r in requests:
        value = facts.sizes.residual(r) if facts.sizes is not None else None
        if value is None and r.latency_ms > 0:
            value = math.log(r.latency_ms)
        if value is not None:
            out.append(value)
    return out


def cpu_steps(ctx: SpikeContext) -> dict[int, tuple[Nanos, float, int]]:
    """Per step on the spike's grid with a CPU reading of the target and at least
    MIN_STEP_REQUESTS completions: (the point's start, the target's cores, completions)."""
    done = ctx.completions_per_step()
    out = {}
    for p in ctx.resources:
        i = ctx.bucket_index(p.start_ns)
        n = done.get(i, 0)
        if p.target_cpu_cores is not None and n >= MIN_STEP_REQUESTS:
            out[i] = (p.start_ns, p.target_cpu_cores, n)
    return out


@dataclass(frozen=True, slots=True)
class CostAcross:
    """For an event inside the spike, past the onset's tolerance: CPU per request after it
    against before it, both inside the spike."""

    ratio: float  # NaN when not known
    steps: tuple[int, int]  # whole steps with enough requests before and after the event

    @property
    def known(self) -> bool:
        return not math.isnan(self.ratio)

    @property
    def changed(self) -> float:
        return ramp(self.ratio, 1.1, 1.4) if self.known else 0.0

    def describe(self) -> str:
        verb = "rose" if self.changed > 0 else "unchanged"
        return (f"CPU per request across it, inside the spike, {verb}: {pct(self.ratio - 1)} "
                f"(over {self.steps[0]} steps before it and {self.steps[1]} after)")


def cost_across(ctx: SpikeContext, event: EventInfo) -> CostAcross:
    unknown = CostAcross(math.nan, (0, 0))
    if event.time_ns <= ctx.spike.onset_ns + ctx.tolerance_ns:
        return unknown
    at = ctx.bucket_index(event.time_ns)
    spike_steps = -(-(ctx.spike.end_ns - ctx.spike.start_ns) // ctx.step_ns)
    sides: dict[bool, list[float]] = {False: [0.0, 0.0, 0.0], True: [0.0, 0.0, 0.0]}
    for i, (_, cores, n) in cpu_steps(ctx).items():
        if 0 <= i < spike_steps and i != at:  # whole steps only: the event's holds both sides
            side = sides[i > at]
            side[0] += cores
            side[1] += n
            side[2] += 1
    (b_cpu, b_n, b_steps), (a_cpu, a_n, a_steps) = sides[False], sides[True]
    if not b_steps or not a_steps:
        return CostAcross(math.nan, (int(b_steps), int(a_steps)))
    return CostAcross((a_cpu / a_n) / (b_cpu / b_n), (int(b_steps), int(a_steps)))


@dataclass(frozen=True, slots=True)
class AcrossEvent:
    """Latency per request, size for size, from before the event to between it and the onset."""

    requests: int  # that began after the event and ended in the first half of the gap
    seconds: float  # from the event to the onset
    rise: float  # fraction (0.1 = +10%); NaN when not known
    z: float
    known: bool

    @property
    def changed(self) -> float:
        """0..1: how clearly latency per request changed at the event."""
        return ramp(self.z, 2, 4) * ramp(self.rise, 0.05, 0.2) if self.known else 0.0

    def describe(self) -> str:
        measured = (f"{pct(self.rise)} size for size in the {self.requests} requests of the "
                    f"first {self.seconds / 2:.0f}s after it (z {self.z:.1f})")
        if self.changed > 0:
            return f"latency per request changed across it: {measured}"
        return f"latency per request unchanged across it: {measured}"


def across_event(ctx: SpikeContext, facts: Facts, event: EventInfo) -> AcrossEvent:
    onset = ctx.spike.onset_ns
    seconds = (onset - event.time_ns) / 1e9
    until = event.time_ns + (onset - event.time_ns) // 2  # see the module docstring
    # an earlier spike between the event and the onset (a restart's cold start, say) is
    # detected on its own and was no lasting change: its requests say nothing of the event
    after = [r for r in ctx.requests if r.start_ns >= event.time_ns and r.end_ns < until
             and not any(lo <= r.end_ns < hi for lo, hi in ctx.excluded)]
    before = [r for r in ctx.requests if r.end_ns < event.time_ns and ctx.in_baseline(r.end_ns)]
    if onset - event.time_ns < 2 * ctx.step_ns or len(after) < MIN_ACROSS_REQUESTS \
            or len(before) < MIN_ACROSS_REQUESTS:
        return AcrossEvent(len(after), seconds, math.nan, 0.0, False)
    rise = median(residuals(after, facts)) - median(residuals(before, facts))
    steps = [rs for i, rs in ctx.buckets(before, lambda r: r.end_ns).items() if i < 0]
    spread = Baseline.of([median(residuals(rs, facts)) for rs in steps], floor_abs=0.02)
    per_step = median([float(len(rs)) for rs in steps]) if steps else 1.0
    scale = spread.scale * math.sqrt(max(1.0, per_step / len(after)))
    return AcrossEvent(len(after), seconds, math.expm1(rise), rise / scale, True)


@dataclass(frozen=True, slots=True)
class CostStep:
    """The target's cost per request, size-adjusted, spike over baseline."""

    ratio: float  # NaN when not known
    z: float
    source: str  # "CPU" or "profile samples", "" when neither is known

    @property
    def changed(self) -> float:
        if self.source == "CPU":
            return ramp(self.z, 2, 4) * ramp(self.ratio, 1.1, 1.4)
        return ramp(self.ratio, 1.3, 2.0)  # NaN (unknown): 0

    def describe(self) -> str:
        if not self.source:
            return "no CPU readings or profile to tell whether requests got costlier at it"
        z = f", z {self.z:.1f}" if self.source == "CPU" else ""
        verb = "rose" if self.changed > 0 else "unchanged across it"
        return (f"{self.source} per request {verb}: {pct(self.ratio - 1)} size for size"
                f"{z}")


def cost_step(ctx: SpikeContext, facts: Facts) -> CostStep:
    size_factor = 1.0 + facts.sizes.predicted_rise if facts.sizes is not None else 1.0
    if math.isnan(facts.cpu_ratio):
        return CostStep(facts.cost_ratio / size_factor, 0.0,
                        "" if math.isnan(facts.cost_ratio) else "profile samples")
    adjusted = facts.cpu_ratio / size_factor
    per_step = {i: cores / n for i, (start, cores, n) in cpu_steps(ctx).items()
                if i < 0 and ctx.in_baseline(start)}
    overall = sum(per_step.values()) / len(per_step) if per_step else math.nan
    spread = Baseline.of([v / overall for v in per_step.values()] if overall > 0 else [],
                         floor_abs=0.05)
    return CostStep(adjusted, spread.z(adjusted), "CPU")
