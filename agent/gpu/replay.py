"""Recorded GPU readings played back as if read now (`--gpu replay:FILE`).

For demos and tests on machines without a GPU. The recording is JSON lines, one reading
of one GPU per line (blank lines are skipped)::

    {"t": 12.0, "index": 0, "uuid": "GPU-...", "name": "NVIDIA H200",
     "temperature_c": 71.0, "sm_clock_mhz": 1980, "clock_event_reasons": 0, ...}

- ``t`` (required): seconds since the recording's start, >= 0, never decreasing from
  one line to the next;
- ``index`` (required): the GPU's NVML index;
- any other :class:`~.model.GpuReading` field, by its name and in its unit (``uuid``,
  ``name``, ``temperature_c``, ``slowdown_temperature_c``, ``memory_temperature_c``,
  ``sm_clock_mhz``, ``sm_clock_max_mhz``, ``graphics_clock_mhz``, ``memory_clock_mhz``,
  ``memory_clock_max_mhz``, ``clock_event_reasons`` (the raw NVML bitmask),
  ``power_mw``, ``power_limit_mw``, ``memory_used_bytes``, ``memory_total_bytes``,
  ``utilization_gpu_pct``, ``utilization_memory_pct``, ``performance_state``,
  ``process_memory_bytes``); absent or null means the device did not say.

``time_ns`` and ``replayed`` are set by the replay, never read from the file. The whole
file is checked when it is opened: an unknown key or a value of the wrong type or range
is a ConfigError naming the line.

A reading is released once the agent's clock passes ``start_ns + t``, stamped with that
time. The recording loops: after its last line it starts again one step later (the
smallest gap between its distinct times), so a demo longer than the recording keeps
getting data. An agent that falls more than a whole loop behind skips the loops it
missed instead of releasing them in a burst. Every reading has ``replayed=True``, and
``process_memory_bytes`` is the recorded value whatever the target's pids are.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, GpuReading, Nanos

_SET_BY_REPLAY = frozenset({"time_ns", "replayed"})
_SIGNED = frozenset({"temperature_c", "slowdown_temperature_c", "memory_temperature_c"})
_MAX_MASK = 2**64 - 1


def _field_types() -> dict[str, tuple[type, ...]]:
    """GpuReading field -> the JSON types it accepts (NoneType for optional ones)."""
    hints = typing.get_type_hints(GpuReading)
    types_by_field: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(GpuReading):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        types_by_field[f.name] = tuple(args)
    return types_by_field


_FIELD_TYPES = _field_types()


class ReplaySource:
    """A GpuSource that plays a recording, timed from start_ns (the agent's start)."""

    def __init__(self, path: str | Path, start_ns: Nanos) -> None:
        self.path = Path(path)
        self._rows = load_recording(self.path)
        self._start_ns = start_ns
        self._period_ns = _loop_period(self._rows)
        self._loop = 0
        self._next = 0

    def read(self, now_ns: Nanos, target_pids: Collection[int]) -> list[GpuReading]:
        """Every recorded reading that fell due since the last call, in recorded order."""
        elapsed = now_ns - self._start_ns
        if elapsed // self._period_ns - self._loop >= 2:
            self._loop, self._next = elapsed // self._period_ns, 0  # skip the loops missed
        due: list[GpuReading] = []
        while True:
            t_ns, reading = self._rows[self._next]
            offset = self._loop * self._period_ns + t_ns
            if offset > elapsed:
                return due
            due.append(dataclasses.replace(reading, time_ns=self._start_ns + offset))
            self._next += 1
            if self._next == len(self._rows):
                self._loop, self._next = self._loop + 1, 0

    def close(self) -> None:
        """Nothing to release: the recording was read whole at open."""


def load_recording(path: Path) -> list[tuple[Nanos, GpuReading]]:
    """Parse and check a recording: (offset from its start, reading) per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--gpu replay:{path}: cannot read the recording: {err}") from None
    rows: list[tuple[Nanos, GpuReading]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            row = parse_line(line, where=f"--gpu replay:{path} line {number}")
            if rows and row[0] < rows[-1][0]:
                raise ConfigError(f"--gpu replay:{path} line {number}: t goes backwards")
            rows.append(row)
    if not rows:
        raise ConfigError(f"--gpu replay:{path}: the recording has no readings")
    return rows


def parse_line(line: str, where: str) -> tuple[Nanos, GpuReading]:
    """One JSON line -> (offset ns, reading with replayed=True); ConfigError naming `where`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: not JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    t = record.pop("t", None)
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"{where}: 't' must be seconds since the recording's start (>= 0)")
    if "index" not in record:
        raise ConfigError(f"{where}: 'index' (the GPU's index) is required")
    for key, value in record.items():
        _check(key, value, where)
    return round(t * NANOS_PER_SECOND), GpuReading(time_ns=0, replayed=True, **record)


def to_line(reading: GpuReading, start_ns: Nanos) -> str:
    """One reading as a recording's line (the inverse of parse_line), `t` from start_ns.

    Fields the device did not report (None) are left out, as parse_line reads them;
    `replayed` and `time_ns` are the replay's own and never written. This is how
    `gpu-check --record FILE` saves a real device's readings for `--gpu replay:FILE`.
    """
    record: dict[str, Any] = {"t": round((reading.time_ns - start_ns) / NANOS_PER_SECOND, 3)}
    for f in dataclasses.fields(GpuReading):
        value = getattr(reading, f.name)
        if f.name not in _SET_BY_REPLAY and value is not None:
            record[f.name] = value
    return json.dumps(record)


def _check(key: str, value: Any, where: str) -> None:
    accepted = _FIELD_TYPES.get(key)
    if accepted is None or key in _SET_BY_REPLAY:
        raise ConfigError(f"{where}: unknown field {key!r}")
    if value is None and type(None) in accepted:
        return
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if str in accepted and isinstance(value, str):
        return
    if (int in accepted and isinstance(value, int) and numeric) or (float in accepted and numeric):
        if not math.isfinite(value) or (value < 0 and key not in _SIGNED) or value > _MAX_MASK:
            raise ConfigError(f"{where}: {key} = {value!r} is out of range")
        return
    wanted = " or ".join(t.__name__ for t in accepted if t is not type(None))
    raise ConfigError(f"{where}: {key} must be {wanted}, got {json.dumps(value)}")


def _loop_period(rows: list[tuple[Nanos, GpuReading]]) -> Nanos:
    times = sorted({t for t, _ in rows})
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return times[-1] + (min(steps) if steps else NANOS_PER_SECOND)
