"""Decoding in worker processes (collector/ingest/workers.py), for real: worker processes
started from this interpreter, a real gRPC server on 127.0.0.1, a real DuckDB file.

The worker's answers must be the event loop's, batch for batch: the same rows, the same
dropped records, the same refusals in the same words.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector import config as collector_config
from pyrometer.collector.errors import CollectorError
from pyrometer.collector.ingest import handoff
from pyrometer.collector.ingest.decode import Rejection
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.workers import DecodePool, InlineStream, WorkerLostError, WorkerStream
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from support import telemetry_builder as tb
from support.ingest_builder import BASE_NS, NOW_NS, StreamEncoder, stack
from support.ingest_client import open_stream, send, serving

pytestmark = pytest.mark.integration
S = NANOS_PER_SECOND
MAIN, IDLE, DEEP = stack("main", "serve", "forward"), stack("main", "wait"), stack("main", "serve", "x", "y")
WINDOW = (BASE_NS - 3600 * S, BASE_NS + 3600 * S)
TIMEOUT_S = 60


def with_pool(body: Callable[[DecodePool], Awaitable[None]], size: int = 1,
              limits: DecodeLimits | None = None, metrics: CollectorMetrics | None = None) -> None:
    async def main() -> None:
        pool = await DecodePool.start(size, limits, metrics)
        try:
            await asyncio.wait_for(body(pool), TIMEOUT_S)
        finally:
            await pool.stop()
    asyncio.run(main())


def messages() -> list[bytes]:
    """A stream's batches: a dictionary, one reusing it and adding to it, one with every
    kind of telemetry and a bad record, one without a window."""
    enc = StreamEncoder(labels={"zone": "a", "version": "v2"})
    batches = [
        enc.batch(1, {SampleKey(MAIN): 5, SampleKey(IDLE, thread="worker"): 2}),
        enc.batch(2, {SampleKey(MAIN): 1, SampleKey(DEEP, pid=7): 3}, start_ns=BASE_NS + 10 * S),
        enc.batch(3, {SampleKey(DEEP): 4}, start_ns=BASE_NS + 20 * S, telemetry=tb.everything()),
        enc.batch(4, None, telemetry=tb.everything()),
    ]
    batches[2].requests[0].end_unix_nanos = 1  # a record the validator drops, and counts
    return [b.SerializeToString() for b in batches]


def frames_of(batch: DecodedBatch) -> set[tuple[int, str, str, int]]:
    f = batch.frames
    return set(zip(f.ids, f.names, f.files, f.lines, strict=True))


def same(worker: DecodedBatch, inline: DecodedBatch) -> None:
    # frames in any order: the writer's side sorts them by content id, the decoder by
    # their place in the stream's table
    assert frames_of(worker) == frames_of(inline)
    for name in ("source", "seq", "stacks", "window", "telemetry", "rejected"):
        assert getattr(worker, name) == getattr(inline, name), name


def test_a_worker_decodes_a_stream_as_the_loop_does() -> None:
    async def body(pool: DecodePool) -> None:
        worker, inline = pool.stream(), InlineStream(DecodeLimits())
        assert isinstance(worker, WorkerStream)
        for message in messages():
            ours, theirs = await worker.decode(message, NOW_NS), await inline.decode(message, NOW_NS)
            assert isinstance(ours, DecodedBatch) and isinstance(theirs, DecodedBatch)
            same(ours, theirs)
            assert ours.seq != 3 or ours.rejected
        assert ours.telemetry.events and ours.telemetry.agent_stats and ours.telemetry.engine
        worker.close()
    with_pool(body)


def test_refusals_are_the_loops_in_the_same_words() -> None:
    enc = StreamEncoder()
    bad = enc.batch(1, {SampleKey(MAIN): 5})
    bad.profile.stack_ids[0] = 42  # never defined on this stream
    deep = StreamEncoder().batch(1, {SampleKey(stack(*[f"f{i}" for i in range(20)])): 1})
    nul = StreamEncoder(agent_id="a\x00b").batch(1, {SampleKey(MAIN): 5})  # NUL in the log line
    nul.profile.stack_ids[0] = 42

    async def body(pool: DecodePool) -> None:
        cases = [bad.SerializeToString(), b"\xff\xff not a batch", deep.SerializeToString(),
                 nul.SerializeToString()]
        for message in cases:
            ours = await pool.stream().decode(message, NOW_NS)
            theirs = await InlineStream(DecodeLimits(max_stack_depth=10)).decode(message, NOW_NS)
            assert isinstance(ours, Rejection) and ours == theirs
        # a refused batch changes nothing: the stream goes on from where it was
        stream = pool.stream()
        assert isinstance(await stream.decode(bad.SerializeToString(), NOW_NS), Rejection)
        good = StreamEncoder().batch(1, {SampleKey(MAIN): 5}).SerializeToString()
        assert isinstance(await stream.decode(good, NOW_NS), DecodedBatch)
    with_pool(body, limits=DecodeLimits(max_stack_depth=10))


def test_a_dead_worker_ends_its_streams_and_is_replaced() -> None:
    async def body(pool: DecodePool) -> None:
        old = pool.stream()
        enc = StreamEncoder()
        assert isinstance(await old.decode(enc.batch(1, {SampleKey(MAIN): 1}).SerializeToString(), NOW_NS),
                          DecodedBatch)
        (pid,) = pool.pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLostError):
            await old.decode(enc.batch(2, {SampleKey(MAIN): 1}).SerializeToString(), NOW_NS)
        while pool.pids in ([], [pid]):  # the replacement's start, however long it takes
            await asyncio.sleep(0.05)
        with pytest.raises(WorkerLostError):  # the old stream stays ended
            await old.decode(enc.batch(2, {SampleKey(MAIN): 1}).SerializeToString(), NOW_NS)
        fresh = pool.stream()
        assert isinstance(fresh, WorkerStream)
        answer = await fresh.decode(StreamEncoder().batch(1, {SampleKey(MAIN): 1}).SerializeToString(),
                                    NOW_NS)
        assert isinstance(answer, DecodedBatch) and answer.sample_count == 1
    with_pool(body)


def test_metrics_count_live_workers_exits_and_streams_left_to_the_loop(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    metrics = CollectorMetrics()

    async def body(pool: DecodePool) -> None:
        assert metrics.value("pyrometer_decode_workers") == 1
        (pid,) = pool.pids
        monkeypatch.setattr("sys.executable", "/nonexistent/python")  # no replacement starts
        os.kill(pid, signal.SIGKILL)
        while not any("could not be replaced" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.05)
        assert metrics.value("pyrometer_decode_workers") == 0
        assert metrics.value("pyrometer_decode_worker_exits_total") == 1
        # degraded, not down: a new stream is decoded in the loop, and counted
        assert isinstance(pool.stream(), InlineStream)
        assert metrics.value("pyrometer_decode_inline_streams_total") == 1
    with_pool(body, metrics=metrics)


def test_no_workers_decodes_in_the_loop() -> None:
    async def body(pool: DecodePool) -> None:
        assert pool.pids == [] and isinstance(pool.stream(), InlineStream)
    with_pool(body, size=0)


def test_a_worker_that_cannot_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    with pytest.raises(CollectorError, match="cannot start a decode worker"):
        with_pool(lambda pool: asyncio.sleep(0))


def test_handoff_carries_what_it_cannot_marshal_as_pickle() -> None:
    async def body(pool: DecodePool) -> None:
        enc = StreamEncoder()
        message = enc.batch(1, {SampleKey(MAIN): 1}, telemetry=tb.everything()).SerializeToString()
        inline = await InlineStream(DecodeLimits()).decode(message, NOW_NS)
        assert isinstance(inline, DecodedBatch)
        back = handoff.load(handoff.dump(inline))
        assert back.new_stacks == () and back.new_frames == ()
        rebuilt = back.batch(lambda ids: (inline.frames, inline.stacks))
        assert rebuilt == inline
    with_pool(body, size=0)


# ---- through gRPC ----

def serve(tmp_path: Path, body: Callable[[DuckDBStore, Any, grpc.aio.Channel], Awaitable[None]]
          ) -> None:
    store, metrics = DuckDBStore(tmp_path / "ingest.duckdb"), CollectorMetrics()

    async def main() -> None:
        async with serving(store, metrics, decode_workers=1) as (server, channel):
            await asyncio.wait_for(body(store, server, channel), TIMEOUT_S)
        assert server.pool.pids == []  # stopped with the server
    try:
        asyncio.run(main())
    finally:
        store.close()


def test_acked_through_a_worker_means_stored(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, server: Any, channel: grpc.aio.Channel) -> None:
        assert len(server.pool.pids) == 1
        enc, call = StreamEncoder(), open_stream(channel)
        assert (await send(call, enc.batch(1, {SampleKey(MAIN): 5}, telemetry=tb.everything()))).seq == 1
        assert (await send(call, enc.batch(2, {SampleKey(IDLE): 2}, start_ns=BASE_NS + 10 * S))).seq == 2
        assert store.profile("svc", *WINDOW).samples == ((MAIN, 5), (IDLE, 2))
        # a second stream of the same agent: its batch 2 again is a duplicate
        again = open_stream(channel)
        assert (await send(again, StreamEncoder().batch(2, {SampleKey(IDLE): 2}))).duplicate
        bad = StreamEncoder(agent_id="agent-2").batch(1, {SampleKey(MAIN): 5})
        bad.profile.stack_ids[0] = 42
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(open_stream(channel), bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "stack id 42" in (raised.value.details() or "")
        assert store.profile("svc", *WINDOW).total == 7
    serve(tmp_path, body)


def test_a_stream_whose_worker_died_is_unavailable_and_a_new_one_is_served(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, server: Any, channel: grpc.aio.Channel) -> None:
        enc, call = StreamEncoder(), open_stream(channel)
        await send(call, enc.batch(1, {SampleKey(MAIN): 5}))
        (pid,) = server.pool.pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(call, enc.batch(2, {SampleKey(MAIN): 1}, start_ns=BASE_NS + 10 * S))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # as an agent does: a new stream, its dictionary sent again
        retry = StreamEncoder()
        fresh = open_stream(channel)
        await send(fresh, retry.batch(1, {SampleKey(MAIN): 5}))
        ack = await send(fresh, retry.batch(2, {SampleKey(MAIN): 1}, start_ns=BASE_NS + 10 * S))
        assert not ack.duplicate
        assert store.profile("svc", *WINDOW).total == 6
    serve(tmp_path, body)


# ---- configuration ----

def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    collector_config.add_arguments(parser)
    return parser.parse_args(["--db", "x.duckdb", *argv])


def test_decode_workers_come_from_the_flag_or_the_environment() -> None:
    assert collector_config.resolve(_args(), {}).decode_workers == 0
    assert collector_config.resolve(_args("--decode-workers", "2"), {}).decode_workers == 2
    assert collector_config.resolve(_args(), {"PYROMETER_DECODE_WORKERS": "1"}).decode_workers == 1
    for bad in ("-1", "two", "65", "1.5"):
        with pytest.raises(ConfigError, match="--decode-workers"):
            collector_config.resolve(_args(f"--decode-workers={bad}"), {})
