"""The agent's own footprint: CPU and memory of the agent and its py-spy, queue, drops.

Measured every minute and logged as one line. The ingest protocol reserves Batch
field 15 for these figures; until it is defined they reach operators through the
agent's log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import psutil

from .shipper import Shipper

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class Footprint:
    cpu_cores: float  # agent and its children over the last interval (1.0 = one core)
    rss_bytes: int  # agent and its children (py-spy)
    queued: int  # batches not yet acknowledged
    spooled: int  # of which on disk
    spool_bytes: int
    dropped: int  # batches lost: queue bounds, corrupt spool files, rejected

    def line(self) -> str:
        return (f"agent footprint: cpu {self.cpu_cores:.3f} cores, rss {self.rss_bytes >> 20} MiB, "
                f"queue {self.queued} ({self.spooled} spooled, {self.spool_bytes} bytes), "
                f"dropped {self.dropped}")


class FootprintMeter:
    """CPU between calls to measure(); children are the py-spy recorders of the moment."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._last = (time.monotonic(), self._cpu_s())

    def measure(self, shipper: Shipper) -> Footprint:
        now, cpu = time.monotonic(), self._cpu_s()
        last_mono, last_cpu = self._last
        self._last = (now, cpu)
        cores = max(0.0, cpu - last_cpu) / max(now - last_mono, 1e-9)
        spooled, spool_bytes = shipper.on_disk
        return Footprint(cores, self._rss(), shipper.pending, spooled, spool_bytes,
                         shipper.stats.dropped)

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
                              interval_s: float = REPORT_INTERVAL_S) -> None:
    """Log the footprint every interval until stop is set, and once more at the end."""
    meter = FootprintMeter()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        try:
            log.info("%s", meter.measure(shipper).line())
        except Exception:  # a background loop logs and carries on
            log.exception("measuring the agent's footprint failed")
