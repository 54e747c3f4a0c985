"""The gRPC ingest server, for real: a grpc.aio server on 127.0.0.1, gzip client streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyrometer.agent.shared.model import NANOS_PER_SECOND, SampleKey
from pyrometer.collector.errors import ListenError
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.server import IngestConfig, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.collector.storage.duckdb.backend import DuckDBStore
from pyrometer.collector.storage.store import CommitReport
from support.ingest_builder import BASE_NS, StreamEncoder, stack
from support.ingest_client import RPC_TIMEOUT_S, open_stream, send, serving

S = NANOS_PER_SECOND
MAIN = stack("main", "serve", "forward")
IDLE = stack("main", "wait")
WINDOW = (BASE_NS - 3600 * S, BASE_NS + 3600 * S)


def run(
    tmp_path: Path, body: Callable[[DuckDBStore, CollectorMetrics, grpc.aio.Channel], Awaitable[None]],
    **config: object,
) -> None:
    store, metrics = DuckDBStore(tmp_path / "ingest.duckdb"), CollectorMetrics()

    async def main() -> None:
        async with serving(store, metrics, **config) as (_, channel):
            await body(store, metrics, channel)

    try:
        asyncio.run(main())
    finally:
        store.close()


def total(store: DuckDBStore) -> int:
    return store.profile("svc", *WINDOW).total


def test_ack_means_the_batch_is_queryable(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        enc, call = StreamEncoder(), open_stream(channel)
        for seq in (1, 2, 3):
            ack = await send(call, enc.batch(seq, {SampleKey(MAIN): 2, SampleKey(IDLE): 1},
                                             start_ns=BASE_NS + seq * 10 * S))
            assert (ack.seq, ack.duplicate) == (seq, False)
            assert total(store) == 3 * seq  # committed before the ack was sent
        await call.done_writing()
        assert metrics.value("pyrometer_ingest_batches_total") == 3
        assert metrics.value("pyrometer_ingest_samples_total") == 9
        assert metrics.value("pyrometer_storage_rows_written_total", {"table": "samples"}) == 6

    run(tmp_path, body)


def test_resent_batch_on_a_new_stream_is_acked_as_duplicate(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        first = open_stream(channel)
        assert not (await send(first, StreamEncoder().batch(1, {SampleKey(MAIN): 5}))).duplicate
        first.cancel()  # the ack "was lost": the agent reconnects and resends seq 1
        again, enc = open_stream(channel), StreamEncoder()
        assert (await send(again, enc.batch(1, {SampleKey(MAIN): 5}))).duplicate
        assert not (await send(again, enc.batch(2, {SampleKey(IDLE): 1}))).duplicate
        assert store.profile("svc", *WINDOW).samples == ((MAIN, 5), (IDLE, 1))
        assert metrics.value("pyrometer_ingest_duplicate_batches_total") == 1

    run(tmp_path, body)


def test_bad_batch_is_invalid_argument_and_stores_nothing(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        enc, call = StreamEncoder(), open_stream(channel)
        bad = enc.batch(1, {SampleKey(MAIN): 5})
        bad.profile.stack_ids[0] = 42  # never defined on this stream
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(call, bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "stack id 42" in (raised.value.details() or "")
        assert total(store) == 0
        # the high-water mark did not move: the corrected batch 1 is stored
        ack = await send(open_stream(channel), StreamEncoder().batch(1, {SampleKey(MAIN): 5}))
        assert not ack.duplicate and total(store) == 5
        assert metrics.value(
            "pyrometer_ingest_rejected_batches_total", {"code": "INVALID_ARGUMENT"}) == 1

    run(tmp_path, body)


def test_oversize_is_resource_exhausted(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        deep = StreamEncoder().batch(1, {SampleKey(stack(*[f"f{i}" for i in range(600)])): 1})
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(open_stream(channel), deep)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "stack depth" in (raised.value.details() or "")
        # past the message size limit, gRPC itself refuses the message
        huge = StreamEncoder().batch(1, {SampleKey(stack(*[f"{i:04}" * 500 for i in range(200)])): 1})
        assert huge.ByteSize() > 256 * 1024
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(open_stream(channel), huge)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert total(store) == 0

    run(tmp_path, body, max_message_bytes=256 * 1024, limits=DecodeLimits(max_stack_depth=512))


def test_storage_failure_is_internal(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        store.close()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await send(open_stream(channel), StreamEncoder().batch(1, {SampleKey(MAIN): 1}))
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert metrics.value("pyrometer_commit_failures_total") == 1

    run(tmp_path, body)


def test_a_port_another_server_holds_is_refused(tmp_path: Path) -> None:
    first_store, second_store = DuckDBStore(tmp_path / "a.duckdb"), DuckDBStore(tmp_path / "b.duckdb")

    async def main() -> None:
        first = await start_ingest_server(first_store, IngestConfig(listen="127.0.0.1:0"))
        try:
            taken = f"127.0.0.1:{first.port}"
            with pytest.raises(ListenError, match=f"cannot listen on {taken}"):
                await start_ingest_server(second_store, IngestConfig(listen=taken))
        finally:
            await first.stop(1.0)

    try:
        asyncio.run(main())
    finally:
        first_store.close()
        second_store.close()


def test_health_is_serving(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pyrometer.v1.Ingest"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    run(tmp_path, body)


def test_concurrent_streams_share_transactions(tmp_path: Path) -> None:
    streams, batches_each = 50, 6

    async def agent(channel: grpc.aio.Channel, n: int) -> None:
        enc, call = StreamEncoder(agent_id=f"agent-{n}", instance=f"pod-{n}"), open_stream(channel)
        for seq in range(1, batches_each + 1):
            counts = {SampleKey(MAIN, f"t{n}"): seq, SampleKey(stack("main", f"f{n}")): 1}
            ack = await send(call, enc.batch(seq, counts, start_ns=BASE_NS + seq * 10 * S))
            assert ack.seq == seq and not ack.duplicate
        await call.done_writing()

    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        await asyncio.gather(*(agent(channel, n) for n in range(streams)))
        batches = streams * batches_each
        transactions = metrics.value("pyrometer_commit_group_size_count")
        assert metrics.value("pyrometer_commit_group_size_sum") == batches
        assert transactions <= batches / 5, f"{transactions} transactions for {batches} batches"
        per_stream = sum(range(1, batches_each + 1)) + batches_each
        assert total(store) == streams * per_stream
        assert len(store.services()[0].instances) == streams

    run(tmp_path, body)


class HeldStore(DuckDBStore):
    """A store whose first commit waits until the test lets it go, and which records how
    many batches each commit carried."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.groups: list[list[int]] = []

    def commit(self, batches: Sequence[DecodedBatch]) -> CommitReport:
        if not self.groups and not self.release.wait(RPC_TIMEOUT_S):
            raise AssertionError("the test never released the first commit")
        self.groups.append([b.seq for b in batches])
        return super().commit(batches)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + RPC_TIMEOUT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_a_stream_is_read_ahead_of_its_acks(tmp_path: Path) -> None:
    # while batch 1's commit runs, batches 2 and 3 are read, decoded and queued, so they
    # share the next commit; one batch read per ack would commit them one at a time
    store, metrics = HeldStore(tmp_path / "ingest.duckdb"), CollectorMetrics()

    async def main() -> None:
        async with serving(store, metrics) as (_, channel):
            enc, call = StreamEncoder(), open_stream(channel)
            for seq in (1, 2, 3):
                await call.write(enc.batch(seq, {SampleKey(MAIN): seq}, start_ns=BASE_NS + seq * 10 * S))
            await until(lambda: metrics.value("pyrometer_commit_queued_batches") == 2,
                        "batches 2 and 3 to be queued behind batch 1's commit")
            store.release.set()
            acks = [await call.read() for _ in range(3)]
            assert [(a.seq, a.duplicate) for a in acks] == [(1, False), (2, False), (3, False)]
            await call.done_writing()
            assert store.groups == [[1], [2, 3]]
            assert total(store) == 6

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_batches_read_before_a_bad_one_are_acked_first(tmp_path: Path) -> None:
    async def body(store: DuckDBStore, metrics: CollectorMetrics, channel: grpc.aio.Channel) -> None:
        enc, call = StreamEncoder(), open_stream(channel)
        batches = [enc.batch(1, {SampleKey(MAIN): 1}), enc.batch(2, {SampleKey(IDLE): 2}),
                   enc.batch(3, {SampleKey(MAIN): 5})]
        batches[2].profile.stack_ids[0] = 42  # never defined on this stream
        for batch in batches:
            await call.write(batch)
        assert [(await call.read()).seq for _ in range(2)] == [1, 2]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "batch seq 3 rejected" in (raised.value.details() or "")
        assert store.profile("svc", *WINDOW).samples == ((IDLE, 2), (MAIN, 1))
        assert metrics.value("pyrometer_ingest_batches_total") == 2

    run(tmp_path, body)
