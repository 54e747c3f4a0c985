"""Retention by age on a real DuckDB file: old rows go, new rows and dictionaries stay,
and ingest keeps committing while a long deletion runs."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import duckdb
import pytest

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector import config
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.duckdb.schema import TIME_COLUMNS
from pyrometer.collector.storage.retention import (
    RetentionPolicy,
    delete_expired,
    parse_retention,
    run_retention,
)
from pyrometer.collector.timeparse import TimeFormatError
from support.ingest_builder import BASE_NS, StreamEncoder, stack
from support.telemetry_builder import everything

S, DAY = NANOS_PER_SECOND, 86_400 * NANOS_PER_SECOND
COUNTS = {SampleKey(stack("main", "serve")): 3, SampleKey(stack("main", "idle")): 1}


def fill(store: DuckDBStore, agent: str, start_ns: int, seqs: range) -> None:
    """Batches of every table, the telemetry stamped `start_ns` onwards (shifted from BASE_NS)."""
    encoder, decoder = StreamEncoder(agent_id=agent), StreamDecoder()
    for seq in seqs:
        raw = encoder.batch(seq, COUNTS, start_ns=start_ns + seq * 10 * S, telemetry=everything())
        for records in (raw.gpu, raw.process, raw.host, raw.events, raw.agent_stats, raw.engine):
            for record in records:
                record.time_unix_nanos += start_ns - BASE_NS
        for request in raw.requests:
            request.end_unix_nanos += start_ns - BASE_NS
        store.commit([decoder.decode(raw, start_ns + DAY)])


def test_old_rows_are_deleted_from_every_time_table_and_new_ones_kept(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "r.duckdb")
    now = time.time_ns()
    fill(store, "old", now - 10 * DAY, range(1, 6))
    fill(store, "new", now - 3600 * S, range(1, 4))
    before = store.table_rows()
    policy = RetentionPolicy(7 * DAY, chunk_rows=2, pause_s=0)  # many small chunks
    deleted = asyncio.run(delete_expired(store, now - policy.retention_ns, policy))
    after = store.table_rows()
    store.close()
    assert set(deleted) == set(TIME_COLUMNS)
    for table in TIME_COLUMNS:
        assert after[table] == before[table] - deleted[table] and after[table] > 0, table
    assert after["samples"] == 3 * len(COUNTS)  # the new agent's three windows
    # dictionaries and dedupe state are kept
    for table in ("stacks", "frames", "agent_hwm"):
        assert after[table] == before[table]
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        for table, column in TIME_COLUMNS.items():
            (oldest,) = con.execute(f"SELECT min({column}) FROM {table}").fetchone() or (0,)
            assert oldest >= now - 7 * DAY, table
            (agents,) = con.execute(f"SELECT list(DISTINCT agent_id) FROM {table}").fetchone() or ([],)
            assert agents == ["new"], table


def test_ingest_keeps_committing_while_a_long_deletion_runs(tmp_path: Path) -> None:
    path = tmp_path / "big.duckdb"
    DuckDBStore(path).close()  # the schema
    rows = 300_000
    with duckdb.connect(str(path)) as con:  # an old backlog, written directly
        # the file keeps a sample's source strings once, in sources (schema.py)
        con.execute("INSERT INTO sources VALUES (1, 'svc', 'pod', 'h', 'old', '', '{}')")
        con.execute(
            "INSERT INTO samples_rows SELECT $t + i, 1, $t + i + 1, i + 1, "
            "1, '', 0, 1, 100.0, false FROM range($n) AS r(i)", {"t": BASE_NS, "n": rows})
    store = DuckDBStore(path)
    policy = RetentionPolicy(DAY, chunk_rows=5_000, pause_s=0.001)
    encoder, decoder = StreamEncoder(agent_id="live"), StreamDecoder()
    now = time.time_ns()

    async def scenario() -> tuple[int, float, dict[str, int]]:
        deleting = asyncio.create_task(delete_expired(store, now - DAY, policy))
        committed, slowest, seq = 0, 0.0, 0
        while not deleting.done():
            seq += 1
            batch = decoder.decode(encoder.batch(seq, COUNTS, start_ns=now - 60 * S), now)
            started = time.monotonic()
            await asyncio.to_thread(store.commit, [batch])
            slowest = max(slowest, time.monotonic() - started)
            committed += 1
        return committed, slowest, await deleting

    committed, slowest, deleted = asyncio.run(scenario())
    counts = store.table_rows()
    store.close()
    print(f"\nretention of {rows} rows: {committed} commits meanwhile, slowest {slowest:.3f} s")
    assert deleted["samples"] == rows
    assert counts["samples"] == committed * len(COUNTS)
    assert committed >= 3  # commits went on during the deletion, between its chunks
    assert slowest < 5.0  # one chunk at most, even on a busy machine


def test_the_background_loop_deletes_counts_and_stops(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "loop.duckdb")
    fill(store, "old", time.time_ns() - 30 * DAY, range(1, 3))
    metrics = CollectorMetrics()

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(run_retention(store, RetentionPolicy(DAY, interval_s=3600),
                                                 metrics, stop))
        while not metrics.value("pyrometer_retention_runs_total", {"result": "ok"}):
            await asyncio.sleep(0.01)  # polling a condition, bounded by the test timeout
        stop.set()
        await asyncio.wait_for(loop, 10)  # no waiting out the hour-long interval

    asyncio.run(scenario())
    assert store.table_rows()["samples"] == 0
    store.close()
    assert metrics.value("pyrometer_retention_rows_deleted_total", {"table": "samples"}) == 4
    assert metrics.value("pyrometer_retention_rows_deleted_total", {"table": "agent_stats"}) == 2


@pytest.mark.parametrize(("text", "ns"), [("7d", 7 * DAY), ("36h", 36 * 3600 * S),
                                          ("2w", 14 * DAY), ("0", None), ("off", None),
                                          ("OFF", None), ("none", None)])
def test_retention_values(text: str, ns: int | None) -> None:
    assert parse_retention(text) == ns


@pytest.mark.parametrize("text", ["30s", "7 days", "-1d", "", "forever"])
def test_bad_retention_values(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_retention(text)


def _args(**flags: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items() if v is not None]
    return parser.parse_args(["--db", "x.duckdb", *argv])


def test_config_default_flag_and_environment() -> None:
    assert config.resolve(_args(), {}).retention_ns == 7 * DAY
    assert config.resolve(_args(), {"PYROMETER_RETENTION": "off"}).retention_ns is None
    resolved = config.resolve(_args(retention="2d", retention_interval="1m"),
                              {"PYROMETER_RETENTION": "off"})
    assert (resolved.retention_ns, resolved.retention_interval_s) == (2 * DAY, 60.0)
    with pytest.raises(ConfigError, match="--retention"):
        config.resolve(_args(retention="10s"), {})


def test_rollups_are_kept_longer_never_shorter_and_for_ever_without_retention() -> None:
    assert config.resolve(_args(), {}).rollup_retention_ns == 90 * DAY
    assert config.resolve(_args(rollup_retention="1d"), {}).rollup_retention_ns == 7 * DAY
    assert config.resolve(_args(retention="off"), {}).rollup_retention_ns is None
    assert config.resolve(_args(), {"PYROMETER_ROLLUP_RETENTION": "30d"}).rollup_retention_ns == 30 * DAY
    with pytest.raises(ConfigError, match="--rollup-retention"):
        config.resolve(_args(rollup_retention="soon"), {})
    policy = RetentionPolicy(7 * DAY, rollup_retention_ns=30 * DAY)
    assert policy.rollup_cutoff(100 * DAY) == 77 * DAY
    assert RetentionPolicy(7 * DAY).rollup_cutoff(100 * DAY) == 100 * DAY
