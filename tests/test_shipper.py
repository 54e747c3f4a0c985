"""The agent's shipper against a real collector ingest server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from ingest_builder import BASE_NS, stack

from pyrometer.agent.encoder import AgentIdentity
from pyrometer.agent.model import NANOS_PER_SECOND, ProfileWindow, SampleKey
from pyrometer.agent.shipper import Shipper, ShipperConfig
from pyrometer.collector.ingest import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage import DuckDBStore

S = NANOS_PER_SECOND
MAIN = stack("main", "serve", "forward")
DEADLINE_S = 30  # generous: CI is a busy 2-core machine
IDENTITY = AgentIdentity("agent-ship", "svc", "pod-1", "host-1", 100)


def window(i: int, count: int = 10) -> ProfileWindow:
    start = BASE_NS + i * 10 * S
    return ProfileWindow(start, start + 10 * S, 100.0, {SampleKey(MAIN, "MainThread"): count})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stored(store: DuckDBStore) -> int:
    return store.profile("svc", BASE_NS - 3600 * S, BASE_NS + 3600 * S).total


def run(tmp_path: Path, body: Callable[[DuckDBStore, int], Awaitable[None]]) -> None:
    store = DuckDBStore(tmp_path / "ship.duckdb")
    try:
        asyncio.run(asyncio.wait_for(body(store, free_port()), DEADLINE_S))
    finally:
        store.close()


async def deliver(shipper: Shipper) -> None:
    task = asyncio.create_task(shipper.run())
    await shipper.close()
    await task


def test_windows_are_delivered_in_order_and_close_returns_once_acked(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, port: int) -> None:
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"))
        try:
            shipper = Shipper(ShipperConfig(f"127.0.0.1:{port}", max_in_flight=2), IDENTITY)
            seqs = [shipper.submit(window(i)) for i in range(5)]
            await deliver(shipper)
        finally:
            await server.stop(1.0)
        assert seqs == [1, 2, 3, 4, 5]
        assert (shipper.stats.sent, shipper.stats.acked, shipper.pending) == (5, 5, 0)
        assert stored(store) == 50

    run(tmp_path, body)


def test_collector_down_at_first_then_up_loses_nothing(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, port: int) -> None:
        config = ShipperConfig(f"127.0.0.1:{port}", backoff_initial_s=0.05, backoff_max_s=0.2)
        shipper = Shipper(config, IDENTITY)
        task = asyncio.create_task(shipper.run())
        shipper.submit(window(0))
        while shipper.stats.reconnects < 2:  # it has tried and failed at least twice
            await asyncio.sleep(0.02)
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"))
        try:
            shipper.submit(window(1))
            await shipper.close()
            await task
        finally:
            await server.stop(1.0)
        assert shipper.stats.acked == 2 and stored(store) == 20

    run(tmp_path, body)


def test_a_rejected_window_is_dropped_and_the_rest_still_arrive(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, port: int) -> None:
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"))
        try:
            shipper = Shipper(ShipperConfig(f"127.0.0.1:{port}", backoff_initial_s=0.05), IDENTITY)
            shipper.submit(window(0))
            bad = window(1)
            shipper.submit(ProfileWindow(bad.end_ns, bad.start_ns, 100.0, bad.counts))  # end < start
            shipper.submit(window(2))
            await deliver(shipper)
        finally:
            await server.stop(1.0)
        assert (shipper.stats.rejected, shipper.stats.acked) == (1, 2)
        assert stored(store) == 20

    run(tmp_path, body)


def test_queue_bound_drops_the_oldest_and_counts_it() -> None:
    shipper = Shipper(ShipperConfig("127.0.0.1:1", max_pending=3), IDENTITY)
    for i in range(5):
        shipper.submit(window(i))
    assert shipper.pending == 3 and shipper.stats.dropped_overflow == 2


def test_resent_windows_after_reconnect_are_not_stored_twice(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, port: int) -> None:
        metrics = CollectorMetrics()
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"), metrics)
        try:
            first = Shipper(ShipperConfig(f"127.0.0.1:{port}"), IDENTITY)
            first.submit(window(0))
            await deliver(first)
            # a second shipper with the same identity and seq is what a resend looks like
            again = Shipper(ShipperConfig(f"127.0.0.1:{port}"), IDENTITY)
            again.submit(window(0))
            await deliver(again)
        finally:
            await server.stop(1.0)
        assert again.stats.duplicates == 1 and stored(store) == 10

    run(tmp_path, body)
