"""GET /api/v1/stages: a window's samples split into pipeline stages (analysis/stages.py).

Parameters: service (required), from, to, and the flame graph's filters (instance,
version, thread, pid). The answer lists each stage with its samples, share and time per
request (the sampled thread time: samples x period / the window's requests, which the
instance and version filters narrow as well; thread and pid do not, since requests
carry neither). A service with neither profiles nor requests is a 404.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from pyrometer.collector.analysis.candidate import num
from pyrometer.collector.analysis.stages import StageRule, split
from pyrometer.collector.api.params import (
    STAGE_RULES,
    STORE,
    parse_window,
    profile_filters,
    require_known_service,
    required,
    run_query,
    window_json,
)
from pyrometer.collector.storage.reads import SeriesQuery


async def stages(request: web.Request) -> web.Response:
    """GET /api/v1/stages?service=&from=&to=[&instance=&version=&thread=&pid=]"""
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    filters = profile_filters(query)
    store = request.app[STORE]
    profile = await run_query(request, "stages", store.profile, service, window.start_ns,
                              window.end_ns, **filters)
    series = SeriesQuery(service, window.start_ns, window.end_ns,
                         max(1, window.end_ns - window.start_ns),
                         instance=filters["instance"], version=filters["version"])
    points = await run_query(request, "latency", store.latency, series)
    requests = sum(p.count for p in points)
    if not profile.samples and not requests:
        await require_known_service(request, service)
    rules: tuple[StageRule, ...] = request.app[STAGE_RULES]
    result = split(profile.samples, requests, profile.rate_hz, rules)
    body: dict[str, Any] = {
        "service": service, **window_json(window), "samples": result.samples,
        "requests": requests, "period_ms": num(result.period_ms),
        "wall_clock": profile.idle_included,
        "stages": [{"stage": s.stage, "samples": s.samples, "share": num(s.share, 4),
                    "ms_per_request": num(s.ms_per_request)} for s in result.stages],
    }
    return web.json_response(body)
