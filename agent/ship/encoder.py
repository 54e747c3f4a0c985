"""Encode profile windows as ingest batches with a per-stream dictionary.

Strings, frames and stacks are sent the first time a stream needs them and by id
afterwards (see proto/ingest.proto). The dictionary lives as long as one gRPC stream:
a reconnect starts a new `StreamEncoder`, so a batch that was encoded for a broken
stream is encoded again, whole, for the next one. That is why the shipper keeps
windows, not encoded bytes, until they are acknowledged.

A batch spooled to disk must outlive the stream, and the agent, that made it: it is
encoded standalone (a dictionary of its own, ids from 0, see `encode_standalone`) and,
when its turn comes, `StreamEncoder.reencode` maps its ids onto the live stream's.

Programs with many distinct stacks stay cheap on the wire. A new stack is sent as the
longest prefix it shares with a stack already sent (found in a trie over the stream's
stacks) plus its own tail; a batch's new stacks go in frame id order, so that the base
is mostly the stack just before. A window's rows go sorted by stack id, the ids as
differences from the previous row's, and thread and pid columns that hold only
defaults are left out. gRPC gzips every message, so each of these was kept because it
made the gzipped batch smaller, not only the raw one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from pyrometer.agent.shared.errors import AgentError
from pyrometer.agent.shared.model import (
    AgentStats,
    EngineReading,
    Event,
    Frame,
    GpuReading,
    HostReading,
    ProcessReading,
    ProfileWindow,
    RequestRecord,
    Stack,
    Telemetry,
)
from pyrometer.proto import ingest_pb2, wire

# Model field -> proto field where the names differ (times carry their unit on the wire).
_RENAMED = {"time_ns": "time_unix_nanos", "end_ns": "end_unix_nanos",
            "latency_ns": "latency_nanos", "ttfb_ns": "ttfb_nanos"}
# A shorter shared prefix costs more in back and keep than it saves in frame ids.
MIN_PREFIX = 2
# (stack id, thread string id, pid, count): one row of a window
_Row = tuple[int, int, int, int]


class SpooledBatchError(AgentError):
    """A spooled batch that cannot be read back (damaged, or from an incompatible agent)."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who is sending: stamped on every batch."""

    agent_id: str
    service: str
    instance: str
    host: str
    target_pid: int
    labels: tuple[tuple[str, str], ...] = ()
    agent_version: str = ""


@dataclass(slots=True)
class _Node:
    """A trie node, one frame deeper than its parent."""

    stack: int  # the latest stack sent whose frames start with this node's path
    children: dict[int, _Node] = field(default_factory=dict)


class _PrefixTrie:
    """The stream's stacks by their frame ids, root first: finds shared prefixes in O(depth)."""

    def __init__(self) -> None:
        self._root: dict[int, _Node] = {}

    def add(self, frames: list[int], stack: int) -> tuple[int, int]:
        """Insert `stack`; returns (base, keep): an earlier stack and how many of its
        frames this one starts with (0 when no stack shares its root frame)."""
        children, base, keep = self._root, 0, 0
        for depth, frame in enumerate(frames):
            node = children.get(frame)
            if node is None:
                node = children[frame] = _Node(stack)
            else:
                base, keep = node.stack, depth + 1
                # the latest stack: with new stacks sent in order it is often the previous
                # one, and a repeated base compresses well
                node.stack = stack
            children = node.children
        return base, keep


@dataclass(slots=True)
class _Tables:
    strings: dict[str, int] = field(default_factory=dict)
    frames: dict[Frame, int] = field(default_factory=dict)
    stacks: dict[Stack, int] = field(default_factory=dict)
    prefixes: _PrefixTrie = field(default_factory=_PrefixTrie)


class StreamEncoder:
    """Encodes batches for one stream; ids are positions in this encoder's tables."""

    def __init__(self, identity: AgentIdentity) -> None:
        self._identity = _identity_message(identity)
        self._tables = _Tables()
        self._delta = ingest_pb2.DictionaryDelta()

    @property
    def table_sizes(self) -> tuple[int, int, int]:
        """(strings, frames, stacks) sent on this stream so far."""
        t = self._tables
        return len(t.strings), len(t.frames), len(t.stacks)

    def encode(self, seq: int, window: ProfileWindow | None,
               telemetry: Telemetry | None = None, version: str | None = None) -> ingest_pb2.Batch:
        """The batch with sequence `seq` for `window` (None: no stacks) and `telemetry`.

        `version`, when given, is the target's version for this batch: it replaces the
        identity's "version" label, so data is filed under the version that produced it.
        """
        self._begin_delta()
        batch = ingest_pb2.Batch(seq=seq)
        batch.agent.CopyFrom(self._identity)
        if version is not None:
            batch.agent.labels["version"] = version
        if window is not None:
            batch.profile.CopyFrom(self._profile(window))
        if telemetry:
            self._telemetry(batch, telemetry)
        batch.dictionary.CopyFrom(self._delta)
        return batch

    def reencode(self, data: bytes) -> ingest_pb2.Batch:
        """A spooled standalone batch, its dictionary ids remapped onto this stream's.

        Identity and sequence number stay the spooled ones, so that the collector's
        high-water mark for the agent that made it drops the batch if it was already
        stored. Raises SpooledBatchError for data that does not decode.
        """
        try:
            spooled = ingest_pb2.Batch.FromString(data)
            return self._rebase(spooled)
        except (DecodeError, IndexError) as exc:
            raise SpooledBatchError(f"spooled batch does not decode: {exc}") from None

    def _rebase(self, spooled: ingest_pb2.Batch) -> ingest_pb2.Batch:
        old = spooled.dictionary
        if old.string_base or old.frame_base or old.stack_base:
            raise SpooledBatchError("spooled batch is not standalone (dictionary base > 0)")
        strings = list(old.strings)
        frames = [Frame(strings[f.name], strings[f.file], f.line) for f in old.frames]
        stacks: list[Stack] = []
        try:
            for s in old.stacks:
                prefix = wire.stack_prefix(s, len(stacks), stacks.__getitem__)
                stacks.append(prefix + tuple(frames[i] for i in s.frames))
        except wire.WireFormatError as error:
            raise SpooledBatchError(f"spooled batch: {error}") from None
        self._begin_delta()
        batch = ingest_pb2.Batch()
        batch.CopyFrom(spooled)
        if batch.HasField("profile"):
            profile = batch.profile
            rows = [(self._stack(stacks[s]), self._string(strings[t]), pid, count)
                    for s, t, pid, count in _read_rows(profile)]
            for column in ("stack_ids", "stack_id_deltas", "counts", "thread_ids", "pids"):
                profile.ClearField(column)
            _write_rows(profile, rows)
        for request in batch.requests:
            request.route = self._string(strings[request.route])
            request.method = self._string(strings[request.method])
            request.source = self._string(strings[request.source])
        batch.dictionary.CopyFrom(self._delta)
        return batch

    def _begin_delta(self) -> None:
        t = self._tables
        self._delta = ingest_pb2.DictionaryDelta(
            string_base=len(t.strings), frame_base=len(t.frames), stack_base=len(t.stacks)
        )
        # id 0 is always "", so an unset thread label costs nothing on the wire
        self._string("")

    def _telemetry(self, batch: ingest_pb2.Batch, telemetry: Telemetry) -> None:
        for gpu in telemetry.gpu:
            _copy_fields(gpu, batch.gpu.add())
        for proc in telemetry.process:
            _copy_fields(proc, batch.process.add())
        for host in telemetry.host:
            _copy_fields(host, batch.host.add())
        for event in telemetry.events:
            self._event(event, batch.events.add())
        for request in telemetry.requests:
            self._request(request, batch.requests.add())
        for stats in telemetry.agent_stats:
            _copy_fields(stats, batch.agent_stats.add())
        for reading in telemetry.engine:
            _copy_fields(reading, batch.engine.add())

    def _request(self, record: RequestRecord, msg: ingest_pb2.RequestRecord) -> None:
        _copy_fields(record, msg, skip=("route", "method", "source", "chunk_gaps_us"))
        msg.route = self._string(record.route)
        msg.method = self._string(record.method)
        msg.source = self._string(record.source)
        msg.chunk_gaps_us.extend(record.chunk_gaps_us)

    @staticmethod
    def _event(event: Event, msg: ingest_pb2.Event) -> None:
        _copy_fields(event, msg, skip=("attrs",))
        msg.attrs.update(dict(event.attrs))

    def _profile(self, window: ProfileWindow) -> ingest_pb2.ProfileWindow:
        msg = ingest_pb2.ProfileWindow(
            start_unix_nanos=window.start_ns,
            end_unix_nanos=window.end_ns,
            rate_hz=window.rate_hz,
            idle_included=window.idle_included,
            gil_only=window.gil_only,
            native=window.native,
            errors=window.errors,
        )
        # new stacks go in frame id order: neighbours share prefixes, so that their
        # bases and tails repeat what came just before (which gzip turns into little)
        known = self._tables.stacks
        new = {key.stack: [self._frame(f) for f in key.stack]
               for key, count in window.counts.items() if count > 0 and key.stack not in known}
        for stack in sorted(new, key=new.__getitem__):
            self._stack(stack, new[stack])
        rows = [(self._stack(key.stack), self._string(key.thread), key.pid, count)
                for key, count in window.counts.items() if count > 0]
        _write_rows(msg, rows)
        return msg

    def _string(self, value: str) -> int:
        ids = self._tables.strings
        sid = ids.get(value)
        if sid is None:
            sid = ids[value] = len(ids)
            self._delta.strings.append(value)
        return sid

    def _frame(self, frame: Frame) -> int:
        ids = self._tables.frames
        fid = ids.get(frame)
        if fid is None:
            msg = ingest_pb2.Frame(
                name=self._string(frame.name), file=self._string(frame.file), line=frame.line
            )
            fid = ids[frame] = len(ids)
            self._delta.frames.append(msg)
        return fid

    def _stack(self, stack: Stack, frames: list[int] | None = None) -> int:
        ids = self._tables.stacks
        sid = ids.get(stack)
        if sid is None:
            if frames is None:
                frames = [self._frame(f) for f in stack]
            sid = ids[stack] = len(ids)
            base, keep = self._tables.prefixes.add(frames, sid)
            if keep >= MIN_PREFIX:
                msg = ingest_pb2.Stack(frames=frames[keep:], back=sid - base, keep=keep)
            else:
                msg = ingest_pb2.Stack(frames=frames)
            self._delta.stacks.append(msg)
        return sid


def _write_rows(msg: ingest_pb2.ProfileWindow, rows: list[_Row]) -> None:
    """Set the window's columns from `rows`, sorted by stack id so that the ids go as
    small differences; thread and pid columns that hold only defaults stay empty."""
    rows.sort()
    stack_ids = [row[0] for row in rows]
    if len(rows) > 1:
        msg.stack_id_deltas.extend(
            [b - a for a, b in zip([0, *stack_ids[:-1]], stack_ids, strict=True)])
    else:  # one row: the same bytes either way, and plain ids are the older form
        msg.stack_ids.extend(stack_ids)
    msg.counts.extend([row[3] for row in rows])
    if any(row[1] for row in rows):  # string id 0 is always ""
        msg.thread_ids.extend([row[1] for row in rows])
    if any(row[2] for row in rows):
        msg.pids.extend([row[2] for row in rows])


def _read_rows(msg: ingest_pb2.ProfileWindow) -> list[_Row]:
    """The rows of a window in any form `_write_rows` or an older agent made."""
    try:
        stack_ids = wire.window_stack_ids(msg)
    except wire.WireFormatError as error:
        raise SpooledBatchError(f"spooled batch: {error}") from None
    n = len(stack_ids)
    threads = list(msg.thread_ids) or [0] * n
    pids = list(msg.pids) or [0] * n
    if not len(msg.counts) == len(threads) == len(pids) == n:
        raise SpooledBatchError("spooled window columns differ in length")
    return list(zip(stack_ids, threads, pids, msg.counts, strict=True))


def encode_standalone(identity: AgentIdentity, seq: int, window: ProfileWindow | None,
                      telemetry: Telemetry | None = None, version: str | None = None) -> bytes:
    """The serialised batch with a dictionary of its own: what the spool stores."""
    return StreamEncoder(identity).encode(seq, window, telemetry, version).SerializeToString()


def _identity_message(identity: AgentIdentity) -> ingest_pb2.AgentIdentity:
    msg = ingest_pb2.AgentIdentity(
        agent_id=identity.agent_id,
        service=identity.service,
        instance=identity.instance,
        host=identity.host,
        target_pid=identity.target_pid,
        agent_version=identity.agent_version,
    )
    msg.labels.update(dict(identity.labels))
    return msg


def _copy_fields(record: GpuReading | ProcessReading | HostReading | RequestRecord | Event
                 | AgentStats | EngineReading,
                 msg: object, skip: tuple[str, ...] = ()) -> None:
    """Copy a record's set fields onto its message; None stays absent (proto3 optional)."""
    for name in record.__slots__:
        value = getattr(record, name)
        if value is None or name in skip:
            continue
        setattr(msg, _RENAMED.get(name, name), value)
