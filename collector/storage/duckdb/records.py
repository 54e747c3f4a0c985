"""Reads the spike analysis needs beyond the series: per-request and per-reading records.

The latency series gives percentiles per step; attributing a spike needs the records
themselves: each request's end, latency, size and version (onset refinement, the
latency-per-size relation, the per-version split), and each GPU reading's throttle
reasons, clocks and slowdown threshold. Every query is parameterised SQL, capped at
MAX_RECORDS rows (the most recent are kept, as the spike is at the end of the window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Nanos

MAX_RECORDS = 500_000


@dataclass(frozen=True, slots=True)
class RequestRow:
    time_ns: Nanos  # the request's end
    latency_ns: Nanos
    request_bytes: int
    app_size: int | None
    version: str
    route: str
    status: int


@dataclass(frozen=True, slots=True)
class GpuRow:
    time_ns: Nanos
    instance: str
    gpu_index: int
    clock_event_reasons: int | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    temperature_c: float | None
    slowdown_temperature_c: float | None
    replayed: bool


def _window(service: str, start_ns: Nanos, end_ns: Nanos) -> dict[str, Any]:
    return {"service": service, "start": start_ns, "end": end_ns, "limit": MAX_RECORDS}


def read_request_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                      end_ns: Nanos, route: str | None = None) -> list[RequestRow]:
    """Requests of `service` that ended in [start, end), optionally of one route, by time."""
    params = _window(service, start_ns, end_ns)
    clause = "service = $service AND time_ns >= $start AND time_ns < $end"
    if route is not None:
        clause += " AND route = $route"
        params["route"] = route
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, latency_ns, request_bytes, app_size, version, route, "
        f"status FROM requests WHERE {clause} ORDER BY time_ns DESC LIMIT $limit) "
        "ORDER BY time_ns",
        params,
    ).fetchall()
    return [RequestRow(*row) for row in rows]


def read_gpu_rows(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                  end_ns: Nanos) -> list[GpuRow]:
    """GPU readings of `service` in [start, end), by time."""
    rows = cur.execute(
        "SELECT * FROM (SELECT time_ns, instance, gpu_index, clock_event_reasons, sm_clock_mhz, "
        "sm_clock_max_mhz, temperature_c, slowdown_temperature_c, replayed FROM gpu "
        "WHERE service = $service AND time_ns >= $start AND time_ns < $end "
        "ORDER BY time_ns DESC LIMIT $limit) ORDER BY time_ns",
        _window(service, start_ns, end_ns),
    ).fetchall()
    return [GpuRow(*row) for row in rows]


def read_routes(cur: duckdb.DuckDBPyConnection, service: str, start_ns: Nanos,
                end_ns: Nanos) -> list[tuple[str, int]]:
    """(route, requests) of `service` in [start, end), busiest first."""
    rows = cur.execute(
        "SELECT route, count(*) FROM requests WHERE service = $service AND time_ns >= $start "
        "AND time_ns < $end GROUP BY route ORDER BY count(*) DESC, route",
        {"service": service, "start": start_ns, "end": end_ns},
    ).fetchall()
    return [(route, count) for route, count in rows]
