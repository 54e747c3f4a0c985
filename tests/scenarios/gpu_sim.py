"""The GPU-throttling simulation: a generated NVML recording and the server slowing in step.

The agent replays a recording (`--gpu replay:FILE`) timed from its own start; the demo
server stretches each forward pass by the factor in DEMO_SLOWDOWN_FILE. Both are driven
by one timeline, so the replayed clocks and the server's slowdown agree: while the SM
clock is below its maximum the factor is sm_clock_max / sm_clock, as a throttled device
stretches the kernels the host waits on. Everything here is simulated and every report
that shows it says so; readings take their shapes from deploy/demo/gpu-thermal-episode.jsonl.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
TEMPLATE = DEMO / "gpu-thermal-episode.jsonl"
SM_MAX_MHZ = 1980
SW_THERMAL, HW_THERMAL = 32, 64  # NVML clock-event reason bits, as in the template
RAMP_S = 3.0  # clocks fall (and recover) over a few seconds, as in the template
LABEL = "simulated (replayed NVML recording, demo server slowed in step)"


@dataclass(frozen=True, slots=True)
class ThermalEpisode:
    """Throttled from `start_s` for `duration_s` (offsets from the replay's start)."""

    start_s: float
    duration_s: float
    sm_clock_mhz: float  # the clock the device settles at while throttled

    def clock_at(self, t: float) -> float:
        """SM clock at offset t: full speed outside the episode, ramping at its edges."""
        into, left = t - self.start_s, self.start_s + self.duration_s - t
        if into < 0 or left < 0:
            return float(SM_MAX_MHZ)
        depth = min(1.0, (into + 1.0) / RAMP_S, (left + 1.0) / RAMP_S)
        return SM_MAX_MHZ - depth * (SM_MAX_MHZ - self.sm_clock_mhz)

    def slowdown_at(self, t: float) -> float:
        return SM_MAX_MHZ / self.clock_at(t)


NO_EPISODE = ThermalEpisode(start_s=float("inf"), duration_s=0.0, sm_clock_mhz=SM_MAX_MHZ)


def _template_row() -> dict[str, Any]:
    """A busy, unthrottled reading from the demo episode (the fields to fill in)."""
    rows = [json.loads(line) for line in TEMPLATE.read_text().splitlines() if line.strip()]
    busy = [r for r in rows if r["utilization_gpu_pct"] >= 90 and r["clock_event_reasons"] == 0]
    return dict(busy[0])


def recording(episode: ThermalEpisode, length_s: float, seed: int) -> list[dict[str, Any]]:
    """One reading a second for `length_s`: a busy GPU, throttled during `episode`.

    Outside the episode the device is warm and at full clock (reasons 0); inside, the
    temperature is at its slowdown threshold, the thermal reason bits are set and power
    falls with the clock, as in the demo episode.
    """
    rng = random.Random(seed)
    base = _template_row()
    rows = []
    for second in range(int(length_s) + 1):
        t = float(second)
        clock = episode.clock_at(t)
        throttled = clock < SM_MAX_MHZ
        row = dict(base, t=t)
        jitter = rng.uniform(-15, 15) if throttled else 0.0
        row["sm_clock_mhz"] = row["graphics_clock_mhz"] = round(clock + jitter)
        row["clock_event_reasons"] = (SW_THERMAL | HW_THERMAL) if throttled else 0
        row["temperature_c"] = rng.choice((91, 92)) if throttled else rng.choice((74, 75, 76))
        row["power_mw"] = round(670_000 * clock / SM_MAX_MHZ + rng.uniform(-8000, 8000))
        row["utilization_gpu_pct"] = rng.choice((97, 98, 99, 100))
        rows.append(row)
    return rows


def write_recording(path: Path, episode: ThermalEpisode, length_s: float, seed: int) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recording(episode, length_s, seed)))
    return path


class SlowdownDriver(threading.Thread):
    """Keeps DEMO_SLOWDOWN_FILE at the episode's factor, timed from the replay's start.

    Writes go through a temporary file and a rename, so the server never reads half a
    number. The file is rewritten twice a second; the server re-reads it once a second.
    """

    def __init__(self, path: Path, episode: ThermalEpisode, replay_start: float) -> None:
        super().__init__(name="gpu-slowdown", daemon=True)
        self._path, self._episode, self._start = path, episode, replay_start
        self._done = threading.Event()

    def run(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        while not self._done.is_set():
            factor = self._episode.slowdown_at(time.time() - self._start)
            tmp.write_text(f"{factor:.4f}\n")
            tmp.replace(self._path)
            self._done.wait(0.5)  # scenario time passing, not synchronisation

    def stop(self) -> None:
        self._done.set()
        self.join(5.0)
        self._path.write_text("1\n")
