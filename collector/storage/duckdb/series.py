"""Time series by step over the telemetry tables: latency, GPU, process, host; events.

A step bucket is [from + k*step, from + (k+1)*step), clipped to `to` for the last one,
and holds the records whose own time (a request's end) lies in it. Only buckets with
data are returned: a missing bucket means "nothing recorded", which a chart or the
spike detector must not read as zero. Every query is parameterised SQL; percentiles
are DuckDB's quantile_cont (linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.ingest.validate import CLOCK_EVENT_REASONS

MS = 1_000_000  # nanoseconds per millisecond


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """Which records a series covers and how they are bucketed; None filters match all."""

    service: str
    start_ns: Nanos
    end_ns: Nanos
    step_ns: Nanos
    instance: str | None = None
    version: str | None = None
    route: str | None = None  # requests only

    def where(self, with_route: bool = False) -> tuple[str, dict[str, Any]]:
        """A WHERE clause (without the keyword) over time_ns and the filters, and its params."""
        clauses = ["service = $service", "time_ns >= $start", "time_ns < $end"]
        params: dict[str, Any] = {
            "service": self.service, "start": self.start_ns, "end": self.end_ns,
            "step": self.step_ns,
        }
        names = ("instance", "version", "route") if with_route else ("instance", "version")
        for column in names:
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ${column}")
                params[column] = value
        return " AND ".join(clauses), params

    def bucket_end(self, start_ns: Nanos) -> Nanos:
        return min(start_ns + self.step_ns, self.end_ns)


_BUCKET = "$start + (time_ns - $start) // $step * $step"


@dataclass(frozen=True, slots=True)
class LatencyPoint:
    """Requests that ended in one step; latencies in ms, sizes in bytes."""

    start_ns: Nanos
    end_ns: Nanos
    count: int
    errors: int  # status >= 500
    rate_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    request_bytes_p50: float
    request_bytes_p95: float
    response_bytes_p50: float
    response_bytes_p95: float
    ttfb_p50_ms: float | None  # None when no request in the step was streamed
    ttfb_p95_ms: float | None


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / MS


def read_latency(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[LatencyPoint]:
    """Per step: count, rate, latency percentiles, size percentiles, ttfb percentiles."""
    clause, params = query.where(with_route=True)
    rows = cur.execute(
        f"SELECT {_BUCKET} AS bucket, count(*), count(*) FILTER (WHERE status >= 500), "
        "quantile_cont(latency_ns, [0.5, 0.95, 0.99]), max(latency_ns), "
        "quantile_cont(request_bytes, [0.5, 0.95]), quantile_cont(response_bytes, [0.5, 0.95]), "
        "quantile_cont(ttfb_ns, [0.5, 0.95]) "
        f"FROM requests WHERE {clause} GROUP BY bucket ORDER BY bucket",
        params,
    ).fetchall()
    points = []
    for start, count, errors, lat, lat_max, req, resp, ttfb in rows:
        end = query.bucket_end(start)
        ttfb = ttfb or (None, None)
        points.append(LatencyPoint(
            start_ns=start, end_ns=end, count=count, errors=errors,
            rate_per_s=count * NANOS_PER_SECOND / (end - start),
            latency_p50_ms=lat[0] / MS, latency_p95_ms=lat[1] / MS, latency_p99_ms=lat[2] / MS,
            latency_max_ms=lat_max / MS, request_bytes_p50=req[0], request_bytes_p95=req[1],
            response_bytes_p50=resp[0], response_bytes_p95=resp[1],
            ttfb_p50_ms=_ms(ttfb[0]), ttfb_p95_ms=_ms(ttfb[1]),
        ))
    return points


@dataclass(frozen=True, slots=True)
class GpuPoint:
    """One GPU (instance, index) over one step; averages of the readings that had a value."""

    instance: str
    gpu_index: int
    uuid: str
    name: str
    start_ns: Nanos
    readings: int
    temperature_c: float | None
    sm_clock_mhz: float | None
    sm_clock_max_mhz: int | None  # the highest reported in the step
    power_w: float | None
    power_limit_w: float | None
    memory_used_bytes: float | None
    memory_total_bytes: int | None
    utilization_gpu_pct: float | None
    utilization_memory_pct: float | None
    # reason -> fraction of the step's readings (with a bitmask) that had its bit set;
    # empty when no reading in the step reported reasons
    throttle: tuple[tuple[str, float], ...]
    replayed: bool  # some reading came from a recording, not from a GPU


def _reason_columns() -> str:
    # the bits are this module's constants, not user input: inlined, not parameters
    return ", ".join(
        f"sum(((clock_event_reasons & {bit}) <> 0)::INTEGER)" for bit in CLOCK_EVENT_REASONS.values())


def read_gpu(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[GpuPoint]:
    """Per GPU per step, ordered by instance, GPU index and time."""
    clause, params = query.where()
    rows = cur.execute(
        f"SELECT instance, gpu_index, any_value(uuid), any_value(name), {_BUCKET} AS bucket, "
        "count(*), avg(temperature_c), avg(sm_clock_mhz), max(sm_clock_max_mhz), "
        "avg(power_mw) / 1000, avg(power_limit_mw) / 1000, avg(memory_used_bytes), "
        "max(memory_total_bytes), avg(utilization_gpu_pct), avg(utilization_memory_pct), "
        f"bool_or(replayed), count(clock_event_reasons), {_reason_columns()} "
        f"FROM gpu WHERE {clause} GROUP BY instance, gpu_index, bucket "
        "ORDER BY instance, gpu_index, bucket",
        params,
    ).fetchall()
    return [_gpu_point(row) for row in rows]


def _gpu_point(row: tuple[Any, ...]) -> GpuPoint:
    (instance, index, uuid, name, start, readings, temperature, sm, sm_max, power, limit,
     used, total, util, util_memory, replayed, with_reasons, *reason_counts) = row
    throttle = tuple(
        (reason, n / with_reasons) for reason, n in zip(CLOCK_EVENT_REASONS, reason_counts, strict=True)
    ) if with_reasons else ()
    return GpuPoint(
        instance=instance, gpu_index=index, uuid=uuid, name=name, start_ns=start,
        readings=readings, temperature_c=temperature, sm_clock_mhz=sm, sm_clock_max_mhz=sm_max,
        power_w=power, power_limit_w=limit, memory_used_bytes=used, memory_total_bytes=total,
        utilization_gpu_pct=util, utilization_memory_pct=util_memory, throttle=throttle,
        replayed=bool(replayed),
    )


@dataclass(frozen=True, slots=True)
class ProcessPoint:
    """One process (instance, pid) over one step."""

    instance: str
    pid: int
    start_ns: Nanos
    readings: int
    cpu_user: float  # cores, average over the readings
    cpu_system: float
    rss_bytes_max: int
    threads_max: int
    ctx_switches_voluntary: int  # summed over the step
    ctx_switches_involuntary: int


def read_process(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[ProcessPoint]:
    """Per process per step, ordered by instance, pid and time."""
    clause, params = query.where()
    rows = cur.execute(
        f"SELECT instance, pid, {_BUCKET} AS bucket, count(*), avg(cpu_user), avg(cpu_system), "
        "max(rss_bytes), max(threads), sum(ctx_switches_voluntary)::BIGINT, "
        "sum(ctx_switches_involuntary)::BIGINT "
        f"FROM process WHERE {clause} GROUP BY instance, pid, bucket "
        "ORDER BY instance, pid, bucket",
        params,
    ).fetchall()
    return [ProcessPoint(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class HostPoint:
    """One instance's host over one step; PSI None where the host has no /proc/pressure."""

    instance: str
    host: str
    start_ns: Nanos
    readings: int
    cpu_pct: float
    cpu_count: int
    memory_available_bytes_min: int  # the tightest moment of the step
    memory_total_bytes: int
    load1: float
    psi_cpu_some: float | None
    psi_memory_some: float | None
    psi_memory_full: float | None
    psi_io_some: float | None
    psi_io_full: float | None


def read_host(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[HostPoint]:
    """Per instance per step (each agent reports the host it runs on), by instance and time."""
    clause, params = query.where()
    rows = cur.execute(
        f"SELECT instance, any_value(host), {_BUCKET} AS bucket, count(*), avg(cpu_pct), "
        "max(cpu_count), min(memory_available_bytes), max(memory_total_bytes), avg(load1), "
        "avg(psi_cpu_some), avg(psi_memory_some), avg(psi_memory_full), avg(psi_io_some), "
        f"avg(psi_io_full) FROM host WHERE {clause} GROUP BY instance, bucket "
        "ORDER BY instance, bucket",
        params,
    ).fetchall()
    return [HostPoint(*row) for row in rows]
