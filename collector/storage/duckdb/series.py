"""Time series by step over the telemetry tables: latency, GPU, process, host, engine; events.

A step bucket is [from + k*step, from + (k+1)*step), clipped to `to` for the last one,
and holds the records whose own time (a request's end) lies in it. Only buckets with
data are returned: a missing bucket means "nothing recorded", which a chart or the
spike detector must not read as zero. Every query is parameterised SQL; percentiles
are DuckDB's quantile_cont (linear interpolation).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import duckdb

from pyrometer.agent.shared.clock_events import CLOCK_EVENT_REASONS
from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.storage.duckdb.rollups import LATENCY, RAW, watermarks
from pyrometer.collector.storage.duckdb.steps_cache import BUCKET, KeptSteps, SketchedSteps
from pyrometer.collector.storage.duckdb.where import series_where
from pyrometer.collector.storage.reads import (
    QUANTILES,
    EngineBucket,
    GpuPoint,
    HostPoint,
    LatencyPoint,
    ProcessPoint,
    QuantilePoint,
    RouteSeries,
    SeriesQuery,
)
from pyrometer.collector.storage.sketch import SKETCH_FROM_NS, bin_sql, value_of

MS = 1_000_000  # nanoseconds per millisecond


_BUCKET = "$start + (time_ns - $start) // $step * $step"


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / MS


def read_latency(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[LatencyPoint]:
    """Per step: count, rate, latency percentiles, size percentiles, ttfb percentiles."""
    clause, params = series_where(query, with_route=True)
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


def read_latency_quantile(cur: duckdb.DuckDBPyConnection, query: SeriesQuery, quantile: str,
                          sketch_from_ns: Nanos = SKETCH_FROM_NS,
                          kept: SketchedSteps | None = None
                          ) -> tuple[list[QuantilePoint], list[RouteSeries], str]:
    """See `Store.latency_quantile`: one scan, grouped by step and by route and step.

    What `read_latency` computes for that one quantile (the same quantile_cont, the same
    max), without the six other holistic aggregates over every request, and for every
    route at once instead of one scan per route: the spike detector reads nothing else.

    A series of at least `sketch_from_ns` on the sketches' 10 s grid, with no instance or
    version filter, is read from the latency sketches (rollups.LATENCY) up to their
    watermark and from the requests after it, binned alike: the same counts, each
    quantile within the sketch's 1% (sketch.py). Shorter ones read every request, exactly:
    they are few, and a spike's own analysis reads them anyway. (The spikes API puts a
    long window on the grid: sketch.sketch_start.) With `kept`, the steps that an earlier
    read of the series found wholly below the watermark are taken from there
    (steps_cache.py).
    """
    split = _sketched_until(cur, query, sketch_from_ns)
    if split is not None:
        rows = _sketch_rows(cur, query, quantile, split) if kept is None else \
            _sketch_rows_kept(cur, query, quantile, split, kept)
        resolution = LATENCY.name
    else:
        clause, params = series_where(replace(query, route=None))
        value = "max(latency_ns)" if quantile == "max" else \
            f"quantile_cont(latency_ns, {QUANTILES[quantile]})"  # a constant of reads.py
        rows = cur.execute(
            f"SELECT GROUPING(route), route, {_BUCKET} AS bucket, count(*), {value} "
            f"FROM requests WHERE {clause} GROUP BY GROUPING SETS ((bucket), (route, bucket)) "
            "ORDER BY bucket",
            params,
        ).fetchall()
        resolution = RAW
    whole: list[QuantilePoint] = []
    routes: dict[str | None, list[QuantilePoint]] = {}
    for aggregated, route, start, count, latency in rows:
        point = QuantilePoint(start, query.bucket_end(start), count, latency / MS)
        (whole if aggregated else routes.setdefault(route, [])).append(point)
    series = [RouteSeries(route, sum(p.count for p in points), tuple(points))
              for route, points in routes.items()]
    # busiest first, then by name, the unnamed last: as read_routes orders them
    series.sort(key=lambda r: (-r.requests, r.route is None, r.route or ""))
    return whole, series, resolution


def _sketched_until(cur: duckdb.DuckDBPyConnection, query: SeriesQuery, sketch_from_ns: Nanos
                    ) -> Nanos | None:
    """Where the sketches stop serving the series (their watermark, or the series' last
    whole 10 s), or None when the series reads every request instead."""
    length = LATENCY.length_ns
    if (query.instance is not None or query.version is not None
            or query.end_ns - query.start_ns < sketch_from_ns
            or query.start_ns % length or query.step_ns % length):
        return None
    done = watermarks(cur).get(LATENCY.name)
    if done is None:
        return None
    split = min(done, query.end_ns // length * length)
    return split if split > query.start_ns else None


def _sketch_rows_kept(cur: duckdb.DuckDBPyConnection, query: SeriesQuery, quantile: str,
                      split: Nanos, kept: SketchedSteps) -> list[tuple[Any, ...]]:
    """`_sketch_rows`, its whole steps below `split` taken from `kept` where an earlier
    read left them, and what this read finds there left for the next one."""
    step, start = query.step_ns, query.start_ns
    key = (query.service, quantile, step, start % step)
    generation = kept.generation  # before reading: a change while reading is seen
    whole_until = start + (split - start) // step * step  # the end of the last whole step
    found = kept.get(key)
    if found is not None and not found.first_ns <= start < found.until_ns:
        found = None  # it starts later, or ends before this series begins
    fresh_from = start if found is None else min(found.until_ns, whole_until)
    reused = [] if found is None else [r for r in found.rows if start <= r[BUCKET] < fresh_from]
    # the same grid from a later start: the steps read are the series' own
    fresh = _sketch_rows(cur, replace(query, start_ns=fresh_from), quantile, split) \
        if fresh_from < query.end_ns else []
    if whole_until > (start if found is None else found.until_ns):
        # more whole steps than were kept: keep this series' own
        rows = (*reused, *(r for r in fresh if r[BUCKET] < whole_until))
        kept.keep(key, KeptSteps(generation, start, whole_until, rows))
    return reused + fresh


# fine bins per coarse bin in _sketch_rows' first pass (16 bins of 2%: about 37%)
COARSE_BINS = 16
# SQL: the running sums of a short list of counts, as a list (k^2 additions for k
# elements: lists here hold a step's few coarse bins, or a coarse bin's 16 fine ones)
_RUNNING = "list_transform(range(1, len({ns}) + 1), lambda i: list_sum({ns}[1:i]))"


def _sketch_rows(cur: duckdb.DuckDBPyConnection, query: SeriesQuery, quantile: str,
                 split: Nanos) -> list[tuple[Any, ...]]:
    """Rows as the exact read gives them (grouping flag, route, bucket, count, value in
    ns), from the sketches before `split` and the requests after it binned alike.

    Each step's bins are merged and ranked in SQL; the q-quantile interpolates, as
    quantile_cont does, between the representatives of the bins that hold ranks
    floor(q (n - 1)) and the next (sketch.py states why that stays within 1%): the
    same bins `sketch.quantile` finds, which a test holds it to.

    Finding a rank's bin takes a running count over the step's bins in order. A day of
    a busy service's steps holds some 700,000 (step, route, bin) rows, so it runs in two
    passes: over coarse bins of COARSE_BINS bins, which says which coarse bin holds each
    rank and how many fall below it, then over the fine bins of those coarse bins only.
    Both passes read the stored rows (a scan of them costs a few ms), not a merged copy
    of them, and rank each step's few coarse bins, and each picked coarse bin's fine
    ones, as a short list: a window partitioned by step, the first way this was written,
    took most of the read in DuckDB's window operator (tens of thousands of tiny
    partitions). The bench's day at 30 s steps, this read alone: 366-375 ms with one
    pass, 276-298 with two passes through windows, about 115 ms with these lists."""
    q = 1.0 if quantile == "max" else QUANTILES[quantile]  # "max": the top bin
    grid = "$start + ({t} - $start) // $step * $step"
    # the two ranks of each step's series: floor(q (n - 1)) and the next
    low, high = "floor($q * (total - 1))", "least(floor($q * (total - 1)) + 1, total - 1)"
    fine = """
            SELECT p.g, p.route, p.bucket, p.cb, p.ra, p.rb, b.bin, sum(b.n) AS n
            FROM bins b JOIN picks p ON {on} AND b.bucket = p.bucket
                                        AND b.bin // {coarse} = p.cb
            GROUP BY ALL"""
    ranked = cur.execute(f"""
        WITH bins AS NOT MATERIALIZED (
            SELECT {grid.format(t="bucket_ns")} AS bucket, route, bin, count AS n
            FROM {LATENCY.table}
            WHERE service = $service AND bucket_ns >= $start AND bucket_ns < $split
            UNION ALL
            SELECT {grid.format(t="time_ns")} AS bucket, route, {bin_sql("latency_ns")} AS bin,
                   1 AS n
            FROM requests WHERE service = $service AND time_ns >= $split AND time_ns < $end
        ), coarse AS (
            -- per step's series (the whole, g = 1, and each route's), by coarse bin
            SELECT GROUPING(route) AS g, route, bucket, bin // {COARSE_BINS} AS cb,
                   sum(n)::BIGINT AS n, max(bin) AS top
            FROM bins GROUP BY GROUPING SETS ((bucket, cb), (route, bucket, cb))
        ), steps AS (
            SELECT g, route, bucket, list(cb ORDER BY cb) AS cbs, list(n ORDER BY cb) AS ns,
                   sum(n)::BIGINT AS total, max(top) AS top
            FROM coarse GROUP BY g, route, bucket
        ), ranks AS (
            SELECT *, {low}::BIGINT AS r1, {high}::BIGINT AS r2,
                   {_RUNNING.format(ns="ns")} AS upto
            FROM steps
        ), wanted AS (
            -- the coarse bin holding each rank: the first whose running count passes it
            SELECT *, 1 + len(list_filter(upto, lambda x: x <= r1)) AS i1,
                   1 + len(list_filter(upto, lambda x: x <= r2)) AS i2
            FROM ranks
        ), picks AS (
            -- each step's one or two coarse bins, with the ranks sought within them
            SELECT g, route, bucket, cbs[i1] AS cb, r1 - (upto[i1] - ns[i1]) AS ra,
                   CASE WHEN i2 = i1 THEN r2 - (upto[i1] - ns[i1]) END AS rb
            FROM wanted
            UNION ALL
            SELECT g, route, bucket, cbs[i2], NULL, r2 - (upto[i2] - ns[i2])
            FROM wanted WHERE i2 <> i1
        ), fine AS (
            {fine.format(on="p.g = 1", coarse=COARSE_BINS)}
            UNION ALL
            {fine.format(on="p.g = 0 AND b.route IS NOT DISTINCT FROM p.route",
                         coarse=COARSE_BINS)}
        ), fine_lists AS (
            SELECT g, route, bucket, any_value(ra) AS ra, any_value(rb) AS rb,
                   list(bin ORDER BY bin) AS bins,
                   {_RUNNING.format(ns="list(n ORDER BY bin)")} AS upto
            FROM fine GROUP BY g, route, bucket, cb
        ), picked AS (
            SELECT g, route, bucket,
                   max(bins[1 + len(list_filter(upto, lambda x: x <= ra))])
                       FILTER (WHERE ra IS NOT NULL) AS low,
                   max(bins[1 + len(list_filter(upto, lambda x: x <= rb))])
                       FILTER (WHERE rb IS NOT NULL) AS high
            FROM fine_lists GROUP BY g, route, bucket
        )
        SELECT w.g, w.route, w.bucket, w.total, p.low, p.high, w.top
        FROM wanted w JOIN picked p ON w.g = p.g AND w.route IS NOT DISTINCT FROM p.route
                                       AND w.bucket = p.bucket
        ORDER BY w.bucket""",
        {"service": query.service, "start": query.start_ns, "step": query.step_ns,
         "split": split, "end": query.end_ns, "q": q}).fetchall()
    rows = []
    for g, route, bucket, total, low, high, top in ranked:
        if quantile == "max":
            value = value_of(top)
        else:
            pos = q * (total - 1)
            below, above = value_of(low), value_of(high)
            value = below + (above - below) * (pos - math.floor(pos))
        rows.append((g, route, bucket, total, value))
    return rows


def _reason_columns() -> str:
    # the bits are this module's constants, not user input: inlined, not parameters
    return ", ".join(
        f"sum(((clock_event_reasons & {bit}) <> 0)::INTEGER)" for bit in CLOCK_EVENT_REASONS.values())


def read_gpu(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[GpuPoint]:
    """Per GPU per step, ordered by instance, GPU index and time."""
    clause, params = series_where(query)
    rows = cur.execute(
        f"SELECT instance, gpu_index, any_value(uuid), any_value(name), {_BUCKET} AS bucket, "
        "count(*), avg(temperature_c), avg(sm_clock_mhz), max(sm_clock_max_mhz), "
        "avg(power_mw) / 1000, avg(power_limit_mw) / 1000, avg(memory_used_bytes), "
        "max(memory_total_bytes), avg(utilization_gpu_pct), avg(utilization_memory_pct), "
        "min(slowdown_temperature_c), "
        f"bool_or(replayed), count(clock_event_reasons), {_reason_columns()} "
        f"FROM gpu WHERE {clause} GROUP BY instance, gpu_index, bucket "
        "ORDER BY instance, gpu_index, bucket",
        params,
    ).fetchall()
    return [_gpu_point(row) for row in rows]


def _gpu_point(row: tuple[Any, ...]) -> GpuPoint:
    (instance, index, uuid, name, start, readings, temperature, sm, sm_max, power, limit,
     used, total, util, util_memory, slowdown, replayed, with_reasons, *reason_counts) = row
    throttle = tuple(
        (reason, n / with_reasons) for reason, n in zip(CLOCK_EVENT_REASONS, reason_counts, strict=True)
    ) if with_reasons else ()
    return GpuPoint(
        instance=instance, gpu_index=index, uuid=uuid, name=name, start_ns=start,
        readings=readings, temperature_c=temperature, sm_clock_mhz=sm, sm_clock_max_mhz=sm_max,
        power_w=power, power_limit_w=limit, memory_used_bytes=used, memory_total_bytes=total,
        utilization_gpu_pct=util, utilization_memory_pct=util_memory, throttle=throttle,
        replayed=bool(replayed), slowdown_temperature_c=slowdown,
    )


def read_process(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[ProcessPoint]:
    """Per process per step, ordered by instance, pid and time."""
    clause, params = series_where(query)
    rows = cur.execute(
        f"SELECT instance, pid, {_BUCKET} AS bucket, count(*), avg(cpu_user), avg(cpu_system), "
        "max(rss_bytes), max(threads), sum(ctx_switches_voluntary)::BIGINT, "
        "sum(ctx_switches_involuntary)::BIGINT, avg(run_queue_wait) "
        f"FROM process WHERE {clause} GROUP BY instance, pid, bucket "
        "ORDER BY instance, pid, bucket",
        params,
    ).fetchall()
    return [ProcessPoint(*row) for row in rows]


def read_engine_series(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[EngineBucket]:
    """Per instance, engine, model and metric, per step: the readings' aggregates (the API
    derives each step's value by the metric's kind)."""
    clause, params = series_where(query)
    rows = cur.execute(
        f"SELECT instance, engine, model, metric, {_BUCKET} AS bucket, count(*), sum(value), "
        "sum(count), sum(interval_s), avg(value), max(value) "
        f"FROM engine WHERE {clause} GROUP BY ALL ORDER BY instance, engine, model, metric, bucket",
        params,
    ).fetchall()
    return [EngineBucket(*row) for row in rows]


def read_host(cur: duckdb.DuckDBPyConnection, query: SeriesQuery) -> list[HostPoint]:
    """Per instance per step (each agent reports the host it runs on), by instance and time."""
    clause, params = series_where(query)
    rows = cur.execute(
        f"SELECT instance, any_value(host), {_BUCKET} AS bucket, count(*), avg(cpu_pct), "
        "max(cpu_count), min(memory_available_bytes), max(memory_total_bytes), avg(load1), "
        "avg(psi_cpu_some), avg(psi_memory_some), avg(psi_memory_full), avg(psi_io_some), "
        f"avg(psi_io_full) FROM host WHERE {clause} GROUP BY instance, bucket "
        "ORDER BY instance, bucket",
        params,
    ).fetchall()
    return [HostPoint(*row) for row in rows]
