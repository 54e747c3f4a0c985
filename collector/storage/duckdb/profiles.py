"""SQL reads over the storage schema: merged profiles and the services listing.

Stacks and frames are collapsed by id (any_value) before they are used, because once
several collectors write, the dictionaries may hold the same id more than once and a
plain join would count a sample once per copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Frame, Nanos, Stack
from pyrometer.collector.model import Profile
from pyrometer.collector.storage.reads import ProfileLabels

DEFAULT_RATE_HZ = 100.0  # what an empty profile reports; py-spy's default rate


@dataclass(frozen=True, slots=True)
class ProfileFilter:
    """Which sample rows a profile merges; None filters match everything."""

    service: str
    start_ns: Nanos
    end_ns: Nanos
    instance: str | None = None
    version: str | None = None
    thread: str | None = None
    pid: int | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """A parameterised WHERE clause (without the keyword) and its parameters."""
        # a window counts when its midpoint is in [start, end); the plain bounds on
        # start_ns and end_ns follow from that and let DuckDB skip row groups early
        clauses = [
            "service = $service",
            "start_ns < $end AND end_ns > $start",
            "start_ns + (end_ns - start_ns) // 2 >= $start",
            "start_ns + (end_ns - start_ns) // 2 < $end",
        ]
        params: dict[str, Any] = {
            "service": self.service, "start": self.start_ns, "end": self.end_ns,
        }
        for column in ("instance", "version", "thread", "pid"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ${column}")
                params[column] = value
        return " AND ".join(clauses), params


def read_profile(cur: duckdb.DuckDBPyConnection, where: ProfileFilter) -> Profile:
    """The merged profile for `where`, stacks by descending count, then by stack."""
    clause, params = where.where()
    rows = cur.execute(
        "SELECT stack_id, rate_hz, bool_or(idle_included), sum(count)::BIGINT "
        f"FROM samples WHERE {clause} GROUP BY stack_id, rate_hz",
        params,
    ).fetchall()
    return merge_rows(cur, rows, where.service, where.start_ns, where.end_ns)


def merge_rows(cur: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], service: str,
               start_ns: Nanos, end_ns: Nanos) -> Profile:
    """A Profile from (stack_id, rate_hz, idle_included, count) rows."""
    counts: dict[int, int] = {}
    by_rate: dict[float, int] = {}
    idle = False
    for stack_id, rate, stack_idle, count in rows:
        counts[stack_id] = counts.get(stack_id, 0) + count
        by_rate[rate] = by_rate.get(rate, 0) + count
        idle = idle or stack_idle
    stacks = _read_stacks(cur, counts)
    samples = sorted(
        ((stacks[sid], n) for sid, n in counts.items() if sid in stacks),
        key=lambda item: (-item[1], [(f.name, f.file, f.line) for f in item[0]]),
    )
    # mixed rates are rare (a restarted agent with a new --rate): report the one
    # most samples were taken at
    rate = max(by_rate, key=lambda r: (by_rate[r], r)) if by_rate else DEFAULT_RATE_HZ
    return Profile(service, start_ns, end_ns, tuple(samples), rate, idle)


def _read_stacks(cur: duckdb.DuckDBPyConnection, stack_ids: Iterable[int]) -> dict[int, Stack]:
    ids = list(stack_ids)
    if not ids:
        return {}
    stack_rows = cur.execute(
        "SELECT stack_id, any_value(frame_ids) FROM stacks "
        "WHERE stack_id IN (SELECT unnest($ids)) GROUP BY stack_id",
        {"ids": ids},
    ).fetchall()
    frame_ids = sorted({f for _, frames in stack_rows for f in frames})
    frame_rows = cur.execute(
        "SELECT frame_id, any_value(name), any_value(file), any_value(line) FROM frames "
        "WHERE frame_id IN (SELECT unnest($ids)) GROUP BY frame_id",
        {"ids": frame_ids},
    ).fetchall()
    frames = {fid: Frame(name, file, line) for fid, name, file, line in frame_rows}
    # a stack whose frames are missing cannot be drawn; it is left out, not guessed
    return {
        sid: tuple(frames[f] for f in fids)
        for sid, fids in stack_rows
        if all(f in frames for f in fids)
    }


def read_services(
    cur: duckdb.DuckDBPyConnection,
) -> list[tuple[str, tuple[str, ...], Nanos, Nanos, int]]:
    """(name, sorted instances, first start, last end, samples) per service, by name."""
    rows = cur.execute(
        "SELECT service, list(DISTINCT instance), min(start_ns), max(end_ns), "
        "sum(count)::BIGINT FROM samples GROUP BY service ORDER BY service"
    ).fetchall()
    return [(name, tuple(sorted(inst)), first, last, n) for name, inst, first, last, n in rows]


def read_labels(cur: duckdb.DuckDBPyConnection, where: ProfileFilter) -> ProfileLabels:
    """The distinct instance, version, thread and pid values of the rows `where` selects."""
    clause, params = where.where()
    row = cur.execute(
        "SELECT list(DISTINCT instance), list(DISTINCT version), list(DISTINCT thread), "
        f"list(DISTINCT pid) FROM samples WHERE {clause}",
        params,
    ).fetchone()
    if row is None:
        return ProfileLabels()
    instances, versions, threads, pids = (sorted(v for v in values or () if v is not None)
                                          for values in row)
    return ProfileLabels(tuple(instances), tuple(versions), tuple(threads), tuple(pids))
