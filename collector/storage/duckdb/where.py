"""The WHERE clause every time-ordered telemetry read shares: one service, a time window
[start, end) on time_ns, and optional equality filters. Parameterised SQL only."""

from __future__ import annotations

from typing import Any

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.storage.reads import SeriesQuery


def time_window(service: str, start_ns: Nanos, end_ns: Nanos,
                **equal: str | int | None) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (without the keyword) and its parameters; `equal` maps a column to
    the value it must have, None matching everything. Column names come from the code
    that calls this, never from a request, so they are inlined; values are parameters."""
    clauses = ["service = $service", "time_ns >= $start", "time_ns < $end"]
    params: dict[str, Any] = {"service": service, "start": start_ns, "end": end_ns}
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = ${column}")
            params[column] = value
    return " AND ".join(clauses), params


def series_where(query: SeriesQuery, with_route: bool = False) -> tuple[str, dict[str, Any]]:
    """`time_window` for a series query, with its step as the `$step` parameter."""
    clause, params = time_window(query.service, query.start_ns, query.end_ns,
                                 instance=query.instance, version=query.version,
                                 route=query.route if with_route else None)
    params["step"] = query.step_ns
    return clause, params


def step_of(expr: str) -> str:
    """SQL for the step of a grid from $s0 by $step that holds the time `expr`, negative
    before $s0: floored as Python's // is (DuckDB's // truncates toward zero)."""
    offset = f"({expr} - $s0)"
    return f"({offset} - (({offset} % $step) + $step) % $step) // $step"
