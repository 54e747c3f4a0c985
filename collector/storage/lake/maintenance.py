"""Lake maintenance: what keeps a DuckLake that many collectors write small and fast.

Every collector of a lake runs this loop; a lease row in the lake lets one of them do a
pass at a time (the others count a `skipped` run and look again next interval). A pass:

1. retention: delete rows older than `--retention`, in chunks (retention.py's pass);
2. ledger: keep each agent's highest high-water mark row alone (commits append them);
3. flush: move the rows DuckLake inlined into its PostgreSQL catalog to Parquet. A
   commit of a few rows (a quiet agent's batch, every high-water mark update) is
   stored in the catalog rather than as a file; left there, the catalog grows with the
   data and every read scans it;
4. merge: merge the small Parquet files that one commit per group writes (about 11k a
   table an hour at fleet rates) into large ones;
5. rewrite: rewrite the files whose rows retention mostly deleted (the time-ordered
   tables only, see LakeStore.maintain);
6. expire: drop snapshots older than `snapshot_keep_s`: DuckLake keeps every snapshot,
   and with it every merged-away file, until told otherwise;
7. cleanup: delete the files expired snapshots alone referred to, once they have been
   unreferenced for `snapshot_keep_s` too (a query that began on an older snapshot on
   another collector may still be reading them);
8. orphans: delete files no snapshot ever named that are older than `orphan_age_s`: the
   Parquet a collector wrote for a commit it was killed before finishing. Younger files
   may belong to a commit in flight on another collector, so they stay.

Why a lease, when DuckLake would refuse a conflicting second pass anyway: two passes at
once do the same work twice, and the loser's steps fail on conflicts, which would read
as failures on /metrics. The lease is a compare-and-set on one row (the mechanism the
high-water marks use, docs/lake.md): of two collectors taking it at once, DuckLake lets
one commit through. A collector killed mid-pass holds the lease until it runs out
(`lease_s`), then any other takes it. If a pass outlives its lease and a second starts,
the steps are still safe: each is a DuckLake transaction, and a conflict fails that step
alone, counted as `conflict`, to be done by the next pass.

A step can also fail `fatal`: DuckLake 1.5.5's compaction now and then stops with an
internal error under concurrent commits, which invalidates the DuckDB instance it ran in. Steps
run in an instance of their own (LakeStore._side), which is attached afresh, so this
costs a step, never ingest or a query; the next pass merges what was left.

On /metrics: passes by result (ok, partial, skipped, failed), seconds per step, step
failures by step and kind, and the Parquet files and inlined rows per table after each
pass (any collector reports them, lease or not).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.errors import StorageError
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.lake.backend import LakeStore, is_conflict
from pyrometer.collector.storage.retention import RetentionPolicy, delete_expired, run_every

log = logging.getLogger(__name__)

STEPS = ("retention", "ledger", "flush", "merge", "rewrite", "expire", "cleanup", "orphans")


@dataclass(frozen=True, slots=True)
class MaintenancePolicy:
    """How often the lake is maintained, and what each pass keeps."""

    interval_s: float = 300.0  # between passes, jittered +-10% so collectors spread out
    first_delay_s: float = 60.0  # after start-up, agents deliver their backlog first
    # a lease outlives any pass (a first pass over a day of small files takes minutes)
    lease_s: float = 900.0
    # snapshots this old are expired, and files unreferenced this long are deleted: far
    # longer than any query runs, so no collector loses a file it is reading
    snapshot_keep_s: float = 600.0
    # files no snapshot names are a killed commit's once this old; a commit in flight
    # writes its files seconds before it commits
    orphan_age_s: float = 3600.0
    retention: RetentionPolicy | None = None  # None: keep everything (--retention off)


async def maintain_once(store: LakeStore, policy: MaintenancePolicy, metrics: CollectorMetrics,
                        holder: str, clock: Callable[[], Nanos] = time.time_ns) -> str:
    """One pass if this collector gets the lease; returns the pass's result."""
    now = clock()
    if not await asyncio.to_thread(store.take_lease, holder, now,
                                   int(policy.lease_s * NANOS_PER_SECOND)):
        return "skipped"
    failed: list[str] = []
    try:
        for step in STEPS:
            if step == "retention" and policy.retention is None:
                continue
            started = time.perf_counter()
            try:
                if step == "retention":
                    assert policy.retention is not None
                    deleted = await delete_expired(store, now - policy.retention.retention_ns,
                                                   policy.retention)
                    for table, rows in deleted.items():
                        metrics.retention_rows.labels(table=table).inc(rows)
                else:
                    await asyncio.to_thread(store.maintain, step, policy.snapshot_keep_s,
                                            policy.orphan_age_s)
            except StorageError as exc:
                kind = ("conflict" if is_conflict(exc) else
                        "fatal" if isinstance(exc.__cause__, duckdb.FatalException | duckdb.InternalException)
                        else "error")
                metrics.lake_step_failures.labels(step=step, kind=kind).inc()
                log.warning("lake maintenance: %s failed (%s); the next pass tries again: %s",
                            step, kind, exc)
                failed.append(step)
            finally:
                metrics.lake_step_seconds.labels(step=step).observe(time.perf_counter() - started)
    finally:
        try:
            await asyncio.to_thread(store.release_lease, holder)
        except StorageError as exc:  # it runs out by itself
            log.warning("lake maintenance: could not release the lease: %s", exc)
    if not failed:
        return "ok"
    return "failed" if len(failed) == len(STEPS) else "partial"


async def run_maintenance(store: LakeStore, policy: MaintenancePolicy, metrics: CollectorMetrics,
                          stop: asyncio.Event, holder: str) -> None:
    """Maintain after `first_delay_s`, then about every `interval_s`, until `stop`."""

    async def one_pass() -> None:
        started = time.monotonic()
        result = await maintain_once(store, policy, metrics, holder)
        metrics.lake_maintenance_runs.labels(result=result).inc()
        if result != "skipped":
            log.info("lake maintenance: %s in %.1f s", result, time.monotonic() - started)
        try:
            files = await asyncio.to_thread(store.data_files)
        except StorageError as exc:
            log.warning("lake maintenance: could not count the data files: %s", exc)
        else:
            for table, (parquet, inlined) in files.items():
                metrics.lake_files.labels(table=table).set(parquet)
                metrics.lake_inlined_rows.labels(table=table).set(inlined)

    await run_every(stop, policy.first_delay_s,
                    lambda: policy.interval_s * random.uniform(0.9, 1.1), one_pass,
                    "lake maintenance pass",
                    failed=lambda: metrics.lake_maintenance_runs.labels(result="failed").inc())
