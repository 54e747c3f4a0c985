"""The lake's maintenance (storage/lake/maintenance.py) on a real DuckLake: a PostgreSQL
catalog started here on 127.0.0.1 and Parquet files in a local data path.

Runs in .venv-lake (`make test-lake`); elsewhere the module skips and says why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pyrometer.agent.shared.model import NANOS_PER_SECOND, RequestRecord, SampleKey, Telemetry
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.series import read_latency_quantile
from pyrometer.collector.storage.lake.backend import METADATA, LakeStore
from pyrometer.collector.storage.lake.extensions import extension_file
from pyrometer.collector.storage.lake.maintenance import MaintenancePolicy, maintain_once
from pyrometer.collector.storage.reads import SeriesQuery
from pyrometer.collector.storage.retention import RetentionPolicy
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.postgres import Postgres

pytestmark = [pytest.mark.lake, pytest.mark.integration]

if extension_file("ducklake") is None or extension_file("postgres_scanner") is None:
    pytest.skip(f"DuckDB {duckdb.__version__} has no ducklake/postgres_scanner extension wheel "
                "here: the lake's tests run in .venv-lake (`make test-lake` installs "
                "pyrometer[lake] there)", allow_module_level=True)

S = NANOS_PER_SECOND
MS = 1_000_000
WIDE = (BASE_NS - 3600 * S, BASE_NS + 3600 * S)
# snapshots and unreferenced files go at once: these tests have no slow reader
NOW = MaintenancePolicy(snapshot_keep_s=0.0)


class Agent:
    """One agent's stream: batches numbered 1, 2, 3 of `rows` stacks each."""

    def __init__(self, agent_id: str, rows: int = 50) -> None:
        self.agent_id = agent_id
        self.encoder, self.decoder = StreamEncoder(agent_id=agent_id), StreamDecoder()
        self.seq, self.rows, self.sent = 0, rows, 0

    def batch(self, start_ns: int | None = None, requests: int = 0) -> DecodedBatch:
        """The next batch; with `requests`, that many request records spread over its
        10 s window (latencies 1-99 ms)."""
        self.seq += 1
        counts = {SampleKey(stack("main", "serve", f"op{k}")): 1 + k % 3 for k in range(self.rows)}
        self.sent += sum(counts.values())
        start = BASE_NS + self.seq * S if start_ns is None else start_ns
        telemetry = Telemetry(requests=tuple(
            RequestRecord(end_ns=start + i * 10 * S // requests, latency_ns=(1 + i % 99) * MS,
                          request_bytes=100, response_bytes=100, route="/v1", method="POST",
                          status=200)
            for i in range(requests)))
        return self.decoder.decode(self.encoder.batch(  # type: ignore[arg-type]
            self.seq, counts, start_ns=start, telemetry=telemetry), NOW_NS)


@pytest.fixture
def lake(postgres: Postgres, tmp_path: Path) -> Iterator[tuple[LakeStore, LakeStore, Path]]:
    """Two collectors on one fresh lake, and its data path."""
    catalog = postgres.create_database(f"lake_{uuid.uuid4().hex[:12]}")
    data = tmp_path / "data"
    a, b = LakeStore(catalog, f"{data}/"), LakeStore(catalog, f"{data}/")
    yield a, b, data
    a.close()
    b.close()


def _pass(store: LakeStore, metrics: CollectorMetrics, holder: str,
          policy: MaintenancePolicy = NOW) -> str:
    return asyncio.run(maintain_once(store, policy, metrics, holder, clock=lambda: NOW_NS))


def _stored(store: LakeStore, agent: Agent) -> int:
    return store._read(lambda cur: int((cur.execute(
        "SELECT coalesce(sum(count), 0) FROM samples WHERE agent_id = $a",
        {"a": agent.agent_id}).fetchone() or (0,))[0]))


def _parquet_on_disk(data: Path, table: str) -> int:
    return sum(1 for _ in (data / "main" / table).glob("*.parquet"))


def test_a_pass_merges_the_small_files_and_changes_no_answer(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    a, b, data = lake
    agents = [Agent("agent-a"), Agent("agent-b")]
    for i in range(30):  # one commit per batch, as a collector under light load makes
        (a if i % 2 else b).commit([agents[i % 2].batch()])
    before = a.data_files()
    snapshots = _catalog_rows(a, "ducklake_snapshot")
    profile = a.profile("svc", *WIDE)
    assert before["samples"][0] + (before["samples"][1] > 0) >= 20  # a file a commit

    metrics = CollectorMetrics()
    assert _pass(a, metrics, "a") == "ok"

    after = a.data_files()
    assert after["samples"][0] <= 2 and after["samples"][1] == 0, after
    assert all(inlined == 0 for table, (_, inlined) in after.items()
               if table not in ("maintenance_lease",)), after
    assert b.profile("svc", *WIDE) == profile == a.profile("svc", *WIDE)
    # the merged-away files are gone from the data path, not only from the catalog
    assert _parquet_on_disk(data, "samples") == after["samples"][0]
    assert metrics.lake_step_failures._metrics == {}
    # and the catalog forgot them and the old snapshots (a SELECT over the expire and
    # cleanup functions deleted files but kept both)
    assert _catalog_rows(a, "ducklake_files_scheduled_for_deletion") == 0
    assert _catalog_rows(a, "ducklake_snapshot") <= 3 < snapshots


def _catalog_rows(store: LakeStore, table: str) -> int:
    return store._read(lambda cur: int((cur.execute(
        f"SELECT count(*) FROM {METADATA}.{table}").fetchone() or (0,))[0]))


def test_one_collector_maintains_at_a_time(lake: tuple[LakeStore, LakeStore, Path]) -> None:
    a, b, _ = lake
    metrics = CollectorMetrics()
    assert a.take_lease("a", NOW_NS, 60 * S)
    assert _pass(b, metrics, "b") == "skipped"
    assert not b.take_lease("b", NOW_NS + 59 * S, 60 * S)
    assert b.take_lease("b", NOW_NS + 61 * S, 60 * S)  # a's ran out: a killed holder's does
    b.release_lease("b")
    # two taking it at the very same moment: DuckLake lets one commit through
    for round_no in range(5):
        now = NOW_NS + (1000 + round_no) * S
        got: dict[str, bool] = {}
        start = threading.Barrier(2)

        def take(store: LakeStore, name: str, now: int, start: threading.Barrier,
                 got: dict[str, bool]) -> None:
            start.wait()
            got[name] = store.take_lease(name, now, 60 * S)

        threads = [threading.Thread(target=take, args=(s, n, now, start, got))
                   for s, n in ((a, "a"), (b, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(got.values()) == 1, got
        (a if got["a"] else b).release_lease("a" if got["a"] else "b")


def test_passes_under_write_load_fail_no_commit_and_no_step(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    a, b, _ = lake
    writers = [Agent("w-a"), Agent("w-b")]
    stop, errors = threading.Event(), []

    def write(store: LakeStore, agent: Agent) -> None:
        try:
            while not stop.is_set():
                store.commit([agent.batch()])
                # a group commit's pace: flat out, two writers take turns on agent_hwm,
                # which every commit updates (docs/lake.md), and one can starve
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, w)) for s, w in zip((a, b), writers, strict=True)]
    for thread in threads:
        thread.start()
    metrics = CollectorMetrics()
    try:
        results = []
        for i in range(4):  # both collectors take turns, as their loops would
            deadline = time.monotonic() + 60
            while (min(w.seq for w in writers) < 5 * (i + 1) and not errors
                   and time.monotonic() < deadline):
                time.sleep(0.05)  # until each writer has committed more since the last pass
            results.append(_pass((a, b)[i % 2], metrics, ("a", "b")[i % 2]))
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert errors == []
    assert results == ["ok"] * 4, metrics.lake_step_failures._metrics
    for writer in writers:
        assert _stored(a, writer) == writer.sent  # every commit stored once, none lost


def test_retention_in_a_pass_deletes_the_old_rows_only(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    a, b, _ = lake
    old, new = Agent("old"), Agent("new")
    for _ in range(5):
        a.commit([old.batch(start_ns=BASE_NS - 7200 * S + old.seq * S)])
        b.commit([new.batch()])
    keep = NOW_NS - (BASE_NS - 3600 * S)  # an hour before BASE_NS and later stays
    metrics = CollectorMetrics()
    policy = MaintenancePolicy(snapshot_keep_s=0.0, retention=RetentionPolicy(keep))
    assert _pass(a, metrics, "a", policy) == "ok"
    assert _stored(b, old) == 0
    assert _stored(b, new) == new.sent
    assert metrics.retention_rows.labels(table="samples")._value.get() == 5 * old.rows


def test_orphaned_files_go_once_old_and_young_ones_stay(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    a, _, data = lake
    agent = Agent("agent")
    a.commit([agent.batch()])
    assert _pass(a, CollectorMetrics(), "a") == "ok"  # the data now lives in a file
    (written,) = (data / "main" / "samples").glob("*.parquet")
    # what a collector killed between writing its Parquet and committing leaves behind
    stale, fresh = written.with_name("stale.parquet"), written.with_name("fresh.parquet")
    shutil.copy(written, stale)
    shutil.copy(written, fresh)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert _pass(a, CollectorMetrics(), "a") == "ok"
    assert not stale.exists()
    assert fresh.exists()  # it may be a commit in flight on another collector
    assert written.exists() and _stored(a, agent) == agent.sent


def test_rollups_by_several_collectors_miss_no_late_window(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    """One collector compacts over and over while another commits windows into the very
    minutes it is rolling up (late ones, as an agent's spool delivers after an outage):
    every sample is in the rollups, which the flame graph then reads."""
    a, b, _ = lake
    late = Agent("late")
    minute = 60 * S
    stop, errors = threading.Event(), []

    def compact() -> None:
        step = 0
        try:
            while not stop.is_set():
                step += 1  # a minute further each step, up to ten minutes of windows
                a.compact(BASE_NS + min(step, 10) * minute, max_span_ns=minute)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=compact)
    thread.start()
    try:
        for i in range(60):  # ten-second windows over ten minutes, in order
            b.commit([late.batch(start_ns=BASE_NS + i * 10 * S)])
    finally:
        stop.set()
        thread.join(120)
    assert errors == []
    b.compact(BASE_NS + 10 * minute, max_span_ns=10 * minute)
    window = (BASE_NS, BASE_NS + 10 * minute)
    profile = b.profile("svc", *window)
    assert profile.resolution != "raw"  # read from the rollups
    assert sum(count for _, count in profile.samples) == late.sent
    assert a.profile("svc", *window) == profile


def test_latency_sketches_by_several_collectors_miss_no_late_request(
        lake: tuple[LakeStore, LakeStore, Path]) -> None:
    """One collector rolls up the latency sketches a step ahead of the requests another
    is committing, so that each commit races a compaction over its own seconds: every
    request is in the sketches, once."""
    a, b, _ = lake
    late = Agent("late", rows=1)
    stop, errors, committed = threading.Event(), [], [0]

    def compact() -> None:
        try:
            while not stop.is_set():  # past the batch being committed, and the next
                a.compact(BASE_NS + (committed[0] + 2) * 10 * S, max_span_ns=60 * S)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=compact)
    thread.start()
    try:
        for i in range(60):
            b.commit([late.batch(start_ns=BASE_NS + i * 10 * S, requests=20)])
            committed[0] = i + 1
    finally:
        stop.set()
        thread.join(120)
    assert errors == []
    b.compact(BASE_NS + 11 * 60 * S, max_span_ns=11 * 60 * S)
    query = SeriesQuery("svc", BASE_NS, BASE_NS + 10 * 60 * S, 60 * S)
    sketched = b._read(lambda cur: read_latency_quantile(cur, query, "max", 0))
    exact = b._read(lambda cur: read_latency_quantile(cur, query, "max", 10**18))
    assert sketched[2] == "10s" and exact[2] == "raw"
    assert [p.count for p in sketched[0]] == [p.count for p in exact[0]] == [120] * 10
