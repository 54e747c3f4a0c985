"""`LakeStore`: the `Store` of many collectors writing one DuckLake (docs/lake.md).

The catalog is a PostgreSQL database, the data Parquet files under a data path (s3://
or a local folder). Each collector attaches the lake to an in-memory DuckDB and runs the
embedded backend's SQL on it unchanged (`USE lake`); what differs is what several
writers need:

- stacks are numbered by their 64-bit id (schema.HASHED_TABLES), since numbers given
  1, 2, 3 by several writers would clash;
- exactly once without commits conflicting with each other: DuckLake conflicts an insert
  with any concurrent delete from the same table (a table, not a row), so a
  compare-and-set UPDATE of the high-water marks made every commit of every collector
  take turns (BENCHMARKS-lake.md: two collectors ingested 0.71x of one, three 0.43x).
  Instead a collector *owns* the agents it stores batches for: it claims an agent (a
  short transaction that rewrites the agent's rows in agent_hwm and agent_owner, and
  deletes from claim_fence so that two claims always conflict) before its first commit
  for it, and each commit checks in its own transaction that it still owns its agents,
  then appends the new high-water marks to agent_hwm, insert only. Commits never
  conflict with each other; a claim conflicts with every commit in flight, so a
  collector still committing an agent's batch when another claims it either commits
  first (and the claimer's commits see its marks) or runs again, finds it lost the
  agent and claims it back. Claims happen when an agent connects to a collector, so
  rarely;
- a commit that loses a conflict (a claim, a maintenance step, another compaction) is
  run again from the start;
- profile rollups are written by every collector's compaction, and a commit of a window
  old enough that a compaction may be rolling up its minute meanwhile conflicts with
  that compaction through a fence table, so one of the two runs again and sees the
  other (_in_commit); without it a late window committed by one collector while another
  moves the rollup watermark would be missed by the rollups;
- retention and the lake's own upkeep (merging small files, expiring snapshots) run as
  one maintenance pass at a time across the collectors, under a lease (maintenance.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import duckdb

from pyrometer.agent.shared.model import Nanos, RequestRecord
from pyrometer.collector.errors import StorageError
from pyrometer.collector.storage.batch import Columns, DecodedBatch
from pyrometer.collector.storage.compaction import CompactionPolicy
from pyrometer.collector.storage.duckdb.backend import PRUNE_HWM, DuckDBStore
from pyrometer.collector.storage.duckdb.rollups import HOUR_NS, watermarks
from pyrometer.collector.storage.duckdb.schema import HASHED_TABLES, TIME_COLUMNS, stored_name
from pyrometer.collector.storage.lake import extensions, s3
from pyrometer.collector.storage.store import BatchOutcome, CommitReport, CompactReport

log = logging.getLogger(__name__)

T = TypeVar("T")
ALIAS = "lake"
METADATA = f"__ducklake_metadata_{ALIAS}"  # DuckLake's name for the attached catalog
LEASE = "maintenance_lease"
FENCE = "rollup_fence"
LATENCY_FENCE = "latency_fence"
CLAIMS = "claim_fence"
# (name, columns, first row or "") of the lake's own tables: the maintenance lease
# (maintenance.py), the agents' owners and the claims' fence (LakeStore._claim_agents),
# and the fences of the profile rollups and of the latency sketches (LakeStore._in_compact)
_LAKE_TABLES = (
    (LEASE, "holder VARCHAR, until_ns BIGINT", "('', 0)"),
    ("agent_owner", "agent_id VARCHAR, owner VARCHAR, epoch BIGINT", ""),
    (CLAIMS, "n INTEGER", "(0)"),
    (FENCE, "time_ns BIGINT", "(0)"),
    (LATENCY_FENCE, "time_ns BIGINT", "(0)"),
)
# which fence a compaction step of each kind deletes from
_FENCES = {"profiles": FENCE, "latency": LATENCY_FENCE}
# a window whose midpoint is older than this when it is committed may fall in a minute a
# compaction is rolling up meanwhile: compaction takes minutes CompactionPolicy.grace_ns
# (2 min) old by its own clock, so half of that holds while collectors' clocks agree to
# within a minute
FENCE_AGE_NS = CompactionPolicy().grace_ns // 2
# a conflict means another collector committed meanwhile, or a maintenance pass moved
# rows a commit touches (maintenance.py flushes one table after another, each a
# conflict for a commit that writes it): tries 10 ms apart, doubling to a second at most
# (about 3.3 s in all), outlast such a run of them; the agent retries past that
ATTEMPTS = 10
# a compaction step is a background job that a stream of late commits (an agent's spool
# after an outage) keeps refusing, each fenced against it: it may wait longer than a
# commit an agent waits on (about 25 s in all, against about 4)
COMPACTION_ATTEMPTS = 30
_BASE_DELAY_S = 0.01
_MAX_DELAY_S = 1.0


def redacted(catalog: str) -> str:
    """The catalog URL without its password, for logs and messages."""
    url = urlsplit(catalog)
    if url.password is None:
        return catalog
    host = url.netloc.rsplit("@", 1)[1]
    return urlunsplit(url._replace(netloc=f"{url.username}:***@{host}"))


class _Lost(Exception):
    """A commit's agents were claimed by another collector (LakeStore._advance_hwm)."""


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a commit refused because another one went first: DuckLake's own
    conflict check, or the catalog's (PostgreSQL's serialization failures and deadlock
    victims, which a DuckLake transaction meets when two update the same inlined rows),
    or agents another collector claimed meanwhile. Each is safe to run again from the
    start."""
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    if isinstance(cause, _Lost):
        return True
    if not isinstance(cause, duckdb.Error):
        return False
    text = str(cause).lower()
    return (isinstance(cause, duckdb.TransactionException) and "conflict" in text) or any(
        marker in text for marker in _CATALOG_CONFLICTS)


# PostgreSQL's words for "another transaction got there first" (SQLSTATE 40001, 40P01)
_CATALOG_CONFLICTS = ("could not serialize access", "deadlock detected")


# each step's statement (maintenance.py says what each does and why these ages)
_MAINTENANCE_SQL = {
    "flush": "CALL ducklake_flush_inlined_data({lake}, table_name => $table)",
    # every commit appends its agents' marks: keep each agent's highest alone
    "ledger": PRUNE_HWM,
    "merge": "CALL ducklake_merge_adjacent_files({lake})",
    "rewrite": "CALL ducklake_rewrite_data_files({lake}, $table)",
    # CALLed, never selected from: with DuckLake 1.5.5 a SELECT over these functions
    # deletes the files but leaves the catalog as it was (no snapshot expired, every
    # cleaned-up file still scheduled). Their results are not fetched: the TIMESTAMPTZ
    # columns would need pytz to come back.
    "expire": "CALL ducklake_expire_snapshots({lake}, older_than => now() - to_seconds($keep))",
    "cleanup": "CALL ducklake_cleanup_old_files({lake}, older_than => now() - to_seconds($keep))",
    "orphans": "CALL ducklake_delete_orphaned_files({lake}, "
               "older_than => now() - to_seconds($orphan))",
}


def _retrying(call: Callable[[int], T], attempts: int = ATTEMPTS) -> T:
    """`call(attempt)`, run again from the start after a conflict (`is_conflict`), up to
    `attempts` times with a jittered pause between; any other error, or the last
    conflict, is raised."""
    for attempt in range(attempts):
        try:
            return call(attempt)
        except StorageError as exc:
            if not is_conflict(exc) or attempt == attempts - 1:
                raise
            log.debug("conflicted with another collector's transaction; trying again: %s", exc)
        _pause(attempt)
    raise AssertionError("unreachable")


def _pause(attempt: int) -> None:
    time.sleep(min(_MAX_DELAY_S, _BASE_DELAY_S * 2 ** attempt) * random.uniform(0.8, 1.2))


class LakeStore(DuckDBStore):
    """A `Store` in a DuckLake that other collectors write at the same time."""

    _tables = HASHED_TABLES
    # another collector's late request changes the sketches unseen: no latency steps are
    # kept between reads (steps_cache.py)
    _sole_writer = False

    def __init__(self, catalog: str, data_path: str, env: Mapping[str, str] | None = None) -> None:
        self.catalog = catalog
        self.data_path = data_path
        self._owned: set[str] = set()  # agents this collector has claimed (see above)
        # who this collector is, in agent_owner and the maintenance lease
        self.writer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        env = os.environ if env is None else env
        self._env = env
        # maintenance's own DuckDB, attached on first use (see _side)
        self._side_con: duckdb.DuckDBPyConnection | None = None
        self._side_lock = threading.Lock()
        name = f"lake {redacted(catalog)} (data {data_path})"
        def prepare(_: int) -> None:
            self._prepare(self._attach(env), name)
            self._prepare_lake_tables()

        # two collectors starting at once both create the tables: one conflicts
        _retrying(prepare)

    def _attach(self, env: Mapping[str, str]) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        try:
            remote = self.data_path.startswith("s3://")
            extensions.load(con, extensions.CATALOG + (extensions.S3 if remote else ()))
            if remote:
                con.execute(s3.secret_sql(env))
                s3.check_reachable(con, self.data_path, env)
            elif not os.path.isdir(self.data_path):
                os.makedirs(self.data_path, exist_ok=True)
            con.execute(f"ATTACH {extensions.literal('ducklake:postgres:' + self.catalog)} AS {ALIAS} "
                        f"(DATA_PATH {extensions.literal(self.data_path)})")
            con.execute(f"USE {ALIAS}")
        except duckdb.Error as exc:
            con.close()
            raise StorageError(f"cannot attach the lake {redacted(self.catalog)} with data in "
                               f"{self.data_path}: {exc}") from exc
        except (StorageError, OSError) as exc:
            con.close()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot create the data path {self.data_path}: {exc}") from exc
            raise
        return con

    def _prepare_lake_tables(self) -> None:
        # the tables the lake has beside the shared schema, each with the one row it
        # starts with: several collectors starting together may each insert it, and
        # nothing minds (every lease take moves all rows; the fences only need one)
        con = self._con
        try:
            con.begin()
            for table, columns, first in _LAKE_TABLES:
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                # a row fetched, not count(*): DuckLake 1.5.5 answers count(*) from its file
                # statistics, and over a table whose rows were updated and merged it said
                # "Type INT128 with value -1 can't be cast ... UINT64"
                if first and con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None:
                    con.execute(f"INSERT INTO {table} VALUES {first}")
            con.commit()
        except duckdb.Error as exc:
            self._rollback()
            con.close()
            raise StorageError(f"cannot prepare {self._name}: {exc}") from exc

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute(f"USE {ALIAS}")  # a cursor starts in the in-memory database
        return cur

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        """See `Store.commit`; run again from the start after a conflict, and the report
        says how many times."""
        return _retrying(lambda attempt: dataclasses.replace(super(LakeStore, self).commit(batches),
                                                             conflicts=attempt))

    def _claim_agents(self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]) -> None:
        agents = sorted({b.source.agent_id for b in batches} - self._owned)
        if not agents:
            return
        con.begin()
        # two claims always conflict, even of an agent no collector has seen: each
        # deletes claim_fence's row and leaves one
        con.execute(f"DELETE FROM {CLAIMS}")
        con.execute(f"INSERT INTO {CLAIMS} VALUES (0)")
        marks = dict(con.execute(
            "SELECT agent_id, max(seq) FROM agent_hwm WHERE agent_id IN (SELECT unnest($a)) "
            "GROUP BY agent_id", {"a": agents}).fetchall())
        epochs = dict(con.execute(
            "SELECT agent_id, max(epoch) FROM agent_owner WHERE agent_id IN (SELECT unnest($a)) "
            "GROUP BY agent_id", {"a": agents}).fetchall())
        # the agent's marks collapse to one row: the delete is what makes a commit of
        # its batches in flight elsewhere conflict with this claim
        con.execute("DELETE FROM agent_hwm WHERE agent_id IN (SELECT unnest($a))", {"a": agents})
        con.execute("INSERT INTO agent_hwm (agent_id, seq) SELECT unnest($a), unnest($s)",
                    {"a": agents, "s": [marks.get(a, 0) for a in agents]})
        con.execute("DELETE FROM agent_owner WHERE agent_id IN (SELECT unnest($a))", {"a": agents})
        con.execute("INSERT INTO agent_owner SELECT unnest($a), $me, unnest($e)",
                    {"a": agents, "me": self.writer_id, "e": [epochs.get(a, 0) + 1 for a in agents]})
        con.commit()
        self._owned.update(agents)

    def _advance_hwm(
        self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]
    ) -> tuple[list[BatchOutcome], list[DecodedBatch]]:
        agents = sorted({b.source.agent_id for b in batches})
        owners = dict(con.execute(
            "SELECT agent_id, arg_max(owner, epoch) FROM agent_owner "
            "WHERE agent_id IN (SELECT unnest($a)) GROUP BY agent_id", {"a": agents}).fetchall())
        lost = [a for a in agents if owners.get(a) != self.writer_id]
        if lost:
            # another collector claimed them since: claim them back, then run again
            self._owned.difference_update(lost)
            raise StorageError(f"{len(lost)} agent(s) claimed by another collector") from _Lost()
        return super()._advance_hwm(con, batches)

    def _stored_hwm(self, con: duckdb.DuckDBPyConnection, agents: Sequence[str]
                    ) -> dict[str, int]:
        # several writers: a mark read or written before may have moved since
        return self._read_hwm(con, agents)

    def _prune_hwm(self, con: duckdb.DuckDBPyConnection) -> None:
        # not at compaction: a delete from agent_hwm would conflict with every commit's
        # insert there (module docstring); maintenance's ledger step prunes instead
        pass

    def delete_before(self, cutoff_ns: Nanos, *, limit: int = 50_000,
                      rollup_cutoff_ns: Nanos | None = None) -> dict[str, int]:
        """See `Store.delete_before`; a chunk that conflicts with a commit is tried again."""
        return _retrying(lambda _: super(LakeStore, self).delete_before(
            cutoff_ns, limit=limit, rollup_cutoff_ns=rollup_cutoff_ns))

    def take_lease(self, holder: str, now_ns: Nanos, lease_ns: Nanos) -> bool:
        """Take the maintenance lease until `now_ns + lease_ns` if it is free (or already
        `holder`'s); False when another collector holds it or took it just now."""
        try:
            with self._side() as cur:
                cur.begin()
                (moved,) = cur.execute(
                    f"UPDATE {LEASE} SET holder = $holder, until_ns = $until "
                    "WHERE until_ns < $now OR holder = $holder",
                    {"holder": holder, "until": now_ns + lease_ns, "now": now_ns}).fetchone() or (0,)
                if not moved:
                    cur.rollback()
                    return False
                cur.commit()
                return True
        except duckdb.Error as exc:
            self._check_side(exc)
            if is_conflict(exc):
                return False  # another collector's take went first
            raise StorageError(f"taking the maintenance lease of {self._name} failed: {exc}") from exc

    def release_lease(self, holder: str) -> None:
        """Give the lease back, if `holder` still has it."""
        self._write(f"UPDATE {LEASE} SET until_ns = 0 WHERE holder = $holder",
                    {"holder": holder}, "releasing the maintenance lease")

    def maintain(self, step: str, snapshot_keep_s: float, orphan_age_s: float) -> None:
        """One of maintenance.py's steps other than retention (see there for each); each
        statement is tried again after a conflict with a commit."""
        sql = _MAINTENANCE_SQL[step].format(lake=extensions.literal(ALIAS))
        values = {"keep": snapshot_keep_s, "orphan": orphan_age_s}
        if step == "rewrite":
            # only the tables retention deletes from: rewriting agent_hwm's files (whose
            # rows commits and claims change) under concurrent commits is where DuckLake
            # 1.5.5's compaction failed fatally ("expected a single output file for
            # 18446744073709551615 rows"); ledger, flush and merge keep that table small
            for table in TIME_COLUMNS:
                self._retried(sql, {"table": stored_name(table, self._tables)},
                              f"rewriting the files of {table}")
        elif step == "flush":
            # table by table: one flush of all tables would lose to some commit nearly
            # always, while it held the others back
            for table, (_, inlined) in sorted(self.data_files().items()):
                if inlined:
                    self._retried(sql, {"table": table}, f"flushing the inlined rows of {table}")
        else:
            self._retried(sql, {k: v for k, v in values.items() if f"${k}" in sql},
                          f"lake maintenance step {step}")

    def _retried(self, sql: str, params: Mapping[str, object], what: str) -> None:
        _retrying(lambda _: self._write(sql, params, what))

    def _write(self, sql: str, params: Mapping[str, object], what: str) -> None:
        # on a cursor of its own, not under the commit lock: a long merge must not hold
        # up this collector's commits, and DuckLake orders the two like any others
        try:
            with self._side() as cur:
                cur.execute(sql, params)
        except duckdb.Error as exc:
            self._check_side(exc)
            raise StorageError(f"{what} in {self._name} failed: {exc}") from exc

    def data_files(self) -> dict[str, tuple[int, int]]:
        """Per table: its Parquet data files, and the rows inlined in the catalog."""
        def read(cur: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
            files = dict(cur.execute(f"SELECT table_name, file_count FROM ducklake_table_info"
                                     f"({extensions.literal(ALIAS)})").fetchall())
            inlined = dict.fromkeys(files, 0)
            for table, inline in cur.execute(
                    f"SELECT t.table_name, i.table_name FROM {METADATA}.ducklake_inlined_data_tables i "
                    f"JOIN {METADATA}.ducklake_table t USING (table_id) "
                    "WHERE t.end_snapshot IS NULL").fetchall():
                (rows,) = cur.execute(f'SELECT count(*) FROM {METADATA}."{inline}"').fetchone() or (0,)
                inlined[table] = inlined.get(table, 0) + int(rows)
            return {table: (int(files[table] or 0), inlined[table]) for table in files}
        try:
            with self._side() as cur:
                return read(cur)
        except duckdb.Error as exc:
            self._check_side(exc)
            raise StorageError(f"counting the data files of {self._name} failed: {exc}") from exc

    def _side(self) -> duckdb.DuckDBPyConnection:
        """A cursor on maintenance's own DuckDB instance, attached to the same lake.

        Its own instance, not a cursor of the collector's: DuckLake 1.5.5's file merge can
        fail with a fatal error ("DuckLakeCompaction - expected a single output file for
        18446744073709551615 rows", seen under concurrent commits), and a fatal error
        invalidates the whole DuckDB instance it happens in. There it costs one pass of
        maintenance (the instance is dropped and attached afresh), never ingest or a query.
        """
        with self._side_lock:
            if self._side_con is None:
                self._side_con = self._attach(self._env)
            cur = self._side_con.cursor()
        cur.execute(f"USE {ALIAS}")
        return cur

    def _check_side(self, exc: duckdb.Error) -> None:
        # an internal error invalidates the instance too (the next statement says FATAL)
        if isinstance(exc, duckdb.FatalException | duckdb.InternalException):
            log.warning("lake maintenance: its DuckDB instance failed fatally; attaching a "
                        "fresh one for the next step: %s", exc)
            with self._side_lock:
                if self._side_con is not None:
                    self._side_con.close()
                self._side_con = None

    def close(self) -> None:
        """See `Store.close`; maintenance's instance too."""
        with self._side_lock:
            if self._side_con is not None:
                self._side_con.close()
                self._side_con = None
        super().close()

    def _in_commit(self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]) -> None:
        # a window, or a request (the latency sketches), that a compaction may be rolling
        # up meanwhile: read the watermarks in this transaction, and insert into the
        # fence, which every compaction step deletes from; DuckLake refuses an insert
        # into a table a concurrent transaction deleted from, so a compaction that moved
        # the watermarks meanwhile makes this commit run again, now reading them, and its
        # late rows go into the rollups (DuckDBStore._late, late_latency); one that starts
        # later sees this commit's rows
        since = time.time_ns() - FENCE_AGE_NS
        late_window = any(w.start_ns + (w.end_ns - w.start_ns) // 2 < since
                          for b in batches if (w := b.window) is not None and w.counts)
        late_request = any(
            min(Columns.of(RequestRecord, b.telemetry.requests).column("end_ns"), default=since)
            < since for b in batches)
        if late_window or late_request:
            self._rollup_done = watermarks(con)
        # each into the fence of the compaction it could miss, and no other: a late
        # window need not make a step of the latency sketches run again
        for late, fence in ((late_window, FENCE), (late_request, LATENCY_FENCE)):
            if late:
                con.execute(f"INSERT INTO {fence} VALUES ($t)", {"t": since})

    def _in_compact(self, con: duckdb.DuckDBPyConnection, *, moved: bool, what: str) -> None:
        # the fence's other side (see _in_commit), for a step that moves a watermark (one
        # that does not can miss nothing, and should not make commits run again); its one
        # row left is what the next step deletes, so a step always deletes something.
        # `moved` compares with what this process knew, which may lag the lake: then a
        # step fences when it need not, never the other way round
        if not moved:
            return
        fence = _FENCES[what]
        con.execute(f"DELETE FROM {fence}")
        con.execute(f"INSERT INTO {fence} VALUES (0)")

    def compact(self, until_ns: Nanos, *, max_span_ns: Nanos = HOUR_NS) -> CompactReport:
        """See `Store.compact`; run again after a conflict (another collector's step, or
        a commit of a late window)."""
        return _retrying(lambda _: super(LakeStore, self).compact(until_ns, max_span_ns=max_span_ns),
                         COMPACTION_ATTEMPTS)
