"""The agent's shipper against a real collector ingest server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import duckdb

from pyrometer.agent.shared.model import NANOS_PER_SECOND, ProfileWindow, SampleKey
from pyrometer.agent.ship.encoder import AgentIdentity
from pyrometer.agent.ship.shipper import Shipper, ShipperConfig
from pyrometer.collector.ingest.server import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.procs import Child, python_env, start
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support.ingest_builder import BASE_NS, stack

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


# --- the spool: outages, a killed agent, a killed collector -------------------------

KILLED_AGENT = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path[:0] = [{here!r}, {tests!r}]
from test_shipper import IDENTITY_OLD, window
from pyrometer.agent.ship.shipper import Shipper, ShipperConfig

async def main():
    shipper = Shipper(ShipperConfig("127.0.0.1:{port}", spool_dir=Path({spool!r}),
                                    backoff_initial_s=0.05), IDENTITY_OLD)
    for i in range({n}):
        shipper.submit(window(i))
    task = asyncio.create_task(shipper.run())
    while shipper.on_disk[0] < {n}:  # the collector is down: it spools them all
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind

asyncio.run(main())
"""
IDENTITY_OLD = AgentIdentity("agent-old", "svc", "pod-1", "host-1", 100)


def stored_batches(db: Path) -> list[tuple[str, int]]:
    """(agent_id, seq) of every stored window, in the order they were appended."""
    with duckdb.connect(str(db), read_only=True) as con:
        # the rows on disk (schema.py: samples reads them joined with their sources)
        rows = con.execute("SELECT agent_id, seq, min(r.rowid) AS r FROM samples_rows AS r "
                           "JOIN sources USING (source_no) GROUP BY agent_id, seq "
                           "ORDER BY r").fetchall()
    return [(agent, int(seq)) for agent, seq, _ in rows]


def spooling(port: int, spool: Path, identity: AgentIdentity = IDENTITY) -> Shipper:
    config = ShipperConfig(f"127.0.0.1:{port}", spool_dir=spool, backoff_initial_s=0.05,
                           backoff_max_s=0.2)
    return Shipper(config, identity)


def test_a_spool_left_by_a_killed_agent_is_delivered_once_in_order(tmp_path: Path) -> None:
    spool, dead_port = tmp_path / "spool", free_port()
    script = KILLED_AGENT.format(here=str(Path(__file__).parent), tests=str(Path(__file__).parents[1]),
                                 port=dead_port, spool=str(spool), n=6)
    killed = subprocess.run([sys.executable, "-c", script], timeout=DEADLINE_S, check=False)
    assert killed.returncode == -signal.SIGKILL and len(list(spool.glob("*.batch"))) == 6
    # two of them were stored before, but their acks were lost: keep copies to replay
    replay = {p.name: p.read_bytes() for p in sorted(spool.glob("*.batch"))[:2]}

    async def body(store: DuckDBStore, port: int) -> None:
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"))
        try:
            successor = spooling(port, spool)
            successor.submit(window(10))
            await deliver(successor)
            for name, data in replay.items():
                (spool / name).write_bytes(data)
            third = spooling(port, spool)
            await deliver(third)
        finally:
            await server.stop(1.0)
        assert (successor.stats.acked, successor.stats.duplicates) == (7, 0)
        assert (third.stats.acked, third.stats.duplicates) == (2, 2)
        assert not list(spool.glob("*.batch"))
        assert stored(store) == sum(10 for _ in range(7))

    run(tmp_path, body)
    order = [("agent-old", s) for s in range(1, 7)] + [("agent-ship", 1)]
    assert stored_batches(tmp_path / "ship.duckdb") == order


def test_collector_down_for_a_while_then_up_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, port: int) -> None:
        shipper = spooling(port, tmp_path / "spool")
        task = asyncio.create_task(shipper.run())
        for i in range(20):
            shipper.submit(window(i, count=i + 1))
            await asyncio.sleep(0)
        while shipper.stats.reconnects < 3 or shipper.on_disk[0] < 20:
            await asyncio.sleep(0.01)
        server = await start_ingest_server(store, IngestConfig(listen=f"127.0.0.1:{port}"))
        try:
            for i in range(20, 25):
                shipper.submit(window(i, count=i + 1))
            await shipper.close()
            await task
        finally:
            await server.stop(1.0)
        assert shipper.stats.spooled >= 20 and shipper.stats.dropped == 0
        assert shipper.stats.acked == 25 and stored(store) == sum(range(1, 26))

    run(tmp_path, body)
    assert stored_batches(tmp_path / "ship.duckdb") == [("agent-ship", s) for s in range(1, 26)]


def test_a_collector_killed_under_load_ends_with_every_batch_stored_once(tmp_path: Path) -> None:
    db, port, windows = tmp_path / "kill.duckdb", free_port(), 400
    argv = [sys.executable, "-m", "pyrometer.agent.cli", "collector", "--db", str(db),
            "--grpc-listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0"]

    def collector() -> Child:
        return start("collector", argv, r"ingest on", tmp_path, env=python_env())

    first = collector()
    shipper = spooling(port, tmp_path / "spool")
    state: dict[str, int] = {}

    async def load() -> None:
        task = asyncio.create_task(shipper.run())
        for i in range(windows):
            shipper.submit(window(i))
            await asyncio.sleep(0.002)
            if i == windows // 3:
                while shipper.stats.acked < windows // 10:
                    await asyncio.sleep(0.005)
                state["acked_at_kill"] = shipper.stats.acked
                first.stop(signal.SIGKILL)
                state["second"] = 1
        # an agent outlives a collector's restart: it closes only once the new one is up.
        # Closing earlier gives up after one last try (the spool keeps the rest for the
        # next agent), which left this test hanging on how fast the load loop ran against
        # how fast a Python process starts
        while "up" not in state:
            await asyncio.sleep(0.01)
        await shipper.close()
        await task

    second: Child | None = None
    try:
        async def with_restart() -> None:
            nonlocal second
            loading = asyncio.create_task(load())
            while "second" not in state:
                await asyncio.sleep(0.01)
            second = await asyncio.to_thread(collector)  # restarted on the same port
            state["up"] = 1
            await loading

        asyncio.run(asyncio.wait_for(with_restart(), DEADLINE_S * 2))
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            assert second.stop(signal.SIGTERM) == 0, second.output()
    batches = stored_batches(db)
    stats = shipper.stats
    print(f"\nkill -9 under load: {windows} batches, sent {stats.sent}, acked {stats.acked}, "
          f"duplicates {stats.duplicates}, reconnects {stats.reconnects}, spooled {stats.spooled}, "
          f"acked before the kill {state['acked_at_kill']}, stored {len(batches)}")
    assert batches == [("agent-ship", s) for s in range(1, windows + 1)]
    assert stats.acked == windows and stats.dropped == 0
