"""Retention by age: delete what is older than `--retention` (default 7d) in the background.

A minute after start-up, then every `--retention-interval` (5m), the collector deletes,
from each time-ordered table (samples by end_ns; gpu, process, host, requests, events
and agent_stats by time_ns), the rows older than now - retention. It deletes in small
chunks, each its own short transaction under the store's write lock, and pauses between
chunks, so a group commit waits for one chunk at most, never for a whole pass: ingest
keeps flowing.

The profile rollups (samples_1m, samples_1h) and the latency sketches (latency_10s) are
kept longer, by their own `--rollup-retention` (default 90d, never shorter than
--retention): a flame graph of an old week is still drawn from them once the raw rows are
gone, and a latency series from the sketches. A rollup bucket goes when all of it is
older than that cutoff.

Not deleted: the stacks and frames dictionaries, and agent_hwm. The dictionaries are
content-addressed and shared by every window: they grow with the amount of distinct
code profiled, not with time, and finding the entries no sample refers to any more
means a scan of the whole samples table under the write lock, which would stall
ingest. agent_hwm holds one row per agent run and is what makes a late retry (from a
spool, say) a duplicate rather than a second copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.store import Store
from pyrometer.collector.timeparse import TimeFormatError, parse_duration

log = logging.getLogger(__name__)

DEFAULT_RETENTION = "7d"
DEFAULT_ROLLUP_RETENTION = "90d"
DISABLED = frozenset({"0", "off", "none"})


def parse_retention(text: str) -> Nanos | None:
    """`7d`, `36h`, `2w` -> nanoseconds; "0", "off" or "none" -> None (keep everything).

    Raises TimeFormatError for anything else, or for a retention under a minute
    (almost certainly a typo, and it would delete data as it arrives).
    """
    if text.strip().lower() in DISABLED:
        return None
    ns = parse_duration(text)
    if ns < 60 * NANOS_PER_SECOND:
        raise TimeFormatError(f"{text!r}: a retention under a minute would delete data "
                              "as it arrives; use 0 or off to keep everything")
    return ns


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How old data may get, and how the deleting is paced."""

    retention_ns: Nanos
    interval_s: float = 300.0  # between passes
    # before the first pass: just after a (re)start agents deliver their backlog, and
    # that should not wait behind a deletion for the write lock
    first_delay_s: float = 0.0
    chunk_rows: int = 50_000  # rows per table per transaction
    pause_s: float = 0.01  # between chunks, so waiting commits take the lock first
    # how old the rollups may get; None: as old as the raw rows (never shorter, or a read
    # would take a bucket from a rollup that is gone while its raw rows are still there)
    rollup_retention_ns: Nanos | None = None

    def rollup_cutoff(self, cutoff_ns: Nanos) -> Nanos:
        """The rollups' cutoff for a pass whose raw rows' cutoff is `cutoff_ns`."""
        longer = max(self.retention_ns, self.rollup_retention_ns or 0)
        return cutoff_ns - (longer - self.retention_ns)


async def delete_expired(store: Store, cutoff_ns: Nanos, policy: RetentionPolicy,
                         stop: asyncio.Event | None = None) -> dict[str, int]:
    """One pass: delete rows older than `cutoff_ns` chunk by chunk until none are left.

    Returns rows deleted per table (tables with none left out). Ends early when `stop`
    is set; what is left goes in the next pass.
    """
    total: dict[str, int] = {}
    while stop is None or not stop.is_set():
        deleted = await asyncio.to_thread(store.delete_before, cutoff_ns,
                                          limit=policy.chunk_rows,
                                          rollup_cutoff_ns=policy.rollup_cutoff(cutoff_ns))
        for table, rows in deleted.items():
            if rows:
                total[table] = total.get(table, 0) + rows
        if not any(rows >= policy.chunk_rows for rows in deleted.values()):
            break  # every table had less than a full chunk left: nothing remains
        await asyncio.sleep(policy.pause_s)
    return total


async def run_retention(store: Store, policy: RetentionPolicy, metrics: CollectorMetrics,
                        stop: asyncio.Event, clock: Callable[[], Nanos] = time.time_ns) -> None:
    """Delete expired rows after `first_delay_s`, then every `interval_s`, until `stop`."""

    async def one_pass() -> None:
        started = time.monotonic()
        deleted = await delete_expired(store, clock() - policy.retention_ns, policy, stop)
        metrics.retention_runs.labels(result="ok").inc()
        for table, rows in deleted.items():
            metrics.retention_rows.labels(table=table).inc(rows)
        if deleted:
            log.info("retention: deleted %s in %.1f s", _summary(deleted),
                     time.monotonic() - started)

    await run_every(stop, policy.first_delay_s, lambda: policy.interval_s, one_pass,
                    "retention pass",
                    failed=lambda: metrics.retention_runs.labels(result="failed").inc())


async def run_every(stop: asyncio.Event, first_delay_s: float, interval_s: Callable[[], float],
                    one_pass: Callable[[], Awaitable[None]], what: str,
                    failed: Callable[[], None] = lambda: None) -> None:
    """Call `one_pass` after `first_delay_s`, then every `interval_s()`, until `stop`.

    A pass that raises is logged with its traceback and `failed` is called, and the next
    one tries again: a background job never takes the collector down.
    """
    if await stopped_within(stop, first_delay_s):
        return
    while not stop.is_set():
        try:
            await one_pass()
        except Exception:  # logged with its traceback; the loop carries on
            log.exception("%s failed; trying again at the next one", what)
            failed()
        await stopped_within(stop, interval_s())


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `stop` is set; True when it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _summary(deleted: Mapping[str, int]) -> str:
    return ", ".join(f"{rows} {table} rows" for table, rows in sorted(deleted.items()))
