"""The values cause scoring reads for one spike: plain records, no store, no SQL.

`SpikeContext` holds everything around one spike, from the start of its baseline to
its end: the requests, GPU readings, process and host points, events and the two
profiles' function totals. Its helpers split any of them into baseline and spike, and
bucket them on the spike's own grid, so every scorer measures against the same
baseline the detector used (earlier spikes excluded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.analysis.detect import Spike
from pyrometer.collector.analysis.robust import Baseline, median
from pyrometer.collector.storage.reads import EngineStep, RequestSample

T = TypeVar("T")


class GpuSample(NamedTuple):
    """One GPU reading, reduced to what the throttling scorer asks."""

    time_ns: Nanos
    gpu: str  # instance/index
    reasons: tuple[str, ...]  # slowdown reasons set (idle and app clocks are not slowdowns)
    idle: bool
    sm_clock_mhz: float | None
    sm_clock_max_mhz: float | None
    temperature_c: float | None
    slowdown_temperature_c: float | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ResourcePoint:
    """One step of the target's processes and its host(s); None where nothing said."""

    start_ns: Nanos
    target_cpu_cores: float | None  # all the target's processes together
    host_busy_cores: float | None  # cpu_pct * cpu_count, per host, summed
    cpu_count: int | None
    psi_cpu_some: float | None = None
    psi_memory_some: float | None = None
    psi_io_some: float | None = None
    rss_bytes: float | None = None
    # involuntary context switches of the target's threads per second of CPU they got:
    # how often the scheduler took a core from them while they could still run
    target_preempted_per_cpu_s: float | None = None
    # seconds the target's threads waited runnable for a CPU per second of CPU they got
    # (their schedstat run-queue wait): the target's own CPU delay
    target_waited_per_cpu_s: float | None = None

    @property
    def other_cpu_cores(self) -> float | None:
        """Host CPU beyond the target's own: what other processes took."""
        if self.host_busy_cores is None or self.target_cpu_cores is None:
            return None
        return max(0.0, self.host_busy_cores - self.target_cpu_cores)


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One serving-engine reading (agent --scrape): value / count is a mean where count > 0."""

    time_ns: Nanos
    metric: str
    value: float
    count: int = 0
    engine: str = ""
    model: str = ""
    instance: str = ""


def engine_steps(samples: Iterable[EngineSample], origin_ns: Nanos, step_ns: Nanos
                 ) -> tuple[EngineStep, ...]:
    """The readings summed per step of the grid from `origin_ns`, as `Store.engine_steps`
    sums them where they are stored: its reference, and how tests build a context."""
    scrapes: dict[tuple[Nanos, str, str, str], list[EngineSample]] = {}
    for s in samples:
        scrapes.setdefault((s.time_ns, s.instance, s.metric, s.engine), []).append(s)
    acc: dict[tuple[int, str, str], list[float]] = {}
    for (t, _, metric, engine), readings in scrapes.items():
        a = acc.setdefault(((t - origin_ns) // step_ns, metric, engine), [0.0, 0.0, 0, 0, 0.0, -math.inf])
        a[0] += sum(r.value for r in readings)
        a[1] += sum(r.value for r in readings if r.count > 0)
        a[2] += sum(r.count for r in readings)
        a[3] += 1
        a[4] += max(r.value for r in readings)
        a[5] = max(a[5], max(r.value for r in readings))
    return tuple(EngineStep(i, metric, engine, a[0], a[1], int(a[2]), int(a[3]), a[4], a[5])
                 for (i, metric, engine), a in sorted(acc.items()))


@dataclass(frozen=True, slots=True)
class EventInfo:
    time_ns: Nanos
    kind: str
    version: str
    previous_version: str = ""


@dataclass(frozen=True, slots=True)
class CodeProfile:
    """Samples of a window and its requests, working apart from waiting.

    `functions`: inclusive samples per function ("name (file)") of the samples in which
    the thread worked; `waiting`: the samples whose leaf is a waiting frame (a socket
    read, a lock, a selector: waiting.py), by that frame; `total`: all samples.
    """

    functions: Mapping[str, int]
    total: int
    requests: int
    waiting: Mapping[str, int] = field(default_factory=dict)

    @property
    def working(self) -> int:
        return self.total - sum(self.waiting.values())

    @property
    def per_request(self) -> float:
        return self.total / self.requests if self.requests else math.nan

    @property
    def working_per_request(self) -> float:
        return self.working / self.requests if self.requests else math.nan


@dataclass(frozen=True, slots=True)
class SpikeContext:
    """One spike and what happened around it; see the module docstring."""

    spike: Spike
    step_ns: Nanos
    baseline_start_ns: Nanos
    percentile: str = "p99"
    size_unit: str = "bytes"  # or "app size" when the app reported one (tokens, ...)
    excluded: tuple[tuple[Nanos, Nanos], ...] = ()  # earlier spikes, not baseline
    requests: tuple[RequestSample, ...] = ()
    gpu: tuple[GpuSample, ...] = ()
    resources: tuple[ResourcePoint, ...] = ()
    events: tuple[EventInfo, ...] = ()
    spike_profile: CodeProfile | None = None
    baseline_profile: CodeProfile | None = None
    # samples and requests of each version inside the spike
    version_profiles: Mapping[str, CodeProfile] = field(default_factory=dict)
    # the serving engine's readings summed per step (bucket_index), when scraped
    engine: tuple[EngineStep, ...] = ()
    # Requests per step by start and by end (bucket_index), every request counted, where
    # `requests` may be a sample of a large fleet's (gather.py): rates and CPU per request
    # need the true counts. None: count `requests`. A sample's own size is what a minimum
    # number of requests (for a median, a fit) is asked of, since those guard statistics.
    arrived: Mapping[int, int] | None = None
    completed: Mapping[int, int] | None = None
    # what several scorers ask of the requests, computed once (request_steps, request_split):
    # a day's spike has hundreds of thousands of requests and a dozen scorers
    _memo: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def tolerance_ns(self) -> Nanos:
        """How far after the onset a candidate may start and still explain the spike."""
        return max(self.step_ns, 10_000_000_000)

    def in_spike(self, t: Nanos) -> bool:
        return self.spike.start_ns <= t < self.spike.end_ns

    def in_baseline(self, t: Nanos) -> bool:
        if not self.baseline_start_ns <= t < self.spike.start_ns:
            return False
        return not any(lo <= t < hi for lo, hi in self.excluded)

    def split(self, items: Iterable[T], time_of: Callable[[T], Nanos]) -> tuple[list[T], list[T]]:
        """(baseline items, spike items) by each item's time."""
        base: list[T] = []
        inside: list[T] = []
        # in_spike and in_baseline inlined: this runs over every request of a day's spike
        start, end, base_start = self.spike.start_ns, self.spike.end_ns, self.baseline_start_ns
        excluded = self.excluded
        for item in items:
            t = time_of(item)
            if start <= t < end:
                inside.append(item)
            elif base_start <= t < start and not (
                    excluded and any(lo <= t < hi for lo, hi in excluded)):
                base.append(item)
        return base, inside

    def bucket_index(self, t: Nanos) -> int:
        """The step on the spike's grid that holds t (negative before the spike)."""
        return (t - self.spike.start_ns) // self.step_ns

    def buckets(self, items: Iterable[T], time_of: Callable[[T], Nanos]) -> dict[int, list[T]]:
        out: dict[int, list[T]] = {}
        start, step = self.spike.start_ns, self.step_ns  # bucket_index, inlined
        for item in items:
            key = (time_of(item) - start) // step
            bucket = out.get(key)
            if bucket is None:
                out[key] = [item]
            else:
                bucket.append(item)
        return out

    def request_steps(self, by: str = "end") -> dict[int, list[RequestSample]]:
        """`buckets` of the requests by their end ("end") or start ("start"), computed
        once per context; shared, so callers must not change what they get."""
        key = f"steps_{by}"
        if key not in self._memo:
            time_of: Callable[[RequestSample], Nanos] = (
                (lambda r: r.end_ns) if by == "end" else (lambda r: r.start_ns))
            self._memo[key] = self.buckets(self.requests, time_of)
        return self._memo[key]  # type: ignore[return-value]

    def arrivals_per_step(self) -> Mapping[int, int]:
        """Requests per step by their start, every one counted (see `arrived`)."""
        if self.arrived is not None:
            return self.arrived
        return {i: len(rs) for i, rs in self.request_steps("start").items()}

    def completions_per_step(self) -> Mapping[int, int]:
        """Requests per step by their end, every one counted (see `completed`)."""
        if self.completed is not None:
            return self.completed
        return {i: len(rs) for i, rs in self.request_steps().items()}

    def request_split(self) -> tuple[list[RequestSample], list[RequestSample]]:
        """`split` of the requests by their end, computed once per context; shared, so
        callers must not change what they get."""
        if "split" not in self._memo:
            self._memo["split"] = self.split(self.requests, lambda r: r.end_ns)
        return self._memo["split"]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class SignalSummary:
    """A bucketed signal: its baseline, its value over the spike, z, and its onset."""

    baseline: Baseline
    spike_value: float
    z: float
    onset_ns: Nanos | None  # first elevated bucket near the spike, None if none


def summarize(ctx: SpikeContext, per_bucket: Mapping[int, float], *, floor_abs: float = 0.0,
              floor_rel: float = 0.0, onset_z: float = 3.0) -> SignalSummary:
    """Baseline of the per-bucket values, the spike's median bucket value, and the onset.

    The onset is searched from two steps before the spike to its end: the first bucket
    whose z reaches `onset_z`.
    """
    spike_buckets = (ctx.spike.end_ns - ctx.spike.start_ns + ctx.step_ns - 1) // ctx.step_ns
    base_values = [v for i, v in per_bucket.items()
                   if i < 0 and ctx.in_baseline(ctx.spike.start_ns + i * ctx.step_ns)]
    inside = [v for i, v in per_bucket.items() if 0 <= i < spike_buckets]
    baseline = Baseline.of(base_values, floor_abs, floor_rel)
    value = median(inside)
    onset = next((ctx.spike.start_ns + i * ctx.step_ns for i in sorted(per_bucket)
                  if -2 <= i < spike_buckets and baseline.n
                  and baseline.z(per_bucket[i]) >= onset_z), None)
    return SignalSummary(baseline, value, baseline.z(value) if baseline.n else 0.0, onset)

