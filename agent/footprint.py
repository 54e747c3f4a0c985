"""The agent's own footprint: CPU and memory of the agent and its py-spy, queue, drops.

Measured every minute, logged as one line, and shipped to the collector (Batch field
15, AgentStats), which exposes the latest figures per agent on /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from pyrometer.agent.shared.model import AgentStats
from pyrometer.agent.ship.shipper import Shipper

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Losses:
    """What the agent lost outside the shipper, and how often py-spy was replaced."""

    dropped_records: int = 0
    pyspy_restarts: int = 0


def line(stats: AgentStats) -> str:
    return (f"agent footprint: cpu {stats.cpu_cores:.3f} cores, rss {stats.rss_bytes >> 20} MiB, "
            f"queue {stats.queued_batches} ({stats.spooled_batches} spooled, "
            f"{stats.spool_bytes} bytes), dropped {stats.dropped_batches} batches and "
            f"{stats.dropped_records} records, {stats.pyspy_restarts} py-spy restarts")


class FootprintMeter:
    """CPU between calls to measure(); children are the py-spy recorders of the moment."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._last = (time.monotonic(), self._cpu_s())

    def measure(self, shipper: Shipper, losses: Losses) -> AgentStats:
        now, cpu = time.monotonic(), self._cpu_s()
        last_mono, last_cpu = self._last
        self._last = (now, cpu)
        cores = max(0.0, cpu - last_cpu) / max(now - last_mono, 1e-9)
        spooled, spool_bytes = shipper.on_disk
        return AgentStats(
            time_ns=time.time_ns(), cpu_cores=cores, rss_bytes=self._rss(),
            queued_batches=shipper.pending, spooled_batches=spooled, spool_bytes=spool_bytes,
            dropped_batches=shipper.stats.dropped, dropped_records=losses.dropped_records,
            reconnects=shipper.stats.reconnects, pyspy_restarts=losses.pyspy_restarts)

    def _processes(self) -> list[psutil.Process]:
        try:
            return [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return [self._proc]

    def _cpu_s(self) -> float:
        # py-spy recorders come and go every window: the reaped ones are in children_*
        own = self._proc.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for proc in self._processes()[1:]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _rss(self) -> int:
        total = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total


async def report_periodically(shipper: Shipper, stop: asyncio.Event,
                              emit: Callable[[AgentStats], None], losses: Callable[[], Losses],
                              interval_s: float = REPORT_INTERVAL_S) -> None:
    """Log and emit the footprint every interval until stop is set, and once at the end."""
    meter = FootprintMeter()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        try:
            stats = meter.measure(shipper, losses())
            log.info("%s", line(stats))
            emit(stats)
        except Exception:  # a background loop logs and carries on
            log.exception("measuring the agent's footprint failed")
