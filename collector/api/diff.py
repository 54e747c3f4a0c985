"""GET /api/v1/flamegraph/diff: the flame graph of one window against a baseline window.

Parameters: ``service``; ``from``/``to`` (the target window, default the last hour);
``baseline_from``/``baseline_to`` (default: the window of the same length just before
the target; give one bound and the other follows from that length); ``format``
``json`` (default) or ``html``; optional ``instance``, ``version``, ``thread`` and
``pid`` filters, applied to both windows; ``per``: ``second`` (default) or ``request``.
Values are samples per second of each window, or per request that ended in it (the
instance and version filters apply to the requests too): a frame whose cost per request
did not change shows no change when traffic doubled. ``per=request`` with a window that
has no requests is a 400 naming ``per``. Same rules as /api/v1/flamegraph: a bad parameter is a
400 naming it, an unknown service a 404, and two windows without data a valid diff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.api import empty
from pyrometer.collector.api.params import (
    METRICS,
    STORE,
    BadParameter,
    ProfileFilters,
    Query,
    Window,
    choice,
    optional,
    parse_window,
    profile_filters,
    required,
    short,
)
from pyrometer.collector.gcpause import without_gc
from pyrometer.collector.model import Profile
from pyrometer.collector.render.diff_html import render_diff_html
from pyrometer.collector.render.diff_json import render_diff_json
from pyrometer.collector.storage.reads import SeriesQuery
from pyrometer.collector.storage.store import Store
from pyrometer.collector.timeparse import MAX_TIME_NS, TimeFormatError, format_time, parse_time


class DiffRenderer(Protocol):
    def __call__(self, baseline: Profile, target: Profile, *, baseline_units: float | None = None,
                 target_units: float | None = None, units_name: str = "unit",
                 notice: str = "") -> str: ...

PER = ("second", "request")
FORMATS: Mapping[str, tuple[DiffRenderer, str]] = {
    "json": (render_diff_json, "application/json"),
    "html": (render_diff_html, "text/html; charset=utf-8"),
}


async def flamegraph_diff(request: web.Request) -> web.Response:
    """The handler; see the module docstring for its parameters."""
    query = request.query
    service = required(query, "service")
    now_ns = time.time_ns()
    target = parse_window(query, now_ns=now_ns)
    baseline = baseline_window(query, target, now_ns)
    fmt = choice(query, "format", FORMATS, "json")
    per = choice(query, "per", PER, "second")
    filters = profile_filters(query)
    store = request.app[STORE]
    with request.app[METRICS].time_query("flamegraph_diff"):
        # DuckDB blocks; the two reads run in worker threads side by side
        before, after = await asyncio.gather(*(
            asyncio.to_thread(store.profile, service, w.start_ns, w.end_ns, **filters)
            for w in (baseline, target)))
        units: dict[str, Any] = {}
        if per == "request":
            units = await _request_units(store, service, baseline, target, filters)
    # as for /flamegraph: only an empty answer needs the services listing, and a notice
    notice = ""
    if not before.samples and not after.samples:
        notice = await empty.explain(request, service, target, filters)
    render, content_type = FORMATS[fmt]
    # off the loop, which ingest shares: two trees take CPU seconds to build and encode
    text = await asyncio.to_thread(without_gc(render), before, after, notice=notice, **units)
    return web.Response(text=text, headers={
        "Content-Type": content_type, empty.SAMPLES_HEADER: str(before.total + after.total),
        # the target's, then the baseline's
        empty.RESOLUTION_HEADER: f"{after.resolution}, {before.resolution}"})


async def _request_units(store: Store, service: str, baseline: Window, target: Window,
                         filters: ProfileFilters) -> dict[str, Any]:
    """The requests that ended in each window (instance and version filters applied), as
    the renderers' units; a 400 naming ``per`` when a window has none."""
    counts = await asyncio.gather(*(asyncio.to_thread(_requests, store, service, w, filters)
                                    for w in (baseline, target)))
    for name, count in zip(("baseline", "target"), counts, strict=True):
        if count == 0:
            raise BadParameter("per", f"per=request needs requests in both windows, and the {name} "
                               "window has none; use per=second")
    return {"baseline_units": float(counts[0]), "target_units": float(counts[1]),
            "units_name": "request"}


def _requests(store: Store, service: str, window: Window, filters: ProfileFilters) -> int:
    step = max(window.end_ns - window.start_ns, 1)
    points = store.latency(SeriesQuery(service, window.start_ns, window.end_ns, step,
                                       instance=filters["instance"], version=filters["version"]))
    return sum(p.count for p in points)


def baseline_window(query: Query, target: Window, now_ns: Nanos) -> Window:
    """``baseline_from``/``baseline_to``, each defaulting to the target's length away.

    Kept within the times users can type, so a default never leaves DuckDB's range.
    """
    length = target.end_ns - target.start_ns
    start = _time(query, "baseline_from", now_ns)
    end = _time(query, "baseline_to", now_ns)
    if start is None and end is None:
        end = target.start_ns
    if start is None:
        assert end is not None
        start = max(0, end - length)
    if end is None:
        end = min(MAX_TIME_NS, start + length)
    if start >= end:
        raise BadParameter("baseline_from", f"baseline_from ({format_time(start)}) must be "
                           f"before baseline_to ({format_time(end)})")
    return Window(start, end)


def _time(query: Query, name: str, now_ns: Nanos) -> Nanos | None:
    raw = optional(query, name)
    if raw is None:
        return None
    try:
        return parse_time(raw, now_ns)
    except TimeFormatError as err:
        raise BadParameter(name, f"{name}: {short(str(err))}") from None
