"""GET /api/v1/labels: the label values a service's data holds in a window.

So that the page (and anyone else) picks filters from a list rather than guessing how a
label is spelt: instance, version, thread and pid from the profile samples, route from
the request records (busiest first, with its request count).
"""

from __future__ import annotations

import time

from aiohttp import web

from pyrometer.collector.api.params import STORE, parse_window, required, run_query, window_json


async def labels(request: web.Request) -> web.Response:
    """GET /api/v1/labels?service=&from=&to=

    {"service", "from", "to", "from_ns", "to_ns", "instance": [...], "version": [...],
    "thread": [...], "pid": [...], "route": [{"route", "requests"}]}, each sorted (routes
    busiest first); an unknown service or a quiet window has empty lists.
    """
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    store = request.app[STORE]
    found = await run_query(request, "labels", store.profile_labels, service, window.start_ns,
                            window.end_ns)
    routes = await run_query(request, "routes", store.routes, service, window.start_ns, window.end_ns)
    return web.json_response({
        "service": service, **window_json(window),
        "instance": list(found.instance), "version": list(found.version),
        "thread": list(found.thread), "pid": list(found.pid),
        "route": [{"route": route, "requests": count} for route, count in routes],
    })
