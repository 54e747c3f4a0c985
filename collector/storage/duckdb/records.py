"""Reads the spike analysis needs beyond the series: per-request and per-reading records.

The latency series gives percentiles per step; attributing a spike needs the records
themselves: each request's end, latency, size and version (onset refinement, the
latency-per-size relation, the per-version split), and each GPU reading's throttle
reasons, clocks and slowdown threshold. Every query is parameterised SQL, capped at
MAX_RECORDS rows (the most recent are kept, as the spike is at the end of the window).

Sampling to a budget: a day's spike of a fleet holds hundreds of thousands of requests
and GPU readings, and the analysis' time grows with them while what it concludes from
medians and shares does not. With a budget, a window holding more rows keeps each one
whose hash of its own values falls in the first `budget / rows` of the hash's range:
the same rows always give the same sample, each row is kept independently of its time
(so every step is thinned alike and rates compare), and the counts a sample cannot give
exactly come from `read_request_tally`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.duckdb.where import step_of, time_window
from pyrometer.collector.storage.reads import (
    GpuRow,
    InstanceLatency,
    RequestRow,
    RequestSample,
    RequestTally,
    VersionCost,
)

MAX_RECORDS = 500_000


# a kept row's hash modulo this falls below the kept share of it
SAMPLE_RANGE = 1 << 20


def _sampled(cur: duckdb.DuckDBPyConnection, table: str, clause: str, params: dict[str, Any],
             budget: int | None, key: str) -> str:
    """`clause`, narrowed to a deterministic sample of about `budget` rows (by a hash of
    the `key` columns) where more match; unchanged where as many or fewer do."""
    if budget is None:
        return clause
    row = cur.execute(f"SELECT count(*) FROM {table} WHERE {clause}", params).fetchone()
    total = int(row[0]) if row else 0
    if total <= budget:
        return clause
    params["keep"] = max(1, budget * SAMPLE_RANGE // total)
    return f"{clause} AND hash({key}) % {SAMPLE_RANGE} < $keep"


def read_request_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                      end_ns: Nanos, route: str | None = None, instance: str | None = None,
                      budget: int | None = None) -> list[RequestRow]:
    """Requests of `service` that ended in [start, end), optionally of one route or
    instance, by time; with a budget, sampled to about that many (see above)."""
    rows = _request_select(cur, "time_ns, latency_ns, request_bytes, app_size, version, route, "
                           "status, instance, trace_id", service, start_ns, end_ns, route,
                           instance, budget)
    return list(map(RequestRow._make, rows))


# what RequestSample.size holds, by the unit the analysis judges sizes in
_SIZE_COLUMNS = {"app size": "CAST(app_size AS DOUBLE)", "bytes": "CAST(request_bytes AS DOUBLE)"}


def read_request_samples(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                         end_ns: Nanos, unit: str, route: str | None = None,
                         instance: str | None = None, budget: int | None = None
                         ) -> list[RequestSample]:
    """`read_request_rows`'s rows (the same filters and sample, in the same order) as
    RequestSamples, their size in `unit` ("app size" or "bytes"). The latency is divided
    in SQL as Python would: a latency below 2**53 ns is exact as a DOUBLE, and the
    quotient is correctly rounded in both."""
    if unit not in _SIZE_COLUMNS:
        raise ValueError(f"unit {unit!r}: expected one of {sorted(_SIZE_COLUMNS)}")
    rows = _request_select(cur, f"time_ns, latency_ns / 1000000, {_SIZE_COLUMNS[unit]}, version",
                           service, start_ns, end_ns, route, instance, budget)
    return list(map(RequestSample._make, rows))


# a request's place in the order reads return them: by end time, and where two ended in
# the same millisecond (schema.RESOLUTION) by what else they hold, so that every read
# returns, and cuts at its limit, the same rows in the same order
_REQUEST_ORDER = ("time_ns", "latency_ns", "instance", "route", "request_bytes", "app_size",
                  "status", "version", "trace_id")


def _request_select(cur: duckdb.DuckDBPyConnection, columns: str, service: str, start_ns: Nanos,
                    end_ns: Nanos, route: str | None, instance: str | None, budget: int | None
                    ) -> list[tuple[Any, ...]]:
    clause, params = time_window(service, start_ns, end_ns, route=route, instance=instance)
    clause = _sampled(cur, "requests", clause, params, budget,
                      "time_ns, latency_ns, instance, request_bytes")
    keys = [f"_k{n}" for n in range(len(_REQUEST_ORDER))]
    hidden = ", ".join(f"{c} AS {k}" for c, k in zip(_REQUEST_ORDER, keys, strict=True))
    return cur.execute(
        f"SELECT * EXCLUDE ({', '.join(keys)}) FROM (SELECT {columns}, {hidden} FROM requests "
        f"WHERE {clause} ORDER BY {' DESC, '.join(keys)} DESC LIMIT $limit) "
        f"ORDER BY {', '.join(keys)}",
        {**params, "limit": MAX_RECORDS},
    ).fetchall()


def read_slowest_requests(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                          end_ns: Nanos, limit: int, route: str | None = None,
                          instance: str | None = None) -> list[RequestRow]:
    """The slowest requests of a window, slowest first (ties: the traced first, then by
    time, then by the rest of the row, so that the limit cuts alike every time)."""
    clause, params = time_window(service, start_ns, end_ns, route=route, instance=instance)
    rows = cur.execute(
        "SELECT time_ns, latency_ns, request_bytes, app_size, version, route, status, instance, "
        f"trace_id FROM requests WHERE {clause} "
        "ORDER BY latency_ns DESC, trace_id IS NULL, time_ns, instance, route, request_bytes, "
        "app_size, status, version, trace_id LIMIT $limit",
        {**params, "limit": limit},
    ).fetchall()
    return list(map(RequestRow._make, rows))


# a longer gap between two readings of one GPU is the agent being away, not GPU time
MAX_READING_GAP_NS = 10_000_000_000


def read_version_costs(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                       end_ns: Nanos) -> list[VersionCost]:
    """Per version: requests and latency, and GPU busy time (utilization x the time to the
    previous reading of the same GPU from the same agent, gaps capped), by version."""
    clause, params = time_window(service, start_ns, end_ns)
    gpu = cur.execute(
        "WITH g AS (SELECT time_ns, version, instance, gpu_index, replayed, "
        "utilization_gpu_pct AS util, "
        "time_ns - lag(time_ns) OVER (PARTITION BY agent_id, gpu_index ORDER BY time_ns) AS gap "
        f"FROM gpu WHERE {clause}) "
        "SELECT version, sum(util / 100.0 * least(gap, $cap)) / 1e9, sum(least(gap, $cap)) / 1e9, "
        "count(DISTINCT instance || '/' || gpu_index), bool_or(replayed), min(first) "
        "FROM (SELECT *, min(time_ns) OVER (PARTITION BY version) AS first FROM g) "
        "WHERE gap IS NOT NULL AND util IS NOT NULL GROUP BY version",
        {**params, "cap": MAX_READING_GAP_NS}).fetchall()
    reqs = cur.execute(
        "SELECT version, count(*), quantile_cont(latency_ns, 0.5) / 1e6, "
        "quantile_cont(latency_ns, 0.99) / 1e6, min(time_ns) "
        f"FROM requests WHERE {clause} GROUP BY version",
        params).fetchall()
    by_gpu = {row[0]: row[1:] for row in gpu}
    by_req = {row[0]: row[1:] for row in reqs}
    out = []
    for version in set(by_gpu) | set(by_req):
        busy, observed, gpus, replayed, gpu_first = by_gpu.get(version, (0.0, 0.0, 0, False, None))
        count, p50, p99, req_first = by_req.get(version, (0, None, None, None))
        first = min(t for t in (gpu_first, req_first) if t is not None)
        out.append(VersionCost(version, int(count), p50, p99, float(busy or 0.0),
                               float(observed or 0.0), int(gpus), bool(replayed), int(first)))
    return sorted(out, key=lambda c: (c.first_ns, c.version))  # in the order they served


def read_request_counts(cur: duckdb.DuckDBPyConnection, service: str,
                        windows: Sequence[tuple[Nanos, Nanos]], threshold_ns: Nanos,
                        route: str | None = None) -> list[tuple[int, int]]:
    """(requests, good requests) per window, in one scan over the windows' span."""
    if not windows:
        return []
    clause, params = time_window(service, min(w[0] for w in windows),
                                 max(w[1] for w in windows), route=route)
    good = "status < 500 AND latency_ns <= $threshold"
    columns = []
    for n, (start, end) in enumerate(windows):
        params[f"s{n}"], params[f"e{n}"] = start, end
        inside = f"time_ns >= $s{n} AND time_ns < $e{n}"
        columns.append(f"count(*) FILTER (WHERE {inside}), "
                       f"count(*) FILTER (WHERE {inside} AND {good})")
    row = cur.execute(f"SELECT {', '.join(columns)} FROM requests WHERE {clause}",
                      {**params, "threshold": threshold_ns}).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has a row
    return [(int(row[2 * n]), int(row[2 * n + 1])) for n in range(len(windows))]


def read_gpu_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                  end_ns: Nanos, instance: str | None = None, budget: int | None = None
                  ) -> list[GpuRow]:
    """GPU readings of `service` in [start, end), optionally of one instance, by time; with
    a budget, sampled to about that many (see above)."""
    clause, params = time_window(service, start_ns, end_ns, instance=instance)
    clause = _sampled(cur, "gpu", clause, params, budget, "time_ns, instance, gpu_index")
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, instance, gpu_index, clock_event_reasons, sm_clock_mhz, "
        f"sm_clock_max_mhz, temperature_c, slowdown_temperature_c, replayed FROM gpu WHERE {clause} "
        "ORDER BY ALL DESC LIMIT $limit) ORDER BY ALL",
        {**params, "limit": MAX_RECORDS},
    ).fetchall()
    return list(map(GpuRow._make, rows))


def read_routes(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                end_ns: Nanos) -> list[tuple[str, int]]:
    """(route, requests) of `service` in [start, end), busiest first."""
    clause, params = time_window(service, start_ns, end_ns)
    rows = cur.execute(
        f"SELECT route, count(*) FROM requests WHERE {clause} GROUP BY route "
        "ORDER BY count(*) DESC, route",
        params,
    ).fetchall()
    return [(route, count) for route, count in rows]


def read_request_tally(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                       end_ns: Nanos, *, spike: tuple[Nanos, Nanos], baseline_start_ns: Nanos,
                       step_ns: Nanos, slow_ns: Nanos, route: str | None = None,
                       instance: str | None = None,
                       excluded: Sequence[tuple[Nanos, Nanos]] = ()) -> RequestTally:
    """See RequestTally: three aggregates over the requests of one spike's window."""
    clause, params = time_window(service, start_ns, end_ns, route=route, instance=instance)
    inside = {**params, "s0": spike[0], "s1": spike[1]}
    # the baseline leaves out the earlier spikes, as the detector's does
    outside = "".join(f" AND NOT (time_ns >= $x{k}_0 AND time_ns < $x{k}_1)"
                      for k in range(len(excluded)))
    gaps = {f"x{k}_{side}": bound for k, pair in enumerate(excluded)
            for side, bound in enumerate(pair)}
    row = cur.execute(
        "SELECT count(*), count(app_size), "
        f"count(*) FILTER (WHERE time_ns >= $b0 AND time_ns < $s0{outside}), "
        "count(*) FILTER (WHERE time_ns >= $s0 AND time_ns < $s1), "
        "min(time_ns) FILTER (WHERE time_ns >= $s0 AND time_ns < least($first_end, $s1) "
        f"AND latency_ns > $slow) FROM requests WHERE {clause}",
        {**inside, **gaps, "b0": baseline_start_ns, "first_end": spike[0] + step_ns,
         "slow": slow_ns},
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY always has a row
    steps = cur.execute(
        f"SELECT 'e', {step_of('time_ns')} AS i, count(*) FROM requests WHERE {clause} "
        "GROUP BY i UNION ALL "
        f"SELECT 'b', {step_of('time_ns - latency_ns')} AS i, count(*) FROM requests "
        f"WHERE {clause} GROUP BY i",
        {**params, "s0": spike[0], "step": step_ns}).fetchall()
    versions = cur.execute(
        f"SELECT version, count(*) FROM requests WHERE {clause} "
        "AND time_ns >= $s0 AND time_ns < $s1 GROUP BY version", inside).fetchall()
    return RequestTally(
        total=int(row[0]), baseline=int(row[2]), inside=int(row[3]),
        ended={int(i): int(n) for side, i, n in steps if side == "e"},
        began={int(i): int(n) for side, i, n in steps if side == "b"},
        versions={str(v): int(n) for v, n in versions},
        first_slow_ns=None if row[4] is None else int(row[4]), sized=int(row[1]))


def read_instance_latency(cur: duckdb.DuckDBPyConnection, service: str,
                          baseline: tuple[Nanos, Nanos], spike: tuple[Nanos, Nanos],
                          quantile: float, route: str | None = None) -> list[InstanceLatency]:
    """Per instance: the `quantile` (quantile_cont, linear) of its latency and its count,
    in the baseline and in the spike (by the requests' ends), by instance."""
    lo, hi = min(baseline[0], spike[0]), max(baseline[1], spike[1])
    clause, params = time_window(service, lo, hi, route=route)
    params.update(b0=baseline[0], b1=baseline[1], s0=spike[0], s1=spike[1], q=quantile)
    base = "time_ns >= $b0 AND time_ns < $b1"
    inside = "time_ns >= $s0 AND time_ns < $s1"
    rows = cur.execute(
        f"SELECT instance, quantile_cont(latency_ns, $q) FILTER (WHERE {base}), "
        f"quantile_cont(latency_ns, $q) FILTER (WHERE {inside}), "
        f"count(*) FILTER (WHERE {base}), count(*) FILTER (WHERE {inside}) "
        f"FROM requests WHERE {clause} GROUP BY instance ORDER BY instance",
        params).fetchall()
    return [InstanceLatency(name, math.nan if b is None else b / 1e6,
                            math.nan if s is None else s / 1e6, int(nb), int(ns))
            for name, b, s, nb, ns in rows]
