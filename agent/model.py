"""Pyrometer's domain model: plain frozen values shared by the agent and the collector.

It lives in the agent package because the agent is the base install that every other
part depends on; it imports nothing outside the standard library. Protobuf types never
leave the encoder (agent) and the ingest servicer (collector).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Nanos = int  # nanoseconds since the Unix epoch, or a duration in nanoseconds
NANOS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Frame:
    """One Python frame as py-spy reports it: function, file, current line (0 = unknown)."""

    name: str
    file: str
    line: int = 0


Stack = tuple[Frame, ...]
"""Frames of one sample, root (outermost call) first."""


@dataclass(frozen=True, slots=True)
class SampleKey:
    """What one count in a window is keyed by."""

    stack: Stack
    thread: str = ""  # thread label, e.g. "MainThread (2918)"; "" when threads are not recorded
    pid: int = 0  # the worker process sampled (--subprocesses); 0 = the target itself


@dataclass(frozen=True, slots=True)
class ProfileWindow:
    """All samples py-spy took of the target between start_ns and end_ns (agent clock)."""

    start_ns: Nanos
    end_ns: Nanos
    rate_hz: float  # requested rate; see achieved_rate_hz
    counts: Mapping[SampleKey, int] = field(default_factory=dict)
    idle_included: bool = False  # wall-clock profile: idle stacks are in the counts
    gil_only: bool = False
    native: bool = False
    errors: int = 0  # samples py-spy failed to take

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def duration_ns(self) -> Nanos:
        return self.end_ns - self.start_ns

    @property
    def achieved_rate_hz(self) -> float:
        """Samples per second of window actually recorded (not what was asked for)."""
        if self.duration_ns <= 0:
            return 0.0
        return self.total * NANOS_PER_SECOND / self.duration_ns
