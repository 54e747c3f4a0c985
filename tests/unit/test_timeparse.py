from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrometer.collector.timeparse import TimeFormatError, format_time, parse_duration, parse_time

NOW = 1_795_862_520_000_000_000  # 2026-11-28T10:42:00Z
S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-15m", NOW - 900 * S),
        ("now - 1h30m", NOW - 5400 * S),
        ("now+10s", NOW + 10 * S),
        ("2026-11-28T10:42:00Z", NOW),
        ("2026-11-28T11:42:00+01:00", NOW),
        ("2026-11-28T10:42:00.250Z", NOW + 250_000_000),
        ("1795862520", NOW),
        ("1795862520.5", NOW + S // 2),
    ],
)
def test_parse_time_accepts_the_documented_forms(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-11-28T10:42:00", "now-", "now-15", "now-5x", "-1",
             "1e30", "2026-13-01T00:00:00Z", "nan"])
def test_parse_time_rejects_with_a_message(text: str) -> None:
    with pytest.raises(TimeFormatError) as err:
        parse_time(text, NOW)
    assert str(err.value)


@pytest.mark.parametrize(("text", "ns"), [("250ms", 250_000_000), ("10s", 10 * S),
                                           ("1h30m", 5400 * S), ("7d", 7 * 86400 * S),
                                           ("1.5m", 90 * S)])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "m", "0s", "10 parsecs", "5m extra"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda ms: ms * 1_000_000))
def test_format_time_round_trips_at_millisecond_precision(ns: int) -> None:
    assert parse_time(format_time(ns), NOW) == ns


@pytest.mark.parametrize("text", ["now-100000000w", "9999-01-01T00:00:00Z", "now-1" + "0" * 400 + "w",
                                  "1969-12-31T23:59:59Z", "now+200000w"])
def test_times_outside_1970_to_2200_are_refused(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_time(text, NOW)
