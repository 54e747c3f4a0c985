"""Service level objectives on request latency: budget left, burn rates, page or ticket.

An objective is "`objective` of the requests of a service (and route) finish under
`threshold_ms`, with a status below 500, over `period`" ("99% under 300 ms over 28
days"). A latency-percentile target ("p99 under 300 ms") is the same objective: the
99th percentile of a window is at most 300 ms exactly when at least 99% of its requests
are, so the config accepts either spelling and both become (0.99, 300 ms).

Error budget: the share of the period's requests allowed to be bad, 1 - objective.
Budget left = 1 - bad / (budget x requests) over the period (negative once overspent).
Burn rate of a window = its bad share / (1 - objective): 1 spends the budget exactly over
the period. The alert follows the multi-window, multi-burn-rate scheme of Google's SRE
workbook (chapter "Alerting on SLOs"): *page* when both the 1 h and the 5 min windows
burn at 14.4 or more (2% of a 30-day budget in an hour; the short window makes the
alert stop soon after the burning does), *ticket* when both the 6 h and the 30 min
windows burn at 6 or more (5% in six hours), else *ok*. A window without requests
burns nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.jsonfile import FileConfigError, read_json
from pyrometer.collector.storage.store import Store
from pyrometer.collector.timeparse import TimeFormatError, parse_duration

MINUTE = 60 * NANOS_PER_SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# (long window, short window, burn rate both must reach, the state it raises)
ALERT_WINDOWS: tuple[tuple[Nanos, Nanos, float, str], ...] = (
    (HOUR, 5 * MINUTE, 14.4, "page"),
    (6 * HOUR, 30 * MINUTE, 6.0, "ticket"),
)
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class Objective:
    name: str
    service: str
    objective: float  # the share of requests that must be good, e.g. 0.99
    threshold_ms: float
    period_ns: Nanos = 28 * DAY
    route: str | None = None

    @property
    def budget(self) -> float:
        # rounded: 1 - 0.99 is 0.010000000000000009 in binary, which would put a burn of
        # exactly 6 just under the ticket's threshold
        return round(1.0 - self.objective, 12)


@dataclass(frozen=True, slots=True)
class WindowBurn:
    window_ns: Nanos
    requests: int
    bad: int
    burn_rate: float  # 0 without requests


@dataclass(frozen=True, slots=True)
class SloStatus:
    objective: Objective
    at_ns: Nanos
    requests: int  # over the period
    bad: int
    budget_left: float  # 1: untouched, 0: spent, < 0: overspent; NaN without requests
    burns: tuple[WindowBurn, ...]  # one per distinct alert window, shortest first
    state: str  # "page", "ticket" or "ok"


def windows(objective: Objective, at_ns: Nanos) -> list[tuple[Nanos, Nanos]]:
    """The period, then each distinct alert window, all ending at `at_ns`."""
    lengths = sorted({w for long, short, _, _ in ALERT_WINDOWS for w in (long, short)})
    return [(at_ns - objective.period_ns, at_ns)] + [(at_ns - w, at_ns) for w in lengths]


def evaluate(objective: Objective, at_ns: Nanos, counts: Sequence[tuple[int, int]]) -> SloStatus:
    """The status from `counts` ((requests, good) per window of `windows`, in order)."""
    (total, good), *rest = counts
    lengths = sorted({w for long, short, _, _ in ALERT_WINDOWS for w in (long, short)})
    burns = []
    for length, (n, ok) in zip(lengths, rest, strict=True):
        bad = n - ok
        burns.append(WindowBurn(length, n, bad, (bad / n) / objective.budget if n else 0.0))
    rate = {b.window_ns: b.burn_rate for b in burns}
    state = "ok"
    for long, short, threshold, name in ALERT_WINDOWS:  # page first: the worse state wins
        if rate[long] >= threshold and rate[short] >= threshold:
            state = name
            break
    bad = total - good
    left = 1.0 - bad / (objective.budget * total) if total else math.nan
    return SloStatus(objective, at_ns, total, bad, left, tuple(burns), state)


def status_at(store: Store, objective: Objective, at_ns: Nanos) -> SloStatus:
    """The objective's status at `at_ns`, counted from the store in one scan."""
    counts = store.request_counts(objective.service, windows(objective, at_ns),
                                  threshold_ns=round(objective.threshold_ms * 1_000_000),
                                  route=objective.route)
    return evaluate(objective, at_ns, counts)


class SloConfigError(FileConfigError):
    """An objectives file that cannot be used; the message names the file and the entry."""


def load_objectives(path: Path) -> tuple[Objective, ...]:
    """A JSON file of objectives:

    {"slos": [{"name": "predict-latency", "service": "model", "route": "/v1/predict",
               "objective": 0.99, "threshold_ms": 300, "period": "28d"},
              {"name": "p95", "service": "model", "percentile": "p95", "threshold_ms": 120}]}
    """
    doc = read_json(path, "objectives", SloConfigError)
    items = doc.get("slos") if isinstance(doc, Mapping) else None
    if not isinstance(items, list):
        raise SloConfigError(f'objectives {path}: expected {{"slos": [...]}}')
    found = tuple(_objective(f"objectives {path}, entry {n}", item)
                  for n, item in enumerate(items, 1))
    names = [o.name for o in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SloConfigError(f"objectives {path}: names used twice: {', '.join(twice)}")
    return found


def _objective(where: str, item: Any) -> Objective:
    if not isinstance(item, Mapping):
        raise SloConfigError(f"{where}: expected an object")
    unknown = set(item) - {"name", "service", "route", "objective", "percentile", "threshold_ms",
                           "period"}
    if unknown:
        raise SloConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "service"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise SloConfigError(f'{where}: needs "{key}" (a non-empty string)')
    if ("objective" in item) == ("percentile" in item):
        raise SloConfigError(f'{where}: give exactly one of "objective" (e.g. 0.99) or '
                             '"percentile" (e.g. "p99")')
    if "percentile" in item:
        match = _PERCENTILE.match(str(item["percentile"]))
        if not match:
            raise SloConfigError(f"{where}: percentile {item['percentile']!r}: expected p50-p99.99")
        share = float(match.group(1)) / 100
    else:
        share = item["objective"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise SloConfigError(f"{where}: objective {share!r}: expected a share between 0 and 1, "
                             "e.g. 0.99")
    threshold = item.get("threshold_ms")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0 < threshold < 86_400_000):
        raise SloConfigError(f'{where}: needs "threshold_ms", a positive number of milliseconds')
    period = item.get("period", "28d")
    try:
        period_ns = parse_duration(str(period))
    except TimeFormatError as err:
        raise SloConfigError(f"{where}: period: {err}") from None
    if not HOUR * 6 <= period_ns <= 400 * DAY:
        raise SloConfigError(f"{where}: period {period}: expected 6h to 400d")
    route = item.get("route")
    if route is not None and (not isinstance(route, str) or not route):
        raise SloConfigError(f"{where}: route must be a non-empty string")
    return Objective(item["name"], item["service"], float(share), float(threshold), period_ns,
                     route)
