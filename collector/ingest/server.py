"""The gRPC ingest server: one decoder per agent stream, acks only after commit.

Each batch is decoded and validated against its stream's dictionary, handed to the
`GroupCommitter`, and acknowledged once its transaction has committed (or it was
recognised as a retried duplicate). A stream is read ahead of its acks (up to
`IngestConfig.read_ahead` batches), and acks go back in the order the batches came.
Bad input ends the stream with INVALID_ARGUMENT (RESOURCE_EXHAUSTED for a size limit)
after the batches before it are answered, and stores nothing of it; a storage failure
ends it with INTERNAL; a collector that is stopping answers UNAVAILABLE, which agents retry.
Bytes that do not parse as a Batch (garbage, invalid UTF-8 in a string) are bad input
too: the servicer parses them itself, so they get INVALID_ARGUMENT rather than the
library's generic error; a message over the size limit is refused by gRPC with
RESOURCE_EXHAUSTED before it is read. With decode workers (workers.py) a stream's
batches are decoded in one of them, to the same answers; a stream whose worker died
ends UNAVAILABLE, which agents retry on a new stream.
A bad telemetry record is not bad input: it is dropped, counted and logged, and the
rest of its batch is stored (see validate.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.config import check_listen
from pyrometer.collector.errors import (
    CollectorError,
    ListenError,
    ShuttingDownError,
)
from pyrometer.collector.ingest.commit import DEFAULT_DELAY_S, DEFAULT_MAX_GROUP, GroupCommitter
from pyrometer.collector.ingest.decode import Rejection, Unparseable, parse_batch
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.workers import DecodePool, InlineStream, WorkerLostError
from pyrometer.collector.ingest.workers import Stream as DecodeStream
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import Rejections
from pyrometer.collector.storage.store import BatchOutcome, Store
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "pyrometer.v1.Ingest"


def add_ingest_servicer(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register `Ingest.Stream` like the generated code does, but with `parse_batch`, or
    with no deserializer at all when the servicer's streams decode in worker processes
    (which parse the bytes themselves: workers.py)."""
    handlers = {"Stream": grpc.stream_stream_rpc_method_handler(
        servicer.Stream, request_deserializer=None if servicer.takes_bytes else parse_batch,
        response_serializer=ingest_pb2.Ack.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """How the ingest server listens, what it accepts, and how it groups commits."""

    listen: str = "127.0.0.1:7070"
    max_message_bytes: int = 16 * 1024 * 1024  # one compressed-then-inflated Batch
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    commit_delay_s: float = DEFAULT_DELAY_S  # commit.py says why
    max_group: int = DEFAULT_MAX_GROUP  # batches in one commit at most (commit.py says why)
    read_ahead: int = 8  # batches of one stream decoded and queued before their acks
    # processes that decode streams beside the event loop (workers.py); 0 decodes in it
    decode_workers: int = 0
    grace_s: float = 5.0  # how long stop() lets open streams finish their batch


@dataclass(frozen=True, slots=True)
class _Refusal:
    """How a stream ends after the batches read before the one refused are answered."""

    code: grpc.StatusCode
    details: str


class _Queued(NamedTuple):
    """A batch read ahead: its seq and agent (for the ack and the log), and its commit."""

    seq: int
    agent_id: str
    outcome: asyncio.Future[BatchOutcome]


# What the read-ahead hands the answering side, in the order read: a batch queued for
# commit, a refusal (the stream ends there), or None (the agent finished writing).
_ReadAhead = _Queued | _Refusal | None


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    """`Ingest.Stream`: decode, commit through the group committer, ack.

    A stream is read ahead of its acks: while one batch waits for its commit, the next
    ones the agent has sent (up to `read_ahead`) are decoded and queued for the same or
    the next group commit, and the acks go back in order as the commits end. An agent
    keeps up to 8 batches unacknowledged (agent/ship/shipper.py) so that a backlog moves
    at the collector's pace rather than one commit per batch; reading one batch at a
    time, ack and all, gave each stream one batch per commit whatever the agent sent
    (at 100 saturating streams the commit worker sat idle half the time, waiting for the
    next group to be read: `make bench`, row 4). What is read ahead is bounded: past
    `read_ahead` queued, the stream is not read until an ack goes out, and HTTP/2 flow
    control holds the agent.
    """

    def __init__(
        self, committer: GroupCommitter, metrics: CollectorMetrics,
        limits: DecodeLimits | None = None, clock: Callable[[], Nanos] = time.time_ns,
        *, read_ahead: int, pool: DecodePool | None = None,
    ) -> None:
        if read_ahead < 1:
            raise ValueError("read_ahead must be >= 1")
        self._committer = committer
        self._metrics = metrics
        self._limits = limits or DecodeLimits()
        self._clock = clock
        self._read_ahead = read_ahead
        self._pool = pool
        # messages reach Stream as gRPC received them, for the workers to parse
        self.takes_bytes = pool is not None and bool(pool.pids)

    async def Stream(  # noqa: N802 (the name is the RPC's)
        self, request_iterator: AsyncIterator[ingest_pb2.Batch | Unparseable | bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ingest_pb2.Ack]:
        self._metrics.streams.inc()
        ahead: asyncio.Queue[_ReadAhead] = asyncio.Queue(self._read_ahead)
        reader = asyncio.create_task(self._read(request_iterator, ahead), name="ingest-read-ahead")
        try:
            while (item := await ahead.get()) is not None:
                if isinstance(item, _Refusal):
                    await context.abort(item.code, item.details)
                    return
                stored = await self._outcome(item, context)
                yield ingest_pb2.Ack(seq=item.seq, duplicate=stored is BatchOutcome.DUPLICATE)
        finally:
            reader.cancel()
            while not ahead.empty():  # queued, never answered: the stream has ended
                if isinstance(left := ahead.get_nowait(), _Queued):
                    left.outcome.add_done_callback(_retrieve)
            self._metrics.streams.dec()

    async def _read(self, request_iterator: AsyncIterator[ingest_pb2.Batch | Unparseable | bytes],
                    ahead: asyncio.Queue[_ReadAhead]) -> None:
        """Decode each batch in turn and queue its commit; a refusal, or None at the end,
        is the last thing queued."""
        stream: DecodeStream = self._pool.stream() if self._pool else InlineStream(self._limits)
        try:
            async for message in request_iterator:
                item = await self._queue(stream, message)
                await ahead.put(item)
                if isinstance(item, _Refusal):
                    return
        except Exception as exc:  # a bug must still end the stream cleanly, as INTERNAL
            log.exception("reading an ingest stream failed unexpectedly")
            await ahead.put(_Refusal(grpc.StatusCode.INTERNAL, f"reading failed: {exc!r}"))
            return
        finally:
            stream.close()
        await ahead.put(None)

    async def _queue(self, stream: DecodeStream, message: ingest_pb2.Batch | Unparseable | bytes
                     ) -> _ReadAhead:
        try:
            decoded = await stream.decode(message, self._clock())
        except WorkerLostError as exc:
            return _Refusal(grpc.StatusCode.UNAVAILABLE, f"{exc}; send again on a new stream")
        if isinstance(decoded, Rejection):
            self._metrics.rejected.labels(code=decoded.code).inc()
            log.warning("%s", decoded.log)
            return _Refusal(grpc.StatusCode[decoded.code], decoded.details)
        if decoded.rejected:
            log.warning("batch %d of agent %r: dropped bad records %s", decoded.seq,
                        decoded.source.agent_id, _summary(decoded.rejected))
        try:
            return _Queued(decoded.seq, decoded.source.agent_id, self._committer.enqueue(decoded))
        except ShuttingDownError as exc:
            return _Refusal(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _outcome(self, queued: _Queued, context: grpc.aio.ServicerContext) -> BatchOutcome:
        try:
            return await queued.outcome
        except ShuttingDownError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except CollectorError as exc:
            log.error("storing batch %d of agent %r failed: %s", queued.seq, queued.agent_id, exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"storage failed: {exc}")
        except Exception as exc:  # a bug must still end the stream cleanly, as INTERNAL
            log.exception("storing batch %d failed unexpectedly", queued.seq)
            await context.abort(grpc.StatusCode.INTERNAL, f"storage failed: {exc!r}")
        raise AssertionError("unreachable: context.abort raises")


def _retrieve(future: asyncio.Future[BatchOutcome]) -> None:
    # a commit's outcome nobody will answer: read it, so that a failure is not logged
    # again as never retrieved (the stream it belonged to has already ended)
    if not future.cancelled():
        future.exception()


def _summary(rejected: Rejections) -> str:
    return ", ".join(f"{kind}/{reason}: {n}" for (kind, reason), n in sorted(rejected.items()))


class IngestServer:
    """A running ingest server; `port` is the TCP port it is bound to."""

    def __init__(
        self, server: grpc.aio.Server, committer: GroupCommitter,
        health_servicer: health.aio.HealthServicer, port: int, grace_s: float,
        pool: DecodePool,
    ) -> None:
        self._server = server
        self._committer = committer
        self._health = health_servicer
        self.port = port
        self._grace_s = grace_s
        self.pool = pool

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let open streams finish (up to `grace` s), commit, end."""
        await self._health.enter_graceful_shutdown()
        try:
            await self._server.stop(self._grace_s if grace is None else grace)
        finally:
            try:
                await self._committer.stop()
            finally:
                await self.pool.stop()

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()


def _check_bindable(listen: str) -> None:
    """ListenError, with the system's reason, when `listen` cannot be bound.

    gRPC's own bind failure says only "Failed to bind" (and logs a line of its own), so the
    address is tried first with a plain socket, as gRPC binds it (SO_REUSEADDR, which on
    Linux still refuses a port that another socket listens on). gRPC's bind stays the one
    that counts: this only words the common failures (in use, not a local address).
    """
    host, port = check_listen("--grpc-listen", listen)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ListenError(f"cannot listen on {listen} (gRPC ingest): {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise ListenError(f"cannot listen on {listen} (gRPC ingest): {err.strerror}") from None


async def start_ingest_server(
    store: Store, config: IngestConfig | None = None, metrics: CollectorMetrics | None = None,
    *, interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> IngestServer:
    """Serve `Ingest` and the standard health service on `config.listen`.

    A listen address with port 0 binds a free port; the returned server's `port` says
    which. Raises ListenError when the address cannot be bound. `interceptors` see
    every call first (auth); with `credentials` the port speaks only TLS.
    """
    config = config or IngestConfig()
    metrics = metrics or CollectorMetrics()
    committer = GroupCommitter(
        store, max_delay_s=config.commit_delay_s, max_group=config.max_group, metrics=metrics)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # gRPC sets SO_REUSEPORT by default, so a second collector on a port another one
        # holds would start too and the kernel would split the agents between their two
        # databases; without it the bind fails and the collector says so
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options, interceptors=list(interceptors))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _check_bindable(config.listen)
    try:
        port = (server.add_insecure_port(config.listen) if credentials is None
                else server.add_secure_port(config.listen, credentials))
    except RuntimeError as exc:
        raise ListenError(f"cannot listen on {config.listen}: {exc}") from exc
    if port == 0:
        raise ListenError(f"cannot listen on {config.listen}")
    # the workers once the address is known to be ours: a collector that cannot listen
    # says so without starting processes first
    pool = await DecodePool.start(config.decode_workers, config.limits, metrics)
    add_ingest_servicer(IngestServicer(committer, metrics, config.limits,
                                       read_ahead=config.read_ahead, pool=pool), server)
    committer.start()
    try:
        await server.start()
    except BaseException:
        await pool.stop()
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return IngestServer(server, committer, health_servicer, port, config.grace_s, pool)
