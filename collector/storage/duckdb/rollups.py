"""Profile rollups: the sample rows of whole minutes and hours, summed, beside the raw rows.

A flame graph over a day would otherwise aggregate every window of every instance (tens
of millions of rows); with rollups it reads the day's whole hours from `samples_1h`, the
ragged minutes at either end from `samples_1m`, and only the seconds before the first
whole minute and after the last one from `samples`. A window belongs to the bucket its
midpoint falls in, the rule every raw read uses, so the answer is exactly the raw one.

How rollups are written: by compaction (`compact`), a background pass that sums the raw
rows of the minutes up to a watermark, `rollup_state.done_ns`, then the hours up to the
last whole hour of those minutes, and advances the watermark in the same transaction.
Not at ingest: one commit holds one 10 s window per agent, so a per-commit rollup would
be as many rows as the raw ones. Compaction runs a little behind real time, so windows
still arriving land before it; a window that arrives later (a spooled backlog, a slow
clock) has its rollup rows added by the commit that stores it (`add_late`). Either way,
every sample row whose midpoint is before a level's `done_ns` is in that level's rollup,
once. The embedded store serialises commits and compaction under one lock; a backend
with several writers must make a late commit conflict with a compaction that moves the
watermark past it (a compare-and-set on the same rollup_state row, say).

Rollups are keyed by service, version, thread, stack, rate and idle flag, not by
instance or pid: merged across instances they are a few thousand rows per bucket. A
read filtered by instance or pid reads raw rows only.

Latency sketches (`latency_10s`, level "10s"): per 10 s of request end time, per service
and route, the requests in each log-spaced latency bin (sketch.py), so that the spike
detector's percentile series over a day sums a few rows per bin instead of sorting every
request. Compaction rolls them up to their own watermark (a store from before them
starts at its oldest request), and a commit adds the bins of requests that ended below
it, as it does for windows. Unlike the profile rollups they are approximate, within the
sketch's 1% (series.py says when a read uses them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos, RequestRecord
from pyrometer.collector.errors import StorageError
from pyrometer.collector.storage.batch import Columns, DecodedBatch
from pyrometer.collector.storage.duckdb.schema import REQUEST_COLUMNS
from pyrometer.collector.storage.sketch import BUCKET_NS, bin_of, bin_sql

MINUTE_NS = 60 * NANOS_PER_SECOND
HOUR_NS = 3600 * NANOS_PER_SECOND
RAW = "raw"
# the midpoint of a window, as every read computes it
MIDPOINT = "(start_ns + (end_ns - start_ns) // 2)"
_KEY = "service, version, thread, stack_no, rate_hz, idle_included"


@dataclass(frozen=True, slots=True)
class Level:
    """One rollup: its name in answers and rollup_state, its table, its bucket length."""

    name: str
    table: str
    length_ns: Nanos


MINUTES = Level("1m", "samples_1m", MINUTE_NS)
HOURS = Level("1h", "samples_1h", HOUR_NS)
LEVELS = (HOURS, MINUTES)  # coarsest first: a read takes the largest buckets it can
LATENCY = Level("10s", "latency_10s", BUCKET_NS)
ALL_LEVELS = (*LEVELS, LATENCY)  # every rollup table, for retention
_LATENCY_KEY = "service, route, bin"


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Where a window's samples come from: whole buckets [from, to) of rollups, and the
    midpoint ranges [from, to) left over, read from the raw rows."""

    rollups: tuple[tuple[Level, Nanos, Nanos], ...]
    raw: tuple[tuple[Nanos, Nanos], ...]

    @property
    def resolution(self) -> str:
        """The coarsest resolution the plan reads ("1h", "1m"), or "raw"."""
        return self.rollups[0][0].name if self.rollups else RAW


def plan_read(start_ns: Nanos, end_ns: Nanos, done: Mapping[str, Nanos]) -> ReadPlan:
    """Split [start, end) into whole buckets below each level's watermark, coarsest
    first, and the raw ranges left over. `done` maps a level's name to its watermark;
    a level missing from it is not used."""
    pieces = [(start_ns, end_ns)] if end_ns > start_ns else []
    rollups: list[tuple[Level, Nanos, Nanos]] = []
    for level in LEVELS:
        if level.name not in done:
            continue
        length, rest = level.length_ns, []
        for lo, hi in pieces:
            first = -(-lo // length) * length  # the first bucket that starts in the piece
            last = min(hi // length * length, done[level.name] // length * length)
            if last <= first:
                rest.append((lo, hi))
                continue
            rollups.append((level, first, last))
            rest += [p for p in ((lo, first), (last, hi)) if p[1] > p[0]]
        pieces = rest
    rollups.sort(key=lambda r: LEVELS.index(r[0]))
    return ReadPlan(tuple(rollups), tuple(pieces))


def watermarks(cur: duckdb.DuckDBPyConnection) -> dict[str, Nanos]:
    """Each level's done_ns (the highest, should a row ever be doubled)."""
    return dict(cur.execute(
        "SELECT resolution, max(done_ns) FROM rollup_state GROUP BY resolution").fetchall())


def rollup_part(level: Level, first: Nanos, last: Nanos, index: int,
                equal: Mapping[str, object]) -> tuple[str, dict[str, Any]]:
    """A SELECT of (stack_no, rate_hz, idle_included, count) from a rollup's buckets
    [first, last), with equality filters on its key columns; parameters suffixed."""
    clauses = ["service = $service", f"bucket_ns >= $first_{index}", f"bucket_ns < $last_{index}"]
    params: dict[str, Any] = {f"first_{index}": first, f"last_{index}": last}
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = ${column}")
            params[column] = value
    return (f"SELECT stack_no, rate_hz, idle_included, count FROM {level.table} "
            f"WHERE {' AND '.join(clauses)}", params)


def _set_done(con: duckdb.DuckDBPyConnection, level: Level, old: Nanos | None, new: Nanos) -> None:
    if old is None:
        con.execute("INSERT INTO rollup_state VALUES ($r, $new)", {"r": level.name, "new": new})
        return
    # compare-and-set: a watermark another writer moved meanwhile does not match
    (changed,) = con.execute(
        "UPDATE rollup_state SET done_ns = $new WHERE resolution = $r AND done_ns = $old",
        {"r": level.name, "old": old, "new": new}).fetchone() or (0,)
    if not changed:
        raise StorageError(f"rollup watermark {level.name} moved under this compaction; retry")


def _first_bucket(con: duckdb.DuckDBPyConnection, until_ns: Nanos) -> Nanos:
    # a store without a watermark yet: its rollups start at the oldest raw row's minute
    (first,) = con.execute(f"SELECT min({MIDPOINT}) FROM samples").fetchone() or (None,)
    return until_ns if first is None else min(until_ns, first // MINUTE_NS * MINUTE_NS)


def compact(con: duckdb.DuckDBPyConnection, until_ns: Nanos, max_span_ns: Nanos
            ) -> tuple[dict[str, Nanos], dict[str, int]]:
    """One step of compaction in the caller's transaction: roll up the minutes from the
    minute watermark to `until_ns` (at most `max_span_ns` of them), then the hours those
    minutes complete. Returns the new watermarks and the rollup rows written."""
    done = watermarks(con)
    written = {MINUTES.table: 0, HOURS.table: 0}
    until = until_ns // MINUTE_NS * MINUTE_NS
    old_m = done.get(MINUTES.name)
    start = _first_bucket(con, until) if old_m is None else old_m
    target = max(start, min(until, start + max_span_ns // MINUTE_NS * MINUTE_NS))
    if target > start:
        written[MINUTES.table] = _insert(con, MINUTES, f"""
            SELECT {MIDPOINT} // {MINUTE_NS} * {MINUTE_NS} AS bucket, {_KEY}, sum(count)
            FROM samples WHERE start_ns < $b AND end_ns > $a
              AND {MIDPOINT} >= $a AND {MIDPOINT} < $b
            GROUP BY ALL""", start, target)
    if target != old_m:
        _set_done(con, MINUTES, old_m, target)
    old_h = done.get(HOURS.name)
    start_h = start // HOUR_NS * HOUR_NS if old_h is None else old_h
    target_h = max(start_h, target // HOUR_NS * HOUR_NS)
    if target_h > start_h:
        written[HOURS.table] = _insert(con, HOURS, f"""
            SELECT bucket_ns // {HOUR_NS} * {HOUR_NS} AS bucket, {_KEY}, sum(count)
            FROM samples_1m WHERE bucket_ns >= $a AND bucket_ns < $b
            GROUP BY ALL""", start_h, target_h)
    if target_h != old_h:
        _set_done(con, HOURS, old_h, target_h)
    return {MINUTES.name: target, HOURS.name: target_h}, written


def compact_latency(con: duckdb.DuckDBPyConnection, until_ns: Nanos, max_span_ns: Nanos
                    ) -> tuple[Nanos, int]:
    """One step of the latency sketches, in the caller's transaction (its own, apart from
    the profile rollups': a backend with several writers fences the two apart, so that a
    late request and a late window each conflict with the one compaction they meet): the
    requests that ended from the "10s" watermark to `until_ns`, at most `max_span_ns` of
    them. Returns the new watermark and the rows written."""
    old = watermarks(con).get(LATENCY.name)
    length = LATENCY.length_ns
    until = until_ns // length * length
    if old is None:
        (first,) = con.execute("SELECT min(time_ns) FROM requests").fetchone() or (None,)
        start = until if first is None else min(until, first // length * length)
    else:
        start = old
    target = max(start, min(until, start + max_span_ns // length * length))
    rows = 0
    if target > start:
        (rows,) = con.execute(
            f"INSERT INTO {LATENCY.table} SELECT * FROM ("
            f"SELECT time_ns // {length} * {length} AS bucket, service, route, "
            f"{bin_sql('latency_ns')} AS bin, count(*) FROM requests "
            "WHERE time_ns >= $a AND time_ns < $b GROUP BY ALL) "
            f"ORDER BY bucket, {_LATENCY_KEY}", {"a": start, "b": target}).fetchone() or (0,)
    if target != old:
        _set_done(con, LATENCY, old, target)
    return target, int(rows)


def _insert(con: duckdb.DuckDBPyConnection, level: Level, select: str, a: Nanos, b: Nanos) -> int:
    # in bucket order, and within a bucket by key, so the zone maps on bucket_ns prune
    # a read to its buckets and the key columns compress in runs
    (rows,) = con.execute(
        f"INSERT INTO {level.table} SELECT * FROM ({select}) "
        f"ORDER BY bucket, {_KEY}", {"a": a, "b": b}).fetchone() or (0,)
    return int(rows)


def add_late(con: duckdb.DuckDBPyConnection, samples: pa.Table, done: Mapping[str, Nanos]
             ) -> dict[str, int]:
    """The rollup rows of new sample rows whose midpoint is below a level's watermark
    (compaction has passed them), in the caller's transaction, which stores the rows."""
    written: dict[str, int] = {}
    view = "_pyrometer_late_samples"
    con.register(view, samples)
    # rows that name their source by number (the file's) take its strings from sources
    read = f"{view} JOIN sources USING (source_no)" if "source_no" in samples.schema.names \
        else view
    try:
        for level in LEVELS:
            if level.name not in done:
                continue
            length = level.length_ns
            (rows,) = con.execute(
                f"INSERT INTO {level.table} SELECT {MIDPOINT} // {length} * {length}, {_KEY}, "
                f"sum(count) FROM {read} WHERE {MIDPOINT} < $done GROUP BY ALL",
                {"done": done[level.name]}).fetchone() or (0,)
            written[level.table] = int(rows)
    finally:
        con.unregister(view)
    return written


def late_latency(batches: Sequence[DecodedBatch], done: Mapping[str, Nanos]) -> pa.Table | None:
    """The sketch rows of the batches' requests that ended below the latency watermark
    (compaction has passed them), for the commit that stores them; None when none did.
    Binned here rather than in SQL: the file's request rows name their service by
    number, and a late request is rare."""
    below = done.get(LATENCY.name)
    if below is None:
        return None
    length = LATENCY.length_ns
    # the times as stored (schema.RESOLUTION), so that a late request falls in the bin
    # and bucket that compaction would have read it in
    end_unit, latency_unit = (next(c.unit for c in REQUEST_COLUMNS if c.name == name)
                              for name in ("time_ns", "latency_ns"))
    counts: dict[tuple[Nanos, str, str, int], int] = {}
    for batch in batches:
        rows = Columns.of(RequestRecord, batch.telemetry.requests)
        if not rows or min(rows.column("end_ns")) >= below:
            continue  # the usual case, read off one column
        for end_ns, route, latency_ns in zip(rows.column("end_ns"), rows.column("route"),
                                             rows.column("latency_ns"), strict=True):
            end_ns -= end_ns % end_unit
            if end_ns < below:
                key = (end_ns // length * length, batch.source.service, route,
                       bin_of(latency_ns - latency_ns % latency_unit))
                counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    keys = sorted(counts)
    return pa.table({
        "bucket_ns": pa.array([k[0] for k in keys], pa.int64()),
        "service": pa.array([k[1] for k in keys], pa.string()),
        "route": pa.array([k[2] for k in keys], pa.string()),
        "bin": pa.array([k[3] for k in keys], pa.int32()),
        "count": pa.array([counts[k] for k in keys], pa.int64()),
    })
