"""Ship batches to the collector over one gRPC stream, in order, until acked.

Batches wait in the outbox (outbox.py: memory while the collector keeps up, the on-disk
spool while it is unreachable or behind) with their sequence numbers. A stream session
encodes and sends them oldest first, at most `max_in_flight` unacknowledged at a time
(so a collector coming back is not flooded), and drops each only when the collector's
ack says it is committed. A broken stream is retried with jittered exponential backoff
(`2**n * uniform(0.8, 1.2)`, retryable codes only); the next stream starts a fresh
dictionary and resends everything not yet acknowledged, and the collector's per-agent
high-water mark drops what it had already stored.

Shutdown: close() makes run() deliver what is queued; if the collector cannot be
reached, or run() is cancelled, what is left is written to the spool for the next
agent, which delivers it under the old agent id and sequence numbers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import grpc

from pyrometer.agent.shared.model import ProfileWindow, Telemetry
from pyrometer.agent.ship.channel import Security, call_metadata
from pyrometer.agent.ship.channel import channel as open_channel
from pyrometer.agent.ship.encoder import (
    AgentIdentity,
    SpooledBatchError,
    StreamEncoder,
    encode_standalone,
)
from pyrometer.agent.ship.outbox import Content, Outbox, ShipperStats
from pyrometer.agent.ship.spool import Spool, SpoolError
from pyrometer.proto import ingest_pb2, ingest_pb2_grpc

__all__ = ["RETRYABLE", "Shipper", "ShipperConfig", "ShipperStats"]

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
# The collector does not accept our token. Not REJECTED (that drops the batch) and not
# quietly retried: an operator can fix the token, so keep the data, back off, say why.
AUTH_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    collector: str  # host:port
    max_pending: int = 720  # batches held in memory when there is no spool: an hour
    # of 10 s windows plus the telemetry-only batches between them
    max_in_flight: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    spool_dir: Path | None = None  # None: memory only
    spool_max_bytes: int = 64 * 1024 * 1024
    security: Security = Security()  # token and TLS for the collector
    memory_batches: int = 16  # held in memory before spilling while the collector is behind


class Shipper:
    """Owns the stream to the collector. `submit()` from the agent loop, `run()` as a task."""

    def __init__(self, config: ShipperConfig, identity: AgentIdentity) -> None:
        self._config = config
        self._identity = identity
        self._next_seq = 1
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self.stats = ShipperStats()
        self._spool = _open_spool(config.spool_dir)
        self._outbox = Outbox(
            self.stats, self._standalone, self._spool, max_pending=config.max_pending,
            memory_batches=config.memory_batches, spool_max_bytes=config.spool_max_bytes,
            agent_id=identity.agent_id)

    @property
    def pending(self) -> int:
        return len(self._outbox)

    @property
    def on_disk(self) -> tuple[int, int]:
        """(batches, bytes) waiting in the spool."""
        return self._outbox.on_disk

    def submit(self, window: ProfileWindow | None, telemetry: Telemetry | None = None,
               version: str | None = None) -> int:
        """Queue one batch's content (window None: no stacks); returns its sequence number.

        `version` is the target's version when the content was gathered; it labels the
        batch's data at the collector.
        """
        seq = self._next_seq
        self._next_seq += 1
        self._outbox.add(seq, Content(window, telemetry, version))
        self._wakeup.set()
        return seq

    async def run(self) -> None:
        """Deliver until close() and an empty queue; what is left then goes to the spool."""
        try:
            await self._deliver()
        finally:
            # also on cancellation (the agent's shutdown grace ran out)
            self._outbox.persist()
            if self._spool is not None:
                self._spool.close()

    async def close(self) -> None:
        """No more windows will come: deliver what is queued, then let run() return."""
        self._closing.set()
        self._wakeup.set()

    async def _deliver(self) -> None:
        attempt = 0
        while not (self._closing.is_set() and not self._outbox):
            if not self._outbox:
                await self._wait_for_work()
                continue
            acked_before = self.stats.acked
            try:
                await self._session()
                attempt = 0
                continue
            except grpc.aio.AioRpcError as err:
                if not self._handle_error(err):
                    continue
                reason = err.code().name
            if self.stats.acked > acked_before:
                attempt = 0
            elif self._closing.is_set():  # one last try failed: the spool keeps the rest
                log.warning("collector %s unreachable at shutdown (%s)",
                            self._config.collector, reason)
                return
            await self._back_off(attempt, reason)
            attempt += 1

    async def _back_off(self, attempt: int, reason: str) -> None:
        self._outbox.connected = False
        self._outbox.spill(0)  # an agent killed during the outage loses nothing
        delay = min(self._config.backoff_max_s,
                    self._config.backoff_initial_s * 2**attempt) * random.uniform(0.8, 1.2)
        self.stats.reconnects += 1
        log.info("collector %s: %s; %d batches waiting, retrying in %.1fs",
                 self._config.collector, reason, len(self._outbox), delay)
        await self._sleep(delay)

    def _handle_error(self, err: grpc.aio.AioRpcError) -> bool:
        """True when the error means back off and retry; False when the head was dropped."""
        bad = self._outbox.reject_head() if err.code() in REJECTED else None
        self._outbox.in_flight = 0  # the stream is gone: nothing is on the wire
        if bad is not None:
            self.stats.rejected += 1
            log.error("collector rejected batch seq=%d: %s", bad.seq, err.details())
            return False
        if err.code() in AUTH_REFUSED:
            log.error("collector refused this agent's token (%s): check --token, --token-file or "
                      "PYROMETER_TOKEN; batches are kept and retried", err.code().name)
        elif err.code() not in RETRYABLE:
            log.error("collector stream failed: %s %s", err.code().name, err.details())
        return True

    async def _session(self) -> None:
        self._outbox.in_flight = 0  # a new stream: everything unacknowledged is resent
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        async with open_channel(
            self._config.collector, self._config.security, options=options,
            compression=grpc.Compression.Gzip,
        ) as channel:
            call = ingest_pb2_grpc.IngestStub(channel).Stream(
                metadata=call_metadata(self._config.security))
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
        while True:
            batch = self._next_batch(encoder)
            if batch is None:
                if self._closing.is_set() and not self._outbox:
                    await call.done_writing()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await call.write(batch)
            self.stats.sent += 1

    def _next_batch(self, encoder: StreamEncoder) -> ingest_pb2.Batch | None:
        """The next batch to write, or None while max_in_flight are unacknowledged."""
        while self._outbox.in_flight < self._config.max_in_flight:
            taken = self._outbox.next_unsent()
            if taken is None:
                return None
            entry, body = taken
            if isinstance(body, Content):
                return encoder.encode(entry.seq, body.window, body.telemetry, body.version)
            try:
                return encoder.reencode(body)
            except SpooledBatchError as exc:
                log.warning("spool: skipping batch seq=%d: %s", entry.seq, exc)
                self._outbox.discard_sent(entry)
        return None

    def _on_ack(self, ack: ingest_pb2.Ack) -> None:
        self._outbox.ack(ack.seq)
        self._outbox.connected = True
        self.stats.acked += 1
        if ack.duplicate:
            self.stats.duplicates += 1
        self._wakeup.set()  # room in the in-flight window

    def _standalone(self, seq: int, content: Content) -> bytes:
        return encode_standalone(self._identity, seq, content.window, content.telemetry,
                                 content.version)

    async def _wait_for_work(self) -> None:
        self._wakeup.clear()
        if not self._outbox and not self._closing.is_set():
            await self._wakeup.wait()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the agent is shutting down."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass


def _open_spool(directory: Path | None) -> Spool | None:
    if directory is None:
        return None
    try:
        return Spool(directory)
    except SpoolError as exc:
        log.error("%s; batches are held in memory only", exc)
        return None


async def _raise_if_failed(call: grpc.aio.StreamStreamCall) -> None:
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(code, await call.initial_metadata(),
                                   await call.trailing_metadata(), await call.details())
