"""Ship profile windows to the collector over one gRPC stream, in order, until acked.

Shape (kept ready for the on-disk spool of a later revision): windows wait in a
bounded in-memory queue with their sequence numbers; a stream session encodes and
sends them oldest first, at most `max_in_flight` unacknowledged at a time, and drops
each from the queue only when the collector's ack says it is committed. A broken
stream is retried with jittered exponential backoff (retryable codes only), and the
next stream starts a fresh dictionary and resends everything not yet acknowledged.
Past `max_pending` the oldest window is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass

import grpc

from pyrometer.agent.encoder import AgentIdentity, StreamEncoder
from pyrometer.agent.model import ProfileWindow, Telemetry
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

# Codes that say "try again later": the collector is down, restarting or overloaded.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
# The collector looked at the batch and will never take it: resending is pointless.
# RESOURCE_EXHAUSTED is here, not in RETRYABLE, because the collector uses it only for a
# batch over its size limits (overload is UNAVAILABLE), and that batch never shrinks.
REJECTED = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                      grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    collector: str  # host:port
    max_pending: int = 720  # batches held for the collector: an hour of 10 s windows
    # plus the telemetry-only batches between them
    max_in_flight: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(slots=True)
class ShipperStats:
    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    dropped_overflow: int = 0
    rejected: int = 0
    reconnects: int = 0


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    window: ProfileWindow | None
    telemetry: Telemetry | None
    version: str | None


class Shipper:
    """Owns the stream to the collector. `submit()` from the agent loop, `run()` as a task."""

    def __init__(self, config: ShipperConfig, identity: AgentIdentity) -> None:
        self._config = config
        self._identity = identity
        self._pending: deque[_Pending] = deque()
        self._next_seq = 1
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self.stats = ShipperStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, window: ProfileWindow | None, telemetry: Telemetry | None = None,
               version: str | None = None) -> int:
        """Queue one batch's content (window None: no stacks); returns its sequence number.

        `version` is the target's version when the content was gathered; it labels the
        batch's data at the collector.
        """
        seq = self._next_seq
        self._next_seq += 1
        self._pending.append(_Pending(seq, window, telemetry, version))
        while len(self._pending) > self._config.max_pending:
            dropped = self._pending.popleft()
            self.stats.dropped_overflow += 1
            log.warning("collector behind: dropped window seq=%d (queue bound %d)",
                        dropped.seq, self._config.max_pending)
        self._wakeup.set()
        return seq

    async def run(self) -> None:
        """Deliver until close() is called and the queue is empty (or close's deadline)."""
        attempt = 0
        while not (self._closing.is_set() and not self._pending):
            if not self._pending:
                await self._wait_for_work()
                continue
            try:
                acked_before = self.stats.acked
                await self._session()
                attempt = 0
            except grpc.aio.AioRpcError as err:
                if self.stats.acked > acked_before:
                    attempt = 0
                if not self._handle_error(err):
                    continue
                delay = min(self._config.backoff_max_s,
                            self._config.backoff_initial_s * 2**attempt) * random.uniform(0.8, 1.2)
                attempt += 1
                self.stats.reconnects += 1
                log.info("collector %s: %s; retrying in %.1fs", self._config.collector,
                         err.code().name, delay)
                await self._sleep(delay)

    async def close(self) -> None:
        """No more windows will come: deliver what is queued, then let run() return."""
        self._closing.set()
        self._wakeup.set()

    def _handle_error(self, err: grpc.aio.AioRpcError) -> bool:
        """True when the error means back off and retry; False when the head was dropped."""
        if err.code() in REJECTED and self._pending:
            bad = self._pending.popleft()
            self.stats.rejected += 1
            log.error("collector rejected window seq=%d: %s", bad.seq, err.details())
            return False
        if err.code() not in RETRYABLE:
            log.error("collector stream failed: %s %s", err.code().name, err.details())
        return True

    async def _session(self) -> None:
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        async with grpc.aio.insecure_channel(
            self._config.collector, options=options, compression=grpc.Compression.Gzip
        ) as channel:
            call = ingest_pb2_grpc.IngestStub(channel).Stream()
            sender = asyncio.create_task(self._send_all(call))
            try:
                # Ends when the collector closes the stream, which it does after the
                # sender's done_writing() once everything queued is acknowledged.
                async for ack in call:
                    self._on_ack(ack)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await _raise_if_failed(call)

    async def _send_all(self, call: grpc.aio.StreamStreamCall) -> None:
        encoder = StreamEncoder(self._identity)
        sent_upto = 0
        while True:
            batch = self._next_to_send(sent_upto)
            if batch is None:
                if self._closing.is_set() and not self._pending:
                    await call.done_writing()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await call.write(encoder.encode(batch.seq, batch.window, batch.telemetry,
                                            batch.version))
            sent_upto = batch.seq
            self.stats.sent += 1

    def _next_to_send(self, sent_upto: int) -> _Pending | None:
        in_flight = 0
        for item in self._pending:
            if item.seq <= sent_upto:
                in_flight += 1
                continue
            return item if in_flight < self._config.max_in_flight else None
        return None

    def _on_ack(self, ack: ingest_pb2.Ack) -> None:
        while self._pending and self._pending[0].seq <= ack.seq:
            self._pending.popleft()
            self.stats.acked += 1
        if ack.duplicate:
            self.stats.duplicates += 1
        self._wakeup.set()  # room in the in-flight window

    async def _wait_for_work(self) -> None:
        self._wakeup.clear()
        if not self._pending and not self._closing.is_set():
            await self._wakeup.wait()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the agent is shutting down."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass


async def _raise_if_failed(call: grpc.aio.StreamStreamCall) -> None:
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(code, await call.initial_metadata(),
                                   await call.trailing_metadata(), await call.details())
