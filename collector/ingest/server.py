"""The gRPC ingest server: one decoder per agent stream, acks only after commit.

Each batch is decoded and validated against its stream's dictionary, handed to the
`GroupCommitter`, and acknowledged once its transaction has committed (or it was
recognised as a retried duplicate). Bad input ends the stream with INVALID_ARGUMENT
(RESOURCE_EXHAUSTED for a size limit) and stores nothing; a storage failure ends it
with INTERNAL; a collector that is stopping answers UNAVAILABLE, which agents retry.
Bytes that do not parse as a Batch (garbage, invalid UTF-8 in a string) are bad input
too: the servicer parses them itself, so they get INVALID_ARGUMENT rather than the
library's generic error; a message over the size limit is refused by gRPC with
RESOURCE_EXHAUSTED before it is read.
A bad telemetry record is not bad input: it is dropped, counted and logged, and the
rest of its batch is stored (see validate.py).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pyrometer.agent.shared.model import Nanos
from pyrometer.collector.config import check_listen
from pyrometer.collector.errors import (
    BatchLimitError,
    CollectorError,
    InvalidBatchError,
    ListenError,
    ShuttingDownError,
)
from pyrometer.collector.ingest.commit import DEFAULT_DELAY_S, GroupCommitter
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.metrics import CollectorMetrics
from pyrometer.collector.storage.batch import DecodedBatch, Rejections
from pyrometer.collector.storage.store import BatchOutcome, Store
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "pyrometer.v1.Ingest"


@dataclass(frozen=True, slots=True)
class Unparseable:
    """A request message that is not a valid Batch; `reason` says why."""

    reason: str


def parse_batch(data: bytes) -> ingest_pb2.Batch | Unparseable:
    """The request deserializer: never raises, so bad bytes reach the servicer's checks."""
    try:
        return ingest_pb2.Batch.FromString(data)
    except Exception as exc:  # DecodeError, or anything the parser raises on garbage
        return Unparseable(f"not a valid Batch message: {exc}")


def add_ingest_servicer(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register `Ingest.Stream` like the generated code does, but with `parse_batch`."""
    handlers = {"Stream": grpc.stream_stream_rpc_method_handler(
        servicer.Stream, request_deserializer=parse_batch,
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
    max_group: int = 256
    grace_s: float = 5.0  # how long stop() lets open streams finish their batch


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    """`Ingest.Stream`: decode, commit through the group committer, ack."""

    def __init__(
        self, committer: GroupCommitter, metrics: CollectorMetrics,
        limits: DecodeLimits | None = None, clock: Callable[[], Nanos] = time.time_ns,
    ) -> None:
        self._committer = committer
        self._metrics = metrics
        self._limits = limits or DecodeLimits()
        self._clock = clock

    async def Stream(  # noqa: N802 (the name is the RPC's)
        self, request_iterator: AsyncIterator[ingest_pb2.Batch | Unparseable],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ingest_pb2.Ack]:
        decoder = StreamDecoder(self._limits)
        self._metrics.streams.inc()
        try:
            async for batch in request_iterator:
                if isinstance(batch, Unparseable):
                    self._metrics.rejected.labels(code="INVALID_ARGUMENT").inc()
                    log.warning("rejected a message: %s", batch.reason)
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, batch.reason)
                    return
                decoded = await self._decode(decoder, batch, context)
                outcome = await self._commit(decoded, context)
                yield ingest_pb2.Ack(seq=batch.seq, duplicate=outcome is BatchOutcome.DUPLICATE)
        finally:
            self._metrics.streams.dec()

    async def _decode(
        self, decoder: StreamDecoder, batch: ingest_pb2.Batch, context: grpc.aio.ServicerContext
    ) -> DecodedBatch:
        try:
            decoded = decoder.decode(batch, self._clock())
        except BatchLimitError as exc:
            await self._reject(context, grpc.StatusCode.RESOURCE_EXHAUSTED, batch, exc)
        except InvalidBatchError as exc:
            await self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, batch, exc)
        else:
            if decoded.rejected:
                log.warning("batch %d of agent %r: dropped bad records %s", batch.seq,
                            batch.agent.agent_id, _summary(decoded.rejected))
            return decoded
        raise AssertionError("unreachable: context.abort raises")

    async def _reject(
        self, context: grpc.aio.ServicerContext, code: grpc.StatusCode,
        batch: ingest_pb2.Batch, exc: Exception,
    ) -> None:
        self._metrics.rejected.labels(code=code.name).inc()
        # the agent id is unchecked input here: a 10 MB one must not land in the log
        log.warning("rejected batch %d of agent %r: %s", batch.seq, batch.agent.agent_id[:64], exc)
        await context.abort(code, f"batch seq {batch.seq} rejected: {exc}")

    async def _commit(
        self, decoded: DecodedBatch, context: grpc.aio.ServicerContext
    ) -> BatchOutcome:
        try:
            return await self._committer.submit(decoded)
        except ShuttingDownError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except CollectorError as exc:
            log.error("storing batch %d of agent %r failed: %s",
                      decoded.seq, decoded.source.agent_id, exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"storage failed: {exc}")
        except Exception as exc:  # a bug must still end the stream cleanly, as INTERNAL
            log.exception("storing batch %d failed unexpectedly", decoded.seq)
            await context.abort(grpc.StatusCode.INTERNAL, f"storage failed: {exc!r}")
        raise AssertionError("unreachable: context.abort raises")


def _summary(rejected: Rejections) -> str:
    return ", ".join(f"{kind}/{reason}: {n}" for (kind, reason), n in sorted(rejected.items()))


class IngestServer:
    """A running ingest server; `port` is the TCP port it is bound to."""

    def __init__(
        self, server: grpc.aio.Server, committer: GroupCommitter,
        health_servicer: health.aio.HealthServicer, port: int, grace_s: float,
    ) -> None:
        self._server = server
        self._committer = committer
        self._health = health_servicer
        self.port = port
        self._grace_s = grace_s

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let open streams finish (up to `grace` s), commit, end."""
        await self._health.enter_graceful_shutdown()
        try:
            await self._server.stop(self._grace_s if grace is None else grace)
        finally:
            await self._committer.stop()

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
    add_ingest_servicer(IngestServicer(committer, metrics, config.limits), server)
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
    committer.start()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return IngestServer(server, committer, health_servicer, port, config.grace_s)
