"""The HTTP API (aiohttp): /api/v1/..., /metrics, /healthz.

Handlers only parse parameters, call the store in a worker thread (DuckDB blocks) and
render; every bad parameter is a 400 whose JSON names it, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from pyrometer.agent.model import Nanos
from pyrometer.collector.errors import StorageError
from pyrometer.collector.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.render import FORMATS, render
from pyrometer.collector.rows import DecodeLimits
from pyrometer.collector.storage import ServiceSummary, Store
from pyrometer.collector.timeparse import TimeFormatError, format_time, parse_time

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", CollectorMetrics)
DEFAULT_RANGE = "now-1h"
MAX_PARAM_LEN = 256
# a label or service may be as long as ingest lets a stored string be, or a service
# that /services lists could not be asked for
MAX_LABEL_LEN = DecodeLimits().max_string_bytes
_LABELS = ("instance", "version", "thread")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

Query = Mapping[str, str]


class BadParameter(Exception):
    """A query parameter the API cannot use; answered with its status and the name."""

    status = 400

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class UnknownService(BadParameter):
    """Well-formed, but no such service has data: 404, not 400."""

    status = 404


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: Nanos
    end_ns: Nanos


def create_app(store: Store, metrics: CollectorMetrics) -> web.Application:
    """The API over `store`; query latencies are observed in `metrics`."""
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
    found = await _query(request, "services", request.app[STORE].services)
    return web.json_response({"services": [_service_json(s) for s in found]})


async def flamegraph(request: web.Request) -> web.StreamResponse:
    query = request.query
    service = _required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    fmt = _optional(query, "format") or "json"
    if fmt not in FORMATS:
        raise BadParameter("format", f"unknown format {_short(fmt)}; use one of {', '.join(FORMATS)}")
    filters = {name: _optional(query, name, MAX_LABEL_LEN) for name in _LABELS}
    pid = _optional_int(query, "pid")
    store = request.app[STORE]
    profile = await _query(request, "flamegraph", store.profile, service, window.start_ns,
                           window.end_ns, pid=pid, **filters)
    # only an empty answer needs the (full scan) services listing to tell "no data in
    # this window" from "no such service"
    if not profile.samples:
        known = await _query(request, "services", store.services)
        if service not in {s.name for s in known}:
            raise UnknownService("service", f"unknown service {_short(service)}")
    body, content_type = render(profile, fmt)
    headers = {"Content-Type": content_type}
    if fmt == "pprof":
        # the service name comes from agents: keep quotes and line breaks out of the header
        filename = f"{_UNSAFE_FILENAME.sub('_', service)}.{FORMATS[fmt].extension}"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return web.Response(body=body, headers=headers)


def parse_window(query: Query, now_ns: Nanos) -> Window:
    """`from`/`to` as RFC 3339, unix seconds or now-15m; defaults to the last hour."""
    start = _parse_time_param(query, "from", DEFAULT_RANGE, now_ns)
    end = _parse_time_param(query, "to", "now", now_ns)
    if start >= end:
        raise BadParameter("from", f"from ({format_time(start)}) must be before to ({format_time(end)})")
    return Window(start, end)


def _parse_time_param(query: Query, name: str, default: str, now_ns: Nanos) -> Nanos:
    raw = _optional(query, name) or default
    try:
        return parse_time(raw, now_ns)
    except TimeFormatError as err:
        raise BadParameter(name, f"{name}: {_short(str(err))}") from None


def _required(query: Query, name: str, limit: int = MAX_LABEL_LEN) -> str:
    value = _optional(query, name, limit)
    if not value:
        raise BadParameter(name, f"{name} is required")
    return value


def _optional(query: Query, name: str, limit: int = MAX_PARAM_LEN) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > limit:
        raise BadParameter(name, f"{name} is longer than {limit} characters")
    return value or None


def _optional_int(query: Query, name: str) -> int | None:
    value = _optional(query, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadParameter(name, f"{name} must be an integer, not {_short(value)}") from None
    if not 0 <= number < 2**31:
        raise BadParameter(name, f"{name} {number} is out of range")
    return number


def _short(value: str, limit: int = 64) -> str:
    """repr of a user's value for a message, cut so an error never echoes a whole URL."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


async def _query(request: web.Request, endpoint: str, func: Callable[..., T], *args: Any,
                 **kwargs: Any) -> T:
    with request.app[METRICS].time_query(endpoint):
        return await asyncio.to_thread(func, *args, **kwargs)


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
