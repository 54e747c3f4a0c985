"""The value a query returns and every renderer takes: merged samples of one window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos, Stack

RESOLUTIONS = ("raw", "1m", "1h")  # finest first


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


def _frames_key(item: tuple[Stack, int]) -> list[tuple[str, str, int]]:
    return [(f.name, f.file, f.line) for f in item[0]]


def by_count(samples: list[tuple[Stack, int]]) -> list[tuple[Stack, int]]:
    """By descending count, equal counts by their frames: the frames' key is built only
    for the counts several stacks share (a key per stack was a third of a large read)."""
    samples.sort(key=lambda item: -item[1])
    out: list[tuple[Stack, int]] = []
    for _, tied in groupby(samples, key=lambda item: item[1]):
        group = list(tied)
        if len(group) > 1:
            group.sort(key=_frames_key)
        out.extend(group)
    return out


def merge(parts: Sequence[Profile], start_ns: Nanos, end_ns: Nanos) -> Profile:
    """The profiles of disjoint windows of one service as one profile of [start_ns,
    end_ns) (the span they were cut from): each stack's counts summed, in `Profile`'s
    order. The rate is the one most samples were taken at, as a read reports it; the
    resolution the coarsest any part was summed from."""
    if not parts:
        raise ValueError("merge: no profiles to merge")
    if len(parts) == 1 and (parts[0].start_ns, parts[0].end_ns) == (start_ns, end_ns):
        return parts[0]
    counts: dict[Stack, int] = {}
    by_rate: dict[float, int] = {}
    for part in parts:
        for stack, count in part.samples:
            counts[stack] = counts.get(stack, 0) + count
        by_rate[part.rate_hz] = by_rate.get(part.rate_hz, 0) + part.total
    rate = max(by_rate, key=lambda r: (by_rate[r], r))
    resolution = max((p.resolution for p in parts),
                     key=lambda r: RESOLUTIONS.index(r) if r in RESOLUTIONS else -1)
    return Profile(parts[0].service, start_ns, end_ns, tuple(by_count(list(counts.items()))),
                   rate, any(p.idle_included for p in parts), resolution)
