"""The HTTP API (aiohttp): /api/v1/..., /metrics, /healthz.

Handlers only parse parameters, call the store in a worker thread (DuckDB blocks) and
render; every bad parameter is a 400 whose JSON names it, never a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.render import FORMATS, render
from pyrometer.collector.storage import Store
from pyrometer.collector.timeparse import TimeFormatError, format_time, parse_time

STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", CollectorMetrics)
DEFAULT_RANGE = "now-1h"
MAX_PARAM_LEN = 256


class BadParameter(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: int
    end_ns: int


def create_app(store: Store, metrics: CollectorMetrics) -> web.Application:
    app = web.Application(middlewares=[_errors])
    app[STORE] = store
    app[METRICS] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/api/v1/services", services)
    app.router.add_get("/api/v1/flamegraph", flamegraph)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadParameter as err:
        return web.json_response({"error": str(err), "parameter": err.parameter}, status=400)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def prometheus_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def services(request: web.Request) -> web.Response:
    found = await _query(request, "services", request.app[STORE].services)
    return web.json_response({"services": [_service_json(s) for s in found]})


async def flamegraph(request: web.Request) -> web.StreamResponse:
    query = request.query
    service = _required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    fmt = query.get("format", "json")
    if fmt not in FORMATS:
        raise BadParameter("format", f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    filters = {name: _optional(query, name) for name in ("instance", "version", "thread")}
    pid = _optional_int(query, "pid")
    store = request.app[STORE]
    known = await _query(request, "services", store.services)
    if service not in {s.name for s in known}:
        return web.json_response({"error": f"unknown service {service!r}", "parameter": "service"},
                                 status=404)
    profile = await _query(request, "flamegraph", store.profile, service, window.start_ns,
                           window.end_ns, pid=pid, **filters)
    body, content_type = render(profile, fmt)
    headers = {"Content-Type": content_type}
    if fmt == "pprof":
        headers["Content-Disposition"] = f'attachment; filename="{service}.pb.gz"'
    return web.Response(body=body, headers=headers)


def parse_window(query: Any, now_ns: int) -> Window:
    """`from`/`to` as RFC 3339, unix seconds or now-15m; defaults to the last hour."""
    start = _parse_time_param(query, "from", DEFAULT_RANGE, now_ns)
    end = _parse_time_param(query, "to", "now", now_ns)
    if start >= end:
        raise BadParameter("from", f"from ({format_time(start)}) must be before to ({format_time(end)})")
    return Window(start, end)


def _parse_time_param(query: Any, name: str, default: str, now_ns: int) -> int:
    raw = query.get(name, default)
    if len(raw) > MAX_PARAM_LEN:
        raise BadParameter(name, f"{name} is too long")
    try:
        return parse_time(raw, now_ns)
    except TimeFormatError as err:
        raise BadParameter(name, f"{name}: {err}") from None


def _required(query: Any, name: str) -> str:
    value = _optional(query, name)
    if not value:
        raise BadParameter(name, f"{name} is required")
    return value


def _optional(query: Any, name: str) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > MAX_PARAM_LEN:
        raise BadParameter(name, f"{name} is longer than {MAX_PARAM_LEN} characters")
    return value or None


def _optional_int(query: Any, name: str) -> int | None:
    value = _optional(query, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadParameter(name, f"{name} must be an integer, not {value!r}") from None
    if not 0 <= number < 2**31:
        raise BadParameter(name, f"{name} {number} is out of range")
    return number


async def _query(request: web.Request, endpoint: str, func: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> Any:
    started = time.perf_counter()
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    finally:
        request.app[METRICS].query_seconds.labels(endpoint).observe(time.perf_counter() - started)


def _service_json(summary: Any) -> dict[str, Any]:
    return {
        "name": summary.name,
        "instances": list(summary.instances),
        "first_seen": format_time(summary.first_seen_ns),
        "last_seen": format_time(summary.last_seen_ns),
        "samples": summary.samples,
    }
