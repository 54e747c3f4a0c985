"""GPU telemetry: where readings come from (`--gpu`), and the loop that samples them.

Sources: NVML (:class:`~.nvml.NvmlSource`, `--gpu auto`), a recording played back
(:class:`~.replay.ReplaySource`, `--gpu replay:FILE`, schema in that module), or
none (`--gpu off`, or `auto` on a host without NVML, its driver or a GPU: one log line,
and the agent runs without GPU data). :class:`GpuSampler` reads the source at a fixed
interval and hands each reading on; both sources go through the same path.

The clock-event reason mask is kept raw in each reading; agent/shared/clock_events.py
names its bits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Collection
from typing import Protocol

from pyrometer.agent.gpu.replay import ReplaySource
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import GpuReading, Nanos

log = logging.getLogger(__name__)
# NVML talks to the kernel driver through one of these devices (/dev/dxg: WSL2's GPU
# paravirtualisation, which has no nvidiactl): where none exists (no driver, or a
# container without the GPU mounted) NVML cannot start, so `auto` need not try
DRIVER_DEVICES = ("/dev/nvidiactl", "/dev/dxg")

MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 10.0


class GpuSource(Protocol):
    """Where GPU readings come from. read() blocks (NVML calls); it runs in a thread."""

    def read(self, now_ns: Nanos, target_pids: Collection[int]) -> list[GpuReading]:
        """Readings due at now_ns; target_pids are the processes whose GPU memory counts."""
        ...

    def close(self) -> None:
        """Release the source (shut NVML down)."""
        ...


def open_gpu_source(spec: str, *, start_ns: Nanos) -> GpuSource | None:
    """The source `--gpu SPEC` names: auto | off | replay:FILE; None means no GPU data.

    A bad replay file is a ConfigError; `auto` never fails, it logs why there is no GPU.
    """
    if spec == "off":
        return None
    if spec.startswith("replay:") and spec[len("replay:"):]:
        return ReplaySource(spec[len("replay:"):], start_ns)
    if spec != "auto":
        raise ConfigError(f"--gpu {spec!r}: expected auto, off or replay:FILE")
    if not any(os.path.exists(device) for device in DRIVER_DEVICES):
        log.warning("GPU telemetry off: the NVIDIA driver is not loaded (no %s)",
                    " or ".join(DRIVER_DEVICES))
        return None
    # pynvml and ctypes cost the agent about 4 MiB of memory: imported only where a
    # driver is, so a CPU-only host does not pay for them
    from pyrometer.agent.gpu.nvml import NvmlSource

    try:
        return NvmlSource.open()
    except Exception as err:  # any failure here means "no GPU data"
        log.warning("GPU telemetry off: %s", why_no_nvml(err))
        return None


def why_no_nvml(err: Exception) -> str:
    """One line saying why NVML could not be used, from the error its start raised."""
    import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type hints

    from pyrometer.agent.gpu.queries import GpuUnavailable

    if isinstance(err, getattr(pynvml, "NVMLError_LibraryNotFound", ())):
        return ("the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver on this "
                "host, or it is not mounted into this container")
    if isinstance(err, getattr(pynvml, "NVMLError_DriverNotLoaded", ())):
        return "the NVIDIA driver is not loaded"
    if isinstance(err, GpuUnavailable):
        return str(err)
    if isinstance(err, pynvml.NVMLError):
        return f"NVML failed to start: {err}"
    return f"NVML failed to start: {type(err).__name__}: {err}"


class GpuSampler:
    """Reads a GpuSource every interval_s and hands each reading to emit()."""

    def __init__(self, source: GpuSource, interval_s: float = 1.0, *,
                 clock: Callable[[], Nanos] = time.time_ns,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0) -> None:
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ConfigError(f"--gpu-interval {interval_s}: expected {MIN_INTERVAL_S}-{MAX_INTERVAL_S} s")
        self._source = source
        self._interval_ns = round(interval_s * 1e9)
        self._clock = clock
        self._backoff = (backoff_initial_s, backoff_max_s)
        self.failures = 0  # consecutive failed reads

    async def run(self, emit: Callable[[GpuReading], None], target_pids: Callable[[], Collection[int]],
                  stop: asyncio.Event) -> None:
        """Sample until stop is set, then close the source.

        Never raises: a failing source is logged and read again after a backoff (an
        NvmlSource initialises NVML afresh on the read after a failure).
        """
        try:
            await self._loop(emit, target_pids, stop)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._source.close)

    async def _loop(self, emit: Callable[[GpuReading], None], target_pids: Callable[[], Collection[int]],
                    stop: asyncio.Event) -> None:
        due = self._clock()
        while not stop.is_set():
            now = self._clock()
            try:
                readings = await asyncio.to_thread(self._source.read, now, tuple(target_pids()))
            except Exception as err:  # a background loop logs and carries on
                await _wait(stop, self._failed(err))
                due = self._clock()
                continue
            if self.failures:
                log.info("GPU readings resumed after %d failed attempts", self.failures)
                self.failures = 0
            self._emit_all(emit, readings)
            due += self._interval_ns
            now = self._clock()
            if due <= now:  # fell behind (a slow driver): skip the missed ticks, no burst
                due = now + self._interval_ns - (now - due) % self._interval_ns
            await _wait(stop, (due - now) / 1e9)

    def _failed(self, err: Exception) -> float:
        self.failures += 1
        initial, ceiling = self._backoff
        delay = min(ceiling, initial * 2.0 ** (self.failures - 1)) * random.uniform(0.8, 1.2)
        level = logging.WARNING if self.failures == 1 or delay >= ceiling * 0.8 else logging.DEBUG
        log.log(level, "GPU reading failed (%s: %s); retrying in %.1f s", type(err).__name__, err, delay)
        return delay

    @staticmethod
    def _emit_all(emit: Callable[[GpuReading], None], readings: list[GpuReading]) -> None:
        for reading in readings:
            try:
                emit(reading)
            except Exception:  # one bad consumer must not stop sampling
                log.exception("GPU reading consumer failed")


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
