"""GET /api/v1/slos: each configured latency objective's budget, burn rates and state.

Parameters: service (optional: only its objectives), at (a time, default now: the
moment the windows end, for looking back at an incident). Objectives come from the
collector's --slos file (analysis/slo.py says what each figure means); without one the
list is empty. A window without requests burns nothing; a period without requests has
no budget figure (null).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from pyrometer.collector.analysis.candidate import num
from pyrometer.collector.analysis.slo import SloStatus, status_at
from pyrometer.collector.api.params import (
    OBJECTIVES,
    STORE,
    optional,
    parse_time_param,
    run_query,
)
from pyrometer.collector.timeparse import format_duration, format_time


def status_json(status: SloStatus) -> dict[str, Any]:
    o = status.objective
    return {
        "name": o.name, "service": o.service, "route": o.route, "objective": o.objective,
        "threshold_ms": o.threshold_ms, "period": format_duration(o.period_ns),
        "at": format_time(status.at_ns), "at_ns": status.at_ns, "state": status.state,
        "requests": status.requests, "bad_requests": status.bad,
        "budget_left": num(status.budget_left, 4),
        "burn_rates": [{"window": format_duration(b.window_ns), "requests": b.requests,
                        "bad_requests": b.bad, "burn_rate": num(b.burn_rate)}
                       for b in status.burns],
    }


async def slos(request: web.Request) -> web.Response:
    """GET /api/v1/slos[?service=&at=]"""
    query = request.query
    service = optional(query, "service")
    at_ns = parse_time_param(query, "at", "now", time.time_ns())
    store = request.app[STORE]
    found = []
    for objective in request.app[OBJECTIVES]:
        if service is not None and objective.service != service:
            continue
        found.append(status_json(await run_query(request, "slos", status_at, store, objective,
                                                 at_ns)))
    return web.json_response({"at": format_time(at_ns), "at_ns": at_ns, "slos": found})
