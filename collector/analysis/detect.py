"""Spike detection on per-bucket latency percentiles against a robust trailing baseline.

A bucket is spiky when its percentile (p95, p99 or max) is above the median of the
buckets in the `baseline` before it by a robust z over the threshold AND by a relative
and an absolute floor, so that a quiet endpoint going from 2 ms to 3 ms pages nobody.
Spiky buckets never join a later bucket's baseline (a long spike must not become its
own reference; one longer than the baseline keeps being measured against its first
bucket's). A slow ramp is not a spike: its own rise widens the trailing MAD.
Adjacent spiky buckets (missing buckets between them do not separate them) merge into
one spike measured against the baseline of its first bucket. Entering a spike and
staying in one have different bars (hysteresis, as alerting rules have): a spike in
progress goes on while its buckets stay above the baseline by `continue_fraction` of
the margin that opened it. A percentile of a few dozen requests per step wobbles, and
without this a steady 2x slowdown whose buckets straddle the threshold breaks into
blips that each end too soon to count, while its dips just under the bar join the
baseline and make the slowdown its own reference. A spike must last
`min_duration_ns`, however fine the step: with short steps a bucket's p99 is the
slowest few requests, and one garbage-collection pause or one preemption by a
neighbour lifts it for a step; such a blip is not a slowdown anyone can act on (nor
does it join a baseline).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.robust import Baseline

PERCENTILES = ("p50", "p95", "p99", "max")


@dataclass(frozen=True, slots=True)
class DetectConfig:
    """How spiky a bucket must be; validated once by the caller that parses user input."""

    step_ns: Nanos = 10 * NANOS_PER_SECOND
    baseline_ns: Nanos = 30 * 60 * NANOS_PER_SECOND
    percentile: str = "p99"
    z_threshold: float = 4.0
    min_increase_ratio: float = 0.3  # the bucket must be >= 1.3x its baseline median
    min_increase_ms: float = 5.0  # and at least this many ms above it
    min_count: int = 10  # fewer requests than this: the percentile is noise, no verdict
    min_baseline_fraction: float = 0.5  # of the baseline's buckets that must have data
    min_baseline_buckets: int = 6
    min_duration_ns: Nanos = 10 * NANOS_PER_SECOND  # shorter runs of spiky buckets: blips
    continue_fraction: float = 0.5  # of the opening margin, to keep a spike going

    @property
    def needed_baseline_buckets(self) -> int:
        expected = self.baseline_ns / self.step_ns
        return max(self.min_baseline_buckets, math.ceil(self.min_baseline_fraction * expected))


@dataclass(frozen=True, slots=True)
class Bucket:
    """One step of one latency series: its requests' percentile and how many there were."""

    start_ns: Nanos
    end_ns: Nanos
    value_ms: float
    count: int


@dataclass(frozen=True, slots=True)
class Spike:
    """Merged spiky buckets, and the baseline their first bucket was measured against."""

    start_ns: Nanos
    end_ns: Nanos
    onset_ns: Nanos  # refined from the requests (gather.py); start_ns until then
    peak_ns: Nanos  # start of the worst bucket
    peak_ms: float
    baseline_ms: float
    baseline_mad_ms: float
    z: float  # of the peak against the baseline
    threshold_ms: float  # what the first bucket had to exceed
    route: str | None = None
    instance: str | None = None  # the one instance that carries it (localise.py); None: all


@dataclass(frozen=True, slots=True)
class Detection:
    spikes: tuple[Spike, ...]
    evaluated: int  # buckets in the window that had a baseline
    without_baseline: int  # buckets in the window with data but too little before them

    @property
    def status(self) -> str:
        return "insufficient_data" if self.evaluated == 0 else "ok"


@dataclass(frozen=True, slots=True)
class _Verdict:
    bucket: Bucket
    baseline: Baseline
    threshold_ms: float
    spiky: bool


def bucket_threshold(baseline: Baseline, config: DetectConfig) -> float:
    """The smallest value a bucket must exceed to be spiky against `baseline`."""
    return baseline.median + max(config.z_threshold * baseline.scale,
                                 config.min_increase_ratio * baseline.median,
                                 config.min_increase_ms)


class SortedWindow:
    """The values added since a start that only moves forward, kept in ascending order
    as the window slides: what detect() takes each bucket's baseline from. A day at 30 s
    steps is 2,940 baselines of some 60 values per series, and sorting each window afresh
    (twice, for the median and the MAD) was most of detection."""

    __slots__ = ("_first", "_values", "ordered")

    def __init__(self) -> None:
        self._values: list[float] = []  # every value added, in order
        self._first = 0  # where the window starts in _values
        self.ordered: list[float] = []  # _values[_first:], ascending

    def add(self, value: float) -> None:
        self._values.append(value)
        bisect.insort(self.ordered, value)

    def start_at(self, index: int) -> None:
        """Drop the values added before the index-th, `index` at most how many were added
        (an index before the current start changes nothing)."""
        for gone in self._values[self._first:index]:
            del self.ordered[bisect.bisect_left(self.ordered, gone)]
        self._first = max(self._first, index)


def detect(buckets: Sequence[Bucket], config: DetectConfig, from_ns: Nanos,
           route: str | None = None) -> Detection:
    """Spikes ending after `from_ns`; buckets before it serve only as baseline."""
    history_t: list[Nanos] = []  # starts of the buckets a later baseline may use
    window = SortedWindow()  # their values, from the first within the baseline's reach
    verdicts: list[_Verdict] = []
    without = 0
    ongoing: _Verdict | None = None  # first bucket of the spike in progress
    for bucket in sorted(buckets, key=lambda b: b.start_ns):
        if bucket.count < config.min_count or math.isnan(bucket.value_ms):
            continue
        # buckets come in time order, so the window's start only moves forward
        window.start_at(bisect.bisect_left(history_t, bucket.start_ns - config.baseline_ns))
        if len(window.ordered) >= config.needed_baseline_buckets:
            # the MAD scale's floor: percentiles of a few hundred requests jitter by a
            # few percent even when nothing happens
            baseline = Baseline.of_sorted(window.ordered, floor_rel=0.02)
        elif ongoing is not None:
            baseline = ongoing.baseline  # a spike longer than the baseline keeps its own
        else:
            without += bucket.start_ns >= from_ns
            history_t.append(bucket.start_ns)
            window.add(bucket.value_ms)
            continue
        threshold = bucket_threshold(baseline, config)
        bar = threshold if ongoing is None else (
            baseline.median + config.continue_fraction * (threshold - baseline.median))
        verdict = _Verdict(bucket, baseline, threshold, bucket.value_ms > bar)
        verdicts.append(verdict)
        if verdict.spiky:
            ongoing = ongoing or verdict
        else:
            ongoing = None
            history_t.append(bucket.start_ns)
            window.add(bucket.value_ms)
    spikes = [s for s in _merge(verdicts, route) if s.end_ns > from_ns
              and s.end_ns - s.start_ns >= config.min_duration_ns]
    evaluated = sum(1 for v in verdicts if v.bucket.start_ns >= from_ns)
    return Detection(tuple(spikes), evaluated, without)


def _merge(verdicts: Sequence[_Verdict], route: str | None) -> list[Spike]:
    spikes: list[Spike] = []
    run: list[_Verdict] = []
    for verdict in [*verdicts, None]:
        if verdict is not None and verdict.spiky:
            run.append(verdict)
            continue
        if run:
            spikes.append(_spike(run, route))
            run = []
    return spikes


def _spike(run: Sequence[_Verdict], route: str | None) -> Spike:
    first = run[0]
    peak = max(run, key=lambda v: v.bucket.value_ms)
    return Spike(
        start_ns=first.bucket.start_ns, end_ns=run[-1].bucket.end_ns,
        onset_ns=first.bucket.start_ns, peak_ns=peak.bucket.start_ns,
        peak_ms=peak.bucket.value_ms, baseline_ms=first.baseline.median,
        baseline_mad_ms=first.baseline.mad, z=first.baseline.z(peak.bucket.value_ms),
        threshold_ms=first.threshold_ms, route=route,
    )
