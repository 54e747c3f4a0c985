"""Read every GPU on the host through NVML (the `nvidia-ml-py` bindings, module `pynvml`).

:class:`NvmlSource` initialises NVML once and caches one handle per device. A reading
is the queries of :mod:`.gpu_queries`, each handled on its own:

- not supported by this device or driver: one log line, then never asked again of
  that device (a query with an older API falls back to it first, without a line);
- any other NVML error: that field is None, logged at most once a minute per device
  and query;
- the GPU is lost (fell off the bus, needs a reset): one log line, and it drops out of
  the readings;
- the driver went away, or every GPU is lost: NVML is shut down and
  :class:`GpuUnavailable` raised; the next ``read`` initialises NVML afresh, so the
  caller's backoff is all that recovery takes.

NVML reports host process ids: a target inside a container's own PID namespace has
another pid there, so its GPU memory is found only when the agent sees host pids.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type hints

from pyrometer.agent.gpu.queries import (
    DEVICE_LOST,
    DRIVER_GONE,
    FATAL,
    QUERIES,
    UNSUPPORTED,
    Fields,
    GpuUnavailable,
)
from pyrometer.agent.shared.model import GpuReading, Nanos

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0


@dataclass(slots=True)
class _Device:
    """One GPU's cached handle and what it has been found not to support."""

    index: int
    handle: Any
    uuid: str
    name: str
    choice: dict[str, int] = field(default_factory=dict)  # query -> alternative in use
    lost: bool = False


class NvmlSource:
    """Readings of every GPU NVML sees; a GpuSource. Not safe to share between threads."""

    def __init__(self) -> None:
        self._devices: list[_Device] | None = None  # None: NVML not initialised
        self._last_logged: dict[tuple[int, str], float] = {}

    @classmethod
    def open(cls) -> NvmlSource:
        """Initialise NVML and find the GPUs; raises pynvml.NVMLError or GpuUnavailable."""
        source = cls()
        source._start()
        return source

    @property
    def devices(self) -> list[tuple[int, str, str]]:
        """(index, uuid, name) of each GPU in use; empty while NVML is down."""
        return [(d.index, d.uuid, d.name) for d in self._devices or () if not d.lost]

    def read(self, now_ns: Nanos, target_pids: Collection[int]) -> list[GpuReading]:
        """One reading per GPU, stamped now_ns; raises GpuUnavailable when NVML is gone."""
        if self._devices is None:
            self._start()
            log.info("NVML initialised again: %d GPU(s)", len(self.devices))
        assert self._devices is not None
        try:
            readings = [self._reading(dev, now_ns, target_pids) for dev in self._devices if not dev.lost]
        except DRIVER_GONE as err:
            self.close()
            raise GpuUnavailable(f"NVML stopped answering ({err})") from err
        found = [r for r in readings if r is not None]
        if not found and all(d.lost for d in self._devices):
            self.close()  # a restart of NVML is the only way a lost GPU comes back
            raise GpuUnavailable("every GPU is lost")
        return found

    def close(self) -> None:
        """Shut NVML down; a later read initialises it again."""
        if self._devices is None:
            return
        self._devices = None
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as err:
            log.debug("nvmlShutdown: %s", err)

    def _start(self) -> None:
        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            devices = [d for d in map(self._device, range(count)) if d is not None]
        except BaseException:
            self._shutdown_quietly()
            raise
        if not devices:
            self._shutdown_quietly()
            raise GpuUnavailable("NVML found no usable GPU" if count else "NVML found no GPU")
        self._devices = devices

    def _device(self, index: int) -> _Device | None:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except DEVICE_LOST + UNSUPPORTED as err:
            log.warning("GPU %d cannot be read: %s", index, err)
            return None
        return _Device(index, handle, _text(handle, "nvmlDeviceGetUUID"), _text(handle, "nvmlDeviceGetName"))

    def _shutdown_quietly(self) -> None:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # it is already down

    def _reading(self, dev: _Device, now_ns: Nanos, pids: Collection[int]) -> GpuReading | None:
        fields: Fields = {}
        try:
            for name in QUERIES:
                fields.update(self._query(dev, name, pids))
        except DEVICE_LOST as err:
            dev.lost = True
            log.error("GPU %d (%s) is lost: %s; it is left out until NVML restarts", dev.index, dev.uuid, err)
            return None
        return GpuReading(time_ns=now_ns, index=dev.index, uuid=dev.uuid, name=dev.name, **fields)

    def _query(self, dev: _Device, name: str, pids: Collection[int]) -> Fields:
        alternatives = QUERIES[name]
        while (choice := dev.choice.get(name, 0)) < len(alternatives):
            try:
                return alternatives[choice](dev.handle, pids)
            except UNSUPPORTED as err:
                dev.choice[name] = choice + 1
                if choice + 1 == len(alternatives):
                    log.info("GPU %d (%s): %s not supported (%s); not asked again",
                             dev.index, dev.name, name, err or type(err).__name__)
            except FATAL:
                raise
            except pynvml.NVMLError as err:
                self._log_limited((dev.index, name), "GPU %d (%s): reading %s failed: %s",
                                  dev.index, dev.name, name, err)
                return {}
        return {}

    def _log_limited(self, key: tuple[int, str], message: str, *args: object) -> None:
        # a flaky driver answers badly at every reading: one line a minute is enough
        now = time.monotonic()
        if now - self._last_logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_logged[key] = now
            log.warning(message, *args)


def _text(handle: Any, getter: str) -> str:
    try:
        value = getattr(pynvml, getter)(handle)
    except (pynvml.NVMLError, AttributeError):
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
