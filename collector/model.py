"""The value a query returns and every renderer takes: merged samples of one window."""

from __future__ import annotations

from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos, Stack


@dataclass(frozen=True, slots=True)
class Profile:
    """Stacks and their sample counts for a service over [start_ns, end_ns).

    ``samples`` holds each distinct stack once (root first) with its summed count, in a
    deterministic order (by descending count, then stack), so renderers' output is
    stable. An empty ``samples`` is a valid answer: the window had no data.
    """

    service: str
    start_ns: Nanos
    end_ns: Nanos
    samples: tuple[tuple[Stack, int], ...]
    rate_hz: float = 100.0  # sampling rate asked of the agents (for pprof's period)
    idle_included: bool = False  # wall-clock samples mixed in: values are not CPU time
    # the coarsest stored resolution the counts were summed from: "raw" sample rows, or
    # "1m" / "1h" rollups for the window's whole minutes or hours (the counts are the same)
    resolution: str = "raw"

    @property
    def total(self) -> int:
        return sum(count for _, count in self.samples)

    @property
    def period_ns(self) -> Nanos:
        return round(NANOS_PER_SECOND / self.rate_hz) if self.rate_hz > 0 else 0

    @property
    def duration_ns(self) -> Nanos:
        return max(0, self.end_ns - self.start_ns)
