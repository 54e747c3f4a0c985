"""The HTTP API (aiohttp): /api/v1/..., /metrics, /healthz.

Handlers only parse parameters, call the store and render in worker threads (DuckDB
blocks, and a big tree takes CPU seconds to build and encode, which would stall ingest);
every bad parameter is a 400 whose JSON names it, never a 500. The series
endpoints (latency, gpu, process) live in series.py, the events ones in events.py, the
spikes in spikes.py, the diff in diff.py, the label listing in labels.py, and the web page
and its static files in ui.py; the parameter helpers they share in params.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from pyrometer.collector.analysis.slo import Objective
from pyrometer.collector.analysis.stages import DEFAULT_RULES, StageRule
from pyrometer.collector.api import cost as api_cost
from pyrometer.collector.api import empty, openapi, pyroscope_ingest, pyroscope_querier, ui
from pyrometer.collector.api import events as api_events
from pyrometer.collector.api import requests as api_requests
from pyrometer.collector.api import series as api_series
from pyrometer.collector.api import slos as api_slos
from pyrometer.collector.api import spikes as api_spikes
from pyrometer.collector.api import stages as api_stages
from pyrometer.collector.api.diff import flamegraph_diff
from pyrometer.collector.api.labels import labels
from pyrometer.collector.api.params import (
    METRICS,
    OBJECTIVES,
    STAGE_RULES,
    STORE,
    TRACE_URL,
    BadParameter,
    choice,
    parse_window,
    profile_filters,
    required,
    run_query,
)
from pyrometer.collector.errors import StorageError
from pyrometer.collector.gcpause import without_gc
from pyrometer.collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.render.registry import FORMATS, render
from pyrometer.collector.storage.store import ServiceSummary, Store
from pyrometer.collector.timeparse import format_time

log = logging.getLogger(__name__)

# aiohttp refuses a request line over 8 KiB on its own (a bare 400 from its parser);
# a label may be as long as MAX_LABEL_LEN, which percent-encoded is up to three times that
RUNNER_OPTIONS: dict[str, Any] = {"max_line_size": 64 * 1024}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def create_app(store: Store, metrics: CollectorMetrics, middlewares: Sequence[Middleware] = (),
               *, stage_rules: tuple[StageRule, ...] | None = None,
               objectives: tuple[Objective, ...] = (), trace_url: str = "") -> web.Application:
    """The API over `store`; query latencies are observed in `metrics`."""
    app = web.Application(middlewares=[*middlewares, _errors])  # first runs outermost (auth)
    app[STORE] = store
    app[METRICS] = metrics
    app[STAGE_RULES] = stage_rules or DEFAULT_RULES
    app[OBJECTIVES] = objectives
    app[TRACE_URL] = trace_url
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/api/v1/services", services)
    app.router.add_get("/api/v1/labels", labels)
    app.router.add_get("/api/v1/flamegraph", flamegraph)
    app.router.add_get("/api/v1/flamegraph/diff", flamegraph_diff)
    app.router.add_get("/api/v1/latency", api_series.latency)
    app.router.add_get("/api/v1/gpu", api_series.gpu)
    app.router.add_get("/api/v1/engine", api_series.engine)
    app.router.add_get("/api/v1/process", api_series.process)
    app.router.add_get("/api/v1/spikes", api_spikes.spikes)
    app.router.add_get("/api/v1/stages", api_stages.stages)
    app.router.add_get("/api/v1/slos", api_slos.slos)
    app.router.add_get("/api/v1/requests", api_requests.slowest)
    app.router.add_get("/api/v1/cost", api_cost.cost)
    app.router.add_get("/api/v1/events", api_events.list_events)
    app.router.add_post("/api/v1/events", api_events.post_event)
    app.router.add_get("/api/v1/openapi.json", openapi.openapi_json)
    pyroscope_ingest.setup(app)  # Pyroscope's SDKs: POST /ingest, push.v1.PusherService/Push
    pyroscope_querier.setup(app)  # Grafana's Pyroscope data source: querier.v1.QuerierService
    ui.add_routes(app)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadParameter as err:
        return web.json_response({"error": str(err), "parameter": err.parameter}, status=err.status)
    except StorageError:
        # the client cannot fix this, and the message names server paths: log it here
        log.exception("query failed: %s %s", request.method, request.path)
        return web.json_response({"error": "the collector's storage failed; see its log"},
                                 status=500)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def prometheus_metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE})


async def services(request: web.Request) -> web.Response:
    found = await run_query(request, "services", request.app[STORE].services)
    return web.json_response({"services": [_service_json(s) for s in found]})


async def flamegraph(request: web.Request) -> web.StreamResponse:
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    fmt = choice(query, "format", FORMATS, "json")
    filters = profile_filters(query)
    store = request.app[STORE]
    profile = await run_query(request, "flamegraph", store.profile, service, window.start_ns,
                              window.end_ns, **filters)
    # only an empty answer needs the (full scan) services listing to tell "no data in
    # this window" from "no such service", and the notice saying which
    notice = ""
    if not profile.samples:
        notice = await empty.explain(request, service, window, filters)
    # building and encoding a big tree takes CPU seconds: off the loop, which ingest shares
    # (and with no garbage collection while it runs: gcpause.py)
    body, content_type = await asyncio.to_thread(without_gc(render), profile, fmt, notice=notice)
    # every format's reader can tell an empty answer (a filter that matched nothing) from
    # the header alone: the CLI writing pprof to a file does not parse it
    headers = {"Content-Type": content_type, empty.SAMPLES_HEADER: str(profile.total),
               empty.RESOLUTION_HEADER: profile.resolution}
    if fmt == "pprof":
        # the service name comes from agents: keep quotes and line breaks out of the header
        filename = f"{_UNSAFE_FILENAME.sub('_', service)}.{FORMATS[fmt].extension}"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return web.Response(body=body, headers=headers)


def _service_json(summary: ServiceSummary) -> dict[str, Any]:
    return {
        "name": summary.name,
        "instances": list(summary.instances),
        "first_seen": format_time(summary.first_seen_ns),
        "last_seen": format_time(summary.last_seen_ns),
        # exact, for building a window from the listing (RFC 3339 above is to ms)
        "first_seen_ns": summary.first_seen_ns,
        "last_seen_ns": summary.last_seen_ns,
        "samples": summary.samples,
    }
