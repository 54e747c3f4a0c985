"""The agents' own footprint on /metrics: latest report per (service, instance), bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pyrometer.agent.shared.model import Telemetry
from pyrometer.collector.agent_metrics import AgentGauges
from pyrometer.collector.ingest.commit import GroupCommitter
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import StreamEncoder
from support.telemetry_builder import agent_stats

LABELS = {"service": "svc", "service_instance": "pod-1"}


def test_stored_reports_reach_the_gauges_and_the_table(tmp_path: Path) -> None:
    store, metrics = DuckDBStore(tmp_path / "a.duckdb"), CollectorMetrics()
    encoder, decoder = StreamEncoder(), StreamDecoder()
    reports = (agent_stats(1, dropped_batches=2), agent_stats(2, dropped_batches=5, rss_bytes=2**30))

    async def ship() -> None:
        committer = GroupCommitter(store, metrics=metrics)
        committer.start()
        raw = encoder.batch(1, telemetry=Telemetry(agent_stats=reports))
        await committer.submit(decoder.decode(raw, reports[-1].time_ns))
        await committer.stop()

    asyncio.run(ship())
    assert store.table_rows()["agent_stats"] == 2
    store.close()
    assert metrics.value("pyrometer_agent_dropped_batches", LABELS) == 5  # the latest report
    assert metrics.value("pyrometer_agent_rss_bytes", LABELS) == 2**30
    assert metrics.value("pyrometer_agent_cpu_cores", LABELS) == 0.125
    text = metrics.render().decode()
    assert 'pyrometer_agent_queued_batches{service="svc",service_instance="pod-1"} 3.0' in text
    assert "agent_id" not in text  # never a label: it is new on every agent start


def test_a_late_report_does_not_roll_back_and_series_are_bounded_and_expire() -> None:
    now = [0]
    gauges = AgentGauges(max_series=2, max_age_ns=100, clock=lambda: now[0])
    gauges.observe("svc", "a", [agent_stats(10, dropped_batches=4)])
    gauges.observe("svc", "a", [agent_stats(5, dropped_batches=1)])  # from a spool, older
    assert gauges.series()[("svc", "a")].dropped_batches == 4
    now[0] = 10
    gauges.observe("svc", "b", [agent_stats(1)])
    now[0] = 20
    gauges.observe("svc", "c", [agent_stats(1)])  # a third series evicts the stalest
    assert set(gauges.series()) == {("svc", "b"), ("svc", "c")}
    now[0] = 115
    assert set(gauges.series()) == {("svc", "c")}  # b not refreshed for 100 ns
    gauges.observe("svc", "d", [])  # nothing to report: no series
    assert ("svc", "d") not in gauges.series()
