"""`LakeStore`: the `Store` of many collectors writing one DuckLake (docs/lake.md).

The catalog is a PostgreSQL database, the data Parquet files under a data path (s3://
or a local folder). Each collector attaches the lake to an in-memory DuckDB and runs the
embedded backend's SQL on it unchanged (`USE lake`); what differs is what several
writers need:

- stacks are numbered by their 64-bit id (schema.HASHED_TABLES), since numbers given
  1, 2, 3 by several writers would clash;
- a new agent's high-water mark row is inserted (seq 0) in a short transaction of its
  own before the commit, so every batch, the first included, moves the mark
  compare-and-set: two collectors storing the same batch then update the same row, and
  DuckLake lets one commit through (appends alone would never conflict);
- a commit that loses such a conflict, or a snapshot conflict with another collector's
  commit, is run again from the start, where a retried batch now reads as a duplicate;
- profile rollups are not written: a late window committed by one collector while
  another moves the rollup watermark could be missed, so profiles read the raw rows.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import duckdb

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.errors import StorageError
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.rollups import HOUR_NS
from pyrometer.collector.storage.duckdb.schema import HASHED_TABLES
from pyrometer.collector.storage.lake import extensions, s3
from pyrometer.collector.storage.store import CommitReport, CompactReport

log = logging.getLogger(__name__)

ALIAS = "lake"
# a conflict means another collector committed meanwhile: a handful of tries, each after
# a short jittered pause, outlasts any burst of them; the agent retries past that
ATTEMPTS = 6
_BASE_DELAY_S = 0.01


def redacted(catalog: str) -> str:
    """The catalog URL without its password, for logs and messages."""
    url = urlsplit(catalog)
    if url.password is None:
        return catalog
    host = url.netloc.rsplit("@", 1)[1]
    return urlunsplit(url._replace(netloc=f"{url.username}:***@{host}"))


def _is_conflict(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    return isinstance(cause, duckdb.TransactionException) and "conflict" in str(cause).lower()


def _pause(attempt: int) -> None:
    time.sleep(_BASE_DELAY_S * 2 ** attempt * random.uniform(0.8, 1.2))


class LakeStore(DuckDBStore):
    """A `Store` in a DuckLake that other collectors write at the same time."""

    _tables = HASHED_TABLES

    def __init__(self, catalog: str, data_path: str, env: Mapping[str, str] | None = None) -> None:
        self.catalog = catalog
        self.data_path = data_path
        self._claimed: set[str] = set()  # agents whose high-water mark row exists
        env = os.environ if env is None else env
        name = f"lake {redacted(catalog)} (data {data_path})"
        for attempt in range(ATTEMPTS):
            # two collectors starting at once both create the tables: one conflicts
            try:
                self._prepare(self._attach(env), name)
                return
            except StorageError as exc:
                if not _is_conflict(exc) or attempt == ATTEMPTS - 1:
                    raise
            _pause(attempt)

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

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute(f"USE {ALIAS}")  # a cursor starts in the in-memory database
        return cur

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        """See `Store.commit`; run again from the start after a conflict."""
        for attempt in range(ATTEMPTS):
            try:
                return super().commit(batches)
            except StorageError as exc:
                if not _is_conflict(exc) or attempt == ATTEMPTS - 1:
                    raise
                log.debug("commit conflicted with another collector's; trying again")
            _pause(attempt)
        raise AssertionError("unreachable")

    def _claim_agents(self, con: duckdb.DuckDBPyConnection, batches: Sequence[DecodedBatch]) -> None:
        agents = sorted({b.source.agent_id for b in batches} - self._claimed)
        if not agents:
            return
        con.begin()
        have = {row[0] for row in con.execute(
            "SELECT DISTINCT agent_id FROM agent_hwm WHERE agent_id IN (SELECT unnest($a))",
            {"a": agents}).fetchall()}
        fresh = [a for a in agents if a not in have]
        if fresh:
            # two collectors may both insert one: the compare-and-set moves every row of
            # an agent at its mark, so a second row at 0 changes nothing
            con.execute("INSERT INTO agent_hwm (agent_id, seq) SELECT unnest($a), 0",
                        {"a": fresh})
        con.commit()
        self._claimed.update(agents)

    def compact(self, until_ns: Nanos, *, max_span_ns: Nanos = HOUR_NS) -> CompactReport:
        """No rollups in the lake yet (see the module docstring): nothing to do."""
        return CompactReport({}, caught_up=True)
