"""Gather telemetry records between batches, bounded, and hand them over whole.

Samplers call the add_* methods (all on the agent's event loop, so no locking); the
agent takes everything gathered into the next batch. Per-request records can arrive
faster than a stalled collector drains them, so each kind is bounded: past the bound
the oldest records are dropped and counted, never silently lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pyrometer.agent.shared.model import (
    AgentStats,
    EngineReading,
    Event,
    GpuReading,
    HostReading,
    ProcessReading,
    RequestRecord,
    Telemetry,
)

T = TypeVar("T")


@dataclass(slots=True)
class _Bounded(Generic[T]):
    limit: int
    items: deque[T] = field(default_factory=deque)
    dropped: int = 0

    def add(self, item: T) -> None:
        self.items.append(item)
        if len(self.items) > self.limit:
            self.items.popleft()
            self.dropped += 1

    def take(self) -> tuple[T, ...]:
        out = tuple(self.items)
        self.items.clear()
        return out


class TelemetryBuffer:
    """Records gathered since the last batch; `take()` empties it."""

    def __init__(self, max_requests: int = 100_000, max_readings: int = 10_000) -> None:
        self._gpu: _Bounded[GpuReading] = _Bounded(max_readings)
        self._process: _Bounded[ProcessReading] = _Bounded(max_readings)
        self._host: _Bounded[HostReading] = _Bounded(max_readings)
        self._requests: _Bounded[RequestRecord] = _Bounded(max_requests)
        # events are rare and each one matters (a deploy): a generous bound
        self._events: _Bounded[Event] = _Bounded(max_readings)
        self._agent_stats: _Bounded[AgentStats] = _Bounded(max_readings)
        self._engine: _Bounded[EngineReading] = _Bounded(max_readings)

    def add_gpu(self, reading: GpuReading) -> None:
        self._gpu.add(reading)

    def add_process(self, reading: ProcessReading) -> None:
        self._process.add(reading)

    def add_host(self, reading: HostReading) -> None:
        self._host.add(reading)

    def add_request(self, record: RequestRecord) -> None:
        self._requests.add(record)

    def add_event(self, event: Event) -> None:
        self._events.add(event)

    def add_agent_stats(self, stats: AgentStats) -> None:
        self._agent_stats.add(stats)

    def add_engine(self, reading: EngineReading) -> None:
        self._engine.add(reading)

    def __len__(self) -> int:
        return sum(len(b.items) for b in self._all())

    @property
    def dropped(self) -> dict[str, int]:
        names = ("gpu", "process", "host", "requests", "events", "engine")
        buffers: tuple[_Bounded[Any], ...] = self._all()
        return {name: b.dropped for name, b in zip(names, buffers, strict=True)}

    def take(self) -> Telemetry:
        return Telemetry(gpu=self._gpu.take(), process=self._process.take(),
                         host=self._host.take(), requests=self._requests.take(),
                         events=self._events.take(), agent_stats=self._agent_stats.take(),
                         engine=self._engine.take())

    def _all(self) -> tuple[_Bounded[Any], ...]:
        return self._gpu, self._process, self._host, self._requests, self._events, self._engine
