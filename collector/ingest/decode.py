"""Pure per-stream decoding of ingest batches: validate, resolve dictionary ids, hash.

An agent sends strings, frames and stacks once per stream and then refers to them by
their position in the stream's tables. A `StreamDecoder` holds those tables for one
stream. `decode` checks a batch completely before it changes anything, so a rejected
batch leaves the tables as they were, and returns a `DecodedBatch`: columnar rows in
which frames and stacks carry content-hash ids (`frame_id`, `stack_id`) that every
collector computes alike, whichever stream or collector the data came through.

Telemetry records (GPU, process, host, requests, events) are validated one by one in
validate.py: a bad record is dropped and counted, the rest of the batch is stored.

`decode_message` is the whole of it for one message as it arrives, parsed or not: the
one entry point the servicer (decoding in the event loop) and a decode worker process
(workers.py) share, so both accept and refuse exactly the same batches.

No I/O happens here; the only protobuf type seen is the incoming `Batch`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pyrometer.agent.shared.model import Frame, Nanos, Telemetry
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.validate import INT64_MAX, MIN_TIME_NS, check_references, decode_telemetry
from pyrometer.collector.storage.batch import (
    DecodedBatch,
    FrameRows,
    Rejections,
    Source,
    StackRows,
    WindowRows,
)
from pyrometer.proto import ingest_pb2, wire

__all__ = ["MIN_TIME_NS", "Rejection", "StreamDecoder", "Unparseable", "decode_message",
           "decode_source", "frame_id", "parse_batch", "stack_id"]

_FRAME_PERSON = b"pyrometer.frame"
_STACK_PERSON = b"pyrometer.stack"
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Unparseable:
    """A request message that is not a valid Batch; `reason` says why."""

    reason: str


def parse_batch(data: bytes) -> ingest_pb2.Batch | Unparseable:
    """Bytes as a Batch; never raises, so bad bytes reach the servicer's checks."""
    try:
        return ingest_pb2.Batch.FromString(data)
    except Exception as exc:  # DecodeError, or anything the parser raises on garbage
        return Unparseable(f"not a valid Batch message: {exc}")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: the gRPC status code's name (INVALID_ARGUMENT, or
    RESOURCE_EXHAUSTED for a size limit), what the agent is told, and what is logged."""

    code: str
    details: str
    log: str


def decode_message(decoder: StreamDecoder, message: bytes | ingest_pb2.Batch | Unparseable,
                   now_ns: Nanos) -> DecodedBatch | Rejection:
    """One message of `decoder`'s stream, as bytes or as `parse_batch` left it: its rows,
    or why it is refused (and then the stream's tables are unchanged)."""
    batch = parse_batch(message) if isinstance(message, bytes) else message
    if isinstance(batch, Unparseable):
        return Rejection("INVALID_ARGUMENT", batch.reason, f"rejected a message: {batch.reason}")
    try:
        return decoder.decode(batch, now_ns)
    except InvalidBatchError as exc:  # BatchLimitError is one: a size limit
        code = "RESOURCE_EXHAUSTED" if isinstance(exc, BatchLimitError) else "INVALID_ARGUMENT"
        # the agent id is unchecked input here: a 10 MB one must not land in the log
        return Rejection(code, f"batch seq {batch.seq} rejected: {exc}",
                         f"rejected batch {batch.seq} of agent {batch.agent.agent_id[:64]!r}: {exc}")


def _hash64(person: bytes, data: bytes) -> int:
    digest = hashlib.blake2b(data, digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big", signed=True)


def frame_id(frame: Frame) -> int:
    """Content-hash id of a frame: a signed 64-bit blake2b of name, file and line."""
    name, file = frame.name.encode(), frame.file.encode()
    # length prefixes keep ("ab", "c") and ("a", "bc") apart
    head = struct.pack("<IIQ", len(name), len(file), frame.line)
    return _hash64(_FRAME_PERSON, head + name + file)


def stack_id(frame_ids: Sequence[int]) -> int:
    """Content-hash id of a stack: a signed 64-bit blake2b of its frame ids, root first."""
    return _hash64(_STACK_PERSON, struct.pack(f"<{len(frame_ids)}q", *frame_ids))


def _check_size(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise BatchLimitError(f"{what}: {size} exceeds the limit of {limit}")


def _check_text(what: str, text: str, limits: DecodeLimits) -> None:
    # proto3 parsing already guarantees valid UTF-8; only the size is left to check
    if len(text) * 4 > limits.max_string_bytes:
        _check_size(f"{what} length in bytes", len(text.encode()), limits.max_string_bytes)


def _check_base(table: str, base: int, current: int) -> None:
    if base != current:
        raise InvalidBatchError(
            f"dictionary {table}_base is {base} but the stream's {table} table has "
            f"{current} entries (both ends must agree)"
        )


def _check_ref(what: str, ref: int, size: int) -> None:
    if ref >= size:
        raise InvalidBatchError(f"{what} {ref} is not defined on this stream ({size} known)")


def _window_stack_ids(window: ingest_pb2.ProfileWindow, limits: DecodeLimits) -> list[int]:
    """Each row's stream stack id; the row limit is checked before the ids are expanded."""
    try:
        _check_size("rows in one window", wire.window_row_count(window), limits.max_rows)
        return wire.window_stack_ids(window)
    except wire.WireFormatError as error:
        raise InvalidBatchError(str(error)) from None


def decode_source(agent: ingest_pb2.AgentIdentity, limits: DecodeLimits) -> Source:
    """Validate the agent identity of a batch; `version` is split out of the labels."""
    if not agent.agent_id:
        raise InvalidBatchError("agent.agent_id is empty")
    if not agent.service:
        raise InvalidBatchError("agent.service is empty")
    for what, text in (("agent_id", agent.agent_id), ("service", agent.service),
                       ("instance", agent.instance), ("host", agent.host),
                       ("agent_version", agent.agent_version)):
        _check_text(f"agent.{what}", text, limits)
    _check_size("number of agent labels", len(agent.labels), limits.max_labels)
    for key, value in agent.labels.items():
        if not key:
            raise InvalidBatchError("agent label with an empty key")
        _check_text("label key", key, limits)
        _check_text("label value", value, limits)
    if agent.target_pid < 0:
        raise InvalidBatchError(f"agent.target_pid {agent.target_pid} is negative")
    labels = tuple(sorted((k, v) for k, v in agent.labels.items() if k != "version"))
    return Source(
        agent_id=agent.agent_id, service=agent.service, instance=agent.instance,
        host=agent.host, target_pid=agent.target_pid,
        version=agent.labels.get("version", ""), labels=labels,
        agent_version=agent.agent_version,
    )


class StreamDecoder:
    """The dictionary tables of one ingest stream, and the decoder of its batches.

    Not thread-safe; a stream's batches arrive in order, one decoder per stream.
    """

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self.limits = limits or DecodeLimits()
        self._strings: list[str] = []
        self._frame_ids: list[int] = []  # content hash per stream frame id
        self._frames: list[Frame] = []
        self._stack_ids: list[int] = []  # content hash per stream stack id
        self._stacks: list[tuple[int, ...]] = []  # stream frame ids, root first
        # the same frames as content hashes: every batch that uses a stack sends them
        self._stack_frame_ids: list[tuple[int, ...]] = []

    @property
    def table_sizes(self) -> tuple[int, int, int]:
        """Entries in the string, frame and stack tables (the next *_base values)."""
        return len(self._strings), len(self._frames), len(self._stacks)

    def decode(self, batch: ingest_pb2.Batch, now_ns: Nanos) -> DecodedBatch:
        """Validate `batch` against this stream's tables and turn it into rows.

        `now_ns` is the collector's clock, to reject windows and records from the far
        future. Raises InvalidBatchError (or its BatchLimitError) and then changes
        nothing; a bad telemetry record only lands in the result's `rejected`.
        """
        source = decode_source(batch.agent, self.limits)
        if not 1 <= batch.seq <= INT64_MAX:
            raise InvalidBatchError(f"seq {batch.seq} is not in [1, 2**63)")
        delta = batch.dictionary
        strings = self._new_strings(delta)
        frames = self._new_frames(delta, strings)
        stacks = self._new_stacks(delta, frames)
        window = batch.profile if batch.HasField("profile") else None
        window_stacks: list[int] = []
        if window is not None:
            window_stacks = _window_stack_ids(window, self.limits)
            self._check_window(window, window_stacks, len(self._strings) + len(strings),
                               len(self._stacks) + len(stacks), now_ns)
        check_references(batch, len(self._strings) + len(strings), self.limits)
        # everything is valid: only now does the stream's state change
        self._strings.extend(strings)
        for frame in frames:
            self._frame_ids.append(frame_id(frame))
            self._frames.append(frame)
        for frame_refs in stacks:
            hashes = tuple([self._frame_ids[f] for f in frame_refs])
            self._stack_ids.append(stack_id(hashes))
            self._stack_frame_ids.append(hashes)
            self._stacks.append(frame_refs)
        # a bad record is dropped and counted here, never a reason to reject the batch
        telemetry, rejected = decode_telemetry(batch, self._strings.__getitem__, now_ns, self.limits)
        return self._rows(source, batch.seq, window, window_stacks, telemetry, rejected)

    def _new_strings(self, delta: ingest_pb2.DictionaryDelta) -> list[str]:
        if not delta.strings:
            return []
        _check_base("string", delta.string_base, len(self._strings))
        self._check_growth("strings", len(self._strings), len(delta.strings))
        for text in delta.strings:
            _check_text("dictionary string", text, self.limits)
        return list(delta.strings)

    def _new_frames(self, delta: ingest_pb2.DictionaryDelta, strings: list[str]) -> list[Frame]:
        if not delta.frames:
            return []
        _check_base("frame", delta.frame_base, len(self._frames))
        self._check_growth("frames", len(self._frames), len(delta.frames))
        known = len(self._strings)
        size = known + len(strings)

        def text(ref: int) -> str:
            _check_ref("frame string id", ref, size)
            return self._strings[ref] if ref < known else strings[ref - known]

        new = [Frame(text(f.name), text(f.file), f.line) for f in delta.frames]
        if max(f.line for f in new) > INT32_MAX:
            raise InvalidBatchError(f"frame line {max(f.line for f in new)} is out of range")
        return new

    def _new_stacks(
        self, delta: ingest_pb2.DictionaryDelta, frames: list[Frame]
    ) -> list[tuple[int, ...]]:
        if not delta.stacks:
            return []
        _check_base("stack", delta.stack_base, len(self._stacks))
        self._check_growth("stacks", len(self._stacks), len(delta.stacks))
        size = len(self._frames) + len(frames)
        new: list[tuple[int, ...]] = []
        for stack in delta.stacks:
            # an empty stack is allowed: py-spy can catch a thread outside Python code
            prefix = self._prefix(stack, len(self._stacks) + len(new), new)
            _check_size("stack depth", len(prefix) + len(stack.frames),
                        self.limits.max_stack_depth)
            if stack.frames and max(stack.frames) >= size:
                _check_ref("stack frame id", max(stack.frames), size)
            new.append(prefix + tuple(stack.frames))
        return new

    def _prefix(self, stack: ingest_pb2.Stack, own: int,
                new: list[tuple[int, ...]]) -> tuple[int, ...]:
        """The frames `stack` (stream id `own`) takes from its base (see ingest.proto);
        the base may be earlier in the same delta."""
        known = self._stacks

        def frames_of(base: int) -> tuple[int, ...]:
            return known[base] if base < len(known) else new[base - len(known)]

        try:
            return wire.stack_prefix(stack, own, frames_of)
        except wire.WireFormatError as error:
            raise InvalidBatchError(str(error)) from None

    def _check_growth(self, table: str, current: int, added: int) -> None:
        _check_size(f"new {table} in one batch", added, self.limits.max_delta_entries)
        _check_size(f"{table} on one stream", current + added, self.limits.max_table_entries)

    def _check_window(
        self, window: ingest_pb2.ProfileWindow, stack_ids: list[int], n_strings: int,
        n_stacks: int, now_ns: Nanos,
    ) -> None:
        limits = self.limits
        start, end = window.start_unix_nanos, window.end_unix_nanos
        if start < MIN_TIME_NS:
            raise InvalidBatchError(f"window start {start} ns is before the year 2000")
        if end <= start:
            raise InvalidBatchError(f"window end {end} is not after its start {start}")
        if end - start > limits.max_window_ns:
            raise InvalidBatchError(f"window of {end - start} ns is longer than allowed")
        if end > now_ns + limits.max_future_ns:
            raise InvalidBatchError(f"window end {end} ns is too far in the future")
        if not 0 < window.rate_hz <= limits.max_rate_hz:
            raise InvalidBatchError(f"rate_hz {window.rate_hz} not in (0, {limits.max_rate_hz}]")
        rows = len(stack_ids)
        lengths = (len(window.counts), len(window.thread_ids), len(window.pids))
        # thread_ids and pids may be empty: every row has the default
        if lengths[0] != rows or any(n not in (0, rows) for n in lengths[1:]):
            raise InvalidBatchError(
                f"window columns differ in length: stack ids {rows}, counts {lengths[0]}, "
                f"thread_ids {lengths[1]}, pids {lengths[2]}"
            )
        if rows == 0:
            return
        if min(window.counts) == 0:
            raise InvalidBatchError("window count of 0 (rows with no samples are not sent)")
        _check_size("sample count of a row", max(window.counts), limits.max_count)
        _check_ref("window stack id", max(stack_ids), n_stacks)
        if window.thread_ids:
            _check_ref("window thread string id", max(window.thread_ids), n_strings)
        if window.pids and min(window.pids) < 0:
            raise InvalidBatchError(f"window pid {min(window.pids)} is negative")

    def _frames_of(self, stacks: list[int]) -> FrameRows:
        # the frames of these stream stack ids, each once; by set and tuple builtins
        used_frames = sorted(set().union(*[self._stacks[s] for s in stacks]))
        frame_ids, all_frames = self._frame_ids, self._frames
        used_frame_values = [all_frames[f] for f in used_frames]
        return FrameRows(
            ids=[frame_ids[f] for f in used_frames],
            names=[f.name for f in used_frame_values],
            files=[f.file for f in used_frame_values],
            lines=[f.line for f in used_frame_values],
        )

    def _rows(
        self, source: Source, seq: int, window: ingest_pb2.ProfileWindow | None,
        window_stacks: list[int], telemetry: Telemetry, rejected: Rejections,
    ) -> DecodedBatch:
        if window is None:
            return DecodedBatch(source, seq, FrameRows.empty(), StackRows.empty(), None,
                                telemetry, rejected)
        used = sorted(set(window_stacks))
        # every referenced stack travels with the batch, so that a stored batch never
        # points at a stack that only an unstored (duplicate) batch carried; their frames
        # are gathered only if a store reads them (FrameRows.later), from tables that
        # only grow, so later gives what now would
        frames = FrameRows.later(lambda: self._frames_of(used))
        stack_ids = self._stack_ids
        stacks = StackRows(
            ids=tuple([stack_ids[s] for s in used]),
            frame_ids=tuple([self._stack_frame_ids[s] for s in used]),
        )
        n = len(window_stacks)
        # empty columns: every row has the default thread ("") and pid (the target)
        pids = (tuple([p or source.target_pid for p in window.pids]) if window.pids
                else (source.target_pid,) * n)
        threads = (tuple([self._strings[t] for t in window.thread_ids]) if window.thread_ids
                   else ("",) * n)
        rows = WindowRows(
            start_ns=window.start_unix_nanos, end_ns=window.end_unix_nanos,
            rate_hz=window.rate_hz, idle_included=window.idle_included,
            gil_only=window.gil_only, native=window.native, errors=window.errors,
            stack_ids=tuple([stack_ids[s] for s in window_stacks]),
            threads=threads, pids=pids, counts=tuple(window.counts),
        )
        return DecodedBatch(source, seq, frames, stacks, rows, telemetry, rejected)
