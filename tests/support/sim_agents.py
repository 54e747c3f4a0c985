"""Simulated agents: real Shippers (gRPC, spool, retries) fed windows of known counts,
so a test can say exactly which samples every acknowledged batch held."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pyrometer.agent.shared.model import NANOS_PER_SECOND, ProfileWindow, SampleKey
from pyrometer.agent.ship.encoder import AgentIdentity
from pyrometer.agent.ship.shipper import Shipper, ShipperConfig
from support.ingest_builder import stack

S = NANOS_PER_SECOND


@dataclass
class Sim:
    """A simulated agent: windows of known counts at a steady pace through a real Shipper."""

    name: str
    shipper: Shipper
    submitted: dict[int, int] = field(default_factory=dict)  # seq -> samples

    async def produce(self, stop: asyncio.Event, period_s: float) -> None:
        i = 0
        while not stop.is_set():
            start_ns = time.time_ns()
            counts = {SampleKey(stack("main", "serve", f"op{i % 5}")): 1 + i % 7,
                      SampleKey(stack("main", "idle"), thread="bg"): 1 + i % 3}
            window = ProfileWindow(start_ns, start_ns + S // 10, 100.0, counts)
            self.submitted[self.shipper.submit(window)] = window.total
            i += 1
            await asyncio.sleep(period_s)


def sim(name: str, collector: str, spool_dir: Path) -> Sim:
    """A simulated agent of service `name` shipping to `collector` (HOST:PORT)."""
    return Sim(name, Shipper(
        ShipperConfig(collector, spool_dir=spool_dir, backoff_initial_s=0.1, backoff_max_s=1.0),
        AgentIdentity(agent_id=uuid.uuid4().hex, service=name, instance="sim", host="h",
                      target_pid=1)))


async def until(condition: object, timeout: float = 120.0) -> None:
    """Poll a condition (not a fixed sleep), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
