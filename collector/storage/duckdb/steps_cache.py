"""Percentile steps read from the latency sketches, kept for the next read of the series.

The spike detector reads a day of a service's latency percentiles by step, from the
latency sketches (series.py), and the same day again a minute later: a dashboard
refreshes, the window slides on by a step or two, a user asks again. A step that lies
wholly below the sketches' watermark is final: compaction only ever adds sketch rows
above the watermark, so that step's rows, and so its percentile, stay as they were until
a late request (one that ended below the watermark) or retention changes the sketches.
The store says when either happens (`changed`), which drops every kept step.

So each read keeps the rows of its whole steps below the watermark (per service,
percentile, step and grid), and the next read of the same series takes the steps it
shares with them and reads only the rest: a refreshed day reads its last few steps, not
its 2,880. What comes back is exactly what a full read gives, since a step's rows depend
on that step's sketch rows alone (a test holds the two equal, across late requests,
retention and a sliding window).

This is the query-results cache that Prometheus-style query front ends keep for the same
reason (split by step-aligned interval, reuse the settled part), scoped to the one thing
whose invalidation this process can see: its own store's writes. A store that other
processes also write (the lake) keeps none.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pyrometer.agent.shared.model import Nanos

# (service, percentile, step, the grid's offset: start % step)
SeriesKey = tuple[str, str, Nanos, Nanos]
# a row of series._sketch_rows: (whole series?, route, step start, requests, value in ns)
Row = tuple[Any, ...]
BUCKET = 2  # where a row holds its step's start


@dataclass(frozen=True, slots=True)
class KeptSteps:
    """The rows of the whole steps [first_ns, until_ns) of one series, by step."""

    generation: int
    first_ns: Nanos
    until_ns: Nanos
    rows: tuple[Row, ...]


class SketchedSteps:
    """The kept steps of the last few series read (least recently used go first)."""

    def __init__(self, max_series: int = 8) -> None:
        self.max_series = max_series
        self._lock = threading.Lock()
        self._series: OrderedDict[SeriesKey, KeptSteps] = OrderedDict()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before reading the sketches, and given back with what they gave
        (`keep`): a change in between makes `keep` drop it."""
        return self._generation

    def changed(self) -> None:
        """The sketches below their watermark changed (a late request's bins, retention):
        nothing kept is known to hold."""
        with self._lock:
            self._generation += 1
            self._series.clear()

    def get(self, key: SeriesKey) -> KeptSteps | None:
        with self._lock:
            found = self._series.get(key)
            if found is None or found.generation != self._generation:
                return None
            self._series.move_to_end(key)
            return found

    def keep(self, key: SeriesKey, steps: KeptSteps) -> None:
        with self._lock:
            if steps.generation != self._generation:
                return  # the sketches changed while they were read
            self._series[key] = steps
            self._series.move_to_end(key)
            while len(self._series) > self.max_series:
                self._series.popitem(last=False)
