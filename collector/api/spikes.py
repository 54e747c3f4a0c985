"""GET /api/v1/spikes: latency spikes in a window with their ranked causes.

Parameters: service (required), from, to (as for flame graphs), step (a duration,
default 10s), baseline (a duration, default 30m: a short recording is analysed with a
short baseline), percentile (p95, p99 or max; default p99). The window may hold at
most MAX_BUCKETS steps, baseline included. The answer's shape is report.to_json's; a
service with neither profiles nor requests is a 404, as for /api/v1/flamegraph.
"""

from __future__ import annotations

import time

from aiohttp import web

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.analysis.detect import DetectConfig
from pyrometer.collector.analysis.gather import SpikeQuery, analyze
from pyrometer.collector.analysis.report import to_json
from pyrometer.collector.api.empty import RESOLUTION_HEADER
from pyrometer.collector.api.params import (
    STAGE_RULES,
    STORE,
    TRACE_URL,
    BadParameter,
    Query,
    optional,
    parse_window,
    require_known_service,
    required,
    run_query,
    short,
)
from pyrometer.collector.api.series import MIN_STEP_NS
from pyrometer.collector.gcpause import without_gc
from pyrometer.collector.storage.sketch import sketch_start
from pyrometer.collector.timeparse import (
    TimeFormatError,
    format_duration,
    parse_duration,
)

# a day at the default 10 s step with the default 30 min baseline is 8,820 buckets and
# fits; the bound keeps a mistyped step (1ms over a day) from a runaway analysis
MAX_BUCKETS = 10_000
SPIKE_PERCENTILES = ("p95", "p99", "max")
DEFAULT_STEP_NS: Nanos = 10 * NANOS_PER_SECOND
DEFAULT_BASELINE_NS: Nanos = 30 * 60 * NANOS_PER_SECOND


def _duration(query: Query, name: str, default: Nanos) -> Nanos:
    raw = optional(query, name)
    if raw is None:
        return default
    try:
        value = parse_duration(raw)
    except TimeFormatError as err:
        raise BadParameter(name, f"{name}: {short(str(err))}") from None
    if value < MIN_STEP_NS:
        raise BadParameter(name, f"{name} {short(raw)} is shorter than 1ms")
    return value


def parse_config(query: Query, span_ns: Nanos) -> DetectConfig:
    """step, baseline and percentile, checked against each other and the window."""
    step = _duration(query, "step", DEFAULT_STEP_NS)
    baseline = _duration(query, "baseline", DEFAULT_BASELINE_NS)
    if baseline < 3 * step:
        raise BadParameter("baseline", f"baseline {format_duration(baseline)} must be at least "
                           f"three steps ({format_duration(3 * step)})")
    buckets = -(-(span_ns + baseline) // step)
    if buckets > MAX_BUCKETS:
        raise BadParameter("step", f"step {format_duration(step)} cuts the window and its baseline "
                           f"into {buckets} buckets; at most {MAX_BUCKETS} are allowed")
    percentile = optional(query, "percentile") or "p99"
    if percentile not in SPIKE_PERCENTILES:
        raise BadParameter("percentile", f"unknown percentile {short(percentile)}; use one of "
                           f"{', '.join(SPIKE_PERCENTILES)}")
    return DetectConfig(step_ns=step, baseline_ns=baseline, percentile=percentile)


async def spikes(request: web.Request) -> web.Response:
    """GET /api/v1/spikes?service=&from=&to=[&baseline=30m&step=10s&percentile=p99]"""
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    config = parse_config(query, window.end_ns - window.start_ns)
    start = sketch_start(window.start_ns, window.end_ns, config.step_ns, config.baseline_ns)
    spike_query = SpikeQuery(service, start, window.end_ns, config, request.app[STAGE_RULES])
    store = request.app[STORE]
    # no garbage collection while it runs (gcpause.py): it builds tens of thousands of objects
    report = await run_query(request, "spikes", without_gc(analyze), store, spike_query)
    # as for /flamegraph, only an answer without data needs the (full scan) check that
    # tells a quiet window from a misspelt service: 404 when it has neither profiles nor
    # requests, since requests are what spikes are found in
    if report.detection.evaluated == 0 and report.detection.without_baseline == 0:
        await require_known_service(request, service)
    return web.json_response(to_json(report, request.app[TRACE_URL]),
                             headers={RESOLUTION_HEADER: report.resolution})
