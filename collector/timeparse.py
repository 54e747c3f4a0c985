"""Parse the times and durations users type: RFC 3339, unix seconds, `now-15m`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos

_UNITS = {"ms": 10**6, "s": NANOS_PER_SECOND, "m": 60 * NANOS_PER_SECOND,
          "h": 3600 * NANOS_PER_SECOND, "d": 86400 * NANOS_PER_SECOND,
          "w": 7 * 86400 * NANOS_PER_SECOND}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_RELATIVE = re.compile(r"now(?:\s*([+-])\s*(.+))?")
# Times between 1970 and 2200: anything outside is a typo (or milliseconds), and the
# bound keeps every result inside DuckDB's BIGINT and datetime's range.
_MAX_UNIX_SECONDS = 7_258_118_400
MAX_TIME_NS: Nanos = _MAX_UNIX_SECONDS * NANOS_PER_SECOND
# every form parse_time and parse_duration read, for messages that list them in full
DURATION_FORMS = "a number and a unit (ms, s, m, h, d, w), or several: 250ms, 90s, 15m, 1h30m, 7d"
TIME_FORMS = ("RFC 3339 with a time zone (2026-11-28T10:42:00Z, 2026-11-28T11:42:00+01:00), "
              "unix seconds (1795000000, 1795000000.5), now, or now minus or plus a duration "
              "(now-15m, now-1h30m, now+5m; units ms, s, m, h, d, w)")


class TimeFormatError(ValueError):
    """A time or duration the user wrote that cannot be read; the message says why."""


def parse_duration(text: str) -> Nanos:
    """`90s`, `15m`, `1h30m`, `7d`, `250ms` -> nanoseconds (> 0)."""
    text = text.strip()
    pos, total = 0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += round(float(match.group(1)) * _UNITS[match.group(2)])
        pos = match.end()
    if pos != len(text) or not text:
        raise TimeFormatError(
            f"{text!r} is not a duration: use a number and a unit (ms, s, m, h, d, w), e.g. 15m or 1h30m")
    if total <= 0:
        raise TimeFormatError(f"{text!r}: a duration must be greater than zero")
    return total


def parse_time(text: str, now_ns: Nanos) -> Nanos:
    """RFC 3339 (`2026-11-28T10:42:00Z`), unix seconds (`1795000000.5`), or `now[-+]DURATION`.

    The result lies between 1970 and 2200, or TimeFormatError says why not.
    """
    try:
        ns = _parse_time(text.strip(), now_ns)
    except OverflowError:
        raise TimeFormatError(f"{text!r} is too far from now") from None
    if not 0 <= ns <= MAX_TIME_NS:
        raise TimeFormatError(f"{text!r} is outside 1970..2200")
    return ns


def _parse_time(text: str, now_ns: Nanos) -> Nanos:
    relative = _RELATIVE.fullmatch(text)
    if relative:
        sign, duration = relative.groups()
        if sign is None:
            return now_ns
        offset = parse_duration(duration)
        return now_ns - offset if sign == "-" else now_ns + offset
    try:
        seconds = float(text)
    except ValueError:
        return _parse_rfc3339(text)
    if seconds != seconds:  # NaN compares false with everything, bounds included
        raise TimeFormatError(f"{text!r} is not a time")
    return round(seconds * NANOS_PER_SECOND)


def _parse_rfc3339(text: str) -> Nanos:
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise TimeFormatError(
            f"{text!r} is not a time: use RFC 3339 (2026-11-28T10:42:00Z), unix seconds, "
            "or now-15m") from None
    if moment.tzinfo is None:
        raise TimeFormatError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NANOS_PER_SECOND + delta.microseconds * 1000


def format_duration(ns: Nanos) -> str:
    """A duration as text parse_duration reads back: 10s, 5m, 1h, 250ms (weeks as days)."""
    for unit in ("d", "h", "m", "s", "ms"):
        if ns % _UNITS[unit] == 0:
            return f"{ns // _UNITS[unit]}{unit}"
    return f"{ns / _UNITS['ms']:g}ms"


def format_time(ns: Nanos) -> str:
    """RFC 3339 in UTC with milliseconds, for messages and titles."""
    moment = datetime.fromtimestamp(ns / NANOS_PER_SECOND, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
