"""GPU telemetry without a GPU: reason decoding, `--gpu replay:FILE` (timing, looping, bad
files, the demo recording) and the sampler playing a recording end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pynvml
import pytest

from pyrometer.agent.gpu.replay import ReplaySource
from pyrometer.agent.gpu.sampler import GpuSampler, open_gpu_source
from pyrometer.agent.shared import clock_events
from pyrometer.agent.shared.clock_events import decode_reasons
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import GpuReading

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "gpu-thermal-episode.jsonl"
# read from a real H100 by `make gpu-check --record` under its matmul load (deploy/README.md)
REAL_H100 = DEMO.with_name("gpu-h100-power-cap.jsonl")
S = 1_700_000_000 * 10**9  # the agent's start
SEC = 10**9
TARGET = 4242


# --- clock-event reasons --------------------------------------------------------------

def test_the_reason_table_matches_the_installed_nvml_bindings() -> None:
    # each bit from either family of pynvml's constants: some exist only in the older
    # "throttle" one (BoardLimit, Reliability), the rest in both
    for reason in clock_events.REASONS:
        bound = {getattr(pynvml, family + reason.nvml_name, None)
                 for family in ("nvmlClocksEventReason", "nvmlClocksThrottleReason")} - {None}
        assert bound == {reason.bit}, reason
    assert clock_events.SLOWDOWN_MASK == 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def test_decode_names_known_bits_in_order_and_unknown_ones_in_hex() -> None:
    assert decode_reasons(0) == ()
    assert decode_reasons(0x60) == ("SwThermalSlowdown", "HwThermalSlowdown")
    assert decode_reasons(0x1 | 0x1000 | 0x4) == ("GpuIdle", "SwPowerCap", "unknown_0x1000")


# --- replay -----------------------------------------------------------------------------

def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_releases_readings_as_the_clock_passes_start_plus_t(tmp_path: Path) -> None:
    path = write(tmp_path, '{"t": 0, "index": 0, "sm_clock_mhz": 1980}',
                 '{"t": 0, "index": 1, "sm_clock_mhz": 1970}',
                 '', '{"t": 1.5, "index": 0, "sm_clock_mhz": 1100, "clock_event_reasons": 96}',
                 '{"t": 2, "index": 0, "temperature_c": 91.5}')
    source = ReplaySource(path, start_ns=S)
    assert source.read(S - 1, ()) == []
    first = source.read(S, ())
    assert [(r.index, r.sm_clock_mhz, r.time_ns) for r in first] == [(0, 1980, S), (1, 1970, S)]
    assert source.read(S + SEC, ()) == []
    later = source.read(S + 2 * SEC, ())
    assert [r.time_ns for r in later] == [S + 3 * SEC // 2, S + 2 * SEC]
    assert decode_reasons(later[0].clock_event_reasons or 0) == ("SwThermalSlowdown", "HwThermalSlowdown")
    assert later[1].temperature_c == 91.5 and later[1].sm_clock_mhz is None
    assert all(r.replayed for r in first + later)


def test_replay_loops_one_step_after_its_end_and_skips_missed_loops(tmp_path: Path) -> None:
    path = write(tmp_path, '{"t": 0, "index": 0}', '{"t": 1, "index": 0}', '{"t": 2, "index": 0}')
    source = ReplaySource(path, start_ns=S)
    assert len(source.read(S + 2 * SEC, ())) == 3
    assert [r.time_ns for r in source.read(S + 4 * SEC, ())] == [S + 3 * SEC, S + 4 * SEC]  # period 3 s
    # an hour behind: no burst of an hour of readings, only the current loop's
    caught_up = source.read(S + 3600 * SEC, ())
    assert [r.time_ns for r in caught_up] == [S + 3600 * SEC]


@pytest.mark.parametrize(("lines", "needle"), [
    (['{"t": 0, "index": 0}', '{"t": 1, "index": 0'], "line 2: not JSON"),
    (['{"t": 0, "index": 0}', '', '{"t": 1, "index": 0, "fan_pct": 40}'], "line 3: unknown field 'fan_pct'"),
    (['{"t": 0, "index": 0, "sm_clock_mhz": "fast"}'], 'line 1: sm_clock_mhz must be int, got "fast"'),
    (['{"t": 0, "index": 0, "sm_clock_mhz": 1.5}'], "line 1: sm_clock_mhz must be int"),
    (['{"t": 0, "index": 0, "replayed": false}'], "line 1: unknown field 'replayed'"),
    (['{"t": 0, "index": 0, "power_mw": -5}'], "line 1: power_mw = -5 is out of range"),
    (['{"index": 0}'], "line 1: 't' must be seconds"),
    (['{"t": 0}'], "line 1: 'index'"),
    (['[1, 2]'], "line 1: expected a JSON object"),
    (['{"t": 5, "index": 0}', '{"t": 4, "index": 0}'], "line 2: t goes backwards"),
    (['', ''], "has no readings"),
])
def test_bad_recording_is_a_config_error_naming_the_line(tmp_path: Path, lines: list[str],
                                                         needle: str) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(ConfigError, match="--gpu replay:") as err:
        open_gpu_source(f"replay:{path}", start_ns=S)
    assert needle in str(err.value)


def test_missing_recording_and_bad_spec_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the recording"):
        open_gpu_source(f"replay:{tmp_path / 'absent.jsonl'}", start_ns=S)
    with pytest.raises(ConfigError, match="expected auto, off or replay:FILE"):
        open_gpu_source("nvml", start_ns=S)
    assert open_gpu_source("off", start_ns=S) is None


def test_demo_recording_has_a_thermal_throttle_episode_and_recovers() -> None:
    readings = ReplaySource(DEMO, start_ns=S).read(S + 91 * SEC, ())  # one pass
    assert (readings[-1].time_ns - readings[0].time_ns) >= 60 * SEC
    thermal = [r for r in readings if {"SwThermalSlowdown", "HwThermalSlowdown"}
               <= set(decode_reasons(r.clock_event_reasons or 0))]
    assert len(thermal) >= 10
    for r in thermal:
        assert r.temperature_c is not None and r.slowdown_temperature_c is not None
        assert r.temperature_c >= r.slowdown_temperature_c
        assert r.sm_clock_mhz is not None and r.sm_clock_max_mhz is not None
        assert r.sm_clock_mhz / r.sm_clock_max_mhz < 0.6  # a slowdown factor of about 1.8
    after = [r for r in readings if r.time_ns > thermal[-1].time_ns]
    assert after and not any((r.clock_event_reasons or 0) & clock_events.SLOWDOWN_MASK for r in after[-10:])


def test_the_real_h100_recording_replays_its_power_capped_clocks() -> None:
    # What a real device said under a sustained float16 matmul load: at its 700 W limit,
    # SwPowerCap held the SM clock near 1300 of 1980 MHz (a slowdown of about 1.5) the whole
    # time, far below the slowdown temperature; every field was reported.
    readings = ReplaySource(REAL_H100, start_ns=S).read(S + 75 * SEC, ())  # one pass (t 0-74.002 s)
    assert len(readings) == 75 and all(r.replayed and r.name == "NVIDIA H100 80GB HBM3" for r in readings)
    assert all(getattr(r, f.name) is not None for r in readings for f in dataclasses.fields(r))
    idle, loaded = readings[0], readings[1:]
    assert idle.utilization_gpu_pct == 0 and idle.sm_clock_mhz == 345 and idle.process_memory_bytes == 0
    for r in loaded:
        assert decode_reasons(r.clock_event_reasons or 0) == ("SwPowerCap",)
        assert r.utilization_gpu_pct is not None and r.utilization_gpu_pct >= 99
        assert r.sm_clock_mhz is not None and r.sm_clock_max_mhz == 1980
        assert 0.6 < r.sm_clock_mhz / r.sm_clock_max_mhz < 0.72
        assert r.temperature_c is not None and r.temperature_c < (r.slowdown_temperature_c or 0) - 20
        assert r.process_memory_bytes == 1_050_673_152  # the check's own operands and CUDA context
    assert sum((r.power_mw or 0) >= 690_000 for r in loaded) >= 70


def test_replay_runs_through_the_sampler_in_time_order() -> None:
    async def scenario() -> list[GpuReading]:
        rows = [json.loads(line) for line in DEMO.read_text().splitlines() if line]
        # all but the last reading are due at once; the last 0.3 s after the start
        start = time.time_ns() - int(rows[-1]["t"] * SEC) + 3 * SEC // 10
        source = open_gpu_source(f"replay:{DEMO}", start_ns=start)
        assert source is not None
        got: list[GpuReading] = []
        stop = asyncio.Event()

        def emit(reading: GpuReading) -> None:
            got.append(reading)
            if len(got) == len(rows):
                stop.set()

        await asyncio.wait_for(GpuSampler(source, 0.1).run(emit, lambda: (TARGET,), stop), 10)
        assert [r.time_ns - start for r in got] == [round(row["t"] * SEC) for row in rows]
        return got

    got = asyncio.run(scenario())
    assert all(r.replayed and r.index == 0 and r.name == "NVIDIA H200" for r in got)
    assert any("HwThermalSlowdown" in decode_reasons(r.clock_event_reasons or 0) for r in got)


def test_sampler_interval_is_checked() -> None:
    with pytest.raises(ConfigError, match="0.1-10"):
        GpuSampler(ReplaySource(DEMO, S), 0.05)
