"""SQL reads over the storage schema: merged profiles and the services listing.

A profile reads whole minutes and hours from the rollups where they cover its window,
and raw sample rows for the rest (rollups.py); the answer is the same either way.

Stacks and frames are collapsed by id (any_value) before they are used, because once
several collectors write, the dictionaries may hold the same id more than once and a
plain join would count a sample once per copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import duckdb

from pyrometer.agent.shared.model import Frame, Nanos, Stack
from pyrometer.collector.model import Profile, by_count
from pyrometer.collector.storage.duckdb.rollups import ReadPlan, plan_read, rollup_part, watermarks
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

    def where(self, suffix: str = "") -> tuple[str, dict[str, Any]]:
        """A parameterised WHERE clause (without the keyword) and its parameters; `suffix`
        tells apart the window parameters of several clauses in one statement."""
        # a window counts when its midpoint is in [start, end); the plain bounds on
        # start_ns and end_ns follow from that and let DuckDB skip row groups early
        start, end = f"$start{suffix}", f"$end{suffix}"
        clauses = [
            "service = $service",
            f"start_ns < {end} AND end_ns > {start}",
            f"start_ns + (end_ns - start_ns) // 2 >= {start}",
            f"start_ns + (end_ns - start_ns) // 2 < {end}",
        ]
        params: dict[str, Any] = {
            "service": self.service, f"start{suffix}": self.start_ns, f"end{suffix}": self.end_ns,
        }
        for column in ("instance", "version", "thread", "pid"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ${column}")
                params[column] = value
        return " AND ".join(clauses), params

    @property
    def rolls_up(self) -> bool:
        """Whether rollups can answer it: they are not kept per instance or pid."""
        return self.instance is None and self.pid is None

    def plan(self, done: Mapping[str, Nanos]) -> ReadPlan:
        """Where its samples come from, given the rollups' watermarks."""
        return plan_read(self.start_ns, self.end_ns, done if self.rolls_up else {})

    def parts(self, plan: ReadPlan) -> tuple[str, dict[str, Any]]:
        """One SELECT of (stack_no, rate_hz, idle_included, count) per part of `plan`,
        joined by UNION ALL, and their parameters."""
        selects: list[str] = []
        params: dict[str, Any] = {"service": self.service}
        equal = {"version": self.version, "thread": self.thread}
        for n, (level, first, last) in enumerate(plan.rollups):
            sql, more = rollup_part(level, first, last, n, equal)
            selects.append(sql)
            params |= more
        # an empty window still needs one SELECT (that matches nothing)
        raw = plan.raw if plan.raw or plan.rollups else ((self.start_ns, self.end_ns),)
        for n, (lo, hi) in enumerate(raw):
            clause, more = replace(self, start_ns=lo, end_ns=hi).where(f"_{n}")
            selects.append(f"SELECT stack_no, rate_hz, idle_included, count FROM samples "
                           f"WHERE {clause}")
            params |= more
        return " UNION ALL ".join(selects), params


def read_profile(cur: duckdb.DuckDBPyConnection, where: ProfileFilter,
                 cache: StackCache | None = None) -> Profile:
    """The merged profile for `where`, stacks by descending count, then by stack."""
    plan = where.plan(watermarks(cur) if where.rolls_up else {})
    parts, params = where.parts(plan)
    rows = cur.execute(
        "SELECT stack_no, rate_hz, bool_or(idle_included), sum(count)::BIGINT "
        f"FROM ({parts}) GROUP BY stack_no, rate_hz",
        params,
    ).fetchall()
    return merge_rows(cur, rows, where.service, where.start_ns, where.end_ns, plan.resolution,
                      cache)


def merge_rows(cur: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], service: str,
               start_ns: Nanos, end_ns: Nanos, resolution: str = "raw",
               cache: StackCache | None = None) -> Profile:
    """A Profile from (stack_no, rate_hz, idle_included, count) rows; `resolution` says
    whether they were summed from raw windows or from rollups ("1m", "1h")."""
    counts: dict[int, int] = {}
    by_rate: dict[float, int] = {}
    idle = False
    for stack_no, rate, stack_idle, count in rows:
        counts[stack_no] = counts.get(stack_no, 0) + count
        by_rate[rate] = by_rate.get(rate, 0) + count
        idle = idle or stack_idle
    stacks = _read_stacks(cur, counts, cache)
    samples = by_count(
        [(stacks[sid], n) for sid, n in counts.items() if sid in stacks])
    # mixed rates are rare (a restarted agent with a new --rate): report the one
    # most samples were taken at
    rate = max(by_rate, key=lambda r: (by_rate[r], r)) if by_rate else DEFAULT_RATE_HZ
    return Profile(service, start_ns, end_ns, tuple(samples), rate, idle, resolution)


class StackCache:
    """Stacks already read, by number, so a flame graph does not read the same thousands
    of stacks and their frames again on every call.

    Safe to keep for as long as the store is open: a stack's number in a file never
    changes, nor does the stack (its id is a hash of its frames). Bounded: past `max_stacks`
    it starts again empty. Reads on several threads share it; each step is one dict
    operation, atomic under the GIL, and a lost race only reads a stack twice.
    """

    def __init__(self, max_stacks: int = 50_000) -> None:
        self.max_stacks = max_stacks
        self.stacks: dict[int, Stack] = {}

    def add(self, found: dict[int, Stack]) -> None:
        if len(found) > self.max_stacks:
            return  # one read larger than the cache: keep what it holds
        if len(self.stacks) + len(found) > self.max_stacks:
            self.stacks = {}
        self.stacks.update(found)


def _read_stacks(cur: duckdb.DuckDBPyConnection, stack_nos: Iterable[int],
                 cache: StackCache | None = None) -> dict[int, Stack]:
    """Stacks by their number in this file."""
    known = cache.stacks if cache is not None else {}
    out: dict[int, Stack] = {}
    missing: list[int] = []
    for sid in stack_nos:
        stack = known.get(sid)
        if stack is None:
            missing.append(sid)
        else:
            out[sid] = stack
    if missing:
        found = _read_new_stacks(cur, missing)
        if cache is not None:
            cache.add(found)
        out |= found
    return out


def _read_new_stacks(cur: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, Stack]:
    stack_rows = cur.execute(
        "SELECT stack_no, any_value(frame_ids) FROM stacks "
        "WHERE stack_no IN (SELECT unnest($ids)) GROUP BY stack_no",
        {"ids": ids},
    ).fetchall()
    frame_ids = sorted({f for _, frames in stack_rows for f in frames})
    frame_rows = cur.execute(
        "SELECT frame_id, any_value(name), any_value(file), any_value(line) FROM frames "
        "WHERE frame_id IN (SELECT unnest($ids)) GROUP BY frame_id",
        {"ids": frame_ids},
    ).fetchall()
    frames = {fid: Frame(name, file, line) for fid, name, file, line in frame_rows}
    # a stack whose frames are missing cannot be drawn; it is left out, not guessed (nor
    # cached: its frames may be committed later)
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
