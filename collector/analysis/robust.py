"""Robust statistics the detector and the scorers share: median, MAD, robust z, ramps.

The scale of a baseline is 1.4826 * MAD (the standard deviation for normal data) but
never below a floor: a perfectly flat baseline (MAD 0) would otherwise turn any wiggle
into an infinite z. Each caller names the floor that makes sense for its signal.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (callers check emptiness first)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, as DuckDB's quantile_cont computes it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True, slots=True)
class Baseline:
    """Median and MAD of a signal's baseline buckets, and the floor of its scale."""

    median: float
    mad: float
    n: int
    floor: float = 0.0

    @classmethod
    def of(cls, values: Sequence[float], floor_abs: float = 0.0, floor_rel: float = 0.0
           ) -> Baseline:
        center = median(values)
        spread = median([abs(v - center) for v in values]) if values else math.nan
        floor = max(floor_abs, floor_rel * abs(center)) if values else floor_abs
        return cls(center, spread, len(values), floor)

    @classmethod
    def of_sorted(cls, ordered: Sequence[float], floor_abs: float = 0.0, floor_rel: float = 0.0
                  ) -> Baseline:
        """`of(ordered)` for values already in ascending order, with the same result: the
        median is read off, and the absolute deviations are the values below it, nearest
        first, and those above it: two ascending runs, which sorted() merges in one pass.
        ``c - v`` is exactly ``abs(v - c)`` for v <= c (IEEE subtraction is symmetric)."""
        if not ordered:
            return cls.of(ordered, floor_abs, floor_rel)
        n = len(ordered)
        mid = n // 2
        center = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        below = bisect.bisect_right(ordered, center)
        deviations = sorted([center - v for v in reversed(ordered[:below])]
                            + [v - center for v in ordered[below:]])
        spread = deviations[mid] if n % 2 else (deviations[mid - 1] + deviations[mid]) / 2
        return cls(center, spread, n, max(floor_abs, floor_rel * abs(center)))

    @property
    def scale(self) -> float:
        return max(MAD_TO_SIGMA * self.mad, self.floor, 1e-12)

    def z(self, value: float) -> float:
        """How many robust standard deviations `value` lies above the median."""
        if self.n == 0 or math.isnan(value):
            return 0.0
        return (value - self.median) / self.scale


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below lo, 1 at or above hi, linear between: how scores saturate."""
    if math.isnan(x) or x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    return (x - lo) / (hi - lo)


def clip01(x: float) -> float:
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def ratio(new: float, old: float) -> float:
    """new / old, NaN when old is not positive (no meaningful ratio)."""
    return new / old if old > 0 and not math.isnan(new) else math.nan


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Rank correlation (ties get their average rank); NaN for fewer than 3 pairs."""
    if len(xs) < 3 or len(xs) != len(ys):
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = mean(rx), mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks
