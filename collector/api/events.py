"""POST and GET /api/v1/events: deploys and config changes recorded by CI/CD, and events
agents sent (restarts, deploys they noticed).

An event's kind is any short lowercase token, so that a pipeline can record what it
does ("migration", "flag-flip") without a collector upgrade; the well-known kinds are
deploy, config, restart and rollback, and a deploy must name the version it deploys.
Validation is strict: an unknown field is a 400 naming it, so a misspelt "verison"
does not quietly record a deploy without a version.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Event, Nanos
from pyrometer.collector.api.params import (
    STORE,
    BadParameter,
    optional,
    parse_window,
    required,
    run_query,
    short,
    window_json,
)
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.validate import MIN_TIME_NS
from pyrometer.collector.storage.reads import API_AGENT_ID, StoredEvent
from pyrometer.collector.timeparse import TimeFormatError, format_time, parse_time

WELL_KNOWN_KINDS = ("deploy", "config", "restart", "rollback")
KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
FIELDS = ("service", "kind", "version", "time", "attrs")
MAX_BODY_BYTES = 64 * 1024
_LIMITS = DecodeLimits()  # the same bounds as events sent by agents


def _text(body: dict[str, Any], name: str, *, needed: bool = False) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadParameter(name, f"{name} must be a string")
    if needed and not value:
        raise BadParameter(name, f"{name} is required and must not be empty")
    if len(value.encode()) > _LIMITS.max_string_bytes:
        raise BadParameter(name, f"{name} is longer than {_LIMITS.max_string_bytes} bytes")
    return value


def _time(value: Any, now_ns: Nanos) -> Nanos:
    if value is None:
        return now_ns
    if isinstance(value, str):
        try:
            ns = parse_time(value, now_ns)
        except TimeFormatError as err:
            raise BadParameter("time", f"time: {short(str(err))}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # NaN, infinities and huge integers all fail the comparison and so the bounds
        ns = round(value * NANOS_PER_SECOND) if abs(value) < 1e12 else -1
    else:
        raise BadParameter("time", "time must be RFC 3339 text or unix seconds")
    # the bounds ingest applies to agents' records
    if not MIN_TIME_NS <= ns <= now_ns + _LIMITS.max_future_ns:
        raise BadParameter("time", "time must be after 2000 and at most an hour from now")
    return ns


def _attrs(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BadParameter("attrs", "attrs must be an object of strings")
    if len(value) > _LIMITS.max_labels:
        raise BadParameter("attrs", f"attrs has more than {_LIMITS.max_labels} entries")
    for key, text in value.items():
        if not key or not isinstance(text, str):
            raise BadParameter("attrs", f"attrs {short(key)}: keys must be non-empty, values strings")
        if max(len(key.encode()), len(text.encode())) > _LIMITS.max_string_bytes:
            raise BadParameter("attrs", f"attrs {short(key)} is too long")
    return tuple(sorted(value.items()))


def parse_event(body: Any, now_ns: Nanos) -> tuple[str, Event]:
    """The service and event a POST body describes, or BadParameter naming the field."""
    if not isinstance(body, dict):
        raise BadParameter("body", "the body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise BadParameter(str(name), f"unknown field {short(str(name))}; "
                               f"expected {', '.join(FIELDS)}")
    service = _text(body, "service", needed=True)
    kind = _text(body, "kind", needed=True)
    if not KIND.fullmatch(kind):
        raise BadParameter("kind", f"kind {short(kind)} is not a short lowercase token such as "
                           f"{', '.join(WELL_KNOWN_KINDS)}")
    version = _text(body, "version", needed=kind == "deploy")
    event = Event(time_ns=_time(body.get("time"), now_ns), kind=kind, version=version,
                  attrs=_attrs(body.get("attrs")))
    return service, event


def event_json(event: StoredEvent) -> dict[str, Any]:
    """An event as the API shows it."""
    return {
        "time": format_time(event.time_ns), "time_ns": event.time_ns,
        "service": event.service, "kind": event.kind, "version": event.version,
        "previous_version": event.previous_version,
        "source": "api" if event.agent_id == API_AGENT_ID else "agent",
        "instance": event.instance, "host": event.host, "agent_id": event.agent_id,
        "pid": event.pid, "previous_pid": event.previous_pid, "attrs": dict(event.attrs),
    }


async def post_event(request: web.Request) -> web.Response:
    """POST /api/v1/events {"service", "kind", "version", "time"?, "attrs"?}

    time: RFC 3339, unix seconds (number or text) or now-5m; default now. Answers 201
    with the stored event (as in the listing); a bad field is a 400 naming it.
    """
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BadParameter("body", f"the body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BadParameter("body", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadParameter("body", "the body is not JSON") from None
    service, event = parse_event(body, now_ns=time.time_ns())
    stored = await run_query(request, "events_post", request.app[STORE].add_event, service, event)
    return web.json_response(event_json(stored), status=201)


async def list_events(request: web.Request) -> web.Response:
    """GET /api/v1/events?service=&from=&to=[&kind=]

    {"service", "from", "to", "from_ns", "to_ns", "truncated" (more than the listing
    limit matched; the earliest are shown), "events": [{"time", "time_ns", "service",
    "kind", "version", "previous_version", "source" ("api" or "agent"), "instance",
    "host", "agent_id", "pid", "previous_pid", "attrs"}]} in time order.
    """
    query = request.query
    service = required(query, "service")
    window = parse_window(query, now_ns=time.time_ns())
    kind = optional(query, "kind")
    listing = await run_query(request, "events", request.app[STORE].events, service,
                              window.start_ns, window.end_ns, kind=kind)
    return web.json_response({
        "service": service, **window_json(window),
        "truncated": listing.truncated, "events": [event_json(e) for e in listing.events],
    })
