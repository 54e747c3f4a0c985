"""NVML's clock-event (throttle) reasons: one table for the agent and the collector.

The bits are nvmlClocksEventReason* in nvml.h. The first nine are in every driver since
R418; BoardLimit and Reliability came with recent drivers (cuda-python's nvml
ClocksEventReasons lists them as 0x200 and 0x400; nvidia-ml-py has them only in the older
"throttle" family of constants). The bits are the driver's ABI, so they are written out
here rather than read from the bindings at import time: the collector has no pynvml, and
a test checks the table against whatever bindings are installed.

Each reason has two names: NVML's (``SwThermalSlowdown``, what the agent logs and
`make gpu-check` prints) and a snake_case one (``sw_thermal_slowdown``, what the
collector stores and the API serves).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple


class Reason(NamedTuple):
    name: str  # snake_case: storage, API, analysis
    nvml_name: str  # as in nvml.h, after nvmlClocksEventReason
    bit: int


REASONS: tuple[Reason, ...] = (
    Reason("gpu_idle", "GpuIdle", 0x1),
    Reason("applications_clocks_setting", "ApplicationsClocksSetting", 0x2),
    Reason("sw_power_cap", "SwPowerCap", 0x4),
    Reason("hw_slowdown", "HwSlowdown", 0x8),
    Reason("sync_boost", "SyncBoost", 0x10),
    Reason("sw_thermal_slowdown", "SwThermalSlowdown", 0x20),
    Reason("hw_thermal_slowdown", "HwThermalSlowdown", 0x40),
    Reason("hw_power_brake_slowdown", "HwPowerBrakeSlowdown", 0x80),
    Reason("display_clock_setting", "DisplayClockSetting", 0x100),
    Reason("board_limit", "BoardLimit", 0x200),
    Reason("reliability", "Reliability", 0x400),
)

CLOCK_EVENT_REASONS: Mapping[str, int] = {r.name: r.bit for r in REASONS}
"""snake_case name -> bit, lowest bit first."""

KNOWN_CLOCK_EVENT_MASK = sum(CLOCK_EVENT_REASONS.values())
"""A bit outside this union is not something a driver reports."""

SLOWDOWN_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                    "hw_power_brake_slowdown")
"""Reasons that mean the GPU runs slower than it could: idle, application clocks, sync
boost and display settings lower clocks without anything being wrong."""

SLOWDOWN_MASK = sum(CLOCK_EVENT_REASONS[n] for n in SLOWDOWN_REASONS)


def decode_reasons(mask: int) -> tuple[str, ...]:
    """NVML's names of the bits set in a clock-event mask, lowest bit first; unknown ones
    as ``unknown_0x...``."""
    names = [r.nvml_name for r in REASONS if mask & r.bit]
    rest = mask & ~KNOWN_CLOCK_EVENT_MASK
    names += [f"unknown_{1 << b:#x}" for b in range(rest.bit_length()) if rest >> b & 1]
    return tuple(names)
