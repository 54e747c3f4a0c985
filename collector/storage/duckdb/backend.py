"""The embedded storage backend, `DuckDBStore`, behind the `Store` seam (store.py).

Ingest and query depend only on `Store`, so a DuckLake backend (PostgreSQL catalog,
Parquet files, many collectors) is a new class, not a rewrite. The rules a backend
keeps: tables are append-only; a retried batch is recognised by the per-agent
high-water mark, written in the same transaction as the insert; and the frame and stack
dictionaries may hold an id more than once, so queries collapse them by id before
joining. DESIGN.md has the mark moved compare-and-set, which is what two writers
committing one retried batch need; a file has one writer (it holds the file's lock), so
here a commit appends the marks it moves and an agent's mark is its highest row
(_write_hwm), and the lake, with several writers, makes appending safe by owning agents
(lake/backend.py).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import ChainMap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from pyrometer.agent.shared.model import Event, Nanos
from pyrometer.collector.errors import DatabaseInUseError, StorageError
from pyrometer.collector.model import Profile
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.append import (
    api_event_table,
    frames_table,
    samples_table,
    source_key,
    sources_table,
    stacks_table,
    telemetry_tables,
)
from pyrometer.collector.storage.duckdb.engine import read_engine_rows, read_engine_steps
from pyrometer.collector.storage.duckdb.events import read_events
from pyrometer.collector.storage.duckdb.label_sets import read_label_sets, read_selected_profile, read_steps
from pyrometer.collector.storage.duckdb.migrate import (
    add_source_labels,
    add_sources,
    add_stack_numbers,
    needs_source_labels,
    needs_sources,
    needs_stack_numbers,
    needs_units,
    to_units,
)
from pyrometer.collector.storage.duckdb.profiles import (
    ProfileFilter,
    StackCache,
    read_labels,
    read_profile,
    read_services,
)
from pyrometer.collector.storage.duckdb.records import (
    read_gpu_rows,
    read_instance_latency,
    read_request_counts,
    read_request_rows,
    read_request_samples,
    read_request_tally,
    read_routes,
    read_slowest_requests,
    read_version_costs,
)
from pyrometer.collector.storage.duckdb.rollups import (
    ALL_LEVELS,
    HOUR_NS,
    LATENCY,
    LEVELS,
    MINUTES,
    add_late,
    compact,
    compact_latency,
    late_latency,
    watermarks,
)
from pyrometer.collector.storage.duckdb.schema import (
    FILE_TABLES,
    SOURCE_KEY,
    TABLES,
    TIME_COLUMNS,
    Layout,
    arrow_schema,
    create_statements,
    migrate_statements,
    numbers_sources,
    read_expr,
    stored_column,
    stored_name,
    view_statements,
)
from pyrometer.collector.storage.duckdb.series import (
    read_engine_series,
    read_gpu,
    read_host,
    read_latency,
    read_latency_quantile,
    read_process,
)
from pyrometer.collector.storage.duckdb.steps_cache import SketchedSteps
from pyrometer.collector.storage.label_sets import LabelSet, LabelSetSummary, StepSamples
from pyrometer.collector.storage.reads import (
    API_AGENT_ID,
    EngineBucket,
    EngineRow,
    EngineStep,
    EventListing,
    GpuPoint,
    GpuRow,
    HostPoint,
    InstanceLatency,
    LatencyPoint,
    ProcessPoint,
    ProfileLabels,
    QuantilePoint,
    RequestRow,
    RequestSample,
    RequestTally,
    RouteSeries,
    SeriesQuery,
    StoredEvent,
    VersionCost,
)
from pyrometer.collector.storage.store import (
    BatchOutcome,
    CommitReport,
    CompactReport,
    ServiceSummary,
)

T = TypeVar("T")


def _delete_sql(table: str, column: str, tables: Layout) -> str:
    # retention by age, from the table that holds the rows (not a view), its time as
    # reads see it (whole milliseconds on disk: schema.RESOLUTION); rowid: delete a
    # bounded chunk, as a DELETE without LIMIT would hold the lock for the whole backlog
    # (a first pass over months of data, say)
    rows = stored_name(table, tables)
    time = read_expr(stored_column(table, column, tables))
    return (f"DELETE FROM {rows} WHERE rowid IN "
            f"(SELECT rowid FROM {rows} WHERE {time} < $cutoff LIMIT $limit)")


_DELETE_ROLLUP_SQL = {
    # a bucket goes once all of it is older than the cutoff
    level.table: f"DELETE FROM {level.table} WHERE rowid IN (SELECT rowid FROM {level.table} "
                 f"WHERE bucket_ns <= $cutoff - {level.length_ns} LIMIT $limit)"
    for level in ALL_LEVELS
}

# commits append high-water marks (DuckDBStore._write_hwm): keep each agent's highest
PRUNE_HWM = ("DELETE FROM agent_hwm USING (SELECT agent_id AS a, max(seq) AS top FROM "
             "agent_hwm GROUP BY agent_id) AS m WHERE agent_id = m.a AND seq < m.top")

_PID = re.compile(r"PID (\d+)")
log = logging.getLogger(__name__)


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise StorageError(f"cannot open database file {path}: {exc}") from exc
        match = _PID.search(str(exc))
        pid = match.group(1) if match else "?"
        raise DatabaseInUseError(
            f"database file {path} is in use by another process (pid {pid}); stop that "
            "collector or give this one another --db"
        ) from exc


class DuckDBStore:
    """A `Store` in one DuckDB file; the collector process is its only writer.

    Writes are serialised by a lock (the group committer sends one group at a time);
    each query runs on its own cursor, so reads do not wait for writes.

    A subclass on another kind of DuckDB database (the lake) opens its connection, sets
    `_tables` and calls `_prepare`; the hooks it may override are `_cursor`,
    `_claim_agents`, `_in_commit`, `_in_compact` and `compact`.
    """

    # the tables on disk: the embedded file numbers stacks 1, 2, 3 (32-bit) and keeps
    # telemetry rows by source number behind views (schema.py, Sources)
    _tables: Layout = FILE_TABLES
    # no other process writes the database, so this one sees every change to it (what
    # keeping latency steps between reads relies on: steps_cache.py)
    _sole_writer = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._prepare(_connect(self.path), f"database file {self.path}")

    def _prepare(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        """Create or migrate the tables on `con` and read what commits need to know;
        `name` says which database in error messages."""
        self._con = con
        self._name = name
        self._lock = threading.Lock()
        self._samples_schema = arrow_schema(stored_name("samples", self._tables), self._tables)
        self._stacks_schema = arrow_schema("stacks", self._tables)
        self._hashed = self._tables["stacks"] != TABLES["stacks"]
        self._sourced = numbers_sources(self._tables)
        self._delete_sql = {table: _delete_sql(table, column, self._tables)
                            for table, column in TIME_COLUMNS.items()}
        try:
            self._migrate()
            # one transaction: the schema appears whole or not at all, and a lake makes
            # one catalog commit of it rather than one per table
            self._con.begin()
            for statement in create_statements(self._tables):
                self._con.execute(statement)
            for statement in migrate_statements(
                    {table: set(names) for table, names in self._columns().items()}, self._tables):
                self._con.execute(statement)
            for statement in view_statements(self._tables):
                self._con.execute(statement)
            self._con.commit()
            # ids this collector need not write again; other writers may still duplicate
            self._known_frames = self._ids("SELECT DISTINCT frame_id FROM frames")
            # each stack's number in this file (see schema.py), and the next one to give
            self._stack_nos: dict[int, int] = dict(self._con.execute(
                "SELECT stack_id, min(stack_no) FROM stacks GROUP BY stack_id").fetchall())
            self._next_stack_no = max(self._stack_nos.values(), default=0) + 1
            # each source's number in this file (schema.SOURCE_KEY), and the next one
            self._source_nos: dict[tuple[str, ...], int] = {
                tuple(row[1:]): row[0] for row in self._con.execute(
                    f"SELECT source_no, {', '.join(SOURCE_KEY)} FROM sources").fetchall()
            } if self._sourced else {}
            self._next_source_no = max(self._source_nos.values(), default=0) + 1
            self._stacks = StackCache()  # stacks read for profiles, by number
            # latency percentile steps settled below the sketches' watermark, for the next
            # read of the same series (steps_cache.py): only where this process is the
            # only writer, so that it sees every change to the sketches
            self._kept_steps = SketchedSteps() if self._sole_writer else None
            # agents' high-water marks as stored, once read or written (see _stored_hwm)
            self._hwm: dict[str, int] = {}
            self._in_order = self._tables_in_order()
            # the rollups' watermarks; only this process moves them (compact, under _lock)
            self._rollup_done = watermarks(self._con)
        except duckdb.Error as exc:
            self._con.close()
            raise StorageError(f"cannot prepare {self._name}: {exc}") from exc

    def _migrate(self) -> None:
        exists = self._con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'stacks'").fetchone() or (0,)
        if exists[0] and needs_stack_numbers(self._con):
            log.info("numbering the stacks of %s (once; a large file takes a while)", self._name)
            self._migrate_step(add_stack_numbers)
        if self._sourced and needs_source_labels(self._con):
            log.info("keeping the labels of %s with its sources (once; a large file takes a while)",
                     self._name)
            self._migrate_step(add_source_labels)
        if self._sourced and needs_sources(self._con):
            log.info("numbering the sources of %s (once; a large file takes a while)", self._name)
            self._migrate_step(add_sources)
        if self._sourced and needs_units(self._con):
            log.info("keeping the times of %s in milliseconds (once; a large file takes a while)",
                     self._name)
            self._migrate_step(to_units)

    def _migrate_step(self, step: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        self._con.begin()
        try:
            step(self._con)
            self._con.commit()
        except duckdb.Error:
            self._rollback()
            raise

    def _ids(self, sql: str) -> set[int]:
        return {row[0] for row in self._con.execute(sql).fetchall()}

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        """See `Store.commit`."""
        with self._lock:
            con = self._con
            try:
                self._claim_agents(con, batches)
                con.begin()
                self._in_commit(con, batches)
                outcomes, stored = self._advance_hwm(con, batches)
                frames = frames_table(stored, self._known_frames, self._stack_nos)
                stacks, numbered = stacks_table(
                    stored, self._stack_nos, None if self._hashed else self._next_stack_no,
                    self._stacks_schema)
                # the sources first: sample and telemetry rows hold their numbers, and a
                # late window's rollup rows read them
                sources, new_sources = self._new_sources(stored)
                self._append(con, "sources", sources)
                source_nos = ChainMap(new_sources, self._source_nos)
                # a plain dict in the steady state (no new stacks): one C lookup a row
                samples = samples_table(stored, ChainMap(numbered, self._stack_nos)
                                        if numbered else self._stack_nos, self._samples_schema,
                                        source_nos if self._sourced else None)
                written = {
                    "samples": self._append(con, stored_name("samples", self._tables), samples),
                    "stacks": self._append(con, "stacks", stacks),
                    "frames": self._append(con, "frames", frames),
                }
                if self._late(stored):
                    # windows compaction has already passed: their rollup rows go in now
                    written |= add_late(con, samples, self._rollup_done)
                late = late_latency(stored, self._rollup_done)
                if late is not None:  # requests that ended below the sketches' watermark
                    written[LATENCY.table] = self._append(con, LATENCY.table, late)
                # telemetry tables appear in the report only when they got rows
                for table, rows in telemetry_tables(stored, self._tables, source_nos).items():
                    written[table] = self._append(con, stored_name(table, self._tables), rows)
                con.commit()
            except (duckdb.Error, StorageError, KeyError) as exc:
                self._rollback()
                if isinstance(exc, StorageError):
                    raise
                if isinstance(exc, KeyError):  # the decoder lets no such batch through
                    raise StorageError(f"a sample row names stack {exc} that its batch "
                                       "does not define") from exc
                raise StorageError(f"commit to {self._name} failed: {exc}") from exc
            # only a committed id is known; a rolled-back one must be written next time
            self._known_frames.update(frames.column("frame_id").to_pylist())
            self._stack_nos.update(numbered)
            self._next_stack_no += len(numbered)
            self._source_nos.update(new_sources)
            self._next_source_no += len(new_sources)
            self._hwm.update((b.source.agent_id, b.seq) for b in stored)
            if late is not None and self._kept_steps is not None:
                self._kept_steps.changed()  # bins went in below the sketches' watermark
        return CommitReport(tuple(outcomes), written)

    def _new_sources(self, batches: Sequence[DecodedBatch]
                     ) -> tuple[pa.Table, dict[tuple[str, ...], int]]:
        if not self._sourced or all(source_key(b.source) in self._source_nos for b in batches):
            # the steady state: every agent's source is numbered (or none is, in a layout
            # with the strings on every row)
            return pa.table({}), {}
        return sources_table(batches, self._source_nos, self._next_source_no)

    def _late(self, batches: Sequence[DecodedBatch]) -> bool:
        # the profile rollups' watermarks only: the latency sketches' is late_latency's
        below = max((self._rollup_done[level.name] for level in LEVELS
                     if level.name in self._rollup_done), default=None)
        if below is None:
            return False
        return any(w.start_ns + (w.end_ns - w.start_ns) // 2 < below
                   for b in batches if (w := b.window) is not None and w.counts)

    def compact(self, until_ns: Nanos, *, max_span_ns: Nanos = HOUR_NS) -> CompactReport:
        """See `Store.compact`."""
        with self._lock:
            try:
                # the profile rollups, then the latency sketches: two transactions, each
                # fenced against the late rows it could miss (_in_compact)
                self._con.begin()
                done, written = compact(self._con, until_ns, max_span_ns)
                self._in_compact(self._con, moved=any(
                    done[k] != self._rollup_done.get(k) for k in done), what="profiles")
                self._con.commit()
                self._rollup_done = {**self._rollup_done, **done}
                self._con.begin()
                latency, written[LATENCY.table] = compact_latency(self._con, until_ns, max_span_ns)
                self._in_compact(self._con, moved=latency != self._rollup_done.get(LATENCY.name),
                                 what="latency")
                self._con.commit()
                done[LATENCY.name] = self._rollup_done[LATENCY.name] = latency
                self._prune_hwm(self._con)
            except (duckdb.Error, StorageError) as exc:
                self._rollback()
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(f"rollup compaction in {self._name} failed: {exc}") from exc
        return CompactReport(written, caught_up=all(
            done[level.name] >= until_ns // level.length_ns * level.length_ns
            for level in (MINUTES, LATENCY)))

    def _rollback(self) -> None:
        try:
            self._con.rollback()
        except duckdb.Error:  # no transaction open (begin failed): nothing to undo
            pass

    def _claim_agents(self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]) -> None:
        """Before the commit's transaction: nothing here, where this process is the only
        writer (a new agent's high-water mark is inserted with its first batch)."""

    def _in_commit(self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]) -> None:
        """First in the commit's transaction: nothing here, where the rollup watermarks
        move only under this process's lock."""

    def _in_compact(self, con: duckdb.DuckDBPyConnection, *, moved: bool, what: str) -> None:
        """Last in a compaction step's transaction, `moved` when it moves a watermark past
        what this process knew: nothing here (see _in_commit)."""

    def _advance_hwm(
        self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]
    ) -> tuple[list[BatchOutcome], list[DecodedBatch]]:
        agents = sorted({b.source.agent_id for b in batches})
        old = self._stored_hwm(con, agents)
        hwm = dict(old)
        outcomes: list[BatchOutcome] = []
        stored: list[DecodedBatch] = []
        for batch in batches:
            agent = batch.source.agent_id
            if agent in hwm and batch.seq <= hwm[agent]:
                outcomes.append(BatchOutcome.DUPLICATE)
                continue
            hwm[agent] = batch.seq
            outcomes.append(BatchOutcome.STORED)
            stored.append(batch)
        self._write_hwm(con, old, hwm)
        return outcomes, stored

    def _stored_hwm(self, con: duckdb.DuckDBPyConnection, agents: Sequence[str]
                    ) -> dict[str, int]:
        """The agents' stored high-water marks (none for an agent never stored).

        This process is the file's one writer (it holds the file's lock), so a mark it
        has read or committed is still the stored one: only agents it has not seen since
        it opened the file are read. At an agent's pace a group commit carries a batch
        or two, and that read was one of its dozen statements (a subclass with several
        writers reads every time)."""
        unknown = [a for a in agents if a not in self._hwm]
        if unknown:
            self._hwm.update(self._read_hwm(con, unknown))
        return {a: self._hwm[a] for a in agents if a in self._hwm}

    @staticmethod
    def _read_hwm(con: duckdb.DuckDBPyConnection, agents: Sequence[str]) -> dict[str, int]:
        return dict(con.execute(
            "SELECT agent_id, max(seq) FROM agent_hwm "
            "WHERE agent_id IN (SELECT unnest($agents)) GROUP BY agent_id",
            {"agents": agents}).fetchall())

    def _write_hwm(
        self, con: duckdb.DuckDBPyConnection, old: dict[str, int], new: dict[str, int]
    ) -> None:
        # appended, not updated: every reader takes an agent's highest mark (_read_hwm)
        # and compaction drops the ones a later row supersedes (_prune_hwm). This
        # process is the file's one writer, so a compare-and-set would guard against
        # nobody; and at an agent's pace, where a group commit carries a few batches,
        # an UPDATE ... FROM of their marks was the commit's dearest statement after the
        # commit itself (1.2-1.4 ms of CPU against 0.5-0.6 for this insert, groups of 10
        # of the bench's batches, 2 cores). The lake appends too (its owner check is what
        # makes that safe there).
        moved = [a for a in new if new[a] != old.get(a)]
        if moved:
            con.execute("INSERT INTO agent_hwm (agent_id, seq) SELECT unnest($a), unnest($s)",
                        {"a": moved, "s": [new[a] for a in moved]})

    def _prune_hwm(self, con: duckdb.DuckDBPyConnection) -> None:
        """Each agent's highest high-water mark alone, after a compaction step (its own
        transaction, under the write lock)."""
        con.execute(PRUNE_HWM)

    def _append(self, con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
        if rows.num_rows == 0:
            return 0  # no statement at all: an empty table costs a commit nothing
        if table in self._in_order:
            # by position, the table scanned by its Python name (DuckDB's replacement
            # scan): cheaper than registering a view for INSERT ... SELECT, or than
            # from_arrow(rows).insert_into(table)
            arrow_rows = rows  # noqa: F841 (read by name, below)
            con.execute(f"INSERT INTO {table} SELECT * FROM arrow_rows")
            return int(rows.num_rows)
        view = f"_pyrometer_new_{table}"
        columns = ", ".join(rows.column_names)
        con.register(view, rows)
        try:
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {view}")
        finally:
            con.unregister(view)
        return int(rows.num_rows)

    def _columns(self) -> dict[str, list[str]]:
        """Each table's columns, in the file's order."""
        return dict(self._con.execute(
            "SELECT table_name, list(column_name ORDER BY column_index) FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "GROUP BY table_name").fetchall())

    def _tables_in_order(self) -> set[str]:
        # tables whose columns are the layout's (`_tables`) in the same order, so the Arrow tables
        # (built from the same schema) can be appended by position; a file written by
        # another layout keeps the insert by column name
        found = self._columns()
        return {table for table, columns in self._tables.items()
                if found.get(table) == [c.name for c in columns]}

    def profile(
        self, service: str, start_ns: Nanos, end_ns: Nanos, *, instance: str | None = None,
        version: str | None = None, thread: str | None = None, pid: int | None = None,
    ) -> Profile:
        """See `Store.profile`."""
        where = ProfileFilter(service, start_ns, end_ns, instance, version, thread, pid)
        return self._read(lambda cur: read_profile(cur, where, self._stacks))

    def label_sets(self, start_ns: Nanos, end_ns: Nanos) -> list[LabelSetSummary]:
        """See `Store.label_sets`."""
        return self._read(lambda cur: read_label_sets(cur, start_ns, end_ns))

    def select_profile(self, start_ns: Nanos, end_ns: Nanos, sets: Sequence[LabelSet]) -> Profile:
        """See `Store.select_profile`."""
        return self._read(lambda cur: read_selected_profile(cur, start_ns, end_ns, sets))

    def select_steps(self, start_ns: Nanos, end_ns: Nanos, step_ns: Nanos,
                     sets: Sequence[LabelSet]) -> list[StepSamples]:
        """See `Store.select_steps`."""
        return self._read(lambda cur: read_steps(cur, start_ns, end_ns, step_ns, sets))

    def services(self) -> list[ServiceSummary]:
        """See `Store.services`."""
        return self._read(lambda cur: [ServiceSummary(*row) for row in read_services(cur)])

    def profile_labels(self, service: str, start_ns: Nanos, end_ns: Nanos) -> ProfileLabels:
        """See `Store.profile_labels`."""
        where = ProfileFilter(service, start_ns, end_ns)
        return self._read(lambda cur: read_labels(cur, where))

    def latency(self, query: SeriesQuery) -> list[LatencyPoint]:
        """See `Store.latency`."""
        return self._read(lambda cur: read_latency(cur, query))

    def latency_quantile(self, query: SeriesQuery, quantile: str
                         ) -> tuple[list[QuantilePoint], list[RouteSeries], str]:
        """See `Store.latency_quantile`."""
        return self._read(lambda cur: read_latency_quantile(cur, query, quantile,
                                                            kept=self._kept_steps))

    def gpu(self, query: SeriesQuery) -> list[GpuPoint]:
        """See `Store.gpu`."""
        return self._read(lambda cur: read_gpu(cur, query))

    def process(self, query: SeriesQuery) -> list[ProcessPoint]:
        """See `Store.process`."""
        return self._read(lambda cur: read_process(cur, query))

    def host(self, query: SeriesQuery) -> list[HostPoint]:
        """See `Store.host`."""
        return self._read(lambda cur: read_host(cur, query))

    def engine(self, query: SeriesQuery) -> list[EngineBucket]:
        """See `Store.engine`."""
        return self._read(lambda cur: read_engine_series(cur, query))

    def events(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
               kind: str | None = None) -> EventListing:
        """See `Store.events`."""
        return self._read(lambda cur: read_events(cur, service, start_ns, end_ns, kind))

    def request_records(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                        route: str | None = None, instance: str | None = None,
                        budget: int | None = None) -> list[RequestRow]:
        """See `Store.request_records`."""
        return self._read(lambda cur: read_request_rows(cur, service, start_ns, end_ns, route,
                                                        instance, budget))

    def request_samples(self, service: str, start_ns: Nanos, end_ns: Nanos, *, unit: str,
                        route: str | None = None, instance: str | None = None,
                        budget: int | None = None) -> list[RequestSample]:
        """See `Store.request_samples`."""
        return self._read(lambda cur: read_request_samples(cur, service, start_ns, end_ns, unit,
                                                           route, instance, budget))

    def request_tally(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                      spike: tuple[Nanos, Nanos], baseline_start_ns: Nanos, step_ns: Nanos,
                      slow_ns: Nanos, route: str | None = None, instance: str | None = None,
                      excluded: Sequence[tuple[Nanos, Nanos]] = ()) -> RequestTally:
        """See `Store.request_tally`."""
        return self._read(lambda cur: read_request_tally(
            cur, service, start_ns, end_ns, spike=spike, baseline_start_ns=baseline_start_ns,
            step_ns=step_ns, slow_ns=slow_ns, route=route, instance=instance, excluded=excluded))

    def instance_latency(self, service: str, baseline: tuple[Nanos, Nanos],
                         spike: tuple[Nanos, Nanos], quantile: float, *,
                         route: str | None = None) -> list[InstanceLatency]:
        """See `Store.instance_latency`."""
        return self._read(lambda cur: read_instance_latency(cur, service, baseline, spike,
                                                            quantile, route))

    def gpu_readings(self, service: str, start_ns: Nanos, end_ns: Nanos, *,
                     instance: str | None = None, budget: int | None = None) -> list[GpuRow]:
        """See `Store.gpu_readings`."""
        return self._read(lambda cur: read_gpu_rows(cur, service, start_ns, end_ns, instance,
                                                    budget))

    def engine_readings(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[EngineRow]:
        """See `Store.engine_readings`."""
        return self._read(lambda cur: read_engine_rows(cur, service, start_ns, end_ns))

    def engine_steps(self, service: str, start_ns: Nanos, end_ns: Nanos, *, origin_ns: Nanos,
                     step_ns: Nanos, instance: str | None = None) -> list[EngineStep]:
        """See `Store.engine_steps`."""
        return self._read(lambda cur: read_engine_steps(cur, service, start_ns, end_ns, origin_ns,
                                                        step_ns, instance))

    def slowest_requests(self, service: str, start_ns: Nanos, end_ns: Nanos, *, limit: int,
                         route: str | None = None, instance: str | None = None
                         ) -> list[RequestRow]:
        """See `Store.slowest_requests`."""
        return self._read(lambda cur: read_slowest_requests(cur, service, start_ns, end_ns, limit,
                                                            route, instance))

    def version_costs(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[VersionCost]:
        """See `Store.version_costs`."""
        return self._read(lambda cur: read_version_costs(cur, service, start_ns, end_ns))

    def request_counts(self, service: str, windows: Sequence[tuple[Nanos, Nanos]], *,
                       threshold_ns: Nanos, route: str | None = None) -> list[tuple[int, int]]:
        """See `Store.request_counts`."""
        return self._read(lambda cur: read_request_counts(cur, service, windows, threshold_ns,
                                                          route))

    def routes(self, service: str, start_ns: Nanos, end_ns: Nanos) -> list[tuple[str, int]]:
        """See `Store.routes`."""
        return self._read(lambda cur: read_routes(cur, service, start_ns, end_ns))

    def add_event(self, service: str, event: Event) -> StoredEvent:
        """See `Store.add_event`."""
        with self._lock:
            try:
                self._con.begin()
                self._append(self._con, "events", api_event_table(service, event))
                self._con.commit()
            except duckdb.Error as exc:
                self._rollback()
                raise StorageError(f"storing an event in {self._name} failed: {exc}") from exc
        return StoredEvent(
            time_ns=event.time_ns, service=service, instance="", host="", agent_id=API_AGENT_ID,
            version=event.version, kind=event.kind, previous_version=event.previous_version,
            pid=event.pid, previous_pid=event.previous_pid, attrs=tuple(sorted(event.attrs)),
        )

    def delete_before(self, cutoff_ns: Nanos, *, limit: int = 50_000,
                      rollup_cutoff_ns: Nanos | None = None) -> dict[str, int]:
        """See `Store.delete_before`."""
        statements = dict(self._delete_sql)
        if rollup_cutoff_ns is not None:
            statements |= _DELETE_ROLLUP_SQL
        deleted: dict[str, int] = {}
        for table, sql in statements.items():
            cutoff = rollup_cutoff_ns if table in _DELETE_ROLLUP_SQL else cutoff_ns
            # one short transaction per table: a commit waits for one chunk at most
            with self._lock:
                try:
                    self._con.begin()
                    (rows,) = self._con.execute(
                        sql, {"cutoff": cutoff, "limit": limit}).fetchone() or (0,)
                    self._con.commit()
                except duckdb.Error as exc:
                    self._rollback()
                    raise StorageError(f"retention delete in {self._name} failed: {exc}") from exc
            deleted[table] = int(rows)
            if table == LATENCY.table and rows and self._kept_steps is not None:
                self._kept_steps.changed()  # settled steps lost their oldest sketch rows
        return deleted

    def table_rows(self) -> dict[str, int]:
        """Rows in every table (for tests and diagnostics; a full count per table)."""
        return self._read(lambda cur: {
            table: int((cur.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,))[0])
            for table in TABLES})

    def _read(self, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        # a cursor of its own per read: DuckDB connections are not shared across threads
        try:
            with self._cursor() as cur:
                return query(cur)
        except duckdb.Error as exc:
            raise StorageError(f"query on {self._name} failed: {exc}") from exc

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def close(self) -> None:
        """See `Store.close`."""
        with self._lock:
            self._con.close()
