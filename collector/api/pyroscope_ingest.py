"""Pyroscope-compatible ingest on the HTTP listener: `POST /ingest` and the Connect call
`POST /push.v1.PusherService/Push`.

Each upload is converted to an ingest batch (collector/ingest/pyroscope.py), checked by
the gRPC ingest's own decoder and limits, and committed through a `GroupCommitter` like
an agent's batch; the answer comes after the commit. Every profile of an upload is
checked before any is committed, so a bad upload is refused whole (400, or 413 / Connect
`resource_exhausted` for a limit) and stores nothing. Profiles that are not stack samples
(memory, mutex, ...) are acknowledged and dropped, so that SDKs sending them beside CPU
profiles do not retry them for ever; the answer's `Pyrometer-Dropped-Profiles` header
counts them. Uploads are stored under one agent id per collector process, with sequence
numbers taken in commit order (Pyroscope's uploads carry none: a retried one is stored
twice, as in Pyroscope itself).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping

from aiohttp import BodyPartReader, web

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos, Stack
from pyrometer.collector.api.params import METRICS, STORE
from pyrometer.collector.api.pyroscope_connect import MAX_BODY_BYTES, ConnectError, read_body, unary
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError, ShuttingDownError
from pyrometer.collector.ingest import pyroscope
from pyrometer.collector.ingest.commit import GroupCommitter
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.pprof_read import UnsupportedProfile, read_pprof
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.proto import push_pb2

log = logging.getLogger(__name__)

INGEST_PATH = "/ingest"
PUSH_PATH = "/push.v1.PusherService/Push"
DEFAULT_RATE_HZ = 100.0  # Pyroscope's SDKs' default sampleRate
DEFAULT_SPAN_NS = 10 * NANOS_PER_SECOND  # an upload that gives no time span: the SDKs' interval
DROPPED_HEADER = "Pyrometer-Dropped-Profiles"
FORMATS = ("pprof", "folded")
CPU_NAMES = frozenset({"process_cpu", ""})  # __name__ of CPU series; "" when a pusher sets none


class PyroscopeIngest:
    """Commits converted uploads; one per HTTP app, started and stopped with it."""

    def __init__(self, committer: GroupCommitter, limits: DecodeLimits) -> None:
        self.committer = committer
        self.limits = limits
        self.agent_id = f"pyroscope-http-{uuid.uuid4().hex[:16]}"
        self._seq = itertools.count(1)

    def decode(self, labels: pyroscope.SeriesLabels, counts: Mapping[tuple[Stack, str], int],
               window: pyroscope.Window) -> DecodedBatch:
        batch = pyroscope.to_batch(labels, counts, window, self.agent_id)
        return pyroscope.decode(batch, self.limits, time.time_ns())

    async def commit(self, batches: list[DecodedBatch]) -> None:
        for batch in batches:
            # the seq is taken and the batch queued in one step of the event loop, so the
            # committer sees this agent id's batches in seq order
            await self.committer.submit(dataclasses.replace(batch, seq=next(self._seq)))


INGEST = web.AppKey("pyroscope_ingest", PyroscopeIngest)


def setup(app: web.Application) -> None:
    """Serve both ingest routes on `app`, with a group committer that lives as long as it."""
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post(INGEST_PATH, ingest)
    app.router.add_post(PUSH_PATH, unary(push_pb2.PushRequest, push))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    committer = GroupCommitter(app[STORE], metrics=app[METRICS])
    committer.start()
    app[INGEST] = PyroscopeIngest(committer, DecodeLimits())
    yield
    await committer.stop()


async def ingest(request: web.Request) -> web.Response:
    """`POST /ingest?name=app.cpu{k=v}&from=&until=&format=pprof|folded&sampleRate=`."""
    state = request.app[INGEST]
    try:
        batches, dropped = await _ingest_batches(request, state)
        await state.commit(batches)
    except ConnectError as error:
        status = 413 if error.code == "resource_exhausted" else 400
        return web.json_response({"error": error.message}, status=status)
    except BatchLimitError as exc:
        return web.json_response({"error": str(exc)}, status=413)
    except InvalidBatchError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except ShuttingDownError as exc:
        return web.json_response({"error": str(exc)}, status=503)
    return web.Response(status=200, headers={DROPPED_HEADER: str(dropped)})


async def _ingest_batches(request: web.Request, state: PyroscopeIngest
                          ) -> tuple[list[DecodedBatch], int]:
    query = request.query
    fmt = query.get("format") or "folded"
    if fmt not in FORMATS:
        raise InvalidBatchError(f"format {fmt[:32]!r} is not supported; use one of {', '.join(FORMATS)}")
    labels, kind = pyroscope.parse_name(query.get("name") or "")
    rate = _sample_rate(query, state.limits)
    span = _span(query)
    body = await _profile_body(request)
    try:
        idle = pyroscope.check_kind(kind)
        counts: Mapping[tuple[Stack, str], int]
        if fmt == "folded":
            counts = pyroscope.read_folded(body, state.limits)
            start, end = span or _default_span(0, 0)
            window = pyroscope.Window(start, end, rate or DEFAULT_RATE_HZ, idle)
        else:
            samples = read_pprof(body, sample_rate=rate, limit=MAX_BODY_BYTES)
            counts = samples.counts
            start, end = span or _default_span(samples.start_ns, samples.duration_ns)
            window = pyroscope.Window(start, end, samples.rate_hz or rate or DEFAULT_RATE_HZ,
                                      idle or samples.idle_included)
    except UnsupportedProfile as exc:
        log.info("dropped an upload of %s: %s", labels.service[:64], exc)
        return [], 1
    return ([state.decode(labels, counts, window)] if counts else []), 0


async def _profile_body(request: web.Request) -> bytes:
    """The profile: the body itself, or the `profile` part of a multipart form (Go SDK)."""
    if not request.content_type.startswith("multipart/"):
        return await read_body(request)
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == "profile":
            data = await part.read(decode=False)
            if len(data) > MAX_BODY_BYTES:
                raise BatchLimitError(f"profile over the limit of {MAX_BODY_BYTES} bytes")
            return bytes(data)
    raise InvalidBatchError("multipart upload without a 'profile' part")


def _sample_rate(query: Mapping[str, str], limits: DecodeLimits) -> float | None:
    raw = query.get("sampleRate")
    if not raw:
        return None
    try:
        rate = float(raw)
    except ValueError:
        raise InvalidBatchError(f"sampleRate {raw[:32]!r} is not a number") from None
    if not 0 < rate <= limits.max_rate_hz:
        raise InvalidBatchError(f"sampleRate {rate} is not in (0, {limits.max_rate_hz}]")
    return rate


def _span(query: Mapping[str, str]) -> tuple[Nanos, Nanos] | None:
    """`from` and `until` (unix seconds) as a window; None when `from` is absent."""
    if not query.get("from"):
        return None
    start = _seconds(query, "from")
    end = _seconds(query, "until") if query.get("until") else start + DEFAULT_SPAN_NS
    # an upload may span under a second (a flush at exit): it still gets a window
    return start, max(end, start + NANOS_PER_SECOND)


def _seconds(query: Mapping[str, str], name: str) -> Nanos:
    raw = query[name]
    if not raw.isdigit() or len(raw) > 12:
        raise InvalidBatchError(f"{name} {raw[:32]!r} is not unix seconds")
    return int(raw) * NANOS_PER_SECOND


def _default_span(start_ns: Nanos, duration_ns: Nanos) -> tuple[Nanos, Nanos]:
    """The profile's own span; missing parts are filled in from the collector's clock."""
    duration = duration_ns or DEFAULT_SPAN_NS
    start = start_ns or time.time_ns() - duration
    return start, start + duration


async def push(request: web.Request, message: push_pb2.PushRequest) -> push_pb2.PushResponse:
    """`push.v1.PusherService/Push`: every series' pprof profiles, checked, then stored."""
    state = request.app[INGEST]
    batches: list[DecodedBatch] = []
    dropped = 0
    for series in message.series:
        pairs = [(label.name, label.value) for label in series.labels]
        labels = pyroscope.series_labels(pairs)
        name = dict(pairs).get("__name__", "")
        for sample in series.samples:
            try:
                if name not in CPU_NAMES and name != "wall":
                    raise UnsupportedProfile(f"series {name[:64]!r} is not CPU or wall-clock samples")
                samples = read_pprof(sample.raw_profile, sample_rate=None, limit=MAX_BODY_BYTES)
            except UnsupportedProfile as exc:
                log.info("dropped a profile of %s: %s", labels.service[:64], exc)
                dropped += 1
                continue
            if not samples.counts:
                continue
            start, end = _default_span(samples.start_ns, samples.duration_ns)
            window = pyroscope.Window(start, end, samples.rate_hz or DEFAULT_RATE_HZ,
                                      samples.idle_included or name == "wall")
            batches.append(state.decode(labels, samples.counts, window))
    await state.commit(batches)
    if dropped:
        log.info("push: stored %d profiles, dropped %d", len(batches), dropped)
    return push_pb2.PushResponse()
