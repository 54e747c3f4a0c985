"""A real ingest server on a free loopback port and a gzip channel to it, as agents
connect, for the tests that talk gRPC to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from pyrometer.collector.ingest.server import IngestConfig, IngestServer, start_ingest_server
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.store import Store
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc

RPC_TIMEOUT_S = 20


@asynccontextmanager
async def serving(
    store: Store, metrics: CollectorMetrics, **config: object
) -> AsyncIterator[tuple[IngestServer, grpc.aio.Channel]]:
    """An ingest server (IngestConfig's `config`) on a free port and a gzip channel to it."""
    server = await start_ingest_server(
        store, IngestConfig(listen="127.0.0.1:0", **config), metrics)  # type: ignore[arg-type]
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", compression=grpc.Compression.Gzip
        ) as channel:
            yield server, channel
    finally:
        await server.stop(1.0)


def open_stream(channel: grpc.aio.Channel, timeout_s: float = RPC_TIMEOUT_S) -> grpc.aio.StreamStreamCall:
    return ingest_pb2_grpc.IngestStub(channel).Stream(timeout=timeout_s)


async def send(call: grpc.aio.StreamStreamCall, batch: ingest_pb2.Batch) -> ingest_pb2.Ack:
    """Write one batch and read its ack."""
    await call.write(batch)
    return await call.read()
