"""Rollup compaction in the background: sum each whole minute's sample rows (and each
whole hour's) into the rollups a little after the minute ends (see duckdb/rollups.py).

Every `interval_s` (60 s), from `first_delay_s` after start-up (agents deliver their
backlog first), the collector rolls up the minutes that ended more than `grace_ns`
(2 minutes) ago, in steps of at most `max_span_ns` (10 minutes) of data, each its own
short transaction under the store's write lock, with a pause between steps so that
waiting commits go first. The grace lets windows still in flight arrive first; one that
comes later is rolled up by the commit that stores it, so nothing is lost either way.
A store that has never been compacted (a file from before rollups) catches up in the
same steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.storage.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """How far behind real time compaction stays, and how it is paced."""

    interval_s: float = 60.0  # between passes
    first_delay_s: float = 30.0  # before the first pass
    grace_ns: Nanos = 120 * NANOS_PER_SECOND  # minutes younger than this wait
    # of data per transaction: ten minutes of a 100-instance service are about 600,000
    # sample rows, well under a second of holding the write lock
    max_span_ns: Nanos = 600 * NANOS_PER_SECOND
    pause_s: float = 0.05  # between steps, so waiting commits take the lock first


async def compact_until(store: Store, until_ns: Nanos, policy: CompactionPolicy,
                        stop: asyncio.Event | None = None) -> dict[str, int]:
    """One pass: compaction steps until the rollups reach `until_ns` (or `stop`).
    Returns rollup rows written per table."""
    total: dict[str, int] = {}
    while stop is None or not stop.is_set():
        report = await asyncio.to_thread(store.compact, until_ns, max_span_ns=policy.max_span_ns)
        for table, rows in report.rows_written.items():
            total[table] = total.get(table, 0) + rows
        if report.caught_up:
            break
        await asyncio.sleep(policy.pause_s)
    return total


async def run_compaction(store: Store, policy: CompactionPolicy, stop: asyncio.Event,
                         clock: Callable[[], Nanos] = time.time_ns) -> None:
    """A pass every `interval_s` until `stop`; a failed pass is logged and the next one
    tries again: a background job never takes the collector down."""
    try:
        await asyncio.wait_for(stop.wait(), policy.first_delay_s)
        return
    except TimeoutError:
        pass
    while not stop.is_set():
        try:
            written = await compact_until(store, clock() - policy.grace_ns, policy, stop)
        except Exception:  # logged with its traceback; the loop carries on
            log.exception("rollup compaction failed; trying again in %.0f s", policy.interval_s)
        else:
            if sum(written.values()) > 100_000:  # a backlog, not the steady minute
                log.info("rollups: wrote %s", ", ".join(f"{n} {t} rows" for t, n in
                                                         sorted(written.items())))
        try:
            await asyncio.wait_for(stop.wait(), policy.interval_s)
        except TimeoutError:
            pass
