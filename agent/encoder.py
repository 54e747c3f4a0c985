"""Encode profile windows as ingest batches with a per-stream dictionary.

Strings, frames and stacks are sent the first time a stream needs them and by id
afterwards (see proto/ingest.proto). The dictionary lives as long as one gRPC stream:
a reconnect starts a new `StreamEncoder`, so a batch that was encoded for a broken
stream is encoded again, whole, for the next one. That is why the shipper keeps
windows, not encoded bytes, until they are acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyrometer.agent.model import Frame, ProfileWindow, Stack
from pyrometer.proto import ingest_pb2


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
class _Tables:
    strings: dict[str, int] = field(default_factory=dict)
    frames: dict[Frame, int] = field(default_factory=dict)
    stacks: dict[Stack, int] = field(default_factory=dict)


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

    def encode(self, seq: int, window: ProfileWindow | None) -> ingest_pb2.Batch:
        """The batch for `window` (None: a batch without stacks) with sequence `seq`."""
        t = self._tables
        self._delta = ingest_pb2.DictionaryDelta(
            string_base=len(t.strings), frame_base=len(t.frames), stack_base=len(t.stacks)
        )
        # id 0 is always "", so an unset thread label costs nothing on the wire
        self._string("")
        batch = ingest_pb2.Batch(seq=seq)
        batch.agent.CopyFrom(self._identity)
        if window is not None:
            batch.profile.CopyFrom(self._profile(window))
        batch.dictionary.CopyFrom(self._delta)
        return batch

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
        for key, count in window.counts.items():
            if count <= 0:
                continue
            msg.stack_ids.append(self._stack(key.stack))
            msg.counts.append(count)
            msg.thread_ids.append(self._string(key.thread))
            msg.pids.append(key.pid)
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

    def _stack(self, stack: Stack) -> int:
        ids = self._tables.stacks
        sid = ids.get(stack)
        if sid is None:
            frames = [self._frame(f) for f in stack]
            sid = ids[stack] = len(ids)
            self._delta.stacks.append(ingest_pb2.Stack(frames=frames))
        return sid


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
