"""Latency sketches: log-bucketed histograms that merge by adding counts (DDSketch's
mapping), so percentiles over a day never rescan every request.

A latency x > 0 (nanoseconds) falls in bin i = ceil(log_gamma(x)), the interval
(gamma^(i-1), gamma^i], with gamma = (1 + ALPHA) / (1 - ALPHA). Every value of bin i is
within ALPHA, relatively, of the bin's representative 2 gamma^i / (gamma + 1). A bin
and a count per row is all a rollup stores; merging buckets, routes or instances is a
sum of counts by bin, exact, in any order.

The stated error: a quantile read from a sketch is within ALPHA (1%) of the exact one,
relatively. For the order statistic at any rank this follows from the bin bound. For
DuckDB's quantile_cont, which interpolates between the order statistics at ranks
floor(q (n - 1)) and the next, the sketch interpolates between its representatives of
the same two ranks with the same weight: a convex combination of two values each within
ALPHA of its exact counterpart is within ALPHA of theirs. (DDSketch: Masson, Rim and
Lee, VLDB 2019.) Why not the `ddsketch` package: the rollup is built and merged in SQL,
by DuckDB, from this mapping alone; a Python sketch object would mean reading every
request into Python, the cost the rollup exists to avoid.

Zero and negative latencies (a clock step) go to bin ZERO_BIN, whose value is 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
# below every positive bin: ceil(log_gamma(1 ns)) is 0, and no latency is under 1 ns
ZERO_BIN = -1
# the sketches' bucket: a series whose start and step are whole multiples of it can be
# summed from them
BUCKET_NS = 10 * NANOS_PER_SECOND
# the shortest series (window and baseline) read from the sketches: an hour of a busy
# service is hundreds of thousands of requests, where sorting them all is what costs;
# shorter ones read every request, exactly
SKETCH_FROM_NS = 3600 * NANOS_PER_SECOND


def sketch_start(start_ns: Nanos, end_ns: Nanos, step_ns: Nanos, baseline_ns: Nanos) -> Nanos:
    """The start a spike window gets so that its series (the window and the baseline
    before it) lies on the sketches' grid: floored to a whole BUCKET_NS when the series
    is long enough for the sketches and its step and baseline are whole buckets, else
    `start_ns` itself. A window typed as `now-24h` starts at any nanosecond; moving it up
    to 10 s earlier is what lets a day's percentiles come from the sketches."""
    if (end_ns - start_ns + baseline_ns < SKETCH_FROM_NS
            or step_ns % BUCKET_NS or baseline_ns % BUCKET_NS):
        return start_ns
    return start_ns - start_ns % BUCKET_NS


def bin_of(latency_ns: float) -> int:
    """The bin a latency falls in."""
    if latency_ns <= 0:
        return ZERO_BIN
    return math.ceil(math.log(latency_ns) / LN_GAMMA)


def bin_sql(column: str) -> str:
    """`bin_of` as a DuckDB expression over an integer column of nanoseconds."""
    return (f"CASE WHEN {column} <= 0 THEN {ZERO_BIN} "
            f"ELSE CAST(ceil(ln({column}) / {LN_GAMMA!r}) AS INTEGER) END")


def value_of(bin_: int) -> float:
    """The bin's representative, within ALPHA of every latency in the bin."""
    if bin_ == ZERO_BIN:
        return 0.0
    return 2 * GAMMA ** bin_ / (GAMMA + 1)


def value_sql(column: str) -> str:
    """`value_of` as a DuckDB expression over a bin column."""
    return (f"CASE WHEN {column} = {ZERO_BIN} THEN 0.0 "
            f"ELSE 2 * pow({GAMMA!r}, {column}) / {GAMMA + 1!r} END")


def quantile(counts: Iterable[tuple[int, int]], q: float) -> float:
    """quantile_cont's q-quantile (0 <= q <= 1) of a sketch given as (bin, count) pairs,
    within ALPHA of the exact one; NaN for an empty sketch. Pairs may repeat a bin and
    come in any order (a merge is their concatenation)."""
    merged: dict[int, int] = {}
    for bin_, n in counts:
        merged[bin_] = merged.get(bin_, 0) + n
    ordered = sorted((b, n) for b, n in merged.items() if n > 0)
    total = sum(n for _, n in ordered)
    if not total:
        return math.nan
    pos = q * (total - 1)
    low = math.floor(pos)
    high = min(low + 1, total - 1)
    low_value, high_value = _values_at(ordered, (low, high))
    return low_value + (high_value - low_value) * (pos - low)


def _values_at(ordered: Sequence[tuple[int, int]], ranks: tuple[int, int]) -> tuple[float, float]:
    """The representatives of the bins holding two 0-based ranks (the first <= the second)."""
    found: list[float] = []
    seen = 0
    wanted = list(ranks)
    for bin_, n in ordered:
        seen += n
        while wanted and wanted[0] < seen:
            found.append(value_of(bin_))
            wanted.pop(0)
        if not wanted:
            break
    return found[0], found[1]
