"""The baseline's latency-per-size relation, and how much of a spike it explains.

Fitted on the baseline's requests as log(latency) = a + beta * log(size) (least
squares, beta kept in [0, 2]): a power law carries a fixed overhead and a super-linear
cost (attention) tolerably well when extrapolated to larger inputs. The share of the
spike it explains compares medians in log space: the rise the relation predicts from
the spike's sizes, over the rise observed. Every other candidate asks the same model
what is left once sizes are accounted for (the deploy and code-path scorers do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyrometer.collector.analysis.evidence import SpikeContext, summarize
from pyrometer.collector.analysis.robust import clip01, median
from pyrometer.collector.storage.reads import RequestSample

MIN_FIT_REQUESTS = 30
MIN_LOG_SIZE_VARIANCE = 0.01  # below this the sizes barely vary: no slope to learn
ASSUMED_BETA = 1.0  # proportional cost, when the baseline cannot tell
MIN_OBSERVED_RISE = math.log(1.05)  # a median that rose < 5% leaves nothing to explain


@dataclass(frozen=True, slots=True)
class SizeModel:
    beta: float
    assumed: bool  # beta was not learned from the baseline
    base_size: float  # medians
    spike_size: float
    size_z: float  # spike's median size against the baseline buckets' medians
    size_onset_ns: int | None
    predicted_rise: float  # of the median latency, as a fraction (0.5 = +50%)
    observed_rise: float
    explained: float  # 0..1

    def residual(self, request: RequestSample) -> float | None:
        """log latency less what size predicts: a size-free measure of slowness."""
        if request.size is None or request.size <= 0 or request.latency_ms <= 0:
            return None
        return math.log(request.latency_ms) - self.beta * math.log(request.size)


def _logs(requests: Sequence[RequestSample]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in requests:
        if r.size is not None and r.size > 0 and r.latency_ms > 0:
            xs.append(math.log(r.size))
            ys.append(math.log(r.latency_ms))
    return xs, ys


def fit_beta(requests: Sequence[RequestSample]) -> float | None:
    """The slope of log latency on log size; None when the sizes cannot tell."""
    return _slope(*_logs(requests))


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < MIN_FIT_REQUESTS:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs) / len(xs)
    if var < MIN_LOG_SIZE_VARIANCE:
        return None
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / len(xs)
    return min(2.0, max(0.0, cov / var))


def size_model(ctx: SpikeContext) -> SizeModel | None:
    """The model for this spike, or None when requests carry no sizes."""
    base, inside = ctx.request_split()
    bx, by = _logs(base)
    sx, sy = _logs(inside)
    if not bx or not sx:
        return None
    learned = _slope(bx, by)
    beta = ASSUMED_BETA if learned is None else learned
    per_bucket = {i: median([r.size for r in rs if r.size is not None])
                  for i, rs in ctx.request_steps().items()
                  if any(r.size is not None for r in rs)}
    signal = summarize(ctx, per_bucket, floor_rel=0.02)
    observed = median(sy) - median(by)
    predicted = beta * (median(sx) - median(bx))
    explained = clip01(predicted / observed) if observed > MIN_OBSERVED_RISE else 0.0
    return SizeModel(
        beta=beta, assumed=learned is None, base_size=math.exp(median(bx)),
        spike_size=math.exp(median(sx)), size_z=signal.z, size_onset_ns=signal.onset_ns,
        predicted_rise=math.expm1(predicted), observed_rise=math.expm1(observed),
        explained=explained,
    )
