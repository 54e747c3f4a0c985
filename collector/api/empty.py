"""Why a flame graph (or a diff) came back empty, in one line its reader can act on.

An empty flame graph is a valid answer (a window without data is not an error), but
"0 samples" alone leaves the reader guessing whether the window, a typo in a filter
or a filter combination is to blame. The API puts this line in the answer's `notice`
(JSON, HTML, pprof), and the CLI prints it: "no samples with version 9.9 between ...;
versions seen: 1.0.0, 1.1.0".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from pyrometer.collector.api.params import STORE, UnknownService, Window, run_query, short
from pyrometer.collector.storage.reads import ProfileLabels
from pyrometer.collector.storage.store import ServiceSummary
from pyrometer.collector.timeparse import format_time

SAMPLES_HEADER = "Pyrometer-Samples"  # a flame graph's samples, whatever its format
# the coarsest stored resolution a profile was summed from: "raw", "1m" or "1h" (rollups
# of the window's whole minutes or hours; the counts are the raw ones either way)
RESOLUTION_HEADER = "Pyrometer-Resolution"
MAX_SHOWN = 10  # values listed per label; a service may have thousands of threads
_PLAIN = re.compile(r"[\w.:/@+=-]{1,64}")


def shown(value: object) -> str:
    """A value as a message shows it: bare when it is a plain token, else quoted and cut."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return repr(text if len(text) <= 64 else text[:64] + "...")


def _seen(name: str, values: Sequence[object]) -> str:
    if not values:
        return f"no {name}s seen"
    more = f" and {len(values) - MAX_SHOWN} more" if len(values) > MAX_SHOWN else ""
    return f"{name}s seen: {', '.join(shown(v) for v in values[:MAX_SHOWN])}{more}"


def window_notice(summary: ServiceSummary, start_ns: int, end_ns: int) -> str:
    """The line for a window with no samples at all, of a service that has some elsewhere."""
    return (f"no samples of {shown(summary.name)} between {format_time(start_ns)} and "
            f"{format_time(end_ns)}; it has samples from {format_time(summary.first_seen_ns)} "
            f"to {format_time(summary.last_seen_ns)}")


def filter_notice(filters: Mapping[str, object | None], labels: ProfileLabels,
                  start_ns: int, end_ns: int) -> str:
    """The line for filters that matched nothing in a window that has samples.

    Names the first filter whose value no sample has, with the values seen; when every
    value exists alone but not together, names the combination and each one's values.
    """
    given = {name: value for name, value in filters.items() if value is not None}
    window = f"between {format_time(start_ns)} and {format_time(end_ns)}"
    for name, value in given.items():
        values: Sequence[object] = getattr(labels, name)
        if value not in values:
            return f"no samples with {name} {shown(value)} {window}; {_seen(name, values)}"
    together = " and ".join(f"{name} {shown(value)}" for name, value in given.items())
    seen = "; ".join(_seen(name, getattr(labels, name)) for name in given)
    return f"no samples with {together} together {window}; {seen}"


async def explain(request: web.Request, service: str, window: Window,
                  filters: Mapping[str, Any]) -> str:
    """Why the flame graph of `service` in `window` is empty; UnknownService (404) when
    the service has no samples at all. Only empty answers pay for these (full) scans."""
    store = request.app[STORE]
    known = {s.name: s for s in await run_query(request, "services", store.services)}
    if service not in known:
        raise UnknownService("service", f"unknown service {short(service)}")
    if any(value is not None for value in filters.values()):
        labels = await run_query(request, "labels", store.profile_labels, service,
                                 window.start_ns, window.end_ns)
        if labels.instance:  # the window has samples: the filters are what matched nothing
            return filter_notice(filters, labels, window.start_ns, window.end_ns)
    return window_notice(known[service], window.start_ns, window.end_ns)
