"""GET /api/v1/latency, /gpu, /process and /engine: telemetry series by step.

Common parameters: service (required), from, to (as for flame graphs), step (a
duration such as 10s, 1m, 250ms; by default the smallest of 1s, 2s, 5s, 10s, ... that
gives at most MAX_BUCKETS buckets), instance and version (exact filters). Every answer
starts with {"service", "from", "to", "from_ns", "to_ns", "step", "step_ns"}; a step with
no data is absent, and an unknown service has no data (200, empty), since events and
telemetry may come before any profile. Times of points: "time" (RFC 3339, to the ms) and
"start_ns" of the bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from pyrometer.agent.shared.model import ENGINE_METRICS, NANOS_PER_SECOND, Nanos
from pyrometer.collector.api.params import (
    MAX_LABEL_LEN,
    STORE,
    BadParameter,
    Query,
    Window,
    optional,
    parse_window,
    required,
    run_query,
    short,
    window_json,
)
from pyrometer.collector.storage.reads import REPLAYED_NOTICE, EngineBucket, SeriesQuery
from pyrometer.collector.timeparse import (
    MAX_TIME_NS,
    TimeFormatError,
    format_duration,
    format_time,
    parse_duration,
)

MAX_BUCKETS = 1000
MIN_STEP_NS: Nanos = 1_000_000  # 1 ms
_S, _M, _H, _D = NANOS_PER_SECOND, 60 * NANOS_PER_SECOND, 3600 * NANOS_PER_SECOND, 86400 * NANOS_PER_SECOND
DEFAULT_STEPS: tuple[Nanos, ...] = (
    _S, 2 * _S, 5 * _S, 10 * _S, 15 * _S, 30 * _S, _M, 2 * _M, 5 * _M, 10 * _M, 15 * _M, 30 * _M,
    _H, 2 * _H, 3 * _H, 6 * _H, 12 * _H, _D, 7 * _D,
)


def default_step(span_ns: Nanos) -> Nanos:
    """The smallest usual step that cuts `span_ns` into at most MAX_BUCKETS buckets."""
    for step in DEFAULT_STEPS:
        if -(-span_ns // step) <= MAX_BUCKETS:
            return step
    return -(-span_ns // MAX_BUCKETS)  # beyond weeks: whatever keeps the bound


def parse_step(query: Query, window: Window) -> Nanos:
    """`step` as a duration, checked against the window: at most MAX_BUCKETS buckets."""
    span = window.end_ns - window.start_ns
    raw = optional(query, "step")
    if raw is None:
        return default_step(span)
    try:
        step = parse_duration(raw)
    except TimeFormatError as err:
        raise BadParameter("step", f"step: {short(str(err))}") from None
    if step < MIN_STEP_NS:
        raise BadParameter("step", f"step {short(raw)} is shorter than 1ms")
    if step > MAX_TIME_NS:
        raise BadParameter("step", f"step {short(raw)} is too long")
    buckets = -(-span // step)
    if buckets > MAX_BUCKETS:
        smallest = format_duration(-(-span // MAX_BUCKETS))
        raise BadParameter("step", f"step {short(raw)} cuts the window into {buckets} buckets; "
                           f"at most {MAX_BUCKETS} are allowed (use a step of {smallest} or more)")
    return step


def parse_series(query: Query, *, with_route: bool = False) -> SeriesQuery:
    """The service, window, step and filters of a series request."""
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    step = parse_step(query, window)
    filters = {name: optional(query, name, MAX_LABEL_LEN) for name in ("instance", "version")}
    route = optional(query, "route", MAX_LABEL_LEN) if with_route else None
    return SeriesQuery(service, window.start_ns, window.end_ns, step, route=route, **filters)


def _head(q: SeriesQuery) -> dict[str, Any]:
    return {"service": q.service, **window_json(Window(q.start_ns, q.end_ns)),
            "step": format_duration(q.step_ns), "step_ns": q.step_ns}


def _point(point: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    fields = {k: v for k, v in asdict(point).items() if k not in set(skip)}
    return {"time": format_time(point.start_ns), **fields}


def _grouped(points: Iterable[Any], key: Callable[[Any], tuple[Any, ...]], names: tuple[str, ...]
             ) -> list[dict[str, Any]]:
    """Points of one series (one GPU, one process) together: [{**key, "points": [...]}]."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for point in points:
        k = key(point)
        group = groups.setdefault(k, {**dict(zip(names, k, strict=True)), "points": []})
        group["points"].append(_point(point, names))
    return list(groups.values())


async def latency(request: web.Request) -> web.Response:
    """GET /api/v1/latency?service=&from=&to=&step=[&route=&version=&instance=]

    {head..., "points": [{"time", "start_ns", "end_ns", "count", "errors" (status >= 500),
    "rate_per_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms",
    "request_bytes_p50", "request_bytes_p95", "response_bytes_p50", "response_bytes_p95",
    "ttfb_p50_ms", "ttfb_p95_ms" (null when nothing in the step was streamed)}]}
    """
    q = parse_series(request.query, with_route=True)
    points = await run_query(request, "latency", request.app[STORE].latency, q)
    filters = {"route": q.route, "instance": q.instance, "version": q.version}
    return web.json_response({**_head(q), "filters": filters,
                              "points": [_point(p) for p in points]})


async def gpu(request: web.Request) -> web.Response:
    """GET /api/v1/gpu?service=&from=&to=&step=[&instance=&version=]

    {head..., "replayed": bool, "notice" (only when replayed), "gpus": [{"instance",
    "gpu_index", "uuid", "name", "points": [{"time", "start_ns", "readings",
    "temperature_c", "sm_clock_mhz", "sm_clock_max_mhz", "power_w", "power_limit_w",
    "memory_used_bytes", "memory_total_bytes", "utilization_gpu_pct",
    "utilization_memory_pct", "throttle": {reason: fraction of the step's readings with
    that clock-event bit set} or null when no reading said, "replayed",
    "slowdown_temperature_c" (the lowest threshold reported in the step, or null)}]}]}
    """
    q = parse_series(request.query)
    points = await run_query(request, "gpu", request.app[STORE].gpu, q)
    gpus = _grouped(points, lambda p: (p.instance, p.gpu_index, p.uuid, p.name),
                    ("instance", "gpu_index", "uuid", "name"))
    for group in gpus:
        for point in group["points"]:
            point["throttle"] = dict(point["throttle"]) or None
    replayed = any(p.replayed for p in points)
    notice = {"notice": REPLAYED_NOTICE} if replayed else {}
    return web.json_response({**_head(q), "replayed": replayed, **notice, "gpus": gpus})


async def process(request: web.Request) -> web.Response:
    """GET /api/v1/process?service=&from=&to=&step=[&instance=&version=]

    {head..., "processes": [{"instance", "pid", "points": [{"time", "start_ns",
    "readings", "cpu_user", "cpu_system" (cores, average), "rss_bytes_max",
    "threads_max", "ctx_switches_voluntary", "ctx_switches_involuntary" (summed),
    "run_queue_wait" (thread-seconds waiting for a CPU per second, average; null from
    agents that do not read it)}]}],
    "hosts": [{"instance", "points": [{"time", "start_ns", "host", "readings",
    "cpu_pct", "cpu_count", "memory_available_bytes_min", "memory_total_bytes",
    "load1", "psi_cpu_some", "psi_memory_some", "psi_memory_full", "psi_io_some",
    "psi_io_full" (PSI avg10 percent, averaged; null without /proc/pressure)}]}]}
    """
    q = parse_series(request.query)
    store = request.app[STORE]
    procs = await run_query(request, "process", store.process, q)
    hosts = await run_query(request, "host", store.host, q)
    return web.json_response({
        **_head(q),
        "processes": _grouped(procs, lambda p: (p.instance, p.pid), ("instance", "pid")),
        "hosts": _grouped(hosts, lambda p: (p.instance,), ("instance",)),
    })


# What one step's value of an engine series is, by the metric's kind (ENGINE_METRICS):
# a gauge's average reading, a counter's increase per second of the scrapes it covered,
# a histogram's mean observation (sum over count). The unit follows from metric and kind.
_ENGINE_UNITS = {"requests": "requests/s", "preemptions": "preemptions/s",
                 "prompt_tokens": "tokens/s", "generation_tokens": "tokens/s",
                 "requests_running": "requests", "requests_waiting": "requests",
                 "max_running": "requests", "kv_cache_usage": "fraction"}


def engine_kind(metric: str, buckets: Iterable[EngineBucket]) -> str:
    """'mean', 'delta' or 'gauge': the metric's kind, or 'mean' where an engine gave a
    histogram for what others count (TGI's input length: tokens per request)."""
    kind = ENGINE_METRICS[metric]
    return "mean" if kind == "delta" and any(b.observations > 0 for b in buckets) else kind


def engine_point(bucket: EngineBucket, kind: str) -> dict[str, Any]:
    """One step of an engine series: its value (null where the step cannot say) and what
    it was made of."""
    point: dict[str, Any] = {"time": format_time(bucket.start_ns), "start_ns": bucket.start_ns,
                             "readings": bucket.readings}
    if kind == "gauge":
        return {**point, "value": bucket.mean_reading, "max": bucket.max_reading}
    if kind == "delta":
        per_s = bucket.total / bucket.covered_s if bucket.covered_s > 0 else None
        return {**point, "value": per_s, "total": bucket.total}
    mean = bucket.total / bucket.observations if bucket.observations > 0 else None
    return {**point, "value": mean, "observations": bucket.observations}


async def engine(request: web.Request) -> web.Response:
    """GET /api/v1/engine?service=&from=&to=&step=[&instance=&version=]

    The serving engine's metrics as the agent scraped them (agent --scrape URL):
    {head..., "series": [{"instance", "engine", "model", "metric", "kind", "unit",
    "points": [{"time", "start_ns", "readings", "value", and by kind: "max" (gauge: the
    highest reading), "total" (delta: the step's increase; value is per second),
    "observations" (mean: how many the value averages; null value where none)}]}]}.
    Metrics and kinds: ENGINE_METRICS in the agent's shared model; an engine's names map
    to them in agent/engine/mapping.py.
    """
    q = parse_series(request.query)
    buckets = await run_query(request, "engine", request.app[STORE].engine, q)
    groups: dict[tuple[str, str, str, str], list[EngineBucket]] = {}
    for bucket in buckets:
        groups.setdefault((bucket.instance, bucket.engine, bucket.model, bucket.metric), []).append(bucket)
    series = []
    for (instance, engine_name, model, metric), steps in groups.items():
        kind = engine_kind(metric, steps)
        unit = "tokens/request" if kind == "mean" and metric.endswith("_tokens") else (
            "seconds" if metric.endswith("_s") else _ENGINE_UNITS.get(metric, ""))
        series.append({"instance": instance, "engine": engine_name, "model": model, "metric": metric,
                       "kind": kind, "unit": unit, "points": [engine_point(b, kind) for b in steps]})
    return web.json_response({**_head(q), "series": series})
