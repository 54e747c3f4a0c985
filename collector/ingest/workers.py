"""Decoding in worker processes (`--decode-workers N`), for a collector that runs out of
its one GIL before it runs out of cores.

Saturated, the collector is Python under one GIL: the event loop reads gRPC and decodes,
the commit worker builds Arrow tables, and only DuckDB's own waits run beside them
(`make bench`, row 4: 1.0 core busy on a 2-core machine). Decoding and validating a
batch is about a third of that (250 us of CPU for the bench's batch of 150 rows, 30
readings and 20 requests), and it needs nothing but the batch and its stream's
dictionary. So with workers, a stream's batches go, as the bytes gRPC received, to one
worker process, which keeps that stream's `StreamDecoder` (a stream's dictionary pins it
to one process) and answers each batch with its rows (handoff.py) or with the reason it
is refused, in order. The writer process keeps everything else: gRPC, group commit,
DuckDB, the metrics and the log.

What it costs: the worker's dump of the answer, the writer's load of it (25 us), both
sides' system calls, and a process woken for every batch. Measured on 2 cores with the
load generators sharing them (`tests/bench/ingest_load.py` levels, 20 s each, 0 and 1
worker alternating; `make bench` row 4 runs both):

    level                              0 workers              1 worker
    1,000 agents, saturating           1.14, 1.15 M samples/s 1.34-1.42 M (4 runs)
    100 agents, saturating             1.13-1.26 M (3 runs)   1.25-1.29 M (3 runs)
    collector CPU per 1M, saturated    0.8-0.9 CPU-s          1.0 CPU-s
    1,000 agents at their own pace     2.1, 2.4 CPU-s per 1M  2.5, 3.2 CPU-s per 1M

(with up to 256 batches a commit; with 512, commit.py, `make bench` at commit f989453
measured 1.21 M and 1.47 M samples/s saturated, 2.4 and 3.1 CPU-s per 1M paced, and
at a172647, with cheaper commits, 1.37 M and 1.66 M, 1.9 and 2.8).

So the default is 0: while a collector keeps up, decoding in the loop is the cheaper
way, and on 2 cores a worker takes CPU that the writer and DuckDB would use. A
collector at the limit of its CPU with cores to spare (hundreds of agents draining
spools, a fleet larger than one core can take) ingests more with one or two. Past that
the writer bounds it: group commits run one at a time (commit.py), and at 1.4 M
samples/s the commit worker was busy all the time.

A worker is `python -m pyrometer.collector.ingest.workers FD`, started from the
collector's own interpreter (so the same marshal format and code), talking over one end
of a socketpair in frames (below). A worker that dies takes its streams with it: their
next batch is answered UNAVAILABLE, which an agent retries on a new stream, with its
dictionary sent again (agent/ship/shipper.py); the pool starts a replacement, and new
streams go to the live workers meanwhile (or are decoded in the loop, if none is).

Why not multiprocessing's pools: their feeder and result threads and pickled call
objects cost the writer, under its GIL, much of what the worker saves it, and they cannot
pin a stream to one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import marshal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING

from pyrometer.agent.shared.model import Frame, Nanos
from pyrometer.collector.errors import CollectorError
from pyrometer.collector.ingest import handoff
from pyrometer.collector.ingest.decode import Rejection, StreamDecoder, Unparseable, decode_message
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.storage.batch import DecodedBatch, FrameRows, StackRows
from pyrometer.proto import ingest_pb2

if TYPE_CHECKING:  # the worker process never needs the metrics (or prometheus_client)
    from pyrometer.collector.metrics import CollectorMetrics

log = logging.getLogger(__name__)

# Frames, little-endian. To a worker: request id, op, stream id, the collector's clock
# (decode's now_ns), body length, then the body (DECODE: a message's bytes as gRPC
# received them; SETUP, the first frame: the decode limits' fields, marshal'd;
# CLOSE: none, and no answer). From a worker: request id, status, body length, then the
# body (DECODED: handoff.dump; REFUSED: code, details and log line, marshal'd;
# FAILED: the exception's text). READY, with no body, is a worker's first frame.
_REQUEST = struct.Struct("<QBQqI")
_REPLY = struct.Struct("<QBI")
_SETUP, _DECODE, _CLOSE = 0, 1, 2
READY, DECODED, REFUSED, FAILED = 0, 1, 2, 3
START_TIMEOUT_S = 60.0  # a worker's imports, on a loaded machine


class WorkerLostError(CollectorError):
    """The worker process holding a stream's dictionary is gone: the stream must restart."""


class InlineStream:
    """A stream decoded in the event loop: no worker, the decoder in this process."""

    def __init__(self, limits: DecodeLimits) -> None:
        self._decoder = StreamDecoder(limits)

    async def decode(self, message: bytes | ingest_pb2.Batch | Unparseable,
                     now_ns: Nanos) -> DecodedBatch | Rejection:
        return decode_message(self._decoder, message, now_ns)

    def close(self) -> None:
        pass


class WorkerStream:
    """A stream whose decoder lives in a worker: the writer's side keeps what it needs to
    complete each batch, the frames and stacks its batches used so far, by content id."""

    def __init__(self, worker: _Worker, stream_id: int) -> None:
        self._worker = worker
        self._id = stream_id
        self._stack_frames: dict[int, tuple[int, ...]] = {}
        self._frames: dict[int, Frame] = {}

    async def decode(self, message: bytes | ingest_pb2.Batch | Unparseable,
                     now_ns: Nanos) -> DecodedBatch | Rejection:
        """As InlineStream's, decoded in the worker. Raises WorkerLostError when the worker
        went away; RuntimeError when decoding failed unexpectedly there (a bug: the stream
        ends as INTERNAL)."""
        if isinstance(message, Unparseable):  # parsed here already (not how gRPC hands it)
            return decode_message(StreamDecoder(), message, now_ns)
        data = message if isinstance(message, bytes) else message.SerializeToString()
        status, body = await self._worker.call(_DECODE, self._id, now_ns, data)
        if status == DECODED:
            answer = handoff.load(body)
            self._stack_frames.update(answer.new_stacks)
            self._frames.update((fid, Frame(name, file, line))
                                for fid, name, file, line in answer.new_frames)
            return answer.batch(self._complete)
        if status == REFUSED:
            code, details, line = marshal.loads(body)
            return Rejection(code, details, line)
        raise RuntimeError(f"decoding failed in worker {self._worker.pid}: "
                           f"{body.decode(errors='replace')}")

    def _complete(self, stack_ids: tuple[int, ...]) -> tuple[FrameRows, StackRows]:
        stacks = StackRows(stack_ids, tuple([self._stack_frames[s] for s in stack_ids]))
        # gathered only if a store reads them (FrameRows.later); the maps only grow
        return FrameRows.later(lambda: self._frames_of(stacks.frame_ids)), stacks

    def _frames_of(self, stacks: tuple[tuple[int, ...], ...]) -> FrameRows:
        ids = sorted(set().union(*stacks))
        frames = [self._frames[f] for f in ids]
        return FrameRows(ids, [f.name for f in frames], [f.file for f in frames],
                         [f.line for f in frames])

    def close(self) -> None:
        self._worker.forget(self._id)


Stream = InlineStream | WorkerStream


class _Replies(asyncio.Protocol):
    """The writer's end of a worker's socket: frames in, each to its waiting call."""

    def __init__(self, on_reply: Callable[[int, int, bytes], None],
                 on_lost: Callable[[Exception | None], None]) -> None:
        self._buffer = bytearray()
        self._on_reply = on_reply
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while len(buffer) - at >= _REPLY.size:
            request, status, length = _REPLY.unpack_from(buffer, at)
            end = at + _REPLY.size + length
            if end > len(buffer):
                break
            self._on_reply(request, status, bytes(buffer[at + _REPLY.size:end]))
            at = end
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)


@dataclass(eq=False)
class _Worker:
    """One worker process and the calls waiting on it."""

    process: subprocess.Popen[bytes]
    transport: asyncio.Transport | None = None
    waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = field(default_factory=dict)
    streams: int = 0
    alive: bool = True
    ready: asyncio.Future[None] | None = None
    _requests: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, op: int, stream: int, now_ns: Nanos, body: bytes
             ) -> asyncio.Future[tuple[int, bytes]]:
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if not self.alive or self.transport is None:
            future.set_exception(WorkerLostError(f"decode worker {self.pid} is gone"))
            return future
        request = next(self._requests)
        self.waiting[request] = future
        self.transport.write(_REQUEST.pack(request, op, stream, now_ns, len(body)) + body)
        return future

    def forget(self, stream: int) -> None:
        """The stream ended: the worker drops its decoder (no answer comes)."""
        self.streams -= 1
        if self.alive and self.transport is not None:
            self.transport.write(_REQUEST.pack(0, _CLOSE, stream, 0, 0))

    def reply(self, request: int, status: int, body: bytes) -> None:
        if status == READY:
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
            return
        future = self.waiting.pop(request, None)
        if future is not None and not future.done():
            future.set_result((status, body))

    def lost(self, exc: Exception | None) -> None:
        self.alive = False
        error = WorkerLostError(f"decode worker {self.pid} is gone"
                                + (f": {exc}" if exc else ""))
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(error)


class DecodePool:
    """Worker processes that decode the streams given to them; see the module docstring.

    `await DecodePool.start(n, limits)`, then `stream()` per gRPC stream, `stop()` at
    the end. With n = 0 every stream is decoded in the event loop.
    """

    def __init__(self, limits: DecodeLimits, metrics: CollectorMetrics | None = None) -> None:
        self._limits = limits
        self._metrics = metrics
        self._workers: list[_Worker] = []
        self._stream_ids = itertools.count(1)
        self._stopping = False
        self._restarts: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, size: int, limits: DecodeLimits | None = None,
                    metrics: CollectorMetrics | None = None) -> DecodePool:
        """Start `size` workers and wait until each is ready; CollectorError when one
        cannot start (the collector does not serve with fewer than it was asked for).
        `metrics`: where the live workers, their exits and the streams decoded in the
        loop for want of one are counted."""
        if size < 0:
            raise ValueError("size must be >= 0")
        pool = cls(limits or DecodeLimits(), metrics)
        if metrics is not None:
            metrics.decode_workers.set_function(lambda: len(pool.pids))
        try:
            pool._workers = list(await asyncio.gather(*[pool._spawn() for _ in range(size)]))
        except BaseException:
            await pool.stop()
            raise
        return pool

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids."""
        return [w.pid for w in self._workers if w.alive]

    def stream(self) -> Stream:
        """A new stream's decoder: on the live worker with the fewest streams."""
        live = [w for w in self._workers if w.alive]
        if not live:
            if self._workers and self._metrics is not None:  # workers asked for, none up
                self._metrics.decode_inline_streams.inc()
            return InlineStream(self._limits)
        worker = min(live, key=lambda w: w.streams)
        worker.streams += 1
        return WorkerStream(worker, next(self._stream_ids))

    async def _spawn(self) -> _Worker:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "pyrometer.collector.ingest.workers", str(theirs.fileno())],
                # its own session: a terminal's Ctrl-C goes to the collector, which ends
                # it by closing the socket, rather than to both at once
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            ours.close()
            raise CollectorError(f"cannot start a decode worker: {exc}") from exc
        finally:
            theirs.close()
        worker = _Worker(process, ready=loop.create_future())
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: _Replies(worker.reply, lambda exc: self._lost(worker, exc)), ours)
            worker.transport = transport
            setup = marshal.dumps(astuple(self._limits))
            transport.write(_REQUEST.pack(0, _SETUP, 0, 0, len(setup)) + setup)
            assert worker.ready is not None
            await asyncio.wait_for(worker.ready, START_TIMEOUT_S)
        except BaseException as exc:
            _end(worker)
            if isinstance(exc, (TimeoutError, WorkerLostError)):
                raise CollectorError(f"decode worker {process.pid} did not start "
                                     f"(exit status {process.poll()})") from exc
            raise
        log.info("decode worker %d started", process.pid)
        return worker

    def _lost(self, worker: _Worker, exc: Exception | None) -> None:
        was_ready = worker.ready is not None and worker.ready.done()
        worker.lost(exc)
        if self._stopping or not was_ready or worker not in self._workers:
            return
        log.error("decode worker %d exited (status %s); its streams must reconnect, "
                  "starting another", worker.pid, worker.process.poll())
        if self._metrics is not None:
            self._metrics.decode_worker_exits.inc()
        task = asyncio.get_running_loop().create_task(self._replace(worker), name="decode-worker")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _replace(self, dead: _Worker) -> None:
        with contextlib.suppress(TimeoutError):  # reaped here rather than left a zombie
            await asyncio.wait_for(asyncio.to_thread(dead.process.wait), 5)
        try:
            worker = await self._spawn()
        except CollectorError:
            log.exception("a decode worker could not be replaced; streams decode in the loop")
            return
        if self._stopping:
            _end(worker)
            return
        self._workers[self._workers.index(dead)] = worker

    async def stop(self) -> None:
        """End every worker (their streams have ended or are ending)."""
        self._stopping = True
        for task in list(self._restarts):
            task.cancel()
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker.transport is not None:
                worker.transport.close()  # the worker reads end-of-file and exits
        for worker in workers:
            try:
                await asyncio.wait_for(asyncio.to_thread(worker.process.wait), 10)
            except TimeoutError:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)


def _end(worker: _Worker) -> None:
    worker.alive = False
    if worker.transport is not None:
        worker.transport.close()
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait()


# ---- the worker process ----

class _Decoding:
    """One stream in a worker: its decoder, and the stacks and frames already sent to
    the writer for it (each goes once per stream, see handoff.py)."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.decoder = StreamDecoder(limits)
        self.sent_stacks: set[int] = set()
        self.sent_frames: set[int] = set()

    def answer(self, message: bytes, now_ns: Nanos) -> tuple[int, bytes]:
        result = decode_message(self.decoder, message, now_ns)
        if isinstance(result, Rejection):
            return REFUSED, marshal.dumps((result.code, result.details, result.log))
        stacks = result.stacks
        new = [i for i, s in enumerate(stacks.ids) if s not in self.sent_stacks]
        new_stacks: list[tuple[int, tuple[int, ...]]] = []
        new_frames: list[tuple[int, str, str, int]] = []
        if new:
            new_stacks = [(stacks.ids[i], stacks.frame_ids[i]) for i in new]
            wanted = set().union(*[frames for _, frames in new_stacks]) - self.sent_frames
            f = result.frames
            new_frames = [(fid, name, file, line) for fid, name, file, line
                          in zip(f.ids, f.names, f.files, f.lines, strict=True) if fid in wanted]
        body = handoff.dump(result, new_stacks, new_frames)
        # only once the answer exists: a failure above sends nothing as sent
        self.sent_stacks.update(s for s, _ in new_stacks)
        self.sent_frames.update(fid for fid, *_ in new_frames)
        return DECODED, body


def serve(sock: socket.socket) -> None:
    """The worker's loop: answer each frame in turn until the writer closes its end."""
    reader = sock.makefile("rb", buffering=1 << 16)

    def frame() -> tuple[int, int, int, int, bytes] | None:
        head = reader.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return None
        request, op, stream, now_ns, length = _REQUEST.unpack(head)
        body = reader.read(length)
        return None if len(body) < length else (request, op, stream, now_ns, body)

    setup = frame()
    if setup is None or setup[1] != _SETUP:
        return
    limits = DecodeLimits(*marshal.loads(setup[4]))
    streams: dict[int, _Decoding] = {}
    sock.sendall(_REPLY.pack(0, READY, 0))
    while (got := frame()) is not None:
        request, op, stream, now_ns, body = got
        if op == _CLOSE:
            streams.pop(stream, None)
            continue
        try:
            decoding = streams.get(stream)
            if decoding is None:
                decoding = streams[stream] = _Decoding(limits)
            status, answer = decoding.answer(body, now_ns)
        except Exception as exc:  # a bug: that stream ends as INTERNAL, the worker goes on
            status, answer = FAILED, repr(exc).encode()
        sock.sendall(_REPLY.pack(request, status, len(answer)) + answer)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m pyrometer.collector.ingest.workers FD (the collector starts it)",
              file=sys.stderr)
        return 2
    from pyrometer.collector import gcpause
    gcpause.tune_for_ingest()
    with socket.socket(fileno=int(argv[0])) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
