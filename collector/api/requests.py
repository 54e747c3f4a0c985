"""GET /api/v1/requests: the slowest requests of a window, with their trace ids.

Parameters: service (required), from, to, route, instance, limit (1-100, default 20).
Each request gives its end, latency, route, instance, version, status and the W3C trace
id it arrived with (the middleware, the proxy and the gRPC interceptor read
`traceparent`), and a link to the trace where the collector has --trace-url. The
question it answers: "which requests were slow, and what did they do?", one click
from the tracing tool. A service with neither requests nor profiles is a 404, as for
spikes.
"""

from __future__ import annotations

import time

from aiohttp import web

from pyrometer.collector.analysis.report import request_json
from pyrometer.collector.api.params import (
    MAX_LABEL_LEN,
    STORE,
    TRACE_URL,
    BadParameter,
    optional,
    optional_int,
    parse_window,
    require_known_service,
    required,
    run_query,
    window_json,
)

MAX_LIMIT = 100


async def slowest(request: web.Request) -> web.Response:
    """GET /api/v1/requests?service=&from=&to=[&route=&instance=&limit=20]"""
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    limit = optional_int(query, "limit")
    limit = 20 if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter("limit", f"limit {limit}: expected 1-{MAX_LIMIT}")
    store = request.app[STORE]
    rows = await run_query(request, "requests", store.slowest_requests, service,
                           window.start_ns, window.end_ns, limit=limit,
                           route=optional(query, "route", MAX_LABEL_LEN),
                           instance=optional(query, "instance", MAX_LABEL_LEN))
    if not rows:
        await require_known_service(request, service)
    trace_url = request.app[TRACE_URL]
    return web.json_response({
        "service": service, **window_json(window),
        "requests": [request_json(r, trace_url) for r in rows]})
