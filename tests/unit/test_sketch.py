"""The latency sketch's stated error bound, against the exact computation."""

from __future__ import annotations

import math

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrometer.collector.analysis.robust import quantile as exact_quantile
from pyrometer.collector.storage.sketch import (
    ALPHA,
    ZERO_BIN,
    bin_of,
    bin_sql,
    quantile,
    sketch_start,
    value_of,
    value_sql,
)

# floating point in log and pow: the bound holds to a few ulps beyond ALPHA
BOUND = ALPHA * (1 + 1e-9)
latencies = st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=400)
quantiles = st.floats(min_value=0.0, max_value=1.0)


def sketch(values: list[int]) -> list[tuple[int, int]]:
    return [(bin_of(v), 1) for v in values]


@given(st.integers(min_value=1, max_value=10**13))
def test_every_latency_is_within_alpha_of_its_bins_value(latency_ns: int) -> None:
    assert abs(value_of(bin_of(latency_ns)) - latency_ns) <= BOUND * latency_ns


@settings(max_examples=300)
@given(latencies, quantiles)
def test_a_quantile_is_within_alpha_of_quantile_cont(values: list[int], q: float) -> None:
    exact = exact_quantile([float(v) for v in values], q)
    assert abs(quantile(sketch(values), q) - exact) <= BOUND * exact


@given(latencies, latencies, quantiles)
def test_merging_is_adding_counts_in_any_order(a: list[int], b: list[int], q: float) -> None:
    whole = quantile(sketch(a + b), q)
    assert quantile(sketch(b) + sketch(a), q) == whole
    # the same sketch as per-bin counts, as a rollup row holds it
    counts: dict[int, int] = {}
    for bin_, n in sketch(a + b):
        counts[bin_] = counts.get(bin_, 0) + n
    assert quantile(counts.items(), q) == whole


def test_zero_and_negative_latencies_are_zero() -> None:
    assert bin_of(0) == bin_of(-5) == ZERO_BIN
    assert value_of(ZERO_BIN) == 0.0
    assert quantile([(ZERO_BIN, 3), (bin_of(10**6), 1)], 0.5) == 0.0


def test_an_empty_sketch_has_no_quantile() -> None:
    assert math.isnan(quantile([], 0.99))
    assert math.isnan(quantile([(bin_of(5), 0)], 0.5))


def test_the_sql_expressions_are_the_python_ones() -> None:
    values = [0, -3, 1, 2, 999, 10**6, 12_345_678, 10**9 + 7, 3 * 10**11]
    values += [round(1.0202 ** k) for k in range(0, 1300, 37)]
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT v, {bin_sql('v')} AS b, {value_sql(bin_sql('v'))} "
            "FROM unnest($values::BIGINT[]) AS t(v)", {"values": values}).fetchall()
    for v, b, value in rows:
        assert b == bin_of(v), v
        assert math.isclose(value, value_of(b), rel_tol=1e-12), v


def test_duckdb_quantile_cont_over_a_day_of_requests_is_matched() -> None:
    # heavy-tailed latencies, as a service has them: the bound is relative at every size
    with duckdb.connect() as con:
        exact, rows = con.execute(
            "SELECT quantile_cont(v, [0.5, 0.95, 0.99]), "
            f"histogram({bin_sql('v')}) FROM (SELECT CAST(exp(random() * 12 + 11) AS BIGINT) "
            "AS v FROM range(20000))").fetchone() or (None, None)
    for q, want in zip((0.5, 0.95, 0.99), exact, strict=True):
        assert abs(quantile(rows.items(), q) - want) <= BOUND * want


def test_a_long_window_is_moved_onto_the_sketches_grid_and_a_short_one_is_not() -> None:
    s, hour = 10**9, 3600 * 10**9
    start = 1_750_000_003 * s + 123_456_789  # now-2h, to the nanosecond
    assert sketch_start(start, start + 2 * hour, 10 * s, 30 * 60 * s) == start - 3_123_456_789
    # too short, a step or a baseline off the grid: the window stays as asked
    assert sketch_start(start, start + 10 * 60 * s, 10 * s, 5 * 60 * s) == start
    assert sketch_start(start, start + 2 * hour, 2 * s, 60 * s) == start
    assert sketch_start(start, start + 2 * hour, 10 * s, 95 * s) == start
