"""GET /api/v1/cost: what each version's requests cost in GPU time, beside their latency.

Parameters: service (required), from, to. Per version: its requests, their p50 and p99
latency, the GPU-seconds its GPUs were busy (NVML's utilization times the time between
readings, summed over the GPUs; a gap over 10 s between two readings counts 10 s), the
mean utilization, and the figure to compare releases by: busy GPU-seconds per 1,000
requests. Then each version against the one before it (by first request), in one line:
"2.0 vs 1.0: p99 -18%, GPU-seconds per 1000 requests +35%", so a release that made
latency better but cost more says so. Readings replayed from a recording say so in
`notice`: their cost is not a GPU's.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from pyrometer.collector.analysis.candidate import num
from pyrometer.collector.api.params import (
    STORE,
    parse_window,
    require_known_service,
    required,
    run_query,
    window_json,
)
from pyrometer.collector.storage.reads import REPLAYED_NOTICE, VersionCost


def per_thousand(cost: VersionCost) -> float | None:
    return 1000 * cost.gpu_busy_s / cost.requests if cost.requests and cost.gpus else None


def _change(new: float | None, old: float | None) -> str | None:
    if new is None or old is None or old <= 0:
        return None
    return f"{(new / old - 1):+.0%}"


def comparisons(costs: list[VersionCost]) -> list[str]:
    """Each version against the one listed before it, where both have the figures."""
    lines = []
    for old, new in zip(costs, costs[1:], strict=False):
        parts = []
        p99 = _change(new.latency_p99_ms, old.latency_p99_ms)
        if p99:
            parts.append(f"p99 {p99}")
        gpu = _change(per_thousand(new), per_thousand(old))
        if gpu:
            parts.append(f"GPU-seconds per 1000 requests {gpu}")
        if parts:
            lines.append(f"{new.version or '(none)'} vs {old.version or '(none)'}: "
                         f"{', '.join(parts)}")
    return lines


def _version(cost: VersionCost) -> dict[str, Any]:
    return {"version": cost.version, "requests": cost.requests,
            "latency_p50_ms": num(cost.latency_p50_ms),
            "latency_p99_ms": num(cost.latency_p99_ms), "gpus": cost.gpus,
            "gpu_busy_seconds": num(cost.gpu_busy_s),
            "gpu_utilization": num(cost.gpu_busy_s / cost.gpu_observed_s, 4)
            if cost.gpu_observed_s > 0 else None,
            "gpu_seconds_per_1000_requests": num(per_thousand(cost)),
            "replayed": cost.replayed}


async def cost(request: web.Request) -> web.Response:
    """GET /api/v1/cost?service=&from=&to="""
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    store = request.app[STORE]
    costs = await run_query(request, "cost", store.version_costs, service, window.start_ns,
                            window.end_ns)
    if not costs:
        await require_known_service(request, service)
    # versions come in the order they served, so "vs" reads as before and after
    replayed = any(c.replayed for c in costs)
    body: dict[str, Any] = {
        "service": service, **window_json(window),
        "versions": [_version(c) for c in costs], "comparisons": comparisons(costs),
        "replayed": replayed}
    if replayed:
        body["notice"] = REPLAYED_NOTICE
    return web.json_response(body)
