"""What every HTTP API handler shares: app state keys, parameter parsing, 400 errors.

Every bad parameter raises BadParameter, which the API's error middleware answers with
a JSON 400 naming the parameter; the helpers never let a value through that would make
the store fail (a time past int64, a string longer than anything stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from aiohttp import web

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.analysis.slo import Objective
from pyrometer.collector.analysis.stages import StageRule
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.store import Store
from pyrometer.collector.timeparse import MAX_TIME_NS, TimeFormatError, format_time, parse_time

T = TypeVar("T")

STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", CollectorMetrics)
# pipeline stage rules (analysis/stages.py): the user's own before the defaults
STAGE_RULES: web.AppKey[tuple[StageRule, ...]] = web.AppKey("stage_rules")
OBJECTIVES: web.AppKey[tuple[Objective, ...]] = web.AppKey("objectives")  # analysis/slo.py
TRACE_URL: web.AppKey[str] = web.AppKey("trace_url")  # "...{trace_id}...", or ""
DEFAULT_RANGE = "now-1h"
MAX_PARAM_LEN = 256
# a label or service may be as long as ingest lets a stored string be, or a service
# that /services lists could not be asked for
MAX_LABEL_LEN = DecodeLimits().max_string_bytes

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


def parse_window(query: Query, now_ns: Nanos) -> Window:
    """`from`/`to` as RFC 3339, unix seconds or now-15m; defaults to the last hour."""
    start = parse_time_param(query, "from", DEFAULT_RANGE, now_ns)
    end = parse_time_param(query, "to", "now", now_ns)
    if start >= end:
        raise BadParameter("from", f"from ({format_time(start)}) must be before to ({format_time(end)})")
    return Window(start, end)


def parse_time_param(query: Query, name: str, default: str, now_ns: Nanos) -> Nanos:
    raw = optional(query, name) or default
    try:
        return parse_time(raw, now_ns)
    except TimeFormatError as err:
        raise BadParameter(name, f"{name}: {short(str(err))}") from None


def required(query: Query, name: str, limit: int = MAX_LABEL_LEN) -> str:
    value = optional(query, name, limit)
    if not value:
        raise BadParameter(name, f"{name} is required")
    return value


def optional(query: Query, name: str, limit: int = MAX_PARAM_LEN) -> str | None:
    value = query.get(name)
    if value is not None and len(value) > limit:
        raise BadParameter(name, f"{name} is longer than {limit} characters")
    return value or None


def choice(query: Query, name: str, allowed: Collection[str], default: str) -> str:
    """`name`'s value, `default` when absent; a 400 listing `allowed` for anything else."""
    value = optional(query, name) or default
    if value not in allowed:
        raise BadParameter(name, f"unknown {name} {short(value)}; use one of {', '.join(allowed)}")
    return value


class ProfileFilters(TypedDict):
    """The label filters a flame graph (and each side of a diff) takes; None matches all."""

    instance: str | None
    version: str | None
    thread: str | None
    pid: int | None


def profile_filters(query: Query) -> ProfileFilters:
    return ProfileFilters(instance=optional(query, "instance", MAX_LABEL_LEN),
                          version=optional(query, "version", MAX_LABEL_LEN),
                          thread=optional(query, "thread", MAX_LABEL_LEN),
                          pid=optional_int(query, "pid"))


def optional_int(query: Query, name: str) -> int | None:
    value = optional(query, name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadParameter(name, f"{name} must be an integer, not {short(value)}") from None
    if not 0 <= number < 2**31:
        raise BadParameter(name, f"{name} {number} is out of range")
    return number


def short(value: str, limit: int = 64) -> str:
    """repr of a user's value for a message, cut so an error never echoes a whole URL."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


async def run_query(request: web.Request, endpoint: str, func: Callable[..., T], *args: Any,
                    **kwargs: Any) -> T:
    """Call the store in a worker thread (DuckDB blocks), timed as a query of `endpoint`."""
    with request.app[METRICS].time_query(endpoint):
        return await asyncio.to_thread(func, *args, **kwargs)


async def require_known_service(request: web.Request, service: str) -> None:
    """UnknownService (404) when `service` has neither profiles nor requests at all: what
    tells a quiet window from a misspelt name. Two full scans: ask only when an answer
    came back empty."""
    store = request.app[STORE]
    known = await run_query(request, "services", store.services)
    if service not in {s.name for s in known} and not await run_query(
            request, "routes", store.routes, service, 0, MAX_TIME_NS):
        raise UnknownService("service", f"unknown service {short(service)}")


def window_json(window: Window) -> dict[str, Any]:
    """The window a response covers, in RFC 3339 (to the ms) and exact nanoseconds."""
    return {"from": format_time(window.start_ns), "to": format_time(window.end_ns),
            "from_ns": window.start_ns, "to_ns": window.end_ns}
