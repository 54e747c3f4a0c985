"""A commit that a store ran again after losing a conflict (the lake's, with several
collectors) is counted on /metrics, so that operators see the collectors contend."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pyrometer.agent.shared.model import SampleKey
from pyrometer.collector.ingest.commit import GroupCommitter
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.store import BatchOutcome, CommitReport
from support.ingest_builder import NOW_NS, StreamEncoder, stack


class ContendedStore(DuckDBStore):
    """A real store whose commits report what LakeStore's report after two lost
    conflicts (a conflict needs a second collector on a lake, which unit tests lack)."""

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        return dataclasses.replace(super().commit(batches), conflicts=2)


def test_conflicts_a_commit_reports_reach_the_metrics(tmp_path: Path) -> None:
    store, metrics = ContendedStore(tmp_path / "a.duckdb"), CollectorMetrics()
    encoder, decoder = StreamEncoder(), StreamDecoder()

    async def ship() -> list[BatchOutcome]:
        committer = GroupCommitter(store, metrics=metrics)
        committer.start()
        outcomes = [await committer.submit(decoder.decode(
            encoder.batch(seq, {SampleKey(stack("main")): 1}), NOW_NS)) for seq in (1, 2)]
        await committer.stop()
        return outcomes

    try:
        assert asyncio.run(ship()) == [BatchOutcome.STORED] * 2
    finally:
        store.close()
    assert metrics.value("pyrometer_commit_conflicts_total") == 4
    assert metrics.value("pyrometer_commit_failures_total") == 0


def test_the_embedded_store_reports_no_conflicts(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "a.duckdb")
    try:
        batch = StreamDecoder().decode(StreamEncoder().batch(1, {SampleKey(stack("main")): 1}), NOW_NS)
        assert store.commit([batch]).conflicts == 0
    finally:
        store.close()
