"""The collector's own Prometheus metrics, in a registry the collector owns.

Not the process-wide default registry: tests (and an embedding program) can create
several collectors in one process without their metrics colliding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pyrometer.collector.agent_metrics import AgentGauges
from pyrometer.collector.service_metrics import ServiceMetrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST  # for the HTTP API's /metrics response


class CollectorMetrics:
    """Counters and histograms of ingest, storage and queries."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.batches = Counter(
            "pyrometer_ingest_batches", "Batches committed (stored, not duplicates)", registry=r)
        self.duplicates = Counter(
            "pyrometer_ingest_duplicate_batches",
            "Retried batches acknowledged without storing", registry=r)
        self.samples = Counter(
            "pyrometer_ingest_samples", "Profile samples (sum of counts) stored", registry=r)
        self.rows = Counter(
            "pyrometer_storage_rows_written", "Rows appended, by table", ["table"], registry=r)
        self.rejected = Counter(
            "pyrometer_ingest_rejected_batches",
            "Batches rejected, by gRPC status code", ["code"], registry=r)
        self.records_rejected = Counter(
            "pyrometer_records_rejected",
            "Telemetry records dropped by validation (the rest of their batch was stored), "
            "by record kind and reason", ["kind", "reason"], registry=r)
        self.streams = Gauge(
            "pyrometer_ingest_streams", "Agent streams open now", registry=r)
        self.group_size = Histogram(
            "pyrometer_commit_group_size", "Batches committed per transaction",
            buckets=_GROUP_BUCKETS, registry=r)
        self.commit_queue = Gauge(
            "pyrometer_commit_queued_batches", "Batches decoded and waiting to be taken "
            "into a group commit", registry=r)
        self.commit_seconds = Histogram(
            "pyrometer_commit_seconds", "Time to commit one group of batches",
            buckets=_LATENCY_BUCKETS, registry=r)
        # decode workers (--decode-workers, ingest/workers.py); 0 and none without them
        self.decode_workers = Gauge(
            "pyrometer_decode_workers", "Decode worker processes alive now", registry=r)
        self.decode_worker_exits = Counter(
            "pyrometer_decode_worker_exits", "Decode workers that exited while serving: "
            "their streams ended as UNAVAILABLE (agents retry) and another was started",
            registry=r)
        self.decode_inline_streams = Counter(
            "pyrometer_decode_inline_streams", "Streams decoded in the event loop because "
            "no decode worker was alive when they opened", registry=r)
        self.commit_failures = Counter(
            "pyrometer_commit_failures", "Transactions that failed", registry=r)
        self.commit_conflicts = Counter(
            "pyrometer_commit_conflicts", "Commits run again from the start after losing a "
            "conflict with another collector's transaction (lake backend; a commit that "
            "gives up counts in pyrometer_commit_failures instead)", registry=r)
        self.query_seconds = Histogram(
            "pyrometer_query_seconds", "Time to answer a query, by API endpoint",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.retention_rows = Counter(
            "pyrometer_retention_rows_deleted",
            "Rows deleted for being older than --retention, by table", ["table"], registry=r)
        self.retention_runs = Counter(
            "pyrometer_retention_runs", "Retention passes, by result", ["result"], registry=r)
        # the lake backend's maintenance (storage/lake/maintenance.py); empty elsewhere
        self.lake_maintenance_runs = Counter(
            "pyrometer_lake_maintenance_runs",
            "Lake maintenance passes, by result (ok, partial, failed; skipped: another "
            "collector held the lease)", ["result"], registry=r)
        self.lake_step_seconds = Histogram(
            "pyrometer_lake_maintenance_step_seconds", "Time a lake maintenance step took",
            ["step"], buckets=_STEP_BUCKETS, registry=r)
        self.lake_step_failures = Counter(
            "pyrometer_lake_maintenance_step_failures",
            "Lake maintenance steps that failed, by step and kind (conflict: another "
            "collector's commit went first; fatal: DuckDB's instance failed and was "
            "replaced; error: anything else)", ["step", "kind"], registry=r)
        self.lake_files = Gauge(
            "pyrometer_lake_data_files", "Parquet data files per lake table, after the "
            "latest maintenance pass", ["table"], registry=r)
        self.lake_inlined_rows = Gauge(
            "pyrometer_lake_inlined_rows", "Rows held in the lake's catalog (inlined) per "
            "table, after the latest maintenance pass", ["table"], registry=r)
        # the agents' own footprint, latest per (service, instance): see agent_metrics.py
        self.agents = AgentGauges()
        r.register(self.agents)
        # requests, GPUs and spikes per service: see service_metrics.py
        self.services = ServiceMetrics()
        r.register(self.services)

    @contextmanager
    def time_query(self, endpoint: str) -> Iterator[None]:
        """Observe the duration of the enclosed block as a query of `endpoint`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.query_seconds.labels(endpoint=endpoint).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (serve with CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0.0 when absent), e.g. "pyrometer_ingest_batches_total"."""
        found = self.registry.get_sample_value(name, labels or {})
        return found if found is not None else 0.0
