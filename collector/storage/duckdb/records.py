"""Reads the spike analysis needs beyond the series: per-request and per-reading records.

The latency series gives percentiles per step; attributing a spike needs the records
themselves: each request's end, latency, size and version (onset refinement, the
latency-per-size relation, the per-version split), and each GPU reading's throttle
reasons, clocks and slowdown threshold. Every query is parameterised SQL, capped at
MAX_RECORDS rows (the most recent are kept, as the spike is at the end of the window).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.duckdb.where import time_window
from pyrometer.collector.storage.reads import GpuRow, RequestRow, VersionCost

MAX_RECORDS = 500_000


def read_request_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                      end_ns: Nanos, route: str | None = None) -> list[RequestRow]:
    """Requests of `service` that ended in [start, end), optionally of one route, by time."""
    clause, params = time_window(service, start_ns, end_ns, route=route)
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, latency_ns, request_bytes, app_size, version, route, "
        f"status, instance, trace_id FROM requests WHERE {clause} ORDER BY time_ns DESC LIMIT $limit) "
        "ORDER BY time_ns",
        {**params, "limit": MAX_RECORDS},
    ).fetchall()
    return list(map(RequestRow._make, rows))


def read_slowest_requests(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                          end_ns: Nanos, limit: int, route: str | None = None,
                          instance: str | None = None) -> list[RequestRow]:
    """The slowest requests of a window, slowest first (ties: the traced first, then by time)."""
    clause, params = time_window(service, start_ns, end_ns, route=route, instance=instance)
    rows = cur.execute(
        "SELECT time_ns, latency_ns, request_bytes, app_size, version, route, status, instance, "
        f"trace_id FROM requests WHERE {clause} "
        "ORDER BY latency_ns DESC, trace_id IS NULL, time_ns LIMIT $limit",
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
                  end_ns: Nanos) -> list[GpuRow]:
    """GPU readings of `service` in [start, end), by time."""
    clause, params = time_window(service, start_ns, end_ns)
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, instance, gpu_index, clock_event_reasons, sm_clock_mhz, "
        f"sm_clock_max_mhz, temperature_c, slowdown_temperature_c, replayed FROM gpu WHERE {clause} "
        "ORDER BY time_ns DESC LIMIT $limit) ORDER BY time_ns",
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
